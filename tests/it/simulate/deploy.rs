//! Starting a deployment's nodes as child processes, with a small shell script standing
//! in for the `edgebox` executable: it follows the readiness protocol (announces a
//! listener on stdout, then waits to be stopped) or fails like a node that cannot start.
//! This checks the simulator's process handling on its own, whatever the daemons do.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use edgebox_control_plane::simulate::{SimError, deploy};
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
        Duration::from_secs(20),
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
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a failed node is noticed at once"
    );
    let pid = pid_of(&dir, "origin-a");
    crate::support::eventually(
        "origin-a to be stopped",
        Duration::from_secs(10),
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}
