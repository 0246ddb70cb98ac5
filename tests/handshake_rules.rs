//! The HTTP upgrade's rules, tested with raw peers over 127.0.0.1: bytes sent right behind the
//! request or the response are kept (issue 11, item 5). Each test prints its figures
//! (`--nocapture`).

mod common;

use std::time::Duration;

use async_std::net::TcpStream;
#[allow(unused_imports)]
use common::{raw::*, *};
use futures::AsyncReadExt;
use libp2p_ws::Config;

// Not yet instantiated per runtime: these tests run on async-std.
async_std_only!();

/// Every case of a table-driven test must finish within this.
const CASE: Duration = Duration::from_secs(5);

// ----- item 5: bytes behind the request head -------------------------------------------------------

#[test]
fn frames_sent_in_the_same_write_as_the_request_are_not_lost() {
    run(async {
        let mut server = Server::plain(Config::default()).await;
        let ping = frame(true, 0, 9, Some(MASK), b"early ping");
        let data = frame(true, 0, 2, Some(MASK), b"early data, in two pieces");

        // A ping right behind the request: it is answered.
        case("request + ping", CASE, async {
            let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
            raw.send(&[UPGRADE_REQUEST, &ping].concat()).await.unwrap();
            let head = raw.read_head().await.unwrap();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let mut conn = server.next_ok().await;
            // Our side reads (the pong goes out while it does); the raw peer waits for the pong.
            let mut buf = [0u8; 8];
            let read = conn.read(&mut buf);
            let pong = raw.read_frame();
            futures::pin_mut!(read, pong);
            let pong = match futures::future::select(read, pong).await {
                futures::future::Either::Right((pong, _)) => pong.expect("pong"),
                futures::future::Either::Left((r, _)) => panic!("read returned first: {r:?}"),
            };
            println!(
                "figure: a ping sent in the same write as the request was answered: opcode {}, payload {:?}",
                pong.opcode,
                String::from_utf8_lossy(&pong.payload)
            );
            assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"early ping"[..]));
        })
        .await;

        // Half a data frame behind the request, the rest later: the frame is read whole.
        case("request + half a frame", CASE, async {
            let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
            let (first, second) = data.split_at(data.len() / 2);
            raw.send(&[UPGRADE_REQUEST, first].concat()).await.unwrap();
            let head = raw.read_head().await.unwrap();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let mut conn = server.next_ok().await;
            raw.send(second).await.unwrap();
            let mut got = vec![0u8; 25];
            conn.read_exact(&mut got).await.expect("the frame is read");
            println!(
                "figure: a frame split {}+{} bytes around the upgrade was read as {:?}",
                first.len(),
                second.len(),
                String::from_utf8_lossy(&got)
            );
            assert_eq!(got, b"early data, in two pieces");
        })
        .await;

        // A whole data frame and a ping behind the request: both handled, in order.
        case("request + data + ping", CASE, async {
            let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
            raw.send(&[UPGRADE_REQUEST, &data, &ping].concat())
                .await
                .unwrap();
            raw.read_head().await.unwrap();
            let mut conn = server.next_ok().await;
            let mut got = vec![0u8; 25];
            conn.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"early data, in two pieces");
            let mut buf = [0u8; 8];
            let read = conn.read(&mut buf);
            let pong = raw.read_frame();
            futures::pin_mut!(read, pong);
            match futures::future::select(read, pong).await {
                futures::future::Either::Right((pong, _)) => assert_eq!(pong.unwrap().opcode, 10),
                futures::future::Either::Left((r, _)) => panic!("read returned first: {r:?}"),
            }
        })
        .await;
    });
}

#[test]
fn the_dialer_keeps_frames_sent_with_the_101_response() {
    run(async {
        let (listener, addr) = raw_listener().await;
        let (raw, conn) = futures::join!(
            raw_accept_edited(&listener, |response| {
                // The server's first frame rides in the same write as its response.
                [response.as_bytes(), &frame(true, 0, 2, None, b"hello")].concat()
            }),
            dial(Config::default(), addr)
        );
        let mut conn = conn.expect("dial succeeds");
        let mut got = [0u8; 5];
        conn.read_exact(&mut got).await.unwrap();
        println!(
            "figure: dialer read {:?} sent with the 101",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(&got, b"hello");
        drop(raw);
    });
}
