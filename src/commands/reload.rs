//! `edgebox reload [FILE]`: send a deployment file to the control plane as the next
//! config version — the same validation and persistence path as `PUT /v1/config`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use edgebox_config::TokenRole;
use edgebox_wire::control_plane::{Applied, History, PutConfig};
use reqwest::Method;

use super::cp_client::{Client, ClientArgs, explain_invalid_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// File to apply. Without it: `--config`/EDGEBOX_CONFIG, else the file the control
    /// plane was started with (when it is readable here).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Operator)?;
    let file = match args.file.or(args.client.config.clone()) {
        Some(file) => file,
        None => started_with(&client)?,
    };
    let toml =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let body = PutConfig {
        toml,
        expected_version: None,
    };
    match client.call::<Applied>(Method::PUT, "/v1/config", Some(&body)) {
        Ok(applied) => {
            client.output(&applied, |applied| {
                if applied.changed {
                    println!(
                        "{}: applied as config version {}",
                        file.display(),
                        applied.version
                    );
                } else {
                    println!(
                        "{}: unchanged (config version {})",
                        file.display(),
                        applied.version
                    );
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => explain_invalid_config(error, &file.display().to_string(), client.json),
    }
}

/// The file named by the newest `startup FILE` version in the history.
fn started_with(client: &Client) -> anyhow::Result<PathBuf> {
    let history: History = client.call(Method::GET, "/v1/config/history", None::<&()>)?;
    history
        .versions
        .iter()
        .rev()
        .filter_map(|version| version.source.strip_prefix("startup "))
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow!("no FILE given and the file the control plane was started with is not readable here; run `edgebox reload FILE`")
        })
}
