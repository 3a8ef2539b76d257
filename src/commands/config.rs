//! `edgebox config ...`: the embedded default and, with a control plane, the live config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgebox_config::TokenRole;
use edgebox_wire::control_plane::{Applied, ConfigText, CurrentConfig, History, Validation};
use reqwest::Method;

use super::cp_client::{
    Client, ClientArgs, EXIT_CONFIG, explain_invalid_config, print_diagnostics, table,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the embedded default deployment as commented TOML, to start a config from.
    ///
    /// `edgebox config default > edgebox.toml` then `edgebox up --config edgebox.toml`.
    Default,
    /// Print the control plane's current config (TOML; `--json` adds version and origin).
    Get(Remote),
    /// Have the control plane validate FILE without applying it; exits 78 when invalid.
    Validate(WithFile),
    /// List every config version the control plane kept.
    History(Remote),
    /// Make an earlier version current again (recorded as a new version).
    Rollback(WithVersion),
}

#[derive(Debug, clap::Args)]
pub struct Remote {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct WithFile {
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct WithVersion {
    /// The version to return to (see `edgebox config history`).
    #[arg(value_name = "VERSION", id = "target_version")]
    pub version: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Default => {
            print!("{}", edgebox_config::EMBEDDED_DEFAULT);
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(args) => {
            let client = Client::new(&args.client, TokenRole::Operator)?;
            let current: CurrentConfig = client.call(Method::GET, "/v1/config", None::<&()>)?;
            client.output(&current, |current| print!("{}", current.toml));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => {
            let client = Client::new(&args.client, TokenRole::Operator)?;
            let toml = std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let validation: Validation = client.call(
                Method::POST,
                "/v1/config/validate",
                Some(&ConfigText { toml }),
            )?;
            let file = args.file.display().to_string();
            client.output(&validation, |validation| {
                if validation.valid {
                    println!("{file}: valid");
                } else {
                    eprintln!(
                        "{file}: {} error(s) in deployment config",
                        validation.diagnostics.len()
                    );
                    let diagnostics: Vec<_> = validation
                        .diagnostics
                        .iter()
                        .map(|d| serde_json::to_value(d).unwrap_or_default())
                        .collect();
                    print_diagnostics(&file, &diagnostics);
                }
            });
            Ok(if validation.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            })
        }
        Command::History(args) => {
            let client = Client::new(&args.client, TokenRole::Operator)?;
            let history: History = client.call(Method::GET, "/v1/config/history", None::<&()>)?;
            client.output(&history, |history| {
                let rows: Vec<Vec<String>> = history
                    .versions
                    .iter()
                    .map(|v| {
                        let marker = if v.version == history.current_version {
                            "*"
                        } else {
                            ""
                        };
                        vec![
                            format!("{}{marker}", v.version),
                            v.created_at.clone(),
                            v.bytes.to_string(),
                            v.sha256[..12.min(v.sha256.len())].to_owned(),
                            v.source.clone(),
                        ]
                    })
                    .collect();
                table(&["VERSION", "CREATED", "BYTES", "SHA256", "SOURCE"], &rows);
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback(args) => {
            let client = Client::new(&args.client, TokenRole::Operator)?;
            let path = format!("/v1/config/rollback/{}", args.version);
            match client.call::<Applied>(Method::POST, &path, None::<&()>) {
                Ok(applied) => {
                    client.output(&applied, |applied| {
                        println!(
                            "version {} is current again as version {}",
                            args.version, applied.version
                        )
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    explain_invalid_config(error, &format!("version {}", args.version), client.json)
                }
            }
        }
    }
}
