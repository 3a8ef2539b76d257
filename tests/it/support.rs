//! Starting real edgebox daemons for tests and waiting on conditions, never on time.

#![allow(dead_code)] // each test module uses its own part of the support

pub mod etcd;
pub mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Regions and a disabled latency model, for configs that do not test geography.
pub const ONE_REGION: &str = "[regions.local]\n\n[latency]\nenabled = false\n";

/// The `edgebox` binary under test.
pub fn edgebox_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgebox"))
}

/// Runs `edgebox ARGS...` to completion.
pub fn edgebox(args: &[&str]) -> std::process::Output {
    Command::new(edgebox_bin())
        .args(args)
        .env_remove("EDGEBOX_CONFIG")
        .output()
        .expect("running edgebox")
}

/// [`edgebox`] run in the directory `cwd` (for arguments that are relative paths).
pub fn edgebox_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(edgebox_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("EDGEBOX_CONFIG")
        .output()
        .expect("running edgebox")
}

/// A scratch directory holding a deployment file and its data directory.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("edgebox-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` under the directory, creating parents, and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// Writes a deployment file; its data directory is `data/` next to it.
    pub fn config(&self, toml: &str) -> PathBuf {
        let text = format!("[deployment]\nname = \"test\"\ndata_dir = \"data\"\n\n{toml}");
        self.write("edgebox.toml", text)
    }
}

/// One running daemon process. Killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub node: String,
    addrs: HashMap<String, SocketAddr>,
    log_path: PathBuf,
    config: PathBuf,
    announcements: mpsc::Receiver<(String, String, SocketAddr)>,
}

impl Daemon {
    /// Starts `edgebox ROLE --config CONFIG --node NODE` and waits until it has announced
    /// every service in `services` (e.g. `["http"]`), or panics with its log.
    pub fn start(role: &str, config: &Path, node: &str, services: &[&str]) -> Self {
        Self::start_with(role, config, node, services, &[])
    }

    pub fn start_with(
        role: &str,
        config: &Path,
        node: &str,
        services: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_through(
            Command::new(edgebox_bin()),
            role,
            config,
            node,
            services,
            env,
        )
    }

    /// Like [`Daemon::start_with`], with `launcher` running the binary: a command that
    /// ends by exec'ing its arguments (e.g. `ip netns exec NS <edgebox>`), so that the
    /// child's pid is the daemon's.
    pub fn start_through(
        mut command: Command,
        role: &str,
        config: &Path,
        node: &str,
        services: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log_path = config.with_file_name(format!("{node}.{}.log", unique()));
        let log = std::fs::File::create(&log_path).expect("create daemon log");
        command
            .args([role, "--config"])
            .arg(config)
            .args(["--node", node])
            .env_remove("EDGEBOX_CONFIG")
            .env(
                "EDGEBOX_LOG",
                std::env::var("EDGEBOX_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn edgebox daemon");
        let stdout = child.stdout.take().expect("daemon stdout");
        let (tx, announcements) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(announcement) = edgebox_node::parse_announcement(&line)
                    && tx.send(announcement).is_err()
                {
                    break;
                }
            }
        });
        let mut daemon = Self {
            child: Some(child),
            node: node.to_owned(),
            addrs: HashMap::new(),
            log_path,
            config: config.to_path_buf(),
            announcements,
        };
        daemon.wait_for(services, Duration::from_secs(120));
        daemon
    }

    /// Waits until the daemon (possibly restarted by a test) has announced `services`.
    pub fn wait_for(&mut self, services: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !services
            .iter()
            .all(|service| self.addrs.contains_key(*service))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .announcements
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((node, service, addr)) if node == self.node => {
                    self.addrs.insert(service, addr);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self
                        .child
                        .as_mut()
                        .and_then(|child| child.try_wait().ok().flatten())
                    {
                        panic!(
                            "{} exited with {status} before announcing {services:?}\n{}",
                            self.node,
                            self.logs()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "{} did not announce {services:?} within {timeout:?}\n{}",
                            self.node,
                            self.logs()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().map(|child| child.wait());
                    panic!(
                        "{} closed stdout ({status:?}) before announcing {services:?}\n{}",
                        self.node,
                        self.logs()
                    );
                }
            }
        }
    }

    /// The address a service is bound to.
    pub fn addr(&self, service: &str) -> SocketAddr {
        *self
            .addrs
            .get(service)
            .unwrap_or_else(|| panic!("{} has no {service} listener", self.node))
    }

    /// `http://ADDR` of a service.
    pub fn url(&self, service: &str) -> String {
        format!("http://{}", self.addr(service))
    }

    /// This node's credential, as the node wrote it (or `edgebox up` minted it) under
    /// its data directory: what the control plane presents to call the node.
    pub fn credential(&self) -> String {
        let deployment = edgebox_config::load_file(&self.config).expect("test config loads");
        edgebox_node::credentials::ensure(&deployment, &self.node).expect("node credential")
    }

    /// `Bearer <credential>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.credential())
    }

    /// A [`client`] that sends this node's credential with every request.
    pub fn authed_client(&self) -> reqwest::Client {
        authed_client(&self.credential())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status, up to `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id(), libc_sigterm());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for daemon") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "{} did not exit within {timeout:?} of SIGTERM\n{}",
                    self.node,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.node, self.logs());
        }
    }
}

fn libc_sigterm() -> i32 {
    15
}

/// Sends a signal with the `kill` command, keeping the tests free of libc bindings.
pub fn signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Blocking variant of [`eventually`] for tests without a runtime.
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Installs rustls' ring provider once, so that TLS clients can be built.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The credential of `node` of the deployment in `config`, minted with its node key
/// (for tests that need another node's, or a wrong one).
pub fn credential_of(config: &Path, node: &str) -> String {
    let deployment = edgebox_config::load_file(config).expect("test config loads");
    edgebox_node::credentials::ensure(&deployment, node).expect("node credential")
}

/// A [`client`] that sends `Authorization: Bearer <credential>` with every request.
pub fn authed_client(credential: &str) -> reqwest::Client {
    install_crypto();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}")
            .parse()
            .expect("header value"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("build HTTP client")
}

/// A plain HTTP client: no proxy, no automatic decompression, short timeouts.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

/// A client trusting only `ca_pem`, resolving `names` to `addr`.
pub fn tls_client(ca_pem: &[u8], names: &[&str], addr: SocketAddr) -> reqwest::Client {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()]);
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder.build().unwrap()
}

/// A test certificate authority (rcgen) and the leaves it signs.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(
                params,
                rcgen::KeyPair::generate().unwrap(),
            )
            .unwrap(),
        }
    }

    pub fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A leaf for `names`, as (cert PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
