//! Model mode on the embedded default deployment: determinism, tiers, bounded memory.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::scenario;

fn scenario(text: &str) -> Scenario {
    let cwd = std::env::current_dir().unwrap();
    scenario::parse(text, "model.toml", &cwd, "model").unwrap_or_else(|errors| panic!("{errors}"))
}

fn run(scenario: &Scenario) -> Vec<VariantReport> {
    let stop = AtomicBool::new(false);
    let outcome = run_all(scenario, &stop, &Progress::default(), 2).unwrap();
    assert!(outcome.error.is_none());
    assert_eq!(outcome.reports.len(), scenario.variants.len());
    outcome.reports
}

const GENERATED: &str = r#"
mode = "model"
seed = 9
[deployment.settings]
l1_capacity = "2MiB"
l2_capacity = "16MiB"
[clients.eu-west]
rate = 2
[clients.us-east]
rate = 1
[trace.generate]
requests = 20000
objects = 2000
zipf = 0.9
one_hit_wonders = 0.1
size = "8KiB"
max_size = "256KiB"
[sweep]
l1_policy = ["lru", "s3fifo", "sieve"]
"#;

#[test]
fn model_runs_are_deterministic_and_every_tier_answers() {
    let scenario = scenario(GENERATED);
    assert_eq!(scenario.variants.len(), 3);
    let first = run(&scenario);
    let again = run(&scenario);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            serde_json::to_value(&a.total).unwrap(),
            serde_json::to_value(&b.total).unwrap(),
            "{}",
            a.name
        );
        assert_eq!(a.total.requests, 20_000);
        // Shielded default deployment: L1, L2, the parent and the origins all answer.
        for tier in ["l1", "l2", "parent", "origin"] {
            assert!(a.total.tiers[tier].requests > 0, "{} {tier}", a.name);
        }
        let model = a.model.as_ref().unwrap();
        assert_eq!(model.l1_capacity, 2 << 20);
        let origin_requests: u64 = model.origins.iter().map(|o| o.requests).sum();
        assert_eq!(origin_requests, a.total.tiers["origin"].requests);
        // The latency model: us-east clients pay the transatlantic round trips.
        let eu = a.regions[0].latency_ms.as_ref().unwrap();
        let us = a.regions[1].latency_ms.as_ref().unwrap();
        assert!(us.p50 > eu.p50, "{} vs {}", us.p50, eu.p50);
    }
    assert_eq!(first[0].model.as_ref().unwrap().l1_policy, "lru");
    assert_eq!(first[1].model.as_ref().unwrap().l1_policy, "s3fifo");
}

#[test]
fn a_larger_l1_never_hits_less_under_lru() {
    let text = GENERATED
        .replace(
            "l1_policy = [\"lru\", \"s3fifo\", \"sieve\"]",
            "l1_policy = [\"lru\"]\nl1_capacity = [\"256KiB\", \"1MiB\", \"4MiB\", \"16MiB\"]",
        )
        .replace(
            "l2_capacity = \"16MiB\"",
            "l2_capacity = 0\ntiering = false",
        );
    let reports = run(&scenario(&text));
    let ratios: Vec<f64> = reports.iter().map(|r| r.total.hit_ratio).collect();
    assert!(ratios.windows(2).all(|w| w[0] <= w[1]), "{ratios:?}");
    assert!(reports.iter().all(|r| r.total.tiers["l2"].requests == 0));
    assert!(
        reports
            .iter()
            .all(|r| r.total.tiers["parent"].requests == 0)
    );
}

#[test]
fn the_cost_table_prices_egress_origin_and_storage() {
    let text = format!(
        "{GENERATED}\n[cost]\negress_per_gib = {{ eu-west = 0.05 }}\negress_default_per_gib = 0.1\norigin_requests_per_million = 1000000\norigin_egress_per_gib = 0\nmemory_per_gib_month = 0\ndisk_per_gib_month = 0\n"
    );
    let reports = run(&scenario(&text));
    let report = &reports[0];
    let cost = report.model.as_ref().unwrap().cost.as_ref().unwrap();
    // One currency unit per origin request.
    assert_eq!(
        cost.origin_requests,
        report.total.tiers["origin"].requests as f64
    );
    let gib = (1u64 << 30) as f64;
    let egress =
        report.regions[0].bytes as f64 / gib * 0.05 + report.regions[1].bytes as f64 / gib * 0.1;
    assert!(
        (cost.client_egress - egress).abs() < 1e-3,
        "{} vs {egress}",
        cost.client_egress
    );
}

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Counts this thread's live heap bytes and their peak, for the memory test.
struct Counting;

// SAFETY: forwards to the system allocator; only adds thread-local counters, which never
// allocate (const-initialised `Cell`s).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + layout.size() as isize);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap growth of this thread while replaying `requests` requests.
fn peak_while_replaying(requests: u64) -> isize {
    let text = GENERATED
        .replace("requests = 20000", &format!("requests = {requests}"))
        .replace(
            "l1_policy = [\"lru\", \"s3fifo\", \"sieve\"]",
            "l1_policy = [\"s3fifo\"]",
        );
    let scenario = scenario(&text);
    let variant = &scenario.variants[0];
    let topology = topology_of(&scenario, variant, 0).unwrap();
    let source = Source::open(&scenario).unwrap();
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let report = run_variant(
        &scenario,
        variant,
        topology,
        source,
        &|| false,
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(report.total.requests, requests);
    PEAK.with(Cell::get) - base
}

#[test]
fn memory_is_bounded_by_the_caches_not_the_trace_length() {
    let short = peak_while_replaying(50_000);
    let long = peak_while_replaying(500_000);
    // Ten times the requests: the caches were full in both runs, so the peak is the same
    // give or take map growth steps — not ten times the trace.
    assert!(
        long < short * 2 + (1 << 20),
        "short {short} B, long {long} B"
    );
}

#[test]
fn model_keys_are_checked_with_their_line_and_key() {
    let cwd = std::env::current_dir().unwrap();
    let errors = |text: &str| {
        scenario::parse(text, "bad.toml", &cwd, "bad")
            .err()
            .unwrap_or_else(|| panic!("{text} has errors"))
            .to_string()
    };
    // The same scenario in live mode is valid: a trace replays live too, and a variant's
    // L1 policy is the started edges' `[cache] l1_policy`.
    let live = GENERATED.replace("mode = \"model\"\n", "");
    if let Err(error) = scenario::parse(&live, "live.toml", &cwd, "live") {
        panic!("live mode refused: {error}");
    }
    let text = errors(&GENERATED.replace("\"sieve\"]", "\"arc\"]"));
    assert!(
        text.contains("sweep.l1_policy[2]") && text.contains("unknown eviction policy \"arc\""),
        "{text}"
    );
    let text = errors(&GENERATED.replace(
        "[trace.generate]",
        "[trace]\nfile = \"missing.bin\"\n[trace.generate]",
    ));
    assert!(
        text.contains("give `file` or `generate`, not both"),
        "{text}"
    );
    let text = errors(&GENERATED.replace("zipf = 0.9", "zipf = -1.0"));
    assert!(text.contains("trace.generate.zipf"), "{text}");
    let text = errors(&format!(
        "{GENERATED}\n[cost]\negress_per_gib = {{ mars = 1.0 }}\n"
    ));
    assert!(
        text.contains("cost.egress_per_gib.mars") && text.contains("no clients in region"),
        "{text}"
    );
}

/// A bad record met while replaying (the file changed after its check, or the run skipped
/// it) stops every worker: each variant's report covers the records before it and says it
/// was interrupted, and the error names the file, the record and the field.
#[test]
fn a_bad_record_mid_stream_stops_with_partial_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("timestamp,object_id,size\n");
    for record in 0..20_000 {
        text.push_str(&format!("{},{},{}\n", record / 100, record % 700, 1000));
    }
    text.push_str("200,7,-3\n");
    for record in 0..5_000 {
        text.push_str(&format!("{},{},1000\n", 201 + record / 100, record));
    }
    std::fs::write(dir.path().join("bad.csv"), text).unwrap();
    let scenario = scenario::parse(
        "mode = \"model\"\n[clients.eu-west]\nrate = 1\n[trace]\nfile = \"bad.csv\"\n[sweep]\nl1_policy = [\"lru\", \"s3fifo\", \"sieve\"]\n",
        "bad.toml",
        dir.path(),
        "bad",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let outcome = run_all(&scenario, &AtomicBool::new(false), &Progress::default(), 2).unwrap();
    let error = outcome
        .error
        .expect("the bad record stops the run")
        .to_string();
    assert!(
        error.contains("bad.csv: record 20001, field `size`"),
        "{error}"
    );
    assert_eq!(outcome.reports.len(), 3);
    for report in &outcome.reports {
        assert!(report.interrupted, "{}", report.name);
        assert!(report.total.requests <= 20_000, "{}", report.name);
        assert!(report.total.requests > 0, "{}", report.name);
    }
}
