//! Admission and scheduling: validates a submission into a runnable program, bounds
//! running jobs by `max_concurrent_jobs` and waiting ones by `queue_length`, and runs each
//! job on the jobs runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use edgebox_config::SandboxSettings;
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::{InstancePre, Module};

use crate::app::{self, AppDir};
use crate::engine::SandboxEngine;
use crate::exec::{self, EntryPoint, JobCtx, Program, Sampler};
use crate::jobs::view::ViewPieces;
use crate::jobs::{self, Job, JobState, JobTable, Language, Limits, Outcome, Retention, Stream};
use crate::judge;
use crate::pyline;
use crate::runtimes;

/// A refused submission: HTTP status, stable code, message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

use edgebox_node::webhook;
use edgebox_wire::sandbox::{
    CallbackAttempt, CallbackState, CompareMode, RunningCase, SourceFile, TestCase,
};
pub use edgebox_wire::sandbox::{JobRequest as Submission, RequestedLimits};

/// A judged job's cases run one at a time until one of them takes this long; then the
/// extra lanes (`max_parallel_cases`) join. Two instances at once in one process contend
/// in the kernel (page faults and the slot resets' `madvise` on one address space): with
/// hello-world cases (~0.7 ms each) two lanes took 11.2-12.6x one job against 8.8-9.3x for
/// one (benches/results/sandbox.md), while four cases sleeping 0.3 s took 0.64 s on two
/// lanes against 1.25 s on one.
const PARALLEL_CASES_AFTER: Duration = Duration::from_millis(10);

/// Runs `run`, the instance of `child`, a job working for `parent` (a judged job's case or
/// its compile): a cancel of the parent cancels the child, whose run then ends as any
/// cancelled run does.
async fn until_parent_cancels(
    parent: &Job,
    child: &Job,
    run: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    tokio::pin!(run);
    tokio::select! {
        outcome = &mut run => outcome,
        _ = parent.cancelled.notified() => {
            child.cancel();
            run.await
        }
    }
}

/// The most bytes a judged program's compiled form may take (`compile_once`); a larger
/// one is compiled by each case instead.
const MAX_COMPILED: u64 = 4 << 20;

/// What a job will run once it gets a slot.
enum Prepared {
    Runtime(runtimes::RuntimeSpec),
    Module(InstancePre<JobCtx>),
}

/// The submitted program, turned into an instance's argv and stdin for each run.
struct Launch {
    language: Language,
    /// The source, or a multi-file program's entry file.
    source: Arc<str>,
    app: Option<Arc<AppDir>>,
}

impl Launch {
    /// argv and stdin of one instance running the program with `args` and `stdin`.
    /// `code` is the program compiled once ([`pyline::Form::Code`]), when it was.
    fn invocation(
        &self,
        point: &EntryPoint,
        code: Option<&[u8]>,
        args: &[String],
        stdin: &[u8],
    ) -> (Vec<String>, Bytes) {
        let entry = self.app.as_ref().map(|app| app.guest_entry());
        match self.language {
            // The bootstrap reads the source and arguments ahead of the job's stdin; the
            // prepared image has it loaded already and takes no argv.
            Language::Python => (
                match point.entry {
                    runtimes::Entry::Turn { .. } => vec!["python".to_owned()],
                    _ => pyline::bootstrap_argv(),
                },
                match code {
                    Some(code) => pyline::bootstrap_stdin(
                        code,
                        pyline::Form::Code,
                        args,
                        entry.as_deref().unwrap_or(""),
                        stdin,
                    ),
                    None => pyline::bootstrap_stdin(
                        self.source.as_bytes(),
                        pyline::Form::Source,
                        args,
                        entry.as_deref().unwrap_or(""),
                        stdin,
                    ),
                },
            ),
            Language::Javascript => {
                // A multi-file program's entry runs as an ES module from its file, so
                // that its imports resolve against `/app`.
                let mut argv = vec!["qjs".to_owned(), "--std".into()];
                match entry {
                    Some(entry) => argv.extend(["-m".to_owned(), entry]),
                    None => argv.extend(["-e".to_owned(), self.source.to_string()]),
                }
                argv.extend_from_slice(args);
                (argv, Bytes::copy_from_slice(stdin))
            }
            Language::Wat | Language::Wasm => {
                let mut argv = vec!["main.wasm".to_owned()];
                argv.extend_from_slice(args);
                (argv, Bytes::copy_from_slice(stdin))
            }
        }
    }
}

/// What a job's instances read: one run, or one run per test case.
enum Input {
    Single {
        args: Vec<String>,
        stdin: Bytes,
    },
    Tests {
        cases: Vec<TestCase>,
        compare: CompareMode,
    },
}

/// Judged cases finished out of order, held until every earlier one is recorded.
struct JudgedCases {
    next: usize,
    done: std::collections::BTreeMap<usize, edgebox_wire::sandbox::CaseResult>,
}

/// A judged job's program, prepared once, and its cases.
struct Tests {
    pre: InstancePre<JobCtx>,
    entry: EntryPoint,
    sampler: Sampler,
    scratch: Option<exec::ScratchLimits>,
    launch: Launch,
    cases: Vec<TestCase>,
    compare: CompareMode,
    /// A Python program compiled once for every case ([`pyline::Form::Code`]), once it
    /// is.
    code: std::sync::OnceLock<Bytes>,
}

fn check_args(args: &[String]) -> Result<(), Rejection> {
    if args.iter().any(|arg| arg.contains('\0')) {
        return Err(Rejection::new(
            422,
            "invalid_args",
            "arguments cannot contain NUL characters",
        ));
    }
    Ok(())
}

pub struct Service {
    pub node: String,
    /// When the daemon started, for the uptime in `/healthz`.
    pub started: std::time::Instant,
    /// Limits and sizes; swapped whole by a config reload.
    pub settings: ArcSwap<SandboxSettings>,
    pub engine: Arc<SandboxEngine>,
    pub jobs: JobTable,
    jobs_runtime: tokio::runtime::Handle,
    slots: Arc<Semaphore>,
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    draining: AtomicBool,
    /// `EDGEBOX_SANDBOX_LINE_SAMPLING=off` disables reading the current line (benchmarks
    /// compare the two); limits are enforced either way.
    line_sampling: bool,
    /// CPython instances started ahead of their job.
    python_pool: std::sync::Mutex<Vec<exec::Started>>,
    refilling: tokio::sync::Mutex<()>,
    /// Module validations and compilations at once (`compile_concurrency`).
    compiling: Arc<Semaphore>,
    /// Event subscribers of every job, connected now.
    pub subscribers: AtomicUsize,
    /// Programs prepared since start: one per job, however many cases it has.
    pub programs_prepared: AtomicU64,
}

/// A queue place, taken before a submission is read or compiled so that a full sandbox
/// refuses (429) without spending anything on it. Given back when dropped, unless the
/// job it was taken for starts waiting for a slot.
pub struct Ticket {
    service: Arc<Service>,
    used: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.service.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// An event subscriber's place, in its job's and in the daemon's count.
pub struct Subscription {
    service: Arc<Service>,
    job: Arc<Job>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.job.subscribers.fetch_sub(1, Ordering::AcqRel);
        self.service.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Environment switch for line sampling, for benchmarks.
pub const LINE_SAMPLING_ENV: &str = "EDGEBOX_SANDBOX_LINE_SAMPLING";

/// Why the sandbox refuses a new config's settings.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("max_concurrent_jobs {from} -> {to} needs a restart of the sandbox")]
    JobSlots { from: usize, to: usize },
    #[error("raising sandbox.maximums.memory needs a restart of the sandbox")]
    MemoryRaised,
}

impl Service {
    pub fn new(
        node: String,
        settings: SandboxSettings,
        engine: Arc<SandboxEngine>,
        jobs_runtime: tokio::runtime::Handle,
    ) -> Self {
        let compile_slots = settings.compile_concurrency.max(1);
        Self {
            node,
            started: std::time::Instant::now(),
            slots: Arc::new(Semaphore::new(settings.max_concurrent_jobs.max(1))),
            compiling: Arc::new(Semaphore::new(compile_slots)),
            engine,
            jobs: JobTable::default(),
            jobs_runtime,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            python_pool: std::sync::Mutex::new(Vec::new()),
            refilling: tokio::sync::Mutex::new(()),
            subscribers: AtomicUsize::new(0),
            programs_prepared: AtomicU64::new(0),
            settings: ArcSwap::from_pointee(settings),
            line_sampling: std::env::var(LINE_SAMPLING_ENV).map_or(true, |value| value != "off"),
        }
    }

    /// Applies a new config's sandbox settings. Limits, sizes, the queue and retention
    /// change at once; the number of job slots and the memory the engine's pool was
    /// sized for are fixed at start, so changing those is refused until a restart.
    pub fn apply(&self, new: SandboxSettings) -> Result<(), ApplyError> {
        let current = self.settings.load();
        if new.max_concurrent_jobs != current.max_concurrent_jobs {
            return Err(ApplyError::JobSlots {
                from: current.max_concurrent_jobs,
                to: new.max_concurrent_jobs,
            });
        }
        if new.maximums.memory > current.maximums.memory {
            return Err(ApplyError::MemoryRaised);
        }
        if new.compile_concurrency > current.compile_concurrency {
            self.compiling
                .add_permits(new.compile_concurrency - current.compile_concurrency);
        } else if new.compile_concurrency < current.compile_concurrency {
            // Take the surplus permits as compilations finish, and keep them.
            let fewer = (current.compile_concurrency - new.compile_concurrency) as u32;
            let compiling = self.compiling.clone();
            tokio::spawn(async move {
                if let Ok(permits) = compiling.acquire_many_owned(fewer).await {
                    permits.forget();
                }
            });
        }
        let retention = Retention::from_settings(&new);
        self.settings.store(Arc::new(new));
        // Lowered bounds apply to what is already kept.
        self.jobs.enforce(retention);
        Ok(())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Loads (compiling if needed) the runtimes already on disk in the background and
    /// pre-starts CPython instances. Missing runtimes are fetched at first need, by the
    /// first job of their language, not at start-up.
    pub fn warm_up(self: &Arc<Self>) {
        for spec in runtimes::ALL {
            if !self.engine.dir.file(&spec).exists() {
                tracing::info!(
                    language = spec.language,
                    "runtime not fetched yet; the first job will fetch it"
                );
                continue;
            }
            let this = self.clone();
            self.jobs_runtime.spawn(async move {
                match this.engine.runtime(&spec).await {
                    Ok(_) if spec.language == runtimes::PYTHON.language => {
                        this.refill_pool().await
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(language = spec.language, %error, "runtime not available yet")
                    }
                }
            });
        }
    }

    /// Forgets finished jobs older than `keep_finished` (the count and byte bounds are
    /// kept as each job finishes).
    pub fn spawn_reaper(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let period = (this.settings.load().keep_finished / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(30));
            loop {
                tokio::time::sleep(period).await;
                this.jobs.enforce(this.retention());
            }
        });
    }

    pub fn retention(&self) -> Retention {
        Retention::from_settings(&self.settings.load())
    }

    /// Takes an event subscriber's place for `job`, or refuses with 429 when the job or
    /// the daemon has as many as configured.
    pub fn subscribe(self: &Arc<Self>, job: &Arc<Job>) -> Result<Subscription, Rejection> {
        let settings = self.settings.load();
        let take = |count: &AtomicUsize, max: usize| {
            count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok()
        };
        if !take(&self.subscribers, settings.max_subscribers) {
            return Err(Rejection::new(
                429,
                "too_many_subscribers",
                format!(
                    "{} event streams are open, the most the sandbox keeps; retry later",
                    settings.max_subscribers
                ),
            ));
        }
        if !take(&job.subscribers, settings.max_subscribers_per_job) {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::new(
                429,
                "too_many_subscribers",
                format!(
                    "job {} already has {} event streams, the most one job may have",
                    job.id, settings.max_subscribers_per_job
                ),
            ));
        }
        Ok(Subscription {
            service: self.clone(),
            job: job.clone(),
        })
    }

    /// Resolves the requested limits against the configured defaults and maximums.
    fn limits(&self, requested: Option<RequestedLimits>) -> Result<Limits, Rejection> {
        let defaults = jobs::limits_from_config(&self.settings.load().defaults);
        let maximums = jobs::limits_from_config(&self.settings.load().maximums);
        let requested = requested.unwrap_or_default();
        let pick = |name: &str, value: Option<u64>, default: u64, max: u64| match value {
            None => Ok(default),
            Some(0) => Err(Rejection::new(
                422,
                "invalid_limit",
                format!("limits.{name} must be greater than 0"),
            )),
            Some(value) if value > max => Err(Rejection::new(
                422,
                "limit_exceeds_maximum",
                format!("limits.{name} = {value} exceeds the maximum {max}"),
            )),
            Some(value) => Ok(value),
        };
        Ok(Limits {
            wall_ms: pick(
                "wall_ms",
                requested.wall_ms,
                defaults.wall_ms,
                maximums.wall_ms,
            )?,
            cpu_ms: pick("cpu_ms", requested.cpu_ms, defaults.cpu_ms, maximums.cpu_ms)?,
            memory_mb: pick(
                "memory_mb",
                requested.memory_mb,
                defaults.memory_mb,
                maximums.memory_mb,
            )?,
            output_bytes: pick(
                "output_bytes",
                requested.output_bytes,
                defaults.output_bytes,
                maximums.output_bytes,
            )?,
        })
    }

    /// Validates an admitted submission (`ticket` from [`Service::admit`]) and queues it;
    /// the job starts when a slot frees up.
    /// `id` is the one the control plane chose (`wire::sandbox::JOB_ID_HEADER`), if any.
    pub async fn submit(
        self: &Arc<Self>,
        submission: Submission,
        mut ticket: Ticket,
        id: Option<String>,
    ) -> Result<Arc<Job>, Rejection> {
        let language = Language::parse(&submission.language).ok_or_else(|| {
            Rejection::new(
                422,
                "unknown_language",
                format!(
                    "unknown language {:?}; expected python, javascript, wat or wasm",
                    submission.language
                ),
            )
        })?;
        let (source, app) =
            self.program_source(submission.source, submission.files, submission.entry)?;
        let stdin = submission.stdin.unwrap_or_default();
        if stdin.len() as u64 > self.settings.load().max_stdin_size {
            return Err(Rejection::new(
                413,
                "stdin_too_large",
                format!(
                    "stdin is {} bytes; the limit is {}",
                    stdin.len(),
                    self.settings.load().max_stdin_size
                ),
            ));
        }
        let limits = self.limits(submission.limits)?;
        let args = submission.args.unwrap_or_default();
        check_args(&args)?;
        let interactive = submission.interactive.unwrap_or(false);
        if interactive && submission.tests.is_some() {
            return Err(Rejection::new(
                422,
                "invalid_request",
                "a job with tests cannot be interactive",
            ));
        }
        let submitted_stdin = stdin.len() as u64;
        let callback = match &submission.callback_url {
            Some(url) => Some(
                webhook::check(url, &self.settings.load().callbacks.allow)
                    .await
                    .map_err(|error| {
                        let code = match error {
                            webhook::TargetError::NotAllowed { .. } => "callback_not_allowed",
                            _ => "invalid_callback_url",
                        };
                        Rejection::new(422, code, error.to_string())
                    })?,
            ),
            None => None,
        };
        let input = match submission.tests {
            Some(cases) => Input::Tests {
                cases: self.check_tests(cases)?,
                compare: submission.compare.unwrap_or_default(),
            },
            None => Input::Single {
                args,
                stdin: Bytes::from(stdin),
            },
        };
        let prepared = match language {
            Language::Python => Prepared::Runtime(runtimes::PYTHON),
            Language::Javascript => Prepared::Runtime(runtimes::JAVASCRIPT),
            Language::Wat | Language::Wasm => {
                Prepared::Module(self.prepare_module(language, source.clone()).await?)
            }
        };
        self.programs_prepared.fetch_add(1, Ordering::Relaxed);
        let launch = Launch {
            language,
            source: source.into(),
            app: app.map(Arc::new),
        };
        let mut job = Job::new(
            id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            language,
            limits,
            submission.scratch.unwrap_or(false),
        );
        if interactive {
            job = job.interactive(submitted_stdin);
        }
        if let Some(target) = callback {
            job = job.with_callback(target);
        }
        if let Some(app) = &launch.app {
            job = job.with_files(Arc::new(app.paths.clone()), Arc::new(app.guest_names()));
        }
        let job = Arc::new(job);
        if !self.jobs.insert(job.clone()) {
            return Err(Rejection::new(
                409,
                "job_exists",
                format!("a job with id {} exists on this node", job.id),
            ));
        }
        // From here the job owns the queue place: `run_job` gives it back.
        ticket.used = true;
        let this = self.clone();
        let span = tracing::info_span!("job", id = %job.id, language = language.name());
        let running_job = job.clone();
        self.jobs_runtime.spawn(
            async move { this.run_job(running_job, prepared, launch, input).await }
                .instrument(span),
        );
        Ok(job)
    }

    /// The program's text, from `source` or (checked and written to disk) from `files`
    /// with its `entry`.
    fn program_source(
        &self,
        source: Option<String>,
        files: Option<Vec<SourceFile>>,
        entry: Option<String>,
    ) -> Result<(String, Option<AppDir>), Rejection> {
        let settings = self.settings.load();
        match (source, files) {
            (Some(source), None) => {
                if entry.is_some() {
                    return Err(Rejection::new(
                        422,
                        "invalid_entry",
                        "`entry` goes with `files`, not with `source`",
                    ));
                }
                if source.len() as u64 > settings.max_source_size {
                    return Err(Rejection::new(
                        413,
                        "source_too_large",
                        format!(
                            "the source is {} bytes; the limit is {}",
                            source.len(),
                            settings.max_source_size
                        ),
                    ));
                }
                Ok((source, None))
            }
            (None, Some(files)) => {
                let app = app::prepare(files, entry, settings.max_files, settings.max_source_size)?;
                Ok((app.entry_source.clone(), Some(app)))
            }
            (None, None) => Err(Rejection::new(
                422,
                "invalid_request",
                "a job needs `source`, or `files` and `entry`",
            )),
            (Some(_), Some(_)) => Err(Rejection::new(
                422,
                "invalid_request",
                "give `source` or `files`, not both",
            )),
        }
    }

    /// Checks a judged job's cases against `max_test_cases` (422) and `max_tests_size`
    /// (413), and each case's stdin against `max_stdin_size` (413).
    fn check_tests(&self, cases: Vec<TestCase>) -> Result<Vec<TestCase>, Rejection> {
        let settings = self.settings.load();
        if cases.is_empty() {
            return Err(Rejection::new(
                422,
                "invalid_tests",
                "tests must hold at least one case",
            ));
        }
        if cases.len() > settings.max_test_cases {
            return Err(Rejection::new(
                422,
                "too_many_tests",
                format!(
                    "{} test cases; a job may have at most {}",
                    cases.len(),
                    settings.max_test_cases
                ),
            ));
        }
        let mut total = 0u64;
        for (index, case) in cases.iter().enumerate() {
            if case.stdin.len() as u64 > settings.max_stdin_size {
                return Err(Rejection::new(
                    413,
                    "stdin_too_large",
                    format!(
                        "tests[{index}].stdin is {} bytes; the limit is {}",
                        case.stdin.len(),
                        settings.max_stdin_size
                    ),
                ));
            }
            let args = case.args.as_deref().unwrap_or_default();
            check_args(args)?;
            total += (case.stdin.len()
                + case.expected_stdout.as_ref().map_or(0, String::len)
                + args.iter().map(String::len).sum::<usize>()) as u64;
        }
        if total > settings.max_tests_size {
            return Err(Rejection::new(
                413,
                "tests_too_large",
                format!(
                    "the test cases hold {total} bytes; the limit is {}",
                    settings.max_tests_size
                ),
            ));
        }
        Ok(cases)
    }

    /// Takes a queue place before anything of a submission is read, or refuses: 503
    /// while draining, 429 when slots and queue are full.
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, Rejection> {
        if self.is_draining() {
            return Err(Rejection::new(
                503,
                "draining",
                "the sandbox is shutting down",
            ));
        }
        let capacity = self.settings.load().max_concurrent_jobs + self.settings.load().queue_length;
        let mut current = self.waiting.load(Ordering::Acquire);
        loop {
            // Jobs waiting for a slot, plus those running, must fit slots + queue.
            let in_flight = current + self.running.load(Ordering::Acquire);
            if in_flight >= capacity {
                self.jobs.rejected_busy.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::new(
                    429,
                    "queue_full",
                    format!(
                        "{} jobs running and {} queued; try again shortly",
                        self.running.load(Ordering::Relaxed),
                        current
                    ),
                ));
            }
            match self.waiting.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(Ticket {
                        service: self.clone(),
                        used: false,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Parses, validates and pre-links a submitted module on a blocking thread, at most
    /// `compile_concurrency` at once (admission already bounds how many wait).
    async fn prepare_module(
        &self,
        language: Language,
        source: String,
    ) -> Result<InstancePre<JobCtx>, Rejection> {
        let _permit = self
            .compiling
            .acquire()
            .await
            .map_err(|error| Rejection::new(503, "draining", error.to_string()))?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || compile_module(&engine, language, &source))
            .await
            .map_err(|error| Rejection::new(500, "internal", error.to_string()))?
    }

    async fn run_job(
        self: Arc<Self>,
        job: Arc<Job>,
        prepared: Prepared,
        launch: Launch,
        input: Input,
    ) {
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = job.cancelled.notified() => None,
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let Some(permit) = permit else {
            self.finish(&job, cancelled());
            return;
        };
        if job.cancel_requested() {
            self.finish(&job, cancelled());
            return;
        }
        self.running.fetch_add(1, Ordering::AcqRel);
        let (pre, sampler, entry) = match prepared {
            Prepared::Module(pre) if self.line_sampling => {
                (pre, Sampler::Backtrace, EntryPoint::command())
            }
            Prepared::Module(pre) => (pre, Sampler::None, EntryPoint::command()),
            Prepared::Runtime(spec) => match self.engine.runtime(&spec).await {
                Ok(runtime) => {
                    let sampler = match job.language {
                        Language::Python if self.line_sampling => Sampler::Python(runtime.probe),
                        // A multi-file program's line would need the file too: none.
                        Language::Javascript if self.line_sampling && launch.app.is_none() => {
                            Sampler::JavaScript {
                                lines: launch.source.lines().count() as u32,
                            }
                        }
                        _ => Sampler::None,
                    };
                    (runtime.pre.clone(), sampler, runtime.entry())
                }
                Err(error) => {
                    self.running.fetch_sub(1, Ordering::AcqRel);
                    self.finish(
                        &job,
                        Outcome {
                            state: JobState::Failed,
                            exit_code: None,
                            error: Some(format!(
                                "the {} runtime is unavailable: {error}",
                                spec.language
                            )),
                        },
                    );
                    return;
                }
            },
        };
        job.mark_running();
        tracing::debug!("job running");
        let scratch = job.scratch.then(|| {
            let settings = self.settings.load();
            exec::ScratchLimits {
                bytes: settings.scratch_size,
                files: settings.scratch_files,
            }
        });
        let outcome = match input {
            Input::Single { args, stdin } => {
                let (argv, stdin) = launch.invocation(&entry, None, &args, &stdin);
                let program = Program {
                    pre,
                    entry,
                    argv,
                    stdin,
                    sampler,
                    scratch,
                    app: launch.app.clone(),
                };
                self.run_instance(&job, program).await
            }
            Input::Tests { cases, compare } => {
                let tests = Tests {
                    pre,
                    entry,
                    sampler,
                    scratch,
                    launch,
                    cases,
                    compare,
                    code: std::sync::OnceLock::new(),
                };
                self.judge(&job, tests).await
            }
        };
        self.running.fetch_sub(1, Ordering::AcqRel);
        // The slot is free before the job is seen finished: a client that submits its
        // next job on seeing this one's result finds the slot free (a judged job that
        // looks for free slots at once would otherwise miss it).
        drop(permit);
        self.finish(&job, outcome);
    }

    /// Runs `program` for `job` in a pre-started instance when one is ready, else in a
    /// fresh one.
    async fn run_instance(self: &Arc<Self>, job: &Arc<Job>, program: Program) -> Outcome {
        // Preopens are fixed when an instance starts: a program with files needs its own.
        let prestarted = match program.app {
            Some(_) => None,
            None => self.take_prestarted(job),
        };
        match prestarted {
            Some(started) => started.run(job.clone(), program.stdin).await,
            None => exec::run(job.clone(), program).await,
        }
    }

    /// Runs every case of a judged job, each in its own fresh instance of the program
    /// prepared once, with the job's limits. The job's own slot runs cases one after the
    /// other; up to `max_parallel_cases - 1` more slots that are free when judging starts
    /// (a free slot is never taken from a queued job: the semaphore hands released
    /// permits to waiters first) run cases beside it once a case has taken
    /// [`PARALLEL_CASES_AFTER`], and are given back at the end. Results are recorded in
    /// case order; a cancel of the job stops the running cases and skips the rest.
    async fn judge(self: &Arc<Self>, job: &Arc<Job>, tests: Tests) -> Outcome {
        let total = tests.cases.len();
        job.start_tests(total as u32, tests.compare);
        // A Python program is compiled once beside the first cases, which compile the
        // source themselves until its code is there (the same code either way).
        let compile = async {
            if job.language == Language::Python
                && total > 1
                && let Some(code) = self.compile_once(job, &tests).await
            {
                let _ = tests.code.set(code);
            }
        };
        let wanted = self
            .settings
            .load()
            .max_parallel_cases
            .min(total)
            .saturating_sub(1);
        let extra: Vec<_> = (0..wanted)
            .map_while(|_| self.slots.clone().try_acquire_owned().ok())
            .collect();
        let lanes = 1 + extra.len();
        tracing::debug!(lanes, total, "judging");
        let next = AtomicUsize::new(0);
        // Set (and the waiting extra lanes woken) once a case has taken long enough for a
        // second instance beside it to pay, or when every case has been taken.
        let slow = AtomicBool::new(false);
        let slow_seen = tokio::sync::Notify::new();
        // Finished cases not yet recorded because an earlier one is still running.
        let pending = std::sync::Mutex::new(JudgedCases {
            next: 0,
            done: std::collections::BTreeMap::new(),
        });
        let lane = || async {
            loop {
                let index = next.fetch_add(1, Ordering::AcqRel);
                if index >= total || job.cancel_requested() {
                    break;
                }
                let started = std::time::Instant::now();
                let result = self.judge_case(job, &tests, index).await;
                if started.elapsed() >= PARALLEL_CASES_AFTER && !slow.swap(true, Ordering::AcqRel) {
                    slow_seen.notify_waiters();
                }
                let Some(result) = result else { break };
                let mut guard = pending.lock().unwrap_or_else(|p| p.into_inner());
                let pending = &mut *guard;
                pending.done.insert(index, result);
                while let Some(result) = pending.done.remove(&pending.next) {
                    job.push_case(result);
                    pending.next += 1;
                }
            }
        };
        let first_lane = async {
            lane().await;
            // Every case is taken: extra lanes still waiting have nothing left to join.
            slow.store(true, Ordering::Release);
            slow_seen.notify_waiters();
        };
        let extra_lane = || async {
            let woken = slow_seen.notified();
            tokio::pin!(woken);
            // Registered before the check, so a wake-up between the two is not lost.
            woken.as_mut().enable();
            if !slow.load(Ordering::Acquire) {
                woken.await;
            }
            lane().await;
        };
        futures_util::future::join3(
            compile,
            first_lane,
            futures_util::future::join_all((1..lanes).map(|_| extra_lane())),
        )
        .await;
        drop(extra);
        if job.cancel_requested() {
            return Outcome {
                state: JobState::Cancelled,
                exit_code: None,
                error: Some("cancelled".into()),
            };
        }
        Outcome {
            state: JobState::Succeeded,
            exit_code: None,
            error: None,
        }
    }

    /// A judged Python program compiled once in an instance of its own, as the `marshal`
    /// form of its code object, which each case then loads instead of compiling the
    /// source again. `None` (every case compiles the source, with the same result) when
    /// it does not compile, or the instance failed or ran out of the job's limits or of
    /// [`MAX_COMPILED`].
    async fn compile_once(self: &Arc<Self>, job: &Arc<Job>, tests: &Tests) -> Option<Bytes> {
        let entry = tests.launch.app.as_ref().map(|app| app.guest_entry());
        let limits = Limits {
            output_bytes: MAX_COMPILED,
            ..job.limits
        };
        let compile_job = Arc::new(Job::new(
            format!("{}/compile", job.id),
            job.language,
            limits,
            false,
        ));
        compile_job.mark_running();
        let (argv, _) = tests.launch.invocation(&tests.entry, None, &[], &[]);
        let program = Program {
            pre: tests.pre.clone(),
            entry: tests.entry.clone(),
            argv,
            stdin: pyline::bootstrap_stdin(
                tests.launch.source.as_bytes(),
                pyline::Form::Compile,
                &[],
                entry.as_deref().unwrap_or(""),
                &[],
            ),
            sampler: Sampler::None,
            scratch: None,
            app: tests.launch.app.clone(),
        };
        let outcome =
            until_parent_cancels(job, &compile_job, exec::run(compile_job.clone(), program)).await;
        // Its CPU is the judged job's.
        job.cpu_ticks.fetch_add(
            compile_job.cpu_ticks.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let code = compile_job.output(Stream::Stdout);
        let ok = outcome.state == JobState::Succeeded && !compile_job.head().truncated;
        tracing::debug!(ok, bytes = code.len(), "judged program compiled once");
        (ok && !code.is_empty()).then(|| Bytes::from(code))
    }

    /// Runs case `index` of a judged job in its own fresh instance and judges it; `None`
    /// when the job was cancelled meanwhile.
    async fn judge_case(
        self: &Arc<Self>,
        job: &Arc<Job>,
        tests: &Tests,
        index: usize,
    ) -> Option<edgebox_wire::sandbox::CaseResult> {
        let case = &tests.cases[index];
        // The case's own job: its output, limits, line and stop flags, not in the table.
        let case_job = Arc::new(
            Job::new(
                format!("{}/{index}", job.id),
                job.language,
                job.limits,
                job.scratch,
            )
            .with_files(job.file_paths.clone(), job.guest_files.clone()),
        );
        case_job.mark_running();
        let running = RunningCase {
            index: index as u32,
            total: tests.cases.len() as u32,
            name: case.name.clone(),
        };
        job.case_started(running, case_job.clone());
        let (argv, stdin) = tests.launch.invocation(
            &tests.entry,
            tests.code.get().map(|code| &code[..]),
            case.args.as_deref().unwrap_or_default(),
            case.stdin.as_bytes(),
        );
        let program = Program {
            pre: tests.pre.clone(),
            entry: tests.entry.clone(),
            argv,
            stdin,
            sampler: tests.sampler.clone(),
            scratch: tests.scratch,
            app: tests.launch.app.clone(),
        };
        let outcome =
            until_parent_cancels(job, &case_job, self.run_instance(&case_job, program)).await;
        let (state, exit_code, error) = (outcome.state, outcome.exit_code, outcome.error.clone());
        case_job.finish(outcome, |_, _| {});
        let head = case_job.head();
        job.case_stopped(index as u32, head.cpu_ms);
        if job.cancel_requested() {
            return None;
        }
        let stdout = case_job.output(Stream::Stdout);
        let stderr = case_job.output(Stream::Stderr);
        let result = judge::judge(
            index,
            case,
            tests.compare,
            judge::CaseRun {
                state,
                exit_code,
                error,
                stdout: &stdout,
                stderr: &stderr,
                truncated: head.truncated,
                runtime_ms: head.runtime_ms,
                cpu_ms: head.cpu_ms,
            },
        );
        tracing::debug!(case = index, verdict = result.verdict.name(), "case judged");
        Some(result)
    }

    /// A pre-started CPython instance for `job` if one is ready (jobs with a scratch
    /// directory get a fresh one, since preopens are fixed at start), refilling the pool.
    fn take_prestarted(self: &Arc<Self>, job: &Job) -> Option<exec::Started> {
        // A snapshot runtime starts in microseconds from its image: nothing to pre-start.
        if job.language != Language::Python
            || job.scratch
            || runtimes::PYTHON.entry == runtimes::Entry::Snapshot
        {
            return None;
        }
        let started = self
            .python_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let this = self.clone();
        self.jobs_runtime
            .spawn(async move { this.refill_pool().await });
        started
    }

    /// Starts CPython instances until `max_concurrent_jobs` wait for a job: each has done
    /// the interpreter's start-up and blocks reading its job from stdin.
    pub async fn refill_pool(self: &Arc<Self>) {
        if runtimes::PYTHON.entry == runtimes::Entry::Snapshot {
            return;
        }
        let Ok(runtime) = self.engine.runtime(&runtimes::PYTHON).await else {
            return;
        };
        let _guard = self.refilling.lock().await;
        while self
            .python_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            < self.settings.load().max_concurrent_jobs
            && !self.is_draining()
        {
            let program = Program {
                pre: runtime.pre.clone(),
                entry: runtime.entry(),
                argv: pyline::bootstrap_argv(),
                stdin: Bytes::new(),
                sampler: match runtime.probe {
                    Some(probe) if self.line_sampling => Sampler::Python(Some(probe)),
                    _ => Sampler::None,
                },
                scratch: None,
                app: None,
            };
            match exec::start(program, self.settings.load().maximums.memory as usize, None) {
                Ok(started) => self
                    .python_pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(started),
                Err(outcome) => {
                    tracing::warn!(error = ?outcome.error, "could not pre-start a Python instance");
                    return;
                }
            }
        }
    }

    fn finish(&self, job: &Arc<Job>, outcome: Outcome) {
        tracing::info!(state = outcome.state.name(), exit_code = ?outcome.exit_code, error = ?outcome.error, "job finished");
        let retention = self.retention();
        job.finish(outcome, |state, bytes| {
            self.jobs.retire(&job.id, state, bytes, retention)
        });
        if job.callback_target.is_some() {
            let callbacks = self.settings.load().callbacks.clone();
            let job = job.clone();
            self.jobs_runtime
                .spawn(async move { deliver_callback(job, callbacks).await }.in_current_span());
        }
    }

    /// Stops taking jobs, lets running ones finish for up to `grace`, then cancels the rest.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Release);
        edgebox_node::shutdown::drain(grace, || {
            self.jobs.all().iter().all(|job| job.state().is_final())
        })
        .await;
        for job in self.jobs.all() {
            job.cancel();
        }
    }
}

/// POSTs a finished job's view to its callback, signed with the deployment's callback
/// key, recording every attempt in the job.
async fn deliver_callback(job: Arc<Job>, callbacks: edgebox_config::CallbackSettings) {
    let Some(target) = &job.callback_target else {
        return;
    };
    let now = || {
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let key = match edgebox_node::secrets::resolve("callback", &callbacks.secret, true) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(%error, "no callback key; the callback is not sent");
            let attempt = CallbackAttempt {
                at: now(),
                status: None,
                error: Some(format!("the callback key is unavailable: {error}")),
                elapsed_ms: 0,
            };
            job.record_callback(attempt, CallbackState::Failed);
            return;
        }
    };
    let body: Vec<u8> = ViewPieces::view(job.snapshot())
        .flat_map(|piece| piece.to_vec())
        .collect();
    let policy = webhook::Policy {
        attempts: callbacks.attempts,
        timeout: callbacks.timeout,
        backoff: callbacks.backoff,
        ca_file: callbacks.ca_file.clone(),
    };
    let mut tried = 0;
    let delivered = webhook::deliver(
        target,
        &callbacks.allow,
        Bytes::from(body),
        key.as_bytes(),
        &policy,
        |report| {
            tried += 1;
            let delivered = report.error.is_none();
            let state = match (delivered, tried >= policy.attempts) {
                (true, _) => CallbackState::Delivered,
                (false, true) => CallbackState::Failed,
                (false, false) => CallbackState::Pending,
            };
            let at = time::OffsetDateTime::from(report.started)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            job.record_callback(
                CallbackAttempt {
                    at,
                    status: report.status,
                    error: report.error,
                    elapsed_ms: report.elapsed.as_millis() as u64,
                },
                state,
            );
        },
    )
    .await;
    tracing::info!(url = %target.url, delivered, attempts = tried, "callback done");
}

/// WAT → binary (with DWARF line tables) or base64 → binary, then validation, the WASI
/// command check and pre-linking: everything a submitted module costs before it runs.
fn compile_module(
    engine: &SandboxEngine,
    language: Language,
    source: &str,
) -> Result<InstancePre<JobCtx>, Rejection> {
    let bytes = match language {
        // Line tables in DWARF so that the current line of a WAT job is known.
        Language::Wat => wat::Parser::new()
            .generate_dwarf(wat::GenerateDwarf::Lines)
            .parse_str(Some(std::path::Path::new("main.wat")), source)
            .map_err(|error| {
                Rejection::new(422, "invalid_module", format!("invalid WAT: {error}"))
            })?,
        _ => base64::engine::general_purpose::STANDARD
            .decode(source.trim())
            .map_err(|error| {
                Rejection::new(
                    422,
                    "invalid_base64",
                    format!("a wasm source must be the module in base64: {error}"),
                )
            })?,
    };
    let module = Module::new(&engine.engine, &bytes).map_err(|error| {
        Rejection::new(
            422,
            "invalid_module",
            format!("the module fails validation: {error:#}"),
        )
    })?;
    if !module
        .exports()
        .any(|export| export.name() == "_start" && export.ty().func().is_some())
    {
        return Err(Rejection::new(
            422,
            "not_a_command",
            "the module does not export a `_start` function (a WASI command)",
        ));
    }
    if !module.exports().any(|export| export.name() == "memory") {
        tracing::debug!("module exports no memory");
    }
    engine.linker.instantiate_pre(&module).map_err(|error| {
        Rejection::new(
            422,
            "unsupported_import",
            format!(
                "the module imports something the sandbox does not provide \
                 (only wasi_snapshot_preview1): {error:#}"
            ),
        )
    })
}

fn cancelled() -> Outcome {
    Outcome {
        state: JobState::Cancelled,
        exit_code: None,
        error: Some("cancelled before it started".into()),
    }
}
