//! The authority a request names (`Host`, or HTTP/2's `:authority`), checked and put in
//! one canonical spelling, so that the cache key, the virtual-host decision and the `Host`
//! sent upstream all see the same site for the same request.
//!
//! Grammar (RFC 9110 §7.2, RFC 3986 §3.2.2): `host [":" port]` where host is a bracketed
//! IPv6 literal or a name. Names are held to what DNS can carry (letters, digits, `-`,
//! `.`, `_`, `~`): RFC 3986's sub-delimiters and percent-encoding are refused, which also
//! refuses every byte that could move a boundary (`/`, `\`, `?`, `#`, `@`, whitespace,
//! control bytes, non-ASCII). Canonical form: lower case, one trailing dot dropped
//! (`example.com.` is `example.com`), IPv6 literals as `std` prints them (`[::1]`), and no
//! port: an edge serves a site on every listener port alike, and a parent edge must see
//! its children's requests (each on its own port) as one object.

use std::net::Ipv6Addr;

/// Longest authority accepted: a 253-byte DNS name, `:` and a 5-digit port, with room.
pub const MAX_AUTHORITY_BYTES: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the host is empty")]
    Empty,
    #[error("the host is longer than {MAX_AUTHORITY_BYTES} bytes")]
    TooLong,
    #[error("the host contains {0:?}, which no host name may contain")]
    BadByte(char),
    #[error("the host has an empty label")]
    EmptyLabel,
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    #[error("the bracketed address is not an IPv6 address")]
    BadIpLiteral,
}

/// `raw` (a `Host` value or an `:authority`) in canonical form, without its port.
pub fn normalise(raw: &str) -> Result<String, AuthorityError> {
    if raw.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if raw.len() > MAX_AUTHORITY_BYTES {
        return Err(AuthorityError::TooLong);
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(AuthorityError::BadIpLiteral)?;
        // `std` refuses zone ids (`%eth0`) and IPvFuture (`v1.x`), neither of which
        // HTTP allows in a request's authority.
        let address: Ipv6Addr = literal.parse().map_err(|_| AuthorityError::BadIpLiteral)?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(AuthorityError::BadIpLiteral)?,
            ),
        };
        (format!("[{address}]"), port)
    } else {
        let (name, port) = match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        };
        (normalise_name(name)?, port)
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    Ok(host)
}

/// A host name (no port, no brackets) in canonical form.
fn normalise_name(name: &str) -> Result<String, AuthorityError> {
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(AuthorityError::BadByte(bad));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if name.split('.').any(str::is_empty) {
        return Err(AuthorityError::EmptyLabel);
    }
    Ok(name.to_ascii_lowercase())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// RFC 3986 allows an empty port (`host:`); it means the default, like no port at all.
fn check_port(port: &str) -> Result<(), AuthorityError> {
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::BadPort);
    }
    if !port.is_empty() && port.parse::<u32>().map_or(true, |p| p > 65535) {
        return Err(AuthorityError::BadPort);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("Example.COM", "example.com"),
            ("example.com:80", "example.com"),
            ("example.com:", "example.com"),
            ("example.com.", "example.com"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("LOCALHOST", "localhost"),
            ("[::1]", "[::1]"),
            ("[0:0:0:0:0:0:0:1]:443", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("a_b-c~d", "a_b-c~d"),
        ] {
            assert_eq!(normalise(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refusals() {
        for raw in [
            "",
            ".",
            "127.0.0.1/assets",
            "a\\b",
            "a?b",
            "a#b",
            "user@host",
            "a b",
            "a\tb",
            "a\u{0}b",
            "a\u{7f}b",
            "é.example",
            "a%2fb",
            "a..b",
            ".a",
            "a:b",
            "a:1:2",
            "a:65536",
            "a:123456",
            "[::1",
            "[::1]x",
            "[fe80::1%eth0]",
            "[v1.x]",
            "[1.2.3.4]",
            "a,b",
            "a;b",
        ] {
            assert!(normalise(raw).is_err(), "{raw:?} must be refused");
        }
        assert!(normalise(&"a".repeat(MAX_AUTHORITY_BYTES + 1)).is_err());
    }
}
