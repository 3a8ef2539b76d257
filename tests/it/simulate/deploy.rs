//! Starting a deployment's nodes as child processes, with a small shell script standing
//! in for the `edgebox` executable: it follows the readiness protocol (announces a
//! listener on stdout, then waits to be stopped) or fails like a node that cannot start.
//! This checks the simulator's process handling on its own, whatever the daemons do.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use edgebox_simulate::{SimError, deploy};
use tokio_util::sync::CancellationToken;

use crate::support::{ONE_REGION, TestDir};

const NODE_SCRIPT: &str = r#"#!/bin/sh
# Called as: ROLE --config FILE --node NAME
node="$5"
dir=$(dirname "$3")
echo $$ > "$dir/$node.pid"
case "$node" in
  # Fails once origin-a is up, so that there is a running node to be stopped.
  broken*) while [ ! -f "$dir/origin-a.pid" ]; do sleep 0.02; done
           echo "$node: cannot bind its listener" >&2; exit 3 ;;
  *) echo "starting $node" >&2
     echo "edgebox-listening node=$node service=http addr=127.0.0.1:$(( $$ % 60000 + 1024 ))"
     exec sleep 30 ;;
esac
"#;

fn origins(dir: &TestDir, names: &[&str]) -> std::path::PathBuf {
    let nodes: String = names
        .iter()
        .map(|name| format!("[[nodes]]\nname = \"{name}\"\nrole = \"origin\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n\n"))
        .collect();
    dir.config(&format!("{ONE_REGION}\n{nodes}"))
}

fn script(dir: &TestDir) -> std::path::PathBuf {
    let path = dir.write("fake-edgebox.sh", NODE_SCRIPT);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The pid a node written by the script recorded (it does so first thing).
fn pid_of(dir: &TestDir, node: &str) -> u32 {
    std::fs::read_to_string(dir.path().join(format!("{node}.pid")))
        .unwrap_or_else(|err| panic!("{node} wrote no pid file: {err}"))
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_started_read_for_their_addresses_and_stopped() {
    let dir = TestDir::new();
    let config = origins(&dir, &["origin-a", "origin-b"]);
    let deployment = edgebox_config::load_file(&config).unwrap();
    let logs = dir.path().join("logs");
    let mut started = deploy::start(
        &script(&dir),
        &config,
        &deployment,
        &logs,
        Duration::from_secs(20),
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let a = started
        .addr("origin-a", "http")
        .expect("origin-a announced");
    let b = started
        .addr("origin-b", "http")
        .expect("origin-b announced");
    assert_ne!(a, b, "each node's own announcement is kept");
    let pids = [pid_of(&dir, "origin-a"), pid_of(&dir, "origin-b")];
    assert_eq!(
        a.port() as u32,
        pids[0] % 60000 + 1024,
        "the script announces a port made from its pid"
    );
    assert!(pids.iter().all(|pid| alive(*pid)));
    assert!(
        std::fs::read_to_string(logs.join("origin-a.log"))
            .unwrap()
            .contains("starting origin-a")
    );

    let stopping = Instant::now();
    started.stop(Duration::from_secs(10)).await;
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert!(
        pids.iter().all(|pid| !alive(*pid)),
        "stopped nodes are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_to_start_is_named_with_its_log_and_the_rest_are_stopped() {
    let dir = TestDir::new();
    let config = origins(&dir, &["origin-a", "broken-b"]);
    let deployment = edgebox_config::load_file(&config).unwrap();
    let started = Instant::now();
    let result = deploy::start(
        &script(&dir),
        &config,
        &deployment,
        &dir.path().join("logs"),
        Duration::from_secs(120),
        &CancellationToken::new(),
    )
    .await;
    let Err(SimError::Deployment(message)) = result else {
        panic!("expected a deployment error")
    };
    assert!(
        message.contains("node broken-b exited (exit status: 3)"),
        "{message}"
    );
    assert!(
        message.contains("cannot bind its listener"),
        "the node's log is quoted: {message}"
    );
    // Well under the 120 s ready timeout: the failure is noticed when the node exits,
    // not when the wait runs out (generous, since the machine may be loaded).
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a failed node is noticed at once, not at the ready timeout"
    );
    let pid = pid_of(&dir, "origin-a");
    crate::support::eventually(
        "origin-a to be stopped",
        Duration::from_secs(10),
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

/// A deployment of two regions behind a shield, plus a sandbox the simulator leaves out.
const SHIELDED: &str = r#"[regions.a]
[regions.b]

[latency]
enabled = false

[[nodes]]
name = "origin-1"
role = "origin"
region = "a"
listen = "127.0.0.1:0"

[[nodes]]
name = "origin-2"
role = "origin"
region = "b"
listen = "127.0.0.1:0"

[[nodes]]
name = "shield"
role = "edge"
region = "a"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
origin_group = "web"

[[nodes]]
name = "edge-a"
role = "edge"
region = "a"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
origin_group = "web"
parent = "shield"

[[nodes]]
name = "edge-b"
role = "edge"
region = "b"
listen = "127.0.0.1:0"
https = "127.0.0.1:0"
admin = "127.0.0.1:0"
origin_group = "web"
parent = "shield"

[[nodes]]
name = "sandbox"
role = "sandbox"
region = "a"
listen = "127.0.0.1:0"

[origin_groups.web]
members = [{ node = "origin-1" }, { node = "origin-2" }]
"#;

const VARIANTS: &str = r#"name = "orchestration"
seed = 3

[deployment]
file = "edgebox.toml"
ready_timeout = "30s"

[workload]
duration = "2s"
uncacheable = 0.1

[clients.a]
rate = 40
[clients.b]
rate = 40

[catalogue]
objects = 30
size = "2KiB"
size_sigma = 0.5
max_size = "8KiB"

[[variants]]
name = "tiered"

[[variants]]
name = "flat"
tiering = false
l1_policy = "sieve"
"#;

/// The whole path for a deployment the simulator starts, on the real daemons: the catalogue is written and served, each variant
/// gets its own processes on free ports, clients reach their region's client-facing edge
/// (never the shield, even when a variant removes it as a parent), what the simulator
/// sent agrees with each edge's own counter, a variant's `l1_policy` is the policy its
/// edges run, and every node is stopped at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_deployment_runs_each_variant_on_its_own_processes() {
    use edgebox_simulate as simulate;
    let dir = TestDir::new();
    dir.config(SHIELDED);
    let scenario_path = dir.write("scenario.toml", VARIANTS);
    let scenario = simulate::scenario::load_file(&scenario_path).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let options = simulate::Options {
        out_dir: out.clone(),
        exe: crate::support::edgebox_bin().to_path_buf(),
        progress: false,
        threads: None,
    };
    let report = simulate::run(scenario, &options, CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("{err}"))
        .report;

    assert_eq!(report.variants.len(), 2);
    for variant in &report.variants {
        let total = &variant.total;
        assert!(
            total.requests > 100,
            "{}: {} requests",
            variant.name,
            total.requests
        );
        assert_eq!(
            (total.ok, total.errors),
            (total.requests, 0),
            "{}: {:?}",
            variant.name,
            total.errors_by_kind
        );
        let routes: Vec<(&str, &str)> = variant
            .routes
            .iter()
            .map(|r| (r.region.as_str(), r.edge.as_str()))
            .collect();
        assert_eq!(
            routes,
            [("a", "edge-a"), ("b", "edge-b")],
            "{}",
            variant.name
        );
        for route in &variant.routes {
            assert_eq!(
                route.edge_reported,
                Some(route.requests),
                "{}: {route:?} and the edge's own count",
                variant.name
            );
        }
        assert!(total.tiers["origin"].requests > 0 && total.tiers["l1"].requests > 0);
        // The variant's `l1_policy` reached the edges' config: each says so in `/stats`.
        let policy = if variant.name == "flat" {
            "sieve"
        } else {
            "moka"
        };
        assert!(!variant.edges.is_empty());
        for edge in &variant.edges {
            let running = edge.cache.as_ref().and_then(|c| c.l1_policy.as_deref());
            assert_eq!(running, Some(policy), "{}: {}", variant.name, edge.edge);
        }
        assert!(
            out.join(format!("logs/{}/edge-a.log", variant.name))
                .is_file()
        );
        assert!(
            !out.join(format!("logs/{}/sandbox.log", variant.name))
                .exists(),
            "only edges and origins are started"
        );
    }
    let (tiered, flat) = (&report.variants[0].total, &report.variants[1].total);
    assert!(
        tiered.tiers["parent"].requests > 0,
        "edge-b's misses reach the shield: {:?}",
        tiered.tiers
    );
    assert_eq!(
        flat.tiers["parent"].requests, 0,
        "no shield in the flat variant"
    );
    assert!(tiered.origin_offload.requests > flat.origin_offload.requests);
    assert_eq!(
        report.scenario.planned_requests, tiered.requests,
        "the same workload ran against each"
    );
    assert_eq!(tiered.requests, flat.requests);

    for variant in &report.variants {
        for route in &variant.routes {
            let addr = route.url.trim_start_matches("http://").to_owned();
            assert!(
                std::net::TcpStream::connect(&addr).is_err(),
                "{} still listens at {addr}",
                route.edge
            );
        }
    }
}

/// Ctrl-C (the cancellation the CLI's signal handler fires) during a started
/// deployment's run: the load stops, the partial report covers what was sent, the later
/// variant is not started, and the nodes are stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_started_deployment_reports_and_stops_it() {
    use edgebox_simulate as simulate;
    let dir = TestDir::new();
    dir.config(SHIELDED);
    let scenario_path = dir.write(
        "scenario.toml",
        VARIANTS.replace("duration = \"2s\"", "duration = \"60s\""),
    );
    let scenario = simulate::scenario::load_file(&scenario_path).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let options = simulate::Options {
        out_dir: out.clone(),
        exe: crate::support::edgebox_bin().to_path_buf(),
        progress: false,
        threads: None,
    };
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { simulate::run(scenario, &options, cancel).await }
    });
    // edge-a's admin address is in its log (the supervisor appends announcements there);
    // its own request counter says when it has served 20 requests.
    let edge_log = out.join("logs/tiered/edge-a.log");
    let admin = crate::support::eventually(
        "edge-a to announce its admin listener",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&edge_log).unwrap_or_default();
            async move {
                log.lines()
                    .find(|line| line.contains("node=edge-a service=admin"))
                    .and_then(|line| line.split("addr=").nth(1))
                    .map(|addr| addr.trim().to_owned())
            }
        },
    )
    .await;
    // The simulator minted edge-a's credential before starting it, in its own work
    // directory under the system's temp dir; other tests' simulators have theirs there
    // too, so the right one is the one edge-a accepts.
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("edgebox-simulate-")
        {
            candidates.extend(find_files(&entry.path(), Path::new("edge-a/credential")));
        }
    }
    let mut http = None;
    for path in candidates {
        let Ok(credential) = std::fs::read_to_string(&path) else {
            continue;
        };
        let client = crate::support::authed_client(credential.trim());
        let answer = client.get(format!("http://{admin}/stats")).send().await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            http = Some(client);
            break;
        }
    }
    let http = http.expect("edge-a accepts a credential the simulator minted");
    crate::support::eventually(
        "edge-a to serve 20 requests",
        Duration::from_secs(30),
        || {
            let request = http.get(format!("http://{admin}/stats")).send();
            async move {
                let stats: edgebox_wire::edge::EdgeStats = request.await.ok()?.json().await.ok()?;
                (stats.requests.total >= 20).then_some(())
            }
        },
    )
    .await;
    let interrupted = Instant::now();
    cancel.cancel();
    let report = run
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("{err}"))
        .report;
    assert!(
        interrupted.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        interrupted.elapsed()
    );
    assert!(report.interrupted);
    assert_eq!(report.variants.len(), 1, "the flat variant is not started");
    let variant = &report.variants[0];
    assert!(
        variant.interrupted && variant.unsent > 3000,
        "{} unsent",
        variant.unsent
    );
    assert!(variant.total.ok >= 20);
    assert!(out.join("report.json").is_file() && out.join("report.html").is_file());
    assert!(!out.join("logs/flat").exists());
    for route in &variant.routes {
        let addr = route.url.trim_start_matches("http://").to_owned();
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "{} still listens at {addr}",
            route.edge
        );
    }
}

/// Every file under `root` whose path ends with `suffix`.
fn find_files(root: &Path, suffix: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}
