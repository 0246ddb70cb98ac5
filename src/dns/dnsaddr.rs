//! `/dnsaddr` resolution, pure over a lookup function: the TXT records of `_dnsaddr.<name>`, each
//! `dnsaddr=<multiaddr>`, nested `/dnsaddr` followed to a bounded depth, a bounded number of
//! records in all, filtered by the `/p2p` id when the address has one.

use std::{collections::HashSet, future::Future};

use libp2p_core::multiaddr::{Multiaddr, Protocol};
use libp2p_identity::PeerId;

use super::{DnsConfig, LookupError, MAX_TXT_RECORD_LEN};

/// Why a `/dnsaddr` address gave nothing to dial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsaddrError {
    /// Not of the form `/dnsaddr/<name>` or `/dnsaddr/<name>/p2p/<peer-id>`.
    #[error("{0} is not a /dnsaddr/<name>[/p2p/<peer-id>] address")]
    NotDnsaddr(Multiaddr),
    /// Looking up `_dnsaddr.<name>` failed (no records, a timeout, a name server's error).
    #[error("looking up the /dnsaddr records of {name} failed")]
    Lookup {
        /// The `/dnsaddr` name.
        name: String,
        /// Why.
        source: LookupError,
    },
    /// A `/dnsaddr` record names a `/dnsaddr` already being resolved.
    #[error("the /dnsaddr records of {name} form a loop")]
    Loop {
        /// The name met a second time.
        name: String,
    },
    /// `/dnsaddr` records nest deeper than the limit.
    #[error("the /dnsaddr records nest deeper than {limit} levels (at {name})")]
    TooDeep {
        /// The name that would be one level too deep.
        name: String,
        /// The limit ([`DnsConfig::with_max_dnsaddr_depth`]).
        limit: usize,
    },
    /// The resolution would read more TXT records than the limit.
    #[error("resolving the /dnsaddr records of {name} would read more than {limit} TXT records")]
    TooManyRecords {
        /// The name whose answer went over the limit.
        name: String,
        /// The limit ([`DnsConfig::with_max_dnsaddr_records`]).
        limit: usize,
    },
    /// Every `dnsaddr=` record of `name` is malformed (not UTF-8, too long, not a multiaddr).
    #[error("the {count} dnsaddr= records of {name} are malformed")]
    Malformed {
        /// The `/dnsaddr` name.
        name: String,
        /// How many.
        count: usize,
    },
    /// The addresses the records gave are none that this transport dials (for example only
    /// `/quic-v1` ones).
    #[error("none of the {count} addresses that the /dnsaddr records of {name} give is a TCP or WebSocket address")]
    NoUsableAddress {
        /// The `/dnsaddr` name.
        name: String,
        /// How many addresses the records gave.
        count: usize,
    },
    /// No record of `name` ends with the `/p2p` id the address asked for.
    #[error("no /dnsaddr record of {name} is for the peer {peer}")]
    NoMatchingPeer {
        /// The `/dnsaddr` name.
        name: String,
        /// The peer asked for.
        peer: PeerId,
    },
}

/// The last `/p2p` id of an address.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().fold(None, |last, p| match p {
        Protocol::P2p(id) => Some(id),
        _ => last,
    })
}

/// The name of a `/dnsaddr/<name>[/p2p/<id>]` address, `None` when it does not start with
/// `/dnsaddr`, an error when it has anything else after the name.
pub(crate) fn dnsaddr_name(addr: &Multiaddr) -> Option<Result<String, DnsaddrError>> {
    let mut iter = addr.iter();
    let Some(Protocol::Dnsaddr(name)) = iter.next() else {
        return None;
    };
    let rest: Vec<_> = iter.collect();
    Some(match rest.as_slice() {
        [] | [Protocol::P2p(_)] => Ok(name.to_string()),
        _ => Err(DnsaddrError::NotDnsaddr(addr.clone())),
    })
}

/// Expands `addr` (`/dnsaddr/<name>[/p2p/<peer-id>]`) into the addresses its TXT records name,
/// in the order the records give (a name's own addresses first, then those of its nested
/// `/dnsaddr` entries, in their order), following nested entries up to
/// `config`'s depth, reading at most `config`'s number of records in all, and keeping only the
/// entries for the address's `/p2p` id when it has one. `lookup` returns the TXT records of a
/// name (`_dnsaddr.<name>`), each one's strings joined.
///
/// Records that are not `dnsaddr=` entries are ignored; malformed entries, loops and entries too
/// deep are skipped (debug log) while others give addresses, and are the error when none does.
pub async fn resolve_dnsaddr<F, Fut>(
    addr: &Multiaddr,
    config: &DnsConfig,
    mut lookup: F,
) -> Result<Vec<Multiaddr>, DnsaddrError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Vec<Vec<u8>>, LookupError>>,
{
    let root = match dnsaddr_name(addr) {
        Some(name) => name?,
        None => return Err(DnsaddrError::NotDnsaddr(addr.clone())),
    };
    let mut walk = Walk {
        config,
        peer: peer_of(addr),
        resolved: Vec::new(),
        failures: Vec::new(),
        visited: HashSet::from([root.clone()]),
    };
    let mut records_read = 0;
    // A stack: each name's nested entries are resolved next, in their records' order.
    let mut pending = vec![(root, 1usize)];
    while let Some((name, depth)) = pending.pop() {
        let records = match lookup(format!("_dnsaddr.{name}")).await {
            Ok(records) => records,
            Err(source) => {
                tracing::debug!(%name, %source, "/dnsaddr lookup failed");
                walk.failures.push(DnsaddrError::Lookup { name, source });
                continue;
            }
        };
        records_read += records.len();
        if records_read > config.max_records {
            return Err(DnsaddrError::TooManyRecords {
                name,
                limit: config.max_records,
            });
        }
        let nested = walk.take(name, depth, records);
        pending.extend(nested.into_iter().rev());
    }
    if walk.resolved.is_empty() {
        // The first failure is the nearest to the address asked for.
        return Err(walk
            .failures
            .into_iter()
            .next()
            .unwrap_or_else(|| DnsaddrError::NotDnsaddr(addr.clone())));
    }
    Ok(walk.resolved)
}

/// What a `/dnsaddr` resolution found so far.
struct Walk<'a> {
    config: &'a DnsConfig,
    /// The `/p2p` id of the address asked for, if it has one.
    peer: Option<PeerId>,
    resolved: Vec<Multiaddr>,
    failures: Vec<DnsaddrError>,
    /// The names met so far (a name met again is a loop).
    visited: HashSet<String>,
}

impl Walk<'_> {
    /// Takes the TXT records of `name` (at `depth`): its addresses, its failures, and the nested
    /// names to resolve next, in their records' order.
    fn take(&mut self, name: String, depth: usize, records: Vec<Vec<u8>>) -> Vec<(String, usize)> {
        let (mut malformed, mut entries, mut nested) = (0, 0, Vec::new());
        for record in records {
            let Some(entry) = parse_record(&record) else {
                continue;
            };
            entries += 1;
            let Ok(entry) = entry else {
                malformed += 1;
                tracing::debug!(%name, record = %String::from_utf8_lossy(&record), "malformed dnsaddr= record skipped");
                continue;
            };
            if self.peer.is_some() && peer_of(&entry) != self.peer {
                continue;
            }
            match dnsaddr_name(&entry) {
                None => self.resolved.push(entry),
                Some(Err(e)) => {
                    malformed += 1;
                    tracing::debug!(%name, %e, "dnsaddr= record skipped");
                }
                Some(Ok(inner)) if depth >= self.config.max_depth => {
                    tracing::debug!(%name, %inner, "/dnsaddr nests too deep; skipped");
                    self.failures.push(DnsaddrError::TooDeep {
                        name: inner,
                        limit: self.config.max_depth,
                    });
                }
                Some(Ok(inner)) if !self.visited.insert(inner.clone()) => {
                    tracing::debug!(%name, %inner, "/dnsaddr loop; skipped");
                    self.failures.push(DnsaddrError::Loop { name: inner });
                }
                Some(Ok(inner)) => nested.push((inner, depth + 1)),
            }
        }
        if malformed > 0 && malformed == entries {
            self.failures.push(DnsaddrError::Malformed {
                name: name.clone(),
                count: malformed,
            });
        } else if entries == 0 {
            self.failures.push(DnsaddrError::Lookup {
                name: name.clone(),
                source: LookupError::NoRecords {
                    name: format!("_dnsaddr.{name}"),
                    kind: "dnsaddr= TXT",
                },
            });
        } else if let (Some(peer), true) =
            (self.peer, nested.is_empty() && self.resolved.is_empty())
        {
            self.failures
                .push(DnsaddrError::NoMatchingPeer { name, peer });
        }
        nested
    }
}

/// A TXT record as a `dnsaddr=` entry: `None` when it is not one, an error when it is one but
/// malformed.
fn parse_record(record: &[u8]) -> Option<Result<Multiaddr, ()>> {
    let entry = record.strip_prefix(b"dnsaddr=")?;
    if record.len() > MAX_TXT_RECORD_LEN {
        return Some(Err(()));
    }
    Some(
        std::str::from_utf8(entry)
            .map_err(|_| ())
            .and_then(|text| text.parse::<Multiaddr>().map_err(|_| ()))
            .and_then(|addr| if addr.is_empty() { Err(()) } else { Ok(addr) }),
    )
}

#[cfg(test)]
mod tests;
