//! Address ranges written as CIDRs (`10.0.0.0/8`, `::1/128`, or a bare address for one
//! host), for the proxies whose `X-Forwarded-For` an edge believes.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR/PREFIX` or a bare address (the whole address); host bits must be zero, so a
    /// typo such as `10.1.2.3/8` is refused rather than read as `10.0.0.0/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR, e.g. \"10.0.0.0/8\""))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Self { network, prefix };
        if !cidr.contains(network) || bits(network) & !mask(network, prefix) != 0 {
            return Err(format!(
                "{text:?} has bits set past the /{prefix} prefix; write the network address"
            ));
        }
        Ok(cidr)
    }

    /// Whether `addr` is in the range; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        if addr.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        let mask = mask(addr, self.prefix);
        bits(addr) & mask == bits(self.network) & mask
    }
}

/// The address as a 128-bit number (IPv4 in the low 32 bits).
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(addr: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    all & !((1u128 << (width - prefix)) - 1) & all
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[track_caller]
    fn check(cidr: &str, addr: &str, expected: bool) {
        let parsed = Cidr::parse(cidr).unwrap();
        assert_eq!(
            parsed.contains(addr.parse().unwrap()),
            expected,
            "{cidr} ∋ {addr}"
        );
    }

    #[test]
    fn ranges() {
        check("10.0.0.0/8", "10.200.1.1", true);
        check("10.0.0.0/8", "11.0.0.1", false);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("0.0.0.0/0", "203.0.113.9", true);
        check("0.0.0.0/0", "::1", false);
        check("127.0.0.0/8", "::ffff:127.0.0.1", true);
        check("fd00::/8", "fd12::1", true);
        check("::/0", "2001:db8::1", true);
        check("::1", "::1", true);
        assert!(Cidr::parse("10.1.2.3/8").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com/8").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }
}
