//! The one-line stdout protocol by which a daemon tells whoever started it (`edgebox
//! up`, the simulator, the tests) which address a listener bound: configs may ask for
//! port 0, so the configured address is not enough.
//!
//! `edgebox-listening node=NAME service=SERVICE addr=IP:PORT`

use std::io::Write;
use std::net::SocketAddr;

const PREFIX: &str = "edgebox-listening ";

/// Writes the announcement for one bound listener to stdout and flushes it.
pub fn announce_listening(node: &str, service: &str, addr: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{PREFIX}node={node} service={service} addr={addr}");
    let _ = stdout.flush();
}

/// Parses a line written by [`announce_listening`]: `(node, service, addr)`.
pub fn parse_announcement(line: &str) -> Option<(String, String, SocketAddr)> {
    let rest = line.trim().strip_prefix(PREFIX)?;
    let mut node = None;
    let mut service = None;
    let mut addr = None;
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("node", value) => node = Some(value.to_owned()),
            ("service", value) => service = Some(value.to_owned()),
            ("addr", value) => addr = value.parse().ok(),
            _ => {}
        }
    }
    Some((node?, service?, addr?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_parses_back() {
        let line = format!("{PREFIX}node=edge-eu service=http addr=127.0.0.1:8080\n");
        let (node, service, addr) = parse_announcement(&line).unwrap();
        assert_eq!((node.as_str(), service.as_str()), ("edge-eu", "http"));
        assert_eq!(addr.port(), 8080);
        assert!(parse_announcement("edgebox-listening node=x service=y").is_none());
        assert!(parse_announcement("hello").is_none());
    }
}
