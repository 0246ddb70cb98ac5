//! Unit tests of proxy URLs, `NO_PROXY`, the environment, base64 and the tunnels.

use futures::{AsyncRead, AsyncWrite};

use super::*;
use crate::addr::{DnsFamily, Host, Kind};

fn name(n: &str) -> Host {
    Host::Dns {
        name: n.into(),
        family: DnsFamily::Any,
    }
}

fn ip(s: &str) -> Host {
    Host::Ip(s.parse().unwrap())
}

#[test]
fn base64_rfc4648_vectors() {
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), output);
    }
}

#[test]
fn proxy_urls() {
    let p = Proxy::parse("http://u:p%3Aw@proxy.example:3128/").unwrap();
    assert_eq!(p.kind(), ProxyKind::HttpConnect);
    assert_eq!((p.host(), p.port()), ("proxy.example", 3128));
    let c = p.credentials().unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
    assert!(
        !format!("{p:?}").contains("p:w"),
        "Debug hides the password"
    );
    assert_eq!(p.to_string(), "http://proxy.example:3128");
    assert_eq!(
        Proxy::parse("10.0.0.1:8080").unwrap().kind(),
        ProxyKind::HttpConnect
    );
    assert_eq!(Proxy::parse("http://h").unwrap().port(), 80);
    assert_eq!(Proxy::parse("socks5://h").unwrap().port(), 1080);
    let v6 = Proxy::parse("socks5h://[::1]:9050").unwrap();
    assert_eq!((v6.host(), v6.port()), ("::1", 9050));
    assert_eq!(v6.to_string(), "socks5h://[::1]:9050");
    assert!(!Proxy::parse("socks5://h").unwrap().resolves_names());
    assert!(Proxy::parse("socks5h://h").unwrap().resolves_names());
    for bad in [
        "https://h:1",
        "socks4://h",
        "http://",
        "http://h:0",
        "http://h:99999",
        "http://h:x",
        "http://h/path",
        "http://[::1",
        "http://[zz]:1",
        "http://h h:1",
        "http://[::1]x",
    ] {
        assert!(Proxy::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn proxy_url_errors_say_what_is_wrong() {
    for (bad, reason) in [
        ("http://", "no host"),
        ("http://u:p@", "no host"),
        ("http://h:0", "the port is not 1 to 65535"),
        ("http://h:99999", "the port is not 1 to 65535"),
        ("http://h:x", "the port is not a number"),
        ("http://h:", "the port is not a number"),
        (
            "http://h/path",
            "a proxy URL has no path, query or fragment",
        ),
        ("http://h?q", "a proxy URL has no path, query or fragment"),
        ("socks5://h#f", "a proxy URL has no path, query or fragment"),
        ("http://[::1", "an unclosed [ in the host"),
        ("http://[zz]:1", "not an IPv6 address inside [ ]"),
        ("socks5://[zz]:1", "not an IPv6 address inside [ ]"),
        ("http://[::1]x", "junk after the IPv6 address"),
        ("http://h h:1", "invalid characters in the host"),
        ("socks5://h h:1", "invalid characters in the host"),
        ("socks5h://h%41:1", "invalid characters in the host"),
        ("socks5h://h!:1", "invalid characters in the host"),
        (
            "http://b\u{fc}cher.example",
            "invalid characters in the host",
        ),
        ("http://h\n:1", "control characters in the URL"),
        ("http://u\tx:p@h:1", "control characters in the URL"),
        ("http://h\\x", "a \\ in the URL (write it as %5C)"),
        ("http://u:p\\w@h", "a \\ in the URL (write it as %5C)"),
        ("http:///h", "a proxy URL has no path, query or fragment"),
        ("http://h/.", "a proxy URL has no path, query or fragment"),
        ("http://@", "no host"),
        ("http://u:%ff@h", "the credentials are not UTF-8"),
        ("http://1.2.3.999", "not an IPv4 address"),
        ("http://proxy.1", "not an IPv4 address"),
    ] {
        match Proxy::parse(bad) {
            Err(ProxyUrlError::Invalid(why)) => assert_eq!(why, reason, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(
        Proxy::parse("ftp://h").unwrap_err().to_string(),
        "unsupported proxy scheme \"ftp\": use http://, socks5:// or socks5h://"
    );
    assert_eq!(
        Proxy::parse("http://h:0").unwrap_err().to_string(),
        "invalid proxy URL: the port is not 1 to 65535"
    );
}

#[test]
fn proxy_url_hosts_ports_and_credentials() {
    let p = Proxy::parse("HTTP://Proxy.Example").unwrap();
    assert_eq!((p.host(), p.port()), ("proxy.example", 80));
    assert_eq!(Proxy::parse("http://h:80").unwrap().port(), 80);
    assert_eq!(Proxy::parse("socks5://h:80").unwrap().port(), 80);
    assert_eq!(Proxy::parse("socks5://H_1.x").unwrap().host(), "h_1.x");
    assert_eq!(Proxy::parse("http://h_1.x").unwrap().host(), "h_1.x");
    assert_eq!(
        Proxy::parse("socks5://10.0.0.1:1").unwrap().host(),
        "10.0.0.1"
    );
    assert_eq!(
        Proxy::parse("http://[::FFFF:1.2.3.4]").unwrap().host(),
        "::ffff:1.2.3.4"
    );
    let p = Proxy::parse("socks5h://a%40b:p@ss@h:1").unwrap();
    let c = p.credentials().unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("a@b", "p@ss"));
    let c = Proxy::parse("http://u@h")
        .unwrap()
        .credentials()
        .cloned()
        .unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("u", ""));
    assert!(Proxy::parse("http://h").unwrap().credentials().is_none());
    let p = Proxy::parse("http://user:secret@h:1").unwrap();
    assert!(!format!("{p:?}").contains("secret"));
    assert!(!p.to_string().contains("secret") && !p.to_string().contains("user"));
}

#[test]
fn no_proxy_as_curl_reads_it() {
    let np = NoProxy::parse("localhost, .example.com,10.0.0.0/8 ::1,192.168.1.1,");
    assert!(np.matches(&name("localhost")));
    assert!(np.matches(&name("LOCALHOST.")));
    assert!(np.matches(&name("example.com")));
    assert!(np.matches(&name("a.b.example.com")));
    assert!(!np.matches(&name("badexample.com")));
    assert!(!np.matches(&name("example.org")));
    assert!(np.matches(&ip("10.1.2.3")));
    assert!(!np.matches(&ip("11.0.0.1")));
    assert!(np.matches(&ip("::1")));
    assert!(np.matches(&ip("192.168.1.1")));
    assert!(!np.matches(&ip("192.168.1.2")));
    assert!(!np.matches(&name("10.1.2.3.nip.io")));
    assert!(NoProxy::parse("*").matches(&name("anything")));
    assert!(!NoProxy::parse("").matches(&name("anything")));
    assert!(NoProxy::parse("example.com").matches(&name("www.example.com")));
}

#[test]
fn environment_selection() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    };
    let env = ProxyEnv::from_lookup(vars(&[
        ("HTTPS_PROXY", "http://upper:1"),
        ("https_proxy", "http://lower:1"),
        ("ALL_PROXY", "socks5h://all:1"),
        ("NO_PROXY", "localhost,127.0.0.0/8"),
        ("http_proxy", " "),
    ]))
    .unwrap();
    let host = name("example.com");
    assert_eq!(env.proxy_for(&host, Kind::TlsWs).unwrap().host(), "lower");
    assert_eq!(env.proxy_for(&host, Kind::Ws).unwrap().host(), "all");
    assert_eq!(env.proxy_for(&host, Kind::Tcp).unwrap().host(), "all");
    assert!(env.proxy_for(&name("localhost"), Kind::TlsWs).is_none());
    assert!(env.proxy_for(&ip("127.0.0.1"), Kind::Ws).is_none());
    assert!(ProxyEnv::from_lookup(vars(&[])).unwrap().is_empty());
    match ProxyEnv::from_lookup(vars(&[("HTTP_PROXY", "ftp://x")])) {
        Err(ProxyUrlError::Variable { variable, .. }) => assert_eq!(variable, "HTTP_PROXY"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_that_could_break_a_request_are_refused() {
    for bad in ["a b", "a\r\nX: y", "", "a:1", "a/b", "a@b"] {
        assert!(
            TunnelTarget::Name(bad.into(), 1).authority().is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        TunnelTarget::Addr("[::1]:5".parse().unwrap())
            .authority()
            .unwrap(),
        "[::1]:5"
    );
}

/// A scripted proxy: answers `answer` to whatever is written, records what was written.
struct Scripted {
    answer: io::Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(io::Read::read(&mut self.answer, buf))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn run_tunnel(
    proxy: &str,
    answer: &[u8],
    target: TunnelTarget,
) -> (Result<(), ProxyError>, Scripted) {
    let mut io = Scripted {
        answer: io::Cursor::new(answer.to_vec()),
        written: Vec::new(),
    };
    let proxy = Proxy::parse(proxy).unwrap();
    let result = futures::executor::block_on(tunnel(&mut io, &proxy, &target, 256));
    (result, io)
}

#[test]
fn http_tunnel_reads_only_the_head() {
    let answer = b"HTTP/1.1 200 OK\r\n\r\nORIGIN";
    let (result, io) = run_tunnel(
        "http://h:1",
        answer,
        TunnelTarget::Name("x.test".into(), 443),
    );
    result.unwrap();
    assert_eq!(io.answer.position(), 19, "the origin's bytes stay unread");
    assert!(io.written.starts_with(b"CONNECT x.test:443 HTTP/1.1\r\n"));
    let (result, _) = run_tunnel(
        "http://h:1",
        &[b'a'; 300],
        TunnelTarget::Name("x".into(), 1),
    );
    assert!(
        matches!(result, Err(ProxyError::HeadTooLarge { limit: 256 })),
        "{result:?}"
    );
    let (result, _) = run_tunnel(
        "http://h:1",
        b"HTTP/1.1 20",
        TunnelTarget::Name("x".into(), 1),
    );
    assert!(matches!(result, Err(ProxyError::Closed)), "{result:?}");
}

#[test]
fn socks5_tunnel_with_credentials_and_a_name() {
    let answer = [5, 2, 1, 0, 5, 0, 0, 3, 3, b'a', b'b', b'c', 0, 80, b'!'];
    let (result, io) = run_tunnel(
        "socks5h://u:p@h:1",
        &answer,
        TunnelTarget::Name("x.test".into(), 443),
    );
    result.unwrap();
    assert_eq!(io.answer.position(), answer.len() as u64 - 1);
    let mut expected = vec![5, 2, 0, 2, 1, 1, b'u', 1, b'p', 5, 1, 0, 3, 6];
    expected.extend_from_slice(b"x.test");
    expected.extend_from_slice(&[1, 187]);
    assert_eq!(io.written, expected);
    let (result, _) = run_tunnel(
        "socks5h://h:1",
        &[5, 0, 5, 4, 0, 1],
        TunnelTarget::Name("x".into(), 1),
    );
    assert!(
        matches!(result, Err(ProxyError::SocksFailure { code: 4 })),
        "{result:?}"
    );
}
