//! The reverse-proxy parsers: `parse_proxy_header` (PROXY protocol v1 and v2) on arbitrary bytes,
//! fed the way the transport reads (exactly the bytes it asks for), must never panic, ask for at
//! least one byte at a time, never ask past `MAX_PROXY_HEADER`, and agree with a parse of the
//! whole input; `client_from_headers` on arbitrary header lines must never panic and only name
//! an address that appears in the input's hops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p_ws::{
    forwarded::{client_from_headers, parse_proxy_header, HeaderSources, ProxyParse, MAX_PROXY_HEADER},
    proxy::IpNet,
};

fuzz_target!(|data: &[u8]| {
    // PROXY protocol, incrementally.
    let mut have = 0;
    let incremental = loop {
        match parse_proxy_header(&data[..have]) {
            Ok(ProxyParse::NeedMore(n)) => {
                assert!(n > 0, "asked for nothing");
                assert!(have + n <= MAX_PROXY_HEADER, "asked past the limit");
                if have + n > data.len() {
                    break None;
                }
                have += n;
            }
            other => break Some(other),
        }
    };
    if let Some(Ok(ProxyParse::Done { len, .. })) = incremental {
        assert_eq!(len, have, "the header ends where the reads ended");
        assert_eq!(parse_proxy_header(&data[..len]), incremental.clone().unwrap());
    }
    if let Some(Ok(ProxyParse::NotProxy)) = incremental {
        assert!(have <= 12, "NotProxy decided after more than the signature's 12 bytes");
    }

    // Forwarding headers: the input's lines as `name: value`, the first byte choosing the sources
    // and whether 10.0.0.0/8 is trusted.
    let Some((&flags, rest)) = data.split_first() else { return };
    let lines: Vec<(&str, &[u8])> = rest
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, line[colon + 1..].trim_ascii()))
        })
        .collect();
    let sources = match flags & 3 {
        0 => HeaderSources::none(),
        1 => HeaderSources::forwarded(),
        2 => HeaderSources::x_forwarded_for(),
        _ => HeaderSources::x_real_ip(),
    };
    let trusted: Vec<IpNet> = if flags & 8 != 0 { vec!["10.0.0.0/8".parse().unwrap()] } else { vec![] };
    if let Ok(Some(client)) = client_from_headers(lines.iter().copied(), &trusted, sources) {
        let text = String::from_utf8_lossy(rest).to_ascii_lowercase();
        // RFC 7239 quoted pairs (`for="1.2\.3.4"`) are unescaped by the parser: compare with the
        // text without its backslashes too.
        let unescaped = text.replace('\\', "");
        let shown = client.ip.to_string();
        assert!(
            text.contains(&shown)
                || unescaped.contains(&shown)
                || client.ip.is_ipv6()
                || client.ip.to_canonical() != client.ip,
            "named {shown}, which is not in the input"
        );
    }
});
