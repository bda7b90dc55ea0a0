//! Prometheus metrics, registered once; handlers and sessions update them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `kind="audio|video"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// audio or video
    pub kind: &'static str,
}

/// `state=...` of a session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// connecting, connected
    pub state: &'static str,
}

/// `reason=...` a session ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// delete, takeover, ice_failed, closed, connect_timeout, shutdown
    pub reason: &'static str,
}

/// `method`, `status` of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// HTTP method
    pub method: String,
    /// status code
    pub status: u16,
}

/// Every metric the bridge exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Live sessions by state.
    pub sessions: Family<StateLabel, Gauge>,
    /// Sessions ended, by reason.
    pub sessions_ended: Family<ReasonLabel, Counter>,
    /// HTTP requests by method and status.
    pub requests: Family<RequestLabel, Counter>,
    /// RTP packets received by media kind.
    pub rtp_packets: Family<KindLabel, Counter>,
    /// RTP payload bytes received by media kind.
    pub rtp_bytes: Family<KindLabel, Counter>,
    /// H.264 keyframes (IDR access units) seen.
    pub keyframes: Counter,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: Counter,
    /// UDP datagrams that matched no session.
    pub udp_unrouted: Counter,
    /// UDP datagrams dropped because a session's queue was full.
    pub udp_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bridge");
        let sessions = Family::<StateLabel, Gauge>::default();
        let sessions_ended = Family::<ReasonLabel, Counter>::default();
        let requests = Family::<RequestLabel, Counter>::default();
        let rtp_packets = Family::<KindLabel, Counter>::default();
        let rtp_bytes = Family::<KindLabel, Counter>::default();
        let keyframes = Counter::default();
        let keyframe_requests = Counter::default();
        let udp_unrouted = Counter::default();
        let udp_dropped = Counter::default();
        registry.register("sessions", "Live WHIP sessions by state", sessions.clone());
        registry.register(
            "sessions_ended",
            "WHIP sessions ended, by reason",
            sessions_ended.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method and status",
            requests.clone(),
        );
        registry.register(
            "rtp_packets",
            "RTP packets received by media kind",
            rtp_packets.clone(),
        );
        registry.register(
            "rtp_bytes",
            "RTP payload bytes received by media kind",
            rtp_bytes.clone(),
        );
        registry.register("keyframes", "H.264 keyframes received", keyframes.clone());
        registry.register(
            "keyframe_requests",
            "Keyframe requests (PLI) sent to publishers",
            keyframe_requests.clone(),
        );
        registry.register(
            "udp_unrouted",
            "UDP datagrams matching no session",
            udp_unrouted.clone(),
        );
        registry.register(
            "udp_dropped",
            "UDP datagrams dropped on a full session queue",
            udp_dropped.clone(),
        );
        for state in ["connecting", "connected"] {
            // Present from the start, so a scrape shows 0 rather than nothing.
            sessions.get_or_create(&StateLabel { state }).set(0);
        }
        for kind in ["audio", "video"] {
            rtp_packets.get_or_create(&KindLabel { kind }).inc_by(0);
            rtp_bytes.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        Self {
            registry,
            sessions,
            sessions_ended,
            requests,
            rtp_packets,
            rtp_bytes,
            keyframes,
            keyframe_requests,
            udp_unrouted,
            udp_dropped,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails if a label's Display fails, which ours cannot.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Moves one session between states (`None` = not counted).
    pub fn session_state(&self, from: Option<&'static str>, to: Option<&'static str>) {
        if let Some(state) = from {
            self.sessions.get_or_create(&StateLabel { state }).dec();
        }
        if let Some(state) = to {
            self.sessions.get_or_create(&StateLabel { state }).inc();
        }
    }
}
