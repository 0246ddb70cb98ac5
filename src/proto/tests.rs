//! The core's rules driven without sockets or a runtime: bytes in, decisions and bytes out, at
//! simulated times. One test per rule of RFC 6455 the core enforces; each input is also fed one
//! byte at a time, which must decide the same.

use std::time::{Duration, Instant};

use super::{
    error::{FrameError, ProtocolViolation as V},
    limits::{FrameLimits, KeepAlive},
};
use super::{fuzz::FrameCore, mask::apply_mask, Core, Event, KeepAliveAction, Role};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame on the wire: `first` is FIN, RSV and opcode; masked when `mask` is given. The length
/// uses the minimal form.
fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => wire.push(m | n as u8),
        n if n < 65_536 => {
            wire.push(m | 126);
            wire.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            wire.push(m | 127);
            wire.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let body = wire.len() + if mask.is_some() { 4 } else { 0 };
    if let Some(mask) = mask {
        wire.extend_from_slice(&mask);
    }
    wire.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut wire[body..], mask, 0);
    }
    wire
}

/// A frame as the peer of `reader` sends it (masked towards a server).
fn from_peer(reader: Role, first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, (reader == Role::Server).then_some(MASK), payload)
}

fn limits() -> FrameLimits {
    FrameLimits::default().with_keep_alive(None)
}

/// Feeds `wire` to a fresh core of `role`, whole and one byte at a time; both must agree. Returns
/// the data, and the first error.
fn feed(role: Role, limits: FrameLimits, wire: &[u8]) -> (Vec<u8>, Result<(), FrameError>) {
    let mut whole = FrameCore::new(role, limits);
    let mut data = Vec::new();
    let result = whole.receive(wire, &mut data).map(|_| ());

    let mut bytewise = FrameCore::new(role, limits);
    let mut data2 = Vec::new();
    let mut result2 = Ok(());
    for byte in wire {
        if let Err(e) = bytewise.receive(std::slice::from_ref(byte), &mut data2) {
            result2 = Err(e);
            break;
        }
    }
    assert_eq!(
        result, result2,
        "whole and byte-wise feeding disagree on {wire:02x?}"
    );
    if result.is_ok() {
        assert_eq!(data, data2, "whole and byte-wise feeding disagree on data");
    } else {
        assert!(data2.starts_with(&data), "byte-wise delivers as it arrives");
    }
    (data, result)
}

fn violation(role: Role, wire: &[u8]) -> FrameError {
    feed(role, limits(), wire)
        .1
        .expect_err("the core must refuse this input")
}

/// The close frame the core queued for the peer, decoded: its code.
fn sent_close_code(core: &mut FrameCore, role: Role) -> Option<u16> {
    let sent = core.take_sent();
    let peer = match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut reader = Core::new(peer, &limits(), Instant::now());
    let mut pos = 0;
    loop {
        match reader.decode(&sent[pos..]).expect("our own frames decode") {
            Event::NeedMore => return None,
            Event::Data { consumed, len } => pos += consumed + len as usize,
            Event::Control { consumed, .. } => {
                pos += consumed;
                if reader.peer_closed() {
                    let payload_start = pos - 2;
                    let mut code = [sent[payload_start], sent[payload_start + 1]];
                    if peer == Role::Server {
                        // The client masked it: the mask is the 4 bytes before the payload.
                        let mask = sent[payload_start - 4..payload_start].try_into().unwrap();
                        apply_mask(&mut code, mask, 0);
                    }
                    return Some(u16::from_be_bytes(code));
                }
            }
        }
    }
}

#[test]
fn masking_follows_the_role() {
    for (role, wire, want) in [
        (
            Role::Server,
            frame(0x82, None, b"x"),
            V::UnmaskedClientFrame,
        ),
        (
            Role::Client,
            frame(0x82, Some(MASK), b"x"),
            V::MaskedServerFrame,
        ),
    ] {
        let e = violation(role, &wire);
        assert_eq!(e, FrameError::Protocol(want), "{role:?}");
        assert_eq!(e.close_code(), 1002);
    }
    for role in [Role::Server, Role::Client] {
        let (data, result) = feed(role, limits(), &from_peer(role, 0x82, b"hello"));
        assert_eq!((data.as_slice(), result), (&b"hello"[..], Ok(())));
    }
}

#[test]
fn reserved_bits_and_opcodes_are_refused() {
    for role in [Role::Server, Role::Client] {
        for rsv in [0x40, 0x20, 0x10] {
            let e = violation(role, &from_peer(role, 0x80 | rsv | 2, b"x"));
            assert_eq!(e, FrameError::Protocol(V::ReservedBit), "rsv {rsv:#x}");
        }
        for opcode in (3..=7).chain(0xb..=0xf) {
            let e = violation(role, &from_peer(role, 0x80 | opcode, b""));
            assert_eq!(
                e,
                FrameError::Protocol(V::ReservedOpcode),
                "opcode {opcode:#x}"
            );
        }
    }
}

#[test]
fn control_frames_must_be_whole_short_and_minimally_encoded() {
    let role = Role::Server;
    for opcode in [8u8, 9, 10] {
        let e = violation(role, &from_peer(role, opcode, b""));
        assert_eq!(e, FrameError::Protocol(V::FragmentedControl), "{opcode}");
        // 126 bytes need the 16-bit form, which control frames must not use; so must 5 bytes.
        let e = violation(role, &from_peer(role, 0x80 | opcode, &[0; 126]));
        assert_eq!(e, FrameError::Protocol(V::ControlLengthNotMinimal));
        let mut wire = vec![0x80 | opcode, 0x80 | 126, 0, 5];
        wire.extend_from_slice(&MASK);
        wire.extend_from_slice(&[0; 5]);
        assert_eq!(
            violation(role, &wire),
            FrameError::Protocol(V::ControlLengthNotMinimal)
        );
        let mut wire = vec![0x80 | opcode, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5];
        wire.extend_from_slice(&MASK);
        wire.extend_from_slice(&[0; 5]);
        assert_eq!(
            violation(role, &wire),
            FrameError::Protocol(V::ControlLengthNotMinimal)
        );
    }
    // 125 bytes is the largest allowed.
    let mut core = FrameCore::new(role, limits());
    core.receive(&from_peer(role, 0x89, &[7; 125]), &mut Vec::new())
        .expect("a 125-byte ping");
}

#[test]
fn fragmentation_rules() {
    let role = Role::Server;
    let e = violation(role, &from_peer(role, 0x80, b"x"));
    assert_eq!(e, FrameError::Protocol(V::UnexpectedContinuation));
    let mut wire = from_peer(role, 0x02, b"a");
    wire.extend(from_peer(role, 0x82, b"b"));
    assert_eq!(
        violation(role, &wire),
        FrameError::Protocol(V::UnfinishedMessage)
    );

    // Control frames may come between fragments; the message's data is contiguous.
    let mut wire = from_peer(role, 0x01, b"he");
    wire.extend(from_peer(role, 0x89, b"ping"));
    wire.extend(from_peer(role, 0x00, b"l"));
    wire.extend(from_peer(role, 0x8a, b""));
    wire.extend(from_peer(role, 0x80, b"lo"));
    let (data, result) = feed(role, limits(), &wire);
    assert_eq!((data.as_slice(), result), (&b"hello"[..], Ok(())));
}

#[test]
fn close_payload_rules_and_the_echo() {
    let role = Role::Server;
    assert_eq!(
        violation(role, &from_peer(role, 0x88, &[3])),
        FrameError::Protocol(V::CloseFrameTooShort)
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let e = violation(role, &from_peer(role, 0x88, &code.to_be_bytes()));
        assert_eq!(e, FrameError::Protocol(V::InvalidCloseCode(code)));
    }
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(b"\xff");
    let e = violation(role, &from_peer(role, 0x88, &bad_reason));
    assert_eq!(e, FrameError::Protocol(V::InvalidCloseReason));
    assert_eq!(e.close_code(), 1007);

    for (payload, echoed) in [
        (vec![], 1000),
        (1000u16.to_be_bytes().to_vec(), 1000),
        (1001u16.to_be_bytes().to_vec(), 1001),
        (
            [&4000u16.to_be_bytes()[..], "ok é".as_bytes()].concat(),
            4000,
        ),
        (3000u16.to_be_bytes().to_vec(), 3000),
        (1014u16.to_be_bytes().to_vec(), 1014),
    ] {
        for role in [Role::Server, Role::Client] {
            let mut core = FrameCore::new(role, limits());
            let mut wire = from_peer(role, 0x88, &payload);
            // Whatever follows the close frame is not read.
            wire.extend(from_peer(role, 0x82, b"after"));
            let mut data = Vec::new();
            core.receive(&wire, &mut data).expect("a valid close");
            assert!(core.peer_closed() && data.is_empty());
            assert_eq!(
                sent_close_code(&mut core, role),
                Some(echoed),
                "{payload:?}"
            );
            // Answered once.
            core.receive(&from_peer(role, 0x88, b""), &mut data)
                .unwrap();
            assert!(core.take_sent().is_empty());
        }
    }
}

#[test]
fn text_must_be_utf8_checked_as_it_arrives() {
    let role = Role::Client;
    let e = violation(role, &from_peer(role, 0x81, b"ok \xff"));
    assert_eq!(e, FrameError::Protocol(V::InvalidUtf8Text));
    assert_eq!(e.close_code(), 1007);
    // Fail fast: the first fragment is already invalid; the message has not ended.
    let mut core = FrameCore::new(role, limits());
    let e = core
        .receive(&from_peer(role, 0x01, b"\xce\xba\xf4\x90"), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e, FrameError::Protocol(V::InvalidUtf8Text));
    assert_eq!(sent_close_code(&mut core, role), Some(1007));

    // A character split across fragments is fine; a message ending inside one is not, even when
    // its last fragment is empty.
    let euro = "€".as_bytes();
    let mut wire = from_peer(role, 0x01, &euro[..1]);
    wire.extend(from_peer(role, 0x00, &euro[1..2]));
    wire.extend(from_peer(role, 0x80, &euro[2..]));
    assert_eq!(feed(role, limits(), &wire), (euro.to_vec(), Ok(())));
    let mut wire = from_peer(role, 0x01, &euro[..2]);
    wire.extend(from_peer(role, 0x80, b""));
    assert_eq!(
        violation(role, &wire),
        FrameError::Protocol(V::InvalidUtf8Text)
    );
    // Binary is not checked.
    assert_eq!(
        feed(role, limits(), &from_peer(role, 0x82, b"\xff")).1,
        Ok(())
    );
}

#[test]
fn frame_and_message_limits_exactly_at_and_one_over() {
    let role = Role::Server;
    let limits = limits().with_max_frame_size(100).with_max_message_size(150);
    assert_eq!(
        feed(role, limits, &from_peer(role, 0x82, &[1; 100])).1,
        Ok(())
    );
    let e = feed(role, limits, &from_peer(role, 0x82, &[1; 101]))
        .1
        .unwrap_err();
    assert_eq!(
        e,
        FrameError::FrameTooLarge {
            len: 101,
            limit: 100
        }
    );
    assert_eq!(e.close_code(), 1009);

    let message = |last: usize| {
        let mut wire = from_peer(role, 0x02, &[1; 100]);
        wire.extend(from_peer(role, 0x80, &vec![2; last]));
        wire
    };
    assert_eq!(feed(role, limits, &message(50)).1, Ok(()));
    let e = feed(role, limits, &message(51)).1.unwrap_err();
    assert_eq!(e, FrameError::MessageTooLarge { limit: 150 });
    // The limit counts per message.
    let mut wire = message(50);
    wire.extend(message(50));
    assert_eq!(feed(role, limits, &wire).1, Ok(()));
}

#[test]
fn pings_get_one_pong_at_a_time_and_none_after_our_close() {
    for role in [Role::Server, Role::Client] {
        let mut core = FrameCore::new(role, limits());
        let mut wire = from_peer(role, 0x89, b"one");
        wire.extend(from_peer(role, 0x89, b"two"));
        core.receive(&wire, &mut Vec::new()).unwrap();
        let sent = core.take_sent();
        // One pong, with the first ping's payload, masked by a client only.
        let expected_len = 2 + 3 + if role == Role::Client { 4 } else { 0 };
        assert_eq!(sent.len(), expected_len, "{role:?}: {sent:02x?}");
        assert_eq!(sent[0], 0x8a);
        let mut payload = sent[sent.len() - 3..].to_vec();
        if role == Role::Client {
            apply_mask(&mut payload, sent[2..6].try_into().unwrap(), 0);
        }
        assert_eq!(payload, b"one");
        // Once it was sent, the next ping gets its own.
        core.receive(&from_peer(role, 0x89, b"3"), &mut Vec::new())
            .unwrap();
        assert_eq!(core.take_sent()[0], 0x8a);
        core.close(1000);
        core.take_sent();
        core.receive(&from_peer(role, 0x89, b"4"), &mut Vec::new())
            .unwrap();
        assert!(core.take_sent().is_empty(), "no pong after our close frame");
    }
}

#[test]
fn end_of_stream_is_clean_only_between_messages() {
    let role = Role::Server;
    let whole = from_peer(role, 0x82, b"abc");
    for cut in 0..whole.len() {
        let mut core = FrameCore::new(role, limits());
        core.receive(&whole[..cut], &mut Vec::new()).unwrap();
        let result = core.end_of_stream();
        if cut == 0 {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(result, Err(FrameError::UnexpectedEof), "cut at {cut}");
        }
    }
    let mut core = FrameCore::new(role, limits());
    core.receive(&from_peer(role, 0x02, b"a"), &mut Vec::new())
        .unwrap();
    assert_eq!(
        core.end_of_stream(),
        Err(FrameError::UnexpectedEof),
        "between fragments"
    );
}

#[test]
fn a_failed_core_reports_its_first_error_and_sends_one_close() {
    let role = Role::Server;
    let mut core = FrameCore::new(role, limits());
    let first = core
        .receive(&from_peer(role, 0x80, b"x"), &mut Vec::new())
        .unwrap_err();
    assert_eq!(sent_close_code(&mut core, role), Some(1002));
    let later = core
        .receive(&from_peer(role, 0x82, b"x"), &mut Vec::new())
        .unwrap_err();
    assert_eq!(later, FrameError::Failed(Box::new(first.clone())));
    assert_eq!(later.close_code(), first.close_code());
    assert_eq!(
        std::error::Error::source(&later).unwrap().to_string(),
        first.to_string()
    );
    assert!(core.take_sent().is_empty(), "one close frame only");
}

/// Decodes everything `sent` carries as `reader` would; returns the data.
fn read_back(reader: Role, sent: &[u8]) -> Vec<u8> {
    let mut core = FrameCore::new(reader, limits().with_max_frame_size(1 << 24));
    let mut data = Vec::new();
    core.receive(sent, &mut data).expect("our frames are valid");
    assert_eq!(core.end_of_stream(), Ok(()), "whole frames only");
    data
}

#[test]
fn writes_are_gathered_into_frames_of_the_buffer_size_and_masked_by_clients() {
    for role in [Role::Server, Role::Client] {
        let peer = if role == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        let size = 1024;
        let mut core = FrameCore::new(role, limits().with_write_buffer_size(size));
        // Small writes coalesce into one frame.
        assert_eq!(core.write(b"hel"), 3);
        assert_eq!(core.write(b"lo"), 2);
        let sent = core.take_sent();
        let header = if role == Role::Client { 6 } else { 2 };
        assert_eq!(sent.len(), header + 5, "{role:?}: one frame");
        assert_eq!(read_back(peer, &sent), b"hello");
        if role == Role::Client {
            assert_ne!(&sent[6..], b"hello", "masked");
        }
        // A frame holds at most the buffer size; then the writer must send first.
        let big = vec![9u8; 3000];
        let n = core.write(&big);
        assert_eq!(n, size);
        assert_eq!(core.write(&big[n..]), 0, "full");
        let sent = core.take_sent();
        assert_eq!(read_back(peer, &sent), &big[..size]);
    }
}

#[test]
fn control_frames_go_after_the_data_written_before_them() {
    let role = Role::Server;
    let mut core = FrameCore::new(role, limits());
    core.write(b"data");
    core.receive(&from_peer(role, 0x89, b"p"), &mut Vec::new())
        .unwrap();
    core.close(1000);
    assert_eq!(core.write(b"late"), 0, "nothing after our close");
    let sent = core.take_sent();
    assert_eq!(
        sent,
        [
            frame(0x82, None, b"data"),
            frame(0x8a, None, b"p"),
            frame(0x88, None, &1000u16.to_be_bytes())
        ]
        .concat()
    );
}

#[test]
fn direct_frames_split_anywhere_complete_before_later_writes() {
    let mut core = Core::new(Role::Server, &limits(), Instant::now());
    let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let (head, head_len) = core
        .send
        .direct_header(payload.len())
        .expect("server, idle");
    for written in [0, 1, head_len - 1, head_len, head_len + 1, head_len + 4999] {
        let mut core = Core::new(Role::Server, &limits(), Instant::now());
        core.send.direct_header(payload.len()).unwrap();
        core.send.direct_rest(&head[..head_len], &payload, written);
        assert!(core.send.direct_header(10).is_none(), "the rest goes first");
        core.send.write(b"next");
        core.send.finalize();
        let mut wire = [&head[..head_len], &payload[..]].concat()[..written].to_vec();
        wire.extend_from_slice(core.send.pending());
        assert_eq!(
            read_back(Role::Client, &wire),
            [&payload[..], b"next"].concat()
        );
    }
    let mut client = Core::new(Role::Client, &limits(), Instant::now());
    assert!(
        client.send.direct_header(5000).is_none(),
        "clients must mask in a buffer"
    );
}

#[test]
fn keep_alive_pings_at_the_interval_and_fails_after_the_timeout_on_simulated_time() {
    let ka = KeepAlive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut core = Core::new(Role::Client, &limits().with_keep_alive(Some(ka)), t0);
    assert_eq!(core.keep_alive(at(29)), KeepAliveAction::WaitUntil(at(30)));
    assert!(core.send.pending().is_empty());
    assert_eq!(core.keep_alive(at(30)), KeepAliveAction::Ping);
    assert_eq!(core.send.pending()[0], 0x89, "a ping is queued");
    let n = core.send.pending().len();
    core.send.advance(n);
    assert_eq!(core.keep_alive(at(35)), KeepAliveAction::WaitUntil(at(40)));
    assert_eq!(
        core.keep_alive(at(40)),
        KeepAliveAction::TimedOut(ka.timeout)
    );
    let e = core.fail(FrameError::KeepAliveTimeout(ka.timeout));
    assert_eq!(e.close_code(), 1011);

    let mut core = Core::new(Role::Client, &limits().with_keep_alive(Some(ka)), t0);
    assert_eq!(core.keep_alive(at(30)), KeepAliveAction::Ping);
    core.on_receive(at(31));
    assert_eq!(core.keep_alive(at(45)), KeepAliveAction::WaitUntil(at(61)));
}

#[test]
fn every_split_of_a_mixed_stream_reads_the_same() {
    // Data, text split inside a character, control frames between fragments, empty frames.
    let role = Role::Server;
    let mut wire = Vec::new();
    wire.extend(from_peer(role, 0x82, &[1; 300]));
    wire.extend(from_peer(role, 0x01, "κό".as_bytes()));
    wire.extend(from_peer(role, 0x89, b""));
    wire.extend(from_peer(role, 0x00, &"σμε".as_bytes()[..1]));
    wire.extend(from_peer(role, 0x80, &"σμε".as_bytes()[1..]));
    wire.extend(from_peer(role, 0x82, b""));
    wire.extend(from_peer(role, 0x82, &[2; 70_000]));
    let mut expected = vec![1; 300];
    expected.extend_from_slice("κόσμε".as_bytes());
    expected.extend(vec![2; 70_000]);
    for split in [1, 2, 3, 7, 13, 64, 1000, 4096, wire.len()] {
        let mut core = FrameCore::new(role, limits());
        let mut data = Vec::new();
        for piece in wire.chunks(split) {
            core.receive(piece, &mut data).expect("valid stream");
        }
        assert_eq!(core.end_of_stream(), Ok(()));
        assert!(data == expected, "pieces of {split}");
    }
}

#[test]
fn a_socket_that_never_catches_up_cannot_grow_the_write_buffer() {
    // Each round the writer fills the buffer and the socket takes a little less than was added, so
    // the buffer is never fully sent: the sent prefix must still be dropped.
    let size = 1024;
    let mut core = Core::new(
        Role::Server,
        &limits().with_write_buffer_size(size),
        Instant::now(),
    );
    let chunk = [5u8; 700];
    let (mut written, mut sent) = (0usize, Vec::new());
    for round in 0..2000 {
        loop {
            let n = core.send.write(&chunk);
            if n == 0 {
                break;
            }
            written += n;
        }
        core.send.finalize();
        let pending = core.send.pending();
        let take = pending.len().saturating_sub(1 + round % 7).max(1);
        sent.extend_from_slice(&pending[..take]);
        core.send.advance(take);
        assert!(
            core.send.capacity() <= 4 * (size + super::HEADER_SLOT),
            "round {round}: the buffer grew to {} bytes",
            core.send.capacity()
        );
    }
    sent.extend_from_slice(core.send.pending());
    let data = read_back(Role::Client, &sent);
    assert_eq!(data.len(), written);
}

#[test]
fn a_socket_error_fails_the_core_and_is_kept_for_later_calls() {
    let mut core = Core::new(Role::Client, &limits(), Instant::now());
    assert!(!core.has_failed());
    core.send.write(b"queued");
    core.send.finalize();
    let error = std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    core.fail_io(error.clone());
    assert!(core.has_failed());
    assert!(
        core.send.pending().is_empty(),
        "nothing is sent after a socket error"
    );
    let later = core.check().unwrap_err();
    assert_eq!(
        later,
        FrameError::Failed(Box::new(FrameError::Io(super::error::SharedIoError(error))))
    );
    assert_eq!(later.into_io().kind(), std::io::ErrorKind::BrokenPipe);
    // A protocol error after that does not replace the first error.
    core.fail(FrameError::UnexpectedEof);
    assert!(
        matches!(core.check(), Err(FrameError::Failed(first)) if matches!(*first, FrameError::Io(_)))
    );
}

#[test]
fn the_receiver_says_which_kind_of_message_it_is_in() {
    let role = Role::Client;
    let mut core = Core::new(role, &limits(), Instant::now());
    let text = from_peer(role, 0x01, b"te");
    assert_eq!(
        core.decode(&text).unwrap(),
        Event::Data {
            consumed: 2,
            len: 2
        }
    );
    assert!(core.recv.is_text());
    core.payload(&mut b"te".to_vec()).unwrap();
    // A control frame between fragments does not change the message's kind.
    let ping = from_peer(role, 0x89, b"");
    assert!(matches!(core.decode(&ping).unwrap(), Event::Control { .. }));
    assert!(core.recv.is_text());
    let last = from_peer(role, 0x80, b"xt");
    core.decode(&last).unwrap();
    assert!(
        core.payload(&mut b"xt".to_vec()).unwrap(),
        "the message ends"
    );
    assert!(core.recv.is_text());
    let binary = from_peer(role, 0x82, b"b");
    core.decode(&binary).unwrap();
    assert!(!core.recv.is_text());
}

#[test]
fn an_empty_fragment_inside_a_text_message_does_not_end_its_utf8_check() {
    // A character split across fragments with an empty non-final fragment between them.
    let role = Role::Server;
    let euro = "€".as_bytes();
    let mut wire = from_peer(role, 0x01, &euro[..1]);
    wire.extend(from_peer(role, 0x00, b""));
    wire.extend(from_peer(role, 0x80, &euro[1..]));
    assert_eq!(feed(role, limits(), &wire), (euro.to_vec(), Ok(())));
}

#[test]
fn the_write_buffer_is_held_while_used_and_freed_when_idle() {
    let mut core = Core::new(Role::Server, &limits(), Instant::now());
    assert_eq!(
        core.send.capacity(),
        0,
        "nothing allocated before the first write"
    );
    core.send.write(b"data");
    assert!(core.send.capacity() >= 4 + super::HEADER_SLOT);
    core.send.release_if_idle();
    assert!(core.send.capacity() > 0, "not freed while a frame is open");
    core.send.finalize();
    let n = core.send.pending().len();
    core.send.advance(n);
    core.send.release_if_idle();
    assert_eq!(core.send.capacity(), 0, "freed once everything was sent");
}

#[test]
fn a_frame_opened_behind_a_waiting_pong_survives_the_pong_being_sent() {
    let role = Role::Server;
    let mut core = Core::new(role, &limits(), Instant::now());
    core.decode(&from_peer(role, 0x89, b"p")).unwrap();
    core.send.write(b"first");
    // The pong goes out; the open frame moves to the front of the buffer.
    let pong = core.send.pending().to_vec();
    assert_eq!(pong, frame(0x8a, None, b"p"));
    core.send.advance(pong.len());
    core.send.write(b" second");
    core.send.finalize();
    let mut wire = pong;
    wire.extend_from_slice(core.send.pending());
    assert_eq!(read_back(Role::Client, &wire), b"first second");
}

#[test]
fn the_room_for_writes_is_the_buffer_size_less_what_is_unsent() {
    let size = 1024;
    let mut core = Core::new(
        Role::Server,
        &limits().with_write_buffer_size(size),
        Instant::now(),
    );
    assert_eq!(core.send.write(&[1; 4000]), size);
    core.send.finalize();
    let frame_len = core.send.pending().len();
    core.send.advance(300);
    let unsent = frame_len - 300;
    assert_eq!(core.send.write(&[2; 4000]), size - unsent);
    assert_eq!(core.send.write(&[3; 4000]), 0, "full until more is sent");
}

#[test]
fn a_whole_message_goes_out_as_one_frame_of_its_kind_after_what_was_written() {
    let mut core = Core::new(Role::Client, &limits(), Instant::now());
    core.send.write(b"bytes ");
    core.send.message(true, "héllo".as_bytes());
    let wire = core.send.pending().to_vec();
    let mut reader = Core::new(Role::Server, &limits(), Instant::now());
    let Event::Data { consumed, len } = reader.decode(&wire).unwrap() else {
        panic!("a data frame first");
    };
    assert!(
        !reader.recv.is_text(),
        "what was written goes first, in binary"
    );
    let mut first = wire[consumed..consumed + len as usize].to_vec();
    reader.payload(&mut first).unwrap();
    assert_eq!(first, b"bytes ");
    let rest = &wire[consumed + len as usize..];
    let Event::Data { consumed, len } = reader.decode(rest).unwrap() else {
        panic!("then the message");
    };
    assert!(reader.recv.is_text());
    let mut payload = rest[consumed..consumed + len as usize].to_vec();
    assert!(
        reader.payload(&mut payload).unwrap(),
        "one frame, the whole message"
    );
    assert_eq!(payload, "héllo".as_bytes());
}

#[test]
fn dropping_a_long_sent_prefix_keeps_a_frame_opened_behind_it() {
    // A whole message larger than the buffer size is partly sent, a frame is opened behind it,
    // then more of the message goes out: past a frame's worth, the sent prefix is dropped while
    // the frame is open, and the frame must survive the move.
    let size = 1024;
    let mut core = Core::new(
        Role::Server,
        &limits().with_write_buffer_size(size),
        Instant::now(),
    );
    core.send.message(false, &[7; 1500]);
    let message = core.send.pending().to_vec();
    core.send.advance(1000);
    assert_eq!(core.send.write(b"tail"), 4, "room behind 504 unsent bytes");
    core.send.advance(500);
    assert_eq!(core.send.write(b" end"), 4);
    core.send.finalize();
    let mut wire = message[..1500].to_vec();
    wire.extend_from_slice(core.send.pending());
    let mut expected = vec![7; 1500];
    expected.extend_from_slice(b"tail end");
    assert_eq!(read_back(Role::Client, &wire), expected);
    assert!(core.send.capacity() <= 4 * (size + super::HEADER_SLOT));
}

#[test]
fn masking_keys_come_from_the_injected_seed() {
    let sent = |seed: u64| {
        let mut core = FrameCore::new(Role::Client, limits()).with_mask_seed(seed);
        assert_eq!(core.write(b"hello, seeded masks"), 19);
        core.take_sent()
    };
    assert_eq!(sent(7), sent(7), "the same seed gives the same bytes");
    assert_ne!(sent(7), sent(8), "another seed gives other keys");
    assert_eq!(read_back(Role::Server, &sent(7)), b"hello, seeded masks");
}
