//! The headers the edge reads or writes on every request: its own (`x-edgebox-*`,
//! `x-request-id`), `Via` chains, the parent's `Server-Timing` `sim` entry, and the
//! hop-by-hop headers that never cross it.

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::state::EdgeState;

/// Region header a client uses to say where it is.
pub const REGION_HEADER: &str = "x-edgebox-region";

/// Set by an edge on requests to its parent: the sending edge has already simulated
/// that hop (and its own client's), so the parent must not add a client↔edge delay.
/// The parent's `Server-Timing` `sim` is folded into the child's in return, so that the
/// client sees the whole path's simulated time once.
pub const HOP_HEADER: &str = "x-edgebox-hop";
pub(super) const REQUEST_ID: &str = "x-request-id";

/// The `sim;dur=N` entry of a `Server-Timing` value, in milliseconds.
pub(super) fn simulated_ms(server_timing: &str) -> Option<f64> {
    server_timing.split(',').find_map(|metric| {
        let mut parts = metric.trim().split(';');
        (parts.next()? == "sim").then_some(())?;
        parts.find_map(|param| param.trim().strip_prefix("dur=")?.parse().ok())
    })
}

/// This edge's own `Via` entry for the session's HTTP version.
pub(super) fn via<'a>(state: &'a EdgeState, session: &Session) -> &'a http::HeaderValue {
    if session.is_http2() {
        &state.via_h2
    } else {
        &state.via_h1
    }
}

/// `previous, own` (a `Via` chain), or `own` alone.
pub(super) fn via_chain(
    previous: Option<&http::HeaderValue>,
    own: &http::HeaderValue,
) -> http::HeaderValue {
    match previous.and_then(|v| v.to_str().ok()) {
        Some(previous) => {
            let mut chain = Vec::with_capacity(previous.len() + 2 + own.len());
            chain.extend_from_slice(previous.as_bytes());
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(own.as_bytes());
            http::HeaderValue::from_bytes(&chain).unwrap_or_else(|_| own.clone())
        }
        None => own.clone(),
    }
}

pub(super) fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction.
static HOP_BY_HOP: [http::HeaderName; 8] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
];

/// The hop-by-hop headers present in a header map: those of the fixed list (a bit each) and
/// any other that `Connection` names. Finding them allocates only for such other names
/// (rare: origins name `keep-alive` or `close`), not on every request and response.
#[derive(Default)]
pub(super) struct HopByHop {
    fixed: u8,
    named: Vec<http::HeaderName>,
}

impl HopByHop {
    pub(super) fn find(headers: &http::HeaderMap) -> Self {
        let mut found = Self::default();
        for value in headers.get_all(http::header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(token))
                {
                    continue; // checked below
                }
                if let Ok(name) = http::HeaderName::from_bytes(token.as_bytes())
                    && headers.contains_key(&name)
                    && !found.named.contains(&name)
                {
                    found.named.push(name);
                }
            }
        }
        for (bit, name) in HOP_BY_HOP.iter().enumerate() {
            if headers.contains_key(name) {
                found.fixed |= 1 << bit;
            }
        }
        found
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.named.iter().chain(
            HOP_BY_HOP
                .iter()
                .enumerate()
                .filter(|(bit, _)| self.fixed & (1 << bit) != 0)
                .map(|(_, name)| name),
        )
    }
}
