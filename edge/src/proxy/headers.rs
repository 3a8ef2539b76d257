//! The headers the edge reads or writes on every request: its own (`x-edgebox-*`,
//! `x-request-id`), `Via` chains, the parent's `Server-Timing` `sim` entry, and the
//! hop-by-hop headers that never cross it.

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::state::EdgeState;

/// Region header a client uses to say where it is. It only picks the simulated client
/// hop's latency: never forwarded, never part of a response.
pub const REGION_HEADER: &str = "x-edgebox-region";

/// Set by an edge on requests to its parent, signed (`crate::hop`): the sending edge has
/// already simulated that hop (and its own client's), so the parent must not add a
/// client↔edge delay. A client's copy never verifies and is never forwarded.
/// The parent's `Server-Timing` `sim` is folded into the child's in return, so that the
/// client sees the whole path's simulated time once.
pub const HOP_HEADER: &str = "x-edgebox-hop";
pub(super) const REQUEST_ID: &str = "x-request-id";

/// The names read or removed on every request, parsed once. A `&str` name is parsed
/// (standard-name table, lower-case check) on every `get`/`remove`; a `HeaderName` is
/// hashed directly. Inserts keep `&'static str` names: pingora's `insert_header` parses
/// whatever name it gets anyway (a `HeaderName` is first copied back to bytes for its
/// case map), so a static string is the cheapest form there.
pub(super) mod name {
    use http::HeaderName;

    pub static REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID);
    pub static REGION: HeaderName = HeaderName::from_static(super::REGION_HEADER);
    pub static HOP: HeaderName = HeaderName::from_static(super::HOP_HEADER);
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
    pub static X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");
    pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
    pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
}

/// Request headers some origins read to build their answer (absolute URLs, a rewritten
/// path, another method) that are not part of the cache key: a client's copies are
/// dropped before forwarding, so none can change a response others are served from
/// cache. The edge sets `X-Forwarded-For`/`-Proto` itself.
pub(super) static UNKEYED: [http::HeaderName; 10] = [
    http::HeaderName::from_static("x-forwarded-host"),
    http::HeaderName::from_static("x-forwarded-server"),
    http::HeaderName::from_static("x-forwarded-port"),
    http::HeaderName::from_static("forwarded"),
    http::HeaderName::from_static("x-host"),
    http::HeaderName::from_static("x-original-url"),
    http::HeaderName::from_static("x-rewrite-url"),
    http::HeaderName::from_static("x-http-method-override"),
    http::HeaderName::from_static("x-http-method"),
    http::HeaderName::from_static("x-method-override"),
];

/// What the hop signature covers, read from a request as it goes out or comes in.
pub(super) fn hop_signed(req: &RequestHeader) -> crate::hop::Signed<'_> {
    crate::hop::Signed {
        method: req.method.as_str(),
        host: req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        target: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        request_id: req
            .headers
            .get(&name::REQUEST_ID)
            .map_or(&[], |v| v.as_bytes()),
    }
}

/// The simulated time a parent's `Server-Timing` reports, when it is a plausible one:
/// a parent is another process, and a negative, NaN, infinite or absurd value (beyond
/// an hour) is ignored rather than trusted (or panicking in `Duration`); NaN is in no
/// range.
pub(super) fn parent_simulated(server_timing: &str) -> Option<std::time::Duration> {
    let ms = simulated_ms(server_timing)?;
    if !(0.0..=3_600_000.0).contains(&ms) {
        return None;
    }
    std::time::Duration::try_from_secs_f64(ms / 1000.0).ok()
}

/// The `sim;dur=N` entry of a `Server-Timing` value, in milliseconds.
fn simulated_ms(server_timing: &str) -> Option<f64> {
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

pub(super) fn header_str(
    req: &RequestHeader,
    name: impl http::header::AsHeaderName,
) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `X-Forwarded-For` for a request from `client` that brought none (or an unreadable one).
/// Consecutive requests on a worker thread mostly come from one client (keep-alive), so
/// the last value made is kept per thread and reused: no address formatting and no
/// allocation per request then (the value's bytes are shared).
pub(super) fn forwarded_for(client: std::net::IpAddr) -> http::HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, http::HeaderValue)>> =
            const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref()
            && *ip == client
        {
            return value.clone();
        }
        let value = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
            .expect("an address's text is a valid header value");
        *last = Some((client, value.clone()));
        value
    })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parent_simulated;

    #[test]
    fn hostile_parent_server_timing_never_panics() {
        for value in [
            "sim;dur=-5",
            "sim;dur=NaN",
            "sim;dur=nan",
            "sim;dur=inf",
            "sim;dur=-inf",
            "sim;dur=1e309",
            "sim;dur=1e300",
            "sim;dur=18446744073709551616000",
            "sim;dur=",
            "sim",
            "",
            "sim;dur=3600001",
        ] {
            assert_eq!(parent_simulated(value), None, "{value}");
        }
        assert_eq!(
            parent_simulated("origin;dur=3, sim;dur=80"),
            Some(Duration::from_millis(80))
        );
        assert_eq!(parent_simulated("sim;dur=0"), Some(Duration::ZERO));
    }
}
