//! The HTTP upgrade on both sides, over soketto's handshake, with bounded reads.
//!
//! soketto's client reads the response head without a size limit; soketto's server stops at 8 KiB.
//! Both read here through [`Bounded`], which fails the read once the configured head size is used
//! up, so neither side reads more than `max_head_size` bytes of HTTP head from a stranger. Timeouts
//! are applied by the caller (the transport) around the whole TCP + TLS + upgrade sequence.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use soketto::handshake::{self, server::Response, ServerResponse};

use crate::error::HandshakeError;

/// Performs the server side of the upgrade on `io`: reads the request (at most `max_head` bytes),
/// checks that it asks for `path`, and answers `101 Switching Protocols`. Returns any bytes received
/// after the request head (a client may send its first frames, or part of one, right behind the
/// request): the start of the WebSocket stream, for [`Connection::new`](crate::Connection::new).
///
/// Requests that are not WebSocket upgrades get an HTTP error response before the error is
/// returned: 404 for another path, 405 for a method other than GET, 426 for a plain HTTP request,
/// 431 for a head over the limit, 400 for anything else malformed.
pub async fn accept<T>(io: &mut T, max_head: usize, path: &str) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut bounded = Bounded::new(io, max_head);
    let mut server = handshake::Server::new(&mut bounded);
    server.set_buffer(buffers::take());
    let result = serve(&mut server, max_head, path).await;
    buffers::give(server.take_buffer());
    result
}

async fn serve<T>(
    server: &mut handshake::Server<'_, &mut Bounded<'_, T>>,
    max_head: usize,
    path: &str,
) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = match server.receive_request().await {
        Ok(request) => {
            let key = request.key();
            let routed = match decode_target(request.path()) {
                Some(requested) if requested == path => Ok(()),
                requested => Err(HandshakeError::PathNotFound {
                    requested: requested.unwrap_or_else(|| request.path().to_string()),
                    served: path.to_string(),
                }),
            };
            // soketto's buffer holds everything read so far: the request head and whatever the
            // client sent behind it.
            let buffer = server.take_buffer();
            let checked = request_head_len(&buffer).and_then(|head_len| {
                routed?;
                Ok((key, buffer[head_len..].to_vec()))
            });
            server.set_buffer(buffer);
            checked
        }
        Err(e) => Err(map_error(e, max_head)),
    };
    match outcome {
        Ok((key, leftover)) => {
            let accept = Response::Accept {
                key,
                protocol: None,
            };
            server
                .send_response(&accept)
                .await
                .map_err(|e| map_error(e, max_head))?;
            Ok(leftover)
        }
        Err(error) => {
            if let Some(status_code) = reject_status(&error) {
                let _ = server
                    .send_response(&Response::Reject { status_code })
                    .await;
            }
            Err(error)
        }
    }
}

/// Headers parsed at most, as soketto does.
const MAX_HEADERS: usize = 32;

/// The length of the request head at the start of `buffer`.
fn request_head_len(buffer: &[u8]) -> Result<usize, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => Ok(len),
        // soketto parsed the same bytes with the same header limit; neither can happen.
        Ok(httparse::Status::Partial) => Err(HandshakeError::Protocol(
            handshake::Error::IncompleteHttpRequest,
        )),
        Err(e) => Err(HandshakeError::Protocol(handshake::Error::Http(Box::new(
            e,
        )))),
    }
}

/// Performs the client side of the upgrade on `io`: sends a request for `target` with `Host: host`
/// and reads the response (at most `max_head` bytes). Returns any bytes received after the response
/// head: the start of the WebSocket stream.
pub async fn connect<T>(
    io: &mut T,
    max_head: usize,
    host: &str,
    target: &str,
) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut bounded = Bounded::new(io, max_head);
    let mut client = handshake::Client::new(&mut bounded, host, target);
    client.set_buffer(buffers::take());
    let response = client.handshake().await;
    let buffer = client.take_buffer();
    let leftover = buffer.to_vec();
    buffers::give(buffer);
    match response.map_err(|e| map_error(e, max_head))? {
        ServerResponse::Accepted { .. } => Ok(leftover),
        ServerResponse::Redirect {
            status_code,
            location,
        } => Err(HandshakeError::Redirect {
            status: status_code,
            location,
        }),
        ServerResponse::Rejected { status_code } => Err(HandshakeError::Rejected {
            status: status_code,
        }),
    }
}

/// Reuse of soketto's handshake buffers. soketto reads the HTTP head into a buffer that it grows and
/// zero-fills 8 KiB at a time; a fresh buffer per handshake leaves freshly touched pages all over the
/// heap, which later long-lived allocations of idle connections sit on (about 1-2 KiB of RSS per idle
/// connection, measured by `benches/transports.rs`). A small pool makes handshakes reuse the same
/// few buffers instead.
mod buffers {
    use std::sync::Mutex;

    use bytes::BytesMut;

    /// Buffers kept for reuse; more concurrent handshakes than this allocate (and free) their own.
    pub(super) const KEEP: usize = 32;
    /// A buffer that grew beyond this (it cannot with the head limit) is not kept.
    const MAX_CAPACITY: usize = 64 * 1024;

    static POOL: Mutex<Vec<BytesMut>> = Mutex::new(Vec::new());

    /// A buffer for one handshake: a reused one if there is one.
    pub(super) fn take() -> BytesMut {
        POOL.lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    /// Returns a buffer after a handshake (its contents are dropped).
    pub(super) fn give(mut buffer: BytesMut) {
        buffer.clear();
        if buffer.capacity() == 0 || buffer.capacity() > MAX_CAPACITY {
            return;
        }
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < KEEP {
                pool.push(buffer);
            }
        }
    }
}

/// The HTTP status a listener answers a failed upgrade request with, if it answers at all.
fn reject_status(error: &HandshakeError) -> Option<u16> {
    use soketto::handshake::Error as E;
    Some(match error {
        HandshakeError::PathNotFound { .. } => 404,
        HandshakeError::HeadTooLarge { .. } => 431,
        HandshakeError::Protocol(E::InvalidRequestMethod) => 405,
        HandshakeError::Protocol(E::HeaderNotFound(_) | E::UnexpectedHeader(_)) => 426,
        HandshakeError::Protocol(E::UnsupportedHttpVersion) => 505,
        HandshakeError::Io(_) | HandshakeError::Protocol(E::Io(_)) => return None,
        _ => 400,
    })
}

fn map_error(e: handshake::Error, max_head: usize) -> HandshakeError {
    match e {
        handshake::Error::Io(io) if HeadLimitReached::is(&io) => {
            HandshakeError::HeadTooLarge { limit: max_head }
        }
        handshake::Error::Io(io) => HandshakeError::Io(io),
        handshake::Error::IncompleteHttpRequest => HandshakeError::HeadTooLarge { limit: max_head },
        handshake::Error::Http(inner)
            if inner.downcast_ref::<httparse::Error>()
                == Some(&httparse::Error::TooManyHeaders) =>
        {
            HandshakeError::HeadTooLarge { limit: max_head }
        }
        other => HandshakeError::Protocol(other),
    }
}

/// Decodes a request target into the path it names: the query is dropped and percent-escapes are
/// decoded. `None` if it is not an origin-form target or not UTF-8.
pub fn decode_target(target: &str) -> Option<String> {
    let path = target.split('?').next().unwrap_or_default();
    if !path.starts_with('/') {
        return None;
    }
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()
        .map(|p| p.into_owned())
}

/// Marker error for a head that exceeded the limit.
#[derive(Debug)]
struct HeadLimitReached;

impl std::fmt::Display for HeadLimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HTTP head size limit reached")
    }
}

impl std::error::Error for HeadLimitReached {}

impl HeadLimitReached {
    fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<HeadLimitReached>())
    }
}

/// A socket whose reads fail once `remaining` bytes have been read.
struct Bounded<'a, T> {
    io: &'a mut T,
    remaining: usize,
}

impl<'a, T> Bounded<'a, T> {
    fn new(io: &'a mut T, limit: usize) -> Self {
        Bounded {
            io,
            remaining: limit,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Bounded<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                HeadLimitReached,
            )));
        }
        let max = buf.len().min(this.remaining);
        let n = futures::ready!(Pin::new(&mut *this.io).poll_read(cx, &mut buf[..max]))?;
        this.remaining -= n;
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Bounded<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_buffers_are_reused_cleared_and_bounded() {
        let mut used = bytes::BytesMut::with_capacity(8 * 1024);
        used.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let capacity = used.capacity();
        buffers::give(used);
        let reused = buffers::take();
        assert!(
            reused.is_empty(),
            "contents of a previous handshake must not be kept"
        );
        assert_eq!(reused.capacity(), capacity);

        // Oversized and empty buffers are not kept; the pool never holds more than its bound.
        buffers::give(bytes::BytesMut::with_capacity(1024 * 1024));
        buffers::give(bytes::BytesMut::new());
        assert_eq!(buffers::take().capacity(), 0, "the pool should be empty");
        for _ in 0..100 {
            buffers::give(bytes::BytesMut::with_capacity(1024));
        }
        let kept = std::iter::from_fn(|| Some(buffers::take()))
            .take_while(|b| b.capacity() > 0)
            .count();
        assert_eq!(kept, buffers::KEEP);
    }

    #[test]
    fn targets() {
        assert_eq!(decode_target("/"), Some("/".into()));
        assert_eq!(decode_target("/a%2Fb?x=1"), Some("/a/b".into()));
        assert_eq!(decode_target("/a%20b"), Some("/a b".into()));
        assert_eq!(decode_target("http://x/a"), None);
        assert_eq!(decode_target("/%ff"), None);
    }

    #[test]
    fn too_many_headers_is_a_head_too_large() {
        let parse = handshake::Error::Http(Box::new(httparse::Error::TooManyHeaders));
        assert!(matches!(
            map_error(parse, 77),
            HandshakeError::HeadTooLarge { limit: 77 }
        ));
        let other = handshake::Error::Http(Box::new(httparse::Error::HeaderName));
        assert!(matches!(map_error(other, 77), HandshakeError::Protocol(_)));
    }

    #[test]
    fn reject_statuses() {
        let not_found = HandshakeError::PathNotFound {
            requested: "/x".into(),
            served: "/".into(),
        };
        assert_eq!(reject_status(&not_found), Some(404));
        assert_eq!(
            reject_status(&HandshakeError::HeadTooLarge { limit: 1 }),
            Some(431)
        );
        let no_upgrade =
            HandshakeError::Protocol(handshake::Error::HeaderNotFound("Upgrade".into()));
        assert_eq!(reject_status(&no_upgrade), Some(426));
        assert_eq!(
            reject_status(&HandshakeError::Io(io::ErrorKind::ConnectionReset.into())),
            None
        );
    }
}
