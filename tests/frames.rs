//! RFC 6455 frames over real sockets on 127.0.0.1, against raw peers: every MUST case closes with
//! the right code and a typed error on either side, control frames must use the 7-bit length form,
//! pings are answered and close frames echoed, a TCP end of stream inside a frame is an error, and
//! the message-level API the Autobahn peer uses reports kinds and boundaries. Size limits and the
//! work one read call does are in `frame_limits.rs`, keep-alive in `keep_alive.rs`. Every test runs
//! on both runtimes and bounds every wait; each case of a table runs under a time bound that names
//! it. Each test prints the figures it measures, each line naming the runtime (`figure (tokio):
//! ...`; run with `--nocapture` to see them).

mod common;

use std::{io, net::Shutdown, time::Duration};

use common::{process::*, raw::*, *};
use futures::{
    future::{poll_fn, Either},
    AsyncRead, AsyncReadExt, AsyncWriteExt,
};
use libp2p_ws::{Config, FrameError};

/// Every case of a table-driven test must finish within this.
const CASE: Duration = Duration::from_secs(10);

// =================================================================================================
// RFC 6455 MUST cases
// =================================================================================================

type Check = fn(&FrameError) -> bool;

fn protocol(e: &FrameError) -> bool {
    matches!(e, FrameError::Protocol(_))
}

fn invalid_utf8(e: &FrameError) -> bool {
    matches!(
        e,
        FrameError::Protocol(
            libp2p_ws::ProtocolViolation::InvalidUtf8Text
                | libp2p_ws::ProtocolViolation::InvalidCloseReason
        )
    )
}

async fn rfc6455_violations_close_with_the_right_code_and_a_typed_error<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let m = Some(MASK);
        let mut server_cases: Vec<(String, Vec<u8>, u16, Check)> = vec![
            (
                "unmasked client frame".into(),
                frame(true, 0, 2, None, b"hi"),
                1002,
                |e| *e == FrameError::Protocol(libp2p_ws::ProtocolViolation::UnmaskedClientFrame),
            ),
            (
                "fragmented ping".into(),
                frame(false, 0, 9, m, b"p"),
                1002,
                protocol,
            ),
            (
                "fragmented close".into(),
                frame(false, 0, 8, m, &close_payload(1000, b"")),
                1002,
                protocol,
            ),
            (
                "ping with a 126-byte payload".into(),
                frame(true, 0, 9, m, &[7; 126]),
                1002,
                protocol,
            ),
            (
                "pong with a 126-byte payload".into(),
                frame(true, 0, 10, m, &[7; 126]),
                1002,
                protocol,
            ),
            (
                "continuation without a message".into(),
                frame(true, 0, 0, m, b"x"),
                1002,
                protocol,
            ),
            (
                "new message inside a fragmented one".into(),
                [frame(false, 0, 2, m, b"a"), frame(true, 0, 2, m, b"b")].concat(),
                1002,
                protocol,
            ),
            (
                "close with a 1-byte payload".into(),
                frame(true, 0, 8, m, &[3]),
                1002,
                protocol,
            ),
            (
                "close reason not UTF-8".into(),
                frame(true, 0, 8, m, &close_payload(1000, &[0xff, 0xfe])),
                1007,
                invalid_utf8,
            ),
            (
                "text message not UTF-8".into(),
                frame(true, 0, 1, m, b"caf\xe9!"),
                1007,
                invalid_utf8,
            ),
            (
                "fragmented text message ending inside a character".into(),
                [frame(false, 0, 1, m, b"caf\xc3"), frame(true, 0, 0, m, b"")].concat(),
                1007,
                invalid_utf8,
            ),
        ];
        for rsv in [4u8, 2, 1] {
            server_cases.push((
                format!("RSV bits {rsv:03b}"),
                frame(true, rsv, 2, m, b"x"),
                1002,
                protocol,
            ));
        }
        for opcode in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            server_cases.push((
                format!("reserved opcode {opcode}"),
                frame(true, 0, opcode, m, b""),
                1002,
                protocol,
            ));
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            server_cases.push((
                format!("close code {code}"),
                frame(true, 0, 8, m, &close_payload(code, b"")),
                1002,
                protocol,
            ));
        }
        for (what, bytes, expected, check) in server_cases {
            let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
            raw.send(&bytes).await.unwrap();
            let error = read_until_error(&mut conn).await;
            let code = raw.close_code().await.expect("close frame");
            let frame_error = FrameError::from_io(&error);
            println!(
                "figure ({}): server <- {what}: closed with {code:?}, {frame_error:?}",
                R::NAME
            );
            assert_eq!(code, Some(expected), "{what}");
            assert!(frame_error.is_some_and(check), "{what}: {error}");
            assert_eq!(frame_error.unwrap().close_code(), expected);
            // Every later call fails too, without panicking.
            let mut buf = [0u8; 8];
            assert!(conn.read(&mut buf).await.is_err());
            assert!(conn.write_all(b"x").await.is_err());
        }

        let client_cases: Vec<(&str, Vec<u8>, u16, Check)> = vec![
            (
                "masked server frame",
                frame(true, 0, 2, m, b"hi"),
                1002,
                |e| *e == FrameError::Protocol(libp2p_ws::ProtocolViolation::MaskedServerFrame),
            ),
            (
                "fragmented ping",
                frame(false, 0, 9, None, b""),
                1002,
                protocol,
            ),
            (
                "ping with a 126-byte payload",
                frame(true, 0, 9, None, &[1; 126]),
                1002,
                protocol,
            ),
            ("RSV1 set", frame(true, 4, 2, None, b"x"), 1002, protocol),
            (
                "reserved opcode 3",
                frame(true, 0, 3, None, b""),
                1002,
                protocol,
            ),
            (
                "reserved control opcode 11",
                frame(true, 0, 11, None, b""),
                1002,
                protocol,
            ),
            (
                "continuation without a message",
                frame(true, 0, 0, None, b"x"),
                1002,
                protocol,
            ),
        ];
        for (what, bytes, expected, check) in client_cases {
            let (mut conn, mut raw) = client_and_raw_server::<R>(Config::default()).await;
            raw.send(&bytes).await.unwrap();
            let error = read_until_error(&mut conn).await;
            let close = raw.read_frame().await.expect("close frame");
            assert_eq!(close.opcode, 8);
            assert!(close.masked, "{what}: a client's close frame is masked");
            let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
            let frame_error = FrameError::from_io(&error);
            println!(
                "figure ({}): client <- {what}: closed with {code}, {frame_error:?}",
                R::NAME
            );
            assert_eq!(code, expected, "{what}");
            assert!(frame_error.is_some_and(check), "{what}: {error}");
        }
    })
    .await;
}

async fn pings_are_answered_and_valid_close_frames_echoed<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        raw.send(&frame(true, 0, 9, Some(MASK), b"are you there"))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let pong = {
            let read = conn.read(&mut buf);
            let pong = raw.read_frame();
            futures::pin_mut!(read, pong);
            match futures::future::select(read, pong).await {
                Either::Right((pong, _)) => pong.unwrap(),
                Either::Left((r, _)) => panic!("read returned first: {r:?}"),
            }
        };
        println!(
            "figure ({}): ping answered with opcode {} payload {:?}",
            R::NAME,
            pong.opcode,
            String::from_utf8_lossy(&pong.payload)
        );
        assert_eq!((pong.opcode, pong.fin, pong.masked), (10, true, false));
        assert_eq!(pong.payload, b"are you there");

        // A fragmented message with a ping in the middle is still read whole.
        raw.send(
            &[
                frame(false, 0, 1, Some(MASK), b"frag"),
                frame(true, 0, 9, Some(MASK), b""),
                frame(true, 0, 0, Some(MASK), b"mented"),
            ]
            .concat(),
        )
        .await
        .unwrap();
        let mut got = [0u8; 10];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"fragmented");

        raw.send(&frame(true, 0, 8, Some(MASK), &close_payload(4000, b"bye")))
            .await
            .unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "close is EOF");
        assert_eq!(
            raw.close_code().await.unwrap(),
            Some(4000),
            "close code echoed"
        );
        conn.close().await.unwrap();
    })
    .await;
}

// =================================================================================================
// The message-level API used by the Autobahn peer (conformance/)
// =================================================================================================

async fn message_api_reports_kinds_boundaries_and_empty_messages<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        raw.send(
            &[
                frame(true, 0, 1, Some(MASK), b""),
                frame(false, 0, 2, Some(MASK), b"a"),
                frame(true, 0, 10, Some(MASK), b"pong in between"),
                frame(false, 0, 0, Some(MASK), b""),
                frame(true, 0, 0, Some(MASK), b"bc"),
                frame(true, 0, 1, Some(MASK), "héllo".as_bytes()),
            ]
            .concat(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 3];
        let mut chunks = Vec::new();
        while chunks.len() < 6 {
            let chunk = poll_fn(|cx| {
                conn.websocket_mut()
                    .expect("a WebSocket connection")
                    .poll_read_message(cx, &mut buf)
            })
            .await
            .unwrap()
            .expect("not the end");
            chunks.push((chunk.text, buf[..chunk.len].to_vec(), chunk.end));
        }
        let expected: Vec<(bool, Vec<u8>, bool)> = vec![
            (true, b"".to_vec(), true),
            (false, b"a".to_vec(), false),
            (false, b"".to_vec(), false),
            (false, b"bc".to_vec(), true),
            (true, "hé".as_bytes().to_vec(), false),
            (true, "llo".as_bytes().to_vec(), true),
        ];
        assert_eq!(chunks, expected);

        poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_send_message(cx, true, "héllo".as_bytes())
        })
        .await
        .unwrap();
        poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_send_message(cx, false, &[7u8; 70_000])
        })
        .await
        .unwrap();
        conn.flush().await.unwrap();
        let text = raw.read_frame().await.unwrap();
        assert_eq!((text.opcode, text.fin, text.masked), (1, true, false));
        assert_eq!(text.payload, "héllo".as_bytes());
        let binary = raw.read_frame().await.unwrap();
        assert_eq!(
            (binary.opcode, binary.fin, binary.payload.len()),
            (2, true, 70_000)
        );

        raw.send(&frame(true, 0, 8, Some(MASK), &close_payload(1000, b"")))
            .await
            .unwrap();
        let end = poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_read_message(cx, &mut buf)
        })
        .await
        .unwrap();
        assert_eq!(end, None, "close is the end");
        println!(
            "figure ({}): message API: 6 chunks with kinds and boundaries, 2 messages sent, close \
             seen",
            R::NAME
        );
    })
    .await;
}

// =================================================================================================
// Control frames use the 7-bit length form
// =================================================================================================

/// A control frame whose (short) length is written in the 16- or 64-bit form.
fn control_with_long_length(
    opcode: u8,
    form: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = vec![0x80 | opcode, if mask.is_some() { 0x80 } else { 0 } | form];
    match form {
        126 => v.extend_from_slice(&(payload.len() as u16).to_be_bytes()),
        _ => v.extend_from_slice(&(payload.len() as u64).to_be_bytes()),
    }
    if let Some(k) = mask {
        v.extend_from_slice(&k);
    }
    let body = v.len();
    v.extend_from_slice(payload);
    if let Some(k) = mask {
        for (i, b) in v[body..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    v
}

async fn control_frames_with_a_16_or_64_bit_length_close_with_1002<R: Runtime>() {
    for ours in BOTH {
        for (what, opcode, payload) in [
            ("ping", 9u8, b"ping".to_vec()),
            ("pong", 10, b"pong".to_vec()),
            ("close", 8, close_payload(1000, b"bye")),
        ] {
            for form in [126u8, 127] {
                let name = format!("our {ours:?} <- {what} with a {form}-form length");
                case::<R, _>(&name, CASE, async {
                    let (mut conn, mut raw) = ours.connect::<R>(Config::default()).await;
                    raw.send(&control_with_long_length(
                        opcode,
                        form,
                        ours.mask(),
                        &payload,
                    ))
                    .await
                    .unwrap();
                    let error = read_until_error(&mut conn).await;
                    let code = raw.close_code().await.expect("a close frame");
                    let typed = FrameError::from_io(&error);
                    println!(
                        "figure ({}): {name}: closed with {code:?}, {typed:?}",
                        R::NAME
                    );
                    assert_eq!(code, Some(1002), "{name}");
                    assert!(
                        matches!(typed, Some(FrameError::Protocol(_))),
                        "{name}: {error}"
                    );
                })
                .await;
            }
        }
    }
}

// =================================================================================================
// A TCP end of stream inside a frame is an error
// =================================================================================================

/// Reads until the first error or end of stream; returns the bytes read and how it ended.
async fn read_to_end_or_error<S: AsyncRead + Unpin>(
    conn: &mut S,
    piece: usize,
) -> (usize, io::Result<()>) {
    let mut buf = vec![0u8; piece];
    let mut total = 0;
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n,
            Err(e) => return (total, Err(e)),
        }
    }
}

async fn a_tcp_end_of_stream_inside_a_frame_is_an_error_never_a_clean_end<R: Runtime>() {
    for ours in BOTH {
        let m = ours.mask();
        let whole = frame(true, 0, 2, m, &pattern(1, 10_000));
        let header_len = whole.len() - 10_000;
        // (what, bytes before the TCP FIN, a clean end expected)
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "FIN inside a 10,000-byte payload",
                whole[..header_len + 4000].to_vec(),
                false,
            ),
            (
                "FIN after the first header byte",
                whole[..1].to_vec(),
                false,
            ),
            ("FIN inside the extended length", whole[..3].to_vec(), false),
            (
                "FIN inside a ping's payload",
                frame(true, 0, 9, m, b"0123456789")[..8].to_vec(),
                false,
            ),
            (
                "FIN between the frames of a fragmented message",
                frame(false, 0, 2, m, b"first part"),
                false,
            ),
            ("FIN after a whole frame (control)", whole.clone(), true),
        ];
        for (what, bytes, clean) in cases {
            // Small reads go through the read buffer, large ones straight into the caller's
            // buffer: both paths must see the truncation.
            for piece in [100, 64 * 1024] {
                let name = format!("our {ours:?}, reads of {piece}: {what}");
                case::<R, _>(&name, CASE, async {
                    let (mut conn, mut raw) = ours.connect::<R>(Config::default()).await;
                    raw.send(&bytes).await.unwrap();
                    raw.s.shutdown(Shutdown::Write).unwrap();
                    let (read, outcome) = read_to_end_or_error(&mut conn, piece).await;
                    println!(
                        "figure ({}): {name}: {read} bytes, then {outcome:?}",
                        R::NAME
                    );
                    if clean {
                        outcome.expect("a clean end of stream");
                        assert_eq!(read, 10_000, "{name}");
                    } else {
                        let error = outcome.expect_err("an error, not a clean end of stream");
                        assert_eq!(
                            FrameError::from_io(&error),
                            Some(&FrameError::UnexpectedEof),
                            "{name}: {error}"
                        );
                        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{name}");
                    }
                })
                .await;
            }
        }
    }
}

runtime_tests!(
    with shared:
    rfc6455_violations_close_with_the_right_code_and_a_typed_error,
    pings_are_answered_and_valid_close_frames_echoed,
    message_api_reports_kinds_boundaries_and_empty_messages,
);

runtime_tests!(
    control_frames_with_a_16_or_64_bit_length_close_with_1002,
    a_tcp_end_of_stream_inside_a_frame_is_an_error_never_a_clean_end,
);
