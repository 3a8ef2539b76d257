//! `edgebox`: one binary for every daemon of a deployment and the tools that drive it.
//!
//! This file only parses arguments and dispatches; each command lives in `commands/`.

mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    commands::init_tracing(cli.log_format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("edgebox: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
