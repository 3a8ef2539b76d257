//! What the sandbox holds is bounded in total: retained finished jobs (count and
//! bytes), event subscribers (per job, in total, and in time for a client that stops
//! reading), and admission that refuses before a submission costs anything.

use std::time::Duration;

use edgebox_wire::ErrorBody;
use edgebox_wire::sandbox::JobState;
use futures_util::StreamExt;
use serde_json::json;

use super::Sandbox;
use crate::support;

/// A WASI command that writes `writes` times `per_write` bytes of `x` to stdout.
pub fn printer(writes: u32, per_write: u32) -> String {
    let pages = (per_write + 64) / 65536 + 1;
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 64) (i32.const 120) (i32.const {per_write}))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {per_write}))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const {writes})))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))))"#
    )
}

/// A WASI command that spins until its wall-time limit.
pub const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

/// Finished jobs that each wrote their maximum output: the sandbox keeps only as many
/// as its count and byte bounds allow, the newest, and forgets the oldest first.
#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_are_bounded_by_count_and_bytes() {
    let sandbox = Sandbox::start_with(
        "max_concurrent_jobs = 2\nmax_finished_jobs = 4\nmax_finished_bytes = \"3MiB\"\n\
         maximums = { wall = \"60s\", cpu = \"60s\", memory = \"256MiB\", output = \"1MiB\" }\n\
         defaults = { wall = \"10s\", cpu = \"10s\", memory = \"64MiB\", output = \"1MiB\" }\n",
    );
    let source = printer(16, 64 * 1024); // exactly 1 MiB
    let mut ids = Vec::new();
    for _ in 0..6 {
        let result = sandbox
            .run(json!({"language": "wat", "source": source}))
            .await;
        assert_eq!(
            result.head.state,
            JobState::Succeeded,
            "{:?}",
            result.head.error
        );
        ids.push(result.head.id.as_str().to_owned());
        let stats = sandbox.stats().await;
        assert!(stats.retained.bytes <= 3 << 20, "{:?}", stats.retained);
        assert!(stats.retained.jobs <= 4, "{:?}", stats.retained);
    }
    // 3 MiB holds two jobs of 1 MiB (plus bookkeeping), not three.
    let stats = sandbox.stats().await;
    assert_eq!(stats.retained.jobs, 2, "{:?}", stats.retained);
    assert_eq!(stats.retained.evicted_total, 4, "{:?}", stats.retained);
    assert!(
        stats.retained.bytes >= 2 << 20,
        "undercounted: {:?}",
        stats.retained
    );
    for old in &ids[..4] {
        assert!(
            sandbox.job(old).await.is_none(),
            "job {old} should be forgotten"
        );
    }
    // The kept ones are whole: a streamed view that deserializes as the wire type.
    for kept in &ids[4..] {
        let view = sandbox.job(kept).await.expect("kept job");
        assert_eq!(view.stdout.len(), 1 << 20);
        assert!(view.stdout.bytes().all(|b| b == b'x'));
        assert_eq!(view.head.state, JobState::Succeeded);
    }
    let metrics = sandbox
        .client
        .get(format!("{}/metrics", sandbox.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgebox_sandbox_jobs_evicted_total{node=\"sandbox\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgebox_sandbox_retained_jobs{node=\"sandbox\"} 2"),
        "{metrics}"
    );
    // The count bound applies on its own too.
    for _ in 0..5 {
        sandbox
            .run(json!({"language": "wat", "source": printer(1, 10)}))
            .await;
    }
    let stats = sandbox.stats().await;
    assert_eq!(stats.retained.jobs, 4, "{:?}", stats.retained);
}

/// A full sandbox answers 429 before it reads, parses or compiles a submission: a
/// body that is not even JSON, or an invalid module, gets 429, not 400/422.
#[tokio::test(flavor = "multi_thread")]
async fn admission_happens_before_parsing_or_compiling() {
    let sandbox = Sandbox::start_with("max_concurrent_jobs = 1\nqueue_length = 0\n");
    let id = sandbox
        .submit(json!({"language": "wat", "source": SPIN, "limits": {"wall_ms": 30000}}))
        .await;
    support::eventually(
        "the spinning job to run",
        Duration::from_secs(30),
        || async { (sandbox.stats().await.running == 1).then_some(()) },
    )
    .await;
    let post_raw = |body: &'static [u8]| {
        sandbox
            .client
            .post(format!("{}/v1/jobs", sandbox.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        &b"{not json"[..],
        br#"{"language": "wat", "source": "(module (func $f (result i32)))"}"#,
    ] {
        let response = post_raw(body).await.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.code, "queue_full");
    }
    let (status, _) = sandbox
        .post("/v1/run", &json!({"language": "wat", "source": SPIN}))
        .await;
    assert_eq!(status, 429);
    // Once the slot is free, the same bad bodies get their own errors.
    let (status, body) = sandbox.cancel(&id).await;
    assert_eq!(status, 200, "{body}");
    support::eventually("the slot to free", Duration::from_secs(30), || async {
        (sandbox.stats().await.running == 0).then_some(())
    })
    .await;
    let response = post_raw(b"{not json").await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let stats = sandbox.stats().await;
    assert_eq!(stats.rejected_busy, 3);
    assert_eq!(
        stats.queued, 0,
        "refused submissions give their queue place back"
    );
}

/// Event subscribers are bounded per job and in total (429 with the JSON error before
/// any upgrade), and one that stops reading is disconnected after the send timeout, so
/// it holds neither a place nor the job.
#[tokio::test(flavor = "multi_thread")]
async fn subscribers_are_bounded_and_a_client_that_never_reads_is_dropped() {
    let sandbox = Sandbox::start_with(
        "max_concurrent_jobs = 2\nmax_subscribers_per_job = 2\nmax_subscribers = 3\n\
         subscriber_send_timeout = \"300ms\"\n\
         maximums = { wall = \"60s\", cpu = \"60s\", memory = \"256MiB\", output = \"16MiB\" }\n",
    );
    let connect = |id: String| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = format!("ws://{}/v1/jobs/{id}/events", sandbox.daemon.addr("api"))
            .into_client_request()
            .unwrap();
        url.headers_mut()
            .insert("authorization", sandbox.daemon.bearer().parse().unwrap());
        async move { tokio_tungstenite::connect_async(url).await }
    };
    let spinning = sandbox
        .submit(json!({"language": "wat", "source": SPIN, "limits": {"wall_ms": 30000}}))
        .await;
    let first = connect(spinning.clone()).await.expect("first subscriber");
    let second = connect(spinning.clone()).await.expect("second subscriber");
    let refused = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: ErrorBody =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON error body");
            (response.status().as_u16(), body.error.code)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a socket"),
    };
    let (status, code) = refused(connect(spinning.clone()).await);
    assert_eq!((status, code.as_str()), (429, "too_many_subscribers"));

    // A job with 12 MiB of output (more than loopback socket buffers hold) and a
    // subscriber that never reads: it fills its buffers, then is dropped.
    let big = sandbox
        .submit(json!({"language": "wat", "source": printer(192, 64 * 1024),
                       "limits": {"output_bytes": 16 << 20}}))
        .await;
    let stalled = connect(big.clone()).await.expect("third subscriber");
    let (status, code) = refused(connect(big.clone()).await);
    assert_eq!(
        (status, code.as_str()),
        (429, "too_many_subscribers"),
        "total bound"
    );
    support::eventually(
        "the stalled subscriber to be dropped",
        Duration::from_secs(30),
        || async { (sandbox.stats().await.subscribers == 2).then_some(()) },
    )
    .await;
    // Its place is free again while the client still holds its end open.
    let (mut reader, _) = connect(big.clone()).await.expect("a reading subscriber");
    let mut output = 0;
    while let Some(Ok(message)) = reader.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            match serde_json::from_str(&text).expect("event") {
                edgebox_wire::sandbox::JobEvent::Output(chunk) => {
                    assert!(chunk.data.len() <= edgebox_wire::sandbox::MAX_OUTPUT_CHUNK);
                    output += chunk.data.len();
                }
                edgebox_wire::sandbox::JobEvent::Result(view) => {
                    assert_eq!(view.stdout.len(), 12 << 20);
                    break;
                }
                _ => {}
            }
        }
    }
    assert_eq!(output, 12 << 20);
    drop((first, second, stalled));
    support::eventually(
        "subscribers to be released",
        Duration::from_secs(30),
        || async { (sandbox.stats().await.subscribers == 0).then_some(()) },
    )
    .await;
}
