//! Bearer tokens and roles.
//!
//! Secrets come from the deployment's `[[control_plane.tokens]]`: inline, from an
//! environment variable, or from a file. A missing token file is generated (random
//! 256-bit secret, mode 0600) so that a fresh deployment is protected from its first
//! start and the CLI on the same machine can read the secret from the same path.
//!
//! `operator` may do everything; `submitter` may only run code (jobs, run, events).
//!
//! Nodes present their own credential (`edgebox_node::credentials`, checked with the
//! deployment's node key): it lets node N watch N's config and report N's status,
//! and nothing else, so a compromised edge cannot change the config or speak for
//! another node.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use edgebox_config::{Deployment, TokenRole};
use edgebox_node::secrets::{TokenError, constant_time_eq, resolve};

use crate::error::ApiError;
use crate::state::AppState;

/// One accepted secret.
#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    pub role: TokenRole,
    secret: String,
}

/// The accepted secrets, resolved once per config version.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    credentials: Vec<Credential>,
}

impl Tokens {
    /// Resolves every token of `deployment`, generating missing token files.
    pub fn load(deployment: &Deployment) -> Result<Self, TokenError> {
        let mut credentials = Vec::new();
        for token in &deployment.control_plane.tokens {
            let secret = resolve(&token.name, &token.secret, true)?;
            credentials.push(Credential {
                name: token.name.clone(),
                role: token.role,
                secret,
            });
        }
        Ok(Self { credentials })
    }

    /// The credential whose secret is `presented`. Every secret is compared in full and
    /// in constant time, so timing says nothing about which one nearly matched.
    pub fn find(&self, presented: &str) -> Option<&Credential> {
        let mut found = None;
        for credential in &self.credentials {
            if constant_time_eq(credential.secret.as_bytes(), presented.as_bytes()) {
                found = Some(credential);
            }
        }
        found
    }
}

/// Who made a request with a token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub role: TokenRole,
}

/// Who made a request: a token holder or a node.
#[derive(Debug, Clone)]
pub enum Principal {
    Token(Caller),
    /// A node, by name, with its own credential.
    Node(String),
}

/// Extractor: the request carries an operator token.
pub struct Operator(pub Caller);

/// Extractor: the request carries a token allowed to run code (submitter or operator).
pub struct Submitter(pub Caller);

fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION);
    let presented = match header {
        Some(value) => {
            let value = value.to_str().unwrap_or_default();
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim().to_owned()
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the Authorization header must be `Bearer TOKEN`",
                    ));
                }
            }
        }
        // Browsers cannot set headers on WebSocket handshakes; for those only, the
        // token may come as a `bearer.<hex>` subprotocol (the dashboard's way: no token
        // in a URL) or as `?access_token=` (other clients).
        None if is_websocket_upgrade(parts) => protocol_token(parts)
            .or_else(|| query_token(parts))
            .ok_or_else(missing)?,
        None => return Err(missing()),
    };
    if edgebox_node::credentials::claimed_node(&presented).is_some() {
        let current = state.current();
        return match state.node_key.verify(&current.deployment, &presented) {
            Some(node) => Ok(Principal::Node(node.to_owned())),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "not the credential of any node of the current config",
            )),
        };
    }
    let tokens = state.tokens();
    let credential = tokens.find(&presented).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown bearer token",
        )
    })?;
    Ok(Principal::Token(Caller {
        token: credential.name.clone(),
        role: credential.role,
    }))
}

fn node_forbidden(node: &str, needs: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the credential of node {node:?} may only watch its config and report its status; \
             this route needs {needs}"
        ),
    )
}

fn missing() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs a bearer token (Authorization: Bearer TOKEN)",
    )
}

fn is_websocket_upgrade(parts: &Parts) -> bool {
    parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The token of a `Sec-WebSocket-Protocol: edgebox, bearer.<hex of the token>` offer.
fn protocol_token(parts: &Parts) -> Option<String> {
    let offered = parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix("bearer."))?;
    if offered.len() % 2 != 0 || offered.len() > 2048 {
        return None;
    }
    let bytes = (0..offered.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(offered.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn query_token(parts: &Parts) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token").then(|| value.to_owned())
    })
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = match authenticate(parts, state)? {
            Principal::Token(caller) => caller,
            Principal::Node(node) => return Err(node_forbidden(&node, "an operator token")),
        };
        if caller.role != TokenRole::Operator {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} has role submitter; this route needs operator",
                    caller.token
                ),
            ));
        }
        Ok(Self(caller))
    }
}

impl FromRequestParts<Arc<AppState>> for Submitter {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state)? {
            Principal::Token(caller) => Ok(Self(caller)),
            Principal::Node(node) => Err(node_forbidden(&node, "a submitter or operator token")),
        }
    }
}

/// Extractor for the config watch: a node (for itself) or an operator.
pub enum NodeOrOperator {
    Node(String),
    Operator,
}

/// Extractor for status reports: a node (for itself only) or an operator.
pub struct ReportingNode(pub NodeOrOperator);

impl NodeOrOperator {
    /// Refuses a node speaking for another one.
    pub fn may_speak_for(&self, node: &str) -> Result<(), ApiError> {
        match self {
            Self::Node(caller) if caller != node => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("node {caller:?} may only watch and report for itself, not for {node:?}"),
            )),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for NodeOrOperator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state)? {
            Principal::Node(node) => Ok(Self::Node(node)),
            Principal::Token(caller) if caller.role == TokenRole::Operator => Ok(Self::Operator),
            Principal::Token(caller) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} has role submitter; this route needs a node credential or an operator token",
                    caller.token
                ),
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for ReportingNode {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        NodeOrOperator::from_request_parts(parts, state)
            .await
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgebox_config::TokenSecret;

    #[test]
    fn generates_a_private_token_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens/operator");
        let secret = TokenSecret::File(path.clone());
        let first = resolve("operator", &secret, true).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(resolve("operator", &secret, true).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = TokenSecret::File(dir.path().join("tokens/none"));
        assert!(resolve("x", &other, false).is_err());
    }

    #[test]
    fn websocket_tokens_come_hex_encoded_in_a_subprotocol() {
        let (parts, _) = axum::http::Request::builder()
            .header("sec-websocket-protocol", "edgebox, bearer.6f702d31")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(protocol_token(&parts).as_deref(), Some("op-1"));
        for bad in ["edgebox", "bearer.6f7", "bearer.zz", ""] {
            let (parts, _) = axum::http::Request::builder()
                .header("sec-websocket-protocol", bad)
                .body(())
                .unwrap()
                .into_parts();
            assert_eq!(protocol_token(&parts), None, "{bad}");
        }
    }

    #[test]
    fn compares_whole_secrets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
