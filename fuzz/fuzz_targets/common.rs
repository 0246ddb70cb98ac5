//! Shared by the fuzz targets: an in-memory socket that serves the fuzz input.
#![allow(dead_code)]

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};

/// An `AsyncRead + AsyncWrite` that reads `input` (in pieces of varying size, sometimes returning
/// `Pending` first) and swallows writes (keeping the first few KiB, for the handshake).
pub struct Mem<'a> {
    input: &'a [u8],
    pos: usize,
    rng: u32,
    pub written: Vec<u8>,
    /// Placeholder in `input` replaced by the `Sec-WebSocket-Accept` value that answers the request
    /// written so far (lets the client handshake succeed).
    pub substitute_accept: bool,
    substituted: Option<Vec<u8>>,
}

pub const ACCEPT_PLACEHOLDER: &[u8] = b"{ACCEPT}";

impl<'a> Mem<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        let seed = input
            .iter()
            .take(16)
            .fold(0x9e37_79b9u32, |h, b| h.rotate_left(5) ^ u32::from(*b));
        Mem {
            input,
            pos: 0,
            rng: seed | 1,
            written: Vec::new(),
            substitute_accept: false,
            substituted: None,
        }
    }

    fn next_rand(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        self.rng
    }

    fn data(&mut self) -> &[u8] {
        if self.substitute_accept && self.substituted.is_none() {
            if let Some(accept) = accept_for(&self.written) {
                let mut out = Vec::with_capacity(self.input.len() + 32);
                let mut rest = self.input;
                while let Some(i) = find(rest, ACCEPT_PLACEHOLDER) {
                    out.extend_from_slice(&rest[..i]);
                    out.extend_from_slice(accept.as_bytes());
                    rest = &rest[i + ACCEPT_PLACEHOLDER.len()..];
                }
                out.extend_from_slice(rest);
                self.substituted = Some(out);
            }
        }
        match &self.substituted {
            Some(v) => v,
            None => self.input,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `Sec-WebSocket-Accept` answering the `Sec-WebSocket-Key` in `request`, if any.
fn accept_for(request: &[u8]) -> Option<String> {
    use base64::Engine as _;
    use sha1::Digest as _;
    let text = std::str::from_utf8(request).ok()?;
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    })?;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    Some(base64::engine::general_purpose::STANDARD.encode(sha.finalize()))
}

impl AsyncRead for Mem<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.next_rand();
        if r.is_multiple_of(8) {
            // Not ready yet: exercises the Pending paths (and the keep-alive timer arming).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let pos = this.pos;
        let data = this.data();
        let remaining = data.len().saturating_sub(pos);
        let piece = match r % 4 {
            0 => 1,
            1 => 7,
            2 => 64,
            _ => usize::MAX,
        };
        let n = remaining.min(buf.len()).min(piece);
        buf[..n].copy_from_slice(&data[pos..pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }

    /// Fills the buffers in order, like `readv` (the frame reader's direct payload reads use it).
    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut total = 0;
        for buf in bufs.iter_mut().filter(|b| !b.is_empty()) {
            match self.as_mut().poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if total == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(total))
    }
}

impl AsyncWrite for Mem<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.next_rand();
        if r.is_multiple_of(16) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = if r.is_multiple_of(3) {
            buf.len().min(5)
        } else {
            buf.len()
        };
        if this.written.len() < 16 * 1024 {
            this.written.extend_from_slice(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads everything the connection yields, alternating between the byte-stream and the
/// message-level API; checks the invariants of both. Stops at the first error or EOF.
pub async fn drain<T>(conn: &mut libp2p_ws::Connection<T>, message_api: bool) -> io::Result<u64>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    use futures::{future::poll_fn, AsyncReadExt};
    // Read sizes vary so that reads through the read buffer and direct payload reads (4 KiB and
    // up) both happen.
    let mut big = vec![0u8; 8192];
    let mut total = 0u64;
    for round in 0usize.. {
        let buf = &mut big[..[333, 8192, 1, 4096][round % 4]];
        if message_api {
            match poll_fn(|cx| conn.poll_read_message(cx, buf)).await? {
                None => return Ok(total),
                Some(chunk) => {
                    assert!(chunk.len <= buf.len());
                    total += chunk.len as u64;
                }
            }
        } else {
            let n = conn.read(buf).await?;
            if n == 0 {
                return Ok(total);
            }
            assert!(n <= buf.len());
            total += n as u64;
        }
        assert!(total <= 64 * 1024 * 1024);
    }
    unreachable!()
}
