//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a single address), for `NO_PROXY`
//! and for the trusted reverse proxies of a listener.

use std::{fmt, net::IpAddr, str::FromStr};

/// An IP network: an address and a prefix length. A single address is a network of one
/// (`/32` or `/128`). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match as the IPv4 address.
///
/// ```
/// use libp2p_ws::proxy::IpNet;
/// let net: IpNet = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not an IP network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network in CIDR notation (e.g. 10.0.0.0/8, fd00::/8)")]
pub struct IpNetError(pub String);

impl IpNet {
    /// The network of `addr` with the first `prefix` bits significant; `None` when `prefix` is
    /// longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    /// The network of exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || IpNetError(s.to_string());
        let trimmed = s.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (trimmed, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr.parse().map_err(|_| error())?;
        match prefix {
            None => Ok(IpNet::host(addr)),
            Some(prefix) => {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error());
                }
                let bits: u8 = prefix.parse().map_err(|_| error())?;
                // An IPv4-mapped address with a prefix counts the IPv6 bits.
                match addr {
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                        let bits = bits.checked_sub(96).ok_or_else(error)?;
                        IpNet::new(addr, bits).ok_or_else(error)
                    }
                    _ => IpNet::new(addr, bits).ok_or_else(error),
                }
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_by_prefix() {
        assert!(net("127.0.0.0/8").contains(ip("127.9.8.7")));
        assert!(!net("127.0.0.0/8").contains(ip("128.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("10.0.0.1").contains(ip("10.0.0.1")));
        assert!(!net("10.0.0.1").contains(ip("10.0.0.2")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("::/0").contains(ip("fe80::1")));
        assert!(net("[::1]").contains(ip("::1")));
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.5")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.1.1")));
    }

    #[test]
    fn malformed_networks_are_errors() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "example.com",
            "10.0.0.0/8/8",
            "10.0.0.0/999999999999",
            "::ffff:1.2.3.4/95",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
    }
}
