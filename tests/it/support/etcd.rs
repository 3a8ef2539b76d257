//! A real etcd (Debian's `etcd-server`, installed by `scripts/ensure-deps.sh --test`)
//! on loopback ports of its own, for the control plane's etcd store.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually_blocking;

/// One single-member etcd cluster in a scratch directory. Killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("edgebox-etcd-")
            .tempdir()
            .expect("temp dir");
        let mut etcd = Self {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `[control_plane.store]` for this etcd, under `prefix`.
    pub fn store_section(&self) -> String {
        format!(
            "\n[control_plane.store]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\ntimeout = \"1s\"\n",
            self.endpoint()
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts (again) on the same data directory and ports, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let binary = which_etcd();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary)
            .arg("--name")
            .arg("edgebox-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("edgebox-test={peer}")])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let port = self.client_port;
        eventually_blocking("etcd to answer /health", Duration::from_secs(30), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited with {status}:\n{}", self.logs());
            }
            health_answer(port)
                .contains("\"health\":\"true\"")
                .then_some(())
        });
    }

    /// Kills etcd at once (SIGKILL), as a crash or a lost machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- etcd log ----\n{}", self.logs());
        }
    }
}

fn which_etcd() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `etcd` on PATH: the etcd store tests need Debian's etcd-server \
                 (`scripts/ensure-deps.sh --test` installs it; `make test` runs that)"
            )
        })
}

/// `GET /health` over a plain socket (blocking, no client stack needed).
fn health_answer(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
