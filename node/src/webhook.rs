//! Signed webhooks: a JSON body POSTed with `X-Edgebox-Timestamp` and
//! `X-Edgebox-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so that a
//! receiver can check who sent it and reject replays; destinations checked against an
//! allow-list (by name, or by every address a name resolves to), and delivery with
//! bounded attempts and exponential backoff over hyper HTTP/1.1, plain or over rustls
//! (`https://`: the certificate verified against the system's roots plus configured
//! CAs).
//!
//! Each attempt resolves the name again, checks the addresses, connects to one of them
//! and checks the address actually connected to before anything is sent, so a name
//! that later resolves to an internal address (DNS rebinding) is refused at delivery.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgebox_config::CallbackDestination;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::credentials::{hex, hmac_sha256};

pub const SIGNATURE_HEADER: &str = "x-edgebox-signature";
pub const TIMESTAMP_HEADER: &str = "x-edgebox-timestamp";

/// The `X-Edgebox-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("sha256={}", hex(&hmac_sha256(key, &message)))
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
    /// `https://`.
    tls: bool,
}

/// Why a callback URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("callback_url {0:?} is not an absolute http:// or https:// URL")]
    Malformed(String),
    #[error("callback_url must be http:// or https:// (got {0})")]
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
    let tls = match scheme {
        "http" => false,
        "https" => true,
        _ => return Err(TargetError::Scheme(scheme.to_owned())),
    };
    let host = uri
        .host()
        .ok_or_else(|| TargetError::Malformed(url.to_owned()))?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let target = Target {
        url: url.to_owned(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path_and_query: uri
            .path_and_query()
            .map_or("/".to_owned(), |path| path.as_str().to_owned()),
        host,
        tls,
    };
    // A name allowed as a name is resolved at delivery only (it need not resolve now).
    let by_name = target.host.parse::<IpAddr>().is_err()
        && allow.iter().any(|rule| rule.allows(&target.host, None));
    if !by_name {
        target.addresses(allow).await?;
    }
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

    /// Whether the address a connection reached may receive this callback: any, for a
    /// host allowed by name; otherwise one inside an allowed network.
    fn allows_peer(&self, peer: IpAddr, allow: &[CallbackDestination]) -> bool {
        let by_name = self.host.parse::<IpAddr>().is_err()
            && allow.iter().any(|rule| rule.allows(&self.host, None));
        by_name || allow.iter().any(|rule| rule.allows("", Some(peer)))
    }
}

/// Why the TLS client for `https://` callbacks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading the callback CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("the TLS verifier: {0}")]
    Verifier(#[from] rustls::Error),
}

/// The TLS client configuration for `https://` callbacks: certificates verified against
/// the system's roots (as reqwest does in the control plane and CLI) plus the CA
/// certificates of `ca_file`, if given.
pub fn tls_client(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let extra: Vec<CertificateDer<'static>> = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let error = |reason: String| TlsSetupError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|e| error(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.to_string()))?;
            if certificates.is_empty() {
                return Err(error("no PEM certificate in it".into()));
            }
            certificates
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How a delivery is tried.
#[derive(Debug, Clone)]
pub struct Policy {
    /// At least 1.
    pub attempts: u32,
    pub timeout: Duration,
    /// Before the first retry; doubled for each later one.
    pub backoff: Duration,
    /// CA certificates trusted for `https://` besides the system's roots.
    pub ca_file: Option<PathBuf>,
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
    // Set up once per delivery (not per attempt); a failure fails every attempt with it.
    let tls = match target.tls {
        false => Ok(None),
        true => tls_client(policy.ca_file.as_deref())
            .map(Some)
            .map_err(|error| error.to_string()),
    };
    let mut backoff = crate::backoff::Backoff::new(policy.backoff, policy.backoff * 64);
    for attempt in 1..=policy.attempts.max(1) {
        let started = SystemTime::now();
        let clock = Instant::now();
        let timestamp = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let result = match &tls {
            Err(error) => Err(error.clone()),
            Ok(tls) => tokio::time::timeout(
                policy.timeout,
                post(target, allow, tls.as_ref(), &body, key, timestamp),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", policy.timeout))),
        };
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

/// One attempt: resolve and check, connect, check the peer, (TLS,) POST. The status.
async fn post(
    target: &Target,
    allow: &[CallbackDestination],
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: &Bytes,
    key: &[u8],
    timestamp: u64,
) -> Result<u16, String> {
    let addrs = target
        .addresses(allow)
        .await
        .map_err(|error| error.to_string())?;
    let addr = addrs[0];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connecting to {addr}: {error}"))?;
    // The address connected to, not only the one looked up, must be allowed.
    let peer = tcp
        .peer_addr()
        .map_err(|error| format!("connecting to {addr}: {error}"))?;
    if !target.allows_peer(peer.ip(), allow) {
        return Err(format!(
            "connected to {peer}, which is not an allowed callback destination"
        ));
    }
    let authority = match target.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{}]:{}", target.host, target.port),
        _ => format!("{}:{}", target.host, target.port),
    };
    // The receiver sees its own name (Host, and SNI over TLS), whatever address it has.
    let request = http::Request::post(target.path_and_query.as_str())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature(key, timestamp, body))
        .header(http::header::USER_AGENT, "edgebox-callback")
        .body(Full::new(body.clone()))
        .map_err(|error| error.to_string())?;
    match tls {
        None => send(TokioIo::new(tcp), request).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|error| format!("{}: {error}", target.host))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS with {}: {error}", target.host))?;
            send(TokioIo::new(stream), request).await
        }
    }
}

async fn send<I>(io: I, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| crate::agent::error_chain(&error))?;
    // One request per connection: the connection task ends with it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| crate::agent::error_chain(&error))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (test case 6).
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
            )),
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
        assert!(check("https://127.0.0.1/hook", &allow).await.is_ok());
        // The address a delivery connected to is checked again (a name that resolved
        // to an allowed address at submission may resolve elsewhere later).
        let by_network = Target {
            url: "http://rebound.test/".into(),
            host: "rebound.test".into(),
            port: 80,
            path_and_query: "/".into(),
            tls: false,
        };
        assert!(by_network.allows_peer("127.0.0.1".parse().unwrap(), &allow));
        assert!(!by_network.allows_peer("10.0.0.1".parse().unwrap(), &allow));
        let by_name = Target {
            host: "hooks.example.com".into(),
            ..by_network
        };
        assert!(by_name.allows_peer("10.0.0.1".parse().unwrap(), &allow));
        assert!(matches!(
            check("ftp://127.0.0.1/hook", &allow).await,
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            check("not a url", &allow).await,
            Err(TargetError::Malformed(_))
        ));
    }
}
