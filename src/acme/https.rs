//! The HTTPS client ACME needs: one HTTP/1.1 request per connection (`Connection: close`) over the
//! runtime provider's TCP and futures-rustls, with the response bounded in size and time. The
//! response parser is pure.

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::{rustls::ClientConfig, TlsConnector};
use rustls_pki_types::ServerName;
use url::Url;

use super::AcmeError;
use crate::provider::{self, Provider};

/// The most a response (head and body) may take: certificate chains and ACME objects are a few
/// kilobytes.
pub(crate) const MAX_RESPONSE: usize = 1 << 20;

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The client: TLS settings and the limit for one request, from connect to the response's end.
#[derive(Clone)]
pub(crate) struct Https {
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) timeout: Duration,
}

impl Https {
    /// Sends `method` to `url` with `body` (as `content_type`) and reads the response.
    pub(crate) async fn request<P: Provider>(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response, AcmeError> {
        self.request_with::<P>(method, url, content_type, &[], body)
            .await
    }

    /// [`Https::request`] with more request headers.
    pub(crate) async fn request_with<P: Provider>(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, AcmeError> {
        let parsed = Url::parse(url).map_err(|e| AcmeError::BadResponse {
            url: url.to_string(),
            reason: format!("not a URL: {e}"),
        })?;
        let exchange = Box::pin(self.exchange::<P>(method, &parsed, content_type, headers, body));
        match provider::timeout::<P, _>(self.timeout, exchange).await {
            Some(result) => result.map_err(|reason| match reason {
                Failure::Io(source) => AcmeError::Http {
                    url: url.to_string(),
                    source,
                },
                Failure::Parse(reason) => AcmeError::BadResponse {
                    url: url.to_string(),
                    reason,
                },
            }),
            None => Err(AcmeError::Timeout {
                url: url.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange<P: Provider>(
        &self,
        method: &str,
        url: &Url,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        if url.scheme() != "https" {
            return Err(Failure::Parse("only https URLs are used for ACME".into()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Failure::Parse("a URL without a host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = P::resolve(host.clone(), port).await?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match P::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            last.unwrap_or_else(|| std::io::Error::other(format!("{host} has no address")))
        })?;
        let name = ServerName::try_from(host.clone())
            .map_err(|_| Failure::Parse(format!("{host} is not a server name")))?;
        let mut tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let request = request_head(method, url, content_type, headers, body.len());
        tls.write_all(&request).await?;
        tls.write_all(body).await?;
        tls.flush().await?;
        read_response(&mut tls, method == "HEAD").await
    }
}

enum Failure {
    Io(std::io::Error),
    Parse(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

async fn read_response<S: futures::AsyncRead + Unpin>(
    stream: &mut S,
    head_only: bool,
) -> Result<Response, Failure> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A server that closes without TLS's close_notify: what has arrived may be whole.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(Failure::Parse(format!(
                "a response over {MAX_RESPONSE} bytes"
            )));
        }
        if let Some(response) = parse_response(&buf, n == 0, head_only).map_err(Failure::Parse)? {
            return Ok(response);
        }
        if n == 0 {
            return Err(Failure::Parse(
                "the connection closed before the response ended".into(),
            ));
        }
    }
}

/// The request head: origin-form target, `Host`, `Connection: close`, and the body's length.
pub(crate) fn request_head(
    method: &str,
    url: &Url,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    len: usize,
) -> Vec<u8> {
    let mut target = url.path().to_string();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: libp2p-ws/{}\r\n\
         Accept: application/json, application/pem-certificate-chain\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Parses a response from `buf`: `Ok(None)` while more is needed. The body is framed by
/// `Content-Length`, by chunks, or (neither, `eof`) by the connection's end; `head_only` for the
/// answer to `HEAD`, which has no body whatever its headers say.
pub(crate) fn parse_response(
    buf: &[u8],
    eof: bool,
    head_only: bool,
) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    let status = parsed.code.unwrap_or_default();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(Some(response));
    }
    let rest = &buf[head_len..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(dechunk(rest)?.map(|body| {
            response.body = body;
            response
        }));
    }
    if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("a Content-Length that is not a number: {len}"))?;
        if rest.len() < len {
            return if eof {
                Err(format!(
                    "the body ended after {} of {len} bytes",
                    rest.len()
                ))
            } else {
                Ok(None)
            };
        }
        response.body = rest[..len].to_vec();
        return Ok(Some(response));
    }
    if !eof {
        return Ok(None);
    }
    response.body = rest.to_vec();
    Ok(Some(response))
}

/// Decodes a chunked body: `Ok(None)` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| "a bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("a bad chunk size: {size}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if size > MAX_RESPONSE {
            return Err(format!("a chunk of {size} bytes"));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_by_chunks_and_by_close() {
        let whole = b"HTTP/1.1 201 Created\r\nReplay-Nonce: abc\r\nLocation: https://ca/o/1\r\nContent-Length: 5\r\n\r\nhello";
        let response = parse_response(whole, false, false).unwrap().unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("replay-nonce"), Some("abc"));
        assert_eq!(response.header("Location"), Some("https://ca/o/1"));
        assert_eq!(response.body, b"hello");
        // Every shorter prefix wants more; at the connection's end it is an error.
        for cut in 0..whole.len() {
            assert_eq!(
                parse_response(&whole[..cut], false, false),
                Ok(None),
                "{cut}"
            );
        }
        assert!(parse_response(&whole[..whole.len() - 1], true, false).is_err());

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
        let response = parse_response(chunked, false, false).unwrap().unwrap();
        assert_eq!(response.body, b"hello, world");
        for cut in 0..chunked.len() - 4 {
            assert_eq!(
                parse_response(&chunked[..cut], false, false),
                Ok(None),
                "{cut}"
            );
        }
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false,
            false
        )
        .is_err());
        // A chunk size near usize::MAX is refused, not added to.
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx";
        assert!(parse_response(huge, false, false).is_err());

        let closed = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        assert_eq!(parse_response(closed, false, false), Ok(None));
        assert_eq!(
            parse_response(closed, true, false).unwrap().unwrap().body,
            b"until the end"
        );
    }

    #[test]
    fn head_answers_and_garbage() {
        let head = b"HTTP/1.1 200 OK\r\nReplay-Nonce: n1\r\nContent-Length: 100\r\n\r\n";
        let response = parse_response(head, false, true).unwrap().unwrap();
        assert_eq!(response.header("replay-nonce"), Some("n1"));
        assert!(response.body.is_empty());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, false).is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            false,
            false
        )
        .is_err());
    }

    #[test]
    fn request_heads() {
        let url = Url::parse("https://localhost:14000/dir?x=1").unwrap();
        let head = String::from_utf8(request_head(
            "POST",
            &url,
            Some("application/jose+json"),
            &[("Authorization", "x y")],
            12,
        ))
        .unwrap();
        assert!(
            head.starts_with("POST /dir?x=1 HTTP/1.1\r\nHost: localhost:14000\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Type: application/jose+json\r\n"));
        assert!(head.contains("Content-Length: 12\r\n"));
        assert!(head.contains("Authorization: x y\r\n"));
        assert!(head.contains("Connection: close\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        let head = String::from_utf8(request_head(
            "GET",
            &Url::parse("https://ca/d").unwrap(),
            None,
            &[],
            0,
        ))
        .unwrap();
        assert!(head.starts_with("GET /d HTTP/1.1\r\nHost: ca\r\n"));
        assert!(!head.contains("Content-Length"));
    }
}
