//! When a WHIP session is alive, and why it ended: the session's states and end reasons, and the
//! timing rules that end a session on their own (connect timeout, consent freshness, the DTLS
//! close) or pace its keyframe requests. Pure: every input carries `now`, and the session
//! drives it str0m-style with [`Liveness::poll_timeout`] and [`Liveness::handle_timeout`].

use std::time::{Duration, Instant};

/// After a DTLS alert, this much silence from the peer means it has really gone. A spoofed alert
/// cannot end a session: the real publisher's next packet (media or consent check) cancels it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Keyframe requests (PLI) are sent at most this often, however many reasons there are.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Where a session is in its life, as `/metrics` counts live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Answered, waiting for ICE and DTLS to complete.
    Connecting,
    /// ICE and DTLS are up (an ICE restart does not go back to connecting).
    Connected,
}

impl SessionState {
    /// Every state, for metrics that are present from the start.
    pub const ALL: [Self; 2] = [Self::Connecting, Self::Connected];

    /// The metric label value; the only place a state is spelled.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The publisher sent DELETE.
    Delete,
    /// Another publisher took the stream over.
    Takeover,
    /// The bridge is shutting down.
    Shutdown,
    /// ICE and DTLS did not complete within the connect timeout (also after an ICE restart).
    ConnectTimeout,
    /// The publisher went silent for the consent timeout (RFC 7675 consent freshness).
    ConsentTimeout,
    /// The publisher sent a DTLS alert and then nothing for [`CLOSE_GRACE`].
    DtlsClosed,
    /// The peer connection failed (ICE failure).
    IceFailed,
    /// The peer connection closed.
    Closed,
}

impl EndReason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Self; 8] = [
        Self::Delete,
        Self::Takeover,
        Self::Shutdown,
        Self::ConnectTimeout,
        Self::ConsentTimeout,
        Self::DtlsClosed,
        Self::IceFailed,
        Self::Closed,
    ];

    /// The metric label value and log field; the only place a reason is spelled.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Takeover => "takeover",
            Self::Shutdown => "shutdown",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConsentTimeout => "consent_timeout",
            Self::DtlsClosed => "dtls_closed",
            Self::IceFailed => "ice_failed",
            Self::Closed => "closed",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The timing rules' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How long ICE and DTLS may take, from the answer or an ICE restart.
    pub connect_timeout: Duration,
    /// How long a connected publisher may stay silent.
    pub consent_timeout: Duration,
    /// Ask for a keyframe this often even when nothing else asks (`None`: only when needed).
    pub keyframe_interval: Option<Duration>,
}

/// One session's liveness: its state and the deadlines that end it.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    state: SessionState,
    /// Until ICE and DTLS complete (again, after a restart).
    connect_deadline: Option<Instant>,
    /// The latest datagram from the publisher, of any kind.
    last_rx: Instant,
    /// When the publisher sent a DTLS alert with nothing after it.
    alert_at: Option<Instant>,
    /// The latest keyframe request.
    last_request: Option<Instant>,
}

impl Liveness {
    /// A session answered at `now`: connecting, with the connect timeout running.
    pub fn new(config: LivenessConfig, now: Instant) -> Self {
        Self {
            config,
            state: SessionState::Connecting,
            connect_deadline: Some(now + config.connect_timeout),
            last_rx: now,
            alert_at: None,
            last_request: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The earliest instant at which [`Self::handle_timeout`] may end the session. Keyframe
    /// pacing is not a deadline: it is checked whenever the session wakes, and media wakes it
    /// many times a second.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Consent applies once connected; before that, the connect timeout decides.
        let consent = (self.state == SessionState::Connected)
            .then(|| self.last_rx + self.config.consent_timeout);
        let closing = self.alert_at.map(|t| t + CLOSE_GRACE);
        [self.connect_deadline, closing, consent]
            .into_iter()
            .flatten()
            .min()
    }

    /// Why the session ends at `now`, if a deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<EndReason> {
        if self.connect_deadline.is_some_and(|d| now >= d) {
            return Some(EndReason::ConnectTimeout);
        }
        if self.alert_at.is_some_and(|t| now >= t + CLOSE_GRACE) {
            return Some(EndReason::DtlsClosed);
        }
        if self.state == SessionState::Connected
            && now >= self.last_rx + self.config.consent_timeout
        {
            return Some(EndReason::ConsentTimeout);
        }
        None
    }

    /// ICE and DTLS completed. Returns the state left if this changed the state.
    pub fn connected(&mut self) -> Option<SessionState> {
        self.connect_deadline = None;
        let from = self.state;
        self.state = SessionState::Connected;
        (from != self.state).then_some(from)
    }

    /// An ICE restart was answered at `now`: it must complete within the connect timeout. The
    /// state stays connected meanwhile (the old ICE session goes on).
    pub fn restarted(&mut self, now: Instant) {
        self.connect_deadline = Some(now + self.config.connect_timeout);
    }

    /// A datagram from the publisher at `now`; `dtls_alert` if it was a DTLS alert record.
    ///
    /// After the handshake a peer only sends alerts to close (close_notify) or to fail. An alert
    /// starts the [`CLOSE_GRACE`]; any other datagram cancels it. Before the session is
    /// connected, alerts are part of the handshake's business and start nothing.
    pub fn received(&mut self, now: Instant, dtls_alert: bool) {
        self.last_rx = now;
        self.alert_at = (self.state == SessionState::Connected && dtls_alert).then_some(now);
    }

    /// Whether to send a keyframe request at `now`; if so, it counts as sent. `wanted` says
    /// whether anything asks for one (video waits for a keyframe, an output restarted); the
    /// keyframe interval asks on its own. Requests are paced to [`KEYFRAME_REQUEST_INTERVAL`].
    pub fn keyframe_request(&mut self, now: Instant, wanted: bool) -> bool {
        let periodic = self
            .config
            .keyframe_interval
            .is_some_and(|every| self.last_request.is_none_or(|t| now >= t + every));
        let paced = self
            .last_request
            .is_some_and(|t| now < t + KEYFRAME_REQUEST_INTERVAL);
        if !(wanted || periodic) || paced {
            return false;
        }
        self.last_request = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: Duration = Duration::from_secs(10);
    const CONSENT: Duration = Duration::from_secs(30);

    fn config(keyframe_interval: Option<u64>) -> LivenessConfig {
        LivenessConfig {
            connect_timeout: CONNECT,
            consent_timeout: CONSENT,
            keyframe_interval: keyframe_interval.map(Duration::from_secs),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An input at an offset from the start, in milliseconds.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Connected,
        Restarted,
        Datagram,
        Alert,
    }

    /// A name, inputs at offsets (ms), then the deadline (ms) and what `handle_timeout` says at
    /// it (and that it says nothing just before).
    type DeadlineCase = (
        &'static str,
        &'static [(u64, Step)],
        Option<(u64, EndReason)>,
    );

    #[test]
    fn deadlines_and_end_reasons() {
        use EndReason::*;
        use Step::*;
        #[rustfmt::skip]
        let cases: &[DeadlineCase] = &[
            ("never connects", &[], Some((10_000, ConnectTimeout))),
            ("packets do not stop the connect timeout", &[(9_000, Datagram)], Some((10_000, ConnectTimeout))),
            ("connected: consent from the last datagram", &[(500, Connected), (4_000, Datagram)], Some((34_000, ConsentTimeout))),
            ("connected with no datagram yet: consent from the start", &[(500, Connected)], Some((30_000, ConsentTimeout))),
            ("alert before connecting starts nothing", &[(100, Alert)], Some((10_000, ConnectTimeout))),
            ("alert then silence", &[(500, Connected), (1_000, Alert)], Some((3_000, DtlsClosed))),
            ("a datagram after the alert cancels it", &[(500, Connected), (1_000, Alert), (1_500, Datagram)], Some((31_500, ConsentTimeout))),
            ("a second alert restarts the grace", &[(500, Connected), (1_000, Alert), (2_500, Alert)], Some((4_500, DtlsClosed))),
            ("restart runs the connect timeout again", &[(500, Connected), (20_000, Datagram), (20_000, Restarted), (29_000, Datagram)], Some((30_000, ConnectTimeout))),
            ("restart completes", &[(500, Connected), (1_000, Restarted), (2_000, Datagram), (2_000, Connected)], Some((32_000, ConsentTimeout))),
        ];
        for (name, steps, expected) in cases {
            let t0 = Instant::now();
            let mut live = Liveness::new(config(None), t0);
            for &(at, step) in *steps {
                let now = t0 + ms(at);
                match step {
                    Connected => {
                        live.connected();
                    }
                    Restarted => live.restarted(now),
                    Datagram => live.received(now, false),
                    Alert => live.received(now, true),
                }
            }
            let expected = expected.map(|(at, reason)| (t0 + ms(at), reason));
            assert_eq!(live.poll_timeout(), expected.map(|e| e.0), "{name}");
            if let Some((at, reason)) = expected {
                assert_eq!(live.handle_timeout(at - ms(1)), None, "{name}");
                assert_eq!(live.handle_timeout(at), Some(reason), "{name}");
            }
        }
    }

    #[test]
    fn connected_reports_the_change_once() {
        let t0 = Instant::now();
        let mut live = Liveness::new(config(None), t0);
        assert_eq!(live.state(), SessionState::Connecting);
        assert_eq!(live.connected(), Some(SessionState::Connecting));
        assert_eq!(live.state(), SessionState::Connected);
        live.restarted(t0 + ms(100));
        assert_eq!(live.connected(), None, "a restart does not leave connected");
    }

    /// A name, the keyframe interval (s), then `(offset ms, wanted, sent)` in order.
    type KeyframeCase = (&'static str, Option<u64>, &'static [(u64, bool, bool)]);

    #[test]
    fn keyframe_requests_are_paced() {
        #[rustfmt::skip]
        let cases: &[KeyframeCase] = &[
            ("nothing asks", None, &[(0, false, false), (5_000, false, false)]),
            ("at most once a second", None, &[(0, true, true), (500, true, false), (999, true, false), (1_000, true, true)]),
            ("not wanted, not sent; the next want is served at once", None, &[(0, true, true), (3_000, false, false), (3_100, true, true)]),
            ("interval asks on its own", Some(2), &[(0, false, true), (1_000, false, false), (1_999, false, false), (2_000, false, true)]),
            ("a wanted request resets the interval", Some(2), &[(0, false, true), (1_500, true, true), (2_000, false, false), (3_500, false, true)]),
        ];
        for (name, interval, steps) in cases {
            let t0 = Instant::now();
            let mut live = Liveness::new(config(*interval), t0);
            for &(at, wanted, sent) in *steps {
                assert_eq!(
                    live.keyframe_request(t0 + ms(at), wanted),
                    sent,
                    "{name} at {at} ms"
                );
            }
        }
    }

    /// These are metric label values, a user interface: renaming one breaks dashboards.
    #[test]
    fn labels_are_stable() {
        assert_eq!(
            SessionState::ALL.map(SessionState::label),
            ["connecting", "connected"]
        );
        assert_eq!(
            EndReason::ALL.map(EndReason::label),
            [
                "delete",
                "takeover",
                "shutdown",
                "connect_timeout",
                "consent_timeout",
                "dtls_closed",
                "ice_failed",
                "closed"
            ]
        );
    }
}
