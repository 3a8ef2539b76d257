//! Runtime files: verified by SHA-256 before use, refused when they do not match.

use std::process::Command;

use edgebox_wire::sandbox::JobState;
use serde_json::json;

use super::{Sandbox, runtime_dir};
use crate::support::{self, Daemon, ONE_REGION, TestDir};

/// A runtime directory whose QuickJS file has been tampered with (CPython links to the
/// shared, verified copy so that nothing is downloaded).
fn tampered_dir(test: &TestDir) -> std::path::PathBuf {
    let dir = test.path().join("runtimes");
    std::fs::create_dir_all(&dir).unwrap();
    let shared = std::path::Path::new(&runtime_dir()).to_owned();
    std::os::unix::fs::symlink(
        shared.join("python-3.12.0.wasm"),
        dir.join("python-3.12.0.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(shared.join("compiled"), dir.join("compiled")).unwrap();
    let mut js = std::fs::read(shared.join("quickjs.wasm")).expect("shared quickjs.wasm");
    let last = js.len() - 1;
    js[last] ^= 0xff;
    std::fs::write(dir.join("quickjs.wasm"), js).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_runtimes_verifies_and_refuses_a_mismatch() {
    // Make sure the shared directory is populated (a daemon fetches at first need).
    let sandbox = Sandbox::start();
    let result = sandbox
        .run(json!({"language": "javascript", "source": "console.log(1)"}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    drop(sandbox);

    let test = TestDir::new();
    let config = test.config(ONE_REGION);
    let output = Command::new(support::edgebox_bin())
        .args(["sandbox", "fetch-runtimes", "--config"])
        .arg(&config)
        .env("EDGEBOX_RUNTIME_DIR", runtime_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("runtimes ready in"), "{stdout}");

    let dir = tampered_dir(&test);
    let output = Command::new(support::edgebox_bin())
        .args(["sandbox", "fetch-runtimes", "--config"])
        .arg(&config)
        .env("EDGEBOX_RUNTIME_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("SHA-256 mismatch") && stderr.contains("refusing"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_refuses_a_tampered_runtime() {
    let test = TestDir::new();
    let dir = tampered_dir(&test);
    let config = test.config(&format!(
        "{ONE_REGION}\n[[nodes]]\nname = \"sandbox\"\nrole = \"sandbox\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n"
    ));
    let daemon = Daemon::start_with(
        "sandbox",
        &config,
        "sandbox",
        &["api"],
        &[("EDGEBOX_RUNTIME_DIR", dir.to_str().unwrap())],
    );
    let client = daemon.authed_client();
    let result: edgebox_wire::sandbox::JobView = client
        .post(format!("{}/v1/run", daemon.url("api")))
        .json(&json!({"language": "javascript", "source": "console.log(1)"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    let error = result.head.error.as_deref().unwrap();
    assert!(error.contains("SHA-256 mismatch"), "{error}");
    assert_eq!(result.stdout, "");
    // Python, whose file is intact, still runs.
    let result: edgebox_wire::sandbox::JobView = client
        .post(format!("{}/v1/run", daemon.url("api")))
        .json(&json!({"language": "python", "source": "print('ok')"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result.stdout, "ok\n", "{result:?}");
}
