use std::collections::HashMap;

use futures::executor::block_on;

use super::*;

/// A fake DNS: name -> TXT records (strings).
fn zone(records: &[(&str, &[&str])]) -> HashMap<String, Vec<Vec<u8>>> {
    records
        .iter()
        .map(|(name, txts)| {
            (
                format!("_dnsaddr.{name}"),
                txts.iter().map(|t| t.as_bytes().to_vec()).collect(),
            )
        })
        .collect()
}

fn resolve(
    zone: &HashMap<String, Vec<Vec<u8>>>,
    addr: &str,
    config: &DnsConfig,
) -> (Result<Vec<String>, DnsaddrError>, Vec<String>) {
    let mut asked = Vec::new();
    let result = block_on(resolve_dnsaddr(&addr.parse().unwrap(), config, |name| {
        asked.push(name.clone());
        let answer = zone
            .get(&name)
            .cloned()
            .ok_or(LookupError::NoRecords { name, kind: "TXT" });
        async move { answer }
    }));
    (
        result.map(|v| v.iter().map(|a| a.to_string()).collect()),
        asked,
    )
}

const A: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
const B: &str = "12D3KooWHQUG8dGtq6ftKeYygz5L2ydsRgTQTXBRA8BuVJqDJvmz";

#[test]
fn direct_entries_in_record_order_and_other_txt_ignored() {
    let z = zone(&[(
        "boot.test",
        &[
            "dnsaddr=/ip4/127.0.0.1/tcp/1/ws",
            "v=spf1 -all",
            "dnsaddr=/dns4/node.test/tcp/2/tls/ws",
        ],
    )]);
    let (result, asked) = resolve(&z, "/dnsaddr/boot.test", &DnsConfig::default());
    assert_eq!(
        result.unwrap(),
        ["/ip4/127.0.0.1/tcp/1/ws", "/dns4/node.test/tcp/2/tls/ws"]
    );
    assert_eq!(asked, ["_dnsaddr.boot.test"]);
}

#[test]
fn nested_two_levels_and_the_peer_filter() {
    let z = zone(&[
        (
            "boot.test",
            &[
                &format!("dnsaddr=/dnsaddr/a.boot.test/p2p/{A}"),
                &format!("dnsaddr=/dnsaddr/b.boot.test/p2p/{B}"),
            ],
        ),
        (
            "a.boot.test",
            &[&format!("dnsaddr=/dnsaddr/aa.boot.test/p2p/{A}")],
        ),
        (
            "aa.boot.test",
            &[&format!("dnsaddr=/ip4/127.0.0.1/tcp/1/ws/p2p/{A}")],
        ),
        (
            "b.boot.test",
            &[&format!("dnsaddr=/ip4/127.0.0.1/tcp/2/ws/p2p/{B}")],
        ),
    ]);
    let (all, _) = resolve(&z, "/dnsaddr/boot.test", &DnsConfig::default());
    assert_eq!(
        all.unwrap(),
        [
            format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{A}"),
            format!("/ip4/127.0.0.1/tcp/2/ws/p2p/{B}")
        ]
    );
    let (only_b, asked) = resolve(
        &z,
        &format!("/dnsaddr/boot.test/p2p/{B}"),
        &DnsConfig::default(),
    );
    assert_eq!(
        only_b.unwrap(),
        [format!("/ip4/127.0.0.1/tcp/2/ws/p2p/{B}")]
    );
    assert_eq!(asked, ["_dnsaddr.boot.test", "_dnsaddr.b.boot.test"]);
    let other = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE";
    let (none, _) = resolve(
        &z,
        &format!("/dnsaddr/boot.test/p2p/{other}"),
        &DnsConfig::default(),
    );
    assert!(
        matches!(none, Err(DnsaddrError::NoMatchingPeer { .. })),
        "{none:?}"
    );
}

#[test]
fn loops_depth_and_record_count_are_bounded() {
    let z = zone(&[
        ("a.test", &["dnsaddr=/dnsaddr/b.test"]),
        ("b.test", &["dnsaddr=/dnsaddr/a.test"]),
    ]);
    let (result, asked) = resolve(&z, "/dnsaddr/a.test", &DnsConfig::default());
    assert_eq!(
        result,
        Err(DnsaddrError::Loop {
            name: "a.test".into()
        })
    );
    assert_eq!(asked.len(), 2);

    let chain: Vec<(String, Vec<String>)> = (0..10)
        .map(|i| {
            (
                format!("l{i}.test"),
                vec![format!("dnsaddr=/dnsaddr/l{}.test", i + 1)],
            )
        })
        .collect();
    let chain: Vec<(&str, Vec<&str>)> = chain
        .iter()
        .map(|(n, r)| (n.as_str(), r.iter().map(String::as_str).collect()))
        .collect();
    let chain: Vec<(&str, &[&str])> = chain.iter().map(|(n, r)| (*n, r.as_slice())).collect();
    let z = zone(&chain);
    let (result, asked) = resolve(&z, "/dnsaddr/l0.test", &DnsConfig::default());
    assert_eq!(
        result,
        Err(DnsaddrError::TooDeep {
            name: "l4.test".into(),
            limit: 4
        })
    );
    assert_eq!(asked.len(), 4, "{asked:?}");
    let (_, asked) = resolve(
        &z,
        "/dnsaddr/l0.test",
        &DnsConfig::default().with_max_dnsaddr_depth(2),
    );
    assert_eq!(asked.len(), 2);

    let many: Vec<String> = (0..65)
        .map(|i| format!("dnsaddr=/ip4/127.0.0.1/tcp/{}/ws", i + 1))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let z = zone(&[("many.test", &many)]);
    let (result, _) = resolve(&z, "/dnsaddr/many.test", &DnsConfig::default());
    assert_eq!(
        result,
        Err(DnsaddrError::TooManyRecords {
            name: "many.test".into(),
            limit: 64
        })
    );
    let (result, _) = resolve(
        &z,
        "/dnsaddr/many.test",
        &DnsConfig::default().with_max_dnsaddr_records(65),
    );
    assert_eq!(result.unwrap().len(), 65);
}

#[test]
fn junk_beside_a_good_entry_is_skipped_and_all_junk_is_an_error() {
    let long = format!("dnsaddr=/dns4/{}/tcp/1/ws", "a".repeat(MAX_TXT_RECORD_LEN));
    let z = zone(&[
        (
            "mixed.test",
            &[
                "dnsaddr=not a multiaddr",
                "dnsaddr=/ip4/127.0.0.1/tcp/1/ws",
                &long,
            ],
        ),
        (
            "junk.test",
            &[
                "dnsaddr=/ip4/999.0.0.1/tcp/1",
                "dnsaddr=",
                "dnsaddr=/dnsaddr/x.test/tcp/1",
            ],
        ),
        ("none.test", &["v=spf1 -all"]),
    ]);
    let (ok, _) = resolve(&z, "/dnsaddr/mixed.test", &DnsConfig::default());
    assert_eq!(ok.unwrap(), ["/ip4/127.0.0.1/tcp/1/ws"]);
    let (junk, _) = resolve(&z, "/dnsaddr/junk.test", &DnsConfig::default());
    assert_eq!(
        junk,
        Err(DnsaddrError::Malformed {
            name: "junk.test".into(),
            count: 3
        })
    );
    let (none, _) = resolve(&z, "/dnsaddr/none.test", &DnsConfig::default());
    assert!(matches!(none, Err(DnsaddrError::Lookup { .. })), "{none:?}");
    let (missing, _) = resolve(&z, "/dnsaddr/missing.test", &DnsConfig::default());
    assert!(
        matches!(
            &missing,
            Err(DnsaddrError::Lookup {
                source: LookupError::NoRecords { .. },
                ..
            })
        ),
        "{missing:?}"
    );
    let (bad, asked) = resolve(&z, "/dnsaddr/mixed.test/tcp/1", &DnsConfig::default());
    assert!(matches!(bad, Err(DnsaddrError::NotDnsaddr(_))), "{bad:?}");
    assert!(asked.is_empty());
}
