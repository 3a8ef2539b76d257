//! The crate rule of ARCHITECTURE.md, checked against `cargo metadata`: no daemon crate
//! depends on another daemon crate (directly or through a library), and only the
//! `edgebox` binary depends on the daemons.

use std::collections::{BTreeMap, BTreeSet};

const DAEMONS: [&str; 4] = [
    "edgebox-origin",
    "edgebox-edge",
    "edgebox-sandbox",
    "edgebox-control-plane",
];

/// Workspace package -> the workspace packages it depends on (normal and build
/// dependencies; dev-dependencies are the tests' business).
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| dep["kind"].as_str() != Some("dev"))
                .map(|dep| dep["name"].as_str().unwrap().to_owned())
                .filter(|name| members.contains(name))
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph[from].iter().map(String::as_str).collect();
    while let Some(next) = stack.pop() {
        if seen.insert(next.to_owned()) {
            stack.extend(graph[next].iter().map(String::as_str));
        }
    }
    seen
}

#[test]
fn no_daemon_crate_depends_on_another_daemon_crate() {
    let graph = workspace_graph();
    for daemon in DAEMONS {
        assert!(
            graph.contains_key(daemon),
            "{daemon} is not a workspace member"
        );
        let reached = reachable(&graph, daemon);
        let daemons: Vec<&str> = DAEMONS
            .into_iter()
            .filter(|other| reached.contains(*other))
            .collect();
        assert!(
            daemons.is_empty(),
            "{daemon} depends on daemon crate(s) {daemons:?}"
        );
    }
}

#[test]
fn only_the_edgebox_binary_depends_on_the_daemons() {
    let graph = workspace_graph();
    for (package, deps) in &graph {
        if package == "edgebox" {
            continue;
        }
        let daemons: Vec<&String> = deps
            .iter()
            .filter(|d| DAEMONS.contains(&d.as_str()))
            .collect();
        assert!(
            daemons.is_empty(),
            "{package} depends on daemon crate(s) {daemons:?}; only the edgebox binary may"
        );
    }
    let edgebox = &graph["edgebox"];
    for daemon in DAEMONS {
        assert!(
            edgebox.contains(daemon),
            "the edgebox binary should run {daemon}"
        );
    }
}
