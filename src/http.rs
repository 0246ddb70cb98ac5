//! Plain HTTP on a WebSocket port: what answers a request that is not a WebSocket upgrade (a
//! load balancer's health check, a monitoring probe, a scraper, a browser pointed at the port).
//!
//! A listener reads every request head before it reports the connection; a request without
//! `Upgrade: websocket` is answered here and never reported to the swarm as a connection, failed
//! or not. [`Http`] lists the responders, asked in this order: the health check (`/healthz`
//! unless moved), the metrics page (`/metrics`, with the `metrics` feature), then the user's
//! [`HttpHandler`]. A request none of them takes is answered as before: `426 Upgrade Required` (a
//! `GET` for the listener's path or another), `404 Not Found`, `405 Method Not Allowed`.
//!
//! Requests are bounded like upgrades: the head by [`Config::with_max_head_size`], the whole
//! exchange by the handshake timeout (from accept), and each one holds an admission ticket until
//! it is answered. A request's body is not read (handlers get the head: `Request<()>`). Each
//! response is HTTP/1.1 with a `Content-Length` and `Connection: close`, and the connection closes
//! after it: one request per connection.
//!
//! [`Config::with_max_head_size`]: crate::Config::with_max_head_size

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;

pub use http::{Request, Response, StatusCode};

/// Answers plain HTTP requests on a WebSocket port (see the [module docs](self)): given the
/// request head, returns the whole response.
///
/// Any `Fn(Request<()>) -> Response<Vec<u8>>` closure is a handler; implement the trait for an
/// asynchronous one. The answer must come within the handshake timeout, counted from accept,
/// or the connection is closed unanswered.
pub trait HttpHandler: Send + Sync + 'static {
    /// The response to `request` (its head; the body, if any, is not read).
    fn handle(&self, request: Request<()>) -> BoxFuture<'static, Response<Vec<u8>>>;
}

impl<F> HttpHandler for F
where
    F: Fn(Request<()>) -> Response<Vec<u8>> + Send + Sync + 'static,
{
    fn handle(&self, request: Request<()>) -> BoxFuture<'static, Response<Vec<u8>>> {
        Box::pin(std::future::ready(self(request)))
    }
}

/// Renders the metrics page: the Prometheus text of a registry, at the time of the request.
type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// The responders for plain HTTP requests on the WebSocket listeners
/// ([`Config::with_http`](crate::Config::with_http)); none by default.
///
/// ```
/// use libp2p_ws::{http::{Http, Request, Response, StatusCode}, Config};
///
/// let config = Config::new().with_http(
///     Http::new()
///         .with_health()
///         .with_handler(|request: Request<()>| {
///             let body = format!("hello from {}\n", request.uri().path());
///             Response::builder()
///                 .status(StatusCode::OK)
///                 .header("content-type", "text/plain")
///                 .body(body.into_bytes())
///                 .unwrap()
///         }),
/// );
/// # let _ = config;
/// ```
#[derive(Clone, Default)]
pub struct Http {
    health: Option<String>,
    metrics: Option<(String, RenderMetrics)>,
    handler: Option<Arc<dyn HttpHandler>>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("health", &self.health)
            .field("metrics", &self.metrics.as_ref().map(|(path, _)| path))
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

/// The health check's path.
pub const HEALTH_PATH: &str = "/healthz";

/// The metrics page's path.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the metrics page (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Http {
    /// No responders: every plain request is answered as without [`Http`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `GET` and `HEAD` of [`HEALTH_PATH`] with `200 OK` (`ok`) while the listener runs.
    pub fn with_health(self) -> Self {
        self.with_health_at(HEALTH_PATH)
    }

    /// [`with_health`](Self::with_health) at another path.
    pub fn with_health_at(mut self, path: impl Into<String>) -> Self {
        self.health = Some(path.into());
        self
    }

    /// Answers `GET` and `HEAD` of [`METRICS_PATH`] with the registry's metrics in the text
    /// format Prometheus scrapes ([`METRICS_CONTENT_TYPE`]), encoded at each request. The
    /// registry is shared: register more into it after the transport is built (libp2p-metrics,
    /// the app's own) and they appear on the page too.
    #[cfg(feature = "metrics")]
    pub fn with_metrics(
        self,
        registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    ) -> Self {
        self.with_metrics_at(METRICS_PATH, registry)
    }

    /// [`with_metrics`](Self::with_metrics) at another path.
    #[cfg(feature = "metrics")]
    pub fn with_metrics_at(
        mut self,
        path: impl Into<String>,
        registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    ) -> Self {
        let render = move || {
            let mut text = String::new();
            let registry = registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
                text.clear();
            }
            text
        };
        self.metrics = Some((path.into(), Arc::new(render)));
        self
    }

    /// Answers the requests no built-in responder takes with `handler`.
    pub fn with_handler(mut self, handler: impl HttpHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// The response of the responder that takes `request`, if one does.
    pub(crate) async fn respond(&self, request: Request<()>) -> Option<Response<Vec<u8>>> {
        let path = request.uri().path();
        let read_only =
            request.method() == http::Method::GET || request.method() == http::Method::HEAD;
        if self.health.as_deref() == Some(path) {
            return Some(builtin(
                read_only,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ));
        }
        if let Some((_, render)) = self.metrics.as_ref().filter(|(at, _)| at == path) {
            let body = if read_only {
                render().into_bytes()
            } else {
                Vec::new()
            };
            return Some(builtin(read_only, METRICS_CONTENT_TYPE, body));
        }
        let handler = self.handler.as_ref()?;
        Some(handler.handle(request).await)
    }
}

/// A built-in responder's answer: `200` with `body`, or `405` (with `Allow`) to a method other
/// than `GET` and `HEAD`.
fn builtin(read_only: bool, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let builder = Response::builder();
    let response = if read_only {
        builder
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body)
    } else {
        builder
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(http::header::ALLOW, "GET, HEAD")
            .body(Vec::new())
    };
    response.unwrap_or_default()
}

/// Headers the encoder writes itself: any the response sets are dropped.
const OWN_HEADERS: [http::HeaderName; 3] = [
    http::header::CONTENT_LENGTH,
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
];

/// Encodes `response` as HTTP/1.1 with `Content-Length` and `Connection: close`; for a `HEAD`
/// request (`head_only`) without the body (its length is still announced).
pub(crate) fn encode(response: &Response<Vec<u8>>, head_only: bool) -> Vec<u8> {
    let status = response.status();
    let body = response.body();
    let mut out = Vec::with_capacity(128 + if head_only { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if OWN_HEADERS.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The request in a complete request head `head` if it is a plain HTTP request: no `Upgrade`
/// header naming `websocket` and no `Sec-WebSocket-Key`. `None` for an upgrade request, an
/// incomplete or malformed head, or a head `http` cannot represent: those go to the WebSocket
/// upgrade, which answers and reports them as it always did.
pub(crate) fn plain_request(head: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; crate::handshake::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let upgrade = parsed.headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("upgrade")
            && h.value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket")))
            || h.name.eq_ignore_ascii_case("sec-websocket-key")
    });
    if upgrade {
        return None;
    }
    let mut request = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(match parsed.version? {
            0 => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        });
    for header in parsed.headers.iter() {
        request = request.header(header.name, header.value);
    }
    request.body(()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_upgrade_is_plain_and_one_with_it_is_not() {
        let plain =
            plain_request(b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n").unwrap();
        assert_eq!(plain.method(), http::Method::GET);
        assert_eq!(plain.uri().path(), "/healthz");
        assert_eq!(plain.headers()["x-y"], "z");
        assert!(plain_request(b"HEAD / HTTP/1.0\r\n\r\n").is_some());
        assert!(plain_request(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n").is_some());
        for upgrade in [
            &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nupgrade: foo, WebSocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nSec-WebSocket-Key: x\r\n\r\n",
            // Incomplete or malformed: the upgrade answers them (400, 431) and reports them.
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01",
        ] {
            assert!(
                plain_request(upgrade).is_none(),
                "{:?}",
                String::from_utf8_lossy(upgrade)
            );
        }
    }

    #[test]
    fn responses_are_http_1_1_with_a_length_and_close() {
        let response = Response::builder()
            .status(StatusCode::IM_A_TEAPOT)
            .header("x-a", "b")
            .header("content-length", "999")
            .header("connection", "keep-alive")
            .body(b"short".to_vec())
            .unwrap();
        assert_eq!(
            encode(&response, false),
            b"HTTP/1.1 418 I'm a teapot\r\nx-a: b\r\ncontent-length: 5\r\nconnection: close\r\n\r\nshort"
        );
        assert_eq!(
            encode(&response, true),
            b"HTTP/1.1 418 I'm a teapot\r\nx-a: b\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }

    fn get(method: &str, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn built_in_responders_answer_their_paths_and_the_handler_the_rest() {
        let http = Http::new()
            .with_health()
            .with_handler(|request: Request<()>| {
                Response::new(request.uri().path().as_bytes().to_vec())
            });
        let block = futures::executor::block_on;
        let health = block(http.respond(get("GET", "/healthz"))).unwrap();
        assert_eq!(
            (health.status(), health.body().as_slice()),
            (StatusCode::OK, &b"ok\n"[..])
        );
        let post = block(http.respond(get("POST", "/healthz"))).unwrap();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()["allow"], "GET, HEAD");
        let other = block(http.respond(get("GET", "/other"))).unwrap();
        assert_eq!(other.body(), b"/other");
        assert!(block(Http::new().with_health().respond(get("GET", "/other"))).is_none());
        let none = Http::new();
        assert!(futures::executor::block_on(none.respond(get("GET", "/healthz"))).is_none());
    }
}
