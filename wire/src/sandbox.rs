//! The sandbox's job API (`/v1/jobs`, `/v1/run`, `/v1/jobs/{id}/events`, `/v1/stats`,
//! `/v1/languages`), which the control plane relays unchanged: the sandbox serializes
//! these, the control plane, the CLI and the tests deserialize them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A language the sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
    Wat,
    Wasm,
}

impl Language {
    pub const ALL: [Language; 4] = [
        Language::Python,
        Language::Javascript,
        Language::Wat,
        Language::Wasm,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|language| language.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Javascript => "javascript",
            Self::Wat => "wat",
            Self::Wasm => "wasm",
        }
    }
}

/// Where a job is in its life. Every state but `queued` and `running` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    MemoryExceeded,
    OutputExceeded,
    /// The job's scratch directory reached its byte or file-count quota.
    ScratchExceeded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::MemoryExceeded,
        JobState::OutputExceeded,
        JobState::ScratchExceeded,
        JobState::Cancelled,
    ];

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::MemoryExceeded => "memory_exceeded",
            JobState::OutputExceeded => "output_exceeded",
            JobState::ScratchExceeded => "scratch_exceeded",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// `POST /v1/jobs` and `POST /v1/run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `python`, `javascript`, `wat` or `wasm` (base64). A string, so that an unknown
    /// language is a 422 naming the choices rather than a JSON shape error.
    pub language: String,
    /// The program as one text; or give `files` and `entry` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A program of several files (at most `sandbox.max_files`, `sandbox.max_source_size`
    /// bytes together), read-only under `/app`; `entry` names the one that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<SourceFile>>,
    /// The path (as in `files`) of the file that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RequestedLimits>,
    /// Give the job a writable `/scratch` directory (bounded in bytes and files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<bool>,
    /// Judge the program on these cases (at most `sandbox.max_test_cases`): it is
    /// prepared once and each case runs in its own fresh instance with the job's limits.
    /// The job's own `stdin` and `args` are then not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<TestCase>>,
    /// How a case's stdout is compared with its `expected_stdout` (default
    /// `trim_trailing_whitespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareMode>,
    /// Keep stdin open after `stdin` until the events socket sends `stdin_eof`: the
    /// program reads what the socket's `stdin` messages send, as they arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// When the job ends, its final view is POSTed here (signed: `X-Edgebox-Timestamp`,
    /// `X-Edgebox-Signature`). Only destinations in `sandbox.callbacks.allow`; `http://`
    /// or `https://` (the certificate verified against the system roots and
    /// `sandbox.callbacks.ca_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// The delivery of a job's callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackView {
    pub url: String,
    pub state: CallbackState,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<CallbackAttempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// The job has not ended, or delivery is still being tried.
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackAttempt {
    /// RFC 3339.
    pub at: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// One file of a multi-file program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Relative, `/`-separated, no `..` (e.g. `pkg/util.py`); it appears as `/app/<path>`.
    pub path: String,
    pub content: String,
    /// Absent: `utf8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<FileEncoding>,
}

/// How a [`SourceFile`]'s `content` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    #[default]
    Utf8,
    Base64,
}

/// A line of one of a multi-file program's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceLocation {
    /// As submitted in `files`.
    pub path: String,
    pub line: u32,
}

/// One test case of a judged job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub stdin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Absent: stdout is not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_stdout: Option<String>,
    /// Absent: 0 is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_exit_code: Option<i32>,
}

/// How stdout is compared with the expected output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    /// Byte for byte.
    Exact,
    /// Line by line with trailing whitespace (and trailing empty lines) ignored.
    #[default]
    TrimTrailingWhitespace,
    /// The whitespace-separated tokens in order.
    Tokens,
}

/// How a test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    WrongAnswer,
    RuntimeError,
    TimedOut,
    MemoryExceeded,
    OutputExceeded,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::WrongAnswer => "wrong_answer",
            Verdict::RuntimeError => "runtime_error",
            Verdict::TimedOut => "timed_out",
            Verdict::MemoryExceeded => "memory_exceeded",
            Verdict::OutputExceeded => "output_exceeded",
        }
    }
}

/// The first line where a case's stdout differs from the expected output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FirstDifference {
    /// 1-based.
    pub line: u32,
    /// The expected line; absent when the expected output has no such line.
    pub expected: Option<String>,
    /// The line the program printed; absent when it printed no such line.
    pub actual: Option<String>,
}

/// One judged case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaseResult {
    /// 0-based position in `tests`.
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub verdict: Verdict,
    pub runtime_ms: u64,
    pub cpu_ms: u64,
    pub exit_code: Option<i32>,
    /// At most [`MAX_CASE_OUTPUT`] bytes of each stream are kept.
    pub stdout: String,
    pub stderr: String,
    /// Some output was dropped (the job's output limit or the per-case cap).
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<FirstDifference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Bytes of each stream a [`CaseResult`] keeps (the whole output is judged).
pub const MAX_CASE_OUTPUT: usize = 16 * 1024;

/// The judging of a job with `tests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestSummary {
    pub passed: u32,
    pub total: u32,
    pub compare: CompareMode,
    /// `accepted` when every case was; otherwise the first failing case's verdict.
    /// Absent until every case has run (or when the job was cancelled first).
    pub verdict: Option<Verdict>,
    /// The cases run so far, in order.
    pub cases: Vec<CaseResult>,
}

/// The case a judged job is running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningCase {
    pub index: u32,
    pub total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Limits a job asks for; each absent one takes the configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// The limits a job runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLimits {
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub memory_mb: u64,
    /// Per stream (stdout and stderr each).
    pub output_bytes: u64,
}

/// `202` to `POST /v1/jobs`: where to follow the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    pub id: String,
    pub state: JobState,
    /// `/v1/jobs/{id}`.
    pub status_url: String,
    /// `/v1/jobs/{id}/events` (WebSocket).
    pub events_url: String,
}

/// `GET /v1/jobs/{id}`, the answer of `POST /v1/run` and `DELETE /v1/jobs/{id}`, and the
/// body of the final `result` event. Output is UTF-8 with invalid bytes replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    #[serde(flatten)]
    pub head: JobHead,
    pub stdout: String,
    pub stderr: String,
}

/// Everything of a [`JobView`] but its output. The sandbox writes this part with serde
/// and streams the output after it, so a large output is never built into one string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobHead {
    pub id: String,
    pub language: Language,
    pub state: JobState,
    /// RFC 3339, when the job started running.
    pub start_time: Option<String>,
    pub runtime_ms: u64,
    pub cpu_ms: u64,
    /// Line of the submitted source being executed, where known.
    pub current_line: Option<u32>,
    /// Multi-file programs: the file and line being executed, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_location: Option<SourceLocation>,
    pub exit_code: Option<i32>,
    /// Some output was dropped (a limit was reached).
    pub truncated: bool,
    pub limits: JobLimits,
    pub scratch: bool,
    pub error: Option<String>,
    /// Jobs with `tests`: the judging so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
    /// Jobs with a `callback_url`: its delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackView>,
}

/// The short status sent over the events socket at least every 100 ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    pub start_time: Option<String>,
    pub runtime_ms: u64,
    pub cpu_ms: u64,
    pub current_line: Option<u32>,
    /// Multi-file programs: the file and line being executed, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_location: Option<SourceLocation>,
    /// Jobs with `tests`: the case running now (`current_line` is that case's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<RunningCase>,
}

/// Which output stream a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A run of output, in the order the guest wrote it. One write may arrive as several
/// chunks (each at most [`MAX_OUTPUT_CHUNK`] bytes of output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub data: String,
}

/// Output bytes per `output` event at most, so that no event grows with the output.
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// The largest events message a job with per-stream output limit `output_bytes` can
/// produce: its `result`, with both streams escaped at worst (`\u0000` is six bytes per
/// byte), plus room for the rest of the view. Both ends of an events socket size their
/// message limit with this.
pub fn max_event_message(output_bytes: u64) -> usize {
    let output = usize::try_from(output_bytes).unwrap_or(usize::MAX);
    output.saturating_mul(2 * 6).saturating_add(64 * 1024)
}

/// One message of `GET /v1/jobs/{id}/events`: what a subscriber missed first (output so
/// far), then output as it comes and statuses, and finally the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    Status(JobStatus),
    Output(OutputChunk),
    /// A judged job's case has finished (its result, as in the final view).
    Case(CaseResult),
    /// A client message was refused (the job goes on).
    Error(EventError),
    Result(JobView),
}

/// Why the events socket refused a client message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventError {
    /// `invalid_message`, `not_interactive`, `stdin_closed`, `stdin_too_large`,
    /// `job_finished`.
    pub code: String,
    pub message: String,
}

/// What a client may send on a job's events socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// More stdin for an interactive job (counted against `max_stdin_size`).
    Stdin { data: String },
    /// Closes an interactive job's stdin: its next read sees end of file.
    StdinEof,
    /// Cancels the job, as `DELETE /v1/jobs/{id}` does.
    Cancel,
}

/// `GET /v1/stats` of a sandbox node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxStats {
    pub node: String,
    /// Jobs the sandbox holds now, by state (every state present).
    pub jobs: BTreeMap<JobState, u64>,
    /// Jobs finished since start, by final state.
    pub finished_total: BTreeMap<JobState, u64>,
    pub running: u64,
    pub queued: u64,
    pub submitted: u64,
    /// Submissions refused with 429 (queue full).
    pub rejected_busy: u64,
    pub max_concurrent_jobs: u64,
    pub queue_length: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub runtime_dir: PathBuf,
    /// Finished jobs kept readable, and what they hold.
    pub retained: RetainedStats,
    /// Event subscribers connected now.
    pub subscribers: u64,
    /// Programs prepared (modules compiled and pre-linked, runtimes resolved) since
    /// start: one per job, however many test cases it has.
    pub programs_prepared: u64,
}

/// The header by which the control plane names the job it submits (`POST /v1/jobs`,
/// `/v1/run`), so that a job moved to another sandbox node keeps its id. A sandbox
/// honours it only from a caller holding its node credential.
pub const JOB_ID_HEADER: &str = "x-edgebox-job-id";

/// `GET /v1/queue` of a sandbox node (node credential only): its load and the jobs
/// waiting for a slot, which the control plane polls to choose nodes and to know which
/// of the jobs it placed have started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueReport {
    pub node: String,
    /// Changes whenever the sandbox process restarts: jobs it held before are gone.
    pub instance: String,
    pub running: u64,
    pub queued: u64,
    pub max_concurrent_jobs: u64,
    pub queue_length: u64,
    /// Ids of the jobs waiting for a slot (at most slots + queue of them).
    pub queued_ids: Vec<String>,
}

/// The finished jobs the sandbox keeps, against their bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetainedStats {
    pub jobs: u64,
    /// Bytes accounted to them (output plus bookkeeping).
    pub bytes: u64,
    pub max_jobs: u64,
    pub max_bytes: u64,
    /// Finished jobs forgotten early (oldest first) to stay within the bounds.
    pub evicted_total: u64,
}

/// `GET /v1/languages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Languages {
    pub languages: Vec<LanguageInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LanguageInfo {
    pub name: Language,
    pub version: String,
    /// The pinned runtime package, for interpreted languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeInfo>,
    /// Whether the current line is known: always, never, or a condition.
    pub current_line: LineSupport,
    /// Packages importable beyond the language's standard library ("name version").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeInfo {
    pub package: String,
    pub package_version: String,
    pub file: String,
    pub sha256: String,
}

/// `true`/`false`, or the condition under which the line is known (`"with DWARF"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LineSupport {
    Known(bool),
    When(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_by_type() {
        let event = JobEvent::Output(OutputChunk {
            stream: OutputStream::Stderr,
            data: "x".into(),
        });
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text, r#"{"type":"output","stream":"stderr","data":"x"}"#);
        assert_eq!(serde_json::from_str::<JobEvent>(&text).unwrap(), event);
    }

    #[test]
    fn states_serialize_as_map_keys() {
        let jobs: BTreeMap<JobState, u64> = JobState::ALL.into_iter().map(|s| (s, 1)).collect();
        let text = serde_json::to_string(&jobs).unwrap();
        assert!(text.starts_with(r#"{"queued":1,"running":1,"#), "{text}");
        assert!(text.contains(r#""scratch_exceeded":1"#));
        assert_eq!(
            serde_json::from_str::<BTreeMap<JobState, u64>>(&text).unwrap(),
            jobs
        );
        for state in JobState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
    }
}
