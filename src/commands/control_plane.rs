//! `edgebox control-plane --node NAME`: run the control plane (API, dashboard).

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
    edgebox_control_plane::run(deployment, &args.node.node)
        .context("control plane stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}
