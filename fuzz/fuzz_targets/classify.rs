//! The first-bytes classifier of port sharing: `classify` on arbitrary bytes, fed whole and one
//! byte at a time, must never panic, decide within `MAX_PREFIX` bytes, and never change its mind
//! once it decided (the transport stops reading at the first decision).
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p_ws::classify::{classify, Class, Verdict, MAX_PREFIX, MULTISTREAM_HEADER};

fuzz_target!(|data: &[u8]| {
    let mut decided = None;
    for n in 0..=data.len() {
        let verdict = classify(&data[..n]);
        match (decided, verdict) {
            (None, Verdict::NeedMore) => {
                assert!(n < MAX_PREFIX, "undecided after {n} bytes: {:?}", &data[..n]);
            }
            (None, verdict) => decided = Some(verdict),
            (Some(first), verdict) => assert_eq!(first, verdict, "changed its mind at {n} bytes"),
        }
    }
    match decided {
        Some(Verdict::Known(Class::Tcp)) => assert!(data.starts_with(MULTISTREAM_HEADER)),
        Some(Verdict::Known(Class::Tls)) => assert_eq!(&data[..2], &[0x16, 0x03]),
        Some(Verdict::Known(Class::Http)) => assert!(data[0].is_ascii_uppercase() && data.contains(&b' ')),
        _ => {}
    }
});
