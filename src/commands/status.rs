//! `edgebox status` and `edgebox nodes`: the deployment at a glance.

use std::process::ExitCode;

use edgebox_config::TokenRole;
use edgebox_wire::control_plane::{ConfigStatus, NodeList};
use reqwest::Method;
use serde::Serialize;

use super::cp_client::{Client, ClientArgs, duration_ms, or_dash, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Serialize)]
struct Status {
    control_plane: String,
    config_version: u64,
    nodes: NodeList,
    config: ConfigStatus,
}

/// Nodes with health and which config version each runs. Exits 1 when a node is down
/// or behind.
pub fn status(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Operator)?;
    let nodes: NodeList = client.call(Method::GET, "/v1/nodes", None::<&()>)?;
    let config: ConfigStatus = client.call(Method::GET, "/v1/config/status", None::<&()>)?;
    let healthy = nodes.nodes.iter().all(|node| node.health == "up")
        && config.nodes.iter().all(|node| node.in_sync);
    let status = Status {
        control_plane: client.base.clone(),
        config_version: config.current_version,
        nodes,
        config,
    };
    client.output(&status, |status| {
        println!(
            "control plane {}  config version {}",
            status.control_plane, status.config_version
        );
        let rows: Vec<Vec<String>> = status
            .nodes
            .nodes
            .iter()
            .map(|node| {
                let sync = status.config.nodes.iter().find(|s| s.node == node.name);
                let config = match sync {
                    Some(s) if s.in_sync => format!("v{} ✓", status.config_version),
                    Some(s) => match (s.version, s.applied, &s.error) {
                        (Some(v), Some(false), Some(error)) => format!("v{v} failed: {error}"),
                        (Some(v), _, _) => format!("v{v} (behind)"),
                        _ => "not reported".into(),
                    },
                    None => "-".into(),
                };
                let health = match &node.health_error {
                    Some(error) if node.health != "up" => format!("{} ({error})", node.health),
                    _ => node.health.clone(),
                };
                vec![
                    node.name.clone(),
                    node.role.clone(),
                    node.region.clone(),
                    health,
                    config,
                    or_dash(node.uptime_ms.map(duration_ms)),
                ]
            })
            .collect();
        table(
            &["NODE", "ROLE", "REGION", "HEALTH", "CONFIG", "UPTIME"],
            &rows,
        );
    });
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every node with its addresses.
pub fn nodes(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Operator)?;
    let nodes: NodeList = client.call(Method::GET, "/v1/nodes", None::<&()>)?;
    client.output(&nodes, |nodes| {
        let rows: Vec<Vec<String>> = nodes
            .nodes
            .iter()
            .map(|node| {
                let listeners = node
                    .listeners
                    .iter()
                    .map(|l| format!("{}={}", l.service, l.addr.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    node.name.clone(),
                    node.role.clone(),
                    node.region.clone(),
                    node.health.clone(),
                    or_dash(node.config_version.map(|v| format!("v{v}"))),
                    or_dash(node.uptime_ms.map(duration_ms)),
                    listeners,
                ]
            })
            .collect();
        table(
            &[
                "NODE",
                "ROLE",
                "REGION",
                "HEALTH",
                "CONFIG",
                "UPTIME",
                "LISTENERS",
            ],
            &rows,
        );
    });
    Ok(ExitCode::SUCCESS)
}
