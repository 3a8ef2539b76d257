//! Node credentials: one secret per node, shared by that node and the control plane.
//!
//! A deployment has one node key, `<data_dir>/secrets/node-key` (32 random bytes in
//! hex, mode 0600, created atomically by whichever process needs it first: the control
//! plane, `edgebox up`, or a node started on its own). A node's credential is
//!
//! ```text
//! ebn1.<node>.<hex HMAC-SHA256(key, "edgebox node credential v1" 0 <role> 0 <node>)>
//! ```
//!
//! kept in `<node data dir>/credential` (mode 0600). It is what the node presents to
//! the control plane (watching its config, reporting its status: for itself only) and
//! what the control plane presents to the node (purge, reload, drain, stats, jobs).
//! The control plane, holding the key, can check any node's credential and mint the one
//! it needs to call a node; a node only knows its own, and compares. So a node's
//! credential is good for that node alone, in that role alone, and no node is handed
//! the operator token.
//!
//! [`Gate`] is the node side of the check, for daemons whatever their HTTP stack:
//! 401 for a missing or unknown credential, 403 for one that is for someone else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgebox_config::{Deployment, TokenRole, TokenSecret};
use sha2::{Digest, Sha256};

use crate::secrets::constant_time_eq;

/// Where the deployment's node key lives, relative to its data directory.
pub const KEY_FILE: &str = "secrets/node-key";
/// Where a node's credential lives, relative to its node data directory.
pub const CREDENTIAL_FILE: &str = "credential";
/// Every node credential starts with this (and the scheme version).
pub const PREFIX: &str = "ebn1.";
const DOMAIN: &[u8] = b"edgebox node credential v1";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no node {0:?} in the deployment")]
    NoSuchNode(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError {
    let path = path.to_path_buf();
    move |source| CredentialError::Io {
        action,
        path,
        source,
    }
}

/// The deployment's node key: mints and checks every node's credential.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    /// The key file of a deployment whose data directory is `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Reads the key, creating it (random, 0600) when it does not exist yet. Two
    /// processes racing to create it end up with the same key: the file appears
    /// complete under its name (hard link of a finished temp file) or not at all.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CredentialError> {
        let path = Self::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::decode(&path, &text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io("read", &path)(err)),
        }
        let key: [u8; 32] = rand::random();
        let text = format!("{}\n", hex(&key));
        write_private(&path, text.as_bytes(), false)?;
        // Whoever won the race, the file now holds the key to use.
        let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        let key = Self::decode(&path, &text)?;
        tracing::info!(path = %path.display(), "node key ready");
        Ok(key)
    }

    fn decode(path: &Path, text: &str) -> Result<Self, CredentialError> {
        let text = text.trim();
        let invalid = || CredentialError::Invalid {
            path: path.to_path_buf(),
            message: "a node key is 64 hex digits".into(),
        };
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(key))
    }

    /// The credential of `node`, which has role `role` (`edge`, `sandbox`, ...).
    pub fn mint(&self, role: &str, node: &str) -> String {
        let mut message = Vec::with_capacity(DOMAIN.len() + role.len() + node.len() + 2);
        message.extend_from_slice(DOMAIN);
        message.push(0);
        message.extend_from_slice(role.as_bytes());
        message.push(0);
        message.extend_from_slice(node.as_bytes());
        format!("{PREFIX}{node}.{}", hex(&hmac_sha256(&self.0, &message)))
    }

    /// Which node of `deployment` `presented` is the credential of, if it is one.
    pub fn verify<'d>(&self, deployment: &'d Deployment, presented: &str) -> Option<&'d str> {
        let claimed = claimed_node(presented)?;
        let node = deployment.node(claimed)?;
        let expected = self.mint(node.role_name(), &node.name);
        constant_time_eq(expected.as_bytes(), presented.as_bytes()).then_some(node.name.as_str())
    }
}

/// The node a credential says it belongs to, when it has the credential's shape
/// (`ebn1.<name>.<64 hex>`). Says nothing about whether it is genuine.
pub fn claimed_node(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (node, mac) = rest.rsplit_once('.')?;
    let shaped =
        !node.is_empty() && mac.len() == 64 && mac.bytes().all(|byte| byte.is_ascii_hexdigit());
    shaped.then_some(node)
}

/// Where `node`'s credential is kept.
pub fn credential_path(deployment: &Deployment, node: &str) -> PathBuf {
    deployment.node_data_dir(node).join(CREDENTIAL_FILE)
}

/// `node`'s credential: read from its file, or minted with the node key (creating the
/// key if needed) and written there (0600) when the file does not exist yet. `edgebox
/// up` calls this for every node before starting it; a node started on its own calls
/// it for itself.
pub fn ensure(deployment: &Deployment, node: &str) -> Result<String, CredentialError> {
    let path = credential_path(deployment, node);
    match std::fs::read_to_string(&path) {
        Ok(text) => return check_file(&path, text.trim(), node),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io("read", &path)(err)),
    }
    let role = deployment
        .node(node)
        .ok_or_else(|| CredentialError::NoSuchNode(node.to_owned()))?
        .role_name();
    let key = NodeKey::load_or_create(&deployment.data_dir)?;
    let credential = key.mint(role, node);
    write_private(&path, format!("{credential}\n").as_bytes(), true)?;
    tracing::info!(node, path = %path.display(), "node credential written");
    Ok(credential)
}

fn check_file(path: &Path, text: &str, node: &str) -> Result<String, CredentialError> {
    match claimed_node(text) {
        Some(claimed) if claimed == node => Ok(text.to_owned()),
        Some(claimed) => Err(CredentialError::Invalid {
            path: path.to_path_buf(),
            message: format!("holds the credential of node {claimed:?}, not of {node:?}"),
        }),
        None => Err(CredentialError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a node credential (expected {PREFIX}{node}.<64 hex>)"),
        }),
    }
}

/// Writes a secret file readable by its owner only: a finished temp file (0600,
/// fsynced) renamed over `path` (`replace`) or hard-linked to it, which fails if it
/// exists (first writer wins), then the directory fsynced.
fn write_private(path: &Path, contents: &[u8], replace: bool) -> Result<(), CredentialError> {
    if let Some(parent) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(parent)
            .map_err(io("create directory for", path))?;
    }
    let temp = crate::fs::temp_path(path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp).map_err(io("create", &temp))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(io("write", &temp))?;
        if replace {
            std::fs::rename(&temp, path).map_err(io("rename into", path))?;
        } else {
            match std::fs::hard_link(&temp, path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io("create", path)(err)),
            }
        }
        crate::fs::sync_dir(path).map_err(io("sync the directory of", path))
    })();
    let _ = std::fs::remove_file(&temp);
    result
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104) over `sha2`, to keep a dependency out for 15 lines.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Why a node refused a request; rendered by each daemon as its JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 415.
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: 401,
            code: "unauthorized",
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: 403,
            code: "forbidden",
            message: message.into(),
        }
    }
}

/// Who may call a route of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The node's own credential (the control plane, or an operator who read it).
    Node,
    /// The node's credential or a `submitter` token of the deployment: the sandbox's
    /// public job API, as the control plane's relay takes it.
    Submitters,
}

/// Who a request was accepted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Node,
    /// A submitter token, by its name in the config.
    Submitter(String),
}

/// Submitter tokens are re-read at most this often (their files may be generated by a
/// control plane that starts after this node).
const TOKENS_FRESH_FOR: Duration = Duration::from_secs(2);

/// The node side of authentication: its own credential, and for the sandbox the
/// deployment's submitter tokens.
pub struct Gate {
    node: String,
    credential: String,
    submitters: Mutex<Submitters>,
}

struct Submitters {
    configured: Vec<(String, TokenSecret)>,
    resolved: Vec<(String, String)>,
    at: Option<Instant>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("node", &self.node).finish()
    }
}

impl Gate {
    /// The gate of `node`: its credential from [`ensure`], and the submitter tokens of
    /// `deployment` (used only by routes open to [`Audience::Submitters`]).
    pub fn open(deployment: &Deployment, node: &str) -> Result<Self, CredentialError> {
        let credential = ensure(deployment, node)?;
        Ok(Self {
            node: node.to_owned(),
            credential,
            submitters: Mutex::new(Submitters {
                configured: submitter_tokens(deployment),
                resolved: Vec::new(),
                at: None,
            }),
        })
    }

    /// This node's credential (also what its agent presents to the control plane).
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// Follows a new config version's tokens.
    pub fn set_tokens(&self, deployment: &Deployment) {
        let mut submitters = self.submitters.lock().expect("gate lock");
        submitters.configured = submitter_tokens(deployment);
        submitters.at = None;
    }

    /// Checks an `Authorization` header value (and, for WebSocket handshakes, which
    /// browsers cannot give headers, an `access_token` query parameter).
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
        audience: Audience,
    ) -> Result<Caller, Refusal> {
        let presented = match authorization {
            Some(value) => {
                let value = std::str::from_utf8(value).unwrap_or_default();
                match value.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                        token.trim().to_owned()
                    }
                    _ => {
                        return Err(Refusal::unauthorized(
                            "the Authorization header must be `Bearer CREDENTIAL`",
                        ));
                    }
                }
            }
            None => match query_token {
                Some(token) => token.to_owned(),
                None => {
                    return Err(Refusal::unauthorized(format!(
                        "this route needs node {}'s credential (Authorization: Bearer ebn1...; \
                         it is in the node's data directory, file `{CREDENTIAL_FILE}`)",
                        self.node
                    )));
                }
            },
        };
        if constant_time_eq(self.credential.as_bytes(), presented.as_bytes()) {
            return Ok(Caller::Node);
        }
        if let Some(claimed) = claimed_node(&presented)
            && claimed != self.node
        {
            return Err(Refusal::forbidden(format!(
                "this is the credential of node {claimed:?}; node {:?} accepts only its own",
                self.node
            )));
        }
        if let Some(name) = self.submitter(&presented) {
            return match audience {
                Audience::Submitters => Ok(Caller::Submitter(name)),
                Audience::Node => Err(Refusal::forbidden(format!(
                    "token {name:?} is a submitter token; this route needs node {}'s credential",
                    self.node
                ))),
            };
        }
        Err(Refusal::unauthorized("unknown credential"))
    }

    /// The name of the submitter token `presented` is, comparing every one in full.
    fn submitter(&self, presented: &str) -> Option<String> {
        let mut submitters = self.submitters.lock().expect("gate lock");
        if submitters.configured.is_empty() {
            return None;
        }
        if submitters
            .at
            .is_none_or(|at| at.elapsed() > TOKENS_FRESH_FOR)
        {
            submitters.resolved = submitters
                .configured
                .iter()
                .filter_map(|(name, secret)| {
                    crate::secrets::resolve(name, secret, false)
                        .ok()
                        .map(|value| (name.clone(), value))
                })
                .collect();
            submitters.at = Some(Instant::now());
        }
        let mut found = None;
        for (name, secret) in &submitters.resolved {
            if constant_time_eq(secret.as_bytes(), presented.as_bytes()) {
                found = Some(name.clone());
            }
        }
        found
    }
}

fn submitter_tokens(deployment: &Deployment) -> Vec<(String, TokenSecret)> {
    deployment
        .control_plane
        .tokens
        .iter()
        .filter(|token| token.role == TokenRole::Submitter)
        .map(|token| (token.name.clone(), token.secret.clone()))
        .collect()
}

/// Whether a `Content-Type` value is `expected` (`application/json`), parameters such
/// as `charset` aside. Requiring it on every state-changing POST means a cross-site
/// form or `no-cors` fetch, which cannot send it without a CORS preflight, never
/// reaches the handler.
pub fn content_type_is(value: Option<&[u8]>, expected: &str) -> bool {
    value
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(expected))
}

/// The 415 for a POST without the content type its route takes.
pub fn wrong_content_type(expected: &str) -> Refusal {
    Refusal {
        status: 415,
        code: "unsupported_media_type",
        message: format!("this route takes `Content-Type: {expected}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn deployment(dir: &Path) -> Deployment {
        edgebox_config::parse(
            edgebox_config::EMBEDDED_DEFAULT,
            edgebox_config::EMBEDDED_NAME,
            dir,
        )
        .unwrap()
    }

    #[test]
    fn credentials_are_per_node_and_role_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = deployment(dir.path());
        let edge = ensure(&deployment, "edge-eu").unwrap();
        assert!(edge.starts_with("ebn1.edge-eu."));
        assert_eq!(ensure(&deployment, "edge-eu").unwrap(), edge, "read back");
        let key = NodeKey::load_or_create(&deployment.data_dir).unwrap();
        assert_eq!(key.mint("edge", "edge-eu"), edge);
        assert_ne!(
            key.mint("sandbox", "edge-eu"),
            edge,
            "the role is in the MAC"
        );
        assert_eq!(key.verify(&deployment, &edge), Some("edge-eu"));
        assert_eq!(
            key.verify(&deployment, &key.mint("origin", "edge-eu")),
            None
        );
        assert_eq!(key.verify(&deployment, &key.mint("edge", "ghost")), None);
        use std::os::unix::fs::PermissionsExt;
        for path in [
            NodeKey::path(&deployment.data_dir),
            credential_path(&deployment, "edge-eu"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        // A file holding another node's credential is refused, by name.
        let stolen = credential_path(&deployment, "edge-us");
        std::fs::create_dir_all(stolen.parent().unwrap()).unwrap();
        std::fs::write(&stolen, &edge).unwrap();
        let error = ensure(&deployment, "edge-us").unwrap_err().to_string();
        assert!(error.contains("edge-eu"), "{error}");
    }

    #[test]
    fn the_gate_tells_missing_from_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = deployment(dir.path());
        // The submitter token file as the control plane generates it.
        let submitter = crate::secrets::resolve(
            "submitter",
            &TokenSecret::File(deployment.data_dir.join("tokens/submitter")),
            true,
        )
        .unwrap();
        let gate = Gate::open(&deployment, "sandbox").unwrap();
        let own = format!("Bearer {}", gate.credential());
        assert_eq!(
            gate.check(Some(own.as_bytes()), None, Audience::Node),
            Ok(Caller::Node)
        );
        assert_eq!(
            gate.check(None, None, Audience::Node).unwrap_err().status,
            401
        );
        let other = format!("Bearer {}", ensure(&deployment, "edge-eu").unwrap());
        assert_eq!(
            gate.check(Some(other.as_bytes()), None, Audience::Node)
                .unwrap_err()
                .status,
            403
        );
        let forged = format!("Bearer ebn1.sandbox.{}", "0".repeat(64));
        assert_eq!(
            gate.check(Some(forged.as_bytes()), None, Audience::Node)
                .unwrap_err()
                .status,
            401
        );
        let bearer = format!("Bearer {submitter}");
        assert_eq!(
            gate.check(Some(bearer.as_bytes()), None, Audience::Submitters),
            Ok(Caller::Submitter("submitter".into()))
        );
        assert_eq!(
            gate.check(Some(bearer.as_bytes()), None, Audience::Node)
                .unwrap_err()
                .status,
            403
        );
        assert!(content_type_is(
            Some(b"application/json; charset=utf-8"),
            "application/json"
        ));
        assert!(!content_type_is(Some(b"text/plain"), "application/json"));
        assert!(!content_type_is(None, "application/json"));
    }
}
