//! Which edge each client region sends its requests to.
//!
//! Clients go to the client-facing edges (edges no other edge names as its `parent`) of
//! their own region, spread over them in turn; a region without such an edge uses the
//! nearest one by the latency model, as a CDN's request routing would. The choice is
//! made once from the base deployment, so every variant sends the same request to the
//! same edge even when it removes the shield tier.

use std::net::SocketAddr;
use std::time::Duration;

use edgebox_config::Deployment;
use serde::Serialize;

use super::scenario::{ClientRegion, Protocol};

/// Why the simulator cannot aim its clients at the deployment.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{source_name} has no edge for clients")]
    NoClientFacingEdge { source_name: String },
    #[error("edge {edge:?} has no {service} address (is it running, with a {service} listener?)")]
    NoAddress { edge: String, service: &'static str },
}

/// One edge the simulator sends requests to, or reads statistics from.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub name: String,
    pub region: String,
    /// `scheme://IP:PORT`, without a trailing slash.
    pub url: String,
    /// `http://IP:PORT` of its admin listener, when known.
    pub admin: Option<String>,
    /// Its node credential, for reading its admin `/stats`, when this machine has it
    /// (`<node data dir>/credential`). Never written into reports.
    #[serde(skip)]
    pub credential: Option<String>,
}

impl Targets {
    /// Takes the edges' credentials from `deployment`'s data directory (the one the
    /// running nodes use, which may differ from the deployment routes were chosen from).
    pub fn credentials_from(&mut self, deployment: &Deployment) {
        for edge in self
            .per_region
            .iter_mut()
            .flatten()
            .chain(&mut self.all_edges)
        {
            edge.credential = credential(deployment, &edge.name);
        }
    }
}

/// The credential of `node` as its data directory holds it, if this machine has it.
fn credential(deployment: &Deployment, node: &str) -> Option<String> {
    let path = edgebox_node::credentials::credential_path(deployment, node);
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

/// Edges per client region (same order as the scenario's clients), plus every edge of
/// the deployment for statistics.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    pub per_region: Vec<Vec<Edge>>,
    pub all_edges: Vec<Edge>,
}

/// True when no other edge names `name` as its parent.
pub fn is_client_facing(deployment: &Deployment, name: &str) -> bool {
    !deployment
        .edges()
        .any(|(_, edge)| edge.parent.as_deref() == Some(name))
}

/// Picks the edges for each client region. `addr(node, service)` gives the address a
/// node actually listens on (announced or reported), if known.
pub fn choose(
    deployment: &Deployment,
    clients: &[ClientRegion],
    protocol: Protocol,
    addr: &dyn Fn(&str, &str) -> Option<SocketAddr>,
) -> Result<Targets, TargetError> {
    let service = match protocol {
        Protocol::Http => "http",
        Protocol::Https => "https",
    };
    let scheme = service;
    let mut all_edges = Vec::new();
    for (node, _) in deployment.edges() {
        let admin = addr(&node.name, "admin").map(|admin| format!("http://{admin}"));
        let url = addr(&node.name, service).map(|bound| format!("{scheme}://{bound}"));
        all_edges.push((node.region.clone(), node.name.clone(), url, admin));
    }
    let facing: Vec<(&str, &str)> = deployment
        .edges()
        .filter(|(node, _)| is_client_facing(deployment, &node.name))
        .map(|(node, _)| (node.name.as_str(), node.region.as_str()))
        .collect();
    if facing.is_empty() {
        return Err(TargetError::NoClientFacingEdge {
            source_name: deployment.source.clone(),
        });
    }
    let rtt = |a: &str, b: &str| {
        deployment
            .latency
            .link(a, b)
            .map_or(Duration::MAX, |link| link.rtt)
    };
    let mut per_region = Vec::new();
    for client in clients {
        let mut chosen: Vec<&str> = facing
            .iter()
            .filter(|(_, region)| *region == client.name)
            .map(|(name, _)| *name)
            .collect();
        if chosen.is_empty() {
            let nearest = facing
                .iter()
                .min_by_key(|(name, region)| (rtt(&client.name, region), *name))
                .map(|(_, region)| *region)
                .expect("facing is not empty");
            chosen = facing
                .iter()
                .filter(|(_, region)| *region == nearest)
                .map(|(name, _)| *name)
                .collect();
        }
        let mut edges = Vec::new();
        for name in chosen {
            let (region, _, url, admin) = all_edges
                .iter()
                .find(|(_, edge, _, _)| edge == name)
                .expect("chosen from the deployment's edges");
            let Some(url) = url else {
                return Err(TargetError::NoAddress {
                    edge: name.to_owned(),
                    service,
                });
            };
            edges.push(Edge {
                name: name.to_owned(),
                region: region.clone(),
                url: url.clone(),
                admin: admin.clone(),
                credential: credential(deployment, name),
            });
        }
        per_region.push(edges);
    }
    let all_edges = all_edges
        .into_iter()
        .filter_map(|(region, name, url, admin)| {
            Some(Edge {
                credential: credential(deployment, &name),
                name,
                region,
                url: url.or_else(|| admin.clone())?,
                admin,
            })
        })
        .collect();
    Ok(Targets {
        per_region,
        all_edges,
    })
}

/// Targets for edges named directly in the scenario.
pub fn direct(
    edges: &std::collections::BTreeMap<String, Vec<String>>,
    clients: &[ClientRegion],
) -> Targets {
    let mut all_edges = Vec::new();
    let per_region = clients
        .iter()
        .map(|client| {
            edges
                .get(&client.name)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(index, url)| {
                    let edge = Edge {
                        name: format!("{}#{index}", client.name),
                        region: client.name.clone(),
                        url: url.clone(),
                        admin: None,
                        credential: None,
                    };
                    all_edges.push(edge.clone());
                    edge
                })
                .collect()
        })
        .collect();
    Targets {
        per_region,
        all_edges,
    }
}

/// The configured address of a node's service (useful when nothing was announced).
pub fn configured_addr(deployment: &Deployment, node: &str, service: &str) -> Option<SocketAddr> {
    deployment
        .node(node)?
        .listeners()
        .into_iter()
        .find(|(label, addr)| *label == service && addr.port() != 0)
        .map(|(_, addr)| addr)
}
