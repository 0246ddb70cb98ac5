//! Admission of inbound connections: how many may be in their handshake at once, per listener and
//! per client (an IPv4 address, an IPv6 /64 by default), and which one makes room when the
//! listener is full. Pure bookkeeping (no IO; the clock only as a deadline handed to the guard):
//! the transport asks [`Admission::admit`] for every accepted socket and holds the returned
//! [`Ticket`] until the connection's upgrade is done (the WebSocket handshake for the bare
//! transport; noise and yamux too for the upgraded stack) or dropped.
//!
//! The rules, so that a flood from a few addresses cannot shut out everybody else:
//! - clients are counted by their share key ([`Limits::key`]): an IPv4 address masked to
//!   `ipv4_prefix` bits (32, the address itself, by default), an IPv6 address masked to
//!   `ipv6_prefix` bits (64 by default: one host usually holds a whole /64);
//! - a key may hold at most `max_per_key` pending handshakes; more are refused at once;
//! - when the listener holds `max_total`, a new connection evicts the oldest pending handshake
//!   among the keys that hold the most (by age, never by hash order), if those hold more than the
//!   newcomer's key does; otherwise the newcomer is refused. An evicted handshake ends with
//!   [`Error::Evicted`].

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures::future::{AbortHandle, AbortRegistration, Abortable, Aborted, Either};

use crate::{
    error::{Error, TimeoutStage},
    metrics::Recorder,
    provider::TimerFn,
};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its share key already holds `max_per_key` pending handshakes.
    AddressFull,
    /// The listener is full and no key holds more pending handshakes than this one's.
    ListenerFull,
}

impl Refusal {
    /// The metrics' label value: `address_full` or `listener_full`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::AddressFull => "address_full",
            Refusal::ListenerFull => "listener_full",
        }
    }
}

/// The limits of one listener's pending handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most pending handshakes in all (at least 1).
    pub(crate) max_total: usize,
    /// Most pending handshakes per share key (at least 1).
    pub(crate) max_per_key: usize,
    /// The bits of an IPv4 address that make its share key (at most 32).
    pub(crate) ipv4_prefix: u8,
    /// The bits of an IPv6 address that make its share key (at most 128).
    pub(crate) ipv6_prefix: u8,
}

impl Limits {
    /// The share key of `ip`: the address masked to its family's prefix. An IPv4-mapped IPv6
    /// address (what a dual-stack socket reports for an IPv4 client) is keyed as IPv4.
    pub(crate) fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.ipv4_prefix.min(32)))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits & mask))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }
}

/// The pending handshakes of one listener.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    next_id: u64,
    /// By id, so in order of age.
    entries: BTreeMap<u64, Entry>,
    /// Pending handshakes per share key.
    per_key: HashMap<IpAddr, usize>,
    /// Counts pending handshakes, refusals and evictions (a no-op without metrics).
    recorder: Recorder,
}

#[derive(Debug)]
struct Entry {
    key: IpAddr,
    abort: AbortHandle,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        Admission {
            state: Arc::new(Mutex::new(State {
                limits: Limits {
                    max_total: limits.max_total.max(1),
                    max_per_key: limits.max_per_key.max(1),
                    ipv4_prefix: limits.ipv4_prefix.min(32),
                    ipv6_prefix: limits.ipv6_prefix.min(128),
                },
                next_id: 0,
                entries: BTreeMap::new(),
                per_key: HashMap::new(),
                recorder: Recorder::default(),
            })),
        }
    }

    /// Counts this listener's pending handshakes, refusals and evictions with `recorder`.
    pub(crate) fn with_recorder(self, recorder: Recorder) -> Self {
        self.lock().recorder = recorder;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `ip`, evicting another pending handshake if the listener is full.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        self.admit_with(ip, true)
    }

    /// Admits a connection from a trusted reverse proxy at `ip`: it carries many clients, so its
    /// address is not held to `max_per_key` (each client is, as soon as its address is known, see
    /// [`Charge::to`]); the listener's total still applies.
    pub(crate) fn admit_trusted(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        self.admit_with(ip, false)
    }

    fn admit_with(&self, ip: IpAddr, per_key_limit: bool) -> Result<Ticket, Refusal> {
        let mut guard = self.lock();
        let result = Self::admit_locked(&mut guard, ip, per_key_limit);
        match result {
            Ok((id, registration)) => Ok(Ticket {
                admission: self.clone(),
                id,
                registration: Some(registration),
                deadline: None,
            }),
            Err(refusal) => {
                guard.recorder.admission_refused(refusal.label());
                Err(refusal)
            }
        }
    }

    /// The bookkeeping of [`Admission::admit_with`]: the new entry's id and the registration its
    /// eviction aborts, or why not.
    fn admit_locked(
        guard: &mut MutexGuard<'_, State>,
        ip: IpAddr,
        per_key_limit: bool,
    ) -> Result<(u64, AbortRegistration), Refusal> {
        let state = &mut *guard;
        let key = state.limits.key(ip);
        let own = state.per_key.get(&key).copied().unwrap_or(0);
        if per_key_limit && own >= state.limits.max_per_key {
            return Err(Refusal::AddressFull);
        }
        if state.entries.len() >= state.limits.max_total {
            let most = state
                .per_key
                .values()
                .copied()
                .max()
                .ok_or(Refusal::ListenerFull)?;
            if most <= own {
                return Err(Refusal::ListenerFull);
            }
            // The oldest pending handshake of the keys that hold the most: entries are in order
            // of age, so the first one of such a key (ties between keys broken by age).
            let per_key = &state.per_key;
            let oldest = state
                .entries
                .iter()
                .find(|(_, entry)| per_key.get(&entry.key) == Some(&most))
                .map(|(id, _)| *id)
                .ok_or(Refusal::ListenerFull)?;
            state.remove(oldest);
            state.recorder.evicted();
        }
        let id = state.next_id;
        state.next_id += 1;
        let (abort, registration) = AbortHandle::new_pair();
        state.entries.insert(id, Entry { key, abort });
        *state.per_key.entry(key).or_insert(0) += 1;
        state.recorder.pending(1);
        Ok((id, registration))
    }

    /// Pending handshakes right now (all keys).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.lock().entries.len()
    }
}

impl State {
    /// Forgets entry `id` (and aborts its handshake, if it still runs).
    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            entry.abort.abort();
            self.uncount(entry.key);
            self.recorder.pending(-1);
        }
    }

    fn uncount(&mut self, key: IpAddr) {
        if let Some(count) = self.per_key.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.per_key.remove(&key);
            }
        }
    }
}

/// When a ticket's whole upgrade must be done, measured from accept.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The configured timeout, for the error.
    after: Duration,
    timer: TimerFn,
}

/// One admitted connection's place among the pending handshakes; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Admission,
    id: u64,
    registration: Option<AbortRegistration>,
    deadline: Option<Deadline>,
}

/// A handle that moves a pending handshake to another client's share (see [`Charge::to`]), for
/// the code that learns the client's address while the [`Ticket`] guards it.
#[derive(Debug, Clone)]
pub(crate) struct Charge {
    admission: Admission,
    id: u64,
}

impl Charge {
    /// Counts this pending handshake for `ip` (the client a reverse proxy named) from now on,
    /// within `max_per_key`; refused (the handshake's place unchanged) if `ip`'s key holds its
    /// share already. Nothing happens for a handshake that is gone (evicted or done).
    pub(crate) fn to(&self, ip: IpAddr) -> Result<(), Refusal> {
        let mut guard = self.admission.lock();
        let state = &mut *guard;
        let key = state.limits.key(ip);
        let Some(old) = state.entries.get(&self.id).map(|e| e.key) else {
            return Ok(());
        };
        if old == key {
            return Ok(());
        }
        if state.per_key.get(&key).copied().unwrap_or(0) >= state.limits.max_per_key {
            state
                .recorder
                .admission_refused(Refusal::AddressFull.label());
            return Err(Refusal::AddressFull);
        }
        state.uncount(old);
        *state.per_key.entry(key).or_insert(0) += 1;
        if let Some(entry) = state.entries.get_mut(&self.id) {
            entry.key = key;
        }
        Ok(())
    }
}

impl Ticket {
    /// The handle that charges this pending handshake to the client a proxy names.
    pub(crate) fn charge(&self) -> Charge {
        Charge {
            admission: self.admission.clone(),
            id: self.id,
        }
    }

    /// Counts this pending handshake for `ip` from now on (see [`Charge::to`]).
    #[cfg(test)]
    pub(crate) fn reassign(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        self.charge().to(ip)
    }

    /// Bounds [`Ticket::guard`] by `at` (the accept time plus the timeout `after`), with timers
    /// from `timer`: the guarded future ends with [`Error::Timeout`] (stage
    /// [`TimeoutStage::Upgrade`]) then.
    pub(crate) fn with_deadline(mut self, at: Instant, after: Duration, timer: TimerFn) -> Self {
        self.deadline = Some(Deadline { at, after, timer });
        self
    }

    /// The deadline set by [`Ticket::with_deadline`], if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.map(|d| d.at)
    }

    /// Runs `future` under this ticket: it ends with [`Error::Evicted`] if the ticket is evicted,
    /// or [`Error::Timeout`] at the ticket's deadline (if it has one), and the ticket is freed
    /// when the future completes or is dropped.
    pub(crate) fn guard<F: Future>(
        mut self,
        future: F,
    ) -> impl Future<Output = Result<F::Output, Error>> {
        let registration = self
            .registration
            .take()
            .unwrap_or_else(|| AbortHandle::new_pair().1);
        let abortable = Abortable::new(future, registration);
        let deadline = self.deadline.take();
        async move {
            let _ticket = self;
            let expiry = async move {
                match deadline {
                    Some(deadline) => {
                        (deadline.timer)(deadline.at).await;
                        deadline.after
                    }
                    None => futures::future::pending().await,
                }
            };
            let (abortable, expiry) = (std::pin::pin!(abortable), std::pin::pin!(expiry));
            match futures::future::select(abortable, expiry).await {
                Either::Left((Ok(output), _)) => Ok(output),
                Either::Left((Err(Aborted), _)) => Err(Error::Evicted),
                Either::Right((after, _)) => Err(Error::Timeout {
                    stage: TimeoutStage::Upgrade,
                    after,
                }),
            }
        }
    }

    /// Runs `future` as one phase of the handshake under this ticket, keeping the ticket for the
    /// next phase: it ends with `Err(Aborted)` if the ticket is evicted meanwhile (or was before).
    pub(crate) async fn phase<F: Future>(&mut self, future: F) -> Result<F::Output, Aborted> {
        let registration = self.registration.take().ok_or(Aborted)?;
        let output = Abortable::new(future, registration).await?;
        // A fresh registration for the next phase, unless this ticket was evicted just now.
        let (abort, registration) = AbortHandle::new_pair();
        match self.admission.lock().entries.get_mut(&self.id) {
            Some(entry) => entry.abort = abort,
            None => return Err(Aborted),
        }
        self.registration = Some(registration);
        Ok(output)
    }
}

/// The hand-off of each inbound connection's [`Ticket`] from the transport to the upgraded stack
/// above it (noise and yamux), so the connection counts as a pending handshake until that
/// upgrade is done. The transport [`leave`](Handoff::leave)s the ticket within the `poll` that
/// reports the `Incoming` event, and the layer above [`take`](Handoff::take)s it when that event
/// comes up through the builder's layers, unchanged, in the same `poll`: the slot holds at most
/// one ticket at a time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<Option<Ticket>>>);

impl Handoff {
    fn slot(&self) -> MutexGuard<'_, Option<Ticket>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves the ticket of the connection whose `Incoming` event is being reported.
    pub(crate) fn leave(&self, ticket: Ticket) {
        let previous = self.slot().replace(ticket);
        if previous.is_some() {
            tracing::warn!("an inbound admission ticket was left and not taken; freed");
        }
    }

    /// Takes the ticket of the `Incoming` event that just came up.
    pub(crate) fn take(&self) -> Option<Ticket> {
        self.slot().take()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// An admission with the default share prefixes (IPv4 per address, IPv6 per /64).
    fn admission_of(max_total: usize, max_per_key: usize) -> Admission {
        Admission::new(Limits {
            max_total,
            max_per_key,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        })
    }

    /// Whether the guarded run of `ticket` ended as evicted.
    fn evicted(ticket: Ticket) -> bool {
        matches!(
            futures::executor::block_on(ticket.guard(futures::future::ready(()))),
            Err(Error::Evicted)
        )
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn pending_handshakes_refusals_and_evictions_are_counted() {
        let mut registry = prometheus_client::registry::Registry::default();
        let admission =
            admission_of(2, 2).with_recorder(crate::metrics::Recorder::register(&mut registry));
        let text = |registry: &prometheus_client::registry::Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        let a = admission.admit(ip(1)).unwrap();
        let _b = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).unwrap_err(), Refusal::AddressFull);
        // Full: a newcomer from another address evicts the oldest of ip 1.
        let c = admission.admit(ip(2)).unwrap();
        assert!(evicted(a));
        assert_eq!(admission.admit(ip(1)).unwrap_err(), Refusal::ListenerFull);
        let counted = text(&registry);
        for line in [
            "libp2p_websocket_pending_handshakes 2",
            "libp2p_websocket_evictions_total 1",
            r#"libp2p_websocket_admission_refusals_total{reason="address_full"} 1"#,
            r#"libp2p_websocket_admission_refusals_total{reason="listener_full"} 1"#,
        ] {
            assert!(counted.contains(line), "{line} not in\n{counted}");
        }
        drop((_b, c));
        assert!(text(&registry).contains("libp2p_websocket_pending_handshakes 0"));

        // A client a proxy names, over its share, is refused too.
        let mut registry = prometheus_client::registry::Registry::default();
        let admission =
            admission_of(10, 1).with_recorder(crate::metrics::Recorder::register(&mut registry));
        let _d = admission.admit(ip(5)).unwrap();
        let mut e = admission.admit_trusted(ip(6)).unwrap();
        assert_eq!(e.reassign(ip(5)), Err(Refusal::AddressFull));
        assert!(text(&registry)
            .contains(r#"libp2p_websocket_admission_refusals_total{reason="address_full"} 1"#));
    }

    #[test]
    fn a_trusted_proxy_is_not_held_to_the_per_address_share_but_its_clients_are() {
        let admission = admission_of(10, 2);
        let proxy = ip(1);
        let mut tickets: Vec<_> = (0..4)
            .map(|_| admission.admit_trusted(proxy).unwrap())
            .collect();
        assert_eq!(admission.pending(), 4);
        tickets[0].reassign(ip(7)).unwrap();
        tickets[1].reassign(ip(7)).unwrap();
        assert_eq!(tickets[2].reassign(ip(7)), Err(Refusal::AddressFull));
        assert!(
            admission.admit(ip(7)).is_err(),
            "the client holds its share"
        );
        drop(tickets.remove(0));
        let _again = admission
            .admit(ip(7))
            .expect("a place of ip 7 is free again");
        assert_eq!(admission.pending(), 4);
    }

    #[test]
    fn an_address_gets_at_most_its_share() {
        let admission = admission_of(100, 2);
        let _a = admission.admit(ip(2)).unwrap();
        let _b = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::AddressFull);
        let _c = admission
            .admit(ip(3))
            .expect("another address still gets in");
        assert_eq!(admission.pending(), 3);
    }

    #[test]
    fn a_ticket_spans_phases_and_eviction_reaches_the_later_one() {
        let admission = admission_of(2, 2);
        let mut ticket = admission.admit(ip(2)).unwrap();
        let _other = admission.admit(ip(2)).unwrap();
        let first = futures::executor::block_on(ticket.phase(futures::future::ready(1)));
        assert_eq!(first, Ok(1), "the first phase runs");
        assert_eq!(admission.pending(), 2, "the ticket is still held");
        // Full: a newcomer evicts the oldest of 127.0.0.2, which is `ticket`, now in its second phase.
        let _newcomer = admission.admit(ip(3)).expect("room is made");
        assert!(evicted(ticket), "the re-armed registration was aborted");
    }

    #[test]
    fn dropping_a_ticket_frees_its_place() {
        let admission = admission_of(1, 1);
        let ticket = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::AddressFull);
        drop(ticket);
        assert_eq!(admission.pending(), 0);
        admission.admit(ip(2)).expect("admitted again");
    }

    #[test]
    fn a_full_listener_evicts_the_oldest_of_the_most_crowded_address() {
        let admission = admission_of(4, 3);
        let first = admission.admit(ip(2)).unwrap();
        let second = admission.admit(ip(2)).unwrap();
        let _third = admission.admit(ip(2)).unwrap();
        let other = admission.admit(ip(3)).unwrap();
        // Full: a newcomer from a third address evicts 127.0.0.2's oldest, and only that one.
        let _newcomer = admission.admit(ip(4)).expect("room is made");
        assert_eq!(admission.pending(), 4);
        assert!(evicted(first), "the oldest of the crowded address");
        assert!(!evicted(second), "the others run on");
        assert!(!evicted(other));
    }

    #[test]
    fn eviction_ends_the_evicted_handshake_and_spares_small_addresses() {
        let admission = admission_of(3, 3);
        let crowded = admission.admit(ip(2)).unwrap();
        let _crowded2 = admission.admit(ip(2)).unwrap();
        let _lone = admission.admit(ip(3)).unwrap();
        let handshake = crowded.guard(futures::future::pending::<()>());
        let _newcomer = admission.admit(ip(4)).expect("room is made");
        assert!(
            matches!(futures::executor::block_on(handshake), Err(Error::Evicted)),
            "the oldest handshake of the most crowded address was evicted"
        );
        assert_eq!(admission.pending(), 3);
        // A newcomer whose address already holds as many as the most crowded one is refused.
        let full = admission_of(2, 2);
        let _x = full.admit(ip(2)).unwrap();
        let _y = full.admit(ip(3)).unwrap();
        assert_eq!(full.admit(ip(2)).unwrap_err(), Refusal::ListenerFull);
        assert_eq!(full.pending(), 2);
    }

    #[test]
    fn a_completed_handshake_frees_its_place() {
        let admission = admission_of(1, 1);
        let ticket = admission.admit(ip(2)).unwrap();
        assert!(matches!(
            futures::executor::block_on(ticket.guard(async { 7 })),
            Ok(7)
        ));
        assert_eq!(admission.pending(), 0);
    }

    #[test]
    fn when_every_address_holds_one_place_the_oldest_is_evicted() {
        // 8 places, each of 8 addresses holding one, admitted in order: the oldest is 127.0.0.2.
        let admission = admission_of(8, 4);
        let mut tickets: Vec<Ticket> = (2..10)
            .map(|last| admission.admit(ip(last)).unwrap())
            .collect();
        // Newcomers from fresh addresses, one after another: each evicts the oldest left, never
        // one of the newer ones (whatever order the per-address map iterates in).
        for (round, last) in (100..106u8).enumerate() {
            tickets.push(admission.admit(ip(last)).expect("room is made"));
            assert_eq!(admission.pending(), 8);
            let alive: Vec<bool> = tickets
                .iter()
                .map(|t| admission.lock().entries.contains_key(&t.id))
                .collect();
            let expected: Vec<bool> = (0..tickets.len()).map(|i| i > round).collect();
            assert_eq!(
                alive,
                expected,
                "round {round}: only the oldest {} are gone",
                round + 1
            );
        }
        assert!(evicted(tickets.remove(0)), "the first was evicted");
        assert!(!evicted(tickets.pop().unwrap()), "the newest runs on");
    }

    #[test]
    fn among_equally_crowded_addresses_the_oldest_handshake_goes() {
        let admission = admission_of(6, 3);
        let b1 = admission.admit(ip(3)).unwrap();
        let a1 = admission.admit(ip(2)).unwrap();
        let _a2 = admission.admit(ip(2)).unwrap();
        let _b2 = admission.admit(ip(3)).unwrap();
        let _c = admission.admit(ip(4)).unwrap();
        let _d = admission.admit(ip(5)).unwrap();
        // Full; 127.0.0.2 and 127.0.0.3 hold two each: the oldest of theirs is b1.
        let _e = admission.admit(ip(6)).expect("room is made");
        assert!(evicted(b1), "the oldest of the most crowded addresses");
        assert!(!evicted(a1));
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_share_per_64_and_ipv4_per_address() {
        let limits = Limits {
            max_total: 256,
            max_per_key: 16,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        };
        assert_eq!(limits.key(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
        assert_eq!(
            limits.key(v6("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            v6("2001:db8:1:2::")
        );
        assert_ne!(
            limits.key(v6("2001:db8:1:3::1")),
            limits.key(v6("2001:db8:1:2::1"))
        );
        assert_eq!(limits.key(ip(7)), ip(7));
        assert_ne!(limits.key(ip(7)), limits.key(ip(8)));
        assert_eq!(
            limits.key(v6("::ffff:127.0.0.7")),
            ip(7),
            "IPv4-mapped is IPv4"
        );
        let wide = Limits {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ..limits
        };
        assert_eq!(wide.key(ip(7)), ip(0));
        assert_eq!(wide.key(v6("2001:db8:1:ffff::1")), v6("2001:db8:1::"));
        let whole = Limits {
            ipv4_prefix: 0,
            ipv6_prefix: 128,
            ..limits
        };
        assert_eq!(whole.key(ip(7)), IpAddr::from([0, 0, 0, 0]));
        assert_eq!(whole.key(v6("2001:db8::7")), v6("2001:db8::7"));

        // 300 addresses of one /64 get 16 places; one address of each of 300 /64s gets one each.
        let shares = admission_of(1000, 16);
        let one_64: Vec<_> = (0..300u32)
            .filter_map(|i| shares.admit(v6(&format!("2001:db8:0:1::{i:x}:1"))).ok())
            .collect();
        assert_eq!(one_64.len(), 16, "one /64, one share");
        let many_64s: Vec<_> = (0..300u32)
            .filter_map(|i| shares.admit(v6(&format!("2001:db8:{i:x}:2::1"))).ok())
            .collect();
        assert_eq!(many_64s.len(), 300, "each /64 its own share");
        // And a client a proxy names is charged by its /64 too.
        let proxied = shares.admit_trusted(ip(1)).unwrap();
        assert_eq!(
            proxied.charge().to(v6("2001:db8:0:1::ffff")),
            Err(Refusal::AddressFull)
        );
        proxied
            .charge()
            .to(v6("2001:db8:0:3::1"))
            .expect("another /64");
    }
}
