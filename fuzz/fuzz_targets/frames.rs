//! The frame reader: `Connection::new(io, role, FrameLimits::default(), leftover)` reading frames
//! from the fuzz input. The first byte picks the role, the API (byte stream or messages), and how
//! much of the input is handed over as `leftover`; writes (pongs, close replies) go to a sink.
#![no_main]

#[path = "common.rs"]
mod common;

use futures::AsyncWriteExt;
use libfuzzer_sys::fuzz_target;
use libp2p_ws::{Connection, FrameError, FrameLimits, Role};

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
    let split = (usize::from(control >> 2) * 4).min(rest.len());
    let (leftover, stream) = rest.split_at(split);
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
