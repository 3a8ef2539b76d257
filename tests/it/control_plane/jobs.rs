//! The sandbox relay: jobs and their event streams through the control plane.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::support::{TestDir, eventually};

/// Opens the events WebSocket of job `id` through the control plane.
async fn open_events(
    cp: &Cp,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "ws://{}/v1/jobs/{id}/events?access_token={SUBMITTER}",
        cp.daemon.addr("api")
    );
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("WebSocket through the control plane")
        .0
}

async fn relays_open(cp: &Cp) -> Option<u64> {
    let metrics = cp
        .http
        .get(cp.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("edgebox_cp_event_relays "))?
        .trim()
        .parse()
        .ok()
}

/// A Python program that prints `chunk 0` .. `chunk 39`, spinning ~10 ms between lines.
pub(super) const CHUNKS: &str = "import time\nfor i in range(40):\n    print('chunk', i, flush=True)\n    end = time.monotonic() + 0.01\n    while time.monotonic() < end: pass\n";

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_relayed_with_events_in_order_and_abandoned_sockets_cleaned_up() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &[], true, "").await;
    let cp = &real.cp;

    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            // Waits for a line of stdin, sent once the socket is open, so that the
            // running statuses are seen however late the socket connects.
            Some(json!({"language": "python", "source": format!("input()\n{CHUNKS}"), "interactive": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    // Absolute sandbox URLs become paths on the control plane.
    assert_eq!(job["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(job["events_url"], format!("/v1/jobs/{id}/events"));

    // Events: every message, in order, then the close.
    let ws_url = format!("ws://{}/v1/jobs/{id}/events", cp.daemon.addr("api"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {SUBMITTER}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket through the control plane");
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "stdin", "data": "go\n"}).to_string(),
        ))
        .await
        .expect("stdin through the relay");
    let mut events = Vec::new();
    let mut closed = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .expect("events keep coming")
    {
        match message.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                events.push(serde_json::from_str::<Value>(text.as_str()).unwrap());
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the relay passes the close on");
    let output: String = events
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    let expected: String = (0..40).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(output, expected, "output chunks in order");
    let runtimes: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "status" && e["state"] == "running")
        .map(|e| e["runtime_ms"].as_u64().unwrap())
        .collect();
    assert!(!runtimes.is_empty(), "status while running: {events:?}");
    assert!(runtimes.windows(2).all(|w| w[0] <= w[1]), "{runtimes:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "result", "the result comes last");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["stdout"], expected.as_str());

    // The job through the other relayed routes.
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}"),
            Some(SUBMITTER),
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("succeeded")),
        "{body}"
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "cobol", "source": ""})),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_language",
    );
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/nope", Some(SUBMITTER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/..%2Fetc", Some(SUBMITTER), None)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_job_id");
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/run",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print('hi')"})),
        )
        .await;
    assert_eq!(
        (status, body["stdout"].clone()),
        (StatusCode::OK, json!("hi\n")),
        "{body}"
    );

    // Without a token (header or query): refused before any upgrade. An unknown job:
    // the sandbox's 404.
    let unauthenticated = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(
        matches!(unauthenticated, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401)
    );
    let missing = format!(
        "ws://{}/v1/jobs/gone/events?access_token={SUBMITTER}",
        cp.daemon.addr("api")
    );
    let missing = tokio_tungstenite::connect_async(missing.as_str()).await;
    assert!(
        matches!(missing, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 404)
    );

    // Abandoned sockets: clients that go away (cleanly or not) from a job that runs on
    // close the relay too; nothing stays open. Then the job is cancelled.
    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "import time\nwhile True:\n    print('x', flush=True)\n    end = time.monotonic() + 0.05\n    while time.monotonic() < end: pass\n"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let endless = job["id"].as_str().unwrap().to_owned();
    for clean in [true, false] {
        let mut socket = open_events(cp, &endless).await;
        socket.next().await.unwrap().unwrap();
        assert_eq!(relays_open(cp).await, Some(1));
        if clean {
            socket.close(None).await.unwrap();
        }
        drop(socket);
        eventually(
            "the relay closed behind the client",
            Duration::from_secs(10),
            || async { (relays_open(cp).await == Some(0)).then_some(()) },
        )
        .await;
    }
    let (status, body) = cp
        .call(
            Method::DELETE,
            &format!("/v1/jobs/{endless}"),
            Some(SUBMITTER),
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("cancelled")),
        "{body}"
    );
}

/// One guest write far over the relay's old 4 MiB message limit: every output event
/// (each a bounded chunk) and the final result, whose message holds the whole output,
/// arrive through the control plane.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_carries_output_of_any_allowed_size() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &[], true, "").await;
    let cp = &real.cp;
    let size: u32 = 6 << 20;
    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({
                "language": "wat",
                "source": crate::sandbox::bounds::printer(1, size),
                "limits": {"output_bytes": size, "memory_mb": 16},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let accepted: edgebox_wire::sandbox::JobAccepted = serde_json::from_value(job).unwrap();
    let mut socket = open_events(cp, &accepted.id).await;
    let mut streamed = 0;
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = socket.next().await {
            let message = message.expect("relayed message");
            let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str(&text).expect("event") {
                edgebox_wire::sandbox::JobEvent::Output(chunk) => streamed += chunk.data.len(),
                edgebox_wire::sandbox::JobEvent::Result(view) => return Some(view),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("the stream ended in time")
    .expect("a result before the stream ended");
    assert_eq!(
        result.head.state,
        edgebox_wire::sandbox::JobState::Succeeded
    );
    assert_eq!(result.stdout.len(), size as usize);
    assert_eq!(streamed, size as usize);
}

/// Interactive stdin and judged jobs through the relay: client messages reach the
/// sandbox, its `error`, `case` and `result` events come back.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_carries_interactive_stdin_and_test_cases() {
    use crate::sandbox::interactive::{next_until, send};
    use edgebox_wire::sandbox::{ClientMessage, JobEvent, Verdict};
    use futures_util::SinkExt;
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &[], true, "").await;
    let cp = &real.cp;
    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({
                "language": "python",
                "source": "name = input('name? ')\nprint('hello', name)\n",
                "interactive": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let mut socket = open_events(cp, &id).await;
    // Refused while the program waits for its input, which comes next.
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("nonsense"))
        .await
        .unwrap();
    send(
        &mut socket,
        &ClientMessage::Stdin {
            data: "relay\n".into(),
        },
    )
    .await;
    send(&mut socket, &ClientMessage::StdinEof).await;
    let mut refused = false;
    let result = next_until(&mut socket, "the result", |event| {
        refused |= matches!(event, JobEvent::Error(e) if e.code == "invalid_message");
        matches!(event, JobEvent::Result(_))
    })
    .await;
    let JobEvent::Result(result) = result else {
        unreachable!()
    };
    assert_eq!(result.stdout, "name? hello relay\n", "{result:?}");
    assert!(
        refused,
        "the malformed frame was answered with an error event"
    );

    let (status, view) = cp
        .call(
            Method::POST,
            "/v1/run",
            Some(SUBMITTER),
            Some(json!({
                "language": "python",
                "source": "print(int(input()) * 2)",
                "tests": [
                    {"name": "two", "stdin": "2\n", "expected_stdout": "4"},
                    {"name": "three", "stdin": "3\n", "expected_stdout": "7"},
                ],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let view: edgebox_wire::sandbox::JobView = serde_json::from_value(view).unwrap();
    let summary = view.head.tests.expect("the summary");
    assert_eq!((summary.passed, summary.total), (1, 2));
    assert_eq!(summary.verdict, Some(Verdict::WrongAnswer));
    assert_eq!(summary.cases[1].name.as_deref(), Some("three"));
}
