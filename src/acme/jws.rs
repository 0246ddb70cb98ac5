//! The ACME account key and the JSON Web Signatures (RFC 7515, flattened JSON) that carry every
//! ACME request (RFC 8555 section 6.2): ES256 over P-256, the key given as a JWK before the account
//! exists and by its URL (`kid`) after. Pure: no IO.

use data_encoding::BASE64URL_NOPAD;
use ring::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use serde_json::{json, Value};

/// An ACME account key: ECDSA P-256, kept as PKCS#8 (what the cache stores).
pub(crate) struct AccountKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey")
            .field("thumbprint", &self.thumbprint())
            .finish()
    }
}

impl AccountKey {
    /// A new random key.
    pub(crate) fn generate() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "could not generate a P-256 key".to_string())?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// The key in `pkcs8` (DER).
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        Ok(AccountKey {
            pair,
            pkcs8: pkcs8.to_vec(),
            rng,
        })
    }

    /// The key as PKCS#8 DER.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK (RFC 7517), members in the order RFC 7638 hashes them.
    pub(crate) fn jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y })
    }

    fn coordinates(&self) -> (String, String) {
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.pair.public_key().as_ref();
        (
            BASE64URL_NOPAD.encode(&point[1..33]),
            BASE64URL_NOPAD.encode(&point[33..65]),
        )
    }

    /// The JWK thumbprint (RFC 7638): base64url of the SHA-256 of the JWK's required members,
    /// sorted, without white space. The second half of every key authorization.
    pub(crate) fn thumbprint(&self) -> String {
        let (x, y) = self.coordinates();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        BASE64URL_NOPAD
            .encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The key authorization of a challenge token (RFC 8555 section 8.1).
    pub(crate) fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A signed request body for `url`: with the account's URL (`kid`) once it has one, else the
    /// JWK. `payload` `None` is a POST-as-GET (an empty payload).
    pub(crate) fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, String> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = BASE64URL_NOPAD.encode(protected.to_string().as_bytes());
        let payload = match payload {
            Some(payload) => BASE64URL_NOPAD.encode(payload.to_string().as_bytes()),
            None => String::new(),
        };
        let signature = self
            .pair
            .sign(&self.rng, format!("{protected}.{payload}").as_bytes())
            .map_err(|_| "could not sign".to_string())?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": BASE64URL_NOPAD.encode(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    use super::*;

    fn decode(s: &str) -> Vec<u8> {
        BASE64URL_NOPAD.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn signatures_verify_with_the_jwk_and_carry_the_header() {
        let key = AccountKey::generate().unwrap();
        let body = key
            .sign(
                "https://ca/new-order",
                "n0nce",
                Some("https://ca/acct/1"),
                Some(&json!({"a": 1})),
            )
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let protected: Value =
            serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["alg"], "ES256");
        assert_eq!(protected["nonce"], "n0nce");
        assert_eq!(protected["url"], "https://ca/new-order");
        assert_eq!(protected["kid"], "https://ca/acct/1");
        assert!(protected.get("jwk").is_none());
        let payload: Value =
            serde_json::from_slice(&decode(body["payload"].as_str().unwrap())).unwrap();
        assert_eq!(payload, json!({"a": 1}));

        let jwk = key.jwk();
        let mut point = vec![4u8];
        point.extend(decode(jwk["x"].as_str().unwrap()));
        point.extend(decode(jwk["y"].as_str().unwrap()));
        let signed = format!(
            "{}.{}",
            body["protected"].as_str().unwrap(),
            body["payload"].as_str().unwrap()
        );
        let signature = decode(body["signature"].as_str().unwrap());
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed.as_bytes(), &signature)
            .expect("the signature verifies with the JWK");
        // A changed payload does not verify.
        assert!(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(format!("{signed}x").as_bytes(), &signature)
            .is_err());
    }

    #[test]
    fn before_the_account_the_jwk_and_post_as_get_has_an_empty_payload() {
        let key = AccountKey::generate().unwrap();
        let body: Value =
            serde_json::from_slice(&key.sign("https://ca/x", "n", None, None).unwrap()).unwrap();
        let protected: Value =
            serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["jwk"], key.jwk());
        assert!(protected.get("kid").is_none());
        assert_eq!(body["payload"], "");
    }

    #[test]
    fn the_key_survives_pkcs8_and_the_thumbprint_is_rfc_7638s() {
        let key = AccountKey::generate().unwrap();
        let again = AccountKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(key.jwk(), again.jwk());
        assert_eq!(key.thumbprint(), again.thumbprint());
        // The thumbprint hashes exactly this text (RFC 7638 section 3.3, members sorted).
        let jwk = key.jwk();
        let text = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        assert_eq!(key.thumbprint(), BASE64URL_NOPAD.encode(digest.as_ref()));
        assert_eq!(key.thumbprint().len(), 43);
        assert_eq!(
            key.key_authorization("tok"),
            format!("tok.{}", key.thumbprint())
        );
        assert!(AccountKey::from_pkcs8(b"garbage").is_err());
    }
}
