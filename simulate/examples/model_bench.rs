//! Figures for `benches/results/simulate.md`: replays an `oracleGeneral` trace
//! (1) through each L1 eviction policy alone — object sizes only, no TTL, no tiers, the
//! setting libCacheSim simulates — printing miss ratios and requests/s, and (2) through
//! model mode (single tier, one thread, one variant at a time) for each policy at the
//! smallest and largest size, printing requests/s.
//!
//! `cargo run --release -p edgebox-simulate --example model_bench -- TRACE SIZE...`
//! (sizes in bytes). Output is tab-separated, one line per run.
//!
//! `model_bench --example NAME [THREADS]` times a built-in model-mode example (e.g.
//! `policies`) as `edgebox simulate --example NAME` runs it, without building the daemons.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use edgebox_cache_model::eviction::{L1, PolicyKind};
use edgebox_simulate::{model, scenario, trace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--example") {
        args.next();
        let name = args.next().ok_or("--example NAME")?;
        let threads = args.next().map_or(Ok(2), |t| t.parse())?;
        return example(&name, threads);
    }
    let path = std::path::PathBuf::from(args.next().ok_or("usage: model_bench TRACE SIZE...")?);
    let sizes: Vec<u64> = args.map(|size| size.parse()).collect::<Result<_, _>>()?;
    println!(
        "kind\tpolicy\tsize\trequests\tmiss_ratio\tbyte_miss_ratio\twall_s\tcpu_s\trequests_per_cpu_s"
    );
    // `BENCH_POLICIES=lru,s3fifo` limits the policies replayed (all by default).
    let only: Option<Vec<PolicyKind>> = std::env::var("BENCH_POLICIES")
        .ok()
        .map(|list| list.split(',').map(str::parse).collect())
        .transpose()?;
    for policy in PolicyKind::ALL {
        if only.as_ref().is_some_and(|only| !only.contains(&policy)) {
            continue;
        }
        for &size in &sizes {
            let started = Instant::now();
            let cpu_started = model::thread_cpu_seconds();
            let mut cache = L1::new(policy, size, 1 << 16);
            let (mut requests, mut misses, mut bytes, mut missed_bytes) = (0u64, 0u64, 0u64, 0u64);
            for record in trace::open(&path, Some(trace::Format::Oracle), &[])? {
                let record = record?;
                requests += 1;
                bytes += record.size;
                if cache.get(record.object).is_none() {
                    misses += 1;
                    missed_bytes += record.size;
                    cache.insert(record.object, record.size, 0);
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_started
                .zip(model::thread_cpu_seconds())
                .map_or(seconds, |(before, after)| after - before);
            println!(
                "policy\t{policy}\t{size}\t{requests}\t{:.4}\t{:.4}\t{seconds:.2}\t{cpu:.2}\t{:.0}",
                misses as f64 / requests as f64,
                missed_bytes as f64 / bytes as f64,
                requests as f64 / cpu
            );
        }
    }
    // Model mode, one thread: the whole path (trace parsing, routing, freshness, tiers,
    // latency model, counters) for a single-tier edge, every policy at the smallest and
    // the largest size.
    let (first, last) = (
        sizes.first().copied().ok_or("give at least one size")?,
        sizes.last().copied().ok_or("give at least one size")?,
    );
    let mut model_sizes = vec![first];
    if last != first {
        model_sizes.push(last);
    }
    let model_policies: Vec<&str> = PolicyKind::ALL
        .into_iter()
        .filter(|policy| only.as_ref().is_none_or(|only| only.contains(policy)))
        .map(PolicyKind::as_str)
        .collect();
    let text = format!(
        r#"
mode = "model"
[deployment.settings]
tiering = false
l2_capacity = 0
[clients.eu-west]
rate = 1
[trace]
file = {path:?}
format = "oracle"
[sweep]
l1_policy = {policies:?}
l1_capacity = {sizes:?}
"#,
        path = path.display().to_string(),
        policies = model_policies,
        sizes = model_sizes,
    );
    let cwd = std::env::current_dir()?;
    let scenario = scenario::parse(&text, "bench.toml", &cwd, "bench")?;
    // One variant at a time, on this thread (not in lockstep): each one's own speed.
    for variant in &scenario.variants {
        let variant = model::run_variant(
            &scenario,
            variant,
            model::topology_of(&scenario, variant, 0)?,
            model::Source::open(&scenario)?,
            &|| false,
            &model::Progress::default(),
        )?;
        let stats = variant.model.expect("model mode reports model stats");
        println!(
            "model\t{}\t{}\t{}\t{:.4}\t{:.4}\t{:.2}\t{:.2}\t{:.0}",
            stats.l1_policy,
            stats.l1_capacity,
            variant.total.requests,
            1.0 - variant.total.hit_ratio,
            1.0 - variant.total.origin_offload.bytes,
            stats.wall_s,
            stats.cpu_s,
            stats.requests_per_cpu_s
        );
    }
    Ok(())
}

fn example(name: &str, threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    let scenario = edgebox_simulate::examples::load(name).ok_or("no such example")??;
    let started = Instant::now();
    let outcome = model::run_all(
        &scenario,
        &AtomicBool::new(false),
        &model::Progress::default(),
        threads,
    )?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(err) = outcome.error {
        return Err(err.into());
    }
    println!("variant\thit_ratio\tbyte_hit_ratio\tcpu_s\trequests_per_cpu_s");
    let mut cpu = 0.0;
    for variant in outcome.reports {
        let stats = variant.model.expect("model mode reports model stats");
        cpu += stats.cpu_s;
        println!(
            "{}\t{:.4}\t{:.4}\t{:.2}\t{:.0}",
            variant.name,
            variant.total.hit_ratio,
            variant.total.origin_offload.bytes,
            stats.cpu_s,
            stats.requests_per_cpu_s
        );
    }
    println!(
        "example {name}: {threads} threads, wall {wall:.1} s, CPU {cpu:.1} s (replay threads)"
    );
    Ok(())
}
