//! Opening a tunnel through a proxy over any byte stream: [`tunnel`] runs the sans-IO HTTP CONNECT
//! and SOCKS5 exchanges to a [`TunnelTarget`].

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{http, socks5, Proxy, ProxyError, ProxyKind};

/// Where the tunnel leads: a name (resolved by the proxy) or an address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelTarget {
    /// A name for the proxy to resolve.
    Name(String, u16),
    /// An address.
    Addr(std::net::SocketAddr),
}

impl TunnelTarget {
    /// `host:port` for HTTP CONNECT (an IPv6 address in brackets). Names must be printable
    /// ASCII without spaces, `@`, `/` or `:` (nothing that could break the request line).
    pub(super) fn authority(&self) -> Result<String, ProxyError> {
        match self {
            TunnelTarget::Addr(addr) => Ok(addr.to_string()),
            TunnelTarget::Name(name, port) => {
                check_name(name)?;
                Ok(format!("{name}:{port}"))
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), ProxyError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ProxyError::InvalidTarget(format!(
            "{name:?} is not a DNS name (letters, digits, '-', '.', '_'; at most 255 bytes)"
        )))
    }
}

/// Opens a tunnel to `target` through `proxy` over `io`, a connection to the proxy. Reads only
/// the proxy's answer (byte by byte for HTTP, so nothing of the origin's is consumed), at most
/// `max_head` bytes of it. Unbounded in time: the caller bounds it.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    target: &TunnelTarget,
    max_head: usize,
) -> Result<(), ProxyError> {
    match proxy.kind() {
        ProxyKind::HttpConnect => {
            let credentials = proxy.credentials();
            let request = http::connect_request(&target.authority()?, credentials);
            write(io, &request).await?;
            let mut head = Vec::with_capacity(256);
            let mut byte = [0u8; 1];
            loop {
                if head.len() >= max_head {
                    return Err(ProxyError::HeadTooLarge { limit: max_head });
                }
                read_exact(io, &mut byte).await?;
                head.push(byte[0]);
                if head.ends_with(b"\n")
                    && http::parse_response(&head, credentials.is_some())?.is_some()
                {
                    return Ok(());
                }
            }
        }
        ProxyKind::Socks5 { .. } => {
            let credentials = proxy.credentials();
            write(io, &socks5::greeting(credentials.is_some())).await?;
            let mut reply = [0u8; 2];
            read_exact(io, &mut reply).await?;
            if socks5::parse_method(reply, credentials.is_some())? == socks5::USERNAME_PASSWORD {
                let credentials = credentials.ok_or(ProxyError::Malformed(
                    "username/password chosen but not offered".into(),
                ))?;
                write(io, &socks5::auth_request(credentials)?).await?;
                read_exact(io, &mut reply).await?;
                socks5::parse_auth_reply(reply)?;
            }
            let request = match target {
                TunnelTarget::Addr(addr) => socks5::connect_request(&socks5::Target::Addr(*addr))?,
                TunnelTarget::Name(name, port) => {
                    check_name(name)?;
                    socks5::connect_request(&socks5::Target::Name(name, *port))?
                }
            };
            write(io, &request).await?;
            let mut head = [0u8; 4];
            read_exact(io, &mut head).await?;
            let rest = match socks5::parse_reply_head(head)? {
                Some(rest) => rest,
                None => {
                    let mut len = [0u8; 1];
                    read_exact(io, &mut len).await?;
                    socks5::name_reply_rest(len[0])
                }
            };
            let mut bound = [0u8; 257];
            read_exact(io, &mut bound[..rest]).await
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Result<(), ProxyError> {
    io.write_all(bytes).await.map_err(ProxyError::Io)?;
    io.flush().await.map_err(ProxyError::Io)
}

async fn read_exact<S: AsyncRead + Unpin>(io: &mut S, buf: &mut [u8]) -> Result<(), ProxyError> {
    io.read_exact(buf).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProxyError::Closed,
        _ => ProxyError::Io(e),
    })
}
