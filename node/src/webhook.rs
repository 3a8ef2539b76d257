//! Signed webhooks: a JSON body POSTed with `X-Edgebox-Timestamp` and
//! `X-Edgebox-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so that a
//! receiver can check who sent it and reject replays; destinations checked against an
//! allow-list (by name, or by every address a name resolves to), and delivery with
//! bounded attempts and exponential backoff over plain hyper HTTP/1.1.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgebox_config::CallbackDestination;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

pub const SIGNATURE_HEADER: &str = "x-edgebox-signature";
pub const TIMESTAMP_HEADER: &str = "x-edgebox-timestamp";

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
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

/// The `X-Edgebox-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let mac = hmac_sha256(key, &message);
    let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `header` is the signature of `body` at `timestamp` (compared in constant time).
pub fn verify(key: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    crate::secrets::constant_time_eq(
        signature(key, timestamp, body).as_bytes(),
        header.as_bytes(),
    )
}

/// A callback URL that passed the allow-list: where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    /// Lower case, without brackets.
    host: String,
    port: u16,
    path_and_query: String,
}

/// Why a callback URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("callback_url {0:?} is not an absolute http:// URL")]
    Malformed(String),
    #[error("callback_url must be http:// (got {0})")]
    Scheme(String),
    #[error(
        "callback_url host {host} is not an allowed callback destination (sandbox.callbacks.allow)"
    )]
    NotAllowed { host: String },
    #[error("callback_url host {host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// Parses `url` and checks it against `allow`: a host allowed by name passes, an IP
/// literal must be in an allowed network, and a name only networks could allow must
/// resolve to addresses that are all inside them.
pub async fn check(url: &str, allow: &[CallbackDestination]) -> Result<Target, TargetError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| TargetError::Malformed(url.to_owned()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| TargetError::Malformed(url.to_owned()))?;
    if scheme != "http" {
        return Err(TargetError::Scheme(scheme.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| TargetError::Malformed(url.to_owned()))?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let target = Target {
        url: url.to_owned(),
        port: uri.port_u16().unwrap_or(80),
        path_and_query: uri
            .path_and_query()
            .map_or("/".to_owned(), |path| path.as_str().to_owned()),
        host,
    };
    target.addresses(allow).await?;
    Ok(target)
}

impl Target {
    /// The addresses to connect to, each allowed: resolved anew at every delivery, so a
    /// name that later resolves elsewhere is checked again.
    async fn addresses(
        &self,
        allow: &[CallbackDestination],
    ) -> Result<Vec<SocketAddr>, TargetError> {
        let not_allowed = || TargetError::NotAllowed {
            host: self.host.clone(),
        };
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return match allow.iter().any(|rule| rule.allows("", Some(ip))) {
                true => Ok(vec![SocketAddr::new(ip, self.port)]),
                false => Err(not_allowed()),
            };
        }
        let by_name = allow.iter().any(|rule| rule.allows(&self.host, None));
        let may_by_network = allow
            .iter()
            .any(|rule| matches!(rule, CallbackDestination::Network { .. }));
        if !by_name && !may_by_network {
            return Err(not_allowed());
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|error| TargetError::Unresolved {
                host: self.host.clone(),
                reason: error.to_string(),
            })?
            .collect();
        if resolved.is_empty() {
            return Err(TargetError::Unresolved {
                host: self.host.clone(),
                reason: "no addresses".into(),
            });
        }
        if !by_name
            && !resolved
                .iter()
                .all(|addr| allow.iter().any(|rule| rule.allows("", Some(addr.ip()))))
        {
            return Err(not_allowed());
        }
        Ok(resolved)
    }
}

/// How a delivery is tried.
#[derive(Debug, Clone)]
pub struct Policy {
    /// At least 1.
    pub attempts: u32,
    pub timeout: Duration,
    /// Before the first retry; doubled for each later one.
    pub backoff: Duration,
}

/// One delivery attempt, as it ended.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub started: SystemTime,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// POSTs `body` to `target`, signed with `key`, until a 2xx answer or `policy.attempts`
/// attempts; each attempt is reported to `on_attempt` as it ends. True when delivered.
pub async fn deliver(
    target: &Target,
    allow: &[CallbackDestination],
    body: Bytes,
    key: &[u8],
    policy: &Policy,
    mut on_attempt: impl FnMut(AttemptReport),
) -> bool {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut backoff = crate::backoff::Backoff::new(policy.backoff, policy.backoff * 64);
    for attempt in 1..=policy.attempts.max(1) {
        let started = SystemTime::now();
        let clock = Instant::now();
        let result = tokio::time::timeout(policy.timeout, async {
            let addrs = target
                .addresses(allow)
                .await
                .map_err(|error| error.to_string())?;
            let addr = addrs[0];
            let timestamp = started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let authority = match target.host.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => format!("[{}]:{}", target.host, target.port),
                _ => format!("{}:{}", target.host, target.port),
            };
            // Connect to the address just checked; the receiver still sees its name.
            let request = http::Request::post(format!("http://{addr}{}", target.path_and_query))
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature(key, timestamp, &body))
                .header(http::header::USER_AGENT, "edgebox-callback")
                .body(Full::new(body.clone()))
                .map_err(|error| error.to_string())?;
            let response = client
                .request(request)
                .await
                .map_err(|error| crate::agent::error_chain(&error))?;
            Ok::<_, String>(response.status().as_u16())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", policy.timeout)));
        let (status, error) = match result {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
            ),
            Err(error) => (None, Some(error)),
        };
        let delivered = error.is_none();
        tracing::debug!(url = %target.url, attempt, ?status, ?error, "callback attempt");
        on_attempt(AttemptReport {
            started,
            status,
            error,
            elapsed: clock.elapsed(),
        });
        if delivered {
            return true;
        }
        if attempt < policy.attempts {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (test case 6).
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let signed = signature(b"key", 1700000000, b"{}");
        assert!(verify(b"key", 1700000000, b"{}", &signed));
        assert!(!verify(b"key", 1700000001, b"{}", &signed));
    }

    #[tokio::test]
    async fn destinations_are_checked() {
        let allow = vec![
            CallbackDestination::Network {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 32,
            },
            CallbackDestination::Host("hooks.example.com".into()),
        ];
        assert!(check("http://127.0.0.1:9/hook", &allow).await.is_ok());
        assert!(check("http://hooks.example.com/x", &allow).await.is_ok());
        assert!(matches!(
            check("http://10.0.0.1/hook", &allow).await,
            Err(TargetError::NotAllowed { .. })
        ));
        assert!(matches!(
            check("https://127.0.0.1/hook", &allow).await,
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            check("not a url", &allow).await,
            Err(TargetError::Malformed(_))
        ));
    }
}
