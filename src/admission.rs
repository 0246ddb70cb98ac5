//! Admission of inbound connections: how many may be in their handshake at once, per listener and
//! per client address, and which one makes room when the listener is full. Pure bookkeeping (no IO,
//! no clock): the transport asks [`Admission::admit`] for every accepted socket and holds the
//! returned [`Ticket`] until the connection's upgrade is done (the WebSocket handshake for the bare
//! transport; noise and yamux too for the upgraded stack) or dropped.
//!
//! The rules, so that a flood from a few addresses cannot shut out everybody else:
//! - a client address may hold at most `max_per_ip` pending handshakes; more are refused at once;
//! - when the listener holds `max_total`, a new connection evicts the oldest pending handshake of
//!   the address that holds the most, if that address holds more than the newcomer's address
//!   does; otherwise the newcomer is refused. An evicted handshake ends with
//!   [`Error::Evicted`](crate::Error::Evicted).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use futures::future::{AbortHandle, AbortRegistration, Abortable, Aborted};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already holds `max_per_ip` pending handshakes.
    AddressFull,
    /// The listener is full and no address holds more pending handshakes than this one's.
    ListenerFull,
}

/// The pending handshakes of one listener.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    max_total: usize,
    max_per_ip: usize,
    next_id: u64,
    /// By id, so in order of age.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    abort: AbortHandle,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            state: Arc::new(Mutex::new(State {
                max_total: max_total.max(1),
                max_per_ip: max_per_ip.max(1),
                next_id: 0,
                entries: BTreeMap::new(),
                per_ip: HashMap::new(),
            })),
        }
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
    /// address is not held to `max_per_ip` (each client is, once its address is known, see
    /// [`Ticket::reassign`]); the listener's total still applies.
    pub(crate) fn admit_trusted(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        self.admit_with(ip, false)
    }

    fn admit_with(&self, ip: IpAddr, per_ip_limit: bool) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        let own = state.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip_limit && own >= state.max_per_ip {
            return Err(Refusal::AddressFull);
        }
        if state.entries.len() >= state.max_total {
            let (crowded, count) = state
                .per_ip
                .iter()
                .max_by_key(|(_, count)| **count)
                .map(|(ip, count)| (*ip, *count))
                .ok_or(Refusal::ListenerFull)?;
            if count <= own {
                return Err(Refusal::ListenerFull);
            }
            let oldest = state
                .entries
                .iter()
                .find(|(_, entry)| entry.ip == crowded)
                .map(|(id, _)| *id)
                .ok_or(Refusal::ListenerFull)?;
            state.remove(oldest);
        }
        let id = state.next_id;
        state.next_id += 1;
        let (abort, registration) = AbortHandle::new_pair();
        state.entries.insert(id, Entry { ip, abort });
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket {
            admission: self.clone(),
            id,
            registration: Some(registration),
        })
    }

    /// Pending handshakes right now (all addresses).
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
            if let Some(count) = self.per_ip.get_mut(&entry.ip) {
                *count -= 1;
                if *count == 0 {
                    self.per_ip.remove(&entry.ip);
                }
            }
        }
    }
}

/// One admitted connection's place among the pending handshakes; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Admission,
    id: u64,
    registration: Option<AbortRegistration>,
}

impl Ticket {
    /// Runs `future` under this ticket: it ends with `Err(Aborted)` if the ticket is evicted, and
    /// the ticket is freed when the future completes or is dropped.
    pub(crate) fn guard<F: Future>(
        mut self,
        future: F,
    ) -> impl Future<Output = Result<F::Output, Aborted>> {
        let registration = self
            .registration
            .take()
            .unwrap_or_else(|| AbortHandle::new_pair().1);
        let abortable = Abortable::new(future, registration);
        async move {
            let _ticket = self;
            abortable.await
        }
    }
}

impl Ticket {
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

impl Ticket {
    /// Counts this pending handshake for `ip` from now on (the client a reverse proxy named),
    /// within `max_per_ip`; refused (the ticket unchanged) if `ip` holds its share already.
    pub(crate) fn reassign(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let mut state = self.admission.lock();
        let max_per_ip = state.max_per_ip;
        let Some(old) = state.entries.get(&self.id).map(|e| e.ip) else {
            return Ok(());
        };
        if old == ip {
            return Ok(());
        }
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= max_per_ip {
            return Err(Refusal::AddressFull);
        }
        if let Some(count) = state.per_ip.get_mut(&old) {
            *count -= 1;
            if *count == 0 {
                state.per_ip.remove(&old);
            }
        }
        *state.per_ip.entry(ip).or_insert(0) += 1;
        if let Some(entry) = state.entries.get_mut(&self.id) {
            entry.ip = ip;
        }
        Ok(())
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

    #[test]
    fn a_trusted_proxy_is_not_held_to_the_per_address_share_but_its_clients_are() {
        let admission = Admission::new(10, 2);
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
        let admission = Admission::new(100, 2);
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
        let admission = Admission::new(2, 2);
        let mut ticket = admission.admit(ip(2)).unwrap();
        let _other = admission.admit(ip(2)).unwrap();
        let first = futures::executor::block_on(ticket.phase(futures::future::ready(1)));
        assert_eq!(first, Ok(1), "the first phase runs");
        assert_eq!(admission.pending(), 2, "the ticket is still held");
        // Full: a newcomer evicts the oldest of 127.0.0.2, which is `ticket`, now in its second phase.
        let _newcomer = admission.admit(ip(3)).expect("room is made");
        let second = futures::executor::block_on(ticket.guard(futures::future::ready(2)));
        assert_eq!(
            second,
            Err(Aborted),
            "the re-armed registration was aborted"
        );
    }

    #[test]
    fn dropping_a_ticket_frees_its_place() {
        let admission = Admission::new(1, 1);
        let ticket = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::AddressFull);
        drop(ticket);
        assert_eq!(admission.pending(), 0);
        admission.admit(ip(2)).expect("admitted again");
    }

    #[test]
    fn a_full_listener_evicts_the_oldest_of_the_most_crowded_address() {
        let admission = Admission::new(4, 3);
        let first = admission.admit(ip(2)).unwrap();
        let second = admission.admit(ip(2)).unwrap();
        let _third = admission.admit(ip(2)).unwrap();
        let other = admission.admit(ip(3)).unwrap();
        // Full: a newcomer from a third address evicts 127.0.0.2's oldest, and only that one.
        let _newcomer = admission.admit(ip(4)).expect("room is made");
        assert_eq!(admission.pending(), 4);
        let run =
            |ticket: Ticket| futures::executor::block_on(ticket.guard(futures::future::ready(())));
        assert_eq!(
            run(first),
            Err(Aborted),
            "the oldest of the crowded address"
        );
        assert_eq!(run(second), Ok(()), "the others run on");
        assert_eq!(run(other), Ok(()));
    }

    #[test]
    fn eviction_ends_the_evicted_handshake_and_spares_small_addresses() {
        let admission = Admission::new(3, 3);
        let crowded = admission.admit(ip(2)).unwrap();
        let _crowded2 = admission.admit(ip(2)).unwrap();
        let _lone = admission.admit(ip(3)).unwrap();
        let handshake = crowded.guard(futures::future::pending::<()>());
        let _newcomer = admission.admit(ip(4)).expect("room is made");
        assert_eq!(
            futures::executor::block_on(handshake),
            Err(Aborted),
            "the oldest handshake of the most crowded address was evicted"
        );
        assert_eq!(admission.pending(), 3);
        // A newcomer whose address already holds as many as the most crowded one is refused.
        let full = Admission::new(2, 2);
        let _x = full.admit(ip(2)).unwrap();
        let _y = full.admit(ip(3)).unwrap();
        assert_eq!(full.admit(ip(2)).unwrap_err(), Refusal::ListenerFull);
        assert_eq!(full.pending(), 2);
    }

    #[test]
    fn a_completed_handshake_frees_its_place() {
        let admission = Admission::new(1, 1);
        let ticket = admission.admit(ip(2)).unwrap();
        assert_eq!(
            futures::executor::block_on(ticket.guard(async { 7 })),
            Ok(7)
        );
        assert_eq!(admission.pending(), 0);
    }
}
