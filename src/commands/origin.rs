//! `edgebox origin --node NAME`: run one origin node.

use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub node: super::NodeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let deployment = match super::load_deployment(args.node.config) {
        Ok(deployment) => deployment,
        Err(code) => return Ok(code),
    };
    edgebox_origin::run(deployment, &args.node.node).context("origin stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}
