// The receiving side's rules, part of `proto::tests` (included there, so that the tests keep
// their names): masking by role, reserved bits and opcodes, control frames, fragmentation, close
// payloads, UTF-8 as it arrives, frame and message limits, pongs, end of stream, a failed core.

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
