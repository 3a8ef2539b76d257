//! The one JSON error envelope every edgebox HTTP API answers with.

use serde::{Deserialize, Serialize};

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                diagnostics: None,
            },
        }
    }

    /// An `invalid_config` error listing every problem found.
    pub fn invalid_config(message: impl Into<String>, diagnostics: Vec<ConfigDiagnostic>) -> Self {
        let mut body = Self::new("invalid_config", message);
        body.error.diagnostics = Some(diagnostics);
        body
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `unauthorized`, `invalid_config`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// For `invalid_config`: every problem found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<ConfigDiagnostic>>,
}

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigDiagnostic {
    /// Key path such as `nodes[2].parent`; empty for syntax errors.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl From<&edgebox_config::Diagnostic> for ConfigDiagnostic {
    fn from(d: &edgebox_config::Diagnostic) -> Self {
        Self {
            path: d.path.clone(),
            line: d.line,
            column: d.column,
            message: d.message.clone(),
        }
    }
}
