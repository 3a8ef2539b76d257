//! The `edgebox` CLI against a real control plane.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::jobs::CHUNKS;
use super::*;
use crate::support::TestDir;

/// Runs the CLI off the async workers.
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::edgebox(&args)
    })
    .await
    .unwrap()
}

fn args(cp: &Cp, list: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--control-plane".into(),
        cp.daemon.url("api"),
        "--config".into(),
        cp.config.display().to_string(),
    ]);
    all
}

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_drives_the_control_plane() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a"], true, real::CACHEABLE_HTML).await;
    let cp = &real.cp;
    let v1 = std::fs::read_to_string(&cp.config).unwrap();

    // status --json: every node, the config version; exit 0: all up and in sync.
    let output = cli(args(cp, &["status", "--json"])).await;
    let status = stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{status}");
    assert_eq!(status["config_version"], 1);
    assert_eq!(status["control_plane"], cp.daemon.url("api"));
    let names: Vec<&str> = status["nodes"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["control", "origin-1", "edge-a", "sandbox"]);
    assert_eq!(status["nodes"]["nodes"][2]["health"], "up");
    // The table for people.
    let output = cli(args(cp, &["status"])).await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("NODE") && table.contains("edge-a") && table.contains("config version 1"),
        "{table}"
    );
    let output = cli(args(cp, &["nodes", "--json"])).await;
    assert!(output.status.success());
    assert_eq!(stdout_json(&output)["nodes"].as_array().unwrap().len(), 4);

    // The address from the environment, the token from the config's inline token.
    let output = tokio::task::spawn_blocking({
        let url = cp.daemon.url("api");
        let config = cp.config.clone();
        move || {
            std::process::Command::new(crate::support::edgebox_bin())
                .args(["config", "get", "--json", "--config"])
                .arg(config)
                .env("EDGEBOX_CONTROL_PLANE", url)
                .env_remove("EDGEBOX_TOKEN")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout_json(&output)["version"], 1);
    // A wrong token: the API's message, non-zero exit.
    let mut wrong = args(cp, &["config", "get"]);
    wrong.extend(["--token".into(), "wrong-token-wrong-token".into()]);
    let output = cli(wrong).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"));

    // reload FILE: a new version; an invalid file: every error with its line, exit 78.
    let v2 = dir.write(
        "v2.toml",
        format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n"),
    );
    let output = cli(args(cp, &["reload", v2.to_str().unwrap()])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied as config version 2"));
    let bad = dir.write(
        "bad.toml",
        format!("{v1}\n[edge]\nshutdown_grace = \"later\"\nbogus = 1\n"),
    );
    let output = cli(args(cp, &["reload", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:")
            && stderr.contains("shutdown_grace")
            && stderr.contains("bogus"),
        "{stderr}"
    );
    let output = cli(args(cp, &["config", "validate", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let output = cli(args(cp, &["config", "validate", v2.to_str().unwrap()])).await;
    assert!(output.status.success());

    // reload without FILE re-sends the file given with --config (v1): version 3.
    let output = cli(args(cp, &["reload", "--json"])).await;
    assert_eq!(stdout_json(&output), json!({"version": 3, "changed": true}));
    let output = cli(args(cp, &["config", "rollback", "2", "--json"])).await;
    assert_eq!(stdout_json(&output)["version"], 4);
    let output = cli(args(cp, &["config", "history", "--json"])).await;
    let history = stdout_json(&output);
    assert_eq!(history["current_version"], 4);
    assert_eq!(history["versions"].as_array().unwrap().len(), 4);
    let output = cli(args(cp, &["config", "get"])).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        std::fs::read_to_string(&v2).unwrap()
    );

    // purge: the real edge drops its cached page.
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");
    let output = cli(args(cp, &["purge", "--tag", "html", "--json"])).await;
    assert!(output.status.success());
    let purged = stdout_json(&output);
    assert_eq!(purged["results"][0]["node"], "edge-a", "{purged}");
    assert_eq!(purged["results"][0]["purged"], 1, "{purged}");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    // --soft keeps the page, marked stale: served stale (within the default
    // stale-while-revalidate) or revalidated, never fetched whole again.
    let output = cli(args(
        cp,
        &["purge", "--url", "/index.html", "--soft", "--json"],
    ))
    .await;
    assert!(output.status.success());
    assert_eq!(stdout_json(&output)["results"][0]["purged"], 1);
    let after = real.fetch("edge-a", "/index.html").await.1;
    assert!(matches!(after.as_str(), "STALE" | "REVALIDATED"), "{after}");
    let output = cli(args(cp, &["purge", "--tag", "a", "--all"])).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap refuses two kinds at once"
    );

    // run, and run --follow (output as it streams, then the result's exit code).
    let program = dir.write("hello.py", "print('hi')\n");
    let output = cli(args(cp, &["run", program.to_str().unwrap()])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
    let chunks = dir.write("chunks.py", CHUNKS);
    let output = cli(args(cp, &["run", chunks.to_str().unwrap(), "--follow"])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: String = (0..40).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("succeeded"), "{stderr}");
    // A program that fails: its exit code is the command's.
    let failing = dir.write("fail.py", "import sys\nsys.exit(3)\n");
    let output = cli(args(cp, &["run", failing.to_str().unwrap()])).await;
    assert!(!output.status.success());

    // run --tests: the verdict table, exit 1 unless every case is accepted; --json for
    // scripts. Paths are given relative to the directory the command runs in.
    let doubler = dir.write("double.py", "print(int(input()) * 2)\n");
    let tests = dir.write(
        "tests.toml",
        "compare = \"tokens\"\n[[case]]\nname = \"two\"\nstdin = \"2\"\nexpected_stdout = \"4\"\n\
         [[case]]\nname = \"three\"\nstdin = \"3\"\nexpected_stdout = \"7\"\n",
    );
    let output = cli(args(
        cp,
        &[
            "run",
            doubler.to_str().unwrap(),
            "--tests",
            tests.to_str().unwrap(),
        ],
    ))
    .await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{table}");
    assert!(table.contains("accepted"), "{table}");
    assert!(table.contains("wrong_answer"), "{table}");
    assert!(
        table.contains("line 1: expected \"7\", got \"6\""),
        "{table}"
    );
    assert!(table.contains("passed 1/2: wrong_answer"), "{table}");
    let output = cli(args(
        cp,
        &[
            "run",
            doubler.to_str().unwrap(),
            "--tests",
            tests.to_str().unwrap(),
            "--json",
        ],
    ))
    .await;
    let view = stdout_json(&output);
    assert_eq!(view["tests"]["passed"], 1, "{view}");

    // Several files: a multi-file program whose entry imports the other.
    dir.write("main.py", "import helper\nprint(helper.greet())\n");
    dir.write("helper.py", "def greet():\n    return 'hi from helper'\n");
    let cwd = dir.path().to_owned();
    let list = args(cp, &["run", "main.py", "helper.py"]);
    let output = tokio::task::spawn_blocking(move || {
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        crate::support::edgebox_in(&cwd, &list)
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi from helper\n");

    // A drained edge is not healthy: status says so with exit 1.
    let (status, _) = cp
        .call(Method::POST, "/v1/nodes/edge-a/drain", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let output = cli(args(cp, &["status", "--json"])).await;
    assert_eq!(output.status.code(), Some(1));
    let status = stdout_json(&output);
    assert_eq!(
        status["nodes"]["nodes"][2]["health"], "draining",
        "{status}"
    );
}
