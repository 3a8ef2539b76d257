//! `edgebox up`: run a whole deployment as supervised child processes.
//!
//! Each node runs as `edgebox <role> --node NAME` under the workspace's one
//! [`Supervisor`] (own process group, so a Ctrl-C in the terminal reaches only `up`,
//! which then stops the nodes in order and within a deadline; a second Ctrl-C kills
//! them at once). Children announce their bound listeners on stdout (see
//! `edgebox_node::announce`); `up` prints the table once every node has announced, and
//! restarts a node that exits on its own, with exponential backoff.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgebox_config::{Deployment, Node, Role};
use edgebox_node::backoff::Backoff;
use edgebox_node::supervisor::{ChildSpec, Event, Output, Supervisor};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deployment file. Without it, the embedded default deployment is started.
    #[arg(long, short, value_name = "FILE", env = "EDGEBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Start only these nodes (repeatable); by default every node of the deployment.
    #[arg(long = "only", value_name = "NODE")]
    pub only: Vec<String>,
    /// How long to wait for every node to announce its listeners.
    #[arg(long, default_value = "120s", value_parser = humantime_arg)]
    pub ready_timeout: Duration,
    /// How long stopping nodes get before they are killed.
    #[arg(long, default_value = "15s", value_parser = humantime_arg)]
    pub stop_timeout: Duration,
}

fn humantime_arg(text: &str) -> Result<Duration, String> {
    text.parse::<edgebox_config::units::Duration>()
        .map(|duration| duration.get())
}

/// Backoff between restarts of a crashing node; reset once it has run this long.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let deployment = match super::load_deployment(args.config.clone()) {
        Ok(deployment) => deployment,
        Err(code) => return Ok(code),
    };
    for name in &args.only {
        if deployment.node(name).is_none() {
            eprintln!(
                "edgebox up: --only {name:?}: no such node in {}",
                deployment.source
            );
            return Ok(ExitCode::from(64));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the supervisor's runtime")?;
    runtime.block_on(supervise(args, deployment))
}

struct Supervised {
    node: Node,
    /// Pid of the running process; `None` while it waits to be restarted.
    pid: Option<u32>,
    started: Instant,
    backoff: Backoff,
    restart_at: Option<tokio::time::Instant>,
    restarts: u32,
}

async fn supervise(args: Args, deployment: Deployment) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the edgebox executable")?;
    std::fs::create_dir_all(&deployment.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            deployment.data_dir.display()
        )
    })?;

    let mut nodes: Vec<Node> = deployment
        .nodes
        .iter()
        .filter(|node| args.only.is_empty() || args.only.contains(&node.name))
        .cloned()
        .collect();
    // Origins first so that edges find them healthy; the control plane last so that it
    // finds every node up.
    nodes.sort_by_key(|node| match node.role {
        Role::Origin(_) => 0,
        Role::Edge(ref edge) if edge.parent.is_none() => 1,
        Role::Edge(_) => 2,
        Role::Sandbox(_) => 3,
        Role::ControlPlane(_) => 4,
    });

    println!(
        "edgebox: starting deployment {:?} ({} nodes) from {}",
        deployment.name,
        nodes.len(),
        deployment.source
    );
    println!("edgebox: data directory {}", deployment.data_dir.display());

    // Handlers first: a Ctrl-C that arrives while nodes are being started is kept and
    // stops them, instead of killing `up` with the default action and orphaning the
    // nodes already started.
    let mut signals = edgebox_node::shutdown::StopSignals::install()
        .context("installing the SIGINT/SIGTERM handlers")?;

    // Each node's credential (and the deployment's node key) exist before any node
    // starts, so nodes and the control plane agree on them from the first request.
    for node in &nodes {
        edgebox_node::credentials::ensure(&deployment, &node.name)
            .with_context(|| format!("preparing the credential of node {}", node.name))?;
    }

    let mut supervisor = Supervisor::new();
    let mut supervised: BTreeMap<String, Supervised> = BTreeMap::new();
    for node in nodes {
        let pid = supervisor
            .spawn(&node_spec(&exe, args.config.as_ref(), &node))
            .with_context(|| format!("starting node {}", node.name))?;
        supervised.insert(
            node.name.clone(),
            Supervised {
                node,
                pid: Some(pid),
                started: Instant::now(),
                backoff: Backoff::new(BACKOFF_START, BACKOFF_MAX),
                restart_at: None,
                restarts: 0,
            },
        );
    }

    let expected: usize = supervised.values().map(|s| s.node.listeners().len()).sum();
    let mut bound: BTreeMap<(String, String), SocketAddr> = BTreeMap::new();
    let ready_deadline = tokio::time::Instant::now() + args.ready_timeout;
    let mut announced_ready = false;

    loop {
        let next_restart = supervised.values().filter_map(|s| s.restart_at).min();
        tokio::select! {
            _ = signals.recv() => break,
            _ = tokio::time::sleep_until(ready_deadline), if !announced_ready => {
                let missing: Vec<String> = supervised
                    .values()
                    .flat_map(|s| s.node.listeners().into_iter().map(move |(service, _)| (s.node.name.clone(), service)))
                    .filter(|(node, service)| !bound.contains_key(&(node.clone(), service.to_string())))
                    .map(|(node, service)| format!("{node}/{service}"))
                    .collect();
                eprintln!("edgebox up: not ready after {:?}; still waiting for: {}", args.ready_timeout, missing.join(", "));
                announced_ready = true;
            }
            _ = sleep_until_opt(next_restart) => {
                let now = tokio::time::Instant::now();
                for entry in supervised.values_mut() {
                    if entry.restart_at.is_some_and(|at| at <= now) {
                        entry.restart_at = None;
                        entry.restarts += 1;
                        eprintln!("edgebox up: restarting {} (restart #{})", entry.node.name, entry.restarts);
                        match supervisor.spawn(&node_spec(&exe, args.config.as_ref(), &entry.node)) {
                            Ok(pid) => {
                                entry.pid = Some(pid);
                                entry.started = Instant::now();
                            }
                            Err(error) => {
                                eprintln!("edgebox up: cannot restart {}: {error:#}", entry.node.name);
                                entry.restart_at = Some(now + entry.backoff.next_delay());
                            }
                        }
                    }
                }
            }
            Some(event) = supervisor.next_event() => match event {
                Event::Listening { node, service, addr, .. } => {
                    bound.insert((node, service), addr);
                    if !announced_ready && bound.len() >= expected {
                        announced_ready = true;
                        print_table(&supervised, &bound, &deployment);
                    }
                }
                Event::Exited { child: node, status, .. } => {
                    if let Some(entry) = supervised.get_mut(&node) {
                        entry.pid = None;
                        if entry.started.elapsed() >= STABLE_AFTER {
                            entry.backoff.reset();
                        }
                        let delay = entry.backoff.next_delay();
                        eprintln!("edgebox up: node {node} exited ({status}); restarting in {delay:?}");
                        entry.restart_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
            },
        }
    }

    println!(
        "edgebox: stopping {} nodes (deadline {:?})",
        supervised.len(),
        args.stop_timeout
    );
    // A second Ctrl-C (or SIGTERM) while stopping kills what is left at once.
    let escalate = CancellationToken::new();
    {
        let escalate = escalate.clone();
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("edgebox up: second signal; killing the nodes that are left");
            escalate.cancel();
        });
    }
    let clean = stop_all(
        &mut supervisor,
        &mut supervised,
        args.stop_timeout,
        &escalate,
    )
    .await;
    println!("edgebox: stopped");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How `up` runs a node: `edgebox ROLE --node NAME [--config FILE]`, output prefixed.
fn node_spec(exe: &std::path::Path, config: Option<&PathBuf>, node: &Node) -> ChildSpec {
    let mut args: Vec<std::ffi::OsString> = vec![
        node.role_name().into(),
        "--node".into(),
        node.name.clone().into(),
    ];
    if let Some(config) = config {
        args.push("--config".into());
        args.push(config.into());
    }
    ChildSpec {
        name: node.name.clone(),
        program: exe.to_path_buf(),
        args,
        env_remove: vec!["EDGEBOX_CONFIG".to_owned()],
        output: Output::Prefixed,
    }
}

fn print_table(
    supervised: &BTreeMap<String, Supervised>,
    bound: &BTreeMap<(String, String), SocketAddr>,
    deployment: &Deployment,
) {
    println!();
    println!(
        "  {:<12} {:<14} {:<10} {:<8} {:<8} ADDRESS",
        "NODE", "ROLE", "REGION", "PID", "SERVICE"
    );
    let mut rows: Vec<&Supervised> = supervised.values().collect();
    rows.sort_by_key(|s| (s.node.role_name(), s.node.name.clone()));
    for entry in rows {
        for (service, configured) in entry.node.listeners() {
            let addr = bound
                .get(&(entry.node.name.clone(), service.to_owned()))
                .copied()
                .unwrap_or(configured);
            let scheme = if service == "https" { "https" } else { "http" };
            let pid = entry
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
            println!(
                "  {:<12} {:<14} {:<10} {:<8} {:<8} {scheme}://{addr}",
                entry.node.name,
                entry.node.role_name(),
                entry.node.region,
                pid,
                service
            );
        }
    }
    println!();
    if let Some(cp) = supervised
        .values()
        .find(|s| matches!(s.node.role, Role::ControlPlane(_)))
    {
        let addr = bound
            .get(&(cp.node.name.clone(), "api".to_owned()))
            .copied();
        if let Some(addr) = addr {
            println!("edgebox: dashboard and API at http://{addr}/ (try `edgebox status`)");
        }
        for token in &deployment.control_plane.tokens {
            if let edgebox_config::TokenSecret::File(path) = &token.secret {
                println!("edgebox: {} token in {}", token.name, path.display());
            }
        }
        println!(
            "edgebox: node credentials (for calling a node's admin or API port yourself) in {}",
            deployment
                .node_data_dir("NODE")
                .join(edgebox_node::credentials::CREDENTIAL_FILE)
                .display()
        );
    }
    println!(
        "edgebox: all {} nodes ready (deployment {:?}); Ctrl-C stops them",
        supervised.len(),
        deployment.name
    );
}

/// Sends SIGTERM to every node's process group, front to back, waits up to `deadline`
/// (or until `escalate`) for them to exit, then SIGKILLs what is left. Returns whether
/// every node stopped on its own.
async fn stop_all(
    supervisor: &mut Supervisor,
    supervised: &mut BTreeMap<String, Supervised>,
    deadline: Duration,
    escalate: &CancellationToken,
) -> bool {
    // Front to back: the control plane and edges before origins, so that in-flight
    // requests can still reach their origins while edges drain.
    let mut order: Vec<&mut Supervised> = supervised.values_mut().collect();
    order.sort_by_key(|s| match s.node.role {
        Role::ControlPlane(_) => 0,
        Role::Edge(ref edge) if edge.parent.is_some() => 1,
        Role::Edge(_) => 2,
        Role::Sandbox(_) => 3,
        Role::Origin(_) => 4,
    });
    for entry in &mut order {
        entry.restart_at = None;
        entry.pid = None;
    }
    let names: Vec<&str> = order.iter().map(|s| s.node.name.as_str()).collect();
    let outcome = supervisor.stop(&names, deadline, Some(escalate)).await;
    for (node, status) in &outcome.failed {
        eprintln!("edgebox up: {node} stopped ({status})");
    }
    for node in &outcome.killed {
        eprintln!("edgebox up: {node} did not stop within {deadline:?}; killed it");
    }
    outcome.clean()
}
