//! `edgebox edge --node NAME`: run one edge node (pingora proxy, TLS, admin listener).

use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub node: super::NodeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let location = edgebox_config::ConfigLocation::from_arg(args.node.config.clone());
    let deployment = match super::load_deployment(args.node.config) {
        Ok(deployment) => deployment,
        Err(code) => return Ok(code),
    };
    edgebox_edge::run(deployment, &args.node.node, location)
        .context("edge stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}
