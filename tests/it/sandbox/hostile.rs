//! Hostile programs: each is contained with the right state while the daemon keeps
//! serving other jobs.

use std::time::Duration;

use edgebox_wire::sandbox::JobState;
use serde_json::{Value, json};

use super::{Sandbox, python};

/// A quick job that must still succeed while hostile ones run.
async fn still_serving(sandbox: &Sandbox) {
    let result = sandbox.run(python("print('still here')")).await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "still here\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loops_time_out() {
    let sandbox = Sandbox::start();
    let py = sandbox
        .submit(json!({"language": "python", "source": "n = 0\nwhile True:\n    n += 1\n", "limits": {"wall_ms": 1500}}))
        .await;
    let wat = sandbox
        .submit(json!({"language": "wat", "source": "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop (br 0))))", "limits": {"cpu_ms": 800}}))
        .await;
    still_serving(&sandbox).await;
    let job = sandbox.wait(&py).await;
    assert_eq!(job.head.state, JobState::TimedOut, "{job:?}");
    let line = job.head.current_line.map(u64::from);
    assert!(matches!(line, Some(2 | 3)), "{job:?}");
    let runtime = job.head.runtime_ms;
    assert!((1400..10_000).contains(&runtime), "{job:?}");
    let job = sandbox.wait(&wat).await;
    assert_eq!(job.head.state, JobState::TimedOut, "{job:?}");
    assert!(
        job.head.error.as_deref().unwrap().contains("CPU"),
        "{job:?}"
    );
    // Sleeping is wall time, not CPU, and still bounded.
    let result = sandbox
        .run(json!({"language": "python", "source": "import time\ntime.sleep(100)\n", "limits": {"wall_ms": 1000}}))
        .await;
    assert_eq!(result.head.state, JobState::TimedOut, "{result:?}");
    assert_eq!(result.head.current_line, Some(2), "{result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bombs_and_recursion_are_contained() {
    let sandbox = Sandbox::start();
    let result = sandbox
        .run(json!({"language": "python", "source": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))\n", "limits": {"memory_mb": 64}}))
        .await;
    assert_eq!(result.head.state, JobState::MemoryExceeded, "{result:?}");
    assert!(result.stderr.as_str().contains("MemoryError"), "{result:?}");

    let result = sandbox
        .run(json!({"language": "wat", "source": "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))", "limits": {"memory_mb": 32}}))
        .await;
    assert_eq!(result.head.state, JobState::MemoryExceeded, "{result:?}");

    let result = sandbox
        .run(python("def f(n):\n    return f(n + 1)\nf(0)\n"))
        .await;
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    assert!(result.stderr.contains("RecursionError"), "{result:?}");

    let result = sandbox
        .run(json!({"language": "wat", "source": "(module (memory (export \"memory\") 1) (func $f (call $f)) (func (export \"_start\") (call $f)))"}))
        .await;
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    assert!(
        result.head.error.as_deref().unwrap().contains("stack"),
        "{result:?}"
    );

    let result = sandbox
        .run(json!({"language": "javascript", "source": "function f(n) { return f(n + 1) + 1; }\nf(0);"}))
        .await;
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    still_serving(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_floods_are_capped() {
    let sandbox = Sandbox::start();
    let result = sandbox
        .run(json!({"language": "python", "source": "while True:\n    print('x' * 1000)\n", "limits": {"output_bytes": 100_000}}))
        .await;
    assert_eq!(result.head.state, JobState::OutputExceeded, "{result:?}");
    assert!(result.head.truncated);
    assert_eq!(result.stdout.as_str().len(), 100_000);
    // Alternating single bytes between stdout and stderr: bounded bookkeeping too.
    let result = sandbox
        .run(json!({"language": "python", "source": "import os\nwhile True:\n    os.write(1, b'a')\n    os.write(2, b'b')\n", "limits": {"output_bytes": 1_000_000}}))
        .await;
    assert_eq!(result.head.state, JobState::OutputExceeded, "{result:?}");
    assert!(result.head.truncated);
    let kept = result.stdout.as_str().len() + result.stderr.as_str().len();
    assert!((60_000..=2_000_000).contains(&kept), "{kept}");
    still_serving(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_filesystem_and_environment_are_unreachable() {
    let sandbox = Sandbox::start();
    let probe = r#"
import os, sys
def attempt(what, fn):
    try:
        fn()
        print(what, 'REACHED')
    except Exception as e:
        print(what, 'blocked', type(e).__name__)
attempt('passwd', lambda: open('/etc/passwd').read())
attempt('parent', lambda: os.listdir('/scratch/..'))
attempt('dotdot', lambda: open('/scratch/../etc/passwd').read())
def make(target, name):
    try:
        os.symlink(target, name)
    except Exception as e:
        print('refused to create', name, type(e).__name__)
make('/etc/passwd', '/scratch/link')
attempt('symlink', lambda: open('/scratch/link').read())
make('../../../../../../etc', '/scratch/up')
attempt('symlink-dir', lambda: os.listdir('/scratch/up'))
make('../../../../../../etc/passwd', '/scratch/up-file')
attempt('symlink-file', lambda: open('/scratch/up-file').read())
# The runtime's own files are shown read-only, and nothing beside them.
attempt('runtime-write', lambda: open('/usr/local/lib/python315.zip', 'r+b').write(b'x'))
attempt('runtime-create', lambda: open('/usr/local/lib/new.py', 'w').write('x'))
attempt('runtime-parent', lambda: os.listdir('/usr/local/lib/..'))
with open('/scratch/mine.txt', 'w') as f:
    f.write('ok')
print('scratch', open('/scratch/mine.txt').read())
print('env', dict(os.environ))
print('argv', sys.argv)
"#;
    let result = sandbox
        .run(json!({"language": "python", "source": probe, "scratch": true, "args": ["x"]}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    let stdout = result.stdout.as_str();
    assert!(!stdout.contains("REACHED"), "{stdout}");
    for what in [
        "passwd",
        "parent",
        "dotdot",
        "symlink",
        "symlink-dir",
        "symlink-file",
        "runtime-write",
        "runtime-create",
        "runtime-parent",
    ] {
        assert!(
            stdout.contains(&format!("{what} blocked")),
            "{what}: {stdout}"
        );
    }
    assert!(stdout.contains("scratch ok"), "{stdout}");
    assert!(stdout.contains("env {}"), "{stdout}");
    assert!(stdout.contains("argv ['-c', 'x']"), "{stdout}");

    // Without scratch there is no directory at all.
    let result = sandbox
        .run(python("import os\ntry:\n    os.listdir('/')\n    print('listed')\nexcept Exception as e:\n    print('blocked', type(e).__name__)\n"))
        .await;
    assert!(result.stdout.as_str().starts_with("blocked"), "{result:?}");
    // And no sockets.
    let result = sandbox
        .run(python("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 80))\n    print('connected')\nexcept Exception as e:\n    print('blocked', type(e).__name__)\n"))
        .await;
    assert!(!result.stdout.as_str().contains("connected"), "{result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job() {
    let sandbox = Sandbox::start();
    let id = sandbox
        .submit(python("n = 0\nwhile True:\n    n += 1\n"))
        .await;
    crate::support::eventually("the job to run", Duration::from_secs(60), || async {
        let job = sandbox.job(&id).await.expect("the job is known");
        (job.head.state == JobState::Running).then_some(())
    })
    .await;
    let (status, body) = sandbox.cancel(&id).await;
    assert_eq!(status, 200, "{body}");
    let job = sandbox.wait(&id).await;
    assert_eq!(job.head.state, JobState::Cancelled, "{job:?}");
    let (status, body) = sandbox.cancel(&id).await;
    assert_eq!(status, 409, "{body}");
    still_serving(&sandbox).await;
}

/// 100 submissions at once: each is accepted or refused with 429 and `Retry-After`, and
/// every accepted one finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_submissions() {
    let sandbox = Sandbox::start_with("max_concurrent_jobs = 2\nqueue_length = 20\n");
    let submissions = (0..100).map(|i| {
        let client = sandbox.client.clone();
        let url = format!("{}/v1/jobs", sandbox.base);
        async move {
            let response = client
                .post(url)
                .json(&json!({"language": "python", "source": format!("print({i} * 2)")}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await.unwrap();
            (i, status, retry_after, body)
        }
    });
    let results = futures_util::future::join_all(submissions).await;
    let mut accepted = Vec::new();
    for (i, status, retry_after, body) in results {
        match status {
            202 => {
                let job: edgebox_wire::sandbox::JobAccepted = serde_json::from_value(body).unwrap();
                accepted.push((i, job.id));
            }
            429 => {
                assert!(retry_after, "429 without Retry-After");
                let error: edgebox_wire::ErrorBody = serde_json::from_value(body).unwrap();
                assert_eq!(error.error.code, "queue_full");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(accepted.len() >= 20, "only {} accepted", accepted.len());
    for (i, id) in accepted {
        let job = sandbox.wait(&id).await;
        assert_eq!(job.head.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.stdout, format!("{}\n", i * 2));
    }
}
