//! Unit tests of the HTTP upgrade (both sides, over in-memory IO).

use super::*;

#[test]
fn handshake_buffers_are_reused_cleared_and_bounded() {
    let mut used = bytes::BytesMut::with_capacity(8 * 1024);
    used.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let capacity = used.capacity();
    buffers::give(used);
    let reused = buffers::take();
    assert!(
        reused.is_empty(),
        "contents of a previous handshake must not be kept"
    );
    assert_eq!(reused.capacity(), capacity);

    // Oversized and empty buffers are not kept; the pool never holds more than its bound.
    buffers::give(bytes::BytesMut::with_capacity(1024 * 1024));
    buffers::give(bytes::BytesMut::new());
    assert_eq!(buffers::take().capacity(), 0, "the pool should be empty");
    for _ in 0..100 {
        buffers::give(bytes::BytesMut::with_capacity(1024));
    }
    let kept = std::iter::from_fn(|| Some(buffers::take()))
        .take_while(|b| b.capacity() > 0)
        .count();
    assert_eq!(kept, buffers::KEEP);
}

#[test]
fn targets() {
    assert_eq!(decode_target("/"), Some("/".into()));
    assert_eq!(decode_target("/a%2Fb?x=1"), Some("/a/b".into()));
    assert_eq!(decode_target("/a%20b"), Some("/a b".into()));
    assert_eq!(decode_target("http://x/a"), None);
    assert_eq!(decode_target("/%ff"), None);
}

#[test]
fn too_many_headers_is_a_head_too_large() {
    let parse = handshake::Error::Http(Box::new(httparse::Error::TooManyHeaders));
    assert!(matches!(
        map_error(parse, 77),
        HandshakeError::HeadTooLarge { limit: 77 }
    ));
    let other = handshake::Error::Http(Box::new(httparse::Error::HeaderName));
    assert!(matches!(
        map_error(other, 77),
        HandshakeError::Protocol(UpgradeViolation::MalformedHttp(_))
    ));
}

#[test]
fn keys_must_be_the_base64_of_16_bytes() {
    for (key, valid) in [
        (&b"dGhlIHNhbXBsZSBub25jZQ=="[..], true), // RFC 6455's example
        (b"AAAAAAAAAAAAAAAAAAAAAA==", true),
        (b"/////////////////////w==", true),
        (b"dGhlIHNhbXBsZSBub25jZR==", false), // trailing bits set: not canonical
        (b"dGhlIHNhbXBsZSBub25jZQ=", false),
        (b"dGhlIHNhbXBsZSBub25jZQ", false),
        (b"!!!!!!!!!!!!!!!!!!!!!!==", false), // 24 bytes, not base64
        (b"dGhlIHNhbXBsZSBub25jZQ-=", false),
        (b"dGhlIHNhbXBsZSBub25jZSBvbmU=", false), // base64 of 20 bytes
        (b"dGhlIHNhbXBsZSBub25jZSB=", false),     // base64 of 17 bytes + junk
        (b"dGhlIHNhbXBsZSBu b25jZQ==", false),
        (b"", false),
    ] {
        assert_eq!(
            is_base64_of_16_bytes(key),
            valid,
            "{:?}",
            String::from_utf8_lossy(key)
        );
    }
}

const REQUEST: &str = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn requests_with_two_hosts_or_keys_or_a_bad_key_are_refused_with_400() {
    let with = |extra: &str| REQUEST.replace("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"));
    assert_eq!(
        check_request(REQUEST.as_bytes(), &mut |_| Ok(())).unwrap(),
        REQUEST.len()
    );
    let mut trailing = REQUEST.as_bytes().to_vec();
    trailing.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]);
    assert_eq!(
        check_request(&trailing, &mut |_| Ok(())).unwrap(),
        REQUEST.len()
    );
    let cases = [
        (with("Host: b"), "two Host headers"),
        (with("hOsT: a"), "two Host headers, same value"),
        (
            with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="),
            "two keys",
        ),
        (
            REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="),
            "key not base64",
        ),
    ];
    for (request, what) in cases {
        let error = check_request(request.as_bytes(), &mut |_| Ok(())).expect_err(what);
        assert_eq!(reject_status(&error), Some(400), "{what}: {error}");
    }
    assert!(matches!(
        check_request(with("Host: b").as_bytes(), &mut |_| Ok(())),
        Err(HandshakeError::DuplicateHeader { name: "Host" })
    ));
}

#[test]
fn responses_selecting_an_extension_or_subprotocol_are_refused_by_name() {
    let ok =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    assert!(check_unsolicited(ok.as_bytes()).is_ok());
    let with = |extra: &str| ok.replace("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"));
    assert!(check_unsolicited(with("Sec-WebSocket-Extensions: ").as_bytes()).is_ok());
    match check_unsolicited(
        with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-other")
            .as_bytes(),
    ) {
        Err(HandshakeError::UnsolicitedExtension { extension }) => {
            assert_eq!(extension, "permessage-deflate")
        }
        other => panic!("{other:?}"),
    }
    match check_unsolicited(with("sec-websocket-protocol: chat").as_bytes()) {
        Err(HandshakeError::UnsolicitedSubprotocol { protocol }) => {
            assert_eq!(protocol, "chat")
        }
        other => panic!("{other:?}"),
    }
    let long = "x".repeat(1000);
    match check_unsolicited(with(&format!("Sec-WebSocket-Protocol: {long}")).as_bytes()) {
        Err(HandshakeError::UnsolicitedSubprotocol { protocol }) => {
            assert_eq!(protocol.len(), MAX_NAME_IN_ERROR)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reject_statuses() {
    let not_found = HandshakeError::PathNotFound {
        requested: "/x".into(),
        served: "/".into(),
    };
    assert_eq!(reject_status(&not_found), Some(404));
    assert_eq!(
        reject_status(&HandshakeError::HeadTooLarge { limit: 1 }),
        Some(431)
    );
    let no_upgrade = map_error(handshake::Error::HeaderNotFound("Upgrade".into()), 1);
    assert!(
        matches!(&no_upgrade, HandshakeError::Protocol(UpgradeViolation::MissingHeader(h)) if h == "Upgrade")
    );
    assert_eq!(reject_status(&no_upgrade), Some(426));
    for (soketto, status) in [
        (handshake::Error::InvalidRequestMethod, Some(405)),
        (handshake::Error::UnsupportedHttpVersion, Some(505)),
        (
            handshake::Error::UnexpectedHeader("Connection".into()),
            Some(426),
        ),
        (handshake::Error::SecWebSocketKeyInvalidLength(3), Some(400)),
        (
            handshake::Error::Io(io::ErrorKind::ConnectionReset.into()),
            None,
        ),
    ] {
        let text = soketto.to_string();
        assert_eq!(reject_status(&map_error(soketto, 1)), status, "{text}");
    }
    assert!(matches!(
        map_error(handshake::Error::InvalidSecWebSocketAccept, 1),
        HandshakeError::Protocol(UpgradeViolation::AcceptMismatch)
    ));
    assert_eq!(
        reject_status(&HandshakeError::Io(io::ErrorKind::ConnectionReset.into())),
        None
    );
}

#[test]
fn read_head_stops_at_the_end_of_the_head_at_the_limit_and_at_the_end_of_the_stream() {
    let block = futures::executor::block_on;
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    // Behind what was read already; a short stream ends the read with what came.
    let mut io = futures::io::Cursor::new(head[4..].to_vec());
    assert_eq!(block(read_head(&mut io, head[..4].to_vec(), 8192)), head);
    // Never more than the limit, whole head or not.
    let mut long = futures::io::Cursor::new(vec![b'a'; 10_000]);
    assert_eq!(block(read_head(&mut long, Vec::new(), 3000)).len(), 3000);
    // A whole head in what was read already: nothing more is read.
    let mut untouched = futures::io::Cursor::new(b"more".to_vec());
    assert_eq!(block(read_head(&mut untouched, head.to_vec(), 8192)), head);
    assert_eq!(untouched.position(), 0);
}
