//! The client half of libp2p's Peer ID authentication over HTTP (libp2p spec
//! `http/peer-id-auth.md`, the `libp2p-PeerID` scheme), server-initiated: the server's 401
//! carries `challenge-client`, its `public-key` and an `opaque` value; the client answers with
//! its public key, the opaque value, a `challenge-server` of its own and its signature; the
//! server's `Authentication-Info` carries its signature and a bearer token. Pure: no IO.

use data_encoding::{BASE64, BASE64URL, BASE64URL_NOPAD, BASE64_NOPAD};
use libp2p_identity::{Keypair, PublicKey};

/// The scheme's name, and the prefix of every signed message.
pub(crate) const SCHEME: &str = "libp2p-PeerID";

/// The data a peer signs: the scheme's name, then each `name=value` parameter (sorted by name)
/// prefixed by its length as an unsigned varint.
pub(crate) fn data_to_sign(params: &[(&str, &[u8])]) -> Vec<u8> {
    let mut params = params.to_vec();
    params.sort_by(|a, b| a.0.cmp(b.0));
    let mut data = SCHEME.as_bytes().to_vec();
    for (name, value) in params {
        let len = name.len() + 1 + value.len();
        let mut buf = unsigned_varint::encode::usize_buffer();
        data.extend_from_slice(unsigned_varint::encode::usize(len, &mut buf));
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value);
    }
    data
}

/// The parameters of a `libp2p-PeerID` header (`WWW-Authenticate`, `Authentication-Info`):
/// `name="value"` pairs separated by commas (or spaces), after the scheme's name. `None` when
/// the header is of another scheme.
pub(crate) fn parse_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix(SCHEME)?;
    let mut params = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            value = quoted[..end].to_string();
            rest = &quoted[end + 1..];
        } else {
            let end = rest
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        params.push((name, value));
    }
    Some(params)
}

/// The value of `name` in `params`.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// base64 as the spec allows it: URL-safe (what peers send) or standard, padded or not.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    [BASE64URL, BASE64URL_NOPAD, BASE64, BASE64_NOPAD]
        .iter()
        .find_map(|encoding| encoding.decode(text.as_bytes()).ok())
}

/// base64url with padding, as go-libp2p writes signatures.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// The client's answer to the server's challenge: the `Authorization` header's value, and the
/// `challenge-server` it sent (to check the server's signature with).
pub(crate) struct ClientAnswer {
    pub(crate) authorization: String,
    pub(crate) challenge_server: String,
    pub(crate) server_key: PublicKey,
}

/// Why an authentication failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// A header is missing, of another scheme, or without a parameter it needs.
    Malformed(&'static str),
    /// The server's public key or signature does not decode, or its signature is wrong.
    BadServerSignature,
}

/// Answers a `WWW-Authenticate: libp2p-PeerID challenge-client=..., public-key=..., opaque=...`
/// from the server at `hostname` (its TLS server name) with `keypair`'s signature over
/// `challenge-client` and `hostname`. That is what go-libp2p (the libp2p.direct broker's
/// implementation) signs and verifies in this server-initiated flow, and what the spec's
/// worked example shows; its prose also lists `server-public-key`, which go-libp2p signs only
/// in the client-initiated flow (after it has verified the server). `challenge_server` is the
/// client's random challenge for the server.
pub(crate) fn answer_challenge(
    keypair: &Keypair,
    hostname: &str,
    www_authenticate: &str,
    challenge_server: String,
) -> Result<ClientAnswer, AuthFailure> {
    let params =
        parse_params(www_authenticate).ok_or(AuthFailure::Malformed("WWW-Authenticate"))?;
    let challenge_client =
        param(&params, "challenge-client").ok_or(AuthFailure::Malformed("challenge-client"))?;
    let server_key_b64 =
        param(&params, "public-key").ok_or(AuthFailure::Malformed("public-key"))?;
    let opaque = param(&params, "opaque").ok_or(AuthFailure::Malformed("opaque"))?;
    let server_key_bytes =
        decode_base64(server_key_b64).ok_or(AuthFailure::Malformed("public-key"))?;
    let server_key = PublicKey::try_decode_protobuf(&server_key_bytes)
        .map_err(|_| AuthFailure::Malformed("public-key"))?;
    let data = data_to_sign(&[
        ("challenge-client", challenge_client.as_bytes()),
        ("hostname", hostname.as_bytes()),
    ]);
    let sig = keypair
        .sign(&data)
        .map_err(|_| AuthFailure::Malformed("the key cannot sign"))?;
    let authorization = format!(
        r#"{SCHEME} public-key="{}", opaque="{opaque}", challenge-server="{challenge_server}", sig="{}""#,
        encode_base64(&keypair.public().encode_protobuf()),
        encode_base64(&sig),
    );
    Ok(ClientAnswer {
        authorization,
        challenge_server,
        server_key,
    })
}

/// Checks the server's `Authentication-Info` (its signature over `challenge-server`,
/// `client-public-key` and `hostname`) and returns its bearer token.
pub(crate) fn check_server(
    answer: &ClientAnswer,
    client: &PublicKey,
    hostname: &str,
    authentication_info: &str,
) -> Result<Option<String>, AuthFailure> {
    let params =
        parse_params(authentication_info).ok_or(AuthFailure::Malformed("Authentication-Info"))?;
    let sig = param(&params, "sig")
        .and_then(decode_base64)
        .ok_or(AuthFailure::BadServerSignature)?;
    let data = data_to_sign(&[
        ("challenge-server", answer.challenge_server.as_bytes()),
        ("client-public-key", &client.encode_protobuf()),
        ("hostname", hostname.as_bytes()),
    ]);
    if !answer.server_key.verify(&data, &sig) {
        return Err(AuthFailure::BadServerSignature);
    }
    Ok(param(&params, "bearer").map(str::to_string))
}

/// A random `challenge-server`: 32 random bytes, base64 (the spec's example length).
pub(crate) fn random_challenge() -> String {
    let bytes: [u8; 32] = rand::random();
    BASE64.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex: &str) -> Keypair {
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap();
        Keypair::from_protobuf_encoding(&bytes).unwrap()
    }

    const SERVER: &str = "0801124001010101010101010101010101010101010101010101010101010101010101018a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    const CLIENT: &str = "0801124002020202020202020202020202020202020202020202020202020202020202028139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";

    #[test]
    fn the_signing_example_of_the_spec() {
        // "Signing Example": the server signs challenge-server, client-public-key, hostname.
        let client = key(CLIENT).public().encode_protobuf();
        let data = data_to_sign(&[
            ("hostname", b"example.com"),
            (
                "challenge-server",
                b"ERERERERERERERERERERERERERERERERERERERERERE=",
            ),
            ("client-public-key", &client),
        ]);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&data),
            "6c69627032702d5065657249443d6368616c6c656e67652d7365727665723d455245524552455245524552455245524552455245524552455245524552455245524552455245524552453d36636c69656e742d7075626c69632d6b65793d080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39414686f73746e616d653d6578616d706c652e636f6d"
        );
        let sig = key(SERVER).sign(&data).unwrap();
        assert_eq!(
            encode_base64(&sig),
            "UA88qZbLUzmAxrD9KECbDCgSKAUBAvBHrOCF2X0uPLR1uUCF7qGfLPc7dw3Olo-LaFCDpk5sXN7TkLWPVvuXAA=="
        );
    }

    #[test]
    fn the_server_initiated_handshake_of_the_spec() {
        let www = r#"libp2p-PeerID challenge-client="ERERERERERERERERERERERERERERERERERERERERERE=", public-key="CAESIIqI4910CfGV_VLbLTy6XXLKZwm_HZQSG_N0iAG0D29c", opaque="0H1Y9sq1zrfTJZCCTcTymI2tV_TF9-PzdMip2dFkiqZ7ImNoYWxsZW5nZS1jbGllbnQiOiJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFPSIsImhvc3RuYW1lIjoiZXhhbXBsZS5jb20iLCJjcmVhdGVkLXRpbWUiOiIxOTY5LTEyLTMxVDE2OjAwOjAwLTA4OjAwIn0=""#;
        let client = key(CLIENT);
        let answer = answer_challenge(
            &client,
            "example.com",
            www,
            "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMz".into(),
        )
        .unwrap();
        let params = parse_params(&answer.authorization).unwrap();
        assert_eq!(
            param(&params, "public-key"),
            Some("CAESIIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU")
        );
        assert_eq!(
            param(&params, "sig"),
            Some("5RT0BbFdn-hMgE4pQ_GH9tnlKpptGUQZvkh8kVLbwy81Rzli_vfiNOsuGTcMk8lyUfkmTFmk79b5XUZCR3-RBw==")
        );
        assert_eq!(
            param(&params, "challenge-server"),
            Some("MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMz")
        );
        assert!(param(&params, "opaque").unwrap().starts_with("0H1Y9sq1"));

        let info = r#"libp2p-PeerID sig="HQ7BJRaSpRhNCORNiALNJENdwXUyq0eM2cxNoxe-XnQw6oEAMaeYnjMYaHHjgq0XNxZmy4W2ngKUcI1CgprLCQ==", bearer="YhlYjHWTMOkTleROtjMiChL7Mx15", public-key="CAESIIqI4910CfGV_VLbLTy6XXLKZwm_HZQSG_N0iAG0D29c""#;
        let bearer = check_server(&answer, &client.public(), "example.com", info).unwrap();
        assert_eq!(bearer.as_deref(), Some("YhlYjHWTMOkTleROtjMiChL7Mx15"));
        // Another host name, or a changed signature, does not verify.
        assert_eq!(
            check_server(&answer, &client.public(), "example.org", info),
            Err(AuthFailure::BadServerSignature)
        );
        let forged = info.replace("HQ7B", "HQ7C");
        assert_eq!(
            check_server(&answer, &client.public(), "example.com", &forged),
            Err(AuthFailure::BadServerSignature)
        );
    }

    #[test]
    fn malformed_challenges_are_refused() {
        let client = key(CLIENT);
        for www in [
            "Basic realm=x",
            r#"libp2p-PeerID public-key="CAESIIqI4910CfGV_VLbLTy6XXLKZwm_HZQSG_N0iAG0D29c", opaque="x""#,
            r#"libp2p-PeerID challenge-client="c", opaque="x""#,
            r#"libp2p-PeerID challenge-client="c", public-key="!!", opaque="x""#,
            r#"libp2p-PeerID challenge-client="c", public-key="CAESIIqI4910CfGV_VLbLTy6XXLKZwm_HZQSG_N0iAG0D29c""#,
        ] {
            assert!(
                matches!(
                    answer_challenge(&client, "h", www, "s".into()),
                    Err(AuthFailure::Malformed(_))
                ),
                "{www}"
            );
        }
        assert!(random_challenge() != random_challenge());
    }
}
