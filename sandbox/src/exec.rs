//! Running one job: a fresh `Store` from an `InstancePre`, WASI preview 1 with only what
//! the job is given, memory limits, and the epoch callback that enforces time limits,
//! cancellation and output limits and samples the current line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{InstancePre, Memory, ResourceLimiter, Store, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::cli::StdinStream;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::jobs::{Job, JobState, Outcome, StopReason, Stream};
use crate::pyline;
use crate::scratch;

/// The `T` of every job's `Store`.
pub struct JobCtx {
    pub wasi: WasiP1Ctx,
    /// The scratch directory's quota, when the job has one (see [`crate::scratch`]).
    pub scratch: Option<scratch::Quota>,
    limiter: Limiter,
    memory: Option<Memory>,
    /// CPython's line probe, for the line a read of stdin is made from.
    line_probe: Option<pyline::Probe>,
    /// The instrumented QuickJS runtime's line globals (`crate::jsline`).
    js_probe: Option<crate::jsline::Probe>,
}

impl JobCtx {
    /// Called on each read of stdin with the guest's memory: records the submitted
    /// line reading it (a Python `input()` line), if there is one.
    pub fn note_stdin_read(&self, memory: &[u8]) {
        if let (Some(probe), Some((job, _))) = (self.line_probe, self.limiter.slot.job())
            && let Some(location) = probe.current_location(memory, &job.guest_files)
        {
            job.set_location(Some(location));
        }
    }
}

/// The job an instance serves, set once when it is attached. An instance may be started
/// before its job exists (a pre-started pool): until then it has no output, no stdin and
/// no limits but the pool's.
#[derive(Default)]
pub struct Slot {
    job: OnceLock<(Arc<Job>, Instant)>,
    stdin: Mutex<Option<Bytes>>,
    attached: tokio::sync::Notify,
}

impl Slot {
    pub(crate) fn job(&self) -> Option<&(Arc<Job>, Instant)> {
        self.job.get()
    }

    /// Gives the instance its job and its stdin; the guest, blocked reading stdin, resumes.
    fn attach(&self, job: Arc<Job>, stdin: Bytes) {
        if self.job.get().is_some() {
            return;
        }
        *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(stdin);
        let _ = self.job.set((job, Instant::now()));
        self.attached.notify_waiters();
        self.attached.notify_one();
    }
}

/// Guest stdin: nothing (the guest waits) until the job is attached, then its bytes.
#[derive(Clone)]
struct SlotStdin(Arc<Slot>);

impl IsTerminal for SlotStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for SlotStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SlotStdin {
    async fn ready(&mut self) {
        let job = loop {
            let notified = self.0.attached.notified();
            match self
                .0
                .stdin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                Some(rest) if !rest.is_empty() => return,
                Some(_) => break self.0.job().map(|(job, _)| job.clone()),
                None => {}
            }
            notified.await;
        };
        // The submitted stdin is read: what comes next is the job's pipe (interactive
        // jobs wait here for the socket to write or close it).
        if let Some(job) = job {
            job.stdin.ready().await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for SlotStdin {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let mut stdin = self.0.stdin.lock().unwrap_or_else(|p| p.into_inner());
        match stdin.as_mut() {
            None => Ok(Bytes::new()),
            Some(rest) if rest.is_empty() => match self.0.job() {
                Some((job, _)) => job.stdin.read(size).ok_or(StreamError::Closed),
                None => Err(StreamError::Closed),
            },
            Some(rest) => Ok(rest.split_to(size.min(rest.len()))),
        }
    }
}

/// Caps linear memory at the job's limit and remembers that the guest hit it.
struct Limiter {
    /// Before a job is attached, the pool's maximum applies.
    default_bytes: usize,
    slot: Arc<Slot>,
    hit: Arc<AtomicBool>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.slot.job().map_or(self.default_bytes, |(job, _)| {
            (job.limits.memory_mb as usize) << 20
        });
        if desired > limit {
            self.hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// How the current line is found for this job.
#[derive(Clone)]
pub enum Sampler {
    /// CPython: read the interpreter state from linear memory.
    Python(Option<pyline::Probe>),
    /// Modules: wasmtime's backtrace symbols (DWARF), when the module has them.
    Backtrace,
    /// QuickJS: the line of the loop last jumped back to, in a source of this many
    /// lines (`crate::jsline`).
    JavaScript { lines: u32 },
    /// Not known.
    None,
}

/// A host directory a runtime needs, shown read-only to each of its instances.
#[derive(Debug)]
pub struct Mount {
    pub host: std::path::PathBuf,
    pub guest: &'static str,
}

/// How an instance is entered, and the runtime's own read-only files.
#[derive(Debug, Clone)]
pub struct EntryPoint {
    pub entry: crate::runtimes::Entry,
    pub mount: Option<Arc<Mount>>,
}

impl EntryPoint {
    /// A WASI command module with nothing mounted (QuickJS, submitted modules).
    pub fn command() -> Self {
        Self {
            entry: crate::runtimes::Entry::Start,
            mount: None,
        }
    }
}

/// What to run: a pre-linked module with its argv and stdin.
pub struct Program {
    pub pre: InstancePre<JobCtx>,
    pub entry: EntryPoint,
    pub argv: Vec<String>,
    pub stdin: Bytes,
    pub sampler: Sampler,
    /// The scratch directory's quota when the job asked for one.
    pub scratch: Option<ScratchLimits>,
    /// A multi-file program's files, shown read-only as `/app`.
    pub app: Option<Arc<crate::app::AppDir>>,
}

/// What a job's scratch directory may hold.
#[derive(Debug, Clone, Copy)]
pub struct ScratchLimits {
    /// Bytes allocated on disk.
    pub bytes: u64,
    /// Files and directories.
    pub files: u64,
}

/// Guest stdout/stderr: forwards what it keeps to the job, never buffers beyond the limit.
struct JobOutput {
    slot: Arc<Slot>,
    stream: Stream,
}

impl IsTerminal for JobOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for JobOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(JobOutput {
            slot: self.slot.clone(),
            stream: self.stream,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the preview 2 path is used by preview 1; discard anything else.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for JobOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for JobOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        // Nothing is written before attachment (the bootstrap is silent); drop it if so.
        if let Some((job, _)) = self.slot.job()
            && !job.push_output(self.stream, &bytes)
        {
            job.request_stop(StopReason::Output);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

/// A guest instance running (or initialising) on the jobs runtime, waiting for its job.
pub struct Started {
    slot: Arc<Slot>,
    attach: tokio::sync::oneshot::Sender<Arc<Job>>,
    done: tokio::sync::oneshot::Receiver<Outcome>,
}

impl Started {
    /// Hands the instance its job and waits for the outcome.
    pub async fn run(self, job: Arc<Job>, stdin: Bytes) -> Outcome {
        self.slot.attach(job.clone(), stdin);
        if self.attach.send(job).is_err() {
            return failed("the instance ended before its job was attached".into());
        }
        self.done
            .await
            .unwrap_or_else(|_| failed("the instance task ended without an outcome".into()))
    }
}

fn failed(error: String) -> Outcome {
    Outcome {
        state: JobState::Failed,
        exit_code: None,
        error: Some(error),
    }
}

/// Runs `program` for `job` to completion and returns how it ended.
pub async fn run(job: Arc<Job>, program: Program) -> Outcome {
    let stdin = program.stdin.clone();
    // Attached before the guest starts: a module that writes at once loses nothing.
    match start(program, usize::MAX, Some((job.clone(), stdin.clone()))) {
        Ok(started) => started.run(job, stdin).await,
        Err(outcome) => outcome,
    }
}

/// Instantiates `program` in a fresh `Store` and lets it run (CPython initialises itself)
/// until it needs its job: it blocks reading stdin. `default_memory` caps memory until
/// then.
pub fn start(
    program: Program,
    default_memory: usize,
    attach_now: Option<(Arc<Job>, Bytes)>,
) -> Result<Started, Outcome> {
    let scratch = match program.scratch {
        Some(_) => match tempfile::Builder::new()
            .prefix("edgebox-scratch-")
            .tempdir()
        {
            Ok(dir) => Some(dir),
            Err(error) => return Err(failed(format!("creating the scratch directory: {error}"))),
        },
        None => None,
    };
    let slot = Arc::new(Slot::default());
    if let Some((job, stdin)) = attach_now {
        slot.attach(job, stdin);
    }
    let memory_hit = Arc::new(AtomicBool::new(false));
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(SlotStdin(slot.clone()))
        .stdout(JobOutput {
            slot: slot.clone(),
            stream: Stream::Stdout,
        })
        .stderr(JobOutput {
            slot: slot.clone(),
            stream: Stream::Stderr,
        })
        .args(&program.argv)
        .allow_blocking_current_thread(true);
    if let Some(mount) = &program.entry.mount
        && let Err(error) = wasi.preopened_dir(&mount.host, mount.guest, FsPerms::ReadOnly)
    {
        return Err(failed(format!(
            "opening the runtime's files {}: {error:#}",
            mount.host.display()
        )));
    }
    if let Some(app) = &program.app
        && let Err(error) =
            wasi.preopened_dir(app.host_path(), crate::app::GUEST_DIR, FsPerms::ReadOnly)
    {
        return Err(failed(format!("opening the program's files: {error:#}")));
    }
    if let Some(dir) = &scratch {
        // The guest sees only this directory; wasmtime-wasi opens it with cap-std, so
        // `..` and symlinks cannot lead outside it.
        if let Err(error) = wasi.preopened_dir(dir.path(), "/scratch", FsPerms::ReadWrite) {
            return Err(failed(format!("opening the scratch directory: {error:#}")));
        }
    }
    let quota = match (&scratch, program.scratch) {
        (Some(dir), Some(limits)) => Some(scratch::Quota::new(
            dir.path().to_owned(),
            limits.bytes,
            limits.files,
            slot.clone(),
        )),
        _ => None,
    };
    let line_probe = match &program.sampler {
        Sampler::Python(probe) => *probe,
        _ => None,
    };
    let ctx = JobCtx {
        line_probe,
        wasi: wasi.build_p1(),
        scratch: quota,
        limiter: Limiter {
            default_bytes: default_memory,
            slot: slot.clone(),
            hit: memory_hit.clone(),
        },
        memory: None,
        js_probe: None,
    };
    let engine = program.pre.module().engine().clone();
    let mut store = Store::new(&engine, ctx);
    store.limiter(|ctx| &mut ctx.limiter);
    store.set_epoch_deadline(1);

    let final_probe = line_probe;
    let callback_slot = slot.clone();
    let mut sampler = program.sampler;
    let mut tick: u64 = 0;
    store.epoch_deadline_callback(move |mut cx| {
        // Before attachment the instance is initialising for a job not yet known: it runs
        // unlimited by time (it only ever blocks on stdin, and the pool bounds how many).
        let Some((job, started)) = callback_slot.job() else {
            return Ok(UpdateDeadline::Continue(1));
        };
        tick += 1;
        let cpu = job.cpu_ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if job.stop_flag.load(Ordering::Acquire) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if started.elapsed() >= Duration::from_millis(job.limits.wall_ms) {
            job.request_stop(StopReason::WallTime);
            return Ok(UpdateDeadline::Interrupt);
        }
        if cpu >= job.limits.cpu_ms {
            job.request_stop(StopReason::CpuTime);
            return Ok(UpdateDeadline::Interrupt);
        }
        match &mut sampler {
            Sampler::Python(Some(probe)) => {
                if let Some(memory) = cx.data().memory {
                    job.set_location(probe.current_location(memory.data(&cx), &job.guest_files));
                }
            }
            Sampler::Backtrace if tick.is_multiple_of(5) => {
                let trace = WasmBacktrace::capture(&cx);
                let line = trace
                    .frames()
                    .iter()
                    .flat_map(|frame| frame.symbols())
                    .find_map(|symbol| symbol.line());
                job.set_current_line(line);
            }
            Sampler::JavaScript { lines } if tick.is_multiple_of(2) => {
                if let (Some(memory), Some(probe)) = (cx.data().memory, cx.data().js_probe) {
                    let lines = *lines;
                    job.set_current_line(probe.line(&mut cx, memory, lines));
                }
            }
            _ => {}
        }
        Ok(UpdateDeadline::Continue(1))
    });

    let (attach_tx, attach_rx) = tokio::sync::oneshot::channel::<Arc<Job>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pre = program.pre;
    let entry = program.entry.entry;
    // The files stay on disk while the instance may read them.
    let app = program.app;
    tokio::spawn(async move {
        let mut attach_rx = attach_rx;
        let (job, result) = {
            let guest = run_start(&mut store, &pre, entry);
            tokio::pin!(guest);
            // Phase 1: initialise while waiting for the job.
            let (job, early) = tokio::select! {
                result = &mut guest => {
                    // The guest ended before reading stdin (a program that needs no input, or
                    // a start-up failure): report it to whichever job attaches.
                    match (&mut attach_rx).await {
                        Ok(job) => (job, Some(result)),
                        Err(_) => return,
                    }
                }
                job = &mut attach_rx => match job {
                    Ok(job) => (job, None),
                    Err(_) => return, // pool dropped: nothing to run
                },
            };
            let wall = Duration::from_millis(job.limits.wall_ms);
            let result = match early {
                Some(result) => Some(result),
                None => tokio::select! {
                    result = &mut guest => Some(result),
                    _ = job.cancelled.notified() => None,
                    _ = tokio::time::sleep(wall) => {
                        // Reached only when the guest is blocked in a host call (sleeping);
                        // running guests are stopped by the epoch callback.
                        job.request_stop(StopReason::WallTime);
                        None
                    }
                },
            };
            (job, result)
        };
        if result.is_none()
            && let (Some(probe), Some(memory)) = (final_probe, store.data().memory)
        {
            // The guest was stopped while blocked in a host call (e.g. sleeping): its
            // memory still shows where it is, which may be a line no tick landed on.
            if let Some(location) = probe.current_location(memory.data(&store), &job.guest_files) {
                job.set_location(Some(location));
            }
        }
        let outcome = classify(&job, result, memory_hit.load(Ordering::Relaxed));
        // A finished job leaves no scratch or program directory behind (the guest is done
        // with them).
        drop(scratch);
        drop(app);
        // Dropping the store resets the instance's pool slot (its memory restored from
        // the image). The outcome is known before: with a spare deferral the reset runs
        // on a blocking thread while the caller goes on (the next judged case starts on
        // another slot, a job's result is reported); else here, first.
        match DeferredDrop::try_new() {
            Some(deferred) => {
                let _ = done_tx.send(outcome);
                tokio::task::spawn_blocking(move || {
                    drop(store);
                    drop(deferred);
                });
            }
            None => {
                drop(store);
                let _ = done_tx.send(outcome);
            }
        }
    });
    Ok(Started {
        slot,
        attach: attach_tx,
        done: done_rx,
    })
}

/// Instances whose drop (their pool slot's reset) may be pending at once. Bounded so that
/// instances alive never exceed the running ones by more than this: the engine's pool has
/// room for `2 * max_concurrent_jobs + 4` (`crate::run`), and instances run at most
/// `max_concurrent_jobs` at a time (judged cases in parallel take free job slots).
const MAX_DEFERRED_DROPS: usize = 2;

static DEFERRED_DROPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_DEFERRED_DROPS`], held until the instance is dropped.
struct DeferredDrop;

impl DeferredDrop {
    fn try_new() -> Option<Self> {
        DEFERRED_DROPS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < MAX_DEFERRED_DROPS).then_some(pending + 1)
            })
            .ok()
            .map(|_| DeferredDrop)
    }
}

impl Drop for DeferredDrop {
    fn drop(&mut self) {
        DEFERRED_DROPS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Instantiates `pre` with `mount` preopened as jobs have it, runs `source` through the
/// `turn` export with `stdin` on its standard input, and returns the instance's linear memory and what it wrote on stdout
/// once `turn` returned 0 (the prepared CPython image, `engine`). Its stderr is kept
/// for the error that says why it failed. Bounded to `limit` of wall time.
pub async fn memory_after_turn(
    pre: &InstancePre<JobCtx>,
    mount: Option<&Mount>,
    source: &'static str,
    stdin: Vec<u8>,
    limit: Duration,
) -> wasmtime::Result<(Vec<u8>, Vec<u8>)> {
    let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 * 1024);
    let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 * 1024);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_blocking_current_thread(true);
    if let Some(mount) = mount {
        wasi.preopened_dir(&mount.host, mount.guest, FsPerms::ReadOnly)?;
    }
    let ctx = JobCtx {
        line_probe: None,
        wasi: wasi.build_p1(),
        scratch: None,
        limiter: Limiter {
            default_bytes: usize::MAX,
            slot: Arc::new(Slot::default()),
            hit: Arc::new(AtomicBool::new(false)),
        },
        memory: None,
        js_probe: None,
    };
    let mut store = Store::new(pre.module().engine(), ctx);
    store.limiter(|ctx| &mut ctx.limiter);
    store.set_epoch_deadline(1);
    let started = Instant::now();
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= limit {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    let status = run_start(&mut store, pre, crate::runtimes::Entry::Turn { source }).await;
    let stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
    match status {
        Ok(0) => {}
        Ok(status) => wasmtime::bail!("the set-up returned {status}: {stderr}"),
        Err(error) => return Err(error.context(stderr)),
    }
    let memory = store
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
    Ok((memory.data(&store).to_vec(), stdout.contents().to_vec()))
}

/// Instantiates and runs the guest; the exit status it returned (0 for a command that
/// returned from `_start`), or how it stopped.
async fn run_start(
    store: &mut Store<JobCtx>,
    pre: &InstancePre<JobCtx>,
    entry: crate::runtimes::Entry,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let memory = instance.get_memory(&mut *store, "memory");
    store.data_mut().memory = memory;
    store.data_mut().js_probe = crate::jsline::Probe::find(&instance, &mut *store);
    match entry {
        crate::runtimes::Entry::Start => {
            let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            start.call_async(&mut *store, ()).await?;
            Ok(0)
        }
        crate::runtimes::Entry::Snapshot => {
            // The interpreter in the image is initialised: `run` takes the job's argv from
            // WASI and returns the program's exit status.
            let run = instance.get_typed_func::<(), i32>(&mut *store, "run")?;
            run.call_async(&mut *store, ()).await
        }
        crate::runtimes::Entry::Turn { source } => {
            let memory =
                memory.ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
            let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "host_alloc")?;
            let turn = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "turn")?;
            let len = i32::try_from(source.len())?;
            let ptr = alloc.call_async(&mut *store, len).await?;
            memory.write(&mut *store, ptr as u32 as usize, source.as_bytes())?;
            turn.call_async(&mut *store, (ptr, len)).await
        }
        crate::runtimes::Entry::Call(&crate::runtimes::CallEntry {
            function,
            object,
            status,
            print_error,
        }) => {
            let object = instance
                .get_global(&mut *store, object)
                .and_then(|global| global.get(&mut *store).i32())
                .ok_or_else(|| wasmtime::Error::msg("the module exports no entry object"))?;
            let call = instance.get_typed_func::<i32, i32>(&mut *store, function)?;
            let result = call.call_async(&mut *store, object).await?;
            if result != 0 {
                let status = instance.get_typed_func::<i32, i32>(&mut *store, status)?;
                return status.call_async(&mut *store, result).await;
            }
            // An exception escaped the bootstrap (one raised while it reported another:
            // a MemoryError): printed in C, as CPython's top level prints it.
            let print = instance.get_typed_func::<(), ()>(&mut *store, print_error)?;
            print.call_async(&mut *store, ()).await?;
            Ok(1)
        }
    }
}

fn classify(job: &Job, result: Option<wasmtime::Result<i32>>, memory_hit: bool) -> Outcome {
    let (exit_code, trap) = match &result {
        Some(Ok(code)) => (Some(*code), None),
        Some(Err(error)) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => (Some(exit.0), None),
            None => (None, Some(format!("{error:#}"))),
        },
        None => (None, None),
    };
    if job.cancel_requested() {
        return Outcome {
            state: JobState::Cancelled,
            exit_code,
            error: Some("cancelled".into()),
        };
    }
    if let Some(reason) = job.stop_reason() {
        let (state, message) = match reason {
            StopReason::WallTime => (JobState::TimedOut, "wall-time limit reached"),
            StopReason::CpuTime => (JobState::TimedOut, "CPU-time limit reached"),
            StopReason::Output => (JobState::OutputExceeded, "output limit reached"),
            StopReason::Cancelled => (JobState::Cancelled, "cancelled"),
            StopReason::Scratch => (
                JobState::ScratchExceeded,
                "scratch quota (bytes or files) reached",
            ),
        };
        return Outcome {
            state,
            exit_code,
            error: Some(message.into()),
        };
    }
    match (exit_code, trap) {
        (Some(0), _) => Outcome {
            state: JobState::Succeeded,
            exit_code,
            error: None,
        },
        (_, trap) if memory_hit => Outcome {
            state: JobState::MemoryExceeded,
            exit_code,
            error: Some(trap.unwrap_or_else(|| "memory limit reached".into())),
        },
        (exit_code, trap) => Outcome {
            state: JobState::Failed,
            exit_code,
            error: trap,
        },
    }
}
