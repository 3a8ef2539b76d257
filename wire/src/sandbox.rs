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
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RequestedLimits>,
    /// Give the job a writable `/scratch` directory (bounded in bytes and files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<bool>,
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
    pub exit_code: Option<i32>,
    /// Some output was dropped (a limit was reached).
    pub truncated: bool,
    pub limits: JobLimits,
    pub scratch: bool,
    pub error: Option<String>,
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
    Result(JobView),
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
