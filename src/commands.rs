//! The `edgebox` subcommands, one module each.

mod check_config;
mod config;
mod control_plane;
mod cp_client;
mod edge;
mod origin;
mod purge;
mod reload;
mod run;
mod sandbox;
mod simulate;
mod status;
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
    /// Run one edge node: the pingora proxy clients talk to, with TLS and an admin port.
    Edge(edge::Args),
    /// Run one origin node: static files with validators, ranges and per-path headers.
    Origin(origin::Args),
    /// Run the control plane: config lifecycle, nodes, purge, stats, sandbox relay,
    /// OpenAPI at /openapi.json and the dashboard at /.
    ControlPlane(control_plane::Args),
    /// Show every node's health and config version (via the control plane).
    Status(status::Args),
    /// List every node with its role, region, addresses, health and uptime.
    Nodes(status::Args),
    /// Send a deployment file to the control plane as the next config version.
    Reload(reload::Args),
    /// Purge cached content on every edge by URL, prefix, tag, or everything.
    Purge(purge::Args),
    /// Run a program in the sandbox; `--follow` streams output and the live line.
    Run(run::Args),
    /// Drive a CDN workload from clients in regions against a deployment and report.
    ///
    /// Runs the scenario's workload once per variant (tiering on/off, cache sizes, LB
    /// policy, latency model) and reports hit ratio per tier, origin offload, latency
    /// percentiles and errors per region: a table, report.json and a self-contained
    /// report.html. Exits 78 on scenario errors, 69 when the deployment cannot be reached
    /// or started, 130 after Ctrl-C (the partial report is still written).
    Simulate(simulate::Args),
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
        Command::Edge(args) => edge::run(args),
        Command::Origin(args) => origin::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Status(args) => status::status(args),
        Command::Nodes(args) => status::nodes(args),
        Command::Reload(args) => reload::run(args),
        Command::Purge(args) => purge::run(args),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Sandbox(args) => sandbox::run(args),
    }
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EDGEBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A node whose stderr is gone (its `edgebox up` was killed) must keep running
        // and stop on SIGTERM: by default the subscriber reports a failed write with
        // `eprintln!`, which panics on the same broken pipe, in whatever task logged.
        .log_internal_errors(false)
        // Colours only for a person at a terminal; `up` and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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
