//! Interactive stdin over the events WebSocket, through the real sandbox: a guessing
//! game played by the test (the program waits in `input()`, and the live line while it
//! waits is the `input()` line), stdin closed with `stdin_eof`, and refused messages
//! answered with an `error` event while the job goes on.

use std::time::Duration;

use edgebox_wire::sandbox::{ClientMessage, JobEvent, JobState, JobView};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::Sandbox;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The job's events socket, straight to the sandbox.
pub async fn open(sandbox: &Sandbox, id: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/v1/jobs/{id}/events", sandbox.daemon.addr("api"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", sandbox.daemon.bearer().parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connect")
        .0
}

/// Sends one client message.
pub async fn send(socket: &mut Socket, message: &ClientMessage) {
    let text = serde_json::to_string(message).unwrap();
    socket.send(Message::text(text)).await.expect("send");
}

/// Reads events until `until` accepts one (returning it), failing after 60 s or at the
/// end of the stream.
pub async fn next_until(
    socket: &mut Socket,
    what: &str,
    mut until: impl FnMut(&JobEvent) -> bool,
) -> JobEvent {
    let read = async {
        while let Some(message) = socket.next().await {
            if let Message::Text(text) = message.expect("a message") {
                let event: JobEvent = serde_json::from_str(&text).expect("an event");
                if until(&event) {
                    return event;
                }
            }
        }
        panic!("the stream ended before {what}");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("waiting for {what}"))
}

/// Reads output (appended to `seen`) until `seen[from..]` holds one of `needles`:
/// which one, and where the output after it starts.
async fn output_until<'a>(
    socket: &mut Socket,
    seen: &mut String,
    from: usize,
    needles: &[&'a str],
) -> (&'a str, usize) {
    loop {
        let found = needles
            .iter()
            .filter_map(|needle| seen[from..].find(needle).map(|at| (at, *needle)))
            .min();
        if let Some((at, needle)) = found {
            return (needle, from + at + needle.len());
        }
        let event = next_until(socket, "output", |event| {
            matches!(event, JobEvent::Output(_) | JobEvent::Result(_))
        })
        .await;
        match event {
            JobEvent::Output(chunk) => seen.push_str(&chunk.data),
            other => panic!("the job ended before {needles:?}: {other:?}; output {seen:?}"),
        }
    }
}

const GAME: &str = "secret = 37
tries = 0
while True:
    guess = int(input('guess? '))
    tries += 1
    if guess < secret:
        print('higher')
    elif guess > secret:
        print('lower')
    else:
        print(f'correct in {tries}')
        break
";

#[tokio::test(flavor = "multi_thread")]
async fn guessing_game_played_over_the_websocket() {
    let sandbox = Sandbox::start();
    let id = sandbox
        .submit(json!({"language": "python", "source": GAME, "interactive": true, "limits": {"wall_ms": 60000}}))
        .await;
    let mut socket = open(&sandbox, &id).await;
    let (mut low, mut high) = (1, 100);
    let mut seen = String::new();
    // Output up to here has been looked at.
    let mut consumed = 0;
    let mut rounds = 0;
    loop {
        let at = output_until(&mut socket, &mut seen, consumed, &["guess? "]).await;
        consumed = at.1;
        // While it waits for input, the live line is the `input()` line.
        next_until(
            &mut socket,
            "the input() line",
            |event| matches!(event, JobEvent::Status(status) if status.current_line == Some(4)),
        )
        .await;
        if rounds == 0 {
            // A malformed frame is refused with a reason; the game goes on.
            socket
                .send(Message::text("{\"type\": \"stdn\"}"))
                .await
                .unwrap();
            let refused = next_until(&mut socket, "an error event", |event| {
                matches!(event, JobEvent::Error(_))
            })
            .await;
            assert!(
                matches!(refused, JobEvent::Error(ref e) if e.code == "invalid_message"),
                "{refused:?}"
            );
        }
        rounds += 1;
        let guess = (low + high) / 2;
        send(
            &mut socket,
            &ClientMessage::Stdin {
                data: format!("{guess}\n"),
            },
        )
        .await;
        let (answer, end) = output_until(
            &mut socket,
            &mut seen,
            consumed,
            &["higher", "lower", "correct"],
        )
        .await;
        consumed = end;
        match answer {
            "higher" => low = guess + 1,
            "lower" => high = guess - 1,
            _ => break,
        }
    }
    assert!(rounds >= 2, "{seen}");
    let result = next_until(&mut socket, "the result", |event| {
        matches!(event, JobEvent::Result(_))
    })
    .await;
    let JobEvent::Result(result) = result else {
        unreachable!()
    };
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert!(result.stdout.contains("correct in "), "{}", result.stdout);
    assert!(
        result.stdout.matches("guess? ").count() >= 2,
        "{}",
        result.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_eof_limits_and_refusals() {
    let sandbox = Sandbox::start_with("max_concurrent_jobs = 2\nmax_stdin_size = \"64B\"\n");
    let id = sandbox
        .submit(json!({
            "language": "python",
            "source": "import sys\ndata = sys.stdin.read()\nprint(len(data), data.split())",
            "stdin": "first ",
            "interactive": true,
        }))
        .await;
    let mut socket = open(&sandbox, &id).await;
    send(
        &mut socket,
        &ClientMessage::Stdin {
            data: "second ".into(),
        },
    )
    .await;
    // 6 + 7 bytes so far; 60 more would pass the 64-byte limit.
    send(
        &mut socket,
        &ClientMessage::Stdin {
            data: "x".repeat(60),
        },
    )
    .await;
    let refused = next_until(&mut socket, "stdin_too_large", |event| {
        matches!(event, JobEvent::Error(_))
    })
    .await;
    assert!(
        matches!(refused, JobEvent::Error(ref e) if e.code == "stdin_too_large"),
        "{refused:?}"
    );
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let refused = next_until(&mut socket, "binary refused", |event| {
        matches!(event, JobEvent::Error(_))
    })
    .await;
    assert!(
        matches!(refused, JobEvent::Error(ref e) if e.code == "invalid_message"),
        "{refused:?}"
    );
    send(
        &mut socket,
        &ClientMessage::Stdin {
            data: "third".into(),
        },
    )
    .await;
    send(&mut socket, &ClientMessage::StdinEof).await;
    send(
        &mut socket,
        &ClientMessage::Stdin {
            data: "late".into(),
        },
    )
    .await;
    let mut refusals = Vec::new();
    let result = next_until(&mut socket, "the result", |event| {
        if let JobEvent::Error(error) = event {
            refusals.push(error.code.clone());
        }
        matches!(event, JobEvent::Result(_))
    })
    .await;
    let JobEvent::Result(result) = result else {
        unreachable!()
    };
    assert_eq!(
        result.stdout, "18 ['first', 'second', 'third']\n",
        "{result:?}"
    );
    // The late write either reached a closed stdin or a finished job; both are refused.
    assert!(
        refusals == ["stdin_closed"] || refusals == ["job_finished"] || refusals.is_empty(),
        "{refusals:?}"
    );

    // A job that is not interactive refuses stdin; `cancel` over the socket cancels.
    let id = sandbox
        .submit(json!({"language": "python", "source": "while True:\n    pass\n"}))
        .await;
    let mut socket = open(&sandbox, &id).await;
    send(&mut socket, &ClientMessage::Stdin { data: "x".into() }).await;
    let refused = next_until(&mut socket, "not_interactive", |event| {
        matches!(event, JobEvent::Error(_))
    })
    .await;
    assert!(
        matches!(refused, JobEvent::Error(ref e) if e.code == "not_interactive"),
        "{refused:?}"
    );
    send(&mut socket, &ClientMessage::Cancel).await;
    let result = next_until(&mut socket, "the result", |event| {
        matches!(event, JobEvent::Result(_))
    })
    .await;
    let JobEvent::Result(JobView { head, .. }) = result else {
        unreachable!()
    };
    assert_eq!(head.state, JobState::Cancelled);
    // The daemon keeps going.
    let result = sandbox.run(super::python("print('still here')")).await;
    assert_eq!(result.stdout, "still here\n");
}
