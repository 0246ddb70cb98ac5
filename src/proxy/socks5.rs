//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), sans IO: the messages this
//! side sends and the parse of the proxy's answers.

use std::net::{IpAddr, SocketAddr};

use super::{Credentials, ProxyError};

/// The protocol version byte.
const VERSION: u8 = 5;
/// Method: no authentication.
pub const NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const USERNAME_PASSWORD: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
const NO_ACCEPTABLE: u8 = 0xFF;

/// What to ask the proxy to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// An address resolved by this side (`socks5://`).
    Addr(SocketAddr),
    /// A name for the proxy to resolve (`socks5h://`): no DNS lookup happens here.
    Name(&'a str, u16),
}

/// The greeting: the offered methods (username/password only when credentials are given).
pub fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![VERSION, 2, NO_AUTH, USERNAME_PASSWORD]
    } else {
        vec![VERSION, 1, NO_AUTH]
    }
}

/// Parses the proxy's method choice; the method is one this side offered.
pub fn parse_method(reply: [u8; 2], offered_credentials: bool) -> Result<u8, ProxyError> {
    if reply[0] != VERSION {
        return Err(ProxyError::Malformed(format!(
            "not a SOCKS5 reply (version byte {:#04x})",
            reply[0]
        )));
    }
    match reply[1] {
        NO_AUTH => Ok(NO_AUTH),
        USERNAME_PASSWORD if offered_credentials => Ok(USERNAME_PASSWORD),
        NO_ACCEPTABLE => Err(ProxyError::SocksNoAcceptableMethod {
            offered_credentials,
        }),
        other => Err(ProxyError::Malformed(format!(
            "the SOCKS5 proxy chose method {other:#04x}, which was not offered"
        ))),
    }
}

/// The username/password request (RFC 1929); each must be 1 to 255 bytes.
pub fn auth_request(credentials: &Credentials) -> Result<Vec<u8>, ProxyError> {
    let (user, pass) = (
        credentials.username.as_bytes(),
        credentials.password.as_bytes(),
    );
    if user.is_empty() || user.len() > 255 || pass.is_empty() || pass.len() > 255 {
        return Err(ProxyError::InvalidCredentials(
            "SOCKS5 usernames and passwords are 1 to 255 bytes",
        ));
    }
    let mut request = Vec::with_capacity(3 + user.len() + pass.len());
    request.extend_from_slice(&[1, user.len() as u8]);
    request.extend_from_slice(user);
    request.push(pass.len() as u8);
    request.extend_from_slice(pass);
    Ok(request)
}

/// Parses the answer to the username/password request.
pub fn parse_auth_reply(reply: [u8; 2]) -> Result<(), ProxyError> {
    match reply {
        [1, 0] => Ok(()),
        [1, _] => Err(ProxyError::SocksAuthFailed),
        [v, _] => Err(ProxyError::Malformed(format!(
            "not a SOCKS5 username/password reply (version byte {v:#04x})"
        ))),
    }
}

/// The CONNECT request for `target`.
pub fn connect_request(target: &Target<'_>) -> Result<Vec<u8>, ProxyError> {
    let mut request = vec![VERSION, 1, 0];
    let port = match target {
        Target::Addr(addr) => {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    request.push(1);
                    request.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    request.push(4);
                    request.extend_from_slice(&ip.octets());
                }
            }
            addr.port()
        }
        Target::Name(name, port) => {
            if name.is_empty() || name.len() > 255 {
                return Err(ProxyError::InvalidTarget(format!(
                    "SOCKS5 names are 1 to 255 bytes, {name:?} is not"
                )));
            }
            request.push(3);
            request.push(name.len() as u8);
            request.extend_from_slice(name.as_bytes());
            *port
        }
    };
    request.extend_from_slice(&port.to_be_bytes());
    Ok(request)
}

/// Parses the first four bytes of the reply to CONNECT; on success, says how many more bytes
/// follow before the proxy's bound address ends: a count (IPv4, IPv6), or `None` when the next
/// byte is a name's length (then [`name_reply_rest`] of it).
pub fn parse_reply_head(head: [u8; 4]) -> Result<Option<usize>, ProxyError> {
    if head[0] != VERSION {
        return Err(ProxyError::Malformed(format!(
            "not a SOCKS5 reply (version byte {:#04x})",
            head[0]
        )));
    }
    if head[1] != 0 {
        return Err(ProxyError::SocksFailure { code: head[1] });
    }
    match head[3] {
        1 => Ok(Some(4 + 2)),
        4 => Ok(Some(16 + 2)),
        3 => Ok(None),
        other => Err(ProxyError::Malformed(format!(
            "unknown SOCKS5 address type {other:#04x} in the reply"
        ))),
    }
}

/// The bytes that follow a name's length byte in a reply: the name and the port.
pub fn name_reply_rest(len: u8) -> usize {
    usize::from(len) + 2
}

/// What a SOCKS5 reply code means (RFC 1928 section 6).
pub fn reply_meaning(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
        assert_eq!(
            connect_request(&Target::Addr("127.0.0.1:80".parse().unwrap())).unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]
        );
        assert_eq!(
            connect_request(&Target::Name("ab", 443)).unwrap(),
            [5, 1, 0, 3, 2, b'a', b'b', 1, 187]
        );
        let v6 = connect_request(&Target::Addr("[::1]:1".parse().unwrap())).unwrap();
        assert_eq!(v6.len(), 4 + 16 + 2);
        assert!(connect_request(&Target::Name(&"a".repeat(256), 1)).is_err());
        assert!(connect_request(&Target::Name("", 1)).is_err());
        assert_eq!(
            auth_request(&Credentials::new("u", "pw")).unwrap(),
            [1, 1, b'u', 2, b'p', b'w']
        );
        assert!(auth_request(&Credentials::new("", "pw")).is_err());
        assert!(auth_request(&Credentials::new("u", &"p".repeat(256))).is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_method([5, 0], false).unwrap(), NO_AUTH);
        assert_eq!(parse_method([5, 2], true).unwrap(), USERNAME_PASSWORD);
        assert!(matches!(
            parse_method([5, 2], false),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_method([5, 0xFF], false),
            Err(ProxyError::SocksNoAcceptableMethod {
                offered_credentials: false
            })
        ));
        assert!(matches!(
            parse_method([4, 0], false),
            Err(ProxyError::Malformed(_))
        ));
        assert!(parse_auth_reply([1, 0]).is_ok());
        assert!(matches!(
            parse_auth_reply([1, 1]),
            Err(ProxyError::SocksAuthFailed)
        ));
        assert_eq!(parse_reply_head([5, 0, 0, 1]).unwrap(), Some(6));
        assert_eq!(parse_reply_head([5, 0, 0, 4]).unwrap(), Some(18));
        assert_eq!(parse_reply_head([5, 0, 0, 3]).unwrap(), None);
        assert!(matches!(
            parse_reply_head([5, 5, 0, 1]),
            Err(ProxyError::SocksFailure { code: 5 })
        ));
        assert!(matches!(
            parse_reply_head([5, 0, 0, 9]),
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(name_reply_rest(255), 257);
        assert_eq!(reply_meaning(4), "host unreachable");
    }
}
