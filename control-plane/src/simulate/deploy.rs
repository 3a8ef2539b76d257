//! Deployments the simulator starts itself: every node as a child process
//! (`edgebox ROLE --config FILE --node NAME`, as `edgebox up` runs them), ready once each
//! has announced its listeners and each edge answers its admin `/healthz`, stopped with
//! SIGTERM (then SIGKILL after a deadline). Each node's output goes to a log file that
//! error messages quote.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edgebox_config::{Deployment, Role};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::SimError;

/// A running deployment started by the simulator.
pub struct Started {
    children: Vec<(String, Child)>,
    /// `(node, service)` -> bound address.
    pub addrs: BTreeMap<(String, String), SocketAddr>,
}

enum Event {
    Listening(String, String, SocketAddr),
    /// The node's output closed: it exited.
    Exited(String),
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
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut started = Started {
        children: Vec::new(),
        addrs: BTreeMap::new(),
    };
    let mut nodes: Vec<_> = deployment.nodes.iter().collect();
    // Origins first, then shields, then the edges in front of them.
    nodes.sort_by_key(|node| match &node.role {
        Role::Origin(_) => 0,
        Role::Edge(edge) if edge.parent.is_none() => 1,
        _ => 2,
    });
    let mut logs = BTreeMap::new();
    for node in nodes {
        let log_path = log_dir.join(format!("{}.log", node.name));
        logs.insert(node.name.clone(), log_path.clone());
        let child = spawn(
            exe,
            config_path,
            &node.name,
            node.role_name(),
            &log_path,
            events_tx.clone(),
        )
        .await
        .map_err(|source| SimError::Io {
            what: format!("starting node {}", node.name),
            source,
        })?;
        started.children.push((node.name.clone(), child));
    }
    drop(events_tx);

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
            event = events.recv() => match event {
                Some(Event::Listening(node, service, addr)) => {
                    started.addrs.insert((node, service), addr);
                }
                Some(Event::Exited(node)) => {
                    let status = match started.children.iter_mut().find(|(name, _)| *name == node) {
                        Some((_, child)) => match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                            Ok(Ok(status)) => status.to_string(),
                            _ => "closed its output".to_owned(),
                        },
                        None => "closed its output".to_owned(),
                    };
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
    super::install_crypto();
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

async fn spawn(
    exe: &Path,
    config_path: &Path,
    node: &str,
    role: &str,
    log_path: &PathBuf,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<Child> {
    let log = std::fs::File::create(log_path)?;
    let mut command = Command::new(exe);
    command
        .arg(role)
        .arg("--config")
        .arg(config_path)
        .arg("--node")
        .arg(node)
        .env_remove("EDGEBOX_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .kill_on_drop(true)
        // Own process group: a terminal's Ctrl-C reaches the simulator only, which then
        // writes its report and stops the nodes itself.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl,
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            // If the simulator dies without stopping its nodes, they do not linger.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let name = node.to_owned();
    let mut log = tokio::fs::File::from_std(log);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((node, service, addr)) = edgebox_config::parse_announcement(&line) {
                let _ = events.send(Event::Listening(node, service, addr));
            }
            let _ = log.write_all(format!("{line}\n").as_bytes()).await;
        }
        // Stdout closes when the node exits (or closes it); report the exit then.
        let _ = events.send(Event::Exited(name));
    });
    Ok(child)
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

    /// SIGTERM to every node, front to back, then SIGKILL whatever is left at the deadline.
    pub async fn stop(&mut self, deadline: Duration) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let until = tokio::time::Instant::now() + deadline;
        for (name, child) in &mut self.children {
            match tokio::time::timeout_at(until, child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(node = %name, "did not stop within {deadline:?}; killing it");
                    let _ = child.kill().await;
                }
            }
        }
        self.children.clear();
    }
}
