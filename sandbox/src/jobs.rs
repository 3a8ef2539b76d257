//! Jobs: what was submitted, their state machine, their captured output, and the table of
//! jobs the API reads (finished jobs are kept for `keep_finished`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

pub use edgebox_wire::sandbox::{
    JobLimits as Limits, JobState, Language, OutputStream as Stream,
};
use edgebox_wire::sandbox::{JobHead, JobStatus, JobView};

/// A job's resolved limits from the configured ones.
pub fn limits_from_config(limits: &edgebox_config::JobLimits) -> Limits {
    Limits {
        wall_ms: limits.wall.as_millis() as u64,
        cpu_ms: limits.cpu.as_millis() as u64,
        memory_mb: limits.memory / (1024 * 1024),
        output_bytes: limits.output,
    }
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Bytes,
}

/// A run of output on one stream: `start..end` of that stream's buffer.
#[derive(Debug, Clone, Copy)]
struct Segment {
    stream: Stream,
    start: usize,
    end: usize,
}

/// How far a subscriber has read the output: a segment and the byte offset (in that
/// segment's stream) it has sent up to.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutputCursor {
    segment: usize,
    offset: usize,
}

/// Interleavings of stdout and stderr kept at most. Consecutive writes to one stream
/// extend one segment, so only alternating writes create segments; bounding them bounds
/// the bookkeeping of a guest alternating single bytes.
const MAX_SEGMENTS: usize = 65_536;

/// Why the host stopped a guest before it finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    WallTime,
    CpuTime,
    Output,
    Cancelled,
    Scratch,
}

/// Sentinel for "no current line" in [`Job::current_line`].
const NO_LINE: i64 = -1;

/// One submitted job, shared between the API, the job runner and its guest's host hooks.
pub struct Job {
    pub id: String,
    pub language: Language,
    pub limits: Limits,
    pub scratch: bool,
    pub submitted_at: Instant,
    inner: Mutex<JobInner>,
    current_line: AtomicI64,
    /// Epoch ticks the guest has spent executing wasm (≈ CPU milliseconds).
    pub cpu_ticks: AtomicU64,
    cancel_requested: AtomicBool,
    pub cancelled: Notify,
    /// Set by the output streams when a limit is crossed; the epoch callback stops the guest.
    pub stop: Mutex<Option<StopReason>>,
    pub stop_flag: AtomicBool,
    /// Bumped on every change so that WebSocket subscribers wake up.
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct JobInner {
    state: JobState,
    started: Option<(Instant, OffsetDateTime)>,
    finished: Option<Instant>,
    exit_code: Option<i32>,
    output: [Vec<u8>; 2],
    segments: Vec<Segment>,
    truncated: bool,
    error: Option<String>,
}

/// The final outcome the runner reports.
#[derive(Debug)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

impl Job {
    pub fn new(id: String, language: Language, limits: Limits, scratch: bool) -> Self {
        Self {
            id,
            language,
            limits,
            scratch,
            submitted_at: Instant::now(),
            inner: Mutex::new(JobInner {
                state: JobState::Queued,
                started: None,
                finished: None,
                exit_code: None,
                output: [Vec::new(), Vec::new()],
                segments: Vec::new(),
                truncated: false,
                error: None,
            }),
            current_line: AtomicI64::new(NO_LINE),
            cpu_ticks: AtomicU64::new(0),
            cancel_requested: AtomicBool::new(false),
            cancelled: Notify::new(),
            stop: Mutex::new(None),
            stop_flag: AtomicBool::new(false),
            changes: watch::Sender::new(0),
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn state(&self) -> JobState {
        self.inner.lock().unwrap().state
    }

    pub fn current_line(&self) -> Option<u32> {
        let line = self.current_line.load(Ordering::Relaxed);
        (line > 0).then_some(line as u32)
    }

    pub fn set_current_line(&self, line: Option<u32>) {
        let line = line.map_or(NO_LINE, i64::from);
        self.current_line.store(line, Ordering::Relaxed);
    }

    /// Asks the guest to stop for `reason`; the first reason wins.
    pub fn request_stop(&self, reason: StopReason) {
        let mut stop = self.stop.lock().unwrap();
        if stop.is_none() {
            *stop = Some(reason);
        }
        self.stop_flag.store(true, Ordering::Release);
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().unwrap()
    }

    /// Cancels a queued or running job. Returns false when it had already finished.
    pub fn cancel(&self) -> bool {
        if self.state().is_final() {
            return false;
        }
        self.cancel_requested.store(true, Ordering::Release);
        self.request_stop(StopReason::Cancelled);
        self.cancelled.notify_waiters();
        self.cancelled.notify_one();
        true
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire)
    }

    pub fn mark_running(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.state = JobState::Running;
        inner.started = Some((Instant::now(), OffsetDateTime::now_utc()));
        drop(inner);
        self.changed();
    }

    pub fn finish(&self, outcome: Outcome) {
        let mut inner = self.inner.lock().unwrap();
        if inner.state.is_final() {
            return;
        }
        inner.state = outcome.state;
        inner.exit_code = outcome.exit_code;
        inner.error = outcome.error;
        inner.finished = Some(Instant::now());
        if inner.started.is_none() {
            inner.started = Some((Instant::now(), OffsetDateTime::now_utc()));
        }
        drop(inner);
        self.changed();
    }

    /// Appends guest output, keeping at most `limits.output_bytes` per stream. Returns
    /// false when some of it was dropped.
    pub fn push_output(&self, stream: Stream, data: &[u8]) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let index = stream as usize;
        let kept = inner.output[index].len();
        let room = (self.limits.output_bytes as usize).saturating_sub(kept);
        let mut keep = data.len().min(room);
        let extends_last = inner
            .segments
            .last()
            .is_some_and(|segment| segment.stream == stream);
        if keep > 0 && !extends_last && inner.segments.len() >= MAX_SEGMENTS {
            keep = 0;
        }
        if keep > 0 {
            inner.output[index].extend_from_slice(&data[..keep]);
            let end = kept + keep;
            match inner.segments.last_mut() {
                Some(segment) if segment.stream == stream => segment.end = end,
                _ => inner.segments.push(Segment {
                    stream,
                    start: kept,
                    end,
                }),
            }
        }
        let complete = keep == data.len();
        if !complete {
            inner.truncated = true;
        }
        drop(inner);
        if keep > 0 {
            self.changed();
        }
        complete
    }

    pub fn finished_at(&self) -> Option<Instant> {
        self.inner.lock().unwrap().finished
    }

    /// Output produced after `cursor`, in order, advancing the cursor.
    pub fn output_since(&self, cursor: &mut OutputCursor) -> Vec<Chunk> {
        let inner = self.inner.lock().unwrap();
        let mut chunks = Vec::new();
        for (i, segment) in inner.segments.iter().enumerate().skip(cursor.segment) {
            let from = if i == cursor.segment {
                segment.start.max(cursor.offset)
            } else {
                segment.start
            };
            if from < segment.end {
                chunks.push(Chunk {
                    stream: segment.stream,
                    data: Bytes::copy_from_slice(
                        &inner.output[segment.stream as usize][from..segment.end],
                    ),
                });
            }
            *cursor = OutputCursor {
                segment: i,
                offset: segment.end,
            };
        }
        chunks
    }

    /// Everything kept of one stream so far.
    pub fn output(&self, stream: Stream) -> Vec<u8> {
        self.inner.lock().unwrap().output[stream as usize].clone()
    }

    /// The short status sent over the WebSocket at least every 100 ms.
    pub fn status(&self) -> JobStatus {
        let inner = self.inner.lock().unwrap();
        JobStatus {
            id: self.id.clone(),
            state: inner.state,
            start_time: start_time(&inner),
            runtime_ms: runtime_ms(&inner),
            cpu_ms: self.cpu_ticks.load(Ordering::Relaxed),
            current_line: self.current_line(),
        }
    }

    /// Everything `GET /v1/jobs/{id}` shows but the output.
    pub fn head(&self) -> JobHead {
        let inner = self.inner.lock().unwrap();
        JobHead {
            id: self.id.clone(),
            language: self.language,
            state: inner.state,
            start_time: start_time(&inner),
            runtime_ms: runtime_ms(&inner),
            cpu_ms: self.cpu_ticks.load(Ordering::Relaxed),
            current_line: self.current_line(),
            exit_code: inner.exit_code,
            truncated: inner.truncated,
            limits: self.limits,
            scratch: self.scratch,
            error: inner.error.clone(),
        }
    }

    /// The whole job as `GET /v1/jobs/{id}` shows it.
    pub fn view(&self) -> JobView {
        let head = self.head();
        let inner = self.inner.lock().unwrap();
        let collect =
            |stream: Stream| String::from_utf8_lossy(&inner.output[stream as usize]).into_owned();
        JobView {
            head,
            stdout: collect(Stream::Stdout),
            stderr: collect(Stream::Stderr),
        }
    }
}

fn start_time(inner: &JobInner) -> Option<String> {
    inner.started.map(|(_, at)| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    })
}

fn runtime_ms(inner: &JobInner) -> u64 {
    match (inner.started, inner.finished) {
        (Some((start, _)), Some(end)) => end.duration_since(start).as_millis() as u64,
        (Some((start, _)), None) => start.elapsed().as_millis() as u64,
        _ => 0,
    }
}

/// Every job the daemon knows, by id, with counters per final state.
#[derive(Default)]
pub struct JobTable {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    finished: Mutex<HashMap<JobState, u64>>,
    pub submitted: AtomicU64,
    pub rejected_busy: AtomicU64,
}

impl JobTable {
    pub fn insert(&self, job: Arc<Job>) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        self.jobs.lock().unwrap().insert(job.id.clone(), job);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    pub fn record_finished(&self, state: JobState) {
        *self.finished.lock().unwrap().entry(state).or_default() += 1;
    }

    /// Jobs currently in the table, counted by state.
    pub fn counts(&self) -> HashMap<JobState, u64> {
        let mut counts = HashMap::new();
        for job in self.jobs.lock().unwrap().values() {
            *counts.entry(job.state()).or_default() += 1;
        }
        counts
    }

    /// Finished jobs since start, by final state.
    pub fn finished_totals(&self) -> HashMap<JobState, u64> {
        self.finished.lock().unwrap().clone()
    }

    /// Forgets jobs that finished more than `keep` ago.
    pub fn expire(&self, keep: Duration) {
        self.jobs.lock().unwrap().retain(|_, job| {
            job.finished_at()
                .is_none_or(|finished| finished.elapsed() < keep)
        });
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().unwrap().values().cloned().collect()
    }
}
