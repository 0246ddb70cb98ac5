//! One measurement over a pair of transports of one stack: a transfer ([`Plan::Transfer`]) or a
//! series of sequential connection setups ([`Plan::Setup`]).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use libp2p::core::transport::Boxed;

use crate::{
    listen_dial::{dial, listen, listen_shared, serve},
    muxer::Conn,
    protocol::Received,
    runtime::{pair, within, Rt},
    stacks::{bare_transport, full_transport, Env, Layer, Mode, Side, Stack},
    WAIT,
};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Plan {
    Transfer {
        mode: Mode,
        streams: usize,
        bytes: u64,
    },
    Setup {
        count: usize,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) received: Vec<Received>,
    /// Per connection: dial -> dialer upgraded, dial -> first stream round trip done.
    pub(crate) setups: Vec<(Duration, Duration)>,
    /// Wall time of all the setups.
    pub(crate) elapsed: Duration,
}

/// One measurement over a pair of libp2p transports made by `make`.
pub(crate) fn measure<O: Conn>(
    rt: Rt,
    listen_addr: &str,
    shared: bool,
    make: &(dyn Fn(Side) -> Boxed<O> + Sync),
    plan: Plan,
    timeout: Duration,
) -> Result<Outcome> {
    let (count, streams, bytes) = match plan {
        Plan::Transfer { streams, bytes, .. } => (1, streams, bytes),
        Plan::Setup { count } => (count, 1, 0),
    };
    let (listener, dialer) = pair(
        rt,
        |tx| async move {
            let mut transport = make(Side::Listener);
            let addr = if shared {
                listen_shared(&mut transport).await?
            } else {
                listen(&mut transport, listen_addr).await?
            };
            tx.send(addr).ok();
            let results = serve(
                &mut transport,
                count,
                timeout + WAIT,
                |upgrade| async move {
                    let mut conn = within(WAIT, "listener upgrade", upgrade)
                        .await?
                        .context("listener upgrade")?;
                    let result =
                        within(timeout, "listener side", conn.listener(streams, bytes)).await;
                    conn.close().await;
                    result?
                },
            )
            .await?;
            Ok(results.into_iter().flatten().collect::<Vec<_>>())
        },
        |addr| async move {
            let mut transport = make(Side::Dialer);
            let mut outcome = Outcome::default();
            match plan {
                Plan::Transfer {
                    mode,
                    streams,
                    bytes,
                } => {
                    let mut conn = dial(&mut transport, &addr).await?;
                    let result =
                        within(timeout, "dialer side", conn.dialer(streams, mode, bytes)).await;
                    conn.close().await;
                    outcome.received = result??;
                }
                Plan::Setup { count } => {
                    let start = Instant::now();
                    for _ in 0..count {
                        let t0 = Instant::now();
                        let mut conn = dial(&mut transport, &addr).await?;
                        let upgraded = t0.elapsed();
                        within(WAIT, "first stream", conn.dialer(1, Mode::Echo, 0)).await??;
                        let first_stream = t0.elapsed();
                        conn.close().await;
                        outcome.setups.push((upgraded, first_stream));
                    }
                    outcome.elapsed = start.elapsed();
                }
            }
            Ok(outcome)
        },
    )?;
    let mut outcome = dialer;
    outcome.received.extend(listener);
    Ok(outcome)
}

pub(crate) fn measure_stack(
    stack: Stack,
    layer: Layer,
    plan: Plan,
    env: &Env,
    timeout: Duration,
) -> Result<Outcome> {
    let rt = stack.runtime();
    match (stack, layer, plan) {
        (_, Layer::Full, _) => measure(
            rt,
            stack.listen_addr(),
            stack == Stack::WsShared,
            &|side| full_transport(stack, side, Some(env)),
            plan,
            timeout,
        ),
        (_, layer, _) => measure(
            rt,
            stack.listen_addr(),
            false,
            &|side| bare_transport(stack, layer, side, env),
            plan,
            timeout,
        ),
    }
}
