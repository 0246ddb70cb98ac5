//! Frames against RFC 6455 over real sockets, with raw peers (issue 6, hardening): frame headers
//! declaring up to 2^63-1 bytes and messages over the limit close with 1009 without allocating,
//! every MUST case closes with the right code and a typed error on either side, pings are answered
//! and close frames echoed, and the message-level API the Autobahn peer uses reports kinds and
//! boundaries. Every test runs on both runtimes on 127.0.0.1 and bounds every wait. Each test
//! prints the figures it measures, each line naming the runtime (`figure (tokio): ...`; run with
//! `--nocapture` to see them).
//!
//! The test that measures RSS runs through [`exclusive`], beside nothing else of this binary; the
//! others through [`shared`].

mod common;

use std::time::Duration;

use common::{process::*, raw::*, *};
use futures::{
    future::{poll_fn, Either},
    AsyncReadExt, AsyncWriteExt,
};
use libp2p_ws::{Config, FrameError};

// =================================================================================================
// Oversized frames and messages
// =================================================================================================

async fn oversized_frames_and_messages_close_with_1009_without_allocating<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let limits = libp2p_ws::FrameLimits::default();
        let mut server = Server::<R>::plain(Config::default()).await;

        // (what, bytes the raw client sends)
        let mut over_message = Vec::new();
        let chunk = vec![0x5a; limits.max_frame_size()];
        let frames = limits.max_message_size() / limits.max_frame_size();
        for i in 0..frames {
            over_message.extend(frame(
                false,
                0,
                if i == 0 { 2 } else { 0 },
                Some(MASK),
                &chunk,
            ));
        }
        over_message.extend(frame(true, 0, 0, Some(MASK), b"!"));
        let attacks: Vec<(&str, Vec<u8>)> = vec![
            (
                "a frame header declaring 2^63-1 bytes",
                header(true, 0, 2, Some(MASK), (1 << 63) - 1),
            ),
            (
                "a frame one byte over max_frame_size",
                header(true, 0, 2, Some(MASK), limits.max_frame_size() as u64 + 1),
            ),
            (
                "a message one byte over max_message_size, in max-size frames",
                over_message,
            ),
        ];
        drop(chunk);
        for (what, bytes) in attacks {
            let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
            let before = rss();
            let sent = bytes.len();
            let writer = spawn::<R, _>(async move {
                let _ = raw.send(&bytes).await;
                raw
            });
            let error = read_until_error(&mut conn).await;
            let mut raw = writer.await;
            let code = raw.close_code().await.expect("close frame");
            let grown = rss() - before;
            let frame_error = FrameError::from_io(&error).cloned();
            println!(
                "figure ({}): server, {what} ({sent} bytes sent): closed with {code:?}, error \
                 {frame_error:?}, RSS grew {:.3} MiB",
                R::NAME,
                mib(grown)
            );
            assert_eq!(code, Some(1009), "{what}");
            assert!(
                matches!(
                    frame_error,
                    Some(FrameError::FrameTooLarge { .. } | FrameError::MessageTooLarge { .. })
                ),
                "{what}: {error}"
            );
            assert!(grown < 1024 * 1024, "{what}: RSS grew {grown} bytes");
            drop(conn);
        }

        // The same on the dialing side: a server declaring a 2^63-1 byte frame.
        let (mut conn, mut raw) = client_and_raw_server::<R>(Config::default()).await;
        let before = rss();
        raw.send(&header(true, 0, 2, None, (1 << 63) - 1))
            .await
            .unwrap();
        let error = read_until_error(&mut conn).await;
        let close = raw.read_frame().await.unwrap();
        let grown = rss() - before;
        assert!(close.masked, "a client's close frame is masked");
        let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
        println!(
            "figure ({}): client, a frame header declaring 2^63-1 bytes: closed with {code}, RSS \
             grew {:.3} MiB",
            R::NAME,
            mib(grown)
        );
        assert_eq!(code, 1009);
        assert!(matches!(
            FrameError::from_io(&error),
            Some(FrameError::FrameTooLarge { .. })
        ));
        assert!(grown < 1024 * 1024);
    })
    .await;
}

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

runtime_tests!(
    with exclusive:
    oversized_frames_and_messages_close_with_1009_without_allocating,
);

runtime_tests!(
    with shared:
    rfc6455_violations_close_with_the_right_code_and_a_typed_error,
    pings_are_answered_and_valid_close_frames_echoed,
    message_api_reports_kinds_boundaries_and_empty_messages,
);
