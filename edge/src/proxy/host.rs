//! The request's host, decided once in `request_filter` before anything reads it: the
//! `Host` header and the URI's authority (HTTP/2's `:authority`, or an absolute-form
//! target) checked and normalised (`crate::authority`), then mapped to a virtual host by
//! `[edge.hosts]`. The result is what the cache key holds and the `Host` the upstream
//! gets, so no spelling of the host that the key folds can reach the origin.

use edgebox_config::{Hosts, UnknownHost};
use pingora::http::RequestHeader;

use crate::authority;

/// A request refused for its host: status, error code, message.
pub(super) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        code,
        message: message.into(),
    }
}

/// The virtual host `req` is served as, or why it is refused: 400 for a malformed,
/// repeated, conflicting or (in HTTP/1.1) missing host, 421 for a host this edge does
/// not serve when `[edge.hosts] unknown = "reject"`.
pub(super) fn resolve(req: &RequestHeader, hosts: &Hosts) -> Result<String, Refusal> {
    let mut headers = req.headers.get_all(http::header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(bad("bad_host", "more than one Host header"));
    }
    let normalise = |raw: &[u8]| {
        let text =
            std::str::from_utf8(raw).map_err(|_| bad("bad_host", "the host is not ASCII text"))?;
        authority::normalise(text).map_err(|e| bad("bad_host", format!("bad host: {e}")))
    };
    let from_header = header.map(|v| normalise(v.as_bytes())).transpose()?;
    let from_uri = req
        .uri
        .authority()
        .map(|a| normalise(a.as_str().as_bytes()))
        .transpose()?;
    let host = match (from_header, from_uri) {
        (Some(header), Some(uri)) if header != uri => {
            return Err(bad(
                "conflicting_host",
                "the Host header and the request's authority name different hosts",
            ));
        }
        (Some(host), _) | (None, Some(host)) => Some(host),
        (None, None) if req.version >= http::Version::HTTP_11 => {
            return Err(bad(
                "missing_host",
                "an HTTP/1.1 request needs a Host header",
            ));
        }
        (None, None) => None,
    };
    match host {
        Some(host) if hosts.serves(&host) => Ok(host),
        _ if hosts.unknown == UnknownHost::Default => Ok(hosts.default.clone()),
        host => Err(Refusal {
            status: 421,
            code: "unknown_host",
            message: match host {
                Some(host) => format!("this edge does not serve {host}"),
                None => "the request names no host".into(),
            },
        }),
    }
}
