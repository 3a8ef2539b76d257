//! The sandbox nodes as the job relay sees them: each node's load, polled from its
//! `GET /v1/queue` every [`POLL_INTERVAL`] plus the jobs this control plane placed
//! there since; which node holds each job this control plane placed; and the
//! submissions of placed jobs that have not started yet, so that the queued jobs of a
//! node that goes down (or restarts) are submitted again elsewhere, under the same id.
//!
//! Invariants:
//! - New jobs go to the node with the fewest outstanding jobs among those that are up
//!   (ties in turn); nodes that are down are tried only when no node is up.
//! - A job keeps its id wherever it runs: the control plane names every job it places
//!   (`wire::sandbox::JOB_ID_HEADER`), so a moved job answers to the id its client has.
//! - What this holds is bounded: [`MAX_ROUTES`] job routes (oldest forgotten first; a
//!   forgotten job is found by asking every node, as before), and kept submissions
//!   [`MAX_PENDING_BYTES`] in total (a submission that does not fit is not kept: that
//!   job cannot be moved). A submission is dropped as soon as a poll shows its job
//!   left the queue, or after [`MAX_MOVES`] attempts to move it that nodes refused
//!   (while no node is in rotation, it waits for one).
//! - Each replica of the control plane keeps its own view: loads come from the nodes,
//!   so replicas agree on them up to their own placements since the last poll.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgebox_config::Role;
use edgebox_wire::control_plane::SandboxNodeStats;
use edgebox_wire::sandbox::{JOB_ID_HEADER, QueueReport};
use futures_util::future::join_all;

use crate::api::describe;
use crate::state::AppState;

/// How often every sandbox node's load is polled: a node that stops answering is out
/// of rotation within about this long (connection refused) or two polls (timeouts).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// Polls in a row that time out (or fail other than by a refused connection) before a
/// node is taken out of rotation.
const FAILURES_TO_DOWN: u32 = 2;
/// Job routes remembered at most.
pub const MAX_ROUTES: usize = 100_000;
/// Bytes of kept submissions at most, over all nodes.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Attempts to move one job before its submission is given up.
pub const MAX_MOVES: u32 = 3;
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A sandbox node jobs can go to: its name, address and the credential calls present.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub node: String,
    pub addr: SocketAddr,
    pub credential: String,
}

/// The sandbox nodes of the current deployment with a known address, in config order;
/// `None` when the deployment has no sandbox node at all.
pub fn sandboxes(state: &AppState) -> Option<Vec<Sandbox>> {
    let current = state.current();
    let mut any = false;
    let known = current
        .deployment
        .nodes
        .iter()
        .filter(|node| matches!(node.role, Role::Sandbox(_)))
        .filter_map(|node| {
            any = true;
            Some(Sandbox {
                addr: state.service_addr(node, "api")?,
                credential: state.credential_for(node),
                node: node.name.clone(),
            })
        })
        .collect();
    any.then_some(known)
}

#[derive(Debug, Default)]
pub struct Fleet {
    inner: Mutex<Inner>,
    /// Breaks ties between equally loaded nodes in turn.
    turn: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<String, NodeState>,
    routes: HashMap<String, Route>,
    /// Every id of `routes` once, oldest first.
    order: VecDeque<String>,
    pending_bytes: usize,
}

#[derive(Debug, Default)]
struct NodeState {
    /// `None` until the first poll answers or fails.
    up: Option<bool>,
    error: Option<String>,
    failures: u32,
    running: u64,
    queued: u64,
    /// `placed` when the last answered poll was sent: placements since are not in
    /// `running + queued` yet.
    placed_at_poll: u64,
    instance: Option<String>,
    placed: u64,
    moved_away: u64,
    /// When the node last accepted a job: a poll sent before then that failed says
    /// nothing about the node any more.
    accepted_at: Option<Instant>,
}

impl NodeState {
    fn outstanding(&self) -> u64 {
        self.running + self.queued + (self.placed - self.placed_at_poll)
    }

    /// Whether new jobs may go here: up, or not polled yet.
    fn in_rotation(&self) -> bool {
        self.up != Some(false)
    }
}

#[derive(Debug)]
struct Route {
    node: String,
    pending: Option<Pending>,
}

/// A placed job's submission, kept until a poll shows it started.
#[derive(Debug)]
struct Pending {
    body: Bytes,
    placed_at: Instant,
    moves: u32,
    /// A move is in flight: no second one starts.
    moving: bool,
}

/// A job to submit again elsewhere.
#[derive(Debug)]
pub struct ToMove {
    pub id: String,
    pub from: String,
    pub body: Bytes,
}

/// Where a job is, as far as this control plane knows.
pub enum Whereabouts {
    Unknown,
    On(String),
    /// On a node that is out of rotation because it stopped answering.
    Down {
        node: String,
        reason: String,
    },
}

impl Fleet {
    /// `known` ordered for a new job: nodes in rotation by outstanding jobs (ties in
    /// turn), then the others (tried only when every node in rotation refused).
    pub fn order(&self, mut known: Vec<Sandbox>, exclude: Option<&str>) -> Vec<Sandbox> {
        known.retain(|sandbox| Some(sandbox.node.as_str()) != exclude);
        if known.is_empty() {
            return known;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % known.len();
        known.rotate_left(turn);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = |sandbox: &Sandbox| match inner.nodes.get(&sandbox.node) {
            Some(node) => (!node.in_rotation(), node.outstanding()),
            None => (false, 0),
        };
        // Stable: equal keys keep the rotated order.
        known.sort_by_key(key);
        known
    }

    /// Records that job `id` was accepted by `node`; `body` is its submission, kept
    /// (within the budget) until it starts, for a job that may be moved.
    pub fn placed(&self, node: &str, id: &str, body: Option<Bytes>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let state = inner.nodes.entry(node.to_owned()).or_default();
        state.placed += 1;
        state.accepted_at = Some(Instant::now());
        // It answered: back in rotation without waiting for the next poll (a job placed
        // on a node while it was marked down, when every node was, must not be reported
        // lost, nor moved as stranded).
        if state.up == Some(false) && state.error.as_deref() != Some("draining") {
            tracing::info!(node, "sandbox accepted a job: in rotation");
            state.up = Some(true);
            state.error = None;
            state.failures = 0;
        }
        let pending = body.and_then(|body| {
            if inner.pending_bytes + body.len() > MAX_PENDING_BYTES {
                tracing::warn!(job = %id, bytes = body.len(), "submission budget full: this job cannot be moved if its node goes down");
                return None;
            }
            inner.pending_bytes += body.len();
            Some(Pending {
                body,
                placed_at: Instant::now(),
                moves: 0,
                moving: false,
            })
        });
        inner.insert_route(id, node, pending);
    }

    pub fn whereabouts(&self, id: &str) -> Whereabouts {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(route) = inner.routes.get(id) else {
            return Whereabouts::Unknown;
        };
        match inner.nodes.get(&route.node) {
            Some(node) if node.up == Some(false) => Whereabouts::Down {
                node: route.node.clone(),
                reason: node.error.clone().unwrap_or_default(),
            },
            _ => Whereabouts::On(route.node.clone()),
        }
    }

    /// A call to `node` could not connect: out of rotation now. Returns the queued jobs
    /// placed there, to move.
    pub fn unreachable(&self, node: &str, reason: String) -> Vec<ToMove> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.down(node, reason)
    }

    /// Applies one poll of `node` sent at `sent` (with `placed_then`, its placement
    /// count at that moment). Returns the jobs to move and the ids of duplicates to
    /// cancel on this node (jobs queued here that were moved elsewhere meanwhile).
    fn polled(
        &self,
        node: &str,
        sent: Instant,
        placed_then: u64,
        result: Result<QueueReport, PollError>,
    ) -> (Vec<ToMove>, Vec<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let answered_since = inner
            .nodes
            .get(node)
            .and_then(|state| state.accepted_at)
            .is_some_and(|accepted| accepted > sent);
        if result.is_err() && answered_since {
            // A poll sent before the node came up (or before it last answered) failed:
            // stale news.
            return (Vec::new(), Vec::new());
        }
        let report = match result {
            Ok(report) => report,
            Err(PollError::Draining) => {
                let state = inner.nodes.entry(node.to_owned()).or_default();
                if state.up != Some(false) {
                    tracing::info!(node, "sandbox is draining: out of rotation");
                }
                state.up = Some(false);
                state.error = Some("draining".into());
                return (Vec::new(), Vec::new());
            }
            Err(PollError::Refused(reason)) => return (inner.down(node, reason), Vec::new()),
            Err(PollError::Other(reason)) => {
                let state = inner.nodes.entry(node.to_owned()).or_default();
                state.failures += 1;
                if state.failures >= FAILURES_TO_DOWN {
                    return (inner.down(node, reason), Vec::new());
                }
                return (Vec::new(), Vec::new());
            }
        };
        let queued: HashSet<&str> = report.queued_ids.iter().map(String::as_str).collect();
        let state = inner.nodes.entry(node.to_owned()).or_default();
        let restarted = state
            .instance
            .as_ref()
            .is_some_and(|before| *before != report.instance);
        if state.up != Some(true) {
            tracing::info!(node, "sandbox is up: in rotation");
        }
        state.up = Some(true);
        state.error = None;
        state.failures = 0;
        state.running = report.running;
        state.queued = report.queued;
        state.placed_at_poll = placed_then;
        state.instance = Some(report.instance.clone());
        let mut to_move = Vec::new();
        let mut started_bytes = 0;
        let mut duplicates = Vec::new();
        for id in &report.queued_ids {
            if let Some(route) = inner.routes.get(id)
                && route.node != node
            {
                duplicates.push(id.clone());
            }
        }
        for (id, route) in inner.routes.iter_mut() {
            if route.node != node {
                continue;
            }
            let Some(pending) = &mut route.pending else {
                continue;
            };
            if pending.placed_at >= sent || queued.contains(id.as_str()) || pending.moving {
                continue;
            }
            if restarted {
                // The node restarted: a job it had queued is gone with the old process.
                pending.moving = true;
                to_move.push(ToMove {
                    id: id.clone(),
                    from: node.to_owned(),
                    body: pending.body.clone(),
                });
            } else {
                // Started (or finished, or cancelled) there: nothing to move any more.
                started_bytes += pending.body.len();
                route.pending = None;
            }
        }
        inner.pending_bytes -= started_bytes;
        if restarted {
            tracing::warn!(
                node,
                jobs = to_move.len(),
                "sandbox restarted: submitting its queued jobs again"
            );
        }
        (to_move, duplicates)
    }

    /// Job `id` was accepted by `to` after `from` lost it.
    fn moved(&self, id: &str, from: &str, to: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.nodes.entry(from.to_owned()).or_default().moved_away += 1;
        inner.nodes.entry(to.to_owned()).or_default().placed += 1;
        if let Some(route) = inner.routes.get_mut(id) {
            route.node = to.to_owned();
            if let Some(pending) = &mut route.pending {
                pending.placed_at = Instant::now();
                pending.moving = false;
            }
        }
    }

    /// No node took job `id` this time (`tried`: some node was asked); after
    /// [`MAX_MOVES`] such tries it is given up.
    fn move_failed(&self, id: &str, tried: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0;
        if let Some(route) = inner.routes.get_mut(id)
            && let Some(pending) = &mut route.pending
        {
            pending.moving = false;
            pending.moves += u32::from(tried);
            if pending.moves >= MAX_MOVES {
                tracing::warn!(job = %id, node = %route.node, "job could not be moved to another sandbox; giving it up");
                freed = pending.body.len();
                route.pending = None;
            }
        }
        inner.pending_bytes -= freed;
    }

    /// Jobs still waiting on nodes that are down, to try moving again.
    fn stranded(&self) -> Vec<ToMove> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let down: HashSet<String> = inner
            .nodes
            .iter()
            .filter(|(_, node)| node.up == Some(false) && node.error.as_deref() != Some("draining"))
            .map(|(name, _)| name.clone())
            .collect();
        if down.is_empty() {
            return Vec::new();
        }
        let mut to_move = Vec::new();
        for (id, route) in inner.routes.iter_mut() {
            if let Some(pending) = &mut route.pending
                && !pending.moving
                && down.contains(&route.node)
            {
                pending.moving = true;
                to_move.push(ToMove {
                    id: id.clone(),
                    from: route.node.clone(),
                    body: pending.body.clone(),
                });
            }
        }
        to_move
    }

    fn placed_count(&self, node: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.nodes.get(node).map_or(0, |node| node.placed)
    }

    /// Every node's view for `/v1/stats` (its `jobs` left empty).
    pub fn snapshot(&self) -> BTreeMap<String, SandboxNodeStats> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .nodes
            .iter()
            .map(|(name, node)| {
                (
                    name.clone(),
                    SandboxNodeStats {
                        up: node.up != Some(false),
                        error: node.error.clone(),
                        running: node.running,
                        queued: node.queued,
                        outstanding: node.outstanding(),
                        jobs: BTreeMap::new(),
                        placed: node.placed,
                        moved_away: node.moved_away,
                    },
                )
            })
            .collect()
    }
}

impl Inner {
    fn insert_route(&mut self, id: &str, node: &str, pending: Option<Pending>) {
        // `order` holds each routed id once, oldest first.
        if let Some(route) = self.routes.get_mut(id) {
            route.node = node.to_owned();
            if let Some(old) = std::mem::replace(&mut route.pending, pending) {
                self.pending_bytes -= old.body.len();
            }
            return;
        }
        self.routes.insert(
            id.to_owned(),
            Route {
                node: node.to_owned(),
                pending,
            },
        );
        self.order.push_back(id.to_owned());
        while self.routes.len() > MAX_ROUTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(route) = self.routes.remove(&oldest)
                && let Some(pending) = route.pending
            {
                self.pending_bytes -= pending.body.len();
            }
        }
    }

    /// Takes `node` out of rotation; on the transition, hands back its queued jobs.
    fn down(&mut self, node: &str, reason: String) -> Vec<ToMove> {
        let state = self.nodes.entry(node.to_owned()).or_default();
        state.failures = state.failures.max(FAILURES_TO_DOWN);
        let was_down = state.up == Some(false) && state.error.as_deref() != Some("draining");
        state.up = Some(false);
        state.error = Some(reason.clone());
        state.running = 0;
        state.queued = 0;
        state.placed_at_poll = state.placed;
        if was_down {
            return Vec::new();
        }
        tracing::warn!(node, %reason, "sandbox unreachable: out of rotation, moving its queued jobs");
        let mut to_move = Vec::new();
        for (id, route) in self.routes.iter_mut() {
            if route.node == node
                && let Some(pending) = &mut route.pending
                && !pending.moving
            {
                pending.moving = true;
                to_move.push(ToMove {
                    id: id.clone(),
                    from: node.to_owned(),
                    body: pending.body.clone(),
                });
            }
        }
        to_move
    }
}

#[derive(Debug)]
enum PollError {
    /// The connection was refused: the process is gone.
    Refused(String),
    /// 503: shutting down; its jobs still finish there.
    Draining,
    Other(String),
}

/// Polls every sandbox node forever (until shutdown), moving jobs as nodes go down.
pub async fn run(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        let Some(known) = sandboxes(&state) else {
            continue;
        };
        let polls = known.into_iter().map(|sandbox| {
            let state = state.clone();
            async move {
                let placed_then = state.fleet.placed_count(&sandbox.node);
                let sent = Instant::now();
                let result = poll(&state, &sandbox).await;
                let (to_move, duplicates) =
                    state.fleet.polled(&sandbox.node, sent, placed_then, result);
                if !duplicates.is_empty() {
                    tokio::spawn(cancel_duplicates(state.clone(), sandbox, duplicates));
                }
                if !to_move.is_empty() {
                    tokio::spawn(move_jobs(state, to_move));
                }
            }
        });
        join_all(polls).await;
        let stranded = state.fleet.stranded();
        if !stranded.is_empty() {
            tokio::spawn(move_jobs(state.clone(), stranded));
        }
    }
}

async fn poll(state: &AppState, sandbox: &Sandbox) -> Result<QueueReport, PollError> {
    let response = state
        .http
        .get(format!("http://{}/v1/queue", sandbox.addr))
        .bearer_auth(&sandbox.credential)
        .timeout(POLL_TIMEOUT)
        .send()
        .await
        .map_err(|error| {
            if error.is_connect() && !error.is_timeout() {
                PollError::Refused(describe(&error))
            } else {
                PollError::Other(describe(&error))
            }
        })?;
    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Err(PollError::Draining);
    }
    if !response.status().is_success() {
        return Err(PollError::Other(format!(
            "/v1/queue answered {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|error| PollError::Other(format!("/v1/queue: {}", describe(&error))))
}

/// Submits `job` (its JSON `body`) to `sandbox` under its id.
pub async fn post_job(
    state: &AppState,
    sandbox: &Sandbox,
    path: &str,
    id: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    state
        .http
        .post(format!("http://{}{path}", sandbox.addr))
        .bearer_auth(&sandbox.credential)
        .header(JOB_ID_HEADER, id)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body)
        .send()
        .await
}

/// Submits each job again on another node in rotation (the least loaded that takes it).
pub async fn move_jobs(state: Arc<AppState>, jobs: Vec<ToMove>) {
    let mut jobs = VecDeque::from(jobs);
    while let Some(job) = jobs.pop_front() {
        let Some(known) = sandboxes(&state) else {
            state.fleet.move_failed(&job.id, false);
            continue;
        };
        // A restarted node may take its own jobs back; a down one may not.
        let exclude = match state.fleet.whereabouts(&job.id) {
            Whereabouts::Down { .. } => Some(job.from.as_str()),
            _ => None,
        };
        let candidates = state.fleet.order(known, exclude);
        let (mut moved, mut tried) = (false, false);
        for sandbox in candidates {
            if state.fleet.is_down(&sandbox.node) {
                continue;
            }
            tried = true;
            let answer = post_job(
                &state,
                &sandbox,
                "/v1/jobs",
                &job.id,
                job.body.clone(),
                SUBMIT_TIMEOUT,
            )
            .await;
            match answer {
                // 409: it is there already (an earlier attempt whose answer was lost).
                Ok(response)
                    if response.status().is_success()
                        || response.status() == reqwest::StatusCode::CONFLICT =>
                {
                    tracing::info!(job = %job.id, from = %job.from, to = %sandbox.node, "job moved to another sandbox");
                    state.fleet.moved(&job.id, &job.from, &sandbox.node);
                    moved = true;
                    break;
                }
                Ok(response) => {
                    tracing::warn!(job = %job.id, to = %sandbox.node, status = %response.status(), "sandbox did not take a moved job");
                }
                Err(error) if error.is_connect() && !error.is_timeout() => {
                    jobs.extend(state.fleet.unreachable(&sandbox.node, describe(&error)));
                }
                Err(error) => {
                    tracing::warn!(job = %job.id, to = %sandbox.node, error = %describe(&error), "moving a job failed");
                }
            }
        }
        if !moved {
            // With no node in rotation the job waits (its submission kept) for one to
            // come back; only refusals count towards giving up.
            state.fleet.move_failed(&job.id, tried);
        }
    }
}

/// Cancels jobs a node that came back still had queued but that run elsewhere now.
async fn cancel_duplicates(state: Arc<AppState>, sandbox: Sandbox, ids: Vec<String>) {
    for id in ids {
        let result = state
            .http
            .delete(format!("http://{}/v1/jobs/{id}", sandbox.addr))
            .bearer_auth(&sandbox.credential)
            .timeout(SUBMIT_TIMEOUT)
            .send()
            .await;
        tracing::info!(job = %id, node = %sandbox.node, ok = result.is_ok(), "cancelled a moved job's stale copy");
    }
}

impl Fleet {
    /// Out of rotation (polled or called, and found down or draining).
    pub fn is_down(&self, node: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .nodes
            .get(node)
            .is_some_and(|node| node.up == Some(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(node: &str) -> Sandbox {
        Sandbox {
            node: node.to_owned(),
            addr: "127.0.0.1:1".parse().unwrap(),
            credential: String::new(),
        }
    }

    fn report(node: &str, instance: &str, running: u64, queued: &[&str]) -> QueueReport {
        QueueReport {
            node: node.to_owned(),
            instance: instance.to_owned(),
            running,
            queued: queued.len() as u64,
            max_concurrent_jobs: 1,
            queue_length: 16,
            queued_ids: queued.iter().map(|id| id.to_string()).collect(),
        }
    }

    fn names(order: Vec<Sandbox>) -> Vec<String> {
        order.into_iter().map(|s| s.node).collect()
    }

    #[test]
    fn least_outstanding_first_ties_in_turn_down_nodes_last() {
        let fleet = Fleet::default();
        let all = || vec![sandbox("a"), sandbox("b"), sandbox("c")];
        // Equal: each node comes first in turn.
        let firsts: HashSet<String> = (0..3)
            .map(|_| names(fleet.order(all(), None))[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3);
        // a reports 3 outstanding, b gets one placement since its poll, c is down.
        let sent = Instant::now();
        fleet.polled("a", sent, 0, Ok(report("a", "i", 1, &["x", "y"])));
        fleet.polled("b", sent, 0, Ok(report("b", "i", 0, &[])));
        fleet.placed("b", "job-1", None);
        assert!(fleet.unreachable("c", "refused".into()).is_empty());
        for _ in 0..3 {
            assert_eq!(names(fleet.order(all(), None)), ["b", "a", "c"]);
        }
        assert_eq!(names(fleet.order(all(), Some("b"))), ["a", "c"]);
        let stats = fleet.snapshot();
        assert_eq!((stats["a"].outstanding, stats["b"].outstanding), (3, 1));
        assert!(!stats["c"].up && stats["c"].error.is_some());
    }

    #[test]
    fn submissions_are_kept_until_started_and_moved_when_lost() {
        let fleet = Fleet::default();
        let body = Bytes::from_static(b"{\"language\":\"wat\"}");
        fleet.placed("a", "started", Some(body.clone()));
        fleet.placed("a", "waiting", Some(body.clone()));
        fleet.placed("a", "run", None);
        assert_eq!(
            fleet
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_bytes,
            2 * body.len()
        );
        // A poll sent after both placements: one left the queue (started), one waits.
        let sent = Instant::now();
        let (to_move, duplicates) =
            fleet.polled("a", sent, 3, Ok(report("a", "first", 1, &["waiting"])));
        assert!(to_move.is_empty() && duplicates.is_empty());
        assert_eq!(
            fleet
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_bytes,
            body.len()
        );
        // The node goes down: only the waiting job is handed back, once.
        let to_move = fleet.unreachable("a", "connection refused".into());
        assert_eq!(
            to_move.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["waiting"]
        );
        assert!(fleet.unreachable("a", "again".into()).is_empty());
        assert!(matches!(
            fleet.whereabouts("waiting"),
            Whereabouts::Down { .. }
        ));
        fleet.moved("waiting", "a", "b");
        assert!(matches!(fleet.whereabouts("waiting"), Whereabouts::On(node) if node == "b"));
        assert_eq!(fleet.snapshot()["a"].moved_away, 1);
        // Back with its old queue: the stale copy of the moved job is a duplicate.
        let (_, duplicates) = fleet.polled(
            "a",
            Instant::now(),
            3,
            Ok(report("a", "first", 0, &["waiting"])),
        );
        assert_eq!(duplicates, ["waiting"]);
        // A restart (new instance) loses what was queued: handed back to move.
        fleet.placed("a", "queued-before-restart", Some(body.clone()));
        let sent = Instant::now();
        let (to_move, _) = fleet.polled("a", sent, 4, Ok(report("a", "second", 0, &[])));
        assert_eq!(to_move.len(), 1);
        assert_eq!(to_move[0].id, "queued-before-restart");
    }

    #[test]
    fn moves_refused_too_often_are_given_up_and_routes_are_bounded() {
        let fleet = Fleet::default();
        let body = Bytes::from_static(b"{}");
        fleet.placed("a", "job", Some(body));
        assert_eq!(fleet.unreachable("a", "refused".into()).len(), 1);
        // No node to ask: the job waits, however long.
        for _ in 0..10 {
            fleet.move_failed("job", false);
        }
        assert_eq!(fleet.stranded().len(), 1);
        for _ in 0..MAX_MOVES {
            fleet.move_failed("job", true);
        }
        assert!(fleet.stranded().is_empty());
        assert_eq!(
            fleet
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_bytes,
            0
        );

        // A submission larger than what is left of the budget is not kept.
        fleet.placed(
            "a",
            "huge",
            Some(Bytes::from(vec![b' '; MAX_PENDING_BYTES + 1])),
        );
        assert_eq!(
            fleet
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_bytes,
            0
        );

        for i in 0..MAX_ROUTES + 10 {
            fleet.placed("a", &format!("job-{i}"), None);
        }
        let inner = fleet.inner.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(inner.routes.len(), MAX_ROUTES);
        assert_eq!(inner.order.len(), MAX_ROUTES);
        assert!(!inner.routes.contains_key("job-0"));
    }
}
