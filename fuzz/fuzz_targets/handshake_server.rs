//! The server side of the HTTP upgrade (`unstable::accept`) reading a request from the fuzz
//! input; on success, the frame reader (`Role::Server`) reads the rest, starting with the bytes read
//! past the request head (the leftover `accept` returns).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use libp2p_ws::{Connection, FrameLimits, Role, DEFAULT_MAX_HEAD_SIZE};

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut io = common::Mem::new(data);
        let max_head = 256 + data.first().map_or(0, |b| usize::from(*b) * 31);
        let max_head = max_head.min(DEFAULT_MAX_HEAD_SIZE);
        // Bytes the input has right behind the request head are the start of the frame stream.
        if let Ok(leftover) = libp2p_ws::unstable::accept(&mut io, max_head, "/").await {
            let mut conn = Connection::new(io, Role::Server, FrameLimits::default(), &leftover);
            let _ = common::drain(&mut conn, data.len().is_multiple_of(2)).await;
        }
    });
});
