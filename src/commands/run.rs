//! `edgebox run FILE... [--entry F] [--tests tests.toml] [--interactive] [--callback URL]`:
//! run code in the sandbox through the control plane. Several files make a multi-file
//! program (`--entry` names the one that runs; default the first). With `--tests`, the
//! program is judged on the cases of a TOML file and a verdict table is printed. With
//! `--follow`, output appears as it is produced and the line being executed and the
//! running time are shown live on the terminal; `--interactive` also wires the terminal's
//! stdin to the program's.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use edgebox_config::TokenRole;
use edgebox_wire::sandbox::{
    ClientMessage, CompareMode, JobAccepted, JobEvent, JobRequest, JobState, JobView, OutputStream,
    SourceFile, TestCase, TestSummary, Verdict,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::cp_client::{Client, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source files (.py, .js, .wat, or a WASI .wasm). Several make one program whose
    /// files appear under /app with the paths given here (relative, no `..`).
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Which of the files runs (default: the first).
    #[arg(long, value_name = "FILE")]
    pub entry: Option<PathBuf>,
    /// Language: python, javascript, wat, wasm. Default: from the entry's extension.
    #[arg(long)]
    pub lang: Option<String>,
    /// Judge the program on the cases of this TOML file (`compare = "tokens"` and
    /// `[[case]]` tables with `name`, `stdin`, `args`, `expected_stdout`,
    /// `expected_exit_code`) and print a verdict table.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["interactive", "stdin"])]
    pub tests: Option<PathBuf>,
    /// Stream output and show the current line and running time while it runs.
    #[arg(long, short)]
    pub follow: bool,
    /// Send what is typed on this terminal (stdin) to the program as it reads it;
    /// implies --follow.
    #[arg(long, short)]
    pub interactive: bool,
    /// File whose contents become the program's stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// POST the final result to this URL when the job ends (signed; the deployment's
    /// `sandbox.callbacks.allow` must include it).
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A `--tests` file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    #[serde(default)]
    compare: Option<CompareMode>,
    #[serde(rename = "case", default)]
    cases: Vec<TestCase>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Submitter)?;
    let entry = args.entry.clone().unwrap_or_else(|| args.files[0].clone());
    let language = match &args.lang {
        Some(lang) => lang.clone(),
        None => language_of(&entry)?,
    };
    let mut job = JobRequest {
        language,
        callback_url: args.callback.clone(),
        interactive: args.interactive.then_some(true),
        ..JobRequest::default()
    };
    let source = if args.files.len() == 1 && args.entry.is_none() {
        let source = read_text(&args.files[0])?;
        job.source = Some(source.clone());
        source
    } else {
        let entry = program_path(&entry)?;
        let mut files = Vec::new();
        for file in &args.files {
            files.push(SourceFile {
                path: program_path(file)?,
                content: read_text(file)?,
                encoding: None,
            });
        }
        let source = files
            .iter()
            .find(|file| file.path == entry)
            .map(|file| file.content.clone())
            .ok_or_else(|| anyhow!("--entry {entry} is not one of the files"))?;
        job.files = Some(files);
        job.entry = Some(entry);
        source
    };
    if let Some(stdin) = &args.stdin {
        let stdin = std::fs::read_to_string(stdin)
            .with_context(|| format!("reading {}", stdin.display()))?;
        job.stdin = Some(stdin);
    }
    if let Some(path) = &args.tests {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let tests: TestsFile =
            toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if tests.cases.is_empty() {
            bail!("{} has no [[case]]", path.display());
        }
        job.tests = Some(tests.cases);
        job.compare = tests.compare;
    }
    if !args.follow && !args.interactive {
        let result: JobView = client.call(Method::POST, "/v1/run", Some(&job))?;
        if client.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else if let Some(tests) = &result.head.tests {
            print_verdicts(tests);
        } else {
            print!("{}", result.stdout);
            eprint!("{}", result.stderr);
        }
        return Ok(exit_code(&result));
    }
    let runtime = &client.runtime;
    runtime.block_on(follow(&client, job, &source, args.interactive))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{} is not UTF-8 text; submit WebAssembly as WAT text",
            path.display()
        )
    })
}

/// The path a file has in the program: as given, relative and without `..` (the
/// sandbox refuses anything else; saying so here names the file).
fn program_path(path: &Path) -> anyhow::Result<String> {
    if path.is_absolute()
        || path
            .components()
            .any(|part| matches!(part, std::path::Component::ParentDir))
    {
        bail!(
            "{}: give program files as relative paths inside the current directory",
            path.display()
        );
    }
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not a UTF-8 path", path.display()))?;
    Ok(text.trim_start_matches("./").to_owned())
}

/// The verdict table of a judged job, then its summary line.
fn print_verdicts(tests: &TestSummary) {
    let names: Vec<String> = tests
        .cases
        .iter()
        .map(|case| {
            case.name
                .clone()
                .unwrap_or_else(|| format!("case {}", case.index + 1))
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(4).max(4);
    println!(
        "{:>3}  {:<width$}  {:<15}  {:>8}  detail",
        "#", "name", "verdict", "time"
    );
    for (case, name) in tests.cases.iter().zip(&names) {
        let detail = match (&case.difference, &case.error) {
            (Some(difference), _) => format!(
                "line {}: expected {:?}, got {:?}",
                difference.line,
                difference.expected.as_deref().unwrap_or("<nothing>"),
                difference.actual.as_deref().unwrap_or("<nothing>"),
            ),
            (None, Some(error)) if case.verdict != Verdict::Accepted => error.clone(),
            _ => String::new(),
        };
        println!(
            "{:>3}  {name:<width$}  {:<15}  {:>5} ms  {detail}",
            case.index + 1,
            case.verdict.name(),
            case.runtime_ms,
        );
    }
    let verdict = tests.verdict.map_or("incomplete", Verdict::name);
    println!("passed {}/{}: {verdict}", tests.passed, tests.total);
}

async fn follow(
    client: &Client,
    job: JobRequest,
    source: &str,
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let accepted: JobAccepted = serde_json::from_value(
        client
            .call_async(Method::POST, "/v1/jobs", Some(&job))
            .await?,
    )
    .context("unexpected answer to the job submission")?;
    let id = accepted.id;
    let ws_base = client.base.replacen("http", "ws", 1);
    let mut request = format!("{ws_base}/v1/jobs/{id}/events").into_client_request()?;
    if let Some(token) = client.token() {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    // The final `result` event carries the whole output, which the sandbox bounds
    // (`sandbox.maximums.output`); this client takes whatever size it was allowed.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (events, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .context("opening the job's event stream")?;
    let (mut to_job, mut events) = events.split();
    // The terminal's lines, read on a blocking thread, go to the job as they are typed;
    // end of input closes the job's stdin.
    let (typed_tx, mut typed) = tokio::sync::mpsc::channel::<Option<String>>(16);
    if interactive {
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = typed_tx.blocking_send(None);
                        return;
                    }
                    Ok(_) => {
                        if typed_tx.blocking_send(Some(line.clone())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(typed_tx);
    }
    let lines: Vec<&str> = source.lines().collect();
    let mut view = LiveView::new(client.json);
    let mut final_result = None;
    loop {
        let message = tokio::select! {
            message = events.next() => message,
            Some(line) = typed.recv() => {
                let message = match line {
                    Some(data) => ClientMessage::Stdin { data },
                    None => ClientMessage::StdinEof,
                };
                to_job
                    .send(tungstenite::Message::text(serde_json::to_string(&message)?))
                    .await
                    .context("sending stdin to the job")?;
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                view.clear();
                eprintln!("cancelling job {id}");
                let _ = client.call_async(Method::DELETE, &format!("/v1/jobs/{id}"), None::<&()>).await;
                return Ok(ExitCode::from(130));
            }
        };
        let text = match message {
            Some(Ok(tungstenite::Message::Text(text))) => text,
            Some(Ok(tungstenite::Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(err)) => bail!("event stream broke: {err}"),
        };
        let event = serde_json::from_str::<JobEvent>(text.as_str())
            .context("reading an event of the job's stream")?;
        if client.json {
            println!("{}", text.as_str());
        }
        match event {
            JobEvent::Result(result) => final_result = Some(result),
            event => view.event(&event, &lines),
        }
    }
    view.clear();
    let result: JobView = match final_result {
        Some(result) => result,
        None => {
            let answer = client
                .call_async(Method::GET, &format!("/v1/jobs/{id}"), None::<&()>)
                .await?;
            serde_json::from_value(answer).context("unexpected answer for the job")?
        }
    };
    view.rest(&result);
    if let Some(tests) = result.head.tests.as_ref().filter(|_| !client.json) {
        print_verdicts(tests);
    }
    if !client.json {
        let state = result.head.state.name();
        let runtime = super::cp_client::duration_ms(result.head.runtime_ms);
        eprintln!("job {id} {state} in {runtime}");
    }
    Ok(exit_code(&result))
}

/// Output printed so far, and the live status line on a terminal.
struct LiveView {
    quiet: bool,
    tty: bool,
    status_shown: bool,
    printed_stdout: usize,
    printed_stderr: usize,
}

impl LiveView {
    fn new(json: bool) -> Self {
        Self {
            quiet: json,
            tty: std::io::stderr().is_terminal(),
            status_shown: false,
            printed_stdout: 0,
            printed_stderr: 0,
        }
    }

    fn event(&mut self, event: &JobEvent, lines: &[&str]) {
        if self.quiet {
            return;
        }
        match event {
            JobEvent::Output(chunk) => {
                self.clear();
                self.write(chunk.stream, &chunk.data);
            }
            JobEvent::Status(status) => self.status(
                status.current_line,
                status.runtime_ms,
                status.state.name(),
                lines,
            ),
            JobEvent::Error(error) => {
                self.clear();
                eprintln!("refused: {} ({})", error.message, error.code);
            }
            JobEvent::Case(case) => {
                self.clear();
                eprintln!("case {} {}", case.index + 1, case.verdict.name());
            }
            JobEvent::Result(_) => {}
        }
    }

    fn write(&mut self, stream: OutputStream, data: &str) {
        if stream == OutputStream::Stderr {
            self.printed_stderr += data.len();
            eprint!("{data}");
        } else {
            self.printed_stdout += data.len();
            print!("{data}");
            let _ = std::io::stdout().flush();
        }
    }

    fn status(&mut self, line: Option<u32>, runtime_ms: u64, state: &str, lines: &[&str]) {
        let seconds = runtime_ms as f64 / 1000.0;
        let text = match line {
            Some(line) => {
                let code = (line as usize)
                    .checked_sub(1)
                    .and_then(|at| lines.get(at))
                    .map_or("", |l| l.trim());
                format!("▶ line {line:>4} │ {seconds:>6.2}s │ {state} │ {code}")
            }
            None => format!("▶ {seconds:>6.2}s │ {state}"),
        };
        if self.tty {
            let width = 100;
            let text: String = text.chars().take(width).collect();
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.status_shown = true;
        }
    }

    fn clear(&mut self) {
        if self.status_shown {
            eprint!("\r\x1b[2K");
            self.status_shown = false;
        }
    }

    /// Prints whatever part of the final stdout/stderr the stream did not carry.
    fn rest(&mut self, result: &JobView) {
        if self.quiet {
            return;
        }
        let streams = [
            (OutputStream::Stdout, &result.stdout, self.printed_stdout),
            (OutputStream::Stderr, &result.stderr, self.printed_stderr),
        ];
        for (stream, all, printed) in streams {
            if let Some(rest) = all.get(printed..) {
                self.write(stream, rest);
            }
        }
    }
}

fn exit_code(result: &JobView) -> ExitCode {
    if let Some(tests) = &result.head.tests {
        return match tests.verdict {
            Some(Verdict::Accepted) => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
    match (result.head.state, result.head.exit_code) {
        (_, Some(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        (JobState::Succeeded, None) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn language_of(file: &std::path::Path) -> anyhow::Result<String> {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    Ok(match extension {
        "py" => "python",
        "js" | "mjs" => "javascript",
        "wat" => "wat",
        "wasm" => "wasm",
        _ => bail!(
            "cannot tell the language of {}; pass --lang",
            file.display()
        ),
    }
    .to_owned())
}
