//! `edgebox check-config FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the errors as JSON on stdout instead of text on stderr.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match edgebox_config::load_file(&args.file) {
        Ok(deployment) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": true, "file": args.file, "nodes": deployment.nodes.len() })
                );
            } else {
                println!(
                    "{}: valid ({} nodes, {} origin groups)",
                    args.file.display(),
                    deployment.nodes.len(),
                    deployment.origin_groups.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "file": errors.file, "errors": errors.diagnostics })
                );
            } else {
                eprint!("{errors}");
            }
            Ok(ExitCode::from(edgebox_config::EXIT_CONFIG as u8))
        }
    }
}
