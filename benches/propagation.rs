//! Config propagation at fleet size: how long after `PUT /v1/config` returns a new
//! version has been applied by each of 100 node agents, with the file store (one
//! control plane) and with etcd behind two control-plane replicas, in the same run.
//!
//! The agents are the real node runtime (`edgebox_node::agent`, what every daemon runs)
//! in this one process: 100 independent agents, each with its own HTTP client and
//! connections, its own node name and credential, each validating every version with
//! `edgebox_config::parse` as a node does, then reporting it. The control planes are real
//! `edgebox control-plane` processes and etcd is a real etcd (Debian's `etcd-server`).
//! With etcd, half the agents list replica A first and half replica B, and every PUT
//! goes to A: the agents on B learn of it through B's etcd watch.
//!
//! A sample is the time from the PUT's response arriving here to an agent's apply
//! callback having run (the agent has parsed and validated the version; its status
//! report follows). The watch is a long poll answered when the version is published:
//! no polling interval is involved.
//!
//! Run: `cargo bench --bench propagation` (release profile; `--profile dev` for a quick
//! run on the debug build, which the report says). `AGENTS=N`, `ROUNDS=N`,
//! `EDGEBOX_BIN=path` change the defaults (100, 30, the binary built with the bench).
//! Results: `benches/results/propagation.md`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgebox_node::agent::{AgentConfig, AgentHandle};

const OPERATOR: &str = "propagation-bench-operator-token";

fn main() {
    // reqwest is built without a default TLS provider (as everywhere in edgebox).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agents: usize = env_or("AGENTS", 100);
    let rounds: usize = env_or("ROUNDS", 30);
    let binary = std::env::var("EDGEBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_edgebox")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load_before = load_average();
    let mut rows = Vec::new();
    for store in [Store::File, Store::Etcd] {
        eprintln!(
            "propagation: {} store, {agents} agents, {rounds} rounds",
            store.name()
        );
        let result = runtime.block_on(measure(&binary, store, agents, rounds));
        eprintln!(
            "  p50 {:?} p99 {:?} max {:?}",
            result.percentile(50.0),
            result.percentile(99.0),
            result.max()
        );
        rows.push((store, result));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/propagation.md");
    let load = format!("{load_before} before, {} after", load_average());
    std::fs::write(&out, report(&binary, agents, rounds, &rows, &load)).unwrap();
    eprintln!("wrote {}", out.display());
}

#[derive(Clone, Copy)]
enum Store {
    File,
    Etcd,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::File => "file",
            Store::Etcd => "etcd",
        }
    }
}

struct Samples {
    /// Every agent's delay for every round.
    all: Vec<Duration>,
    /// Agents that had applied the version before the PUT's answer arrived here
    /// (counted as 0).
    early: usize,
}

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.all.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.all.iter().copied().max().unwrap_or_default()
    }
}

async fn measure(binary: &Path, store: Store, agents: usize, rounds: usize) -> Samples {
    let dir = tempfile::Builder::new()
        .prefix("edgebox-propagation-")
        .tempdir()
        .unwrap();
    let etcd = matches!(store, Store::Etcd).then(|| EtcdProcess::start(dir.path()));
    let replicas = match store {
        Store::File => vec![("cp-a", free_port())],
        Store::Etcd => vec![("cp-a", free_port()), ("cp-b", free_port())],
    };
    let text = deployment(
        &replicas,
        agents,
        etcd.as_ref().map(|e| e.endpoint.as_str()),
    );
    let config = dir.path().join("edgebox.toml");
    std::fs::write(&config, &text).unwrap();
    let deployment = edgebox_config::load_file(&config).unwrap();
    let processes: Vec<Process> = replicas
        .iter()
        .map(|(name, _)| Process::control_plane(binary, &config, name, dir.path()))
        .collect();
    let urls: Vec<String> = replicas
        .iter()
        .map(|(_, port)| format!("http://127.0.0.1:{port}"))
        .collect();

    // When each agent applied each version.
    let applied: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Arc::default();
    let mut handles: Vec<AgentHandle> = Vec::new();
    for i in 0..agents {
        let name = format!("agent-{i:03}");
        let mut order = urls.clone();
        order.rotate_left(i % urls.len());
        let config = AgentConfig {
            control_planes: order,
            node: name.clone(),
            credential: Some(edgebox_node::credentials::ensure(&deployment, &name).unwrap()),
            base_dir: deployment.base_dir.clone(),
            addresses: BTreeMap::new(),
            poll_timeout: Duration::from_secs(25),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        };
        let applied = Arc::clone(&applied);
        handles.push(edgebox_node::agent::spawn(
            config,
            move |_deployment, version| {
                let at = Instant::now();
                applied.lock().unwrap().entry(version).or_default().push(at);
                async { Ok(()) }
            },
        ));
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_until_applied(&applied, 1, agents, Duration::from_secs(60)).await;

    let mut samples = Samples {
        all: Vec::new(),
        early: 0,
    };
    for round in 0..rounds {
        let body = serde_json::json!({ "toml": format!("{text}\n# round {round}\n") });
        let response = http
            .put(format!("{}/v1/config", urls[0]))
            .bearer_auth(OPERATOR)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        let returned = Instant::now();
        assert!(status.is_success(), "PUT answered {status}: {answer}");
        let version = answer["version"].as_u64().unwrap();
        let times = wait_until_applied(&applied, version, agents, Duration::from_secs(30)).await;
        for at in times {
            match at.checked_duration_since(returned) {
                Some(delay) => samples.all.push(delay),
                None => {
                    samples.early += 1;
                    samples.all.push(Duration::ZERO);
                }
            }
        }
    }
    drop(handles);
    drop(processes);
    drop(etcd);
    samples
}

/// Waits (polling this process's own record, not the network) until `agents` agents
/// applied `version`; returns when each did.
async fn wait_until_applied(
    applied: &Mutex<HashMap<u64, Vec<Instant>>>,
    version: u64,
    agents: usize,
    timeout: Duration,
) -> Vec<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(times) = applied.lock().unwrap().get(&version)
            && times.len() >= agents
        {
            return times.clone();
        }
        assert!(
            Instant::now() < deadline,
            "version {version} did not reach {agents} agents within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn deployment(replicas: &[(&str, u16)], agents: usize, etcd: Option<&str>) -> String {
    let mut text = String::from(
        "[deployment]\nname = \"propagation\"\ndata_dir = \"data\"\n\n[regions.local]\n\n[latency]\nenabled = false\n",
    );
    for (name, port) in replicas {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{name}\"\nrole = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:{port}\"\n"
        ));
    }
    // Origins: the lightest role; the agents stand for them.
    for i in 0..agents {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"agent-{i:03}\"\nrole = \"origin\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[[control_plane.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n"
    ));
    if let Some(endpoint) = etcd {
        text.push_str(&format!(
            "\n[control_plane.store]\nbackend = \"etcd\"\nendpoints = [\"{endpoint}\"]\n"
        ));
    }
    text
}

/// A child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Starts `edgebox control-plane` and waits for its API announcement.
    fn control_plane(binary: &Path, config: &Path, node: &str, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
        let mut child = Command::new(binary)
            .args(["control-plane", "--config"])
            .arg(config)
            .args(["--node", node])
            .env("EDGEBOX_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{node} exited before announcing its API"))
                .unwrap();
            if let Some((_, service, _)) = edgebox_node::parse_announcement(&line)
                && service == "api"
            {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self(child)
    }
}

struct EtcdProcess {
    _process: Process,
    endpoint: String,
}

impl EtcdProcess {
    fn start(dir: &Path) -> Self {
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("bench={peer}"),
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server; scripts/ensure-deps.sh --test installs it)");
        let addr: SocketAddr = client.trim_start_matches("http://").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(addr) {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _process: Process(child),
            endpoint: client,
        }
    }
}

fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The 1-minute load average: on a shared machine, what else wanted the cores.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn report(
    binary: &Path,
    agents: usize,
    rounds: usize,
    rows: &[(Store, Samples)],
    load: &str,
) -> String {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let etcd_version = Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let when = httpdate::fmt_http_date(std::time::SystemTime::now());
    // The agents' parsing runs in this binary: its profile matters for the figures.
    let profile = if cfg!(debug_assertions) {
        "dev profile (`cargo bench --profile dev --bench propagation`: dependencies at \
         opt-level 2, the edgebox crates, the agents' config parsing among them, at opt-level 0)"
    } else {
        "release profile (`cargo bench --bench propagation`)"
    };
    let mut out = format!(
        "# Config propagation to {agents} agents\n\n\
         Generated on {when} (commit {commit}), {profile}.\n\n\
         What is measured: the time from `PUT /v1/config` returning to each of {agents} node agents \
         having applied the new version (its apply callback ran, after it parsed and validated the \
         text as every node does; its status report follows). {rounds} versions per store, one after \
         the other; every agent's delay for every version is a sample ({} per store).\n\n\
         Agents: the real node runtime (`edgebox_node::agent`) in one process — {agents} independent \
         agents, each with its own HTTP client, connections, node name and credential, long-polling \
         `/v1/config/watch` (push: the poll is answered when the version is published; no polling \
         interval). Control planes: real `edgebox control-plane` processes (`{}`). \
         File store: one control plane. etcd: two replicas on one etcd ({etcd_version}); half the \
         agents use replica A, half replica B, every PUT goes to A, so half the samples cross \
         A → etcd → B's watch.\n\n\
         Machine: 2 CPU cores shared by the control planes, etcd and the {agents} agents (each \
         version is parsed and validated {agents} times in this process), plus whatever else ran (1-minute load average {load}).\n\n\
         | store | samples | p50 | p99 | max | applied before the PUT's answer arrived |\n\
         |---|---:|---:|---:|---:|---:|\n",
        agents * rounds,
        binary.display()
    );
    for (store, samples) in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            store.name(),
            samples.all.len(),
            ms(samples.percentile(50.0)),
            ms(samples.percentile(99.0)),
            ms(samples.max()),
            samples.early
        ));
    }
    out.push_str(
        "\nAgents that applied a version before the PUT's answer reached the bench are counted as 0: \
         the control plane publishes a version before it answers.\n\nTarget (issue 16): p99 < 1 s and \
         max < 2 s with both stores.\n",
    );
    out
}
