//! Unit tests of the PROXY protocol parser and the forwarding headers parser.

use super::*;

fn done(buf: &[u8]) -> (usize, ProxyHeader) {
    match parse_proxy_header(buf).unwrap() {
        ProxyParse::Done { len, header } => (len, header),
        other => panic!("{other:?}"),
    }
}

/// Feeds `buf` the way the transport reads: as many bytes as asked for, no more.
fn feed(buf: &[u8]) -> Result<ProxyParse, ForwardedError> {
    let mut have = 0;
    loop {
        match parse_proxy_header(&buf[..have])? {
            ProxyParse::NeedMore(n) => {
                assert!(n > 0);
                if have + n > buf.len() {
                    return Ok(ProxyParse::NeedMore(n));
                }
                have += n;
            }
            other => return Ok(other),
        }
    }
}

#[test]
fn v1_lines() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1";
    let (len, header) = done(line);
    assert_eq!(len, 45);
    assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
    assert_eq!(
        header.destination,
        Some("198.51.100.2:443".parse().unwrap())
    );
    match feed(line).unwrap() {
        ProxyParse::Done { len: 45, .. } => {}
        other => panic!("{other:?}"),
    }
    let (_, v6) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    assert_eq!(v6.source, Some("[2001:db8::1]:1".parse().unwrap()));
    assert_eq!(done(b"PROXY UNKNOWN\r\n").1.source, None);
    assert_eq!(done(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").1.source, None);
    for bad in [
        &b"PROXY TCP4 ::1 ::1 1 2\r\n"[..],
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
        b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4\n",
    ] {
        assert!(
            parse_proxy_header(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
    assert_eq!(
        feed(&long),
        Err(ForwardedError::ProxyHeaderTooLarge { limit: 107 })
    );
}

#[test]
fn not_proxy_is_decided_early() {
    for other in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x16\x03\x01",
        b"/multistream/1.0.0\n",
        b"POST",
        b"\r\n\r\nX",
    ] {
        assert_eq!(feed(other).unwrap(), ProxyParse::NotProxy, "{other:?}");
    }
    assert_eq!(parse_proxy_header(b"").unwrap(), ProxyParse::NeedMore(1));
    assert_eq!(
        parse_proxy_header(b"PROX").unwrap(),
        ProxyParse::NeedMore(1)
    );
}

fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | cmd);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn v2_headers() {
    let body = [
        192, 0, 2, 1, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb, /* a TLV */ 0x04, 0, 1, 0,
    ];
    let header = v2(1, 0x11, &body);
    let mut stream = header.clone();
    stream.extend_from_slice(b"\x16\x03\x01");
    match feed(&stream).unwrap() {
        ProxyParse::Done { len, header: h } => {
            assert_eq!(len, header.len());
            assert_eq!(h.version, 2);
            assert_eq!(h.source, Some("192.0.2.1:8080".parse().unwrap()));
            assert_eq!(h.destination, Some("10.0.0.1:443".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    let mut v6 = [0u8; 36];
    v6[15] = 1;
    v6[32..34].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(
        done(&v2(1, 0x21, &v6)).1.source,
        Some("[::1]:7".parse().unwrap())
    );
    assert_eq!(done(&v2(0, 0x11, &body)).1.source, None, "LOCAL");
    assert_eq!(done(&v2(1, 0x00, &[])).1.source, None, "UNSPEC");
    assert!(
        parse_proxy_header(&v2(1, 0x11, &body[..8])).is_err(),
        "short addresses"
    );
    assert!(
        parse_proxy_header(&v2(2, 0x11, &body)).is_err(),
        "bad command"
    );
    assert!(
        parse_proxy_header(&v2(1, 0x99, &body)).is_err(),
        "bad family"
    );
    let mut bad_version = v2(1, 0x11, &body);
    bad_version[12] = 0x11;
    assert!(parse_proxy_header(&bad_version).is_err());
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(
        parse_proxy_header(&huge),
        Err(ForwardedError::ProxyHeaderTooLarge {
            limit: MAX_PROXY_HEADER
        })
    );
}

/// The client the default source (`X-Forwarded-For`) names.
fn client(
    headers: &[(&'static str, &'static str)],
    trusted: &[&str],
) -> Result<Option<ForwardedClient>, ForwardedError> {
    client_by(HeaderSources::default(), headers, trusted)
}

fn client_by(
    sources: HeaderSources,
    headers: &[(&'static str, &'static str)],
    trusted: &[&str],
) -> Result<Option<ForwardedClient>, ForwardedError> {
    let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
    client_from_headers(
        headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        &trusted,
        sources,
    )
}

/// The client `Forwarded` names (when it is the believed header).
fn forwarded(
    headers: &[(&'static str, &'static str)],
    trusted: &[&str],
) -> Result<Option<ForwardedClient>, ForwardedError> {
    client_by(HeaderSources::forwarded(), headers, trusted)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn x_forwarded_for_takes_the_right_most_untrusted_hop() {
    let c = client(
        &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7, 10.0.0.2")],
        &["10.0.0.0/8"],
    )
    .unwrap()
    .unwrap();
    assert_eq!((c.ip, c.port, c.https), (ip("198.51.100.7"), None, false));
    let c = client(
        &[("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
        &["10.0.0.0/8"],
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.ip, ip("10.0.0.3"), "all trusted: the left-most");
    let c = client(
        &[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2:80"),
            ("X-Forwarded-Proto", "https"),
        ],
        &[],
    )
    .unwrap()
    .unwrap();
    assert_eq!((c.ip, c.port, c.https), (ip("2.2.2.2"), Some(80), true));
    assert_eq!(
        client(&[("X-Forwarded-For", "unknown")], &[]).unwrap(),
        None
    );
    assert!(matches!(
        client(&[("X-Forwarded-For", "1.1.1.1, evil")], &[]),
        Err(ForwardedError::MalformedHeader {
            header: "X-Forwarded-For",
            ..
        })
    ));
    assert!(client(&[("X-Forwarded-For", " , ")], &[]).is_err());
    let many = vec!["1.1.1.1"; MAX_HOPS + 1].join(",");
    let many: &'static str = Box::leak(many.into_boxed_str());
    assert!(matches!(
        client(&[("X-Forwarded-For", many)], &[]),
        Err(ForwardedError::TooManyHops { .. })
    ));
}

#[test]
fn forwarded_rfc7239() {
    let c = forwarded(
        &[(
            "Forwarded",
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.1",
        )],
        &[],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.ip, c.port, c.https),
        (ip("2001:db8:cafe::17"), Some(4711), true)
    );
    let c = forwarded(
        &[(
            "Forwarded",
            "For=\"192.0.2.60:47011\";Proto=http, for=10.1.1.1",
        )],
        &["10.0.0.0/8"],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.ip, c.port, c.https),
        (ip("192.0.2.60"), Some(47011), false)
    );
    assert_eq!(
        forwarded(&[("Forwarded", "for=_hidden")], &[]).unwrap(),
        None
    );
    assert_eq!(
        forwarded(
            &[("Forwarded", "for=unknown, for=10.0.0.1")],
            &["10.0.0.0/8"]
        )
        .unwrap(),
        None
    );
    // Only the chosen header is read, whichever else the request carries.
    let both = [
        ("X-Forwarded-For", "1.1.1.1"),
        ("Forwarded", "for=2.2.2.2;proto=https"),
    ];
    let c = forwarded(&both, &[]).unwrap().unwrap();
    assert_eq!((c.ip, c.https), (ip("2.2.2.2"), true));
    let c = client(&both, &[]).unwrap().unwrap();
    assert_eq!((c.ip, c.https), (ip("1.1.1.1"), false));
    // With Forwarded chosen, X-Forwarded-Proto says nothing.
    let c = forwarded(
        &[("Forwarded", "for=2.2.2.2"), ("X-Forwarded-Proto", "https")],
        &[],
    )
    .unwrap()
    .unwrap();
    assert!(!c.https);
    for bad in [
        "for=",
        "for=\"1.2.3.4",
        "=x",
        "for=not-an-ip",
        "for=\"[::1\"",
        "for=1.2.3.4:99999",
        "",
        // Pairs not separated by `;` (found by an evaluation against the rfc7239 crate), and a
        // parameter twice in one element (RFC 7239 section 4: at most once).
        "for=\"1.2.3.4\"for=5.6.7.8",
        "f=u for=10.0.1.1",
        "for=1.2.3.4 proto=https",
        "for=1.2.3.4;for=5.6.7.8",
        "for=1.2.3.4;proto=http;proto=https",
    ] {
        assert!(forwarded(&[("Forwarded", bad)], &[]).is_err(), "{bad:?}");
    }
    // Whitespace before a separator is tolerated, as are empty pairs and elements.
    for good in [
        "for=1.2.3.4 ;proto=https",
        "for=1.2.3.4;;proto=https ,",
        "for=\"1.2.3.4\" , for=9.9.9.9",
    ] {
        assert!(forwarded(&[("Forwarded", good)], &[]).is_ok(), "{good:?}");
    }
}

#[test]
fn x_real_ip_and_sources() {
    let real = |headers: &[(&'static str, &'static str)]| {
        client_by(HeaderSources::x_real_ip(), headers, &[])
    };
    let c = real(&[("X-Real-IP", "198.51.100.1")]).unwrap().unwrap();
    assert_eq!(c.ip, ip("198.51.100.1"));
    assert!(real(&[("X-Real-IP", "1.1.1.1, 2.2.2.2")]).is_err());
    assert_eq!(client(&[("Host", "x")], &[]).unwrap(), None);
    assert_eq!(
        client(&[("X-Real-IP", "3.3.3.3")], &[]).unwrap(),
        None,
        "X-Real-IP is not read unless chosen"
    );
    let only_real = HeaderSources::x_real_ip();
    let headers = [("X-Forwarded-For", "1.1.1.1"), ("X-Real-IP", "3.3.3.3")];
    let c = client_from_headers(
        headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        &[],
        only_real,
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.ip, ip("3.3.3.3"));
    assert_eq!(
        client_from_headers(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            &[],
            HeaderSources::none()
        )
        .unwrap(),
        None
    );
}

/// Behind a proxy that sets only `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for` appends
/// the client it saw), a client's own `Forwarded` and a forged `X-Forwarded-For` prefix name
/// nothing: the client is the address the proxy appended.
#[test]
fn a_header_the_proxy_merely_passes_on_cannot_name_the_client() {
    let c = client(
        &[
            ("Forwarded", "for=6.6.6.6;proto=https"),
            ("X-Real-IP", "7.7.7.7"),
            ("X-Forwarded-For", "8.8.8.8, 127.0.0.5"),
            ("X-Forwarded-Proto", "http"),
        ],
        &["127.0.0.12/32"],
    )
    .unwrap()
    .unwrap();
    assert_eq!((c.ip, c.https), (ip("127.0.0.5"), false));
    assert_eq!(
        client(&[("Forwarded", "for=6.6.6.6;proto=https")], &[]).unwrap(),
        None,
        "a Forwarded header alone names no one by default"
    );
    assert_eq!(HeaderSources::default().header(), Some("X-Forwarded-For"));
    assert_eq!(HeaderSources::x_real_ip().header(), Some("X-Real-IP"));
    assert_eq!(HeaderSources::none().header(), None);
}
