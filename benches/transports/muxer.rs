//! Driving yamux muxers while streams run on them, and the [`Conn`] trait that lets the
//! measurements treat a multiplexed connection and a bare one alike.

use std::{future::Future, pin::pin, task::Poll};

use anyhow::{anyhow, ensure, Context as _, Result};
use futures::{
    channel::mpsc,
    future::{poll_fn, select, Either},
    stream::FuturesUnordered,
    AsyncWriteExt, StreamExt, TryStreamExt,
};
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox};

use crate::{
    protocol::{stream_dialer, stream_listener, Received},
    runtime::within,
    stacks::{Mode, Muxed, RawStream},
    CLOSE_WAIT, WAIT,
};

/// Polls `muxer` until it fails or closes (returns why); inbound streams go to `inbound`, or are
/// dropped.
pub(crate) async fn drive(
    muxer: &mut StreamMuxerBox,
    inbound: Option<&mpsc::UnboundedSender<SubstreamBox>>,
) -> String {
    poll_fn(|cx| loop {
        match muxer.poll_unpin(cx) {
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(format!("muxer failed: {e}")),
            Poll::Pending => {}
        }
        match muxer.poll_inbound_unpin(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(inbound) = inbound {
                    let _ = inbound.unbounded_send(stream);
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(format!("muxer closed: {e}")),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Runs `work` while driving `muxer`.
pub(crate) async fn drive_while<F: Future>(
    muxer: &mut StreamMuxerBox,
    inbound: Option<&mpsc::UnboundedSender<SubstreamBox>>,
    work: F,
) -> Result<F::Output> {
    let work = pin!(work);
    let driver = pin!(drive(muxer, inbound));
    match select(work, driver).await {
        Either::Left((output, _)) => Ok(output),
        // The peer may have closed right after its last bytes (the ack): those are read already.
        Either::Right((why, work)) => within(CLOSE_WAIT, why, work).await,
    }
}

pub(crate) async fn open_outbound(muxer: &mut StreamMuxerBox) -> Result<SubstreamBox> {
    within(
        WAIT,
        "opening a stream",
        poll_fn(|cx| loop {
            match muxer.poll_unpin(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(anyhow!("muxer failed: {e}"))),
                Poll::Pending => {}
            }
            return muxer
                .poll_outbound_unpin(cx)
                .map_err(|e| anyhow!("opening a stream: {e}"));
        }),
    )
    .await?
}

/// A connection as the measurements use it.
pub(crate) trait Conn: Send + 'static {
    /// Opens `streams` streams and runs the dialer's side of `mode` on each, concurrently.
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>>;
    /// Accepts `streams` streams and runs the listener's side on each, concurrently.
    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>>;
    /// Closes the connection (bounded; errors ignored).
    async fn close(self);
}

impl Conn for Muxed {
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>> {
        let muxer = &mut self.1;
        let mut opened = Vec::with_capacity(streams);
        for _ in 0..streams {
            opened.push(open_outbound(muxer).await?);
        }
        let work = opened
            .into_iter()
            .map(|mut s| async move {
                let result = stream_dialer(&mut s, mode, bytes).await;
                // Close rather than drop: a dropped yamux stream may be reset before its last
                // frames leave.
                let _ = s.close().await;
                result
            })
            .collect::<FuturesUnordered<_>>()
            .try_collect::<Vec<_>>();
        Ok(drive_while(muxer, None, work)
            .await??
            .into_iter()
            .flatten()
            .collect())
    }

    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>> {
        let (tx, mut rx) = mpsc::unbounded();
        let work = async {
            let mut accepted = Vec::with_capacity(streams);
            while accepted.len() < streams {
                accepted.push(rx.next().await.context("inbound streams ended")?);
            }
            accepted
                .into_iter()
                .map(|mut s: SubstreamBox| async move {
                    let result = stream_listener(&mut s, bytes).await;
                    let _ = s.close().await;
                    result
                })
                .collect::<FuturesUnordered<_>>()
                .try_collect::<Vec<_>>()
                .await
        };
        Ok(drive_while(&mut self.1, Some(&tx), work)
            .await??
            .into_iter()
            .flatten()
            .collect())
    }

    async fn close(self) {
        let _ = within(CLOSE_WAIT, "closing", self.1.close()).await;
    }
}

impl Conn for RawStream {
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>> {
        ensure!(streams == 1, "a bare connection is one stream");
        Ok(stream_dialer(self, mode, bytes)
            .await?
            .into_iter()
            .collect())
    }

    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>> {
        ensure!(streams == 1, "a bare connection is one stream");
        Ok(stream_listener(self, bytes).await?.into_iter().collect())
    }

    async fn close(mut self) {
        let _ = within(CLOSE_WAIT, "closing", AsyncWriteExt::close(&mut self)).await;
    }
}
