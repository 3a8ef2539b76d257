//! The `edgebox` subcommands, one module each.

mod check_config;
mod config;
mod origin;
mod sandbox;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// edgebox: a CDN edge (pingora) in front of origin nodes, a wasmtime code sandbox, and
/// the control plane that drives them, all from one TOML deployment file.
///
/// Start everything on the embedded default with `edgebox up`; see what it runs with
/// `edgebox config default`.
#[derive(Debug, Parser)]
#[command(
    name = "edgebox",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log format on stderr. Filter logs with EDGEBOX_LOG (e.g. `EDGEBOX_LOG=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EDGEBOX_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a deployment file; print every error with file, line, column and key.
    ///
    /// Exits 0 when the file is valid and 78 (EX_CONFIG) when it is not. Runs exactly the
    /// checks the daemons run at start-up and on reload.
    CheckConfig(check_config::Args),
    /// Print or inspect deployment configuration.
    #[command(subcommand)]
    Config(config::Command),
    /// Start every node of a deployment as supervised child processes.
    ///
    /// Prints where each node listens, restarts nodes that crash (with backoff), and on
    /// Ctrl-C or SIGTERM stops them all within a deadline.
    Up(up::Args),
    /// Run one origin node: static files with validators, ranges and per-path headers.
    Origin(origin::Args),
    /// Run one sandbox node (`--node NAME`), or `fetch-runtimes` ahead of time.
    Sandbox(sandbox::Args),
}

/// Options every daemon subcommand takes.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Deployment file. Without it, the embedded default deployment is used.
    #[arg(long, short, value_name = "FILE", env = "EDGEBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which node of the deployment this process is.
    #[arg(long, short, value_name = "NAME")]
    pub node: String,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig(args) => check_config::run(args),
        Command::Config(command) => config::run(command),
        Command::Up(args) => up::run(args),
        Command::Origin(args) => origin::run(args),
        Command::Sandbox(args) => sandbox::run(args),
    }
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EDGEBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// Loads the deployment named by `--config` (or the embedded default), printing every
/// error and returning exit code 78 when it is invalid.
pub fn load_deployment(config: Option<PathBuf>) -> Result<edgebox_config::Deployment, ExitCode> {
    edgebox_config::load(&edgebox_config::ConfigLocation::from_arg(config)).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(edgebox_config::EXIT_CONFIG as u8)
    })
}
