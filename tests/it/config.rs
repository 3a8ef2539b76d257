//! Deployment config: every mistake reported with file, line and key; exit codes.

use std::path::Path;

use crate::support::{TestDir, edgebox};

/// A small valid deployment that the mistakes below are made in.
const VALID: &str = r#"
[deployment]
name = "t"

[regions.eu]
[regions.us]

[latency]
enabled = true

[[latency.links]]
between = ["eu", "us"]
rtt = "80ms"

[[nodes]]
name = "edge-1"
role = "edge"
region = "eu"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
origin_group = "web"

[[nodes]]
name = "origin-1"
role = "origin"
region = "us"
listen = "127.0.0.1:0"

[origin_groups.web]
members = [{ node = "origin-1" }]
"#;

/// Replaces `from` (which must occur in VALID) with `to`, checks the result and returns
/// its diagnostics as `(line, path, message)`.
fn diagnostics(from: &str, to: &str) -> Vec<(Option<usize>, String, String)> {
    assert!(VALID.contains(from), "test bug: {from:?} not in VALID");
    let text = VALID.replacen(from, to, 1);
    match edgebox_config::parse(&text, "test.toml", Path::new("/tmp")) {
        Ok(_) => Vec::new(),
        Err(errors) => {
            assert_eq!(errors.file, "test.toml");
            errors
                .diagnostics
                .into_iter()
                .map(|d| (d.line, d.path, d.message))
                .collect()
        }
    }
}

/// Checks that the mistake is reported under `path`, on the last line of the edited text
/// that contains `at`, with a message containing `message`.
#[track_caller]
fn check(from: &str, to: &str, at: &str, path: &str, message: &str) {
    let text = VALID.replacen(from, to, 1);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines
        .iter()
        .rposition(|l| l.contains(at))
        .expect("test bug: marker not found")
        + 1;
    let found = diagnostics(from, to);
    assert!(
        found
            .iter()
            .any(|(l, p, m)| *l == Some(line) && p == path && m.contains(message)),
        "expected line {line} `{path}`: ...{message}...; got {found:#?}"
    );
}

#[test]
fn valid_config_has_no_errors() {
    assert_eq!(diagnostics("", ""), Vec::new());
}

#[test]
fn each_mistake_is_reported_with_line_and_key() {
    check(
        "name = \"t\"",
        "name = \"t\"\ncolour = \"blue\"",
        "colour",
        "deployment.colour",
        "unknown field `colour`",
    );
    check(
        "[regions.us]",
        "[regions.us]\n[colours]",
        "[colours]",
        "colours",
        "unknown section `colours`",
    );
    check(
        "rtt = \"80ms\"",
        "rtt = \"80 parsecs\"",
        "80 parsecs",
        "latency.links[0].rtt",
        "invalid duration",
    );
    check(
        "between = [\"eu\", \"us\"]",
        "between = [\"eu\", \"mars\"]",
        "mars",
        "latency.links[0].between",
        "unknown region \"mars\"",
    );
    check(
        "region = \"eu\"",
        "region = \"atlantis\"",
        "atlantis",
        "nodes[0].region",
        "unknown region \"atlantis\"",
    );
    check(
        "origin_group = \"web\"",
        "origin_group = \"webb\"",
        "webb",
        "nodes[0].origin_group",
        "unknown origin group \"webb\"",
    );
    check(
        "admin = \"127.0.0.1:0\"",
        "admin = \"localhost\"",
        "localhost",
        "nodes[0].admin",
        "not a listen address",
    );
    // The admin port stays on the machine unless the config says otherwise.
    check(
        "admin = \"127.0.0.1:0\"",
        "admin = \"0.0.0.0:9180\"",
        "0.0.0.0:9180",
        "nodes[0].admin",
        "admin_public = true",
    );
    assert_eq!(
        diagnostics(
            "admin = \"127.0.0.1:0\"",
            "admin = \"0.0.0.0:0\"\nadmin_public = true"
        ),
        Vec::new()
    );
    assert_eq!(
        diagnostics("admin = \"127.0.0.1:0\"", "admin = \"[::1]:0\""),
        Vec::new()
    );
    check(
        "role = \"origin\"",
        "role = \"origin\"\nparent = \"edge-1\"",
        "parent = \"edge-1\"",
        "nodes[1].parent",
        "does not apply",
    );
    check(
        "role = \"edge\"",
        "role = \"edge\"\nparent = \"nowhere\"",
        "nowhere",
        "nodes[0].parent",
        "\"nowhere\" does not exist",
    );
    check(
        "role = \"edge\"",
        "role = \"edge\"\nparent = \"origin-1\"",
        "parent = \"origin-1\"",
        "nodes[0].parent",
        "is not an edge",
    );
    check(
        "members = [{ node = \"origin-1\" }]",
        "policy = \"random\"\nmembers = [{ node = \"origin-1\" }]",
        "random",
        "origin_groups.web.policy",
        "unknown policy",
    );
    check(
        "members = [{ node = \"origin-1\" }]",
        "members = [{ node = \"origin-9\" }]",
        "origin-9",
        "origin_groups.web.members[0].node",
        "unknown node \"origin-9\"",
    );
    check(
        "members = [{ node = \"origin-1\" }]",
        "members = [{ host = \"o.example\" }]",
        "o.example",
        "origin_groups.web.members[0].port",
        "needs a `port`",
    );
    check(
        "name = \"origin-1\"",
        "name = \"edge-1\"",
        "name = \"edge-1\"",
        "nodes[1].name",
        "already used",
    );
    check(
        "rtt = \"80ms\"",
        "rtt = \"80ms\"\nloss = 1.5",
        "loss = 1.5",
        "latency.links[0].loss",
        "probability",
    );
    check(
        "role = \"origin\"",
        "role = \"cache\"",
        "cache",
        "nodes[1].role",
        "unknown variant `cache`",
    );
    check(
        "listen = \"127.0.0.1:0\"\nadmin",
        "listen = 8080\nadmin",
        "listen = 8080",
        "nodes[0].listen",
        "invalid type",
    );
}

#[test]
fn parent_loops_are_rejected() {
    let looped = VALID.replacen("role = \"edge\"", "role = \"edge\"\nparent = \"edge-2\"", 1)
        + r#"
[[nodes]]
name = "edge-2"
role = "edge"
region = "eu"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
origin_group = "web"
parent = "edge-1"
"#;
    let errors = edgebox_config::parse(&looped, "loop.toml", Path::new("/tmp")).unwrap_err();
    let loop_error = errors
        .diagnostics
        .iter()
        .find(|d| d.message.contains("parent loop"))
        .expect("a parent loop error");
    assert_eq!(loop_error.path, "nodes[0].parent");
    assert!(
        loop_error.message.contains("edge-1 -> edge-2 -> edge-1"),
        "{}",
        loop_error.message
    );
}

#[test]
fn two_listeners_on_one_address_are_rejected() {
    let text = VALID.replacen(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:7000\"\nadmin = \"127.0.0.1:7000\"",
        1,
    );
    let errors = edgebox_config::parse(&text, "dup.toml", Path::new("/tmp")).unwrap_err();
    assert!(
        errors
            .diagnostics
            .iter()
            .any(|d| d.path == "nodes[0].admin" && d.message.contains("127.0.0.1:7000 is already")),
        "{errors}"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = VALID
        .replacen("region = \"eu\"", "region = \"atlantis\"", 1)
        .replacen("origin_group = \"web\"", "origin_group = \"webb\"", 1)
        .replacen("rtt = \"80ms\"", "rtt = \"soon\"", 1);
    let errors = edgebox_config::parse(&text, "many.toml", Path::new("/tmp")).unwrap_err();
    let paths: Vec<&str> = errors.diagnostics.iter().map(|d| d.path.as_str()).collect();
    for expected in [
        "latency.links[0].rtt",
        "nodes[0].region",
        "nodes[0].origin_group",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let errors = edgebox_config::parse("[deployment\nname = 1\n", "broken.toml", Path::new("/tmp"))
        .unwrap_err();
    assert_eq!(errors.diagnostics[0].line, Some(1), "{errors}");
}

#[test]
fn check_config_exit_codes_and_output() {
    let dir = TestDir::new();
    let good = dir.write("good.toml", VALID);
    let output = edgebox(&["check-config", good.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");

    let bad = dir.write(
        "bad.toml",
        VALID.replacen("region = \"eu\"", "region = \"atlantis\"", 1),
    );
    let output = edgebox(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:18:1: nodes[0].region: unknown region \"atlantis\"",
        bad.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );

    let output = edgebox(&["check-config", "--json", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["path"], "nodes[0].region");
    assert_eq!(report["errors"][0]["line"], 18);

    let missing = dir.path().join("missing.toml");
    let output = edgebox(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

/// Nodes on other machines are named by host name; one that does not resolve stops
/// `check-config` (and any daemon) with the node, the host and the line.
#[test]
fn a_node_host_that_does_not_resolve_is_named_with_its_node() {
    let dir = TestDir::new();
    let file = dir.write(
        "hosts.toml",
        VALID.replacen(
            "role = \"origin\"\nregion = \"us\"\nlisten = \"127.0.0.1:0\"",
            "role = \"origin\"\nregion = \"us\"\nlisten = \"origin-1.edgebox.invalid:8080\"",
            1,
        ),
    );
    let output = edgebox(&["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:27:1: nodes[1].listen: node \"origin-1\": host \"origin-1.edgebox.invalid\" does not resolve",
        file.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn embedded_default_round_trips_through_check_config() {
    let dir = TestDir::new();
    let output = edgebox(&["config", "default"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("127.0.0.1:9090") && text.contains("127.0.0.1:8443"));
    let file = dir.write("default.toml", &text);
    let output = edgebox(&["check-config", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn daemons_refuse_a_broken_config_with_exit_78() {
    let dir = TestDir::new();
    let bad = dir.write(
        "bad.toml",
        VALID.replacen("region = \"eu\"", "region = \"atlantis\"", 1),
    );
    let output = edgebox(&[
        "origin",
        "--config",
        bad.to_str().unwrap(),
        "--node",
        "origin-1",
    ]);
    assert_eq!(output.status.code(), Some(78));
    let output = edgebox(&["up", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown region \"atlantis\""));
}

#[test]
fn edge_hosts_and_the_hop_key_are_checked() {
    let found = diagnostics(
        "[origin_groups.web]",
        "[edge]\nhop_key = \"short\"\nhop_key_env = \"X\"\n\n[edge.hosts]\n\
         names = [\"ok.example\", \"bad/host\", \"a.example:80\", \"*.fine.example\", \"[::1]\", \"[nope]\"]\n\
         unknown = \"maybe\"\ndefault = \"x y\"\n\n[origin_groups.web]",
    );
    let has = |path: &str, message: &str| {
        found
            .iter()
            .any(|(_, p, m)| p == path && m.contains(message))
    };
    assert!(
        has("edge.hosts.names[1]", "is not a host name"),
        "{found:#?}"
    );
    assert!(has("edge.hosts.names[2]", "no port"), "{found:#?}");
    assert!(
        has("edge.hosts.names[5]", "is not a host name"),
        "{found:#?}"
    );
    assert!(
        has("edge.hosts.unknown", "\"default\" or \"reject\""),
        "{found:#?}"
    );
    assert!(
        has("edge.hosts.default", "is not a host name"),
        "{found:#?}"
    );
    assert!(has("edge", "at most one of `hop_key`"), "{found:#?}");
    assert_eq!(found.len(), 6, "{found:#?}");
    // Only wildcards: unknown hosts need a default named.
    let found = diagnostics(
        "[origin_groups.web]",
        "[edge.hosts]\nnames = [\"*.example\"]\n\n[origin_groups.web]",
    );
    assert!(
        found.iter().any(|(_, p, _)| p == "edge.hosts.default"),
        "{found:#?}"
    );
    assert_eq!(
        diagnostics(
            "[origin_groups.web]",
            "[edge.hosts]\nnames = [\"*.example\"]\nunknown = \"reject\"\n\n[origin_groups.web]",
        ),
        Vec::new()
    );
}

/// Every example deployment under `config/examples/` passes the daemons' own check, and
/// the two-sandbox one really has two sandbox nodes for the control plane to spread jobs
/// over.
#[test]
fn example_deployments_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("config/examples") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let output = edgebox(&["check-config", path.to_str().unwrap()]);
        assert!(output.status.success(), "{}: {output:?}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no example deployments in {}",
        examples.display()
    );
    let deployment = edgebox_config::load_file(&examples.join("two-sandboxes.toml"))
        .expect("two-sandboxes.toml");
    let sandboxes = deployment
        .nodes
        .iter()
        .filter(|node| matches!(node.role, edgebox_config::Role::Sandbox(_)))
        .count();
    assert_eq!(sandboxes, 2);
}
