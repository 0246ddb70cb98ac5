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

// The rules by topic, in files of their own under `tests/`, included here so that the tests keep
// their names: the receiving side, then the sending side (and the keep-alive on simulated time).
include!("tests/receiving.rs");
include!("tests/sending.rs");
