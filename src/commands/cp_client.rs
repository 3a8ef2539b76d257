//! What every command that talks to the control plane shares: where it is, which
//! token to send, JSON-or-table output, and turning API errors into messages.
//!
//! Address and token come from flags, then the environment (`EDGEBOX_CONTROL_PLANE`,
//! `EDGEBOX_TOKEN`), then the deployment config (`--config`/`EDGEBOX_CONFIG`, else the
//! embedded default): its control plane's address and the secret of its first token
//! with the needed role (token files under the data dir, as `edgebox up` generated
//! them). So `edgebox status` works right after `edgebox up` in the same directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use edgebox_config::TokenRole;
use edgebox_wire::control_plane::ErrorBody;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Options of every control-plane command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Control plane base URL (e.g. http://127.0.0.1:9090).
    #[arg(long, value_name = "URL", env = "EDGEBOX_CONTROL_PLANE", global = true)]
    pub control_plane: Option<String>,
    /// Bearer token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "EDGEBOX_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Deployment file to take the address and token from when not given.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "EDGEBOX_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Exit code for an invalid config (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
    pub json: bool,
    pub runtime: tokio::runtime::Runtime,
}

/// An answer that was not 2xx.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub body: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(args: &ClientArgs, role: TokenRole) -> anyhow::Result<Self> {
        edgebox_node::install_crypto();
        let deployment = || {
            edgebox_config::load(&edgebox_config::ConfigLocation::from_arg(
                args.config.clone(),
            ))
            .map_err(|errors| anyhow!("{errors}"))
        };
        let base = match &args.control_plane {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let deployment = deployment().context("finding the control plane's address")?;
                // The first replica the nodes would try (`[control_plane] urls`, or
                // the control-plane nodes' listen addresses).
                deployment
                    .control_plane_urls()
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        anyhow!(
                            "{} has no control-plane node at a known address",
                            deployment.source
                        )
                    })?
            }
        };
        let token = match &args.token {
            Some(token) => Some(token.clone()),
            None => deployment().ok().and_then(|deployment| {
                let mut tokens: Vec<_> = deployment.control_plane.tokens.clone();
                // The needed role first; operators may do everything.
                tokens.sort_by_key(|token| token.role != role);
                tokens.iter().find_map(|token| {
                    edgebox_node::secrets::resolve(&token.name, &token.secret, false).ok()
                })
            }),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the async runtime")?;
        Ok(Self {
            base,
            token,
            http,
            json: args.json,
            runtime,
        })
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Calls the API; a non-2xx answer becomes an [`ApiFailure`] (inside the error).
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let value = self.runtime.block_on(self.call_async(method, path, body))?;
        serde_json::from_value(value).context("unexpected answer from the control plane")
    }

    pub async fn call_async(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let (code, mut message) = match serde_json::from_value::<ErrorBody>(value.clone()) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (
                "http_error".to_owned(),
                format!("{method} {path} answered {status}"),
            ),
        };
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            message.push_str(" (no token found: pass --token, set EDGEBOX_TOKEN, or run where the deployment's token files are)");
        }
        Err(ApiFailure {
            status,
            code,
            message,
            body: value,
        }
        .into())
    }

    /// Prints `value` as JSON when `--json` was given; otherwise runs `table`.
    pub fn output<T: Serialize>(&self, value: &T, table: impl FnOnce(&T)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            table(value);
        }
    }
}

/// Prints the config diagnostics carried by an `invalid_config` failure, compiler
/// style, and returns exit code 78; other failures go up as errors.
pub fn explain_invalid_config(
    error: anyhow::Error,
    file: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(failure) = error.downcast_ref::<ApiFailure>() else {
        return Err(error);
    };
    if failure.code != "invalid_config" {
        return Err(error);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&failure.body).unwrap_or_default()
        );
    } else {
        eprintln!("{file}: {}", failure.message);
        print_diagnostics(
            file,
            failure.body["error"]["diagnostics"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
    }
    Ok(ExitCode::from(EXIT_CONFIG))
}

pub fn print_diagnostics(file: &str, diagnostics: &[Value]) {
    for diagnostic in diagnostics {
        let place = match (diagnostic["line"].as_u64(), diagnostic["column"].as_u64()) {
            (Some(line), Some(column)) => format!(":{line}:{column}"),
            _ => String::new(),
        };
        let path = diagnostic["path"].as_str().unwrap_or_default();
        let message = diagnostic["message"].as_str().unwrap_or_default();
        if path.is_empty() {
            eprintln!("  {file}{place}: {message}");
        } else {
            eprintln!("  {file}{place}: {path}: {message}");
        }
    }
}

/// A plain text table: a header row and left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `1h02m`, `3m04s`, `5.2s`, `340ms`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

pub fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}
