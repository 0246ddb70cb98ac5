// The sending side's rules and the keep-alive, part of `proto::tests` (included there, so that the
// tests keep their names): writes gathered into frames, control frames after data, the write
// buffer's bounds, masking keys.

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
fn direct_masked_frames_are_valid_client_frames_split_anywhere() {
    use std::mem::MaybeUninit;
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 3) as u8).collect();
    let mut server = Core::new(Role::Server, &limits(), Instant::now());
    assert!(
        server.send.direct_header_masked(5000).is_none(),
        "servers do not mask"
    );
    for written in [0, 1, 5, 8, 9, 5007] {
        let mut core = Core::new(Role::Client, &limits(), Instant::now());
        let (head, head_len, mask) = core.send.direct_header_masked(payload.len()).unwrap();
        assert_eq!(head[1] & 0x80, 0x80, "the mask bit is set");
        assert_eq!(&head[head_len - 4..head_len], &mask, "the key is the header's");
        let mut stack = [MaybeUninit::uninit(); 6000];
        let masked = super::mask_into(&mut stack, &payload, mask);
        assert_ne!(masked, &payload[..]);
        core.send.direct_rest(&head[..head_len], masked, written);
        assert!(
            core.send.direct_header_masked(10).is_none(),
            "the rest goes first"
        );
        core.send.write(b"next");
        core.send.finalize();
        let mut wire = [&head[..head_len], masked].concat()[..written].to_vec();
        wire.extend_from_slice(core.send.pending());
        assert_eq!(
            read_back(Role::Server, &wire),
            [&payload[..], b"next"].concat()
        );
    }
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
