//! `loadgen publish`: real media through a WHIP-to-RTMP bridge, timed frame by frame.
//!
//! N [`Publisher`]s send H.264 + Opus with a [`FrameStamp`] SEI in every video frame (the send
//! time and the frame number). With `--rtmp-listen`, a built-in RTMP server ([`ingest`]) takes
//! what the bridge pushes, finds the stamps again in the FLV video tags and measures each
//! frame's latency (`frame_rtmp`), each publisher's time to its first RTMP byte (`first_rtmp`)
//! and the frames lost, reordered and duplicated on the way.
//!
//! The ingest and the publishers share the wall clock, so they must run on one machine.

pub mod ingest;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::media::FrameStamp;
use crate::report::{Frames, Report};
use crate::signal::parse_duration;
use crate::stats::{HistogramError, Metric, Recorder};
use crate::{Publisher, PublisherConfig};
use ingest::{IngestError, IngestEvent, RtmpIngest, now_us};

/// How long a publisher may take to connect (ICE + DTLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending, how long to wait for the last frames to come out of the bridge.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the drain checks whether every stream's last frame arrived.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Failures shown at the end (the rest are only counted).
const FAILURE_EXAMPLES: usize = 10;

/// Options of `loadgen publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// WHIP endpoint URL; `{i}` is replaced by the publisher number. Its last path segment is
    /// the stream name, which the bridge must use as the RTMP stream key (`--rtmp
    /// 'rtmp://HOST:PORT/live/{stream}'`).
    #[arg(long)]
    pub url: String,
    /// Bearer token sent on every request.
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Publishers, all at once.
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,
    /// How long each publisher sends media (e.g. 20s, 500ms).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run an RTMP server here for the bridge to push to, and measure what arrives.
    #[arg(long, value_name = "ADDR")]
    pub rtmp_listen: Option<SocketAddr>,
    /// Local address of the publishers' UDP sockets (their host candidate).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind_ip: IpAddr,
}

/// Why `publish` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The RTMP ingest could not listen.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A histogram could not be encoded.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

/// One stream as the ingest saw it.
#[derive(Debug, Default)]
struct StreamState {
    /// The publisher's start (before its POST), µs since the UNIX epoch.
    started_us: Option<u64>,
    /// Frame number of the last frame sent, once sending ended.
    last_sent: Option<u64>,
    first_rtmp_recorded: bool,
    first: Option<u64>,
    max: Option<u64>,
    seen: HashSet<u64>,
    reordered: u64,
    duplicated: u64,
}

impl StreamState {
    fn frame(&mut self, frame: u64) {
        if !self.seen.insert(frame) {
            self.duplicated += 1;
            return;
        }
        self.first.get_or_insert(frame);
        match self.max {
            Some(max) if frame < max => self.reordered += 1,
            _ => self.max = Some(frame),
        }
    }

    /// Frames never seen from the first one seen to the last one sent (all sent ones if none
    /// was seen: the output never started).
    fn lost(&self, sent: u64) -> u64 {
        match (self.first, self.last_sent) {
            (Some(first), Some(last)) if last >= first => {
                let seen = self.seen.iter().filter(|&&f| f >= first && f <= last);
                (last - first + 1).saturating_sub(seen.count() as u64)
            }
            (Some(_), _) => 0,
            (None, _) => sent,
        }
    }

    fn drained(&self) -> bool {
        self.last_sent.is_none_or(|last| self.max >= Some(last))
    }
}

/// Everything measured, shared by the ingest's reader and the publishers.
#[derive(Debug)]
struct Tally {
    recorder: Recorder,
    streams: HashMap<String, StreamState>,
}

impl Tally {
    fn event(&mut self, event: IngestEvent) {
        match event {
            IngestEvent::Publishing {
                stream,
                first_byte_us,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                if let (Some(started), false) = (s.started_us, s.first_rtmp_recorded) {
                    let d = Duration::from_micros(first_byte_us.saturating_sub(started));
                    self.recorder.record(Metric::FirstRtmp, d, d);
                    s.first_rtmp_recorded = true;
                }
            }
            IngestEvent::Frame {
                stream,
                stamp: FrameStamp { sent_us, frame },
                received_us,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                s.frame(frame);
                // Sending is open loop at the frame rate, so the intended start is the actual
                // one: raw and corrected are the same here.
                let d = Duration::from_micros(received_us.saturating_sub(sent_us));
                self.recorder.record(Metric::FrameRtmp, d, d);
            }
        }
    }
}

type Shared = Arc<Mutex<Tally>>;

fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stream name of an endpoint URL: its last path segment.
fn stream_name(endpoint: &str) -> String {
    let path = endpoint.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What one publisher did.
struct Outcome {
    stream: String,
    sent_frames: u64,
    result: Result<Publisher, (&'static str, crate::Error)>,
}

async fn publish_one(args: Arc<PublishArgs>, index: u64, tally: Shared) -> Outcome {
    let endpoint = args.url.replace("{i}", &index.to_string());
    let stream = stream_name(&endpoint);
    lock(&tally)
        .streams
        .entry(stream.clone())
        .or_default()
        .started_us = Some(now_us());
    let cfg = PublisherConfig {
        token: args.token.clone(),
        bind_ip: args.bind_ip,
        ..PublisherConfig::new(endpoint)
    };
    let mut sent_frames = 0;
    let result = async {
        let publisher = Publisher::connect(cfg).await.map_err(|e| ("connect", e))?;
        publisher
            .wait_connected(CONNECT_TIMEOUT)
            .await
            .map_err(|e| ("ice", e))?;
        let sent = publisher
            .send_media_stamped(args.duration)
            .await
            .map_err(|e| ("media", e))?;
        sent_frames = sent.video_frames;
        Ok(publisher)
    }
    .await;
    if let Some(last) = sent_frames.checked_sub(1)
        && let Some(s) = lock(&tally).streams.get_mut(&stream)
    {
        s.last_sent = Some(last);
    }
    Outcome {
        stream,
        sent_frames,
        result,
    }
}

/// Runs `publish` and reports what it measured.
pub async fn run(args: &PublishArgs) -> Result<Report, PublishError> {
    if !args.url.contains("{i}") && args.publishers > 1 {
        eprintln!(
            "loadgen: --url has no {{i}}: all publishers share one stream, which a server hands from one to the next"
        );
    }
    let tally: Shared = Arc::new(Mutex::new(Tally {
        recorder: Recorder::new(false),
        streams: HashMap::new(),
    }));
    let ingest = match args.rtmp_listen {
        Some(addr) => Some(RtmpIngest::bind(addr).await?),
        None => None,
    };
    let measuring = ingest.is_some();
    let reader = ingest.map(|mut ingest| {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(event) = ingest.recv().await {
                lock(&tally).event(event);
            }
        })
    });

    let t0 = Instant::now();
    let shared_args = Arc::new(args.clone());
    let mut tasks = JoinSet::new();
    for index in 0..args.publishers {
        tasks.spawn(publish_one(shared_args.clone(), index, tally.clone()));
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(outcome) = joined {
            outcomes.push(outcome);
        }
    }
    if measuring {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while Instant::now() < deadline && !lock(&tally).streams.values().all(StreamState::drained)
        {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    let duration = t0.elapsed();
    if let Some(reader) = reader {
        reader.abort();
    }

    let mut report = Report {
        commands: vec![std::env::args().collect::<Vec<_>>().join(" ")],
        duration_s: duration.as_secs_f64(),
        ..Report::default()
    };
    report.sessions.planned = args.publishers;
    // Sessions that never came back (a panicked task) count as failed.
    report.sessions.failed = args.publishers - outcomes.len() as u64;
    let mut frames = Frames::default();
    let mut publishers = Vec::new();
    {
        let tally = lock(&tally);
        for outcome in outcomes {
            frames.sent += outcome.sent_frames;
            if let Some(s) = tally.streams.get(&outcome.stream) {
                frames.received += s.seen.len() as u64;
                frames.lost += s.lost(outcome.sent_frames);
                frames.reordered += s.reordered;
                frames.duplicated += s.duplicated;
            }
            match outcome.result {
                Ok(publisher) => {
                    report.sessions.ok += 1;
                    publishers.push(publisher);
                }
                Err((kind, e)) => {
                    report.sessions.failed += 1;
                    *report.sessions.failures.entry(kind.to_owned()).or_default() += 1;
                    if report.failure_examples.len() < FAILURE_EXAMPLES {
                        report
                            .failure_examples
                            .push(format!("{}: {kind}: {e}", outcome.stream));
                    }
                }
            }
        }
        report.set_latency(&tally.recorder)?;
    }
    if measuring {
        report.frames = Some(frames);
    }
    // Deleted only now, so the bridge kept every stream up until its last frame was counted.
    let mut deletes: JoinSet<_> = publishers.into_iter().map(Publisher::delete).collect();
    while deletes.join_next().await.is_some() {}
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_from_the_first_frame_seen() {
        let mut s = StreamState::default();
        // The output starts at frame 30 (a keyframe); 32 is lost, 34 comes late, 33 twice.
        for f in [30, 31, 33, 33, 35, 34] {
            s.frame(f);
        }
        assert!(s.drained());
        s.last_sent = Some(36);
        assert!(!s.drained());
        assert_eq!((s.reordered, s.duplicated, s.seen.len()), (1, 1, 5));
        // 32 and 36 never arrived.
        assert_eq!(s.lost(37), 2);
        assert_eq!(StreamState::default().lost(37), 37);
    }

    #[test]
    fn stream_name_is_the_last_path_segment() {
        assert_eq!(stream_name("http://h:8080/whip/cam3"), "cam3");
        assert_eq!(stream_name("http://h/whip/cam3/?x=1"), "cam3");
    }
}
