//! Prometheus metrics, registered once; handlers and sessions update them.
//!
//! Metric names and label values are a user interface (dashboards, alerts): add, never rename.
//! Session states, end reasons and media kinds get their label values from their enums' `label`
//! (`as_str`) alone. The label sets hold those `&'static str`s rather than the enums, because the
//! enums live in pure code that does not depend on `prometheus_client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::media::ingest::{IngestStats, Kind, PerKind};
use crate::media::simulcast::{LayerSelect, LayerStats, MAX_LAYERS, Switch};
use crate::whip::liveness::{EndReason, SessionState};

pub mod process;

/// `kind="audio|video"`, from [`Kind::as_str`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    kind: &'static str,
}

impl From<Kind> for KindLabel {
    fn from(kind: Kind) -> Self {
        Self {
            kind: kind.as_str(),
        }
    }
}

/// `layer="0".."3"`: a video layer by the order its rid's first packet came (simulcast); the
/// one video track of a publisher without simulcast is layer 0.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabel {
    layer: &'static str,
}

const LAYER_LABELS: [&str; MAX_LAYERS] = ["0", "1", "2", "3"];

/// `action="publish|read", result=...` of an auth decision: how it was allowed (`open`,
/// `token`, `stream_key`, `jwt`, `hook`) or why not (`unauthenticated`, `forbidden`,
/// `hook_error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabel {
    action: &'static str,
    result: &'static str,
}

/// `reason="owner|load|draining"` of a WHIP request answered 307 to another node
/// ([`crate::cluster::RedirectReason`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedirectLabel {
    reason: &'static str,
}

impl From<crate::cluster::RedirectReason> for RedirectLabel {
    fn from(reason: crate::cluster::RedirectReason) -> Self {
        Self {
            reason: reason.as_str(),
        }
    }
}

/// `reason="start|up|fallback"` of a change of the simulcast layer the outputs get.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwitchLabel {
    reason: &'static str,
}

impl From<Switch> for SwitchLabel {
    fn from(switch: Switch) -> Self {
        Self {
            reason: match switch {
                Switch::Start => "start",
                Switch::Up => "up",
                Switch::Fallback => "fallback",
            },
        }
    }
}

/// `state=...` of a session, from [`SessionState::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    state: &'static str,
}

impl From<SessionState> for StateLabel {
    fn from(state: SessionState) -> Self {
        Self {
            state: state.label(),
        }
    }
}

/// `reason=...` a session ended, from [`EndReason::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    reason: &'static str,
}

impl From<EndReason> for ReasonLabel {
    fn from(reason: EndReason) -> Self {
        Self {
            reason: reason.label(),
        }
    }
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

/// `file="playlist|init|segment|part|other"` and `status`: what HLS players asked for and got.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HlsRequestLabel {
    /// The kind of file asked for (`other`: not a name the output makes).
    pub file: &'static str,
    /// status code
    pub status: u16,
}

/// `result="ok|error"` of a reload of the HTTPS certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: &'static str,
}

/// Every metric the bridge exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` metrics, without the `bridge_` prefix.
    process: Registry,
    /// Live sessions by state.
    pub sessions: Family<StateLabel, Gauge>,
    /// Sessions ended, by reason.
    pub sessions_ended: Family<ReasonLabel, Counter>,
    /// HTTP requests by method and status.
    pub requests: Family<RequestLabel, Counter>,
    /// HLS requests by file kind and status: a 4xx for a listed or hinted file is a bug.
    pub hls_requests: Family<HlsRequestLabel, Counter>,
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
    /// POSTs refused with 503 for want of a set-up slot in time.
    pub setups_refused: Counter,
    /// How late the event loop ran at its last measure.
    pub loop_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// POSTs refused with 503 because the event loop ran too late.
    pub saturated_refused: Counter,
    /// 1 while the cluster's Redis answers (the last refresh reached it), 0 otherwise.
    pub cluster_redis_up: Gauge,
    /// Live nodes in the cluster, as last read (this one included).
    pub cluster_nodes: Gauge,
    /// WHIP requests answered 307 to another node, by reason.
    pub whip_redirects: Family<RedirectLabel, Counter>,
    /// Auth decisions by action and result.
    auth_decisions: Family<AuthLabel, Counter>,
    /// Per video layer: access units, keyframes, bytes.
    video_layers: LayerFamilies,
    /// Changes of the simulcast layer the outputs get, by reason.
    simulcast_switches: Family<SwitchLabel, Counter>,
    /// Reloads of the HTTPS certificate after its files changed, by result.
    tls_reloads: Family<ResultLabel, Counter>,
    /// UDP datagrams that matched no session.
    pub udp_unrouted: Counter,
    /// UDP datagrams dropped because a session's queue was full.
    pub udp_dropped: Counter,
    /// Publishers' flows read from a connected socket of their own.
    udp_flows: Gauge,
    /// Connected flow sockets that could not be made (the flow stays on the shared socket).
    udp_flow_failures: Counter,
    /// What the sessions' ingest pipelines produced and dropped, all sessions together.
    ingest: IngestCounters,
    /// The HLS output's, all streams together (per-stream series would grow with thousands of
    /// publishers; the playlists themselves say what each stream has).
    hls: crate::sink::hls::HlsMetrics,
    /// The sessions' Opus -> AAC transcoders, all sessions together.
    transcode: crate::sink::aac::TranscodeMetrics,
    /// The event webhooks', all URLs together.
    hooks: crate::hooks::HookMetrics,
    /// HLS uploads to object storage (`--hls-s3`), all streams together.
    hls_s3: crate::sink::s3::S3Metrics,
}

/// Upper bounds of the HLS listing delay histogram, in seconds: every 10 ms up to 300 ms (an
/// LL-HLS part is 200 ms, and a frame can wait a part and a frame), so `histogram_quantile` is
/// good to 10 ms there; coarse beyond, up to plain HLS segments and stalls.
fn listing_delay_buckets() -> impl Iterator<Item = f64> {
    (1..=30)
        .map(|tens_of_ms| f64::from(tens_of_ms) / 100.0)
        .chain([0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0])
}

/// Upper bounds of the HLS upload lag histogram, in seconds: a part (200 ms) should be stored
/// well before the next; beyond a segment the CDN serves a playlist behind the bridge's.
fn upload_lag_buckets() -> impl Iterator<Item = f64> {
    [
        0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0,
    ]
    .into_iter()
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
        let hls_requests = register(
            r,
            "hls_requests",
            "HLS requests by file kind (playlist, init, segment, part, other) and status",
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
        let setups_refused = register(
            r,
            "setups_refused",
            "POSTs refused with 503 and Retry-After because no session set-up slot came free \
             within --setup-queue-ms (the bridge could not keep up)",
            Counter::default(),
        );
        let loop_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register_with_unit(
            "event_loop_lag",
            "How late a 50 ms timer fires on the event loop (smoothed): the queueing every task sees",
            prometheus_client::registry::Unit::Seconds,
            loop_lag.clone(),
        );
        let saturated_refused = register(
            r,
            "saturated_refused",
            "POSTs refused with 503 and Retry-After because the event loop ran later than \
             --max-loop-lag-ms",
            Counter::default(),
        );
        let cluster_redis_up = register(
            r,
            "cluster_redis_up",
            "1 while the cluster's Redis answers (--cluster-redis), 0 while it does not; \
             never set without a cluster",
            Gauge::default(),
        );
        let cluster_nodes = register(
            r,
            "cluster_nodes",
            "Live nodes in the cluster as last read from Redis, this one included",
            Gauge::default(),
        );
        let whip_redirects = register(
            r,
            "whip_redirects",
            "WHIP requests answered 307 to another node of the cluster, by reason: owner (the \
             stream is live there), load (this node carries more), draining",
            Family::default(),
        );
        let auth_decisions = register(
            r,
            "auth_decisions",
            "Auth decisions by action (publish, read) and result: how allowed (open, token, \
             stream_key, jwt, hook) or why refused (unauthenticated, forbidden, hook_error)",
            Family::default(),
        );
        let video_layers = LayerFamilies {
            packets: register(
                r,
                "video_layer_packets",
                "RTP packets per video layer (simulcast: by the order the layers came; without \
                 simulcast the one track is layer 0)",
                Family::default(),
            ),
            units: register(
                r,
                "video_layer_units",
                "H.264 access units per video layer",
                Family::default(),
            ),
            keyframes: register(
                r,
                "video_layer_keyframes",
                "H.264 keyframes per video layer",
                Family::default(),
            ),
            bytes: register(
                r,
                "video_layer_bytes",
                "H.264 picture bytes per video layer",
                Family::default(),
            ),
        };
        let simulcast_switches = register(
            r,
            "simulcast_switches",
            "Changes of the video layer RTMP and index.m3u8 get: start (first choice), up (a \
             larger layer came), fallback (the chosen layer went silent)",
            Family::default(),
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
        let tls_reloads: Family<ResultLabel, Counter> = register(
            r,
            "tls_reloads",
            "Reloads of the HTTPS certificate after its files changed: ok (served from then on) \
             or error (the previous one still served)",
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
        let udp_flows = register(
            r,
            "udp_flows",
            "Publishers' flows read from a connected socket of their own",
            Gauge::default(),
        );
        let udp_flow_failures = register(
            r,
            "udp_flow_failures",
            "Connected flow sockets that could not be made (the flow stays on the shared socket)",
            Counter::default(),
        );
        let ingest = IngestCounters {
            video_units: register(
                r,
                "ingest_video_units",
                "H.264 access units the ingest pipelines produced",
                Counter::default(),
            ),
            audio_frames: register(
                r,
                "ingest_audio_frames",
                "Opus frames the ingest pipelines produced",
                Counter::default(),
            ),
            lost: register(
                r,
                "ingest_lost_packets",
                "RTP packets the reorder buffers gave up waiting for",
                Counter::default(),
            ),
            video_dropped: register(
                r,
                "ingest_video_units_dropped",
                "H.264 access units dropped whole (loss, malformed packets, no parameter sets)",
                Counter::default(),
            ),
            audio_dropped: register(
                r,
                "ingest_audio_packets_dropped",
                "Audio packets dropped (not valid Opus, or not timeable)",
                Counter::default(),
            ),
        };
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
            ladder_exits: register(
                r,
                "hls_ladder_exits",
                "Renditions that left a simulcast publisher's HLS ladder (main.m3u8), by reason: \
                 long_gop (a segment over twice the target), drift (segments a part or more \
                 away from the top layer's)",
                Family::default(),
            ),
        };
        let transcode = crate::sink::aac::TranscodeMetrics {
            active: register(
                r,
                "aac_transcoders_active",
                "Opus to AAC transcoders running (at most one per session, whatever its outputs)",
                Gauge::default(),
            ),
            frames: register(
                r,
                "aac_frames_encoded",
                "AAC frames encoded, all sessions",
                Counter::default(),
            ),
            drops: register(
                r,
                "aac_transcode_drops",
                "Units the transcoders dropped on a full queue (to the next keyframe), all sessions",
                Counter::default(),
            ),
        };
        let hooks = crate::hooks::HookMetrics {
            events: register(
                r,
                "hook_events",
                "Webhook events by event and result: delivered, failed (refused, or every retry \
                 failed) or dropped (the URL's queue was full), counted per hook URL",
                Family::default(),
            ),
            retries: register(
                r,
                "hook_retries",
                "Webhook POSTs tried again after a failed one",
                Counter::default(),
            ),
        };
        let hls_s3 = crate::sink::s3::S3Metrics {
            uploads: register(
                r,
                "hls_s3_uploads",
                "HLS objects uploaded to or deleted from storage (--hls-s3), by kind (media, \
                 playlist, delete) and result (ok, failed: every retry failed)",
                Family::default(),
            ),
            retries: register(
                r,
                "hls_s3_retries",
                "HLS storage requests tried again after a failed one",
                Counter::default(),
            ),
            dropped: register(
                r,
                "hls_s3_dropped",
                "Batches of HLS files not uploaded because the upload queue was full",
                Counter::default(),
            ),
            recovered: register(
                r,
                "hls_s3_recovered",
                "HLS media objects uploaded from the local folder after batches were dropped \
                 (a playlist listed them and storage lacked them)",
                Counter::default(),
            ),
            fenced: register(
                r,
                "hls_s3_fenced",
                "Streams this node stopped uploading because another node writes them (an \
                 object already there, 412, or a live playlist stored)",
                Counter::default(),
            ),
            lag: Histogram::new(upload_lag_buckets()),
        };
        registry.register_with_unit(
            "hls_s3_upload_lag",
            "From a batch of HLS files being queued for storage to its last request answered \
             (queueing, uploads and retries)",
            prometheus_client::registry::Unit::Seconds,
            hls_s3.lag.clone(),
        );
        registry.register_with_unit(
            "hls_listing_delay",
            "From a video frame reaching the HLS output to its playlist listing it (its LL-HLS \
             part, or its segment without LL-HLS)",
            prometheus_client::registry::Unit::Seconds,
            hls.listing_delay.clone(),
        );
        // Present from the start, so a scrape shows 0 rather than nothing.
        for state in SessionState::ALL {
            sessions.get_or_create(&state.into()).set(0);
        }
        for result in ["ok", "error"] {
            tls_reloads.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        for kind in [Kind::Audio, Kind::Video] {
            rtp_packets.get_or_create(&kind.into()).inc_by(0);
            rtp_bytes.get_or_create(&kind.into()).inc_by(0);
        }
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            process,
            sessions,
            sessions_ended,
            requests,
            hls_requests,
            rtp_packets,
            rtp_bytes,
            keyframes,
            keyframe_requests,
            setups_refused,
            loop_lag,
            saturated_refused,
            cluster_redis_up,
            cluster_nodes,
            whip_redirects,
            auth_decisions,
            video_layers,
            simulcast_switches,
            rtmp_up,
            rtmp_bytes,
            rtmp_frames,
            rtmp_drops,
            rtmp_reconnects,
            tls_reloads,
            udp_unrouted,
            udp_dropped,
            udp_flows,
            udp_flow_failures,
            ingest,
            hls,
            transcode,
            hooks,
            hls_s3,
        }
    }
}

/// OpenMetrics text to the classic Prometheus text format. prometheus-client writes only
/// OpenMetrics, whose counter families are named without `_total` in their `HELP` and `TYPE`
/// lines; the classic format names them as their samples are, has no `UNIT` lines and no `EOF`.
/// Samples are the same in both.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (family.to_owned(), kind),
                _ => (family.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(f, _)| *f == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# ") {
            // UNIT, EOF: OpenMetrics only.
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Metrics {
    /// The exposition in the classic Prometheus text format (0.0.4), for clients that do not
    /// ask for OpenMetrics: `curl`, `promtool check metrics`, older scrapers.
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Encoding into a String only fails if a label's Display fails, which ours cannot.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        out
    }

    /// The HTTPS certificate was loaded again after its files changed (`ok`), or did not load.
    pub fn tls_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The HLS outputs' metrics (shared handles).
    pub fn hls(&self) -> crate::sink::hls::HlsMetrics {
        self.hls.clone()
    }

    /// Counts an auth decision ([`crate::auth::Auth::check`]).
    pub fn auth_decision(&self, action: &'static str, result: &'static str) {
        self.auth_decisions
            .get_or_create(&AuthLabel { action, result })
            .inc();
    }

    /// The Opus -> AAC transcoders' metrics (shared handles).
    pub fn transcode(&self) -> crate::sink::aac::TranscodeMetrics {
        self.transcode.clone()
    }

    /// The event webhooks' metrics (shared handles).
    pub fn hooks(&self) -> crate::hooks::HookMetrics {
        self.hooks.clone()
    }

    /// The HLS uploads' metrics (shared handles).
    pub fn hls_s3(&self) -> crate::sink::s3::S3Metrics {
        self.hls_s3.clone()
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

    /// The handles one session updates, looked up once rather than per packet.
    pub fn session(&self) -> SessionMetrics {
        let rtp = PerKind::from_fn(|kind| {
            let label = KindLabel::from(kind);
            RtpCounters {
                packets: self.rtp_packets.get_or_create(&label).clone(),
                bytes: self.rtp_bytes.get_or_create(&label).clone(),
            }
        });
        SessionMetrics {
            sessions: self.sessions.clone(),
            sessions_ended: self.sessions_ended.clone(),
            rtp,
            keyframes: self.keyframes.clone(),
            keyframe_requests: self.keyframe_requests.clone(),
            ingest: self.ingest.clone(),
            reported: IngestStats::default(),
            video_layers: self.video_layers.clone(),
            layers: Vec::new(),
            simulcast_switches: self.simulcast_switches.clone(),
            udp_flows: self.udp_flows.clone(),
            udp_flow_failures: self.udp_flow_failures.clone(),
        }
    }
}

/// The exported [`IngestStats`] counters.
#[derive(Debug, Clone, Default)]
struct IngestCounters {
    video_units: Counter,
    audio_frames: Counter,
    lost: Counter,
    video_dropped: Counter,
    audio_dropped: Counter,
}

#[derive(Debug, Clone)]
struct LayerFamilies {
    packets: Family<LayerLabel, Counter>,
    units: Family<LayerLabel, Counter>,
    keyframes: Family<LayerLabel, Counter>,
    bytes: Family<LayerLabel, Counter>,
}

/// One layer's counters and what was last added to them.
#[derive(Debug)]
struct LayerCounters {
    packets: Counter,
    units: Counter,
    keyframes: Counter,
    bytes: Counter,
    reported: LayerStats,
}

#[derive(Debug, Clone)]
struct RtpCounters {
    packets: Counter,
    bytes: Counter,
}

/// The part of [`Metrics`] one session updates: all it needs, and nothing else.
#[derive(Debug)]
pub struct SessionMetrics {
    sessions: Family<StateLabel, Gauge>,
    sessions_ended: Family<ReasonLabel, Counter>,
    rtp: PerKind<RtpCounters>,
    keyframes: Counter,
    keyframe_requests: Counter,
    ingest: IngestCounters,
    /// The session's [`IngestStats`] as last added to the shared counters.
    reported: IngestStats,
    video_layers: LayerFamilies,
    /// The session's layers' handles, looked up once per layer.
    layers: Vec<LayerCounters>,
    simulcast_switches: Family<SwitchLabel, Counter>,
    udp_flows: Gauge,
    udp_flow_failures: Counter,
}

impl SessionMetrics {
    /// A flow moved to (`true`) or off (`false`) a connected socket of its own.
    pub fn flow(&self, connected: bool) {
        if connected {
            self.udp_flows.inc();
        } else {
            self.udp_flows.dec();
        }
    }

    /// A connected flow socket could not be made.
    pub fn flow_failed(&self) {
        self.udp_flow_failures.inc();
    }

    /// Moves the session between states (`None` = not counted: not started yet, or ended).
    pub fn state(&self, from: Option<SessionState>, to: Option<SessionState>) {
        if let Some(state) = from {
            self.sessions.get_or_create(&state.into()).dec();
        }
        if let Some(state) = to {
            self.sessions.get_or_create(&state.into()).inc();
        }
    }

    /// The session ended.
    pub fn ended(&self, reason: EndReason) {
        self.sessions_ended.get_or_create(&reason.into()).inc();
    }

    /// One RTP packet received, with `payload` bytes of payload.
    pub fn rtp_received(&self, kind: Kind, payload: usize) {
        let counters = self.rtp.get(kind);
        counters.packets.inc();
        counters.bytes.inc_by(payload as u64);
    }

    /// A keyframe request (PLI) went out.
    pub fn keyframe_requested(&self) {
        self.keyframe_requests.inc();
    }

    /// The video layer the outputs get changed.
    pub fn switched(&self, why: Switch) {
        self.simulcast_switches.get_or_create(&why.into()).inc();
    }

    /// Adds what the session's layers counted since the last call to the shared counters.
    pub fn layers(&mut self, select: &LayerSelect) {
        for (i, label) in LAYER_LABELS.iter().enumerate().take(select.layers()) {
            let Some(stats) = select.layer_stats(i) else {
                continue;
            };
            if self.layers.len() <= i {
                let label = LayerLabel { layer: label };
                let families = &self.video_layers;
                self.layers.push(LayerCounters {
                    packets: families.packets.get_or_create(&label).clone(),
                    units: families.units.get_or_create(&label).clone(),
                    keyframes: families.keyframes.get_or_create(&label).clone(),
                    bytes: families.bytes.get_or_create(&label).clone(),
                    reported: LayerStats::default(),
                });
            }
            let c = &mut self.layers[i];
            // Layer counters only grow; see `ingest`.
            c.packets
                .inc_by(stats.packets.saturating_sub(c.reported.packets));
            c.units.inc_by(stats.units.saturating_sub(c.reported.units));
            c.keyframes
                .inc_by(stats.keyframes.saturating_sub(c.reported.keyframes));
            c.bytes.inc_by(stats.bytes.saturating_sub(c.reported.bytes));
            c.reported = stats;
        }
    }

    /// Adds what the session's ingest counted since the last call to the shared counters.
    pub fn ingest(&mut self, stats: IngestStats) {
        // `IngestStats` never goes down (it keeps the counts of replaced tracks), so every
        // difference is an increase; the comparison only keeps a bug there from panicking.
        let before = std::mem::replace(&mut self.reported, stats);
        let add = |counter: &Counter, now: u64, then: u64| {
            if now > then {
                counter.inc_by(now - then);
            }
        };
        add(&self.keyframes, stats.keyframes, before.keyframes);
        add(
            &self.ingest.video_units,
            stats.video_units,
            before.video_units,
        );
        add(
            &self.ingest.audio_frames,
            stats.audio_frames,
            before.audio_frames,
        );
        add(&self.ingest.lost, stats.lost, before.lost);
        add(
            &self.ingest.video_dropped,
            stats.video_dropped,
            before.video_dropped,
        );
        add(
            &self.ingest.audio_dropped,
            stats.audio_dropped,
            before.audio_dropped,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(metrics: &Metrics, series: &str) -> Option<f64> {
        metrics.render().lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn the_classic_text_format_names_counters_as_their_samples() {
        let openmetrics = "# HELP bridge_rtp_packets RTP packets.\n\
            # TYPE bridge_rtp_packets counter\n\
            bridge_rtp_packets_total{kind=\"audio\"} 3\n\
            # HELP bridge_event_loop_lag_seconds How late.\n\
            # TYPE bridge_event_loop_lag_seconds gauge\n\
            # UNIT bridge_event_loop_lag_seconds seconds\n\
            bridge_event_loop_lag_seconds 0.001\n\
            # TYPE odd unknown\n\
            odd 1\n\
            # EOF\n";
        let text = "# HELP bridge_rtp_packets_total RTP packets.\n\
            # TYPE bridge_rtp_packets_total counter\n\
            bridge_rtp_packets_total{kind=\"audio\"} 3\n\
            # HELP bridge_event_loop_lag_seconds How late.\n\
            # TYPE bridge_event_loop_lag_seconds gauge\n\
            bridge_event_loop_lag_seconds 0.001\n\
            # TYPE odd untyped\n\
            odd 1\n";
        assert_eq!(openmetrics_to_text(openmetrics), text);
        // Every sample of the real exposition survives, in order.
        let metrics = Metrics::default();
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let full = metrics.render();
        assert_eq!(samples(&openmetrics_to_text(&full)), samples(&full));
    }

    /// The label values dashboards know, spelled as they were before the enums.
    #[test]
    fn session_series_keep_their_names() {
        let metrics = Metrics::default();
        let session = metrics.session();
        assert_eq!(
            value(&metrics, "bridge_sessions{state=\"connecting\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&metrics, "bridge_sessions{state=\"connected\"}"),
            Some(0.0)
        );
        session.state(None, Some(SessionState::Connecting));
        session.state(
            Some(SessionState::Connecting),
            Some(SessionState::Connected),
        );
        assert_eq!(
            value(&metrics, "bridge_sessions{state=\"connected\"}"),
            Some(1.0)
        );
        for reason in EndReason::ALL {
            session.ended(reason);
            let series = format!(
                "bridge_sessions_ended_total{{reason=\"{}\"}}",
                reason.label()
            );
            assert_eq!(value(&metrics, &series), Some(1.0), "{series}");
        }
        session.rtp_received(Kind::Video, 1200);
        assert_eq!(
            value(&metrics, "bridge_rtp_packets_total{kind=\"video\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&metrics, "bridge_rtp_bytes_total{kind=\"video\"}"),
            Some(1200.0)
        );
        assert_eq!(
            value(&metrics, "bridge_rtp_packets_total{kind=\"audio\"}"),
            Some(0.0)
        );
    }

    /// The standard process metrics, as the Prometheus client libraries name them.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported() {
        let metrics = Metrics::default();
        let text = metrics.render();
        for (name, kind) in [
            ("process_cpu_seconds", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} {kind}:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        let cpu = value(&metrics, "process_cpu_seconds_total").unwrap_or(-1.0);
        assert!((0.0..1e6).contains(&cpu), "{cpu}");
        let rss = value(&metrics, "process_resident_memory_bytes").unwrap_or(0.0);
        let virt = value(&metrics, "process_virtual_memory_bytes").unwrap_or(0.0);
        assert!(rss > 1e5 && rss <= virt, "rss {rss} virtual {virt}");
        let fds = value(&metrics, "process_open_fds").unwrap_or(0.0);
        assert!(fds >= 3.0, "{fds}");
        let start = value(&metrics, "process_start_time_seconds").unwrap_or(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        assert!(
            start > 1.5e9 && start <= now + 1.0,
            "start {start} now {now}"
        );
        // The bridge's own series keep their prefix.
        assert!(text.contains("bridge_rtp_packets_total"));
    }

    #[test]
    fn ingest_stats_are_added_once() {
        let metrics = Metrics::default();
        let mut a = metrics.session();
        let mut b = metrics.session();
        let stats = |video_units, keyframes, lost| IngestStats {
            video_units,
            keyframes,
            lost,
            ..IngestStats::default()
        };
        a.ingest(stats(10, 1, 0));
        a.ingest(stats(30, 1, 2));
        b.ingest(stats(5, 1, 1));
        assert_eq!(
            value(&metrics, "bridge_ingest_video_units_total"),
            Some(35.0)
        );
        assert_eq!(value(&metrics, "bridge_keyframes_total"), Some(2.0));
        assert_eq!(
            value(&metrics, "bridge_ingest_lost_packets_total"),
            Some(3.0)
        );
        assert_eq!(
            value(&metrics, "bridge_ingest_audio_frames_total"),
            Some(0.0)
        );
    }
}
