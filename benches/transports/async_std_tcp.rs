//! Bare TCP on async-std as a minimal libp2p transport ([`AsyncStdTcp`]): the runtime baseline
//! beside libp2p-tcp on tokio.

use std::{pin::Pin, task::Poll};

use anyhow::Result;
use futures::FutureExt;
use libp2p::core::{
    transport::{DialOpts, ListenerId, TransportEvent},
    Multiaddr, Transport,
};

use crate::{
    helpers::{tcp_multiaddr, tcp_socket_addr},
    stacks::RawStream,
};

/// Bare TCP on async-std (the socket libp2p-ws runs on) as a minimal libp2p transport: one
/// listener, `TCP_NODELAY`, the baseline for the WebSocket layer.
#[derive(Default)]
pub(crate) struct AsyncStdTcp {
    listener: Option<(
        ListenerId,
        async_io::Async<std::net::TcpListener>,
        Multiaddr,
    )>,
    announced: bool,
}

impl Transport for AsyncStdTcp {
    type Output = RawStream;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Ready<std::io::Result<RawStream>>;
    type Dial = futures::future::BoxFuture<'static, std::io::Result<RawStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::core::transport::TransportError<Self::Error>> {
        use libp2p::core::transport::TransportError;
        let socket = tcp_socket_addr(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let listener = async_io::Async::<std::net::TcpListener>::bind(socket)
            .map_err(TransportError::Other)?;
        let local = listener
            .get_ref()
            .local_addr()
            .map_err(TransportError::Other)?;
        self.listener = Some((id, listener, tcp_multiaddr(local)));
        Ok(())
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        self.listener.take().is_some()
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, libp2p::core::transport::TransportError<Self::Error>> {
        let socket = tcp_socket_addr(&addr)
            .ok_or(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr))?;
        Ok(async move {
            let stream = async_std::net::TcpStream::connect(socket).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as RawStream)
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let Some((id, listener, local)) = &this.listener else {
            return Poll::Pending;
        };
        if !this.announced {
            this.announced = true;
            return Poll::Ready(TransportEvent::NewAddress {
                listener_id: *id,
                listen_addr: local.clone(),
            });
        }
        loop {
            match listener.get_ref().accept() {
                Ok((stream, remote)) => {
                    let upgrade = stream
                        .set_nodelay(true)
                        .map(|()| Box::new(async_std::net::TcpStream::from(stream)) as RawStream);
                    return Poll::Ready(TransportEvent::Incoming {
                        listener_id: *id,
                        upgrade: futures::future::ready(upgrade),
                        local_addr: local.clone(),
                        send_back_addr: tcp_multiaddr(remote),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(error) = futures::ready!(listener.poll_readable(cx)) {
                        return Poll::Ready(TransportEvent::ListenerError {
                            listener_id: *id,
                            error,
                        });
                    }
                }
                Err(error) => {
                    return Poll::Ready(TransportEvent::ListenerError {
                        listener_id: *id,
                        error,
                    })
                }
            }
        }
    }
}
