//! Prometheus metrics, registered once; handlers and sessions update them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

/// `stream`, `target` of an output (the target URL with its stream key hidden).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// WHIP stream name
    pub stream: String,
    /// redacted target URL
    pub target: String,
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
    /// RTMP target publishing (1) or not (0).
    pub rtmp_up: Family<TargetLabel, Gauge>,
    /// FLV tag bytes sent per RTMP target.
    pub rtmp_bytes: Family<TargetLabel, Counter>,
    /// Video frames sent per RTMP target.
    pub rtmp_frames: Family<TargetLabel, Counter>,
    /// Units dropped per RTMP target (full queue, or no connection).
    pub rtmp_drops: Family<TargetLabel, Counter>,
    /// Reconnects per RTMP target.
    pub rtmp_reconnects: Family<TargetLabel, Counter>,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: Counter,
    /// UDP datagrams that matched no session.
    pub udp_unrouted: Counter,
    /// UDP datagrams dropped because a session's queue was full.
    pub udp_dropped: Counter,
    /// The HLS output's, all streams together (per-stream series would grow with thousands of
    /// publishers; the playlists themselves say what each stream has).
    hls: crate::sink::hls::HlsMetrics,
}

/// Upper bounds of the HLS listing delay histogram, in seconds: every 10 ms up to 300 ms (an
/// LL-HLS part is 200 ms, and a frame can wait a part and a frame), so `histogram_quantile` is
/// good to 10 ms there; coarse beyond, up to plain HLS segments and stalls.
fn listing_delay_buckets() -> impl Iterator<Item = f64> {
    (1..=30)
        .map(|tens_of_ms| f64::from(tens_of_ms) / 100.0)
        .chain([0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0])
}

/// Registers `metric` as `bridge_<name>` and hands back a handle to it.
fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bridge");
        let r = &mut registry;
        let sessions: Family<StateLabel, Gauge> = register(
            r,
            "sessions",
            "Live WHIP sessions by state",
            Family::default(),
        );
        let sessions_ended = register(
            r,
            "sessions_ended",
            "WHIP sessions ended, by reason",
            Family::default(),
        );
        let requests = register(
            r,
            "http_requests",
            "HTTP requests by method and status",
            Family::default(),
        );
        let rtp_packets: Family<KindLabel, Counter> = register(
            r,
            "rtp_packets",
            "RTP packets received by media kind",
            Family::default(),
        );
        let rtp_bytes: Family<KindLabel, Counter> = register(
            r,
            "rtp_bytes",
            "RTP payload bytes received by media kind",
            Family::default(),
        );
        let keyframes = register(
            r,
            "keyframes",
            "H.264 keyframes received",
            Counter::default(),
        );
        let keyframe_requests = register(
            r,
            "keyframe_requests",
            "Keyframe requests (PLI) sent to publishers",
            Counter::default(),
        );
        let rtmp_up = register(
            r,
            "rtmp_up",
            "RTMP target publishing (1) or not (0)",
            Family::default(),
        );
        let rtmp_bytes = register(
            r,
            "rtmp_bytes",
            "FLV tag bytes sent per RTMP target",
            Family::default(),
        );
        let rtmp_frames = register(
            r,
            "rtmp_frames",
            "Video frames sent per RTMP target",
            Family::default(),
        );
        let rtmp_drops = register(
            r,
            "rtmp_drops",
            "Units dropped per RTMP target (full queue, or no connection)",
            Family::default(),
        );
        let rtmp_reconnects = register(
            r,
            "rtmp_reconnects",
            "Reconnects per RTMP target",
            Family::default(),
        );
        let udp_unrouted = register(
            r,
            "udp_unrouted",
            "UDP datagrams matching no session",
            Counter::default(),
        );
        let udp_dropped = register(
            r,
            "udp_dropped",
            "UDP datagrams dropped on a full session queue",
            Counter::default(),
        );
        let hls = crate::sink::hls::HlsMetrics {
            segments: register(
                r,
                "hls_segments",
                "HLS segments listed, all streams",
                Counter::default(),
            ),
            parts: register(
                r,
                "hls_parts",
                "LL-HLS parts listed, all streams",
                Counter::default(),
            ),
            bytes: register(
                r,
                "hls_bytes",
                "HLS media bytes written (segments; parts are their pieces), all streams",
                Counter::default(),
            ),
            drops: register(
                r,
                "hls_drops",
                "Units the HLS outputs dropped on a full queue (to the next keyframe), all streams",
                Counter::default(),
            ),
            listing_delay: Histogram::new(listing_delay_buckets()),
        };
        registry.register_with_unit(
            "hls_listing_delay",
            "From a video frame reaching the HLS output to its playlist listing it (its LL-HLS \
             part, or its segment without LL-HLS)",
            prometheus_client::registry::Unit::Seconds,
            hls.listing_delay.clone(),
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
            rtmp_up,
            rtmp_bytes,
            rtmp_frames,
            rtmp_drops,
            rtmp_reconnects,
            udp_unrouted,
            udp_dropped,
            hls,
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

    /// The HLS outputs' metrics (shared handles).
    pub fn hls(&self) -> crate::sink::hls::HlsMetrics {
        self.hls.clone()
    }

    /// The per-target metrics of one RTMP output.
    pub fn rtmp_target(&self, label: &TargetLabel) -> crate::sink::rtmp::TargetMetrics {
        crate::sink::rtmp::TargetMetrics {
            up: self.rtmp_up.get_or_create(label).clone(),
            bytes: self.rtmp_bytes.get_or_create(label).clone(),
            frames: self.rtmp_frames.get_or_create(label).clone(),
            drops: self.rtmp_drops.get_or_create(label).clone(),
            reconnects: self.rtmp_reconnects.get_or_create(label).clone(),
        }
    }

    /// Forgets an ended output's series, so label sets do not pile up over thousands of
    /// sessions.
    pub fn forget_rtmp_target(&self, label: &TargetLabel) {
        self.rtmp_up.remove(label);
        self.rtmp_bytes.remove(label);
        self.rtmp_frames.remove(label);
        self.rtmp_drops.remove(label);
        self.rtmp_reconnects.remove(label);
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
