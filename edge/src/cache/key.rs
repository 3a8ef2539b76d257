//! Cache keys: how the edge names an object, and the bounded URL the purge index keeps for it.
//!
//! The primary key frames its three parts, each with its length: `h<len>:<host>`,
//! `p<len>:<path>` and, when the request has a query (even an empty one: `/a?` is not
//! `/a`), `q<len>:<query>`. Framing makes the encoding injective whatever the parts hold,
//! so no two (host, path, query) triples share a key (`key/tests.rs` checks this on a
//! corpus of hostile triples), and the URL part can be recovered from the key bytes alone
//! (which is how the disk tier rebuilds its purge index after a restart). The host is
//! the request's normalised authority (`crate::authority`), after the virtual-host
//! decision. Storage only ever keys objects by pingora's 128-bit hash of this, so a huge
//! request target costs one hash, never a huge stored key: what we keep of the URL for
//! purging is truncated to [`MAX_URL_BYTES`].

use pingora::cache::CacheKey;

/// How much of an object's URL the purge index and the disk entry header keep.
///
/// Longer URLs are truncated (on a character boundary); purge by URL compares the truncated
/// forms, so two URLs sharing their first 4 KiB are purged together, which errs on the safe side.
pub const MAX_URL_BYTES: usize = 4096;

/// The cache key for `host` (normalised), `path` and `query` (without its `?`).
pub fn key_for(host: &str, path: &str, query: Option<&str>) -> CacheKey {
    CacheKey::new(primary(host, path, query), "")
}

/// The primary key bytes of [`key_for`].
pub fn primary(host: &str, path: &str, query: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(host.len() + path.len() + query.map_or(0, str::len) + 24);
    let mut part = |tag: u8, value: &str| {
        out.push(tag);
        // The length in decimal, written without a `String` per part (every request
        // builds a key when the cache is on).
        let mut digits: crate::header_text::Digits = [0; 40];
        out.extend_from_slice(crate::header_text::decimal(
            value.len() as u128,
            &mut digits,
        ));
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    };
    part(b'h', host);
    part(b'p', path);
    if let Some(query) = query {
        part(b'q', query);
    }
    out
}

/// The cache key for a request to `host` for `path_and_query` (e.g. `/a/b.css?v=2`): the
/// host normalised as the proxy does (a host that does not normalise is lower-cased as
/// it is), the target split at its first `?`. For tests, benches and tools; the proxy
/// itself calls [`key_for`] with the host its virtual-host decision chose.
pub fn cache_key(host: &str, path_and_query: &str) -> CacheKey {
    let host = crate::authority::normalise(host).unwrap_or_else(|_| host.to_ascii_lowercase());
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    key_for(&host, path, query)
}

/// A primary key's parts: (host, path, query).
pub type KeyParts<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// The framed parts of a primary key made by [`primary`].
pub fn parts_of_primary(primary: &[u8]) -> Option<KeyParts<'_>> {
    fn part(tag: u8, rest: &[u8]) -> Option<(&[u8], &[u8])> {
        let rest = rest.strip_prefix(&[tag])?;
        let colon = rest.iter().take(21).position(|&b| b == b':')?;
        let digits = &rest[..colon];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let value = rest.get(colon + 1..)?.get(..len)?;
        Some((value, &rest[colon + 1 + len..]))
    }
    let (host, rest) = part(b'h', primary)?;
    let (path, rest) = part(b'p', rest)?;
    if rest.is_empty() {
        return Some((host, path, None));
    }
    let (query, rest) = part(b'q', rest)?;
    rest.is_empty().then_some((host, path, Some(query)))
}

/// The URL (path and query) part of a primary key made by [`primary`], bounded to
/// [`MAX_URL_BYTES`]. Keys made some other way are treated as URLs as a whole.
pub fn url_of_primary(primary: &[u8]) -> String {
    let Some((_, path, query)) = parts_of_primary(primary) else {
        return bounded(&String::from_utf8_lossy(primary));
    };
    let mut url = String::from_utf8_lossy(path).into_owned();
    if let Some(query) = query {
        url.push('?');
        url.push_str(&String::from_utf8_lossy(query));
    }
    bounded(&url)
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

#[cfg(test)]
mod tests;
