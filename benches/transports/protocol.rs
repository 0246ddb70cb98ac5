//! The stream protocol of the measurements: the dialer's first byte asks for a [`Mode`]; a sender
//! writes its bytes and waits for the receiver's ack; the receiver times from its first read to
//! the last byte ([`Received`]).

use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{runtime::within, stacks::Mode, CLOSE_WAIT};

/// Size of each write and of the read buffer.
pub(crate) const CHUNK: usize = 256 * 1024;
pub(crate) const ACK: u8 = 0xa5;
pub(crate) const ECHO_REPLY: u8 = 0x5a;

/// What a receiver saw: the first read (its bytes are not counted) and the last byte.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    pub(crate) first: Instant,
    pub(crate) first_bytes: u64,
    pub(crate) last: Instant,
    pub(crate) bytes: u64,
}

/// Aggregate throughput of concurrent receivers, in MB/s.
pub(crate) fn throughput(received: &[Received]) -> Result<f64> {
    let start = received
        .iter()
        .min_by_key(|r| r.first)
        .context("nothing was received")?;
    let end = received.iter().map(|r| r.last).max().expect("not empty");
    let bytes: u64 = received.iter().map(|r| r.bytes).sum::<u64>() - start.first_bytes;
    let secs = end.duration_since(start.first).as_secs_f64().max(1e-9);
    Ok(bytes as f64 / secs / 1e6)
}

pub(crate) async fn send<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<()> {
    let chunk = vec![0x42u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await.context("writing")?;
        left -= n as u64;
    }
    stream.flush().await.context("flushing")?;
    let mut ack = [0u8; 1];
    stream
        .read_exact(&mut ack)
        .await
        .context("reading the ack")?;
    ensure!(ack[0] == ACK, "bad ack {}", ack[0]);
    Ok(())
}

pub(crate) async fn receive<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<Received> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut first = None;
    while got < bytes {
        let want = (bytes - got).min(CHUNK as u64) as usize;
        let n = stream.read(&mut buf[..want]).await.context("reading")?;
        ensure!(n > 0, "end of stream after {got} of {bytes} bytes");
        got += n as u64;
        first.get_or_insert((Instant::now(), n as u64));
    }
    let last = Instant::now();
    stream.write_all(&[ACK]).await.context("writing the ack")?;
    stream.flush().await.context("flushing the ack")?;
    wait_for_close(stream).await;
    let (first, first_bytes) = first.unwrap_or((last, 0));
    Ok(Received {
        first,
        first_bytes,
        last,
        bytes,
    })
}

/// Waits (bounded) until the peer closes: whoever wrote the last byte lets the other side close
/// first, so that closing cannot overtake bytes still in flight.
pub(crate) async fn wait_for_close<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) {
    let mut byte = [0u8; 1];
    let _ = within(
        CLOSE_WAIT,
        "waiting for the peer to close",
        stream.read(&mut byte),
    )
    .await;
}

/// The dialer's side of a stream: asks for `mode`, then sends, receives or waits for the echo.
pub(crate) async fn stream_dialer<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    mode: Mode,
    bytes: u64,
) -> Result<Option<Received>> {
    stream
        .write_all(&[mode as u8])
        .await
        .context("writing the mode")?;
    stream.flush().await.context("flushing the mode")?;
    match mode {
        Mode::DialerUploads => send(stream, bytes).await.map(|()| None),
        Mode::ListenerUploads => receive(stream, bytes).await.map(Some),
        Mode::Echo => {
            let mut reply = [0u8; 1];
            stream
                .read_exact(&mut reply)
                .await
                .context("reading the echo")?;
            ensure!(reply[0] == ECHO_REPLY, "bad echo {}", reply[0]);
            Ok(None)
        }
    }
}

/// The listener's side of a stream.
pub(crate) async fn stream_listener<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<Option<Received>> {
    let mut mode = [0u8; 1];
    stream
        .read_exact(&mut mode)
        .await
        .context("reading the mode")?;
    match mode[0] {
        1 => receive(stream, bytes).await.map(Some),
        2 => send(stream, bytes).await.map(|()| None),
        3 => {
            stream.write_all(&[ECHO_REPLY]).await?;
            stream.flush().await?;
            wait_for_close(stream).await;
            Ok(None)
        }
        other => bail!("unknown mode {other}"),
    }
}
