//! Jobs: what was submitted, their state machine and their captured output. The table
//! of jobs the API reads, with its retention bounds, is [`table`]; output storage is
//! [`output`]; the streamed JSON view is [`view`].

pub mod output;
pub mod table;
pub mod view;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use edgebox_wire::sandbox::{
    CallbackAttempt, CallbackState, CallbackView, CaseResult, CompareMode, JobHead, JobStatus,
    RunningCase, SourceLocation, TestSummary, Verdict,
};
pub use edgebox_wire::sandbox::{JobLimits as Limits, JobState, Language, OutputStream as Stream};

pub use table::{JobTable, Retention};

use output::OutputBuf;
use view::Snapshot;

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
    /// Set once the final state is visible: what waits only for the end (`POST /v1/run`)
    /// wakes once, not on each of a judged job's ~3 changes per case, each a wake-up
    /// across threads.
    done: watch::Sender<bool>,
    /// Event subscribers connected now (bounded by `max_subscribers_per_job`).
    pub subscribers: AtomicUsize,
    /// The final `result` event's text while some subscriber is sending it, shared so
    /// that N subscribers of one finished job hold one copy, and none once they are done.
    result_text: Mutex<Weak<String>>,
    /// What the guest reads after the submitted stdin: closed unless interactive.
    pub stdin: crate::stdin::Pipe,
    /// The file names whose frames count as the submitted program's, as the guest has
    /// them (`<main>`, or `/app/...` for each file of a multi-file program).
    pub guest_files: Arc<Vec<Vec<u8>>>,
    /// Multi-file programs: the submitted paths, in the order of `guest_files`.
    pub file_paths: Arc<Vec<String>>,
    /// Index in `file_paths` of the file `current_line` is in.
    current_file: AtomicUsize,
    /// Jobs with a `callback_url`: its delivery (attempts are bounded by config).
    callback: Mutex<Option<CallbackView>>,
    /// Where the callback goes, as checked at submission.
    pub callback_target: Option<edgebox_node::webhook::Target>,
}

#[derive(Debug)]
struct JobInner {
    state: JobState,
    started: Option<(Instant, OffsetDateTime)>,
    finished: Option<Instant>,
    exit_code: Option<i32>,
    output: [OutputBuf; 2],
    segments: Vec<Segment>,
    truncated: bool,
    error: Option<String>,
    /// Set when the job finishes: its output takes no more writes.
    frozen: bool,
    /// Judged jobs: the cases judged so far.
    tests: Option<TestSummary>,
    /// Judged jobs: the cases running now (in the order they started, so the first is
    /// the lowest index) and the job each one's instance serves.
    running_cases: Vec<(RunningCase, CaseJob)>,
}

/// The job a judged job's running case is (shown in `Debug` by its id).
#[derive(Clone)]
pub struct CaseJob(pub Arc<Job>);

impl std::fmt::Debug for CaseJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.id)
    }
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
                output: [OutputBuf::default(), OutputBuf::default()],
                segments: Vec::new(),
                truncated: false,
                error: None,
                frozen: false,
                tests: None,
                running_cases: Vec::new(),
            }),
            current_line: AtomicI64::new(NO_LINE),
            cpu_ticks: AtomicU64::new(0),
            cancel_requested: AtomicBool::new(false),
            cancelled: Notify::new(),
            stop: Mutex::new(None),
            stop_flag: AtomicBool::new(false),
            changes: watch::Sender::new(0),
            done: watch::Sender::new(false),
            subscribers: AtomicUsize::new(0),
            result_text: Mutex::new(Weak::new()),
            stdin: crate::stdin::Pipe::default(),
            guest_files: Arc::new(vec![crate::pyline::SUBMITTED_FILENAME.to_vec()]),
            file_paths: Arc::new(Vec::new()),
            current_file: AtomicUsize::new(0),
            callback: Mutex::new(None),
            callback_target: None,
        }
    }

    /// Gives the job a callback to `target`, delivered when it ends.
    pub fn with_callback(mut self, target: edgebox_node::webhook::Target) -> Self {
        *self.callback.lock().unwrap_or_else(|p| p.into_inner()) = Some(CallbackView {
            url: target.url.clone(),
            state: CallbackState::Pending,
            attempts: Vec::new(),
        });
        self.callback_target = Some(target);
        self
    }

    /// Records a callback delivery attempt, and the delivery's state.
    pub fn record_callback(&self, attempt: CallbackAttempt, state: CallbackState) {
        if let Some(callback) = self
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            callback.attempts.push(attempt);
            callback.state = state;
        }
        self.changed();
    }

    /// Makes the job a multi-file program's: lines are reported in these files.
    pub fn with_files(mut self, paths: Arc<Vec<String>>, guest_files: Arc<Vec<Vec<u8>>>) -> Self {
        self.file_paths = paths;
        self.guest_files = guest_files;
        self
    }

    /// Records the file (an index in `guest_files`) and line being executed.
    pub fn set_location(&self, location: Option<(usize, u32)>) {
        if let Some((file, _)) = location {
            self.current_file.store(file, Ordering::Relaxed);
        }
        self.set_current_line(location.map(|(_, line)| line));
    }

    /// Multi-file programs: the file and line being executed.
    fn current_location(&self) -> Option<SourceLocation> {
        let line = self.current_line()?;
        let path = self
            .file_paths
            .get(self.current_file.load(Ordering::Relaxed))?;
        Some(SourceLocation {
            path: path.clone(),
            line,
        })
    }

    /// Makes the job interactive: its stdin stays open after the `submitted` bytes
    /// until the events socket closes it.
    pub fn interactive(mut self, submitted: u64) -> Self {
        self.stdin = crate::stdin::Pipe::interactive(submitted);
        self
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn state(&self) -> JobState {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).state
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
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() {
            *stop = Some(reason);
        }
        self.stop_flag.store(true, Ordering::Release);
    }

    /// Records why the job will end badly without stopping the guest (a refused
    /// scratch write: the guest sees the error and may go on); the first reason wins.
    pub fn note_stop(&self, reason: StopReason) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() {
            *stop = Some(reason);
        }
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.state = JobState::Running;
        inner.started = Some((Instant::now(), OffsetDateTime::now_utc()));
        drop(inner);
        self.changed();
    }

    /// Finishes the job: freezes its output (it never changes again, so the spare
    /// capacity it grew with is dropped and what the retention budget counts is what is
    /// held), lets `retire` account for it with its final state and bytes, and only then
    /// makes the final state visible, so that whoever sees the job finished also sees it
    /// counted and retained. A second call does nothing.
    pub fn finish(&self, outcome: Outcome, retire: impl FnOnce(JobState, u64)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state.is_final() || inner.frozen {
            return;
        }
        inner.frozen = true;
        for output in &mut inner.output {
            output.freeze();
        }
        inner.segments.shrink_to_fit();
        inner.error = outcome.error;
        let bytes = Self::held(&inner, &self.id);
        drop(inner);
        retire(outcome.state, bytes);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.state = outcome.state;
        inner.exit_code = outcome.exit_code;
        inner.finished = Some(Instant::now());
        if inner.started.is_none() {
            inner.started = Some((Instant::now(), OffsetDateTime::now_utc()));
        }
        drop(inner);
        self.done.send_replace(true);
        self.changed();
    }

    /// Returns once the job's final state is visible.
    pub async fn until_final(&self) {
        let mut done = self.done.subscribe();
        // The sender lives as long as the job, which the caller holds: never an error.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Heap bytes this job holds, as the retention budget counts them: output, output
    /// bookkeeping, error text and a fixed allowance for the job itself.
    pub fn retained_bytes(&self) -> u64 {
        Self::held(
            &self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            &self.id,
        )
    }

    fn held(inner: &JobInner, id: &str) -> u64 {
        /// The `Job`, its `Arc`, table entries and id, rounded up.
        const OVERHEAD: usize = 1024;
        let held = inner.output.iter().map(OutputBuf::held).sum::<usize>()
            + inner.segments.capacity() * std::mem::size_of::<Segment>()
            + inner.error.as_ref().map_or(0, String::capacity)
            + inner.tests.as_ref().map_or(0, |tests| {
                tests
                    .cases
                    .iter()
                    .map(|case| {
                        case.stdout.capacity()
                            + case.stderr.capacity()
                            + case.error.as_ref().map_or(0, String::capacity)
                            + std::mem::size_of::<CaseResult>()
                            + 256
                    })
                    .sum()
            })
            + id.len()
            + OVERHEAD;
        held as u64
    }

    /// Appends guest output, keeping at most `limits.output_bytes` per stream. Returns
    /// false when some of it was dropped.
    pub fn push_output(&self, stream: Stream, data: &[u8]) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state.is_final() || inner.frozen {
            return false;
        }
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
            inner.output[index].push(&data[..keep]);
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
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished
    }

    /// Output produced after `cursor`, in order, advancing the cursor; each chunk is at
    /// most [`output::CHUNK`] bytes (complete chunks are shared, not copied).
    pub fn output_since(&self, cursor: &mut OutputCursor) -> Vec<Chunk> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut chunks = Vec::new();
        for (i, segment) in inner.segments.iter().enumerate().skip(cursor.segment) {
            let from = if i == cursor.segment {
                segment.start.max(cursor.offset)
            } else {
                segment.start
            };
            if from < segment.end {
                let buffer = &inner.output[segment.stream as usize];
                chunks.extend(
                    buffer
                        .slice(from, segment.end)
                        .into_iter()
                        .map(|data| Chunk {
                            stream: segment.stream,
                            data,
                        }),
                );
            }
            *cursor = OutputCursor {
                segment: i,
                offset: segment.end,
            };
        }
        chunks
    }

    /// Everything kept of one stream so far, copied.
    pub fn output(&self, stream: Stream) -> Vec<u8> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).output[stream as usize].to_vec()
    }

    /// The head and the output as of now, taken together (output by reference).
    pub fn snapshot(&self) -> Snapshot {
        let head = self.head();
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            head,
            stdout: inner.output[Stream::Stdout as usize].all(),
            stderr: inner.output[Stream::Stderr as usize].all(),
        }
    }

    /// The text of the final `result` event, built once however many subscribers send it
    /// at the same time.
    pub fn result_text(&self) -> Arc<String> {
        let mut cached = self.result_text.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(text) = cached.upgrade() {
            return text;
        }
        let text = Arc::new(view::result_text(self.snapshot()));
        *cached = Arc::downgrade(&text);
        text
    }

    /// The short status sent over the WebSocket at least every 100 ms.
    pub fn status(&self) -> JobStatus {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (case, current_line, current_location) = match inner.running_cases.first() {
            Some((case, CaseJob(job))) => (
                Some(case.clone()),
                job.current_line(),
                job.current_location(),
            ),
            None => (None, self.current_line(), self.current_location()),
        };
        JobStatus {
            id: self.id.clone(),
            state: inner.state,
            start_time: start_time(&inner),
            runtime_ms: runtime_ms(&inner),
            cpu_ms: self.cpu_ms(&inner),
            current_line,
            current_location,
            case,
        }
    }

    /// Everything `GET /v1/jobs/{id}` shows but the output (see [`view`] for the rest).
    pub fn head(&self) -> JobHead {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        JobHead {
            id: self.id.clone(),
            language: self.language,
            state: inner.state,
            start_time: start_time(&inner),
            runtime_ms: runtime_ms(&inner),
            cpu_ms: self.cpu_ms(&inner),
            current_line: match inner.running_cases.first() {
                Some((_, CaseJob(job))) => job.current_line(),
                None => self.current_line(),
            },
            current_location: match inner.running_cases.first() {
                Some((_, CaseJob(job))) => job.current_location(),
                None => self.current_location(),
            },
            exit_code: inner.exit_code,
            truncated: inner.truncated,
            limits: self.limits,
            scratch: self.scratch,
            error: inner.error.clone(),
            tests: inner.tests.clone(),
            callback: self
                .callback
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// CPU time of the job's own instance, or of every case so far (finished and
    /// running) for a judged job.
    fn cpu_ms(&self, inner: &JobInner) -> u64 {
        let running: u64 = inner
            .running_cases
            .iter()
            .map(|(_, CaseJob(job))| job.cpu_ticks.load(Ordering::Relaxed))
            .sum();
        self.cpu_ticks.load(Ordering::Relaxed) + running
    }

    /// Makes this a judged job of `total` cases compared by `compare`.
    pub fn start_tests(&self, total: u32, compare: CompareMode) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).tests = Some(TestSummary {
            passed: 0,
            total,
            compare,
            verdict: None,
            cases: Vec::new(),
        });
        self.changed();
    }

    /// A case started running; its instance serves `job`. Cases start in index order.
    pub fn case_started(&self, case: RunningCase, job: Arc<Job>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running_cases
            .push((case, CaseJob(job)));
        self.changed();
    }

    /// Case `index` stopped running: its instance's CPU time joins the job's (in the
    /// same step, so the job's CPU time never drops in between).
    pub fn case_stopped(&self, index: u32, case_cpu_ticks: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.cpu_ticks.fetch_add(case_cpu_ticks, Ordering::Relaxed);
        inner.running_cases.retain(|(case, _)| case.index != index);
        drop(inner);
        self.changed();
    }

    /// Records a judged case's result (results come in index order), and the overall
    /// verdict once every case has one.
    pub fn push_case(&self, result: CaseResult) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tests) = &mut inner.tests {
            if result.verdict == Verdict::Accepted {
                tests.passed += 1;
            }
            tests.cases.push(result);
            if tests.cases.len() as u32 == tests.total {
                tests.verdict = Some(
                    tests
                        .cases
                        .iter()
                        .map(|case| case.verdict)
                        .find(|verdict| *verdict != Verdict::Accepted)
                        .unwrap_or(Verdict::Accepted),
                );
            }
        }
        drop(inner);
        self.changed();
    }

    /// Case results judged after `cursor` (a count of cases already seen), advancing it.
    pub fn cases_since(&self, cursor: &mut usize) -> Vec<CaseResult> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let cases = inner.tests.as_ref().map_or(&[][..], |tests| {
            tests.cases.get(*cursor..).unwrap_or_default()
        });
        *cursor += cases.len();
        cases.to_vec()
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
