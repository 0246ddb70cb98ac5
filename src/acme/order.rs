//! One certificate order (RFC 8555 section 7): the directory, a nonce, the account (created or
//! found by its key), the order, a TLS-ALPN-01 challenge (RFC 8737) per name answered by the
//! listener through [`AcmeCertificates`], the finalization with a CSR, and the download.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    autotls::Broker,
    https::{Https, Response},
    jws::AccountKey,
    store::AcmeCertificates,
    AcmeError,
};
use crate::provider::Provider;

const JOSE: &str = "application/jose+json";

/// The CA's directory (the URLs this client uses).
#[derive(Debug)]
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

/// A conversation with the CA: the directory, the account, and the next nonce.
pub(crate) struct Session<'a, P> {
    https: &'a Https,
    key: &'a AccountKey,
    directory: Directory,
    kid: Option<String>,
    nonce: Option<String>,
    /// Where polling gives up (the order's deadline).
    deadline: Instant,
    _provider: std::marker::PhantomData<P>,
}

/// What an order gives: the chain (PEM, leaf first) and its key (PKCS#8 PEM).
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

impl<'a, P: Provider> Session<'a, P> {
    /// Reads the directory at `url`.
    pub(crate) async fn open(
        https: &'a Https,
        key: &'a AccountKey,
        url: &str,
        deadline: Instant,
    ) -> Result<Self, AcmeError> {
        let response = https.request::<P>("GET", url, None, &[]).await?;
        let body = json_of(url, &response)?;
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(url, format!("the directory has no {name}")))
        };
        let directory = Directory {
            new_nonce: field("newNonce")?,
            new_account: field("newAccount")?,
            new_order: field("newOrder")?,
        };
        Ok(Session {
            https,
            key,
            directory,
            kid: None,
            nonce: None,
            deadline,
            _provider: std::marker::PhantomData,
        })
    }

    /// Creates the account, or finds the one this key has (`newAccount` answers 200 then).
    pub(crate) async fn account(&mut self, contact: &[String]) -> Result<(), AcmeError> {
        let url = self.directory.new_account.clone();
        let payload = json!({ "termsOfServiceAgreed": true, "contact": contact });
        let response = self.post(&url, Some(&payload)).await?;
        let kid = response
            .header("location")
            .ok_or_else(|| bad(&url, "the account has no Location".into()))?;
        self.kid = Some(kid.to_string());
        Ok(())
    }

    /// Orders a certificate for `names`, answering each name's challenge with `solver`.
    pub(crate) async fn order(
        &mut self,
        names: &[String],
        solver: Solver<'_>,
    ) -> Result<Issued, AcmeError> {
        let url = self.directory.new_order.clone();
        let identifiers: Vec<Value> = names
            .iter()
            .map(|name| json!({ "type": "dns", "value": name }))
            .collect();
        let response = self
            .post(&url, Some(&json!({ "identifiers": identifiers })))
            .await?;
        let order_url = response
            .header("location")
            .ok_or_else(|| bad(&url, "the order has no Location".into()))?
            .to_string();
        let order = json_of(&url, &response)?;
        let authorizations: Vec<String> = order["authorizations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for authorization in &authorizations {
            self.authorize(authorization, &solver).await?;
        }
        let finalize = order["finalize"]
            .as_str()
            .ok_or_else(|| bad(&url, "the order has no finalize URL".into()))?
            .to_string();
        let (csr, key_pem) = csr(names)?;
        let csr = data_encoding::BASE64URL_NOPAD.encode(&csr);
        self.post(&finalize, Some(&json!({ "csr": csr }))).await?;
        let certificate = self.await_order(&order_url).await?;
        let response = self.post(&certificate, None).await?;
        let chain_pem = String::from_utf8(response.body)
            .map_err(|_| bad(&certificate, "the certificate is not PEM text".into()))?;
        Ok(Issued { chain_pem, key_pem })
    }

    /// Answers one authorization's challenge and waits until it is valid.
    async fn authorize(&mut self, url: &str, solver: &Solver<'_>) -> Result<(), AcmeError> {
        let authorization = json_of(url, &self.post(url, None).await?)?;
        let name = authorization["identifier"]["value"]
            .as_str()
            .ok_or_else(|| bad(url, "an authorization without an identifier".into()))?
            .to_string();
        if authorization["status"] == "valid" {
            return Ok(());
        }
        let kind = solver.challenge_type();
        let challenge = authorization["challenges"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == kind))
            .ok_or_else(|| match solver {
                Solver::TlsAlpn(_) => AcmeError::NoTlsAlpnChallenge { name: name.clone() },
                Solver::Broker(_) => AcmeError::NoDnsChallenge { name: name.clone() },
            })?;
        let (Some(challenge_url), Some(token)) =
            (challenge["url"].as_str(), challenge["token"].as_str())
        else {
            return Err(bad(url, "a challenge without a URL or token".into()));
        };
        let challenge_url = challenge_url.to_string();
        let key_authorization = self.key.key_authorization(token);
        let _answering = match solver {
            Solver::TlsAlpn(certificates) => {
                Some(certificates.answer_challenge(&name, &key_authorization)?)
            }
            Solver::Broker(broker) => {
                let digest =
                    ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
                let txt = data_encoding::BASE64URL_NOPAD.encode(digest.as_ref());
                let wait = self.deadline.saturating_duration_since(Instant::now());
                broker.register::<P>(&name, &txt, wait).await?;
                None
            }
        };
        self.post(&challenge_url, Some(&json!({}))).await?;
        loop {
            let authorization = json_of(url, &self.post(url, None).await?)?;
            match authorization["status"].as_str() {
                Some("valid") => return Ok(()),
                Some("pending") | Some("processing") => {
                    self.pause(Duration::from_millis(500)).await?
                }
                status => {
                    let detail = authorization["challenges"]
                        .as_array()
                        .and_then(|all| all.iter().find(|c| c["type"] == kind))
                        .and_then(|c| c["error"]["detail"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    return Err(AcmeError::ChallengeFailed {
                        name,
                        status: status.unwrap_or("missing").to_string(),
                        detail,
                    });
                }
            }
        }
    }

    /// Polls the order until it is valid; its certificate URL.
    async fn await_order(&mut self, url: &str) -> Result<String, AcmeError> {
        loop {
            let response = self.post(url, None).await?;
            let order = json_of(url, &response)?;
            match order["status"].as_str() {
                Some("valid") => {
                    return order["certificate"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(url, "a valid order without a certificate".into()))
                }
                Some("processing") | Some("ready") | Some("pending") => {
                    self.pause(poll_after(&response)).await?
                }
                status => {
                    return Err(AcmeError::OrderFailed {
                        status: status.unwrap_or("missing").to_string(),
                        detail: order["error"]["detail"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    })
                }
            }
        }
    }

    /// Waits `pause` before polling again, or fails if the order's time is out.
    async fn pause(&self, pause: Duration) -> Result<(), AcmeError> {
        let now = Instant::now();
        if now + pause >= self.deadline {
            return Err(AcmeError::OrderTimedOut);
        }
        P::timer(now + pause).await;
        Ok(())
    }

    /// A signed POST (`payload` `None`: POST-as-GET), with a fresh nonce; a `badNonce` refusal is
    /// retried with the nonce it carries (RFC 8555 section 6.5), up to three times.
    async fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Response, AcmeError> {
        for _ in 0..3 {
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => self.new_nonce().await?,
            };
            let body = self
                .key
                .sign(url, &nonce, self.kid.as_deref(), payload)
                .map_err(AcmeError::Key)?;
            let response = self
                .https
                .request::<P>("POST", url, Some(JOSE), &body)
                .await?;
            self.nonce = response.header("replay-nonce").map(str::to_string);
            if response.status < 400 {
                return Ok(response);
            }
            let problem = problem(url, &response);
            match &problem {
                AcmeError::Refused { kind, .. } if kind.ends_with(":badNonce") => continue,
                _ => return Err(problem),
            }
        }
        Err(bad(url, "three bad nonces in a row".into()))
    }

    async fn new_nonce(&self) -> Result<String, AcmeError> {
        let url = &self.directory.new_nonce;
        let response = self.https.request::<P>("HEAD", url, None, &[]).await?;
        response
            .header("replay-nonce")
            .map(str::to_string)
            .ok_or_else(|| bad(url, "no Replay-Nonce".into()))
    }
}

/// How the challenges of an order are answered.
pub(crate) enum Solver<'a> {
    /// TLS-ALPN-01, by the listeners presenting the challenge certificates.
    TlsAlpn(&'a AcmeCertificates),
    /// DNS-01, by the AutoTLS broker setting the TXT record.
    Broker(&'a Broker),
}

impl Solver<'_> {
    fn challenge_type(&self) -> &'static str {
        match self {
            Solver::TlsAlpn(_) => "tls-alpn-01",
            Solver::Broker(_) => "dns-01",
        }
    }
}

/// A CSR for `names` with a fresh P-256 key; the CSR (DER) and the key (PKCS#8 PEM).
fn csr(names: &[String]) -> Result<(Vec<u8>, String), AcmeError> {
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Key(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| AcmeError::Key(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Key(e.to_string()))?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

/// How long to wait before polling again: the CA's `Retry-After` (seconds), between 0.5 s and
/// 30 s; 0.5 s without one (RFC 8555 section 7.5.1: clients should follow it).
fn poll_after(response: &Response) -> Duration {
    let hint = response
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    hint.unwrap_or(Duration::ZERO)
        .clamp(Duration::from_millis(500), Duration::from_secs(30))
}

fn bad(url: &str, reason: String) -> AcmeError {
    AcmeError::BadResponse {
        url: url.to_string(),
        reason,
    }
}

/// The JSON body of a successful response.
fn json_of(url: &str, response: &Response) -> Result<Value, AcmeError> {
    if response.status >= 400 {
        return Err(problem(url, response));
    }
    serde_json::from_slice(&response.body).map_err(|e| bad(url, format!("not JSON: {e}")))
}

/// The error a refusal carries (an RFC 7807 problem document, when it is one).
pub(crate) fn problem(url: &str, response: &Response) -> AcmeError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    AcmeError::Refused {
        url: url.to_string(),
        status: response.status,
        kind: body["type"].as_str().unwrap_or_default().to_string(),
        detail: body["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect()
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_problem_document() {
        let response = Response {
            status: 403,
            headers: vec![],
            body: br#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no such name"}"#
                .to_vec(),
        };
        match problem("https://ca/new-order", &response) {
            AcmeError::Refused {
                status,
                kind,
                detail,
                ..
            } => {
                assert_eq!(status, 403);
                assert_eq!(kind, "urn:ietf:params:acme:error:unauthorized");
                assert_eq!(detail, "no such name");
            }
            other => panic!("{other:?}"),
        }
        let response = Response {
            status: 502,
            headers: vec![],
            body: b"Bad Gateway".to_vec(),
        };
        assert!(matches!(
            json_of("https://ca/x", &response),
            Err(AcmeError::Refused { status: 502, ref detail, .. }) if detail == "Bad Gateway"
        ));
    }

    #[test]
    fn polling_follows_retry_after_within_bounds() {
        let with = |value: Option<&str>| Response {
            status: 200,
            headers: value
                .map(|v| vec![("Retry-After".to_string(), v.to_string())])
                .unwrap_or_default(),
            body: Vec::new(),
        };
        assert_eq!(poll_after(&with(None)), Duration::from_millis(500));
        assert_eq!(poll_after(&with(Some("3"))), Duration::from_secs(3));
        assert_eq!(poll_after(&with(Some("0"))), Duration::from_millis(500));
        assert_eq!(poll_after(&with(Some("86400"))), Duration::from_secs(30));
        assert_eq!(poll_after(&with(Some("soon"))), Duration::from_millis(500));
    }

    #[test]
    fn csrs_name_every_name() {
        let names = vec!["a.example".to_string(), "b.example".to_string()];
        let (der, key) = csr(&names).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let text = String::from_utf8_lossy(&der);
        assert!(text.contains("a.example") && text.contains("b.example"));
    }
}
