//! The one child-process supervisor, behind `edgebox up` and the simulator's own
//! deployments.
//!
//! Each child runs in its own process group, so that a terminal's Ctrl-C reaches only
//! the supervisor (which then stops the children in order, within a deadline) and so
//! that stopping a child also stops whatever it started (a runtime download, say): the
//! supervisor signals the whole group. Children also get `PR_SET_PDEATHSIG`, so a
//! supervisor killed outright leaves nothing behind. Their stdout is read for listener
//! announcements ([`crate::announce`]); everything else they print is forwarded with
//! the child's name or written to a log file.
//!
//! Policy (what to start, when to restart, what "ready" means) stays with the caller:
//! this module starts, watches, signals and reaps.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The name events and forwarded lines carry (a node name).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Environment variables the child must not inherit.
    pub env_remove: Vec<String>,
    pub output: Output,
}

/// Where a child's output goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// To this process's stdout and stderr, each line prefixed with the child's name.
    Prefixed,
    /// Appended to this file (stdout and stderr both; announcements too).
    LogFile(PathBuf),
}

/// Something a child did.
#[derive(Debug, Clone)]
pub enum Event {
    /// The child announced a bound listener.
    Listening {
        child: String,
        node: String,
        service: String,
        addr: SocketAddr,
    },
    /// The child exited (and was reaped).
    Exited {
        child: String,
        /// As the OS reports it, e.g. `exit status: 0` or `signal: 9 (SIGKILL)`.
        status: String,
        success: bool,
    },
}

/// How a [`Supervisor::stop`] went.
#[derive(Debug, Default)]
pub struct StopOutcome {
    /// Children that had to be killed (deadline passed or stop escalated).
    pub killed: Vec<String>,
    /// Children that exited on their own with a failure status.
    pub failed: Vec<(String, String)>,
}

impl StopOutcome {
    pub fn clean(&self) -> bool {
        self.killed.is_empty()
    }
}

/// Running children and the events they produce.
pub struct Supervisor {
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Running children by name -> pid (also their process group id).
    running: BTreeMap<String, u32>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Self {
            events_tx,
            events,
            running: BTreeMap::new(),
        }
    }

    /// Starts a child; returns its pid. Must be called inside a tokio runtime.
    pub fn spawn(&mut self, spec: &ChildSpec) -> std::io::Result<u32> {
        let mut command = Command::new(&spec.program);
        command.args(&spec.args);
        for var in &spec.env_remove {
            command.env_remove(var);
        }
        let log = match &spec.output {
            Output::Prefixed => None,
            Output::LogFile(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match &log {
                Some(file) => Stdio::from(file.try_clone()?),
                None => Stdio::piped(),
            })
            .kill_on_drop(true)
            .process_group(0);
        // The death signal is tied to the thread that forks, so the supervisor must
        // spawn from a thread that lives as long as it does (a runtime worker or the
        // thread blocked on the runtime, never a blocking-pool thread that may retire).
        // If the supervisor died between the fork and the prctl, the signal will never
        // come: the child sees its parent changed and refuses to start.
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only calls prctl
        // and getppid, which are async-signal-safe; it allocates nothing on the success
        // path and takes no locks.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                    return Err(std::io::Error::other("the supervisor exited during spawn"));
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("child exited at once"))?;
        let name = spec.name.clone();

        let stdout = child.stdout.take().expect("stdout is piped");
        let events = self.events_tx.clone();
        let out_name = name.clone();
        let mut out_log = log.map(tokio::fs::File::from_std);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let announced = crate::parse_announcement(&line);
                if let Some((node, service, addr)) = announced.clone() {
                    let _ = events.send(Event::Listening {
                        child: out_name.clone(),
                        node,
                        service,
                        addr,
                    });
                }
                match &mut out_log {
                    Some(file) => {
                        let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                    }
                    None if announced.is_none() => println!("{out_name:>10} | {line}"),
                    None => {}
                }
            }
        });
        if let Some(stderr) = child.stderr.take() {
            let err_name = name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{err_name:>10} | {line}");
                }
            });
        }
        // The watcher owns the child and reaps it; the supervisor signals it by pid.
        let events = self.events_tx.clone();
        let exit_name = name.clone();
        tokio::spawn(async move {
            let (status, success) = match child.wait().await {
                Ok(status) => (status.to_string(), status.success()),
                Err(error) => (format!("wait failed: {error}"), false),
            };
            let _ = events.send(Event::Exited {
                child: exit_name,
                status,
                success,
            });
        });
        tracing::debug!(child = %name, pid, "started");
        self.running.insert(name, pid);
        Ok(pid)
    }

    /// The pid of a running child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running.get(name).copied()
    }

    /// Names of the children still running.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }

    /// The next event; `None` never happens while the supervisor lives (it holds a
    /// sender), so callers select on it alongside their own timers.
    pub async fn next_event(&mut self) -> Option<Event> {
        let event = self.events.recv().await?;
        if let Event::Exited { child, .. } = &event {
            self.running.remove(child);
        }
        Some(event)
    }

    /// Sends `signal` to a running child's whole process group.
    pub fn signal(&self, name: &str, signal: Signal) {
        if let Some(pid) = self.pid(name) {
            signal_group(pid, signal);
        }
    }

    /// Stops every running child: SIGTERM to each process group in `order` (names not
    /// listed come after), then waits until all have exited, `deadline` passes, or
    /// `escalate` fires (a second Ctrl-C), and SIGKILLs the groups still running.
    /// Events other than exits that arrive meanwhile are dropped.
    pub async fn stop(
        &mut self,
        order: &[&str],
        deadline: Duration,
        escalate: Option<&CancellationToken>,
    ) -> StopOutcome {
        let mut names: Vec<String> = order
            .iter()
            .filter(|name| self.running.contains_key(**name))
            .map(|name| (*name).to_owned())
            .collect();
        for name in self.running.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        for name in &names {
            self.signal(name, Signal::SIGTERM);
        }
        let mut outcome = StopOutcome::default();
        let until = tokio::time::Instant::now() + deadline;
        let never = CancellationToken::new();
        let escalate = escalate.unwrap_or(&never);
        while !self.running.is_empty() {
            tokio::select! {
                event = self.next_event() => match event {
                    Some(Event::Exited { child, status, success }) => {
                        if !success {
                            outcome.failed.push((child, status));
                        }
                    }
                    Some(Event::Listening { .. }) => {}
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
                () = escalate.cancelled() => break,
            }
        }
        let left: Vec<(String, u32)> = self.running.iter().map(|(n, p)| (n.clone(), *p)).collect();
        for (name, pid) in left {
            tracing::warn!(child = %name, "did not stop in time; killing its process group");
            signal_group(pid, Signal::SIGKILL);
            outcome.killed.push(name);
        }
        // Reap what was killed, briefly: SIGKILL cannot be ignored.
        let reap_until = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(reap_until, self.next_event()).await {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        outcome
    }
}

/// A supervisor that goes away without [`Supervisor::stop`] (an early return, a
/// panic) takes its children's whole process groups with it: nothing it started may
/// outlive it.
impl Drop for Supervisor {
    fn drop(&mut self) {
        for (name, pid) in &self.running {
            tracing::debug!(child = %name, pid, "supervisor dropped; killing its process group");
            signal_group(*pid, Signal::SIGKILL);
        }
    }
}

fn signal_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // Each child leads its own group (process_group(0)), so its pgid is its pid.
    if nix::sys::signal::killpg(Pid::from_raw(pid), signal).is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that starts a grandchild and prints the grandchild's pid.
    fn spawn_family(supervisor: &mut Supervisor, log: &std::path::Path) -> (u32, u32) {
        let spec = ChildSpec {
            name: "family".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "sleep 1000 & echo $!; wait".into()],
            env_remove: Vec::new(),
            output: Output::LogFile(log.to_path_buf()),
        };
        let child = supervisor.spawn(&spec).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|line| line.trim().parse().ok())
            {
                return (child, pid);
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild pid");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn gone(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
    }

    async fn wait_gone(pid: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !gone(pid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pid} still running: {:?}",
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Multi-threaded: the log is written by the supervisor's reader task while the
    // test thread waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_or_dropping_the_supervisor_stops_grandchildren_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut supervisor = Supervisor::new();
        let (child, grandchild) = spawn_family(&mut supervisor, &dir.path().join("a.log"));
        supervisor.stop(&[], Duration::from_secs(5), None).await;
        wait_gone(child).await;
        wait_gone(grandchild).await;

        let mut supervisor = Supervisor::new();
        let (child, grandchild) = spawn_family(&mut supervisor, &dir.path().join("b.log"));
        drop(supervisor);
        wait_gone(child).await;
        wait_gone(grandchild).await;
    }
}
