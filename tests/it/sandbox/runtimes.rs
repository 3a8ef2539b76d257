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
    super::runtimes_ready();
    let shared = std::path::Path::new(&runtime_dir()).to_owned();
    for name in ["python-3.15.0-snapshot.wasm", "python-3.15.0-lib"] {
        std::os::unix::fs::symlink(shared.join(name), dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(shared.join("compiled"), dir.join("compiled")).unwrap();
    // The stamp of the intact file (its SHA-256 and CRC-32, written when it was first
    // verified) comes along: a damaged file must be refused all the same.
    std::fs::copy(
        shared.join("quickjs.wasm.verified"),
        dir.join("quickjs.wasm.verified"),
    )
    .expect("the shared directory has verified QuickJS");
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

/// A compiled artifact is native code the daemon maps and runs: one whose bytes no longer
/// match the CRC-32 recorded when it was written is compiled anew, never loaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_artifact_is_rebuilt_not_run() {
    super::runtimes_ready();
    let test = TestDir::new();
    let dir = test.path().join("runtimes");
    let compiled = dir.join("compiled");
    std::fs::create_dir_all(&compiled).unwrap();
    let shared = std::path::Path::new(&runtime_dir()).to_owned();
    std::os::unix::fs::symlink(shared.join("quickjs.wasm"), dir.join("quickjs.wasm")).unwrap();
    // QuickJS's artifact (small), copied with its checksum, then damaged.
    let mut artifact = None;
    for entry in std::fs::read_dir(shared.join("compiled")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("quickjs.wasm-") && name.ends_with(".cwasm") {
            std::fs::copy(&path, compiled.join(&name)).unwrap();
            let sum = path.with_extension("cwasm.crc32");
            std::fs::copy(&sum, compiled.join(sum.file_name().unwrap())).unwrap();
            artifact = Some(compiled.join(&name));
        }
    }
    let artifact = artifact.expect("the shared directory has QuickJS's artifact");
    // An artifact of another engine configuration, which the rebuild replaces.
    let stale = compiled.join("quickjs.wasm-0000000000000000-0000000000000000.cwasm");
    std::fs::write(&stale, b"stale").unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();

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
    let result: edgebox_wire::sandbox::JobView = daemon
        .authed_client()
        .post(format!("{}/v1/run", daemon.url("api")))
        .json(&json!({"language": "javascript", "source": "console.log(6 * 7)"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "42\n");
    // Rebuilt: the file on disk is whole again and matches its recorded checksum.
    let rebuilt = std::fs::read(&artifact).unwrap();
    assert_ne!(rebuilt, bytes);
    let recorded = std::fs::read_to_string(artifact.with_extension("cwasm.crc32")).unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(&rebuilt);
    assert_eq!(format!("{:08x}", crc.sum()), recorded.trim());
    assert!(!stale.exists(), "the stale artifact is removed");
}
