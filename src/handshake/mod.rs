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

use crate::error::{HandshakeError, UpgradeViolation};

/// Performs the server side of the upgrade on `io`: reads the request (at most `max_head` bytes),
/// checks that it asks for `path`, and answers `101 Switching Protocols`. Returns any bytes received
/// after the request head (a client may send its first frames, or part of one, right behind the
/// request): the start of the WebSocket stream, for [`Connection::new`](crate::Connection::new).
///
/// Requests that are not WebSocket upgrades get an HTTP error response before the error is
/// returned: 404 for another path, 405 for a method other than GET, 426 for a plain HTTP request,
/// 431 for a head over the limit, 400 for anything else malformed (among others a
/// `Sec-WebSocket-Key` that is not the base64 encoding of 16 bytes, and more than one `Host` or
/// `Sec-WebSocket-Key` header).
#[cfg(any(test, feature = "unstable-internals"))]
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub async fn accept<T>(io: &mut T, max_head: usize, path: &str) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    accept_inspecting(io, Vec::new(), max_head, path, &mut |_| Ok(())).await
}

/// The request's headers, as (name, value) pairs, for [`accept_inspecting`].
pub(crate) type Headers<'a> = &'a [httparse::Header<'a>];

/// [`accept`] of a connection whose first bytes (`read_ahead`: what [`read_head`] read, the
/// request head or its start) were read already, handing the request's headers to `inspect` once
/// they passed the upgrade's own checks; an error from it refuses the upgrade (answered 400 for
/// [`HandshakeError::Forwarded`]). The head limit counts the bytes read ahead.
pub(crate) async fn accept_inspecting<T>(
    io: &mut T,
    read_ahead: Vec<u8>,
    max_head: usize,
    path: &str,
    inspect: &mut (dyn FnMut(Headers<'_>) -> Result<(), HandshakeError> + Send),
) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut bounded = Bounded::new(io, max_head).replaying(read_ahead);
    let mut server = handshake::Server::new(&mut bounded);
    server.set_buffer(buffers::take());
    let result = serve(&mut server, max_head, path, inspect).await;
    buffers::give(server.take_buffer());
    // What was read ahead and not yet replayed follows what the upgrade read.
    result.map(|mut rest| {
        rest.extend_from_slice(bounded.unreplayed());
        rest
    })
}

/// Reads the start of a request from `io` behind `bytes` (what was read already) until they hold a
/// whole head (up to its empty line), at most `max_head` bytes in all; stops at a read error or
/// the end of the stream, which the upgrade meets again when it reads on. Returns the bytes read,
/// for [`accept_inspecting`] (to replay) or [`plain_request`](crate::http::plain_request).
pub(crate) async fn read_head<T>(io: &mut T, mut bytes: Vec<u8>, max_head: usize) -> Vec<u8>
where
    T: AsyncRead + Unpin,
{
    use futures::AsyncReadExt;
    const BLOCK: usize = 2048;
    let mut searched = 0;
    while bytes.len() < max_head {
        if bytes[searched..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        searched = bytes.len().saturating_sub(3);
        let start = bytes.len();
        bytes.resize(max_head.min(start + BLOCK), 0);
        match io.read(&mut bytes[start..]).await {
            Ok(n) if n > 0 => bytes.truncate(start + n),
            _ => {
                bytes.truncate(start);
                break;
            }
        }
    }
    bytes
}

async fn serve<T>(
    server: &mut handshake::Server<'_, &mut Bounded<'_, T>>,
    max_head: usize,
    path: &str,
    inspect: &mut (dyn FnMut(Headers<'_>) -> Result<(), HandshakeError> + Send),
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
            let checked = check_request(&buffer, inspect).and_then(|head_len| {
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
pub(crate) const MAX_HEADERS: usize = 32;

/// The checks soketto's server leaves out, on a request it accepted: one `Host` header (RFC 9112
/// section 3.2: a server answers 400 to more), one `Sec-WebSocket-Key` (RFC 6455 section 11.3.1)
/// that is the base64 encoding of 16 bytes (section 4.1; soketto checks only its length). Returns
/// the length of the request head.
fn check_request(
    buffer: &[u8],
    inspect: &mut (dyn FnMut(Headers<'_>) -> Result<(), HandshakeError> + Send),
) -> Result<usize, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        // soketto parsed the same bytes with the same header limit; neither can happen.
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::Protocol(UpgradeViolation::MalformedHttp(
                "incomplete request head".into(),
            )))
        }
        Err(e) => {
            return Err(HandshakeError::Protocol(UpgradeViolation::MalformedHttp(
                Box::new(e),
            )))
        }
    };
    let named = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    for name in ["Host", "Sec-WebSocket-Key"] {
        if named(name).count() > 1 {
            return Err(HandshakeError::DuplicateHeader { name });
        }
    }
    match named("Sec-WebSocket-Key").next() {
        Some(key) if is_base64_of_16_bytes(key.value) => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    inspect(request.headers)?;
    Ok(head_len)
}

/// Whether `key` is the (canonical, padded) base64 encoding of exactly 16 bytes: 22 characters of
/// the standard alphabet, the last of which carries only 2 bits (its low 4 bits are zero), then `==`.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let [data @ .., b'=', b'='] = key else {
        return false;
    };
    data.len() == 22
        && data.iter().all(|&c| value(c).is_some())
        && value(data[21]).is_some_and(|v| v & 0x0f == 0)
}

/// Performs the client side of the upgrade on `io`: sends a request for `target` with `Host: host`
/// and reads the response (at most `max_head` bytes). Returns any bytes received after the response
/// head: the start of the WebSocket stream.
///
/// A 101 response that selects an extension or a subprotocol (this side asks for none) fails with
/// [`HandshakeError::UnsolicitedExtension`] or [`HandshakeError::UnsolicitedSubprotocol`] (RFC 6455
/// section 4.1); a wrong `Sec-WebSocket-Accept` with
/// [`HandshakeError::Protocol`]`(`[`UpgradeViolation::AcceptMismatch`]`)`.
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub async fn connect<T>(
    io: &mut T,
    max_head: usize,
    host: &str,
    target: &str,
) -> Result<Vec<u8>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // The bytes read are kept (at most `max_head`) to check the response's headers, which soketto
    // does not hand out.
    let mut bounded = Bounded::new(io, max_head).recording();
    let (response, buffer) = {
        let mut client = handshake::Client::new(&mut bounded, host, target);
        client.set_buffer(buffers::take());
        let response = client.handshake().await;
        (response, client.take_buffer())
    };
    let leftover = buffer.to_vec();
    buffers::give(buffer);
    let response = response.map_err(
        |e| match crate::classify::answer_class(bounded.recorded()) {
            // A port of another form answered: say which, not "invalid HTTP version".
            Some(crate::classify::Class::Tls) => HandshakeError::AnsweredWithTls,
            Some(crate::classify::Class::Tcp) => HandshakeError::AnsweredWithMultistream,
            _ => map_error(e, max_head),
        },
    );
    let switched = match &response {
        Ok(ServerResponse::Accepted { .. }) => true,
        // soketto fails a 101 with any subprotocol (we offer none) without naming it.
        Err(HandshakeError::UnsolicitedSubprotocol { .. }) => true,
        _ => false,
    };
    if switched {
        check_unsolicited(bounded.recorded())?;
    }
    match response? {
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

/// Longest extension or subprotocol name kept in an error (the rest is cut off).
const MAX_NAME_IN_ERROR: usize = 100;

/// Fails a 101 response (`head`, as read) that selects an extension or a subprotocol: we offer
/// none, and RFC 6455 section 4.1 says the client MUST fail the connection then.
fn check_unsolicited(head: &[u8]) -> Result<(), HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if !matches!(response.parse(head), Ok(httparse::Status::Complete(_))) {
        // soketto parsed the same bytes; cannot happen.
        return Ok(());
    }
    let named = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    for header in named("Sec-WebSocket-Extensions") {
        let value = String::from_utf8_lossy(header.value);
        let first = value
            .split(',')
            .map(|ext| ext.split(';').next().unwrap_or_default().trim())
            .find(|name| !name.is_empty());
        if let Some(name) = first {
            return Err(HandshakeError::UnsolicitedExtension {
                extension: truncated(name),
            });
        }
    }
    if let Some(header) = named("Sec-WebSocket-Protocol").next() {
        return Err(HandshakeError::UnsolicitedSubprotocol {
            protocol: truncated(String::from_utf8_lossy(header.value).trim()),
        });
    }
    Ok(())
}

fn truncated(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME_IN_ERROR);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
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
pub(crate) fn reject_status(error: &HandshakeError) -> Option<u16> {
    use UpgradeViolation as V;
    Some(match error {
        HandshakeError::PathNotFound { .. } => 404,
        HandshakeError::HeadTooLarge { .. } => 431,
        HandshakeError::InvalidKey | HandshakeError::DuplicateHeader { .. } => 400,
        HandshakeError::Protocol(V::NotGet) => 405,
        HandshakeError::Protocol(V::MissingHeader(_) | V::UnexpectedHeader(_)) => 426,
        HandshakeError::Protocol(V::HttpVersion) => 505,
        HandshakeError::Forwarded(crate::forwarded::ForwardedError::ClientShareFull { .. }) => 503,
        HandshakeError::Io(_) => return None,
        _ => 400,
    })
}

fn map_error(e: handshake::Error, max_head: usize) -> HandshakeError {
    use UpgradeViolation as V;
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
        handshake::Error::Http(inner) => HandshakeError::Protocol(V::MalformedHttp(inner)),
        handshake::Error::UnsupportedHttpVersion => HandshakeError::Protocol(V::HttpVersion),
        handshake::Error::SecWebSocketKeyInvalidLength(len) => {
            HandshakeError::Protocol(V::KeyLength(len))
        }
        handshake::Error::InvalidRequestMethod => HandshakeError::Protocol(V::NotGet),
        handshake::Error::HeaderNotFound(name) => HandshakeError::Protocol(V::MissingHeader(name)),
        handshake::Error::UnexpectedHeader(name) => {
            HandshakeError::Protocol(V::UnexpectedHeader(name))
        }
        handshake::Error::InvalidSecWebSocketAccept => HandshakeError::Protocol(V::AcceptMismatch),
        // We ask for none; the response's header is named by `check_unsolicited`.
        handshake::Error::UnsolicitedExtension => HandshakeError::UnsolicitedExtension {
            extension: String::new(),
        },
        handshake::Error::UnsolicitedProtocol => HandshakeError::UnsolicitedSubprotocol {
            protocol: String::new(),
        },
        handshake::Error::Utf8(e) => HandshakeError::Protocol(V::Utf8(e)),
        handshake::Error::Extension(e) => HandshakeError::Protocol(V::MalformedHttp(e)),
        // soketto's error enum may grow; say what it said.
        other => HandshakeError::Protocol(V::MalformedHttp(other.to_string().into())),
    }
}

/// Decodes a request target into the path it names: the query is dropped and percent-escapes are
/// decoded. `None` if it is not an origin-form target or not UTF-8.
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
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

/// A socket whose reads fail once `remaining` bytes have been read; optionally keeps a copy of
/// what was read (so at most the limit), or first returns bytes read ahead of it.
struct Bounded<'a, T> {
    io: &'a mut T,
    remaining: usize,
    record: Option<Vec<u8>>,
    /// Bytes read from `io` before, returned first (from `at` on).
    ahead: Vec<u8>,
    at: usize,
}

impl<'a, T> Bounded<'a, T> {
    fn new(io: &'a mut T, limit: usize) -> Self {
        Bounded {
            io,
            remaining: limit,
            record: None,
            ahead: Vec::new(),
            at: 0,
        }
    }

    /// Reads `ahead` (bytes read from `io` already) before `io`; they count toward the limit.
    fn replaying(mut self, ahead: Vec<u8>) -> Self {
        self.ahead = ahead;
        self
    }

    /// The bytes read ahead that no read has returned yet.
    fn unreplayed(&self) -> &[u8] {
        &self.ahead[self.at..]
    }

    /// Keeps a copy of every byte read.
    fn recording(mut self) -> Self {
        self.record = Some(Vec::new());
        self
    }

    /// The bytes read so far, if recording.
    fn recorded(&self) -> &[u8] {
        self.record.as_deref().unwrap_or_default()
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
        let ahead = &this.ahead[this.at..];
        let n = if ahead.is_empty() {
            futures::ready!(Pin::new(&mut *this.io).poll_read(cx, &mut buf[..max]))?
        } else {
            let n = ahead.len().min(max);
            buf[..n].copy_from_slice(&ahead[..n]);
            this.at += n;
            n
        };
        this.remaining -= n;
        if let Some(record) = &mut this.record {
            record.extend_from_slice(&buf[..n]);
        }
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
mod tests;
