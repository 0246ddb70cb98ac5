//! Unit tests of the stream adapter over scripted sockets.

use std::io::IoSlice;

use super::*;
use crate::proto::apply_mask;

/// One masked binary frame as a client sends it (payload shorter than 64 KiB).
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let len = u16::try_from(payload.len()).expect("short payload");
    let mut wire = vec![0x82, 0x80 | 126];
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(&mask);
    let body = wire.len();
    wire.extend_from_slice(payload);
    apply_mask(&mut wire[body..], mask, 0);
    wire
}

/// A socket that takes at most a few bytes per write (cycling through `caps`, spanning buffers
/// in vectored writes) and is sometimes not ready: every partial-write path of the writer.
struct Trickle {
    wire: Vec<u8>,
    caps: &'static [usize],
    calls: usize,
}

impl Trickle {
    fn next_cap(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        self.calls += 1;
        let cap = self.caps[self.calls % self.caps.len()];
        if cap == 0 {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(cap)
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(mut cap) = this.next_cap(cx) else {
            return Poll::Pending;
        };
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(cap);
            this.wire.extend_from_slice(&buf[..take]);
            n += take;
            cap -= take;
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

#[test]
fn partial_writes_of_direct_and_buffered_frames_keep_the_stream_intact() {
    use futures::{executor::block_on, io::Cursor, AsyncReadExt, AsyncWriteExt};
    let limits = FrameLimits::default();
    // Large writes (sent straight from the caller's buffer) and small ones (gathered), with
    // flushes between some of them.
    let sizes = [10_000, 100, 3, 70_000, 4096, 5000, 4095, 200_000, 1];
    const CAPS: [&[usize]; 3] = [
        &[usize::MAX],
        &[1, 5, 0, 13, 3000],
        &[2, 0, 9000, 7, 65_536, 0],
    ];
    for caps in CAPS {
        for role in [Role::Server, Role::Client] {
            let io = Trickle {
                wire: Vec::new(),
                caps,
                calls: 0,
            };
            let mut conn = Connection::new(io, role, limits, &[]);
            let mut sent = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
                block_on(conn.write_all(&data)).expect("write");
                if i % 2 == 0 {
                    block_on(conn.flush()).expect("flush");
                }
                sent.extend_from_slice(&data);
            }
            block_on(conn.close()).expect("close");
            let wire = std::mem::take(&mut conn.io.wire);

            let peer = match role {
                Role::Server => Role::Client,
                Role::Client => Role::Server,
            };
            let mut reader = Connection::new(Cursor::new(wire), peer, limits, &[]);
            let mut got = Vec::new();
            block_on(reader.read_to_end(&mut got)).expect("read back");
            assert!(
                got == sent,
                "{role:?} with write caps {caps:?}: stream differs"
            );
        }
    }
}

#[test]
fn read_buffer_stays_small_for_large_reads_and_grows_for_small_ones() {
    use futures::{executor::block_on, io::Cursor, AsyncReadExt};
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let wire = masked_frame(&payload);
    let limits = FrameLimits::default();
    for (piece, peak_capacity) in [
        (64 * 1024, SMALL_READ_BUFFER),
        (100, limits.read_buffer_size()),
    ] {
        let mut conn = Connection::new(Cursor::new(wire.clone()), Role::Server, limits, &[]);
        let (mut got, mut buf, mut peak) = (Vec::new(), vec![0; piece], 0);
        while got.len() < payload.len() {
            let n = block_on(conn.read(&mut buf)).expect("read");
            assert!(n > 0, "EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            peak = peak.max(conn.buffered_capacity());
        }
        assert_eq!(got, payload, "reads of {piece}");
        assert_eq!(peak, peak_capacity, "reads of {piece}");
    }
}

/// An in-memory socket: reads serve `input` (at most `piece` bytes per read), writes are counted
/// and dropped.
struct Mem {
    input: Vec<u8>,
    pos: usize,
    piece: usize,
    written: usize,
}

impl AsyncRead for Mem {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.piece).min(this.input.len() - this.pos);
        buf[..n].copy_from_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Mem {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct CountingWaker(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self
            .0
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A frame as a client (masked, `role` Server reads it) or a server (unmasked) sends it.
fn small_frame(sender: Role, first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut wire = vec![first];
    match sender {
        Role::Client => {
            let mask = [9, 8, 7, 6];
            wire.push(0x80 | payload.len() as u8);
            wire.extend_from_slice(&mask);
            let body = wire.len();
            wire.extend_from_slice(payload);
            apply_mask(&mut wire[body..], mask, 0);
        }
        Role::Server => {
            wire.push(payload.len() as u8);
            wire.extend_from_slice(payload);
        }
    }
    wire
}

#[test]
fn one_read_call_yields_after_the_per_poll_bound_and_wakes_its_task() {
    use std::sync::{atomic::Ordering, Arc};
    const FLOOD: usize = 10_000;
    for reader in [Role::Server, Role::Client] {
        let sender = match reader {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        // (what, the flood, the data frame behind it)
        let floods = [
            ("empty binary frames", small_frame(sender, 0x82, b""), None),
            ("empty pings", small_frame(sender, 0x89, b""), None),
            ("125-byte pings", small_frame(sender, 0x89, &[7; 125]), None),
            (
                "empty continuation frames",
                small_frame(sender, 0x00, b""),
                Some(small_frame(sender, 0x02, b"")),
            ),
        ];
        for (what, unit, start) in floods {
            let mut input = start.clone().unwrap_or_default();
            for _ in 0..FLOOD {
                input.extend_from_slice(&unit);
            }
            let end = if start.is_some() { 0x80 } else { 0x82 };
            input.extend_from_slice(&small_frame(sender, end, b"end"));
            for piece in [usize::MAX, 1000, 3] {
                let io = Mem {
                    input: input.clone(),
                    pos: 0,
                    piece,
                    written: 0,
                };
                let limits = FrameLimits::default().with_keep_alive(None);
                let mut conn = Connection::new(io, reader, limits, &[]);
                let counter = Arc::new(CountingWaker(0.into()));
                let waker = futures::task::waker(counter.clone());
                let mut cx = Context::from_waker(&waker);
                let mut buf = [0u8; 16];
                let mut got = Vec::new();
                let (mut polls, mut pendings) = (0, 0);
                while got.len() < 3 {
                    polls += 1;
                    match Pin::new(&mut conn).poll_read(&mut cx, &mut buf) {
                        Poll::Ready(result) => {
                            let n = result.expect("read");
                            assert!(n > 0, "{reader:?} reading {what}: EOF");
                            got.extend_from_slice(&buf[..n]);
                        }
                        Poll::Pending => {
                            pendings += 1;
                            // Yielding is not waiting: the task must be woken to come back.
                            assert_eq!(
                                counter.0.load(Ordering::Relaxed),
                                pendings,
                                "{reader:?} reading {what} in pieces of {piece}: Pending without a wake"
                            );
                        }
                    }
                    assert!(polls <= FLOOD, "{reader:?} reading {what}: no progress");
                }
                assert_eq!(got, b"end", "{reader:?} reading {what}");
                let frames = FLOOD + usize::from(start.is_some());
                let per_poll = frames.div_ceil(polls);
                if piece == usize::MAX {
                    eprintln!(
                        "figure: {reader:?} reading {FLOOD} {what}: {polls} polls, {pendings} \
                         yields (at most {per_poll} frames per poll)"
                    );
                }
                assert!(
                    pendings >= frames / MAX_FRAMES_PER_POLL,
                    "{reader:?} reading {what} in pieces of {piece}: only {pendings} yields for \
                     {frames} frames"
                );
                assert!(per_poll <= MAX_FRAMES_PER_POLL);
                if what.contains("pings") {
                    assert!(conn.get_ref().written > 0, "pings are answered");
                }
            }
        }
    }
}
