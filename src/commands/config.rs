//! `edgebox config ...`: the embedded default and, with a control plane, the live config.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the embedded default deployment as commented TOML, to start a config from.
    ///
    /// `edgebox config default > edgebox.toml` then `edgebox up --config edgebox.toml`.
    Default,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Default => {
            print!("{}", edgebox_config::EMBEDDED_DEFAULT);
            Ok(ExitCode::SUCCESS)
        }
    }
}
