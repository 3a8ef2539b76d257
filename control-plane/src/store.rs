//! Versioned deployment configs on disk, written atomically.
//!
//! Layout under `<node_data_dir>/config/`:
//! - `versions/000042.toml` — the text of version 42, exactly as submitted;
//! - `versions/000042.json` — its metadata (time, how it came to be, SHA-256, size);
//! - `current` — the current version number.
//!
//! Every file is written as temp file → fsync → rename → fsync of the directory, and a
//! version's files are complete before `current` names it, so a crash at any point
//! leaves either the old or the new current version, never a torn one. Versions only
//! ever get added: a rollback makes a new version with an old text.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use edgebox_wire::control_plane::HistoryEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Metadata kept beside each version's text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: u64,
    pub created_at: String,
    pub source: String,
    pub sha256: String,
    pub bytes: u64,
}

impl From<&VersionMeta> for HistoryEntry {
    fn from(meta: &VersionMeta) -> Self {
        Self {
            version: meta.version,
            created_at: meta.created_at.clone(),
            source: meta.source.clone(),
            sha256: meta.sha256.clone(),
            bytes: meta.bytes,
        }
    }
}

/// The persisted history.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Oldest first; the last one is current.
    history: Vec<VersionMeta>,
}

impl Store {
    /// Opens the store in `dir`, creating it when missing. Returns the store and the
    /// current version's text when one is persisted.
    pub fn open(dir: &Path) -> Result<(Self, Option<String>), StoreError> {
        let versions = dir.join("versions");
        fs::create_dir_all(&versions).map_err(|source| StoreError::Io {
            action: "create",
            path: versions.clone(),
            source,
        })?;
        let mut store = Self {
            dir: dir.to_path_buf(),
            history: Vec::new(),
        };
        let current_path = dir.join("current");
        let current = match fs::read_to_string(&current_path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt {
                    path: current_path.clone(),
                    message: format!("not a version number: {:?}", text.trim()),
                })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((store, None)),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path: current_path,
                    source,
                });
            }
        };
        // Versions newer than `current` are leftovers of a write that crashed before
        // the pointer moved; they are not history and get overwritten.
        for version in 1..=current {
            let meta_path = store.meta_path(version);
            let meta: VersionMeta = match fs::read(&meta_path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                    path: meta_path.clone(),
                    message: err.to_string(),
                })?,
                // A gap can only come from someone deleting files by hand; keep going.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && version != current => {
                    continue;
                }
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "read",
                        path: meta_path,
                        source,
                    });
                }
            };
            store.history.push(meta);
        }
        let text = store.text(current)?;
        Ok((store, Some(text)))
    }

    pub fn current(&self) -> Option<&VersionMeta> {
        self.history.last()
    }

    pub fn history(&self) -> &[VersionMeta] {
        &self.history
    }

    pub fn meta(&self, version: u64) -> Option<&VersionMeta> {
        self.history.iter().find(|meta| meta.version == version)
    }

    /// The text of `version`, checked against its recorded SHA-256.
    pub fn text(&self, version: u64) -> Result<String, StoreError> {
        let path = self.toml_path(version);
        let text = fs::read_to_string(&path).map_err(|source| StoreError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        if let Some(meta) = self.meta(version) {
            let sha = sha256_hex(&text);
            if sha != meta.sha256 {
                return Err(StoreError::Corrupt {
                    path,
                    message: format!("checksum {sha} does not match recorded {}", meta.sha256),
                });
            }
        }
        Ok(text)
    }

    /// Persists `text` as the next version and makes it current.
    pub fn append(&mut self, text: &str, source: String) -> Result<VersionMeta, StoreError> {
        let version = self.current().map_or(1, |meta| meta.version + 1);
        let meta = VersionMeta {
            version,
            created_at: now_rfc3339(),
            source,
            sha256: sha256_hex(text),
            bytes: text.len() as u64,
        };
        let meta_json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
        write_atomic(&self.toml_path(version), text.as_bytes())?;
        write_atomic(&self.meta_path(version), &meta_json)?;
        write_atomic(&self.dir.join("current"), format!("{version}\n").as_bytes())?;
        self.history.push(meta.clone());
        Ok(meta)
    }

    fn toml_path(&self, version: u64) -> PathBuf {
        self.dir.join("versions").join(format!("{version:06}.toml"))
    }

    fn meta_path(&self, version: u64) -> PathBuf {
        self.dir.join("versions").join(format!("{version:06}.json"))
    }
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Replaces `path` with `bytes` so that readers (and a crash) see the old or the new
/// contents, never a mix ([`edgebox_node::fs::atomic_write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    edgebox_node::fs::atomic_write(path, bytes).map_err(|source| StoreError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reopens_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, current) = Store::open(dir.path()).unwrap();
        assert!(current.is_none());
        store.append("a = 1\n", "startup".into()).unwrap();
        store.append("a = 2\n", "api".into()).unwrap();
        let (store, current) = Store::open(dir.path()).unwrap();
        assert_eq!(current.as_deref(), Some("a = 2\n"));
        let versions: Vec<u64> = store.history().iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2]);
        assert_eq!(store.text(1).unwrap(), "a = 1\n");
    }

    #[test]
    fn ignores_versions_the_pointer_never_reached_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.append("a = 1\n", "startup".into()).unwrap();
        // A crash after writing version 2's text but before moving `current`.
        fs::write(dir.path().join("versions/000002.toml"), "torn").unwrap();
        let (mut store, current) = Store::open(dir.path()).unwrap();
        assert_eq!(current.as_deref(), Some("a = 1\n"));
        assert_eq!(store.append("a = 3\n", "api".into()).unwrap().version, 2);
        fs::write(dir.path().join("versions/000002.toml"), "a = 4\n").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
