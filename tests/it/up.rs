//! `edgebox up`: start, supervise and stop a deployment.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{ONE_REGION, TestDir, edgebox_bin, eventually_blocking, signal};

/// A running `edgebox up` and the rows of the table it printed.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// `(node, service)` -> (pid, address).
    rows: HashMap<(String, String), (u32, SocketAddr)>,
}

impl Up {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(edgebox_bin())
            .args(["up", "--config"])
            .arg(config)
            .env_remove("EDGEBOX_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn edgebox up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = Self {
            child,
            lines,
            rows: HashMap::new(),
        };
        up.read_table();
        up
    }

    /// Reads stdout up to the "all N nodes ready" line, collecting the table's rows.
    fn read_table(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("edgebox up did not report ready in time");
            if line.contains("nodes ready") {
                return;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [node, _role, _region, pid, service, url] = fields[..]
                && let Some(addr) = url.split("://").nth(1).and_then(|addr| addr.parse().ok())
                && let Ok(pid) = pid.parse()
            {
                self.rows
                    .insert((node.to_owned(), service.to_owned()), (pid, addr));
            }
        }
    }

    fn row(&self, node: &str, service: &str) -> (u32, SocketAddr) {
        *self
            .rows
            .get(&(node.to_owned(), service.to_owned()))
            .unwrap_or_else(|| panic!("no row for {node}/{service}: {:?}", self.rows))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn two_origins(dir: &TestDir, first_port: u16) -> std::path::PathBuf {
    dir.config(&format!(
        r#"{ONE_REGION}
[[nodes]]
name = "origin-a"
role = "origin"
region = "local"
listen = "127.0.0.1:{first_port}"

[[nodes]]
name = "origin-b"
role = "origin"
region = "local"
listen = "127.0.0.1:0"
"#
    ))
}

#[test]
fn up_starts_prints_and_stops_a_deployment() {
    let dir = TestDir::new();
    let config = two_origins(&dir, 0);
    let mut up = Up::start(&config);
    let (pid_a, addr_a) = up.row("origin-a", "http");
    let (pid_b, addr_b) = up.row("origin-b", "http");
    assert_ne!(
        addr_a.port(),
        0,
        "the table shows bound ports, not configured ones"
    );
    assert!(healthy(addr_a) && healthy(addr_b));

    signal(up.child.id(), 15);
    let status = eventually_blocking(
        "edgebox up to exit after SIGTERM",
        Duration::from_secs(20),
        || up.child.try_wait().unwrap(),
    );
    assert!(status.success(), "up exited with {status}");
    assert!(
        !alive(pid_a) && !alive(pid_b),
        "children must be stopped with the supervisor"
    );
    assert!(!healthy(addr_a));
}

#[test]
fn up_restarts_a_crashed_node() {
    let dir = TestDir::new();
    let port = free_port();
    let config = two_origins(&dir, port);
    let up = Up::start(&config);
    let (pid, addr) = up.row("origin-a", "http");
    assert!(healthy(addr));

    signal(pid, 9);
    eventually_blocking(
        "origin-a to be restarted and healthy again",
        Duration::from_secs(30),
        || (!alive(pid) && healthy(addr)).then_some(()),
    );
}

/// The next stdout line of `up` containing `needle`, within `timeout`.
fn wait_for_line(up: &Up, needle: &str, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match up.lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(error) => panic!("no line with {needle:?} from edgebox up: {error}"),
        }
    }
}

/// A node busy with a request drains for up to its own grace (8 s for an origin); a
/// second Ctrl-C while `up` waits for it kills what is left at once.
#[test]
fn a_second_ctrl_c_while_stopping_kills_what_is_left() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        r#"{ONE_REGION}
[[nodes]]
name = "slow"
role = "origin"
region = "local"
listen = "127.0.0.1:0"
delay = "60s"
"#
    ));
    let mut child = Command::new(edgebox_bin())
        .args(["up", "--stop-timeout", "60s", "--config"])
        .arg(&config)
        .env_remove("EDGEBOX_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn edgebox up");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut up = Up {
        child,
        lines,
        rows: HashMap::new(),
    };
    up.read_table();
    let (pid, addr) = up.row("slow", "http");

    // A request the origin holds for its 60 s delay: stopping has to wait for it.
    let (held_tx, held) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(addr).unwrap();
        let request = format!("GET /index.html HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let _ = held_tx.send(());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    });
    held.recv_timeout(Duration::from_secs(10)).unwrap();

    signal(up.child.id(), 2);
    wait_for_line(&up, "stopping", Duration::from_secs(10));
    assert!(
        alive(pid),
        "the origin drains its request instead of exiting"
    );
    let second = std::time::Instant::now();
    signal(up.child.id(), 2);
    let status = eventually_blocking(
        "edgebox up to exit after the second Ctrl-C",
        Duration::from_secs(20),
        || up.child.try_wait().unwrap(),
    );
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "the second Ctrl-C must not wait for the drain ({:?})",
        second.elapsed()
    );
    assert!(
        !status.success(),
        "a killed node is not a clean stop: {status}"
    );
    eventually_blocking("the origin to be gone", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    });
}

/// `up` killed outright (SIGKILL: no handler runs) takes its nodes with it: each
/// child asked the kernel for a signal when its parent dies.
#[test]
fn a_killed_up_leaves_no_node_behind() {
    let dir = TestDir::new();
    let config = two_origins(&dir, 0);
    let mut up = Up::start(&config);
    let (pid_a, addr_a) = up.row("origin-a", "http");
    let (pid_b, _) = up.row("origin-b", "http");
    assert!(healthy(addr_a));
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    eventually_blocking(
        "both nodes to exit after their supervisor was killed",
        Duration::from_secs(20),
        || (!alive(pid_a) && !alive(pid_b)).then_some(()),
    );
    assert!(!healthy(addr_a));
}
