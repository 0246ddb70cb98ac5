//! The frame reader: `Connection::new(io, role, FrameLimits::default(), leftover)` reading frames
//! from the fuzz input. The first byte picks the role (bit 0), the API (byte stream or messages,
//! bit 1), how much of the input is handed over as `leftover` (bits 2-6, times 4 bytes), and whether
//! a flood of empty frames and pings is put in front of the input (bit 7: more frames than one read
//! call handles, so the per-poll bound and its cooperative yield are reached, from the leftover
//! bytes and from the socket). Writes (pongs, close replies) go to a sink.
#![no_main]

#[path = "common.rs"]
mod common;

use futures::AsyncWriteExt;
use libfuzzer_sys::fuzz_target;
use libp2p_ws::{Connection, FrameError, FrameLimits, Role};

/// Empty pings and empty binary frames put in front of the input when bit 7 is set, in runs of
/// [`FLOOD_RUN`]: more than twice the per-poll bound of 64 frames.
const FLOOD_FRAMES: usize = 150;
/// Longer than the per-poll bound, so that a run of pings reaches it with the message API too
/// (which returns at every empty data frame).
const FLOOD_RUN: usize = 70;

/// An empty frame with the given first byte, as the peer of `role` sends it (masked towards a
/// server).
fn empty_frame(role: Role, first: u8) -> Vec<u8> {
    match role {
        Role::Server => vec![first, 0x80, 0x11, 0x22, 0x33, 0x44],
        Role::Client => vec![first, 0x00],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let message_api = control & 2 != 0;
    let mut input = Vec::new();
    if control & 0x80 != 0 {
        for i in 0..FLOOD_FRAMES {
            let first = if (i / FLOOD_RUN) % 2 == 0 { 0x89 } else { 0x82 };
            input.extend_from_slice(&empty_frame(role, first));
        }
    }
    let flood_len = input.len();
    input.extend_from_slice(rest);
    // The leftover covers part of the flood (if any) and `split` bytes of the input.
    let split = (flood_len / 2 + usize::from((control >> 2) & 0x1f) * 4).min(input.len());
    let (leftover, stream) = input.split_at(split);
    futures::executor::block_on(async {
        let mut conn = Connection::new(
            common::Mem::new(stream),
            role,
            FrameLimits::default(),
            leftover,
        );
        if let Err(error) = common::drain(&mut conn, message_api).await {
            // Errors carry a FrameError when the framing is at fault; every later call fails.
            if let Some(frame_error) = FrameError::from_io(&error) {
                assert!(matches!(
                    frame_error.close_code(),
                    1002 | 1007 | 1009 | 1011
                ));
            }
            assert!(conn.write_all(b"after").await.is_err());
        }
        let _ = conn.close().await;
    });
});
