//! Deployments the simulator starts itself: every node as a child process
//! (`edgebox ROLE --config FILE --node NAME`, as `edgebox up` runs them, through the
//! same [`Supervisor`]), ready once each has announced its listeners and each edge
//! answers its admin `/healthz`, stopped with SIGTERM (then SIGKILL after a deadline).
//! Each node's output goes to a log file that error messages quote.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use edgebox_config::{Deployment, Role};
use edgebox_node::supervisor::{ChildSpec, Event, Output, Supervisor};
use tokio_util::sync::CancellationToken;

use super::SimError;

/// A running deployment started by the simulator.
pub struct Started {
    supervisor: Supervisor,
    /// The deployment the nodes run (its data directory holds their credentials).
    pub deployment: Deployment,
    /// `(node, service)` -> bound address.
    pub addrs: BTreeMap<(String, String), SocketAddr>,
}

/// Starts every node of `deployment` (read from `config_path`) and waits until all are
/// ready, a node fails, `timeout` passes, or `cancel` fires.
pub async fn start(
    exe: &Path,
    config_path: &Path,
    deployment: &Deployment,
    log_dir: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Started, SimError> {
    std::fs::create_dir_all(log_dir).map_err(|source| SimError::Io {
        what: format!("creating {}", log_dir.display()),
        source,
    })?;
    let mut started = Started {
        supervisor: Supervisor::new(),
        deployment: deployment.clone(),
        addrs: BTreeMap::new(),
    };
    let mut nodes: Vec<_> = deployment.nodes.iter().collect();
    // Origins first, then shields, then the edges in front of them.
    nodes.sort_by_key(|node| match &node.role {
        Role::Origin(_) => 0,
        Role::Edge(edge) if edge.parent.is_none() => 1,
        _ => 2,
    });
    // Credentials before any node starts, as `edgebox up` does: edges' admin `/stats`
    // is read with them.
    for node in &nodes {
        edgebox_node::credentials::ensure(deployment, &node.name).map_err(|error| {
            SimError::Deployment(format!(
                "preparing the credential of {}: {error}",
                node.name
            ))
        })?;
    }
    let mut logs = BTreeMap::new();
    for node in nodes {
        let log_path = log_dir.join(format!("{}.log", node.name));
        logs.insert(node.name.clone(), log_path.clone());
        let spec = ChildSpec {
            name: node.name.clone(),
            program: exe.to_path_buf(),
            args: vec![
                node.role_name().into(),
                "--config".into(),
                config_path.into(),
                "--node".into(),
                node.name.clone().into(),
            ],
            env_remove: vec!["EDGEBOX_CONFIG".to_owned()],
            output: Output::LogFile(log_path),
        };
        let _ = std::fs::remove_file(logs[&node.name].as_path());
        if let Err(source) = started.supervisor.spawn(&spec) {
            started.stop(Duration::from_secs(10)).await;
            return Err(SimError::Io {
                what: format!("starting node {}", node.name),
                source,
            });
        }
    }

    let expected: usize = deployment
        .nodes
        .iter()
        .map(|node| node.listeners().len())
        .sum();
    let deadline = tokio::time::Instant::now() + timeout;
    while started.addrs.len() < expected {
        tokio::select! {
            _ = cancel.cancelled() => {
                started.stop(Duration::from_secs(10)).await;
                return Err(SimError::Interrupted);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<String> = deployment.nodes.iter()
                    .flat_map(|node| node.listeners().into_iter().map(move |(service, _)| (node.name.clone(), service.to_owned())))
                    .filter(|key| !started.addrs.contains_key(key))
                    .map(|(node, service)| format!("{node}/{service}"))
                    .collect();
                started.stop(Duration::from_secs(10)).await;
                return Err(SimError::Deployment(format!(
                    "not ready after {timeout:?}; still waiting for {}", missing.join(", ")
                )));
            }
            event = started.supervisor.next_event() => match event {
                Some(Event::Listening { node, service, addr, .. }) => {
                    started.addrs.insert((node, service), addr);
                }
                Some(Event::Exited { child: node, status, .. }) => {
                    let log = logs.get(&node).map(|path| tail(path, 15)).unwrap_or_default();
                    started.stop(Duration::from_secs(10)).await;
                    return Err(SimError::Deployment(format!(
                        "node {node} exited ({status}) before announcing its listeners; its log ends:\n{log}"
                    )));
                }
                None => break,
            }
        }
    }

    // Edges answer their admin health check once they can serve.
    edgebox_node::install_crypto();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|err| SimError::Deployment(format!("building an HTTP client: {err}")))?;
    for (node, _) in deployment.edges() {
        let Some(admin) = started.addrs.get(&(node.name.clone(), "admin".to_owned())) else {
            continue;
        };
        let url = format!("http://{admin}/healthz");
        loop {
            let healthy = client
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                break;
            }
            if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
                started.stop(Duration::from_secs(10)).await;
                if cancel.is_cancelled() {
                    return Err(SimError::Interrupted);
                }
                return Err(SimError::Deployment(format!(
                    "edge {} did not become healthy at {url} within {timeout:?}",
                    node.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(started)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|line| format!("    | {line}\n"))
        .collect()
}

impl Started {
    pub fn addr(&self, node: &str, service: &str) -> Option<SocketAddr> {
        self.addrs
            .get(&(node.to_owned(), service.to_owned()))
            .copied()
    }

    /// SIGTERM to every node, then SIGKILL whatever is left at the deadline.
    pub async fn stop(&mut self, deadline: Duration) {
        self.supervisor.stop(&[], deadline, None).await;
    }
}
