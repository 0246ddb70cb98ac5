//! Multiaddr parsing: `WsAddr::parse` / `parse_listen` on arbitrary multiaddrs, and printing back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p_core::Multiaddr;
use libp2p_ws::addr::WsAddr;

fuzz_target!(|data: &[u8]| {
    // Binary multiaddrs reach every protocol code; text ones reach the string parsers.
    let addrs = [
        Multiaddr::try_from(data.to_vec()).ok(),
        std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.parse::<Multiaddr>().ok()),
    ];
    for addr in addrs.into_iter().flatten() {
        if let Ok(parsed) = WsAddr::parse(&addr) {
            // Whatever parses prints to a canonical form that parses to the same thing.
            let printed = parsed.to_multiaddr();
            let reparsed = WsAddr::parse(&printed).expect("canonical form parses");
            assert_eq!(reparsed, parsed, "{addr} -> {printed}");
            let _ = parsed.host_header();
            let _ = parsed.request_target();
            let _ = parsed.server_name();
        }
        let _ = WsAddr::parse_listen(&addr);
    }
});
