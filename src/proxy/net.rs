//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a single address), for `NO_PROXY`
//! and for the trusted reverse proxies of a listener: the [`ipnet`] crate's network, read and
//! matched the way these settings need (a bare address, `[v6]`, IPv4-mapped IPv6 as IPv4).

use std::{fmt, net::IpAddr, str::FromStr};

/// An IP network: an address and a prefix length. A single address is a network of one
/// (`/32` or `/128`). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match as the IPv4 address:
/// a dual-stack listener sees IPv4 peers as such addresses, and an IPv4 network still covers them
/// (a plain [`ipnet::IpNet`] does not).
///
/// Besides CIDR notation, it reads a bare address (`10.0.0.1`, `::1`), an IPv6 address in
/// brackets (`[::1]`, `[fd00::]/8`) and surrounding whitespace; an IPv4-mapped network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network (`10.0.0.0/8`). It converts to and from
/// [`ipnet::IpNet`].
///
/// ```
/// use libp2p_ws::proxy::IpNet;
/// let net: IpNet = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet(ipnet::IpNet);

/// Why a string is not an IP network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IP address or network in CIDR notation (e.g. 10.0.0.0/8, fd00::/8)")]
pub struct IpNetError {
    input: String,
}

impl IpNetError {
    fn new(input: &str) -> Self {
        IpNetError {
            input: input.to_string(),
        }
    }
}

impl IpNet {
    /// The network of `addr` with the first `prefix` bits significant; `None` when `prefix` is
    /// longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        ipnet::IpNet::new(addr.to_canonical(), prefix)
            .ok()
            .map(IpNet)
    }

    /// The network of exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        IpNet(addr.to_canonical().into())
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// The address by std's parser, the prefix as decimal digits (`/08` and `/008` are 8), the
    /// network by [`ipnet::IpNet::new`], which checks the prefix against the address's length.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || IpNetError::new(s);
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
        let Some(prefix) = prefix else {
            return Ok(IpNet::host(addr));
        };
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        let bits: u8 = prefix.parse().map_err(|_| error())?;
        let net = ipnet::IpNet::new(addr, bits).map_err(|_| error())?;
        IpNet::try_from(net).map_err(|_| error())
    }
}

impl TryFrom<ipnet::IpNet> for IpNet {
    type Error = IpNetError;

    /// The same network; an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4
    /// network (`10.0.0.0/8`), and one shorter than `/96` is an error: it is not all IPv4-mapped.
    fn try_from(net: ipnet::IpNet) -> Result<Self, Self::Error> {
        match net {
            ipnet::IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => v6
                .prefix_len()
                .checked_sub(96)
                .and_then(|bits| IpNet::new(v6.addr().into(), bits))
                .ok_or_else(|| IpNetError::new(&net.to_string())),
            net => Ok(IpNet(net)),
        }
    }
}

impl From<IpNet> for ipnet::IpNet {
    fn from(net: IpNet) -> Self {
        net.0
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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
            "[::1/64]",
        ] {
            let err = bad.parse::<IpNet>().unwrap_err();
            assert_eq!(err, IpNetError::new(bad));
            assert_eq!(
                err.to_string(),
                format!(
                    "{bad:?} is not an IP address or network in CIDR notation (e.g. 10.0.0.0/8, fd00::/8)"
                )
            );
        }
    }

    #[test]
    fn brackets_spaces_and_mapped_networks() {
        assert_eq!(net(" [fd00::]/8 "), net("fd00::/8"));
        assert_eq!(net("[10.0.0.0]/8"), net("10.0.0.0/8"));
        assert_eq!(net("10.0.0.0/008"), net("10.0.0.0/8"));
        assert_eq!(net("::/0094").prefix(), 94);
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:10.0.0.1"), net("10.0.0.1/32"));
        assert_eq!(
            net("10.1.2.3/16").addr(),
            ip("10.1.2.3"),
            "the address as given"
        );
        assert_eq!(net("10.1.2.3/16").prefix(), 16);
        assert_eq!(net("10.1.2.3/16").to_string(), "10.1.2.3/16");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(IpNet::new(ip("10.0.0.0"), 33), None);
        assert_eq!(
            IpNet::new(ip("::ffff:10.0.0.0"), 8),
            Some(net("10.0.0.0/8"))
        );
    }

    #[test]
    fn converts_to_and_from_ipnet() {
        let theirs: ipnet::IpNet = "::ffff:192.168.0.0/112".parse().unwrap();
        assert_eq!(IpNet::try_from(theirs), Ok(net("192.168.0.0/16")));
        assert!(IpNet::try_from("::ffff:0.0.0.0/95".parse::<ipnet::IpNet>().unwrap()).is_err());
        let ours = net("fd00::/8");
        assert_eq!(ipnet::IpNet::from(ours), "fd00::/8".parse().unwrap());
    }
}
