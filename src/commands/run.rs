//! `edgebox run FILE [--lang L] [--follow]`: run code in the sandbox through the
//! control plane. With `--follow`, output appears as it is produced and the line being
//! executed and the running time are shown live on the terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use edgebox_config::TokenRole;
use edgebox_wire::sandbox::{JobAccepted, JobEvent, JobRequest, JobState, JobView, OutputStream};
use futures_util::StreamExt;
use reqwest::Method;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::cp_client::{Client, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source file (.py, .js, .wat, or a WASI .wasm).
    pub file: PathBuf,
    /// Language: python, javascript, wat, wasm. Default: from the file extension.
    #[arg(long)]
    pub lang: Option<String>,
    /// Stream output and show the current line and running time while it runs.
    #[arg(long, short)]
    pub follow: bool,
    /// File whose contents become the program's stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Submitter)?;
    let language = match &args.lang {
        Some(lang) => lang.clone(),
        None => language_of(&args.file)?,
    };
    let source =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let source = String::from_utf8(source).map_err(|_| {
        anyhow!(
            "{} is not UTF-8 text; submit WebAssembly as WAT text",
            args.file.display()
        )
    })?;
    let mut job = JobRequest {
        language,
        source: source.clone(),
        ..JobRequest::default()
    };
    if let Some(stdin) = &args.stdin {
        let stdin = std::fs::read_to_string(stdin)
            .with_context(|| format!("reading {}", stdin.display()))?;
        job.stdin = Some(stdin);
    }
    if !args.follow {
        let result: JobView = client.call(Method::POST, "/v1/run", Some(&job))?;
        if client.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            print!("{}", result.stdout);
            eprint!("{}", result.stderr);
        }
        return Ok(exit_code(&result));
    }
    let runtime = &client.runtime;
    runtime.block_on(follow(&client, job, &source))
}

async fn follow(client: &Client, job: JobRequest, source: &str) -> anyhow::Result<ExitCode> {
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
    let (mut events, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .context("opening the job's event stream")?;
    let lines: Vec<&str> = source.lines().collect();
    let mut view = LiveView::new(client.json);
    let mut final_result = None;
    loop {
        let message = tokio::select! {
            message = events.next() => message,
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
