//! Unit tests of the pure parts: the seeded plan, popularity, config rewriting, parsing
//! of response headers, and the report's markup.

use std::sync::Arc;
use std::time::Duration;

use super::load::{Tier, parse_server_timing};
use super::scenario::{self, Limit, Scenario};
use super::workload::{Plan, Rng, Sampler, object_count};
use super::{examples, html, variant};

fn scenario(text: &str) -> Scenario {
    let cwd = std::env::current_dir().unwrap();
    scenario::parse(text, "test.toml", &cwd, "test").unwrap_or_else(|errors| panic!("{errors}"))
}

const EDGES: &str = r#"
seed = 5
[deployment]
edges = { a = "http://127.0.0.1:1", b = ["http://127.0.0.1:2", "http://127.0.0.1:3"] }
[workload]
duration = "10s"
[clients.a]
rate = 100
[clients.b]
rate = 50
[catalogue]
paths = ["/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8", "/9", "/10"]
"#;

fn plan(scenario: &Scenario) -> Vec<super::workload::PlannedRequest> {
    let sampler = Arc::new(Sampler::new(
        scenario.catalogue.popularity,
        object_count(&scenario.catalogue.objects),
    ));
    Plan::new(scenario, sampler).collect()
}

#[test]
fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
    let first = plan(&scenario(EDGES));
    let again = plan(&scenario(EDGES));
    assert_eq!(first, again);
    let other = plan(&scenario(&EDGES.replace("seed = 5", "seed = 6")));
    assert_ne!(first, other);
}

#[test]
fn a_region_keeps_its_requests_when_another_is_added() {
    let two = plan(&scenario(EDGES));
    let three = plan(&scenario(&format!(
        "{}\n[clients.c]\nrate = 10\n",
        EDGES.replace("b = [", "c = \"http://127.0.0.1:4\", b = [")
    )));
    let region_a = |plan: &[super::workload::PlannedRequest]| -> Vec<(Duration, u32)> {
        plan.iter()
            .filter(|r| r.region == 0)
            .map(|r| (r.at, r.object))
            .collect()
    };
    assert_eq!(region_a(&two), region_a(&three));
}

#[test]
fn the_plan_follows_the_rates_and_is_in_time_order() {
    let scenario = scenario(EDGES);
    let plan = plan(&scenario);
    let a = plan.iter().filter(|r| r.region == 0).count() as f64;
    let b = plan.iter().filter(|r| r.region == 1).count() as f64;
    // Poisson counts: mean 1000 and 500, standard deviation ~32 and ~22.
    assert!((a - 1000.0).abs() < 160.0, "region a planned {a}");
    assert!((b - 500.0).abs() < 110.0, "region b planned {b}");
    assert!(plan.windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert!(plan.last().unwrap().at < Duration::from_secs(10));
    let mut counted = scenario.clone();
    counted.workload.limit = Limit::Requests(321);
    assert_eq!(self::plan(&counted).len(), 321);
}

#[test]
fn constant_arrivals_are_evenly_spaced() {
    let scenario = scenario(
        &EDGES
            .replace(
                "duration = \"10s\"",
                "duration = \"1s\"\narrivals = \"constant\"",
            )
            .replace("rate = 50", "rate = 10"),
    );
    let b: Vec<Duration> = plan(&scenario)
        .iter()
        .filter(|r| r.region == 1)
        .map(|r| r.at)
        .collect();
    assert_eq!(b.len(), 10, "10/s for 1s, the first at 0: {b:?}");
    assert_eq!(b[0], Duration::ZERO);
    assert!(((b[7] - b[6]).as_secs_f64() - 0.1).abs() < 1e-9);
}

#[test]
fn zipf_sampling_matches_its_probabilities() {
    let sampler = Sampler::new(scenario::Popularity::Zipf { s: 1.0 }, 100);
    let mut rng = Rng::new(42);
    let mut counts = vec![0u32; 100];
    let draws = 200_000;
    for _ in 0..draws {
        counts[sampler.sample(&mut rng) as usize] += 1;
    }
    for rank in [0, 1, 2, 9, 49] {
        let expected = sampler.probability(rank) * f64::from(draws);
        let got = f64::from(counts[rank as usize]);
        assert!(
            (got - expected).abs() < 5.0 * expected.sqrt() + 5.0,
            "rank {rank}: {got} vs {expected}"
        );
    }
    // 1/H(100) of the draws go to the first object.
    assert!((sampler.probability(0) - 0.1928).abs() < 0.001);
    let uniform = Sampler::new(scenario::Popularity::Uniform, 4);
    assert!((uniform.probability(3) - 0.25).abs() < 1e-12);
}

#[test]
fn variants_rewrite_the_deployment() {
    let base = edgebox_config::EMBEDDED_DEFAULT;
    let settings = scenario::Settings {
        tiering: Some(false),
        lb_policy: Some("round_robin".into()),
        l1_capacity: Some(1 << 20),
        origin_delay: [("origin-1".to_owned(), 250_000)].into(),
        latency_scale: Some(2.0),
        cache: Some(false),
        l1_policy: Some(edgebox_cache_model::eviction::PolicyKind::S3fifo),
        ..Default::default()
    };
    let text = variant::apply(base, &settings).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let deployment =
        edgebox_config::parse(&text, "rewritten", &cwd).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        deployment
            .edges()
            .all(|(_, edge)| edge.parent.is_none() && edge.l1_capacity == 1 << 20)
    );
    assert!(
        deployment
            .origin_groups
            .values()
            .all(|g| g.policy == edgebox_config::LbPolicy::RoundRobin)
    );
    assert!(!deployment.cache.enabled);
    assert_eq!(deployment.cache.l1_policy, edgebox_config::L1Policy::S3fifo);
    let Some(edgebox_config::Role::Origin(origin)) = deployment.node("origin-1").map(|n| &n.role)
    else {
        panic!()
    };
    assert_eq!(origin.delay, Duration::from_millis(250));
    assert_eq!(
        deployment.latency.link("eu-west", "us-east").unwrap().rtt,
        Duration::from_millis(140)
    );
}

#[test]
fn a_started_deployment_gets_free_ports_its_own_data_and_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let text = variant::for_started(
        edgebox_config::EMBEDDED_DEFAULT,
        dir.path(),
        &dir.path().join("data"),
        &dir.path().join("cat"),
    )
    .unwrap();
    let deployment =
        edgebox_config::parse(&text, "started", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(deployment.data_dir, dir.path().join("data"));
    let addrs: Vec<std::net::SocketAddr> = deployment
        .nodes
        .iter()
        .flat_map(|node| node.listeners())
        .map(|(_, addr)| addr)
        .collect();
    assert!(
        addrs
            .iter()
            .all(|addr| addr.ip().is_loopback() && addr.port() != 0),
        "{addrs:?}"
    );
    let distinct: std::collections::BTreeSet<_> = addrs.iter().collect();
    assert_eq!(distinct.len(), addrs.len(), "every listener its own port");
    assert!(deployment.nodes.iter().all(|node| matches!(
        node.role,
        edgebox_config::Role::Edge(_) | edgebox_config::Role::Origin(_)
    )));
    let rule = |path: &str| {
        deployment
            .origin
            .rule_for(path)
            .and_then(|r| r.cache_control.clone())
    };
    assert_eq!(rule("/sim/nocache/000001.bin").as_deref(), Some("no-store"));
    assert_eq!(
        rule("/sim/objects/000001.bin").as_deref(),
        Some("public, max-age=86400")
    );
    assert_eq!(
        rule("/assets/app.css").as_deref(),
        Some("public, max-age=3600"),
        "the deployment's own rules stay"
    );
}

#[test]
fn the_catalogue_is_written_with_its_planned_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let objects = scenario::CatalogueObjects::Generated {
        count: 20,
        median_size: 1000,
        size_sigma: 1.0,
        min_size: 10,
        max_size: 5000,
    };
    let total = super::workload::write_catalogue(&objects, 3, dir.path()).unwrap();
    let sizes = super::workload::object_sizes(&objects, 3);
    assert_eq!(total, sizes.iter().sum::<u64>());
    for (index, size) in sizes.iter().enumerate() {
        let cached =
            std::fs::metadata(dir.path().join(format!("sim/objects/{index:06}.bin"))).unwrap();
        let uncached =
            std::fs::metadata(dir.path().join(format!("sim/nocache/{index:06}.bin"))).unwrap();
        assert_eq!((cached.len(), uncached.len()), (*size, *size));
    }
    assert!(
        sizes.iter().any(|s| *s != sizes[0]),
        "sizes vary with sigma 1"
    );
}

#[test]
fn the_examples_are_valid_against_the_embedded_default() {
    for name in examples::names() {
        let scenario = examples::load(name)
            .unwrap()
            .unwrap_or_else(|errors| panic!("{errors}"));
        // trace-live compares modes (live against model) on one variant.
        assert!(
            scenario.variants.len() >= 2 || scenario.mode == scenario::Mode::Compare,
            "{name} compares variants"
        );
        assert!(
            scenario
                .variants
                .iter()
                .all(|v| v.deployment_text.is_some())
        );
        assert!(matches!(scenario.target, scenario::Target::Start { .. }));
    }
}

#[test]
fn server_timing_and_tiers_are_read_leniently() {
    let values = ["edge;dur=1.5, SIM;dur=12.3", "total;dur=20"];
    assert_eq!(parse_server_timing(values), (Some(12.3), Some(20.0)));
    let parts = ["sim-client;dur=2, sim-origin;dur=3;desc=\"x\", Total;dur=9"];
    assert_eq!(parse_server_timing(parts), (Some(5.0), Some(9.0)));
    assert_eq!(parse_server_timing(["garbage;;,"]), (None, None));
    assert_eq!(Tier::parse(Some(" L2 ")), Tier::L2);
    assert_eq!(Tier::parse(Some("shield")), Tier::Unknown);
    assert_eq!(Tier::parse(None), Tier::Unknown);
}

#[test]
fn charts_escape_their_text() {
    let svg = html::line_chart(
        "a<b & \"c\"",
        "x",
        "y",
        &[("<s>".into(), vec![(0.0, 1.0), (1.0, 2.0)])],
        None,
    );
    assert!(svg.contains("a&lt;b &amp; &quot;c&quot;") && svg.contains("&lt;s&gt;"));
    assert!(!svg.contains("<s>"));
    let empty = html::bar_chart("t", "x", "%", &[], &[], Some(100.0));
    assert!(empty.ends_with("</svg>\n"));
}

#[test]
fn a_running_deployment_is_checked_once_its_config_is_known() {
    let text = "[deployment]\nrunning = \"http://127.0.0.1:9090\"\n\n[workload]\nrequests = 10\n\n[clients.eu-west]\nrate = 5\n[clients.mars]\nrate = 5\n\n[[variants]]\nname = \"slow\"\norigin_delay = { origin-7 = \"1s\" }\n";
    let mut scenario = scenario(text);
    let cwd = std::env::current_dir().unwrap();
    let deployment = edgebox_config::parse(edgebox_config::EMBEDDED_DEFAULT, "cp", &cwd).unwrap();
    let errors = scenario.bind(deployment).unwrap_err().to_string();
    assert!(
        errors.contains("test.toml:9:10: clients.mars: unknown region \"mars\""),
        "{errors}"
    );
    assert!(
        errors.contains("test.toml:14:18: variants[0].origin_delay.origin-7: unknown node"),
        "{errors}"
    );

    let mut fine = self::scenario(
        &text
            .replace("[clients.mars]\nrate = 5\n", "")
            .replace("origin-7", "origin-2"),
    );
    let cwd = std::env::current_dir().unwrap();
    fine.bind(edgebox_config::parse(edgebox_config::EMBEDDED_DEFAULT, "cp", &cwd).unwrap())
        .unwrap();
    let variant_text = fine.variants[0]
        .deployment_text
        .as_deref()
        .expect("the variant's config is built");
    assert!(
        variant_text.contains("delay = \"1000000us\""),
        "{variant_text}"
    );
    assert!(fine.deployment().is_some());
}

/// A trace prepared for live replay: every record checked, one file per object at its
/// traced size (named as the load generator requests it), the replay timed to the
/// clients' rate; a `ttl` column (model-only) is refused with the file and record.
#[test]
fn a_trace_is_prepared_for_live_replay_with_its_objects_at_their_sizes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.csv"),
        "timestamp,object_id,size,region\n0,7,1000,eu-west\n5,9,20,us-east\n10,7,1000,us-east\n20,11,3,eu-west\n",
    )
    .unwrap();
    let text = "[deployment.settings]\nlatency = false\n[clients.eu-west]\nrate = 2\n[clients.us-east]\nrate = 2\n[trace]\nfile = \"t.csv\"\n";
    let live = scenario::parse(text, "live.toml", dir.path(), "live")
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(live.mode, scenario::Mode::Live);
    let root = dir.path().join("root");
    let checked = super::trace_live::prepare(&live, &root).unwrap();
    assert_eq!((checked.records, checked.objects), (4, 3));
    assert_eq!(checked.span_ms, 20_000);
    // Four requests at 4/s: one second of wall clock for 20 s of trace time.
    assert!((checked.scale(4.0) - 0.05).abs() < 1e-9);
    for (object, size) in [(7u64, 1000u64), (9, 20), (11, 3)] {
        let path = root.join(super::load::trace_path(object).trim_start_matches('/'));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "{path:?}");
    }

    std::fs::write(
        dir.path().join("t.csv"),
        "timestamp,object_id,size,ttl\n0,7,1000,60\n",
    )
    .unwrap();
    let error = super::trace_live::prepare(&live, &dir.path().join("root2"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("t.csv") && error.contains("record 1") && error.contains("ttl"),
        "{error}"
    );
}

#[test]
fn connections_per_edge_defaults_to_a_bound_and_refuses_zero() {
    assert_eq!(
        scenario(EDGES).workload.connections_per_edge,
        scenario::DEFAULT_CONNECTIONS_PER_EDGE as usize
    );
    let bounded = EDGES.replace(
        "duration = \"10s\"",
        "duration = \"10s\"\nconnections_per_edge = 8",
    );
    assert_eq!(scenario(&bounded).workload.connections_per_edge, 8);
    let zero = EDGES.replace(
        "duration = \"10s\"",
        "duration = \"10s\"\nconnections_per_edge = 0",
    );
    let cwd = std::env::current_dir().unwrap();
    let errors = scenario::parse(&zero, "test.toml", &cwd, "test")
        .expect_err("0 connections is refused")
        .to_string();
    assert!(
        errors.contains(
            "workload.connections_per_edge: connections_per_edge must be between 1 and 10000, got 0"
        ),
        "{errors}"
    );
}
