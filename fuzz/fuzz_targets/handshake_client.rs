//! The client side of the HTTP upgrade (`unstable::connect`) reading the server's response
//! from the fuzz input (`{ACCEPT}` in the input is replaced by the right `Sec-WebSocket-Accept`, so
//! that upgrades can succeed); on success, the frame reader (`Role::Client`) reads the rest,
//! starting with the bytes read past the head.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use libp2p_ws::{Connection, FrameLimits, Role, DEFAULT_MAX_HEAD_SIZE};

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut io = common::Mem::new(data);
        io.substitute_accept = true;
        let max_head = DEFAULT_MAX_HEAD_SIZE;
        let result =
            libp2p_ws::unstable::connect(&mut io, max_head, "example.com", "/a?b").await;
        assert!(
            io.written.starts_with(b"GET /a?b HTTP/1.1\r\n"),
            "request line"
        );
        if let Ok(leftover) = result {
            let mut conn = Connection::new(io, Role::Client, FrameLimits::default(), &leftover);
            let _ = common::drain(&mut conn, data.len().is_multiple_of(2)).await;
        }
    });
});
