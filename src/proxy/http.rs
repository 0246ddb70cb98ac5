//! HTTP CONNECT (RFC 9110 section 9.3.6), sans IO: the request and the parse of the response head.

use super::{base64, Credentials, ProxyError};

/// Most headers accepted in the proxy's response head.
const MAX_HEADERS: usize = 32;

/// The `CONNECT` request for `authority` (`host:port`, an IPv6 address in brackets), with a
/// `Proxy-Authorization: Basic` header when credentials are given.
pub fn connect_request(authority: &str, credentials: Option<&Credentials>) -> Vec<u8> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = credentials {
        let pair = format!("{}:{}", credentials.username, credentials.password);
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64(pair.as_bytes()));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Parses the proxy's response to `CONNECT`: `Ok(None)` while the head is incomplete,
/// `Ok(Some(len))` (the head's length) for a 2xx, and the proxy's refusal otherwise. `sent_credentials`
/// tells a 407 for missing credentials from one for wrong ones.
pub fn parse_response(buf: &[u8], sent_credentials: bool) -> Result<Option<usize>, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::Malformed(format!(
                "more than {MAX_HEADERS} headers in the response to CONNECT"
            )))
        }
        Err(e) => {
            return Err(ProxyError::Malformed(format!(
                "invalid HTTP response to CONNECT: {e}"
            )))
        }
    };
    let status = response.code.unwrap_or(0);
    match status {
        200..=299 => Ok(Some(len)),
        401 | 407 => {
            let challenge = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("proxy-authenticate"))
                .map(|h| printable(h.value));
            Err(ProxyError::AuthRequired {
                status,
                sent_credentials,
                challenge,
            })
        }
        _ => Err(ProxyError::Rejected {
            status,
            reason: reason_phrase(&buf[..len]),
        }),
    }
}

/// The reason phrase of a response head's status line as the proxy sent it, for an error
/// message: httparse gives an empty reason for one that is not ASCII (obs-text), so it is taken
/// from the raw line, decoded as UTF-8 (lossily), control characters replaced by `?`, at most 100
/// characters.
fn reason_phrase(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "HTTP/1.1 403 Reason": what follows the second space.
    let mut fields = line.splitn(3, |&b| b == b' ');
    let reason = fields.nth(2).unwrap_or_default();
    String::from_utf8_lossy(reason)
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A header value for an error message: printable ASCII only, at most 100 characters.
fn printable(value: &[u8]) -> String {
    value
        .iter()
        .take(100)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_and_without_credentials() {
        assert_eq!(
            connect_request("example.com:443", None),
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        );
        let credentials = Credentials::new("Aladdin", "open sesame");
        assert_eq!(
            String::from_utf8(connect_request("[::1]:80", Some(&credentials))).unwrap(),
            "CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n";
        assert_eq!(parse_response(ok, false).unwrap(), Some(ok.len()));
        assert_eq!(parse_response(&ok[..20], false).unwrap(), None);
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap(),
            Some(19)
        );
        let denied = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n";
        match parse_response(denied, true) {
            Err(ProxyError::AuthRequired {
                status: 407,
                sent_credentials: true,
                challenge: Some(c),
            }) => assert_eq!(c, "Basic realm=\"x\""),
            other => panic!("{other:?}"),
        }
        match parse_response(b"HTTP/1.1 403 Access violation\r\n\r\n", false) {
            Err(ProxyError::Rejected {
                status: 403,
                reason,
            }) => {
                assert_eq!(reason, "Access violation")
            }
            other => panic!("{other:?}"),
        }
        // A reason that is not ASCII is kept (httparse reports it empty).
        match parse_response(
            "HTTP/1.1 403 Zugriff verweigert – nö\r\n\r\n".as_bytes(),
            false,
        ) {
            Err(ProxyError::Rejected {
                status: 403,
                reason,
            }) => assert_eq!(reason, "Zugriff verweigert – nö"),
            other => panic!("{other:?}"),
        }
        match parse_response(b"HTTP/1.1 403 bad \xff byte\r\n\r\n", false) {
            Err(ProxyError::Rejected { reason, .. }) => assert_eq!(reason, "bad \u{fffd} byte"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(ProxyError::Malformed(_))
        ));
    }
}
