//! Keep-alive as a state machine: given the time, it says when to ping and when the peer is gone.
//! The caller owns the clock and the timer.

use std::time::{Duration, Instant};

use super::limits::KeepAlive;

/// What the keep-alive wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing until `deadline`: arm a timer for it, and ask again when it fires (or after
    /// anything was received).
    WaitUntil(Instant),
    /// Send a ping now (it has been `interval` since anything was received).
    Ping,
    /// The ping went unanswered for `timeout`: fail the connection.
    TimedOut(Duration),
    /// Keep-alive is off.
    Off,
}

/// Keep-alive state of one connection: when something was last received, and the ping in flight.
#[derive(Debug)]
pub(crate) struct KeepAliveState {
    config: Option<KeepAlive>,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

impl KeepAliveState {
    /// Starts counting at `now` (the connection was just established).
    pub(crate) fn new(config: Option<KeepAlive>, now: Instant) -> Self {
        KeepAliveState {
            config,
            last_rx: now,
            ping_sent: None,
        }
    }

    /// Bytes arrived at `now` (any bytes count: data, pongs, anything).
    pub(crate) fn on_receive(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// What to do at `now`. Returns [`Action::Ping`] once per idle interval; the caller sends the
    /// ping (its sending time is `now`).
    pub(crate) fn poll(&mut self, now: Instant) -> Action {
        let Some(ka) = self.config else {
            return Action::Off;
        };
        let deadline = match self.ping_sent {
            // Something arrived after the ping: the peer is alive; count a new interval.
            Some(sent) if self.last_rx > sent => {
                self.ping_sent = None;
                self.last_rx + ka.interval
            }
            Some(sent) => sent + ka.timeout,
            None => self.last_rx + ka.interval,
        };
        if now < deadline {
            return Action::WaitUntil(deadline);
        }
        if self.ping_sent.is_some() {
            return Action::TimedOut(ka.timeout);
        }
        self.ping_sent = Some(now);
        Action::Ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA: KeepAlive = KeepAlive {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
    };

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn off_never_pings() {
        let t0 = Instant::now();
        let mut ka = KeepAliveState::new(None, t0);
        assert_eq!(ka.poll(at(t0, 1_000_000)), Action::Off);
    }

    #[test]
    fn idle_connection_pings_after_the_interval_then_times_out() {
        let t0 = Instant::now();
        let mut ka = KeepAliveState::new(Some(KA), t0);
        assert_eq!(ka.poll(t0), Action::WaitUntil(at(t0, 10_000)));
        assert_eq!(ka.poll(at(t0, 9_999)), Action::WaitUntil(at(t0, 10_000)));
        assert_eq!(ka.poll(at(t0, 10_000)), Action::Ping);
        // The ping is in flight: the deadline is its timeout.
        assert_eq!(ka.poll(at(t0, 10_001)), Action::WaitUntil(at(t0, 13_000)));
        assert_eq!(ka.poll(at(t0, 12_999)), Action::WaitUntil(at(t0, 13_000)));
        assert_eq!(ka.poll(at(t0, 13_000)), Action::TimedOut(KA.timeout));
        // It stays timed out.
        assert_eq!(ka.poll(at(t0, 20_000)), Action::TimedOut(KA.timeout));
    }

    #[test]
    fn an_answer_after_the_ping_restarts_the_interval() {
        let t0 = Instant::now();
        let mut ka = KeepAliveState::new(Some(KA), t0);
        assert_eq!(ka.poll(at(t0, 10_000)), Action::Ping);
        ka.on_receive(at(t0, 11_000)); // the pong (or anything else)
        assert_eq!(ka.poll(at(t0, 12_000)), Action::WaitUntil(at(t0, 21_000)));
        assert_eq!(ka.poll(at(t0, 21_000)), Action::Ping);
    }

    #[test]
    fn receiving_at_the_ping_instant_is_not_an_answer() {
        // Only bytes received strictly after the ping count as its answer.
        let t0 = Instant::now();
        let mut ka = KeepAliveState::new(Some(KA), t0);
        assert_eq!(ka.poll(at(t0, 10_000)), Action::Ping);
        ka.on_receive(at(t0, 10_000));
        assert_eq!(ka.poll(at(t0, 13_000)), Action::TimedOut(KA.timeout));
    }

    #[test]
    fn traffic_keeps_pushing_the_ping_back() {
        let t0 = Instant::now();
        let mut ka = KeepAliveState::new(Some(KA), t0);
        for s in 1..=100u64 {
            ka.on_receive(at(t0, s * 5_000));
            assert_eq!(
                ka.poll(at(t0, s * 5_000 + 1)),
                Action::WaitUntil(at(t0, s * 5_000 + 10_000))
            );
        }
    }
}
