//! Running one job: a fresh `Store` from an `InstancePre`, WASI preview 1 with only what
//! the job is given, memory limits, and the epoch callback that enforces time limits,
//! cancellation and output limits and samples the current line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{InstancePre, Memory, ResourceLimiter, Store, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::jobs::{Job, Outcome, State, StopReason, Stream};
use crate::pyline;

/// The `T` of every job's `Store`.
pub struct JobCtx {
    pub wasi: WasiP1Ctx,
    limiter: Limiter,
    memory: Option<Memory>,
}

/// Caps linear memory at the job's limit and remembers that the guest hit it.
struct Limiter {
    memory_bytes: usize,
    hit: Arc<AtomicBool>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
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
pub enum Sampler {
    /// CPython: read the interpreter state from linear memory.
    Python(Option<pyline::Probe>),
    /// Modules: wasmtime's backtrace symbols (DWARF), when the module has them.
    Backtrace,
    /// Not known (QuickJS exposes nothing cheap).
    None,
    /// Start-up calibration of the CPython probe.
    Calibrate(Arc<pyline::Calibration>),
}

/// What to run: a pre-linked module with its argv and stdin.
pub struct Program {
    pub pre: InstancePre<JobCtx>,
    pub argv: Vec<String>,
    pub stdin: Bytes,
    pub sampler: Sampler,
    /// Scratch directory size limit when the job asked for one.
    pub scratch_limit: Option<u64>,
}

/// Guest stdout/stderr: forwards what it keeps to the job, never buffers beyond the limit.
struct JobOutput {
    job: Arc<Job>,
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
            job: self.job.clone(),
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
        if !self.job.push_output(self.stream, &bytes) {
            self.job.request_stop(StopReason::Output);
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

/// Runs `program` for `job` to completion and returns how it ended.
pub async fn run(job: Arc<Job>, program: Program) -> Outcome {
    let scratch = match program.scratch_limit {
        Some(_) => match tempfile::Builder::new()
            .prefix("edgebox-scratch-")
            .tempdir()
        {
            Ok(dir) => Some(dir),
            Err(error) => {
                return Outcome {
                    state: State::Failed,
                    exit_code: None,
                    error: Some(format!("creating the scratch directory: {error}")),
                };
            }
        },
        None => None,
    };
    let memory_hit = Arc::new(AtomicBool::new(false));
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(MemoryInputPipe::new(program.stdin.clone()))
        .stdout(JobOutput {
            job: job.clone(),
            stream: Stream::Stdout,
        })
        .stderr(JobOutput {
            job: job.clone(),
            stream: Stream::Stderr,
        })
        .args(&program.argv)
        .allow_blocking_current_thread(true);
    if let Some(dir) = &scratch {
        // The guest sees only this directory; wasmtime-wasi opens it with cap-std, so
        // `..` and symlinks cannot lead outside it.
        if let Err(error) = wasi.preopened_dir(dir.path(), "/scratch", FsPerms::ReadWrite) {
            return Outcome {
                state: State::Failed,
                exit_code: None,
                error: Some(format!("opening the scratch directory: {error:#}")),
            };
        }
    }
    let ctx = JobCtx {
        wasi: wasi.build_p1(),
        limiter: Limiter {
            memory_bytes: (job.limits.memory_mb as usize) << 20,
            hit: memory_hit.clone(),
        },
        memory: None,
    };
    let engine = program.pre.module().engine().clone();
    let mut store = Store::new(&engine, ctx);
    store.limiter(|ctx| &mut ctx.limiter);
    store.set_epoch_deadline(1);

    let started = Instant::now();
    let wall = Duration::from_millis(job.limits.wall_ms);
    let cpu_ticks = job.limits.cpu_ms;
    let callback_job = job.clone();
    let scratch_path = scratch.as_ref().map(|dir| dir.path().to_owned());
    let scratch_limit = program.scratch_limit.unwrap_or(u64::MAX);
    let final_probe = match &program.sampler {
        Sampler::Python(probe) => *probe,
        _ => None,
    };
    let mut sampler = program.sampler;
    let mut tick: u64 = 0;
    store.epoch_deadline_callback(move |cx| {
        let job = &callback_job;
        tick += 1;
        let cpu = job.cpu_ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if job.stop_flag.load(Ordering::Acquire) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if started.elapsed() >= wall {
            job.request_stop(StopReason::WallTime);
            return Ok(UpdateDeadline::Interrupt);
        }
        if cpu >= cpu_ticks {
            job.request_stop(StopReason::CpuTime);
            return Ok(UpdateDeadline::Interrupt);
        }
        if tick.is_multiple_of(50)
            && let Some(path) = &scratch_path
            && dir_size(path) > scratch_limit
        {
            job.request_stop(StopReason::Scratch);
            return Ok(UpdateDeadline::Interrupt);
        }
        match &mut sampler {
            Sampler::Python(Some(probe)) => {
                if let Some(memory) = cx.data().memory {
                    job.set_current_line(probe.current_line(memory.data(&cx)));
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
            Sampler::Calibrate(calibration) => {
                if let Some(memory) = cx.data().memory
                    && calibration.step(job, memory.data(&cx))
                {
                    return Ok(UpdateDeadline::Interrupt);
                }
            }
            _ => {}
        }
        Ok(UpdateDeadline::Continue(1))
    });

    let result = tokio::select! {
        result = run_start(&mut store, &program.pre) => Some(result),
        _ = job.cancelled.notified() => None,
        _ = tokio::time::sleep(wall) => {
            // Reached only when the guest is blocked in a host call (sleeping); running
            // guests are stopped by the epoch callback.
            job.request_stop(StopReason::WallTime);
            None
        }
    };
    if result.is_none()
        && let (Some(probe), Some(memory)) = (final_probe, store.data().memory)
    {
        // The guest was stopped while blocked in a host call (e.g. sleeping): its memory
        // still shows where it is, which may be a line no tick landed on.
        if let Some(line) = probe.current_line(memory.data(&store)) {
            job.set_current_line(Some(line));
        }
    }
    drop(store);
    drop(scratch);
    classify(&job, result, memory_hit.load(Ordering::Relaxed))
}

async fn run_start(store: &mut Store<JobCtx>, pre: &InstancePre<JobCtx>) -> wasmtime::Result<()> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let memory = instance.get_memory(&mut *store, "memory");
    store.data_mut().memory = memory;
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call_async(&mut *store, ()).await
}

fn classify(job: &Job, result: Option<wasmtime::Result<()>>, memory_hit: bool) -> Outcome {
    let (exit_code, trap) = match &result {
        Some(Ok(())) => (Some(0), None),
        Some(Err(error)) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => (Some(exit.0), None),
            None => (None, Some(format!("{error:#}"))),
        },
        None => (None, None),
    };
    if job.cancel_requested() {
        return Outcome {
            state: State::Cancelled,
            exit_code,
            error: Some("cancelled".into()),
        };
    }
    if let Some(reason) = job.stop_reason() {
        let (state, message) = match reason {
            StopReason::WallTime => (State::TimedOut, "wall-time limit reached"),
            StopReason::CpuTime => (State::TimedOut, "CPU-time limit reached"),
            StopReason::Output => (State::OutputExceeded, "output limit reached"),
            StopReason::Cancelled => (State::Cancelled, "cancelled"),
            StopReason::Scratch => (State::Failed, "scratch directory size limit reached"),
        };
        return Outcome {
            state,
            exit_code,
            error: Some(message.into()),
        };
    }
    match (exit_code, trap) {
        (Some(0), _) => Outcome {
            state: State::Succeeded,
            exit_code,
            error: None,
        },
        (_, trap) if memory_hit => Outcome {
            state: State::MemoryExceeded,
            exit_code,
            error: Some(trap.unwrap_or_else(|| "memory limit reached".into())),
        },
        (exit_code, trap) => Outcome {
            state: State::Failed,
            exit_code,
            error: trap,
        },
    }
}

/// Total size of the files under `path`, not following symlinks.
fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}
