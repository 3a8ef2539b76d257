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
    /// The number the next version gets: past every version file at or below the
    /// pointer, intact or not, so a damaged one is never overwritten.
    next_version: u64,
}

impl Store {
    /// Opens the store in `dir`, creating it when missing. Returns the store and the
    /// current version's text when one is persisted.
    ///
    /// Damage never stops the control plane from starting (under `edgebox up` that
    /// would be a crash loop): a `current` pointer that is not a number or names a
    /// version past the last one on disk, a version whose metadata does not parse and a
    /// text whose checksum does not match are each logged as an error naming the file,
    /// and the newest intact version at or below the pointer becomes current. Damaged
    /// files are left where they are, for the operator to look at, and new versions
    /// are numbered past them. The work is bounded by the files in `versions/`, never by
    /// the number the pointer holds.
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
            next_version: 1,
        };
        let current_path = dir.join("current");
        let pointer = match fs::read_to_string(&current_path) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(version) => Some(version),
                Err(_) => {
                    report(&StoreError::Corrupt {
                        path: current_path.clone(),
                        message: format!(
                            "not a version number: {:?}; using the newest intact version",
                            text.trim().chars().take(40).collect::<String>()
                        ),
                    });
                    None
                }
            },
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
        let bound = pointer.unwrap_or(u64::MAX);
        let on_disk = store.versions_on_disk()?;
        let mut highest_seen = 0;
        for version in on_disk.into_iter().filter(|version| *version <= bound) {
            highest_seen = highest_seen.max(version);
            let meta_path = store.meta_path(version);
            let meta = fs::read(&meta_path)
                .map_err(|source| StoreError::Io {
                    action: "read",
                    path: meta_path.clone(),
                    source,
                })
                .and_then(|bytes| {
                    serde_json::from_slice::<VersionMeta>(&bytes).map_err(|err| {
                        StoreError::Corrupt {
                            path: meta_path.clone(),
                            message: err.to_string(),
                        }
                    })
                })
                .and_then(|meta| {
                    if meta.version == version {
                        Ok(meta)
                    } else {
                        Err(StoreError::Corrupt {
                            path: meta_path.clone(),
                            message: format!("records version {}", meta.version),
                        })
                    }
                });
            match meta {
                Ok(meta) => store.history.push(meta),
                Err(error) => report(&error),
            }
        }
        store.next_version = highest_seen.saturating_add(1).max(1);
        if let Some(pointer) = pointer
            && store
                .history
                .last()
                .is_none_or(|meta| meta.version != pointer)
        {
            report(&StoreError::Corrupt {
                path: current_path.clone(),
                message: format!(
                    "names version {pointer}, which is not on disk intact; using the newest intact version"
                ),
            });
        }
        // The newest version whose text matches its checksum is current.
        while let Some(meta) = store.history.last() {
            match store.text(meta.version) {
                Ok(text) => return Ok((store, Some(text))),
                Err(error) => {
                    report(&error);
                    store.history.pop();
                }
            }
        }
        tracing::error!(
            dir = %dir.display(),
            "no intact config version in the store; starting from the given config"
        );
        Ok((store, None))
    }

    /// Version numbers that have a metadata file, ascending.
    fn versions_on_disk(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.dir.join("versions");
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::Io {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        let mut versions: Vec<u64> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let stem = name.to_str()?.strip_suffix(".json")?;
                stem.bytes()
                    .all(|byte| byte.is_ascii_digit())
                    .then(|| stem.parse().ok())
                    .flatten()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
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
        let version = self.next_version;
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
        self.next_version = version + 1;
        Ok(meta)
    }

    fn toml_path(&self, version: u64) -> PathBuf {
        self.dir.join("versions").join(format!("{version:06}.toml"))
    }

    fn meta_path(&self, version: u64) -> PathBuf {
        self.dir.join("versions").join(format!("{version:06}.json"))
    }
}

/// Logs damage found while opening, with the file it is in.
fn report(error: &StoreError) {
    tracing::error!(%error, "config store damaged; skipping it");
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
        // A damaged current text: the newest intact version is current, and the
        // damaged one is kept and never overwritten.
        fs::write(dir.path().join("versions/000002.toml"), "a = 4\n").unwrap();
        let (mut store, current) = Store::open(dir.path()).unwrap();
        assert_eq!(current.as_deref(), Some("a = 1\n"));
        assert_eq!(store.append("a = 5\n", "api".into()).unwrap().version, 3);
        assert_eq!(
            fs::read_to_string(dir.path().join("versions/000002.toml")).unwrap(),
            "a = 4\n"
        );
    }

    #[test]
    fn a_pointer_far_past_the_last_version_or_garbage_opens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.append("a = 1\n", "startup".into()).unwrap();
        store.append("a = 2\n", "api".into()).unwrap();
        for pointer in ["18446744073709551615", "999999999999", "banana", ""] {
            fs::write(dir.path().join("current"), pointer).unwrap();
            let started = std::time::Instant::now();
            let (store, current) = Store::open(dir.path()).unwrap();
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
            assert_eq!(current.as_deref(), Some("a = 2\n"), "{pointer:?}");
            assert_eq!(store.history().len(), 2);
        }
        // Unreadable metadata of the current version: the one before it.
        fs::write(dir.path().join("current"), "2").unwrap();
        fs::write(dir.path().join("versions/000002.json"), "{not json").unwrap();
        let (mut store, current) = Store::open(dir.path()).unwrap();
        assert_eq!(current.as_deref(), Some("a = 1\n"));
        assert_eq!(store.append("a = 3\n", "api".into()).unwrap().version, 3);
        // Nothing intact at all: no current version, and the next one is past them.
        for version in 1..=3 {
            fs::write(dir.path().join(format!("versions/{version:06}.toml")), "x").unwrap();
        }
        let (mut store, current) = Store::open(dir.path()).unwrap();
        assert!(current.is_none());
        assert_eq!(
            store.append("a = 9\n", "startup".into()).unwrap().version,
            4
        );
    }
}
