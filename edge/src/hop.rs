//! `x-edgebox-hop`: how a parent edge knows a request comes from one of the deployment's
//! edges (which has already simulated the client's hop) and not from a client claiming
//! so to skip the simulated latency.
//!
//! The child signs each request it sends to its parent with HMAC-SHA256 under the
//! deployment's hop key (`[edge] hop_key*`; by default `<data_dir>/secrets/hop-key`,
//! generated 0600 by the first edge that starts, so every edge on the machine shares
//! it; edges on other machines are given the same key by the config). The value is
//! `v1;t=<unix seconds>;mac=<hex>` over the time, method, `Host`, target and request id,
//! so a value seen once does not authorise another request, and one older than
//! [`MAX_SKEW`] authorises nothing. A value that does not verify is ignored (the request
//! is a client's and pays the client hop) and never forwarded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgebox_config::TokenSecret;
use ring::hmac;

/// How far a signature's time may be from ours, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("hop key: {0}")]
pub struct HopKeyError(#[from] edgebox_node::secrets::TokenError);

/// What a signature covers, as the child sent it and the parent received it.
pub struct Signed<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub target: &'a str,
    pub request_id: &'a [u8],
}

pub struct HopKey(hmac::Key);

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKey(..)")
    }
}

impl HopKey {
    /// Reads the configured key, generating the file when it is missing.
    pub fn resolve(secret: &TokenSecret) -> Result<Self, HopKeyError> {
        let value = edgebox_node::secrets::resolve("hop-key", secret, true)?;
        Ok(Self::new(value.as_bytes()))
    }

    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The header value for a request sent now.
    pub fn sign(&self, request: &Signed<'_>, now: SystemTime) -> String {
        let t = unix_secs(now);
        let tag = hmac::sign(&self.0, &message(t, request));
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("v1;t={t};mac={hex}")
    }

    /// Whether `value` is a signature of `request` made within [`MAX_SKEW`] of `now`.
    pub fn verify(&self, value: &[u8], request: &Signed<'_>, now: SystemTime) -> bool {
        let Some((t, mac)) = parse(value) else {
            return false;
        };
        if unix_secs(now).abs_diff(t) > MAX_SKEW.as_secs() {
            return false;
        }
        hmac::verify(&self.0, &message(t, request), &mac).is_ok()
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn message(t: u64, r: &Signed<'_>) -> Vec<u8> {
    // Each part length-prefixed, so no two requests share a message.
    let mut out = Vec::with_capacity(64 + r.host.len() + r.target.len() + r.request_id.len());
    out.extend_from_slice(b"edgebox-hop v1");
    for part in [
        t.to_string().as_bytes(),
        r.method.as_bytes(),
        r.host.as_bytes(),
        r.target.as_bytes(),
        r.request_id,
    ] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// `v1;t=N;mac=HEX` → (N, MAC bytes).
fn parse(value: &[u8]) -> Option<(u64, Vec<u8>)> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix("v1;t=")?;
    let (t, mac) = rest.split_once(";mac=")?;
    if t.is_empty() || t.len() > 20 || mac.len() != 64 {
        return None;
    }
    let t = t.parse().ok()?;
    let mac = (0..mac.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(mac.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((t, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(target: &'a str) -> Signed<'a> {
        Signed {
            method: "GET",
            host: "localhost",
            target,
            request_id: b"id-1",
        }
    }

    #[test]
    fn signatures_verify_only_for_their_request_key_and_time() {
        let key = HopKey::new(b"0123456789abcdef");
        let now = SystemTime::now();
        let value = key.sign(&request("/a"), now);
        assert!(key.verify(value.as_bytes(), &request("/a"), now));
        assert!(key.verify(
            value.as_bytes(),
            &request("/a"),
            now + Duration::from_secs(29)
        ));
        assert!(!key.verify(value.as_bytes(), &request("/b"), now));
        assert!(!key.verify(
            value.as_bytes(),
            &request("/a"),
            now + Duration::from_secs(31)
        ));
        let other = HopKey::new(b"another key, same length..");
        assert!(!other.verify(value.as_bytes(), &request("/a"), now));
        for forged in [
            &b"edge"[..],
            b"",
            b"v1;t=;mac=",
            b"v1;t=99999999999999999999999;mac=00",
            "v1;t=1;mac=é".as_bytes(),
            &[0xff, 0xfe],
        ] {
            assert!(!key.verify(forged, &request("/a"), now), "{forged:?}");
        }
    }
}
