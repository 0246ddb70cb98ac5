//! The IO of serving an accepted connection (what to do is decided in `inbound`): reading a PROXY
//! protocol header, reading the first bytes (and refusing a connection for a kind the socket does
//! not serve), then TLS and the HTTP upgrade (reading or ignoring the forwarding headers of the
//! request), or nothing for `/tcp`.

use std::{io, pin::Pin, sync::Arc, task::Poll};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsAcceptor;

use super::{
    inbound::{charge_named, route, Inspect, Route, Unrecognised},
    output::Prefix,
    Output, Shared, Socket, TcpConnection,
};
use crate::{
    addr::Kind,
    admission::Charge,
    classify::{self, Served, Verdict, MAX_PREFIX},
    error::{Error, HandshakeError, TlsError},
    forwarded::{
        self, ForwardedClient, ForwardedError, ProxyHeader, ProxyParse, ProxyProtocol,
        ReverseProxy, V2_SIGNATURE,
    },
    framed::Connection,
    handshake,
    proto::Role,
    provider::Provider,
};

/// Most bytes read (and dropped) from a connection that is refused, after the sign was sent, so
/// that closing it does not reset the connection before the dialer read the sign.
const MAX_DRAIN: usize = 64 * 1024;

/// How a listener serves the connections of its kind.
#[derive(Clone)]
pub(super) enum Serve {
    /// `/tcp`: the stream as it is.
    Tcp,
    /// `/ws` or `/tls/ws`: TLS if `tls`, then the HTTP upgrade for `path`.
    Ws {
        tls: Option<TlsAcceptor>,
        path: String,
    },
}

/// Reads the first bytes of a connection, at most [`MAX_PREFIX`], until [`classify`] decides;
/// `prefix` holds what was read before (after a PROXY header, the bytes that told it was none).
/// Bytes that start like a PROXY v2 signature are read on until it is whole or broken, so that
/// [`is_proxy_header`] can tell.
pub(super) async fn read_first_bytes<S: AsyncRead + Unpin>(
    io: &mut S,
    mut prefix: Prefix,
) -> io::Result<(Verdict, Prefix)> {
    loop {
        let bytes = prefix.bytes();
        let v2_so_far = bytes.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(bytes);
        match classify::classify(bytes) {
            Verdict::NeedMore if usize::from(prefix.end) < MAX_PREFIX => {}
            Verdict::NeedMore => return Ok((Verdict::Unknown, prefix)),
            Verdict::Unknown if v2_so_far => {}
            verdict => return Ok((verdict, prefix)),
        }
        let n = io.read(&mut prefix.buf[usize::from(prefix.end)..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        prefix.end += n as u8;
    }
}

/// Whether the first bytes of a connection (as [`read_first_bytes`] read them) are a PROXY protocol
/// header's start: v1's `PROXY ` (which [`classify`] takes for an HTTP method) or v2's signature.
/// Where no PROXY header is read, such a connection is closed without an answer
/// ([`ForwardedError::ProxyHeaderUnexpected`]), as [`ProxyProtocol::Off`] documents.
pub(super) fn is_proxy_header(prefix: &Prefix) -> bool {
    let bytes = prefix.bytes();
    bytes.starts_with(b"PROXY ") || bytes.starts_with(&V2_SIGNATURE)
}

/// Closes a connection this port does not serve: sends `sign` (see
/// [`refusal_sign`](classify::refusal_sign)) and a FIN at once, then reads and drops what the
/// client sent that has already arrived (at most [`MAX_DRAIN`] bytes, without waiting), so that the
/// close does not reset the connection before the client read the sign.
pub(super) async fn refuse<P: Provider>(io: &mut P::Stream, sign: &[u8]) {
    if !sign.is_empty() && io.write_all(sign).await.is_err() {
        return;
    }
    if io.close().await.is_err() || P::shutdown_write(io).is_err() {
        return;
    }
    drain_arrived(io).await;
}

/// Reads and drops what the client sent that has already arrived (at most [`MAX_DRAIN`] bytes,
/// without waiting), so that closing the connection does not reset it before the client read
/// what it was sent. Only what has arrived: waiting for the client to close would hold the
/// connection (and its admission ticket) until the timeout.
async fn drain_arrived<S: AsyncRead + Unpin>(io: &mut S) {
    let mut drained = 0;
    let mut scratch = [0u8; 2048];
    while drained < MAX_DRAIN {
        let read = futures::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *io).poll_read(cx, &mut scratch) {
                Poll::Ready(Ok(n)) if n > 0 => Some(n),
                _ => None,
            })
        })
        .await;
        match read {
            Some(n) => drained += n,
            None => return,
        }
    }
}

/// Reads a PROXY protocol header if `mode` asks for one: exactly its bytes, nothing after it
/// (at most [`MAX_PROXY_HEADER`](forwarded::MAX_PROXY_HEADER)). Returns the header, if there was
/// one, and the bytes read that turned out not to be one (for [`read_first_bytes`]).
pub(super) async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
    mode: ProxyProtocol,
) -> Result<(Option<ProxyHeader>, Prefix), Error> {
    if mode == ProxyProtocol::Off {
        return Ok((None, Prefix::default()));
    }
    let mut buf = Vec::new();
    loop {
        match forwarded::parse_proxy_header(&buf).map_err(Error::ProxyProtocol)? {
            ProxyParse::NotProxy if mode == ProxyProtocol::Required => {
                return Err(Error::ProxyProtocol(ForwardedError::ProxyHeaderMissing))
            }
            ProxyParse::NotProxy => return Ok((None, Prefix::from_bytes(&buf))),
            ProxyParse::NeedMore(n) => {
                let start = buf.len();
                buf.resize(start + n, 0);
                io.read_exact(&mut buf[start..])
                    .await
                    .map_err(first_bytes_error)?;
            }
            ProxyParse::Done { header, .. } => return Ok((Some(header), Prefix::default())),
        }
    }
}

/// The forwarding headers, for the debug log of ignored ones.
const FORWARDING_HEADERS: [&str; 4] = [
    "Forwarded",
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Forwarded-Proto",
];

fn first_bytes_error(error: io::Error) -> Error {
    Error::Handshake(HandshakeError::Io(error))
}

/// The `/tcp` connection on a socket that serves only `/tcp` (the [`Path::Direct`]): reads its
/// first bytes and [`route`]s them (unrecognised bytes are served), then serves it or refuses it.
///
/// [`Path::Direct`]: super::inbound::Path::Direct
pub(super) async fn accept_tcp<P: Provider>(
    shared: Arc<Shared>,
    mut tcp: P::Stream,
) -> Result<Output<P::Stream>, Error> {
    let (verdict, prefix) = read_first_bytes(&mut tcp, Prefix::default())
        .await
        .map_err(first_bytes_error)?;
    let served = Served::default().with(Kind::Tcp);
    let unrecognised = Unrecognised::ServeAs(Kind::Tcp);
    match route(verdict, is_proxy_header(&prefix), served, unrecognised) {
        Route::Serve(_) => Ok(serve_tcp::<P>(&shared, tcp, prefix)),
        Route::Refuse { sign, error } => {
            refuse::<P>(&mut tcp, sign).await;
            Err(error)
        }
    }
}

/// Serves a routed `/tcp` connection (the bytes read to route it in `prefix`).
pub(super) fn serve_tcp<P: Provider>(
    shared: &Shared,
    tcp: P::Stream,
    prefix: Prefix,
) -> Output<P::Stream> {
    if let Err(e) = P::set_nodelay(&tcp, shared.config.nodelay) {
        tracing::debug!(%e, "could not set TCP_NODELAY");
    }
    Output::Tcp(TcpConnection::with_prefix(tcp, prefix))
}

/// A WebSocket connection whose request head is read (after TLS, for `/tls/ws`), to be upgraded.
pub(super) struct Opened<S> {
    stream: Socket<S>,
    /// The bytes read: the request head, maybe some of what follows it, or, if the head did not
    /// come whole, as much as came.
    read: Vec<u8>,
}

/// What [`open`] found.
pub(super) enum Open<S> {
    /// An upgrade request (or a head that is not a plain request: the upgrade answers it).
    Upgrade(Opened<S>),
    /// A plain HTTP request, answered with `status` (`None`: the connection ended first) and
    /// closed.
    Answered { status: Option<u16> },
    /// An ACME TLS-ALPN-01 validation (the TLS handshake negotiated `acme-tls/1`), closed.
    Validated,
}

/// Whether the TLS handshake negotiated `acme-tls/1` (only a [`CertificateSource`] that answers
/// it offers it: [`CertificateSource::alpn_protocols`]).
///
/// [`CertificateSource`]: crate::CertificateSource
/// [`CertificateSource::alpn_protocols`]: crate::CertificateSource::alpn_protocols
fn is_acme_validation<S>(stream: &Socket<S>) -> bool {
    match stream {
        Socket::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"acme-tls/1"),
        Socket::Plain(_) => false,
    }
}

/// Opens a routed WebSocket connection (the bytes read to route it in `prefix`): TLS if
/// `tls`, then the request head. A plain HTTP request (see [`crate::http`]) is answered here: by
/// the configured responders, or as the upgrade answers it (426, 404, 405).
pub(super) async fn open<P: Provider>(
    shared: Arc<Shared>,
    tcp: P::Stream,
    prefix: Prefix,
    tls: Option<TlsAcceptor>,
    path: &str,
) -> Result<Open<P::Stream>, Error> {
    let config = &shared.config;
    if let Err(e) = P::set_nodelay(&tcp, config.nodelay) {
        tracing::debug!(%e, "could not set TCP_NODELAY");
    }
    let (mut stream, ahead) = match tls {
        Some(acceptor) => (accept_tls::<P>(&acceptor, tcp, prefix).await?, Vec::new()),
        None => (Socket::Plain(tcp), prefix.bytes().to_vec()),
    };
    if is_acme_validation(&stream) {
        // A CA validating a TLS-ALPN-01 challenge: the handshake was the answer (RFC 8737
        // section 3); it sends no request.
        let _ = stream.close().await;
        return Ok(Open::Validated);
    }
    let read = handshake::read_head(&mut stream, ahead, config.max_head_size).await;
    match crate::http::plain_request(&read) {
        Some(request) => {
            let status = answer(&shared, &mut stream, request, read, path).await;
            Ok(Open::Answered { status })
        }
        None => Ok(Open::Upgrade(Opened { stream, read })),
    }
}

/// Answers a plain HTTP `request` (read in `read`) and closes the connection: with the response
/// of the responder that takes it, or, if none does, as the upgrade answers it. Returns the
/// status sent.
async fn answer<S>(
    shared: &Shared,
    stream: &mut Socket<S>,
    request: crate::http::Request<()>,
    read: Vec<u8>,
    path: &str,
) -> Option<u16>
where
    Socket<S>: AsyncRead + AsyncWrite + Unpin,
{
    let http = &shared.config.http;
    let head_only = request.method() == http::Method::HEAD;
    let response = http.respond(request).await;
    let status = match response {
        Some(response) => {
            let bytes = crate::http::encode(&response, head_only);
            stream.write_all(&bytes).await.ok()?;
            response.status().as_u16()
        }
        None => {
            let max_head = shared.config.max_head_size;
            let refused =
                handshake::accept_inspecting(stream, read, max_head, path, &mut |_| Ok(())).await;
            match refused {
                Err(error) => handshake::reject_status(&error)?,
                // A plain request is never upgraded; should soketto accept one, close it.
                Ok(_) => return None,
            }
        }
    };
    // A body or a pipelined request may follow the head: drop what has arrived.
    let _ = stream.close().await;
    drain_arrived(stream).await;
    Some(status)
}

/// Upgrades an opened connection: the HTTP upgrade for `path`, with [`Inspect::Believe`] also
/// returning the client the request's believed forwarding header names, charged to that client's
/// share through `charge` as soon as the header is read (before the `101`: a client over its
/// share is answered 503 and the upgrade fails with [`ForwardedError::ClientShareFull`]).
pub(super) async fn upgrade<P: Provider>(
    shared: Arc<Shared>,
    opened: Opened<P::Stream>,
    path: String,
    inspect: Inspect,
    charge: Option<Charge>,
) -> Result<(Output<P::Stream>, Option<ForwardedClient>), Error> {
    let config = &shared.config;
    let reverse = config.reverse_proxy.as_ref();
    let mut client = None;
    let mut check = |headers: handshake::Headers<'_>| {
        inspect_headers(headers, inspect, reverse, charge.as_ref(), &mut client)
    };
    let Opened { mut stream, read } = opened;
    let rest =
        handshake::accept_inspecting(&mut stream, read, config.max_head_size, &path, &mut check)
            .await?;
    let connection =
        Connection::new(stream, Role::Server, config.frame, &rest).with_timers(P::timer);
    Ok((Output::WebSocket(connection), client))
}

/// The TLS server handshake of a connection whose first bytes (`prefix`, the start of the
/// ClientHello) were read already: rustls takes them before the rest.
async fn accept_tls<P: Provider>(
    acceptor: &TlsAcceptor,
    tcp: P::Stream,
    prefix: Prefix,
) -> Result<Socket<P::Stream>, Error> {
    let tls = acceptor
        .accept_with(tcp, |session| {
            let mut rest = prefix.bytes();
            while !rest.is_empty() {
                if !matches!(session.read_tls(&mut rest), Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await
        .map_err(TlsError::Accept)?;
    Ok(Socket::Tls(Box::new(futures_rustls::TlsStream::Server(
        tls,
    ))))
}

/// What the HTTP upgrade does with the request's headers: with [`Inspect::Believe`], the client
/// the believed forwarding header names goes to `client`, [`charge_named`] at once (a client
/// over its share fails the upgrade with [`ForwardedError::ClientShareFull`]); with
/// [`Inspect::Ignore`], forwarding headers are logged and ignored.
fn inspect_headers(
    headers: handshake::Headers<'_>,
    inspect: Inspect,
    reverse: Option<&ReverseProxy>,
    charge: Option<&Charge>,
    client: &mut Option<ForwardedClient>,
) -> Result<(), HandshakeError> {
    match (inspect, reverse) {
        (Inspect::Believe, Some(reverse)) => {
            *client = forwarded::client_from_headers(
                headers.iter().map(|h| (h.name, h.value)),
                reverse.trusted(),
                reverse.headers(),
            )
            .map_err(HandshakeError::Forwarded)?;
            if let (Some(named), Some(charge)) = (&*client, charge) {
                charge_named(charge, named.ip).map_err(|_| {
                    HandshakeError::Forwarded(ForwardedError::ClientShareFull { client: named.ip })
                })?;
            }
        }
        (Inspect::Ignore, _)
            if headers.iter().any(|h| {
                FORWARDING_HEADERS
                    .iter()
                    .any(|name| h.name.eq_ignore_ascii_case(name))
            }) =>
        {
            tracing::debug!("forwarding headers from a peer that is not a trusted proxy; ignored");
        }
        _ => {}
    }
    Ok(())
}
