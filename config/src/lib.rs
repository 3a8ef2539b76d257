//! The edgebox deployment file: raw TOML structs, one validation step, checked types.
//!
//! Every daemon and the CLI load configuration through [`load`], so `edgebox
//! check-config` runs exactly the checks a daemon runs at start-up and on reload.

mod cidr;
pub mod decode;
mod diagnostics;
pub mod model;
mod pattern;
mod raw;
pub mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use cidr::Cidr;
pub use diagnostics::{
    Collector, ConfigErrors, Diagnostic, join as join_key_path, write_diagnostics,
};
pub use model::*;
pub use pattern::{PathPattern, PatternError};
pub use validate::parse;

/// The default deployment shipped inside the binary, with its comments.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Name used for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Exit code for configuration errors (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// Where a deployment is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigLocation {
    Embedded,
    File(PathBuf),
}

impl ConfigLocation {
    pub fn from_arg(path: Option<PathBuf>) -> Self {
        path.map_or(Self::Embedded, Self::File)
    }
}

/// Reads and checks a deployment. Relative paths in a file resolve against its
/// directory; in the embedded default, against the current directory: this is the one
/// place the process's current directory matters, and the result is kept as
/// [`Deployment::base_dir`].
pub fn load(location: &ConfigLocation) -> Result<Deployment, ConfigErrors> {
    match location {
        ConfigLocation::Embedded => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, &cwd)
        }
        ConfigLocation::File(path) => load_file(path),
    }
}

/// Reads and checks a deployment file.
pub fn load_file(path: &Path) -> Result<Deployment, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
        file: path.display().to_string(),
        diagnostics: vec![Diagnostic {
            path: String::new(),
            line: None,
            column: None,
            message: format!("cannot read: {err}"),
        }],
    })?;
    parse(&text, &path.display().to_string(), &base_dir_of_file(path))
}

/// The absolute directory a file's relative paths resolve against: the file's own.
pub fn base_dir_of_file(path: &Path) -> PathBuf {
    let base_dir = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::path::absolute(&base_dir).unwrap_or(base_dir)
}

#[cfg(test)]
mod tests;
