//! The sans-IO frame core (`libp2p_ws::unstable::FrameCore`) on its own, no socket: the input
//! after the first byte is what the peer sent, fed whole to one core and in pieces (sizes from
//! the first byte) to another. Both must decide the same (the same error; the same data when valid); errors carry a
//! close code of the framing layer and the core queues a close frame with it; everything the
//! core queues for the peer (pongs, the close reply) is valid to a core of the other role.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p_ws::{unstable::FrameCore, FrameError, FrameLimits, Role};

fn limits() -> FrameLimits {
    // Small limits, so that the fuzzer reaches them.
    FrameLimits::default()
        .with_max_frame_size(4096)
        .with_max_message_size(8192)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 { Role::Server } else { Role::Client };
    let piece = usize::from(control >> 1).max(1);

    let mut whole = FrameCore::new(role, limits());
    let mut whole_data = Vec::new();
    let whole_result = whole.receive(wire, &mut whole_data).map(|_| ());

    let mut pieces = FrameCore::new(role, limits());
    let mut pieces_data = Vec::new();
    let mut pieces_result = Ok(());
    for chunk in wire.chunks(piece) {
        if let Err(e) = pieces.receive(chunk, &mut pieces_data) {
            pieces_result = Err(e);
            break;
        }
    }
    assert_eq!(whole_result, pieces_result);
    if whole_result.is_ok() {
        assert_eq!(whole_data, pieces_data);
    } else {
        // Payload is delivered as it arrives: in pieces, more of a frame that breaks a rule later
        // may have come through before the piece that breaks it.
        assert!(pieces_data.starts_with(&whole_data));
    }
    assert!(whole_data.len() <= wire.len());

    let peer = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    match whole_result {
        Err(error) => {
            assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
            // Every later call reports the first error.
            let later = whole.receive(b"\x82\x00", &mut Vec::new()).unwrap_err();
            assert_eq!(later, FrameError::Failed(Box::new(error)));
        }
        Ok(()) => {
            let _ = whole.end_of_stream();
        }
    }
    // What the core sent (pongs, a close frame) is valid for the peer.
    let sent = whole.take_sent();
    let mut reader = FrameCore::new(peer, FrameLimits::default());
    reader
        .receive(&sent, &mut Vec::new())
        .expect("the core's own frames are valid");
});
