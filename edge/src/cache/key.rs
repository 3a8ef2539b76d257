//! Cache keys: how the edge names an object, and the bounded URL the purge index keeps for it.
//!
//! The primary key is `host` followed by the request's path and query. A host never contains
//! `/` and a path always starts with one, so the boundary is unambiguous without framing, and
//! the URL part can be recovered from the key bytes alone (which is how the disk tier rebuilds
//! its purge index after a restart). Storage only ever keys objects by pingora's 128-bit hash
//! of this, so a huge request target costs one hash, never a huge stored key: what we keep of
//! the URL for purging is truncated to [`MAX_URL_BYTES`].

use pingora::cache::CacheKey;

/// How much of an object's URL the purge index and the disk entry header keep.
///
/// Longer URLs are truncated (on a character boundary); purge by URL compares the truncated
/// forms, so two URLs sharing their first 4 KiB are purged together, which errs on the safe side.
pub const MAX_URL_BYTES: usize = 4096;

/// The cache key for a request to `host` for `path_and_query` (e.g. `/a/b.css?v=2`).
///
/// The host is lower-cased (host names are case-insensitive) and loses its port (a site is
/// the same object on :80 and :443, and behind any listener port); the path is kept as sent.
pub fn cache_key(host: &str, path_and_query: &str) -> CacheKey {
    let host = strip_port(host).to_ascii_lowercase();
    let mut primary = Vec::with_capacity(host.len() + path_and_query.len());
    primary.extend_from_slice(host.as_bytes());
    primary.extend_from_slice(path_and_query.as_bytes());
    CacheKey::new(primary, "")
}

/// `host` without a trailing `:port` (`[v6]:port` keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(at)
            if host[at + 1..].bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host[..at].ends_with(']')) =>
        {
            &host[..at]
        }
        _ => host,
    }
}

/// The URL (path and query) part of a primary key made by [`cache_key`], bounded to
/// [`MAX_URL_BYTES`]. Keys made some other way are treated as URLs as a whole.
pub fn url_of_primary(primary: &[u8]) -> String {
    let start = primary.iter().position(|&b| b == b'/').unwrap_or(0);
    bounded(&String::from_utf8_lossy(&primary[start..]))
}

/// Normalise a URL given to purge: an absolute `http(s)://host/path` loses its scheme and
/// host (objects of every host with that path are purged), then it is bounded like stored URLs.
pub fn purge_url(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let path = match rest {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => url,
    };
    bounded(path)
}

/// `s` truncated to at most [`MAX_URL_BYTES`] on a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_URL_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_URL_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
