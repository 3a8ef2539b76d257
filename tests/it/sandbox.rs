//! The sandbox daemon, black-box over HTTP and WebSockets: languages, limits, live status
//! with the current line, and hostile programs.

pub mod bounds;
mod callbacks;
mod files;
mod hostile;
pub mod interactive;
mod judge;
mod runtimes;
mod scratch;

use std::time::Duration;

use edgebox_wire::ErrorBody;
use edgebox_wire::sandbox::{ClientMessage, JobEvent, JobState, JobStatus, JobView};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Daemon, ONE_REGION, TestDir};

/// Where every test daemon keeps the fetched and compiled runtimes: fetched and compiled
/// once per machine, not once per test.
fn runtime_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/target/edgebox-runtimes").to_owned()
}

/// Fetches and compiles the language runtimes into [`runtime_dir`] once per test process
/// (and, through the directory's lock files, once per machine), before any daemon needs
/// them: CPython's compile takes minutes on a fresh clone, longer than a job request
/// waits. Later calls return at once; a failure fails every test that needs runtimes,
/// with the command's output.
pub fn runtimes_ready() {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = READY.get_or_init(|| {
        let dir = TestDir::new();
        let config = dir.config(ONE_REGION);
        let output = std::process::Command::new(support::edgebox_bin())
            .args(["sandbox", "fetch-runtimes", "--config"])
            .arg(&config)
            .env("EDGEBOX_RUNTIME_DIR", runtime_dir())
            .output()
            .map_err(|error| format!("running edgebox sandbox fetch-runtimes: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "edgebox sandbox fetch-runtimes failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// A running sandbox daemon and a client for it.
pub struct Sandbox {
    pub daemon: Daemon,
    pub client: reqwest::Client,
    pub base: String,
    _dir: TestDir,
}

impl Sandbox {
    pub fn start() -> Self {
        Self::start_with("max_concurrent_jobs = 2\nqueue_length = 16\n")
    }

    /// Starts a daemon with these `[sandbox]` settings.
    pub fn start_with(settings: &str) -> Self {
        Self::start_with_env(settings, &[])
    }

    /// Starts a daemon with these `[sandbox]` settings and extra environment.
    pub fn start_with_env(settings: &str, env: &[(&str, &str)]) -> Self {
        runtimes_ready();
        let dir = TestDir::new();
        let config = dir.config(&format!(
            "{ONE_REGION}\n[[nodes]]\nname = \"sandbox\"\nrole = \"sandbox\"\nregion = \"local\"\n\
             listen = \"127.0.0.1:0\"\n\n[sandbox]\n{settings}"
        ));
        let daemon = Daemon::start_with(
            "sandbox",
            &config,
            "sandbox",
            &["api"],
            &[&[("EDGEBOX_RUNTIME_DIR", runtime_dir().as_str())], env].concat(),
        );
        let base = daemon.url("api");
        // Every route but /healthz and /metrics needs the node credential.
        let client = daemon.authed_client();
        Self {
            daemon,
            client,
            base,
            _dir: dir,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `GET /v1/stats`, typed.
    pub async fn stats(&self) -> edgebox_wire::sandbox::SandboxStats {
        let (status, stats) = self.get("/v1/stats").await;
        assert_eq!(status, 200, "{stats}");
        serde_json::from_value(stats).expect("SandboxStats")
    }

    /// `GET /v1/jobs/{id}`, typed; `None` for 404.
    pub async fn job(&self, id: &str) -> Option<JobView> {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        match status {
            404 => None,
            200 => Some(serde_json::from_value(job).expect("JobView")),
            _ => panic!("GET job {id}: {status} {job}"),
        }
    }

    /// `POST /v1/run`: the final result in one call.
    pub async fn run(&self, body: Value) -> JobView {
        let (status, result) = self.post("/v1/run", &body).await;
        assert_eq!(status, 200, "run {body}: {result}");
        serde_json::from_value(result).expect("JobView")
    }

    /// `POST /v1/jobs`, returning the job id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, accepted) = self.post("/v1/jobs", &body).await;
        assert_eq!(status, 202, "submit: {accepted}");
        let accepted: edgebox_wire::sandbox::JobAccepted =
            serde_json::from_value(accepted).expect("JobAccepted");
        accepted.id
    }

    /// `DELETE /v1/jobs/{id}` (cancel): its status and JSON body.
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(format!("{}/v1/jobs/{id}", self.base))
            .send()
            .await
            .expect("DELETE reaches the sandbox");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Polls `GET /v1/jobs/{id}` until the job has finished.
    pub async fn wait(&self, id: &str) -> JobView {
        support::eventually(
            &format!("job {id} to finish"),
            Duration::from_secs(120),
            || async {
                let job = self.job(id).await.expect("the job is known");
                job.head.state.is_final().then_some(job)
            },
        )
        .await
    }

    /// Every message of the job's event stream, until the final result.
    pub async fn events(&self, id: &str) -> Vec<JobEvent> {
        self.events_with(id, Vec::new(), None).await
    }

    /// The events of an interactive job that waits for a line of stdin before it does
    /// what the test watches: the line is sent once the socket is open, so no status is
    /// missed however late the socket connects on a loaded machine.
    pub async fn events_from_go(&self, id: &str) -> Vec<JobEvent> {
        let go = ClientMessage::Stdin {
            data: "go\n".into(),
        };
        self.events_with(id, vec![go], None).await
    }

    /// The events of a job that runs until cancelled: once `lines` running statuses with
    /// a current line have come, the socket sends `cancel`.
    pub async fn events_until_lines(&self, id: &str, lines: usize) -> Vec<JobEvent> {
        self.events_with(id, Vec::new(), Some(lines)).await
    }

    async fn events_with(
        &self,
        id: &str,
        on_open: Vec<ClientMessage>,
        cancel_after_lines: Option<usize>,
    ) -> Vec<JobEvent> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = format!("ws://{}/v1/jobs/{id}/events", self.daemon.addr("api"))
            .into_client_request()
            .unwrap();
        url.headers_mut()
            .insert("authorization", self.daemon.bearer().parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        let mut messages = Vec::new();
        let read = async {
            for message in on_open {
                let text = serde_json::to_string(&message).unwrap();
                socket.send(Message::text(text)).await.expect("send");
            }
            let mut lines_seen = 0;
            while let Some(message) = socket.next().await {
                let message = message.expect("WebSocket message");
                if let Message::Text(text) = message {
                    let event: JobEvent = serde_json::from_str(&text).expect("an event");
                    let done = matches!(event, JobEvent::Result(_));
                    if let JobEvent::Status(status) = &event
                        && status.state == JobState::Running
                        && status.current_line.is_some()
                    {
                        lines_seen += 1;
                        if cancel_after_lines == Some(lines_seen) {
                            let text = serde_json::to_string(&ClientMessage::Cancel).unwrap();
                            socket.send(Message::text(text)).await.expect("send");
                        }
                    }
                    messages.push(event);
                    if done {
                        break;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("event stream ended in time");
        messages
    }
}

/// The statuses sent while the job was running.
fn running_statuses(events: &[JobEvent]) -> Vec<&JobStatus> {
    events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Status(status) if status.state == JobState::Running => Some(status),
            _ => None,
        })
        .collect()
}

/// The lines sampled, with runs of the same line collapsed: the order in which the
/// program's loops ran.
fn line_order(lines: &[Option<u32>]) -> Vec<u32> {
    let mut order: Vec<u32> = Vec::new();
    for &line in lines.iter().flatten() {
        if order.last() != Some(&line) {
            order.push(line);
        }
    }
    order
}

/// The output events' text, in order.
fn output_of(events: &[JobEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Output(chunk) => Some(chunk.data.as_str()),
            _ => None,
        })
        .collect()
}

/// The final `result` event, which must be the last.
fn result_of(events: &[JobEvent]) -> &JobView {
    match events.last() {
        Some(JobEvent::Result(view)) => view,
        other => panic!("the stream did not end with a result: {other:?}"),
    }
}

fn python(source: &str) -> Value {
    json!({"language": "python", "source": source})
}

/// An interactive job of `language`: its program reads a line before it starts the work
/// the test watches (see [`Sandbox::events_from_go`]).
fn gated(language: &str, source: &str) -> Value {
    json!({"language": language, "source": source, "interactive": true})
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_world_in_each_language() {
    let sandbox = Sandbox::start();
    let result = sandbox.run(python("print('hello from python')")).await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "hello from python\n");
    assert_eq!(result.head.exit_code, Some(0));
    assert!(
        result.head.start_time.as_deref().unwrap().contains('T'),
        "{result:?}"
    );

    let result = sandbox
        .run(json!({"language": "javascript", "source": "console.log('hello from ' + 'js')"}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "hello from js\n");

    let result = sandbox
        .run(json!({"language": "wat", "source": HELLO_WAT}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "hello from wat\n");

    use base64::Engine as _;
    let binary = wat::parse_str(HELLO_WAT).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
    let result = sandbox
        .run(json!({"language": "wasm", "source": encoded}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "hello from wat\n");

    let (status, languages) = sandbox.get("/v1/languages").await;
    assert_eq!(status, 200);
    let languages: edgebox_wire::sandbox::Languages =
        serde_json::from_value(languages).expect("Languages");
    let names: Vec<&str> = languages.languages.iter().map(|l| l.name.name()).collect();
    assert_eq!(names, ["python", "javascript", "wat", "wasm"]);
    assert!(
        languages.languages[0].version.contains("3.15"),
        "{:?}",
        languages.languages[0]
    );
    for package in ["numpy", "pandas"] {
        assert!(
            languages.languages[0]
                .packages
                .iter()
                .any(|p| p.starts_with(package)),
            "{package} in {:?}",
            languages.languages[0].packages
        );
    }
}

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wat\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 15))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[tokio::test(flavor = "multi_thread")]
async fn stdin_args_and_exit_codes() {
    let sandbox = Sandbox::start();
    let result = sandbox
        .run(json!({
            "language": "python",
            "source": "import sys\ndata = sys.stdin.read()\nprint(data.upper(), sys.argv[1:])\nsys.exit(3)",
            "stdin": "round trip",
            "args": ["a", "b"],
        }))
        .await;
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    assert_eq!(result.head.exit_code, Some(3));
    assert_eq!(result.stdout, "ROUND TRIP ['a', 'b']\n");

    let result = sandbox
        .run(json!({
            "language": "javascript",
            "source": "const s = std.in.readAsString(); console.log(s.split('').reverse().join(''));",
            "stdin": "abc",
        }))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "cba\n");

    let result = sandbox
        .run(python("def f():\n    raise ValueError('boom')\n\nf()\n"))
        .await;
    assert_eq!(result.head.state, JobState::Failed, "{result:?}");
    assert_eq!(result.head.exit_code, Some(1));
    let stderr = result.stderr.as_str();
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("line 2, in f"), "{stderr}");
    assert!(stderr.contains("ValueError: boom"), "{stderr}");
}

/// Every Python job starts from the same pre-initialised image, and none sees what an
/// earlier one did: module attributes, globals and files written are gone, and `random`
/// is seeded anew (from WASI's random source) in each.
#[tokio::test(flavor = "multi_thread")]
async fn python_jobs_share_no_state() {
    let sandbox = Sandbox::start();
    let first = sandbox
        .run(python(
            "import sys, json, random\nsys.edgebox_marker = 1\njson.edgebox_marker = 1\n\
             __builtins__.edgebox_marker = 1\nprint(random.random())",
        ))
        .await;
    assert_eq!(first.head.state, JobState::Succeeded, "{first:?}");
    let second = sandbox
        .run(python(
            "import sys, json, random, builtins\n\
             print([hasattr(m, 'edgebox_marker') for m in (sys, json, builtins)])\n\
             print(random.random())",
        ))
        .await;
    assert_eq!(second.head.state, JobState::Succeeded, "{second:?}");
    let mut lines = second.stdout.lines();
    assert_eq!(lines.next(), Some("[False, False, False]"), "{second:?}");
    assert_ne!(
        lines.next(),
        first.stdout.lines().next(),
        "same random state"
    );
}

/// JavaScript: the line of the loop the program is running (QuickJS instrumented at its
/// backward jumps), moving from the first loop to the second; a multi-file program and
/// the languages list say what is not known.
#[tokio::test(flavor = "multi_thread")]
async fn javascript_reports_the_line_of_the_running_loop() {
    let sandbox = Sandbox::start();
    let source = [
        "let n = 0; std.in.getline();",             // 1
        "let end = Date.now() + 800;",              // 2
        "",                                         // 3
        "while (Date.now() < end) {",               // 4
        "  n += 1;",                                // 5
        "}",                                        // 6
        "console.log('first loop done');",          // 7
        "end = Date.now() + 800;",                  // 8
        "for (let i = 0; Date.now() < end; i++) {", // 9
        "  n += i % 3;",                            // 10
        "}",                                        // 11
        "console.log('second loop done', n > 0);",  // 12
    ]
    .join("\n");
    let id = sandbox.submit(gated("javascript", &source)).await;
    let messages = sandbox.events_from_go(&id).await;
    let lines: Vec<Option<u32>> = running_statuses(&messages)
        .iter()
        .map(|m| m.current_line)
        .collect();
    let order = line_order(&lines);
    let first = lines.iter().filter(|l| matches!(l, Some(4..=6))).count();
    let second = lines.iter().filter(|l| matches!(l, Some(9..=11))).count();
    assert!(first >= 3 && second >= 3, "lines sampled: {lines:?}");
    let first_second = order.iter().position(|l| (9..=11).contains(l)).unwrap();
    assert!(
        order[first_second..].iter().all(|l| !(4..=6).contains(l)),
        "the first loop after the second: {order:?}"
    );
    // Each loop is shown at its head: the line of its condition.
    assert_eq!(order, [4, 9], "lines sampled: {lines:?}");
    let JobEvent::Result(result) = messages.last().unwrap() else {
        panic!("no result: {messages:?}")
    };
    assert_eq!(result.stdout, "first loop done\nsecond loop done true\n");

    let (_, languages) = sandbox.get("/v1/languages").await;
    assert_eq!(
        languages["languages"][1]["current_line"],
        "single-file programs: the loop it is running"
    );
}

/// Line 7 busy-loops for about a second, then line 12 does: the WebSocket status
/// messages report those lines, in that order, with a running time and start time.
#[tokio::test(flavor = "multi_thread")]
async fn current_line_is_reported_live_over_the_websocket() {
    let sandbox = Sandbox::start();
    let source = [
        "import time; input()",                         // 1
        "start = time.monotonic()",                     // 2
        "n = 0",                                        // 3
        "",                                             // 4
        "",                                             // 5
        "",                                             // 6
        "while time.monotonic() - start < 1.0: n += 1", // 7
        "print('first loop done', flush=True)",         // 8
        "start = time.monotonic()",                     // 9
        "",                                             // 10
        "",                                             // 11
        "while time.monotonic() - start < 1.0: n += 1", // 12
        "print('second loop done')",                    // 13
    ]
    .join("\n");
    let id = sandbox.submit(gated("python", &source)).await;
    let messages = sandbox.events_from_go(&id).await;
    let statuses = running_statuses(&messages);
    let lines: Vec<Option<u32>> = statuses.iter().map(|m| m.current_line).collect();
    let order = line_order(&lines);
    let seven = lines.iter().filter(|l| **l == Some(7)).count();
    let twelve = lines.iter().filter(|l| **l == Some(12)).count();
    assert!(seven >= 4 && twelve >= 4, "lines sampled: {lines:?}");
    let first_12 = order.iter().position(|&l| l == 12).unwrap();
    assert!(order[..first_12].contains(&7), "order: {order:?}");
    assert!(
        !order[first_12..].contains(&7),
        "line 7 after line 12: {order:?}"
    );
    // Nothing but lines of the submitted program, never a guess.
    assert!(
        order.iter().all(|&l| (1..=13).contains(&l)),
        "order: {order:?}"
    );
    let running = statuses;
    let runtime_ms: Vec<u64> = running.iter().map(|m| m.runtime_ms).collect();
    assert!(
        runtime_ms.windows(2).all(|w| w[0] <= w[1]),
        "{runtime_ms:?}"
    );
    assert!(running.iter().all(|m| m.start_time.is_some()));
    // About 2 s at one status per 100 ms at least.
    assert!(
        running.len() >= 15,
        "only {} status messages",
        running.len()
    );
    assert_eq!(output_of(&messages), "first loop done\nsecond loop done\n");
    let result = result_of(&messages);
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
}

/// The innermost frame of the submitted program counts: a loop inside a function called
/// from a loop reports the function's line (4), and once the calls return, the caller's
/// own loop (8).
#[tokio::test(flavor = "multi_thread")]
async fn current_line_follows_nested_calls() {
    let sandbox = Sandbox::start();
    let source = [
        "import time; input()",                               // 1
        "def work(seconds):",                                 // 2
        "    start = time.monotonic()",                       // 3
        "    while time.monotonic() - start < seconds: pass", // 4
        "for _ in range(2):",                                 // 5
        "    work(0.5)",                                      // 6
        "start = time.monotonic()",                           // 7
        "while time.monotonic() - start < 1.0: pass",         // 8
        "print('done')",                                      // 9
    ]
    .join("\n");
    let id = sandbox.submit(gated("python", &source)).await;
    let messages = sandbox.events_from_go(&id).await;
    let lines: Vec<Option<u32>> = running_statuses(&messages)
        .iter()
        .map(|m| m.current_line)
        .collect();
    let order = line_order(&lines);
    let inner = lines.iter().filter(|l| **l == Some(4)).count();
    let caller = lines.iter().filter(|l| **l == Some(8)).count();
    assert!(inner >= 4 && caller >= 4, "lines sampled: {lines:?}");
    let first_8 = order.iter().position(|&l| l == 8).unwrap();
    assert!(order[..first_8].contains(&4), "order: {order:?}");
    assert!(
        !order[first_8..].contains(&4),
        "line 4 after line 8: {order:?}"
    );
    assert!(
        order.iter().all(|&l| (1..=9).contains(&l)),
        "order: {order:?}"
    );
    assert_eq!(output_of(&messages), "done\n");
    assert_eq!(result_of(&messages).head.state, JobState::Succeeded);
}

/// A subscriber connecting after the job finished still receives its output, then the result.
#[tokio::test(flavor = "multi_thread")]
async fn late_subscriber_receives_what_it_missed() {
    let sandbox = Sandbox::start();
    let id = sandbox
        .submit(python("for i in range(3):\n    print('line', i)\n"))
        .await;
    let job = sandbox.wait(&id).await;
    assert_eq!(job.head.state, JobState::Succeeded, "{job:?}");
    let messages = sandbox.events(&id).await;
    assert_eq!(output_of(&messages), "line 0\nline 1\nline 2\n");
    result_of(&messages);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_json_errors() {
    let sandbox = Sandbox::start_with("max_source_size = \"1KiB\"\nmax_stdin_size = \"1KiB\"\n");
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"language": "cobol", "source": "x"}),
            422,
            "unknown_language",
        ),
        (json!({"language": "python"}), 422, "invalid_request"),
        (
            json!({"language": "python", "source": "x".repeat(2048)}),
            413,
            "source_too_large",
        ),
        (
            json!({"language": "python", "source": "", "stdin": "x".repeat(2048)}),
            413,
            "stdin_too_large",
        ),
        (
            json!({"language": "python", "source": "", "limits": {"wall_ms": 10_000_000}}),
            422,
            "limit_exceeds_maximum",
        ),
        (
            json!({"language": "python", "source": "", "limits": {"memory_mb": 0}}),
            422,
            "invalid_limit",
        ),
        (
            json!({"language": "wat", "source": "(module (func $f (result i32)))"}),
            422,
            "invalid_module",
        ),
        (
            json!({"language": "wat", "source": "(module (import \"env\" \"evil\" (func)) (func (export \"_start\")))"}),
            422,
            "unsupported_import",
        ),
        (
            json!({"language": "wat", "source": "(module (func (export \"main\")))"}),
            422,
            "not_a_command",
        ),
        (
            json!({"language": "wasm", "source": "not base64!"}),
            422,
            "invalid_base64",
        ),
        (
            json!({"language": "wasm", "source": "AGFzbQEAAAAF"}),
            422,
            "invalid_module",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = sandbox.post("/v1/jobs", &body).await;
        assert_eq!(got, status, "{body} -> {error}");
        let error: ErrorBody = serde_json::from_value(error).expect("the JSON error body");
        assert_eq!(error.error.code, code, "{body} -> {error:?}");
        assert!(!error.error.message.is_empty());
    }
    // Invalid JSON and invalid UTF-8 inside the JSON.
    for raw in [
        &b"{not json"[..],
        &b"{\"language\":\"python\",\"source\":\"\xff\xfe\"}"[..],
    ] {
        let response = sandbox
            .client
            .post(format!("{}/v1/jobs", sandbox.base))
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.code, "invalid_json", "{error:?}");
    }
    let (status, error) = sandbox.get("/v1/jobs/nope").await;
    let error: ErrorBody = serde_json::from_value(error).expect("the JSON error body");
    assert_eq!((status, error.error.code.as_str()), (404, "job_not_found"));
    // The daemon still works.
    let result = sandbox.run(python("print(1 + 1)")).await;
    assert_eq!(result.stdout, "2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_metrics_health_and_graceful_stop() {
    let mut sandbox = Sandbox::start();
    sandbox.run(python("print('x')")).await;
    let stats = sandbox.stats().await;
    assert_eq!(stats.finished_total[&JobState::Succeeded], 1, "{stats:?}");
    assert_eq!(stats.running, 0);
    let (status, health) = sandbox.get("/healthz").await;
    let health: edgebox_wire::health::NodeHealth = serde_json::from_value(health).unwrap();
    assert_eq!(
        (status, health.status),
        (200, edgebox_wire::health::HealthStatus::Ok)
    );
    assert!(health.uptime_ms.is_some(), "{health:?}");
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
        metrics.contains(
            "edgebox_sandbox_jobs_finished_total{node=\"sandbox\",state=\"succeeded\"} 1"
        ),
        "{metrics}"
    );
    let status = sandbox.daemon.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

/// A WAT job's current line comes from the DWARF line table the sandbox generates for it.
#[tokio::test(flavor = "multi_thread")]
async fn wat_current_line_from_dwarf() {
    let sandbox = Sandbox::start();
    let source = [
        "(module",                                                     // 1
        "  (memory (export \"memory\") 1)",                            // 2
        "  (func (export \"_start\")",                                 // 3
        "    (local $i i32)",                                          // 4
        "    (loop $spin",                                             // 5
        "      (local.set $i (i32.add (local.get $i) (i32.const 1)))", // 6
        "      (br $spin))))",                                         // 7
    ]
    .join("\n");
    let id = sandbox
        .submit(json!({"language": "wat", "source": source, "limits": {"wall_ms": 60_000}}))
        .await;
    // Cancelled once five lines came: however late the socket connects, it sees them.
    let messages = sandbox.events_until_lines(&id, 5).await;
    let lines: Vec<u32> = running_statuses(&messages)
        .iter()
        .filter_map(|m| m.current_line)
        .collect();
    assert!(lines.len() >= 5, "lines: {lines:?}");
    assert!(
        lines.iter().all(|l| (5..=7).contains(l)),
        "lines: {lines:?}"
    );
    let result = result_of(&messages);
    assert_eq!(result.head.state, JobState::Cancelled, "{result:?}");
}
