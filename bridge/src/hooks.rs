//! Event webhooks (`--hook-url`): who is live, and where. Each event is POSTed as one JSON
//! object to every hook URL: `publish_start` when a session is created and answered (its 201),
//! `publish_stop` when it has ended and released its outputs, `rtmp_up` / `rtmp_down` when an RTMP
//! target accepts the publish and when that connection ends, `hls_ready` when the stream's
//! playlist first has media to serve.
//!
//! Decisions, and why:
//!
//! - Emitting never waits: the event is serialized once and offered to each URL's bounded queue
//!   ([`QUEUE`]) with `try_send`; a full queue drops it (counted and logged). Sessions and outputs
//!   call [`SessionHooks::emit`] on their media paths, so a hook that hangs must cost them nothing.
//! - One delivery task per URL, one event at a time: a hook sees a stream's events in the order
//!   they happened (the next waits until the one before is delivered or given up), and a slow
//!   URL delays only its own queue.
//! - Retries ([`retry`]): up to [`ATTEMPTS`] tries, [`BACKOFF_START`] doubling between them; a 2xx
//!   is delivered, a 4xx other than 408 and 429 is the hook refusing the event (given up at once),
//!   a 5xx, 408, 429, a timeout or a transport error is tried again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::{StatusCode, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::WebhookSettings;
use crate::mux::hls::playlist::format_rfc3339;
use crate::outbound::HttpClient;

/// Events waiting per hook URL before new ones are dropped.
pub const QUEUE: usize = 1024;
/// Tries per event and URL.
pub const ATTEMPTS: u32 = 4;
/// Wait before the second try; doubled before each further one.
pub const BACKOFF_START: Duration = Duration::from_millis(250);

/// One event, as its JSON object says it (beside `stream`, `session`, `node` and `time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The session was created and its offer answered (the POST's 201).
    PublishStart,
    /// The session ended and released its outputs.
    PublishStop {
        /// Why ([`EndReason::label`](crate::whip::liveness::EndReason::label)).
        reason: &'static str,
        /// From the answer to the end, milliseconds.
        duration_ms: u64,
        /// RTP payload bytes received.
        bytes: u64,
    },
    /// An RTMP target accepted the publish.
    RtmpUp {
        /// The target URL, its stream key hidden.
        target: String,
    },
    /// An RTMP target's connection ended.
    RtmpDown {
        /// The target URL, its stream key hidden.
        target: String,
        /// `ended`: the session ended and the bridge unpublished; `lost`: the connection
        /// failed (the bridge redials, and a new `rtmp_up` follows when it is back).
        reason: &'static str,
        /// What failed, when lost.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The stream's HLS playlist has media to serve.
    HlsReady {
        /// Its path on this bridge's HTTP address.
        playlist: String,
    },
}

impl Event {
    /// The `event` value, also the metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PublishStart => "publish_start",
            Self::PublishStop { .. } => "publish_stop",
            Self::RtmpUp { .. } => "rtmp_up",
            Self::RtmpDown { .. } => "rtmp_down",
            Self::HlsReady { .. } => "hls_ready",
        }
    }

    /// Every event name, for series present from the start.
    const NAMES: [&'static str; 5] = [
        "publish_start",
        "publish_stop",
        "rtmp_up",
        "rtmp_down",
        "hls_ready",
    ];
}

/// The JSON object POSTed: the event and who it is about.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    event: &'a Event,
    stream: &'a str,
    session: &'a str,
    /// The bridge that sends it (its HTTP address).
    node: &'a str,
    /// When it happened (RFC 3339, UTC, milliseconds).
    time: String,
}

/// What the hook's answer (or its absence) means for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: done.
    Delivered,
    /// Worth another try (5xx, 408, 429, no answer).
    Retry,
    /// The hook refused it (any other status): trying again would get the same.
    GiveUp,
}

/// Judges one attempt; `None` is no answer at all (timeout, transport error, oversized body).
pub fn verdict(status: Option<StatusCode>) -> Verdict {
    match status {
        Some(s) if s.is_success() => Verdict::Delivered,
        Some(StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS) | None => Verdict::Retry,
        Some(s) if s.is_server_error() => Verdict::Retry,
        Some(_) => Verdict::GiveUp,
    }
}

/// The wait before try `attempt + 1` (0-based) after a failed try `attempt`; `None` once the
/// attempts are used up.
pub fn retry(attempt: u32) -> Option<Duration> {
    (attempt + 1 < ATTEMPTS).then(|| BACKOFF_START * 2u32.saturating_pow(attempt))
}

/// `event`, `result="delivered|failed|dropped"` of a webhook event (per URL).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    event: &'static str,
    result: &'static str,
}

/// The webhooks' metrics (shared handles).
#[derive(Debug, Clone, Default)]
pub struct HookMetrics {
    /// Events by name and result, counted per URL.
    pub events: Family<HookLabel, Counter>,
    /// Tries after a first one failed.
    pub retries: Counter,
}

impl HookMetrics {
    fn count(&self, event: &'static str, result: &'static str) {
        self.events
            .get_or_create(&HookLabel { event, result })
            .inc();
    }
}

/// An event on its way to one URL.
#[derive(Debug)]
struct Queued {
    event: &'static str,
    body: Bytes,
    stream: Arc<str>,
    session: Arc<str>,
}

#[derive(Debug)]
struct Inner {
    queues: Vec<mpsc::Sender<Queued>>,
    node: String,
    metrics: HookMetrics,
    /// Events queued or being delivered, all URLs together (see [`Hooks::flush`]).
    pending: Arc<AtomicUsize>,
    /// Events dropped on a full queue, all URLs together: logged at 1, 2, 4, 8... so that a
    /// dead hook under thousands of sessions does not flood the log.
    dropped: AtomicUsize,
}

/// The bridge's webhooks: cheap to clone, and doing nothing without a hook URL.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    inner: Option<Arc<Inner>>,
}

impl Hooks {
    /// Starts one delivery task per URL (on the current tokio runtime); `node` names this bridge
    /// in every event.
    pub fn new(
        settings: &WebhookSettings,
        node: String,
        metrics: HookMetrics,
        client: &HttpClient,
    ) -> Self {
        Self::with_queue(settings, node, metrics, client, QUEUE)
    }

    fn with_queue(
        settings: &WebhookSettings,
        node: String,
        metrics: HookMetrics,
        client: &HttpClient,
        queue: usize,
    ) -> Self {
        if settings.urls.is_empty() {
            return Self::default();
        }
        for event in Event::NAMES {
            for result in ["delivered", "failed", "dropped"] {
                metrics
                    .events
                    .get_or_create(&HookLabel { event, result })
                    .inc_by(0);
            }
        }
        let client = client.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let queues = settings
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(queue);
                let delivery = Delivery {
                    client: client.clone(),
                    url: url.clone(),
                    timeout: settings.timeout,
                    metrics: metrics.clone(),
                    pending: pending.clone(),
                };
                tokio::spawn(delivery.run(rx));
                tx
            })
            .collect();
        Self {
            inner: Some(Arc::new(Inner {
                queues,
                node,
                metrics,
                pending,
                dropped: AtomicUsize::new(0),
            })),
        }
    }

    /// The handle a session and its outputs emit their events with.
    pub fn for_session(&self, stream: &str, session: &str) -> SessionHooks {
        SessionHooks {
            hooks: self.clone(),
            stream: stream.into(),
            session: session.into(),
        }
    }

    /// Waits until every queued event is delivered or given up, or `timeout` has passed: at
    /// shutdown, so that the last `publish_stop`s are not lost with the process.
    pub async fn flush(&self, timeout: Duration) {
        let Some(inner) = &self.inner else { return };
        let deadline = tokio::time::Instant::now() + timeout;
        while inner.pending.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pending = inner.pending.load(Ordering::Acquire),
                    "webhook events not delivered before shutdown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One session's events: the hooks, the stream and the session id (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct SessionHooks {
    hooks: Hooks,
    stream: Arc<str>,
    session: Arc<str>,
}

impl SessionHooks {
    /// Queues `event` for every hook URL; never waits (a full queue drops it, counted).
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.hooks.inner else {
            return;
        };
        let name = event.name();
        let envelope = Envelope {
            event: &event,
            stream: &self.stream,
            session: &self.session,
            node: &inner.node,
            time: format_rfc3339(SystemTime::now()).unwrap_or_default(),
        };
        let body = match serde_json::to_vec(&envelope) {
            Ok(body) => Bytes::from(body),
            // Strings and numbers only: serializing cannot fail.
            Err(err) => {
                tracing::error!(%err, event = name, "webhook event not serialized");
                return;
            }
        };
        for queue in &inner.queues {
            let queued = Queued {
                event: name,
                body: body.clone(),
                stream: self.stream.clone(),
                session: self.session.clone(),
            };
            // Counted before it is queued: the delivery task may finish it at once.
            inner.pending.fetch_add(1, Ordering::AcqRel);
            if queue.try_send(queued).is_err() {
                inner.pending.fetch_sub(1, Ordering::AcqRel);
                inner.metrics.count(name, "dropped");
                let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        event = name,
                        stream = %self.stream,
                        session = %self.session,
                        dropped,
                        "webhook queue full: event dropped"
                    );
                }
            }
        }
    }
}

/// One URL's delivery task.
#[derive(Debug)]
struct Delivery {
    client: HttpClient,
    url: Uri,
    timeout: Duration,
    metrics: HookMetrics,
    pending: Arc<AtomicUsize>,
}

impl Delivery {
    /// Delivers the queue's events in order until every [`Hooks`] handle is gone.
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        let hook = shown(&self.url);
        while let Some(q) = queue.recv().await {
            let result = self.deliver(&q, &hook).await;
            self.metrics.count(q.event, result);
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Tries until delivered or given up; the metric result.
    async fn deliver(&self, q: &Queued, hook: &str) -> &'static str {
        let mut attempt = 0;
        loop {
            let answer = self
                .client
                .post_json(&self.url, q.body.clone(), self.timeout)
                .await;
            let why = || match &answer {
                Ok(a) => a.status.to_string(),
                Err(err) => err.to_string(),
            };
            match verdict(answer.as_ref().ok().map(|a| a.status)) {
                Verdict::Delivered => return "delivered",
                Verdict::GiveUp => {
                    tracing::warn!(%hook, event = q.event, stream = %q.stream, session = %q.session,
                        why = why(), "webhook refused the event");
                    return "failed";
                }
                Verdict::Retry => match retry(attempt) {
                    Some(wait) => {
                        tracing::debug!(%hook, event = q.event, stream = %q.stream,
                            session = %q.session, why = why(), ?wait, "webhook failed; retrying");
                        self.metrics.retries.inc();
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    None => {
                        tracing::warn!(%hook, event = q.event, stream = %q.stream,
                            session = %q.session, why = why(), attempts = ATTEMPTS,
                            "webhook failed; event given up");
                        return "failed";
                    }
                },
            }
        }
    }
}

/// A hook URL as logged: without user info or query, which may hold credentials.
fn shown(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or_default();
    match url.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}{}", url.path()),
        None => format!("{scheme}://{host}{}", url.path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(event: &Event) -> serde_json::Value {
        let envelope = Envelope {
            event,
            stream: "cam",
            session: "ab12",
            node: "127.0.0.1:8080",
            time: "2024-05-01T12:34:56.789Z".into(),
        };
        serde_json::to_value(&envelope).unwrap()
    }

    /// The shapes the README shows, field for field.
    #[test]
    fn events_are_flat_json_objects() {
        let common = r#""stream":"cam","session":"ab12","node":"127.0.0.1:8080","time":"2024-05-01T12:34:56.789Z""#;
        let cases = [
            (Event::PublishStart, r#"{"event":"publish_start",COMMON}"#),
            (
                Event::PublishStop {
                    reason: "delete",
                    duration_ms: 61_250,
                    bytes: 7_340_032,
                },
                r#"{"event":"publish_stop","reason":"delete","duration_ms":61250,"bytes":7340032,COMMON}"#,
            ),
            (
                Event::RtmpUp {
                    target: "rtmp://127.0.0.1:1935/live/***".into(),
                },
                r#"{"event":"rtmp_up","target":"rtmp://127.0.0.1:1935/live/***",COMMON}"#,
            ),
            (
                Event::RtmpDown {
                    target: "rtmp://127.0.0.1:1935/live/***".into(),
                    reason: "lost",
                    error: Some("connection closed".into()),
                },
                r#"{"event":"rtmp_down","target":"rtmp://127.0.0.1:1935/live/***","reason":"lost","error":"connection closed",COMMON}"#,
            ),
            (
                Event::RtmpDown {
                    target: "rtmp://127.0.0.1:1935/live/***".into(),
                    reason: "ended",
                    error: None,
                },
                r#"{"event":"rtmp_down","target":"rtmp://127.0.0.1:1935/live/***","reason":"ended",COMMON}"#,
            ),
            (
                Event::HlsReady {
                    playlist: "/hls/cam/index.m3u8".into(),
                },
                r#"{"event":"hls_ready","playlist":"/hls/cam/index.m3u8",COMMON}"#,
            ),
        ];
        for (event, expected) in cases {
            let expected: serde_json::Value =
                serde_json::from_str(&expected.replace("COMMON", common)).unwrap();
            assert_eq!(json(&event), expected, "{event:?}");
            assert_eq!(json(&event)["event"], event.name());
            assert!(Event::NAMES.contains(&event.name()));
        }
    }

    #[test]
    fn what_is_retried_and_what_is_given_up() {
        let status = |code| Some(StatusCode::from_u16(code).unwrap());
        for (answer, expected) in [
            (status(200), Verdict::Delivered),
            (status(204), Verdict::Delivered),
            (status(400), Verdict::GiveUp),
            (status(404), Verdict::GiveUp),
            (status(301), Verdict::GiveUp),
            (status(408), Verdict::Retry),
            (status(429), Verdict::Retry),
            (status(500), Verdict::Retry),
            (status(503), Verdict::Retry),
            (None, Verdict::Retry),
        ] {
            assert_eq!(verdict(answer), expected, "{answer:?}");
        }
        let waits: Vec<_> = (0..6).map(retry).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            waits,
            [
                Some(ms(250)),
                Some(ms(500)),
                Some(ms(1000)),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn logged_urls_hide_credentials() {
        let url =
            crate::outbound::parse_url("https://u:secret@hooks.example:8443/live?token=x").unwrap();
        assert_eq!(shown(&url), "https://hooks.example:8443/live");
    }

    #[tokio::test]
    async fn without_urls_nothing_runs_and_emitting_is_free() {
        let hooks = Hooks::new(
            &WebhookSettings::default(),
            String::new(),
            HookMetrics::default(),
            &HttpClient::default(),
        );
        assert!(hooks.inner.is_none());
        hooks.for_session("s", "id").emit(Event::PublishStart);
        hooks.flush(Duration::ZERO).await;
    }

    /// A hook that accepts and never answers: events beyond the queue are dropped at once, and
    /// emitting never waits.
    #[tokio::test]
    async fn a_full_queue_drops_and_never_blocks() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let settings = WebhookSettings {
            urls: vec![crate::outbound::parse_url(&format!("http://{addr}/h")).unwrap()],
            timeout: Duration::from_secs(30),
        };
        let metrics = HookMetrics::default();
        let hooks = Hooks::with_queue(
            &settings,
            "n".into(),
            metrics.clone(),
            &HttpClient::default(),
            2,
        );
        let session = hooks.for_session("s", "id");
        let started = std::time::Instant::now();
        session.emit(Event::PublishStart);
        // Let the delivery task take the first event off the queue.
        let _conn = silent.accept().await.unwrap();
        for _ in 0..10 {
            session.emit(Event::PublishStart);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let dropped = metrics
            .events
            .get_or_create(&HookLabel {
                event: "publish_start",
                result: "dropped",
            })
            .get();
        assert_eq!(dropped, 8, "one in flight, two queued");
        let pending = hooks
            .inner
            .as_ref()
            .unwrap()
            .pending
            .load(Ordering::Acquire);
        assert_eq!(pending, 3);
    }
}
