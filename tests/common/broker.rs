//! An AutoTLS registration broker for the tests, as libp2p.direct's works: `POST
//! /v1/_acme-challenge` over TLS (a certificate for `localhost` from pebble's directory CA),
//! Peer ID authentication (libp2p spec `http/peer-id-auth.md`, server-initiated), a libp2p dial
//! back to the addresses the node sent with the peer id it authenticated, and the TXT record
//! `_acme-challenge.<base36 peer id>.libp2p.direct` set through pebble-challtestsrv.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::StreamExt;
use futures_rustls::rustls::{self, ServerConfig};
use libp2p::{
    identity::{Keypair, PublicKey},
    swarm::SwarmEvent,
    Multiaddr, PeerId,
};
use libp2p_ws::acme::base36_peer_id;

use super::{pebble::Pebble, ping_swarm, AsyncStd};

/// What the broker saw.
#[derive(Default)]
pub struct Seen {
    /// Registrations that passed the authentication and the dial-back, by peer.
    pub registered: Mutex<Vec<PeerId>>,
    /// Authenticated requests refused (a signature that does not verify).
    pub refused: AtomicUsize,
}

/// A running broker; its threads stop when dropped.
pub struct Broker {
    /// Its base URL (`https://localhost:<port>`).
    pub url: String,
    /// What it saw.
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct State {
    key: Keypair,
    /// The host name the broker checks signatures against (its TLS name).
    hostname: String,
    challenges: Mutex<HashSet<String>>,
    pebble_dns_management: std::net::SocketAddr,
    seen: Arc<Seen>,
}

impl Broker {
    /// Starts a broker whose certificate pebble's directory CA signed (trusted with
    /// `--acme-ca`), checking the node's signatures against `hostname` (`localhost`, the
    /// name the node connects to; another name makes every authentication fail).
    pub fn start(pebble: &Pebble, hostname: &str) -> Broker {
        let (chain, key) = pebble.ca.issue(&["localhost"]).expect("issue");
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let state = Arc::new(State {
            key: Keypair::generate_ed25519(),
            hostname: hostname.to_string(),
            challenges: Mutex::new(HashSet::new()),
            pebble_dns_management: pebble.dns_management,
            seen: seen.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, state) = (config.clone(), state.clone());
                        std::thread::spawn(move || serve(tcp, config, &state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Broker {
            url: format!("https://localhost:{port}"),
            seen,
            stop,
        }
    }
}

/// One request per connection.
fn serve(tcp: TcpStream, config: Arc<ServerConfig>, state: &State) {
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tcp = tcp;
    let mut tls = rustls::ServerConnection::new(config).expect("server");
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let Some((head, body)) = read_request(&mut stream) else {
        return;
    };
    let (status, headers, text) = respond(state, &head, &body);
    let mut response = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        text.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&text);
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

fn read_request(stream: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_string();
            let len: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < at + 4 + len {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[at + 4..at + 4 + len].to_vec()));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The `libp2p-PeerID` parameters of a header value.
fn params(value: &str) -> Vec<(String, String)> {
    let rest = value.trim().strip_prefix("libp2p-PeerID").unwrap_or("");
    rest.split(',')
        .filter_map(|part| {
            let (name, value) = part.trim().split_once('=')?;
            Some((
                name.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL
        .decode(text.as_bytes())
        .or_else(|_| data_encoding::BASE64URL_NOPAD.decode(text.as_bytes()))
        .ok()
}

/// The spec's signed data: "libp2p-PeerID", then each sorted `name=value` with its varint length.
fn to_sign(mut params: Vec<(&str, Vec<u8>)>) -> Vec<u8> {
    params.sort_by(|a, b| a.0.cmp(b.0));
    let mut data = b"libp2p-PeerID".to_vec();
    for (name, value) in params {
        let mut item = format!("{name}=").into_bytes();
        item.extend_from_slice(&value);
        let mut len = item.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                data.push(byte);
                break;
            }
            data.push(byte | 0x80);
        }
        data.extend_from_slice(&item);
    }
    data
}

fn challenge(state: &State) -> (String, Vec<(String, String)>, String) {
    let challenge = b64(&rand::random::<[u8; 32]>());
    state.challenges.lock().unwrap().insert(challenge.clone());
    let www = format!(
        r#"libp2p-PeerID challenge-client="{challenge}", public-key="{}", opaque="{challenge}""#,
        b64(&state.key.public().encode_protobuf())
    );
    (
        "401 Unauthorized".into(),
        vec![("WWW-Authenticate".into(), www)],
        String::new(),
    )
}

fn respond(state: &State, head: &str, body: &[u8]) -> (String, Vec<(String, String)>, String) {
    if !head.starts_with("POST /v1/_acme-challenge ") {
        return ("404 Not Found".into(), vec![], "not here".into());
    }
    let Some(authorization) = header(head, "authorization") else {
        return challenge(state);
    };
    let auth = params(authorization);
    let (Some(client_key), Some(opaque), Some(challenge_server), Some(sig)) = (
        param(&auth, "public-key").and_then(unb64),
        param(&auth, "opaque"),
        param(&auth, "challenge-server"),
        param(&auth, "sig").and_then(unb64),
    ) else {
        return challenge(state);
    };
    let known = state.challenges.lock().unwrap().remove(opaque);
    let Ok(client) = PublicKey::try_decode_protobuf(&client_key) else {
        return ("400 Bad Request".into(), vec![], "bad public key".into());
    };
    // What go-libp2p's server verifies in the server-initiated flow (and the spec's example).
    let signed = to_sign(vec![
        ("challenge-client", opaque.as_bytes().to_vec()),
        ("hostname", state.hostname.as_bytes().to_vec()),
    ]);
    if !known || !client.verify(&signed, &sig) {
        state.seen.refused.fetch_add(1, Ordering::SeqCst);
        return challenge(state);
    }
    let peer = client.to_peer_id();
    let body: serde_json::Value = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(_) => return ("400 Bad Request".into(), vec![], "not JSON".into()),
    };
    let value = body["value"].as_str().unwrap_or_default().to_string();
    let addresses: Vec<Multiaddr> = body["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if !dial_back(peer, &addresses) {
        return (
            "400 Bad Request".into(),
            vec![],
            "could not dial the peer back".into(),
        );
    }
    let host = format!("_acme-challenge.{}.libp2p.direct", base36_peer_id(&peer));
    set_txt(state.pebble_dns_management, &host, &value);
    state.seen.registered.lock().unwrap().push(peer);
    let server_sig = state
        .key
        .sign(&to_sign(vec![
            ("challenge-server", challenge_server.as_bytes().to_vec()),
            ("client-public-key", client_key.clone()),
            ("hostname", state.hostname.as_bytes().to_vec()),
        ]))
        .expect("sign");
    let info = format!(
        r#"libp2p-PeerID sig="{}", bearer="{}""#,
        b64(&server_sig),
        b64(peer.to_bytes().as_slice())
    );
    (
        "200 OK".into(),
        vec![("Authentication-Info".into(), info)],
        String::new(),
    )
}

/// Dials `peer` at `addresses` with a libp2p swarm (noise proves the peer id); true once a
/// connection to that peer is established.
fn dial_back(peer: PeerId, addresses: &[Multiaddr]) -> bool {
    if addresses.is_empty() {
        return false;
    }
    let addresses = addresses.to_vec();
    async_std::task::block_on(async move {
        let mut swarm = ping_swarm::<AsyncStd>(libp2p_ws::Config::default());
        for addr in addresses {
            let _ = swarm.dial(
                libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .build(),
            );
        }
        let wait = async {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                    swarm.select_next_some().await
                {
                    if peer_id == peer {
                        return true;
                    }
                }
            }
        };
        async_std::future::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or(false)
    })
}

fn set_txt(management: std::net::SocketAddr, host: &str, value: &str) {
    let body = format!(r#"{{"host":"{host}.","value":"{value}"}}"#);
    let mut tcp = TcpStream::connect(management).expect("challtestsrv management");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        tcp,
        "POST /set-txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "set-txt: {answer}");
}
