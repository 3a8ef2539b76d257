//! Who the client is: the peer's address, or, when the peer is one of
//! `[edge] trusted_proxies`, the address its `X-Forwarded-For` names. Rate limits key on
//! it and the access log records it.

use std::net::IpAddr;

use edgebox_config::Cidr;
use http::HeaderMap;

/// The client's address. From a trusted peer, the `X-Forwarded-For` chain (every header,
/// in order) is read from the right: the first address that is not itself a trusted
/// proxy is the client, since everything left of it was written by someone we cannot
/// vouch for. A chain of trusted proxies only yields its leftmost address; a malformed
/// entry stops the walk at the last good one.
pub fn address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut client = peer;
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(addr) = parse_entry(entry.trim()) else {
            break;
        };
        client = addr;
        if !is_trusted(addr, trusted) {
            break;
        }
    }
    Some(client)
}

fn is_trusted(addr: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|cidr| cidr.contains(addr))
}

/// An `X-Forwarded-For` entry: an address, possibly `[v6]` or `v4:port` as some proxies
/// write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(peer: &str, xff: &[&str], trusted: &[&str], expected: &str) {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        let trusted: Vec<Cidr> = trusted.iter().map(|t| Cidr::parse(t).unwrap()).collect();
        let got = address(Some(peer.parse().unwrap()), &headers, &trusted);
        assert_eq!(got, Some(expected.parse().unwrap()), "{peer} {xff:?}");
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        check("203.0.113.9", &["198.51.100.1"], &[], "203.0.113.9");
        check(
            "203.0.113.9",
            &["198.51.100.1"],
            &["10.0.0.0/8"],
            "203.0.113.9",
        );
        check(
            "10.0.0.2",
            &["198.51.100.1"],
            &["10.0.0.0/8"],
            "198.51.100.1",
        );
        // A client-written entry left of the one our proxy added is not believed.
        check(
            "10.0.0.2",
            &["1.2.3.4, 198.51.100.1"],
            &["10.0.0.0/8"],
            "198.51.100.1",
        );
        // Trusted hops are skipped, across several headers.
        check(
            "10.0.0.2",
            &["198.51.100.1", "10.0.0.7"],
            &["10.0.0.0/8"],
            "198.51.100.1",
        );
        check("10.0.0.2", &["10.0.0.5"], &["10.0.0.0/8"], "10.0.0.5");
        check("10.0.0.2", &[], &["10.0.0.0/8"], "10.0.0.2");
        check(
            "10.0.0.2",
            &["garbage, 198.51.100.1"],
            &["10.0.0.0/8"],
            "198.51.100.1",
        );
        check(
            "10.0.0.2",
            &["198.51.100.1, garbage"],
            &["10.0.0.0/8"],
            "10.0.0.2",
        );
        check(
            "10.0.0.2",
            &["[2001:db8::1]", "198.51.100.1:4711"],
            &["10.0.0.0/8"],
            "198.51.100.1",
        );
        check(
            "::ffff:10.0.0.2",
            &["2001:db8::1"],
            &["10.0.0.0/8"],
            "2001:db8::1",
        );
    }
}
