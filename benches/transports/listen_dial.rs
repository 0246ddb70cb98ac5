//! Listening, dialing and accepting over any stack's boxed transport, every wait bounded.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures::{
    future::{poll_fn, Either},
    stream::FuturesUnordered,
    StreamExt,
};
use libp2p::{
    core::{
        transport::{Boxed, ListenerId, TransportEvent},
        Multiaddr, Transport as _,
    },
    multiaddr::Protocol,
};

use crate::{helpers::dial_opts, runtime::within, WAIT};

pub(crate) async fn listen<O>(transport: &mut Boxed<O>, addr: &str) -> Result<Multiaddr> {
    transport
        .listen_on(ListenerId::next(), addr.parse()?)
        .map_err(|e| anyhow!("listen_on {addr}: {e}"))?;
    within(WAIT, "waiting for the listen address", async {
        loop {
            match poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await {
                TransportEvent::NewAddress { listen_addr, .. } => return Ok(listen_addr),
                TransportEvent::ListenerError { error, .. } => bail!("listener error: {error}"),
                TransportEvent::ListenerClosed { reason, .. } => {
                    bail!("listener closed: {reason:?}")
                }
                _ => {}
            }
        }
    })
    .await?
}

/// The `WsShared` listener: `/tcp` on port 0, then `/ws` on the port it got (one socket, shared
/// by the two listeners); returns the `/ws` address, which the dialer dials.
pub(crate) async fn listen_shared<O>(transport: &mut Boxed<O>) -> Result<Multiaddr> {
    let tcp = listen(transport, "/ip4/127.0.0.1/tcp/0").await?;
    let port = tcp
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .with_context(|| format!("no port in {tcp}"))?;
    let ws = listen(transport, &format!("/ip4/127.0.0.1/tcp/{port}/ws")).await?;
    ensure!(
        ws.iter().any(|p| p == Protocol::Ws("/".into()))
            && ws.iter().any(|p| p == Protocol::Tcp(port)),
        "the shared /ws listener reported {ws}, not /ws on port {port}"
    );
    Ok(ws)
}

pub(crate) async fn dial<O>(transport: &mut Boxed<O>, addr: &Multiaddr) -> Result<O> {
    let dial = transport
        .dial(addr.clone(), dial_opts())
        .map_err(|e| anyhow!("dial {addr}: {e}"))?;
    within(WAIT, "dialing", dial)
        .await?
        .with_context(|| format!("dialing {addr}"))
}

pub(crate) type Upgrade<O> = Pin<Box<dyn Future<Output = std::io::Result<O>> + Send>>;

/// Accepts `count` connections and runs `handler` on each (concurrently); returns the results.
pub(crate) async fn serve<O, H, F, R>(
    transport: &mut Boxed<O>,
    count: usize,
    wait: Duration,
    mut handler: H,
) -> Result<Vec<R>>
where
    H: FnMut(Upgrade<O>) -> F,
    F: Future<Output = Result<R>>,
{
    let mut running = FuturesUnordered::new();
    let mut accepted = 0;
    let mut results = Vec::with_capacity(count);
    while results.len() < count {
        // Nothing accepted yet: the dialer should be quick; a transfer may take `wait`.
        let limit = if running.is_empty() { WAIT } else { wait };
        let event = within(limit, "waiting for connections", async {
            poll_fn(|cx| {
                if accepted < count {
                    if let Poll::Ready(event) = Pin::new(&mut *transport).poll(cx) {
                        return Poll::Ready(Either::Left(event));
                    }
                }
                match running.poll_next_unpin(cx) {
                    Poll::Ready(Some(result)) => Poll::Ready(Either::Right(result)),
                    _ => Poll::Pending,
                }
            })
            .await
        })
        .await?;
        match event {
            Either::Left(TransportEvent::Incoming { upgrade, .. }) => {
                accepted += 1;
                running.push(handler(upgrade));
            }
            Either::Left(TransportEvent::ListenerError { error, .. }) => {
                bail!("listener error: {error}")
            }
            Either::Left(TransportEvent::ListenerClosed { reason, .. }) => {
                bail!("listener closed: {reason:?}")
            }
            Either::Left(_) => {}
            Either::Right(result) => results.push(result?),
        }
    }
    Ok(results)
}
