//! The control plane's state in etcd, shared by every replica: config versions, the
//! current pointer, node reports and generated secrets.
//!
//! Keys under the deployment's prefix `P` (`[control_plane.store] prefix`):
//! - `P/config/meta/00000000000000000042` — version 42's metadata (JSON);
//! - `P/config/text/00000000000000000042` — its text, exactly as submitted;
//! - `P/config/current` — the current version number;
//! - `P/nodes/NAME` — what node NAME last reported (JSON);
//! - `P/secrets/node-key`, `P/secrets/tokens/NAME` — secrets a replica generated, so
//!   that every replica checks the same node credentials and accepts the same tokens.
//!
//! A new version is one transaction: it puts the metadata, the text and the pointer
//! only if the pointer is still at the revision the writer read and the version's key
//! does not exist. Two replicas can never both write version N: the second one's
//! compare fails, it adopts the winner's version and numbers its own N+1. The current
//! version is always the highest, so history only grows, as with the file store.

use std::collections::BTreeMap;
use std::path::Path;

use crate::etcd::{Client, Compare, EtcdError, Event, Watch};
use crate::state::NodeReport;
use crate::store::VersionMeta;
use edgebox_config::EtcdSettings;

/// The current version as etcd holds it, with the revision its pointer was written at.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: VersionMeta,
    pub text: String,
    pub revision: i64,
}

/// Everything a replica reads when it (re)connects.
#[derive(Debug)]
pub struct Loaded {
    /// The store's revision when the pointer was read: watching from the next one
    /// misses nothing (what is read again after it is applied idempotently).
    pub revision: i64,
    pub current: Option<Stored>,
    pub history: Vec<VersionMeta>,
    pub reports: BTreeMap<String, NodeReport>,
}

/// What a transaction attempt did.
#[derive(Debug)]
pub enum Append {
    /// The version is written; the pointer now has this revision.
    Written { revision: i64 },
    /// Someone else moved the pointer first: here is where it is now.
    Conflict(Option<Stored>),
}

/// One change a watch reported.
#[derive(Debug)]
pub enum Change {
    Meta(VersionMeta),
    Text(u64, String),
    Current { version: u64, revision: i64 },
    Report(String, NodeReport),
    ReportGone(String),
}

pub struct EtcdStore {
    client: Client,
    prefix: String,
    pub endpoints: Vec<String>,
}

impl EtcdStore {
    pub fn new(settings: &EtcdSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: Client::new(settings.endpoints.clone(), settings.timeout)?,
            prefix: settings.prefix.clone(),
            endpoints: settings.endpoints.clone(),
        })
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn current_key(&self) -> Vec<u8> {
        self.key("config/current")
    }

    fn meta_key(&self, version: u64) -> Vec<u8> {
        self.key(&format!("config/meta/{version:020}"))
    }

    fn text_key(&self, version: u64) -> Vec<u8> {
        self.key(&format!("config/text/{version:020}"))
    }

    /// A cheap linearizable read, to tell whether etcd answers (a quorum is there).
    pub async fn probe(&self) -> Result<(), EtcdError> {
        self.client
            .range(&self.current_key(), false)
            .await
            .map(drop)
    }

    pub async fn load(&self) -> Result<Loaded, EtcdError> {
        let pointer = self.client.range(&self.current_key(), false).await?;
        let revision = pointer.revision;
        let metas = self.client.range(&self.key("config/meta/"), true).await?;
        let mut history: Vec<VersionMeta> = metas
            .kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice::<VersionMeta>(&kv.value) {
                Ok(meta) => Some(meta),
                Err(error) => {
                    tracing::error!(key = %String::from_utf8_lossy(&kv.key), %error, "unreadable version metadata in etcd; skipping it");
                    None
                }
            })
            .collect();
        history.sort_by_key(|meta| meta.version);
        let current = match pointer.kvs.first() {
            Some(kv) => Some(
                self.stored(parse_version(&kv.value)?, kv.mod_revision)
                    .await?,
            ),
            None => None,
        };
        let nodes = self.client.range(&self.key("nodes/"), true).await?;
        let node_prefix = self.key("nodes/");
        let reports = nodes
            .kvs
            .iter()
            .filter_map(|kv| {
                let name = String::from_utf8(kv.key.strip_prefix(node_prefix.as_slice())?.to_vec())
                    .ok()?;
                let report = serde_json::from_slice(&kv.value).ok()?;
                Some((name, report))
            })
            .collect();
        Ok(Loaded {
            revision,
            current,
            history,
            reports,
        })
    }

    /// Version `version` with its text, the pointer having been written at `revision`.
    async fn stored(&self, version: u64, revision: i64) -> Result<Stored, EtcdError> {
        let meta = self
            .meta(version)
            .await?
            .ok_or_else(|| missing(version, "metadata"))?;
        let text = self
            .text(version)
            .await?
            .ok_or_else(|| missing(version, "text"))?;
        Ok(Stored {
            meta,
            text,
            revision,
        })
    }

    pub async fn meta(&self, version: u64) -> Result<Option<VersionMeta>, EtcdError> {
        let range = self.client.range(&self.meta_key(version), false).await?;
        range
            .kvs
            .first()
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|err| EtcdError::Decode {
                    endpoint: self.endpoints[0].clone(),
                    message: format!("metadata of version {version}: {err}"),
                })
            })
            .transpose()
    }

    pub async fn text(&self, version: u64) -> Result<Option<String>, EtcdError> {
        let range = self.client.range(&self.text_key(version), false).await?;
        Ok(range
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Writes `meta` and `text` as the next version if the pointer is where the
    /// caller last saw it: at `base` (its revision), or absent for `None`.
    pub async fn try_append(
        &self,
        base: Option<i64>,
        meta: &VersionMeta,
        text: &str,
    ) -> Result<Append, EtcdError> {
        let current_key = self.current_key();
        let meta_key = self.meta_key(meta.version);
        let text_key = self.text_key(meta.version);
        let meta_json = serde_json::to_vec(meta).expect("metadata serialises");
        let pointer = meta.version.to_string();
        let compares = [
            match base {
                Some(revision) => Compare::ModRevision(&current_key, revision),
                None => Compare::Absent(&current_key),
            },
            Compare::Absent(&meta_key),
        ];
        let puts: [(&[u8], &[u8]); 3] = [
            (&meta_key, &meta_json),
            (&text_key, text.as_bytes()),
            (&current_key, pointer.as_bytes()),
        ];
        let outcome = self
            .client
            .txn(&compares, &puts, &[current_key.as_slice()])
            .await?;
        if outcome.succeeded {
            return Ok(Append::Written {
                revision: outcome.revision,
            });
        }
        let now = outcome.ranges.first().and_then(|kvs| kvs.first());
        match now {
            Some(kv) => {
                let version = parse_version(&kv.value)?;
                Ok(Append::Conflict(Some(
                    self.stored(version, kv.mod_revision).await?,
                )))
            }
            None => Ok(Append::Conflict(None)),
        }
    }

    pub async fn put_report(&self, node: &str, report: &NodeReport) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(report).expect("report serialises");
        self.client
            .put(&self.key(&format!("nodes/{node}")), &value)
            .await
            .map(drop)
    }

    /// Makes the secret in `path` the same on every replica: etcd's copy when there
    /// is one (written to `path`, mode 0600), otherwise this replica's file (or a new
    /// random secret when there is no file either), published with a
    /// create-if-absent so that replicas starting together agree on one.
    pub async fn share_secret(&self, name: &str, path: &Path) -> Result<(), ShareError> {
        let key = self.key(&format!("secrets/{name}"));
        let stored = self.client.range(&key, false).await?;
        let local = std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        let shared = match stored.kvs.first() {
            Some(kv) => String::from_utf8_lossy(&kv.value).trim().to_owned(),
            None => {
                let candidate = local.clone().unwrap_or_else(|| {
                    let bytes: [u8; 32] = rand::random();
                    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
                });
                let outcome = self
                    .client
                    .txn(
                        &[Compare::Absent(&key)],
                        &[(&key, candidate.as_bytes())],
                        &[key.as_slice()],
                    )
                    .await?;
                if outcome.succeeded {
                    tracing::info!(
                        secret = name,
                        "published the secret to etcd for the other replicas"
                    );
                    candidate
                } else {
                    outcome
                        .ranges
                        .first()
                        .and_then(|kvs| kvs.first())
                        .map(|kv| String::from_utf8_lossy(&kv.value).trim().to_owned())
                        .unwrap_or(candidate)
                }
            }
        };
        if local.as_deref() != Some(shared.as_str()) {
            if local.is_some() {
                tracing::warn!(secret = name, path = %path.display(), "the local secret differs from the one in etcd; using etcd's");
            }
            write_private(path, format!("{shared}\n").as_bytes()).map_err(|source| {
                ShareError::Write {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    pub async fn watch(&self, from_revision: i64) -> Result<Watch, EtcdError> {
        self.client
            .watch(self.prefix.as_bytes(), from_revision)
            .await
    }

    /// What a watched event means; `None` for keys this store does not use.
    pub fn change(&self, event: &Event) -> Option<Change> {
        let rest = std::str::from_utf8(event.kv.key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        if let Some(node) = rest.strip_prefix("nodes/") {
            if event.deleted {
                return Some(Change::ReportGone(node.to_owned()));
            }
            return serde_json::from_slice(&event.kv.value)
                .ok()
                .map(|report| Change::Report(node.to_owned(), report));
        }
        if event.deleted {
            return None; // versions are never deleted by a replica
        }
        if rest == "config/current" {
            return parse_version(&event.kv.value)
                .ok()
                .map(|version| Change::Current {
                    version,
                    revision: event.kv.mod_revision,
                });
        }
        if let Some(number) = rest.strip_prefix("config/meta/") {
            let _: u64 = number.parse().ok()?;
            return serde_json::from_slice(&event.kv.value)
                .ok()
                .map(Change::Meta);
        }
        if let Some(number) = rest.strip_prefix("config/text/") {
            let version = number.parse().ok()?;
            return Some(Change::Text(
                version,
                String::from_utf8_lossy(&event.kv.value).into_owned(),
            ));
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn parse_version(value: &[u8]) -> Result<u64, EtcdError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| EtcdError::Decode {
            endpoint: String::new(),
            message: format!(
                "the current pointer holds {:?}, not a version number",
                String::from_utf8_lossy(value)
            ),
        })
}

fn missing(version: u64, what: &str) -> EtcdError {
    EtcdError::Decode {
        endpoint: String::new(),
        message: format!("version {version} has no {what} in etcd"),
    }
}

/// Replaces `path` with `bytes`, readable by its owner only from the first byte on
/// (the temp file is created 0600, then renamed into place).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = edgebox_node::fs::temp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = options.open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        edgebox_node::fs::sync_dir(path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
