//! `loadgen publish`: real media through a WHIP bridge, timed frame by frame at its outputs.
//!
//! N [`Publisher`]s send H.264 + Opus with a [`FrameStamp`] SEI in every video frame (the send
//! time and the frame number). Two receivers find the stamps again in what the bridge puts out:
//!
//! * with `--rtmp-listen`, a built-in RTMP server ([`ingest`]) takes what the bridge pushes and
//!   reads the FLV video tags: `frame_rtmp` (send to FLV tag received), `first_rtmp`;
//! * with `--hls`, a built-in LL-HLS client per stream ([`hls`]) follows the bridge's playlist
//!   with blocking reloads and reads the fMP4 parts ([`playlist`], [`fmp4`]): `frame_hls` (send
//!   to the part holding the frame fully received), `first_hls`. With `--simulcast` > 1 it
//!   also follows the stream's ladder (`main.m3u8` beside the playlist): every video rendition
//!   is accounted like the stream's own playlist (frames lost, latency), checked for its
//!   layer's picture size and for segments that start with a key frame at the same times as
//!   the top rendition's, and the audio rendition is read (its `ladder` module).
//!
//! For each output the same accounting ([`account`]) counts frames lost, reordered and
//! duplicated and measures the audio/video drift of the output's timelines.
//!
//! With `--ramp STEP` the publishers start STEP at a time instead of all at once; each step is
//! measured over its own window and judged against the limits ([`ramp`] has the decisions), and
//! the ramp stops at the first step that breaks one. Publishers started later are the same
//! publishers, started later: their frames are accounted the same way.
//!
//! The receivers and the publishers share the wall clock, so they must run on one machine.

pub mod account;
pub mod fmp4;
pub mod hls;
pub mod ingest;
mod ladder;
pub mod playlist;
pub mod ramp;
pub mod sps;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::parse_duration;
use crate::media::{FrameStamp, MAX_LAYERS, VIDEO_HEIGHT, VIDEO_WIDTH, now_us};
use crate::report::progress::{self, Field, ProgressSource};
use crate::report::{Drift, Frames, OutputReport, Ramp, Report, Slo};
use crate::server::{SCRAPE_TIMEOUT, Scrape, ServerReport, scrape};
use crate::stats::{HistogramError, Metric, Recorder};
use crate::{Publisher, PublisherConfig};
use account::{AvDrift, FrameAccount, Track};
use hls::{HlsClient, HlsEvent, multivariant_url};
use ingest::{IngestError, IngestEvent, RtmpIngest};
use ladder::Ladder;

/// How long a publisher may take to connect (ICE + DTLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending, how long to wait for the last frames to come out of the bridge's RTMP output.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// After the DELETEs, how long to wait for the HLS playlists to end (the last part is cut
/// only when the stream ends).
const HLS_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a drain checks whether every stream's last frame arrived.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Failures shown at the end (the rest are only counted).
const FAILURE_EXAMPLES: usize = 10;
/// The server is scraped this long before the first publisher is due to stop sending (its
/// connection is seen up to a [`DRAIN_POLL`] late).
const WINDOW_MARGIN: Duration = Duration::from_millis(250);
/// A steady window shorter than this measures nothing worth reporting.
const MIN_WINDOW: Duration = Duration::from_millis(500);
/// After a ramp step's window, how long to wait for its last frames to come out of every
/// output before judging the step (the frames still missing then count as lost).
const STEP_DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Bearer token sent with every HLS request (`--hls`), for a bridge run with `--hls-auth`.
    #[arg(long, env = "LOADGEN_HLS_TOKEN", hide_env_values = true)]
    pub hls_token: Option<String>,
    /// Publishers, all at once.
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,
    /// How long each publisher sends media (e.g. 20s, 500ms).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run an RTMP server here for the bridge to push to, and measure what arrives.
    #[arg(long, value_name = "ADDR")]
    pub rtmp_listen: Option<SocketAddr>,
    /// Follow each stream's (LL-)HLS media playlist at this URL and measure what arrives;
    /// `{stream}` is replaced by the stream name, `{i}` by the publisher number, e.g.
    /// 'http://127.0.0.1:8080/hls/{stream}/index.m3u8' (http only, fMP4 only). With
    /// --simulcast > 1, also the ladder: `main.m3u8` beside it must list a variant per layer,
    /// each followed and measured the same way (frames, latency, its layer's size, segments
    /// starting with a key frame, aligned with the top layer's), and its audio rendition.
    #[arg(long, value_name = "URL_TEMPLATE")]
    pub hls: Option<String>,
    /// H.264 simulcast layers each publisher sends, 1 to 3, the way OBS Studio does: rids
    /// 0..N-1, layer i at (N-i)/N of 640x360 and of the bitrate, no SSRC lines, PLI ignored.
    /// The RTMP ingest checks every AVC sequence header says the top layer's 640x360.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_LAYERS)))]
    pub simulcast: u8,
    /// Local address of the publishers' UDP sockets (their host candidate).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind_ip: IpAddr,
    /// Show progress even when stderr is not a terminal (one line every 2 s).
    #[arg(long, help_heading = "Output")]
    pub progress: bool,
    /// The server's Prometheus metrics, scraped once all publishers are connected and again
    /// before the first stops sending, to report the server's CPU per publisher and per RTP
    /// packet and its RSS growth per publisher (`off`: do not; default: the --url's origin,
    /// or what comes before its `/whip/`, + `/metrics`). Any server with the standard process metrics.
    #[arg(long, value_name = "URL|off", help_heading = "Output")]
    pub server_metrics: Option<String>,
    /// Ramp up: add this many publishers at a time, up to --publishers, each step held for
    /// --ramp-hold and measured over its own window (frames lost per output, frame_rtmp and
    /// frame_hls p99, server CPU per publisher and per packet). Adding stops at the first step
    /// that breaks a limit: an --slo, read over the step, or a publisher failing. Reports every
    /// step and the knee, the largest step where every limit held; the exit status is 0 when at
    /// least one step held. Publishers send until the ramp ends (--duration is not used).
    #[arg(long, value_name = "STEP", help_heading = "Ramp")]
    pub ramp: Option<u64>,
    /// How long each ramp step is measured, from all its publishers connected.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Ramp")]
    pub ramp_hold: Duration,
}

impl PublishArgs {
    /// Options for `publishers` publishers on `url`, sending for `duration`, measuring nothing.
    pub fn new(url: impl Into<String>, publishers: u64, duration: Duration) -> Self {
        Self {
            url: url.into(),
            token: None,
            hls_token: None,
            publishers,
            duration,
            rtmp_listen: None,
            hls: None,
            simulcast: 1,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            progress: false,
            server_metrics: None,
            ramp: None,
            ramp_hold: Duration::from_secs(10),
        }
    }
}

/// Why `publish` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The options cannot work.
    #[error("invalid options: {0}")]
    Config(String),
    /// The RTMP ingest could not listen.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A histogram could not be encoded.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

/// Where the bridge's output is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Rtmp,
    Hls,
}

impl Output {
    /// The name in reports and SLOs.
    fn name(self) -> &'static str {
        match self {
            Output::Rtmp => "rtmp",
            Output::Hls => "hls",
        }
    }

    fn frame_metric(self) -> Metric {
        match self {
            Output::Rtmp => Metric::FrameRtmp,
            Output::Hls => Metric::FrameHls,
        }
    }

    fn first_metric(self) -> Metric {
        match self {
            Output::Rtmp => Metric::FirstRtmp,
            Output::Hls => Metric::FirstHls,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One output of one stream as its receiver saw it.
#[derive(Debug, Default)]
struct OutputState {
    frames: FrameAccount,
    drift: AvDrift,
    first_recorded: bool,
    /// The output said it ended (HLS: `EXT-X-ENDLIST`).
    ended: bool,
    errors: u64,
    /// Video configurations by the picture size they said (see [`OutputReport::video_sizes`]).
    video_sizes: BTreeMap<String, u64>,
}

/// One stream: its publisher's progress and what each output delivered.
#[derive(Debug, Default)]
struct StreamState {
    /// The publisher's start (before its POST), µs since the UNIX epoch.
    started_us: Option<u64>,
    connected: bool,
    /// The publisher's live count of frames sent, once sending began.
    sending: Option<Arc<AtomicU64>>,
    /// Frames sent, once sending ended.
    sent: Option<u64>,
    /// Frame number of the last frame sent, once sending ended.
    last_sent: Option<u64>,
    outputs: [OutputState; 2],
    /// The HLS ladder, once the multivariant playlist listed it (`--simulcast` > 1).
    ladder: Option<Ladder>,
}

impl StreamState {
    fn output(&mut self, output: Output) -> &mut OutputState {
        &mut self.outputs[output.index()]
    }

    fn drained(&self, output: Output) -> bool {
        let o = &self.outputs[output.index()];
        let ladder = output != Output::Hls
            || self
                .ladder
                .as_ref()
                .is_none_or(|l| l.drained(self.last_sent));
        (o.ended || o.frames.drained(self.last_sent)) && ladder
    }
}

/// Everything measured, shared by the receivers, the publishers and the progress line.
#[derive(Debug)]
struct Tally {
    recorder: Recorder,
    streams: HashMap<String, StreamState>,
    failed_publishers: u64,
    output_errors: u64,
    failure_examples: Vec<String>,
    /// The ramp step being run (its number from 1, its publishers), for the progress line; the
    /// last one stays after the ramp, as the line's rates pair its fields by position.
    ramp_step: Option<(u64, u64)>,
    /// The open window of a ramp step.
    window: Option<Window>,
    /// Simulcast layers each publisher sends: with more than one, HLS follows the ladder.
    layers: u8,
}

/// A ramp step's window: the latencies of the frames sent in it, kept apart from the run's.
#[derive(Debug)]
struct Window {
    /// Its start, µs since the UNIX epoch.
    from_us: u64,
    /// Its end (`u64::MAX` while open).
    until_us: u64,
    recorder: Recorder,
}

impl Tally {
    fn new() -> Self {
        Self {
            recorder: Recorder::new(false),
            streams: HashMap::new(),
            failed_publishers: 0,
            output_errors: 0,
            failure_examples: Vec::new(),
            ramp_step: None,
            window: None,
            layers: 1,
        }
    }

    fn connected(&self) -> u64 {
        self.streams.values().filter(|s| s.connected).count() as u64
    }

    /// Publishers connected and not done sending.
    fn sending(&self) -> u64 {
        self.streams
            .values()
            .filter(|s| s.connected && s.sent.is_none())
            .count() as u64
    }

    /// Each stream's frames sent so far: the frame numbers below it were sent.
    fn sent_marks(&self) -> HashMap<String, u64> {
        self.streams
            .iter()
            .map(|(name, s)| (name.clone(), sent_so_far(s)))
            .collect()
    }

    fn example(&mut self, text: String) {
        if self.failure_examples.len() < FAILURE_EXAMPLES {
            self.failure_examples.push(text);
        }
    }

    /// The first byte of `stream`'s output arrived at `at_us` (recorded once per output).
    fn first_byte(&mut self, output: Output, stream: &str, at_us: u64) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let Some(started) = s.started_us else {
            return;
        };
        let o = s.output(output);
        if !o.first_recorded {
            o.first_recorded = true;
            let d = Duration::from_micros(at_us.saturating_sub(started));
            self.recorder.record(output.first_metric(), d, d);
        }
    }

    /// A frame of `stream` arrived at `received_us`.
    fn frame(&mut self, output: Output, stream: &str, stamp: FrameStamp, received_us: u64) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        // A frame of an earlier run on the same stream name (an HLS window still listing it).
        if s.started_us.is_some_and(|started| stamp.sent_us < started) {
            return;
        }
        s.output(output).frames.frame(stamp.frame);
        // Sending is open loop at the frame rate, so the intended start is the actual one: raw
        // and corrected are the same here.
        let d = Duration::from_micros(received_us.saturating_sub(stamp.sent_us));
        self.recorder.record(output.frame_metric(), d, d);
        // By send time: a step's p99 is of the frames its load carried, wherever they arrive.
        if let Some(w) = &mut self.window
            && (w.from_us..w.until_us).contains(&stamp.sent_us)
        {
            w.recorder.record(output.frame_metric(), d, d);
        }
    }

    /// `stream`'s output carried media up to these audio and video timestamps (µs).
    fn media_time(
        &mut self,
        output: Output,
        stream: &str,
        audio_us: Option<i64>,
        video_us: Option<i64>,
    ) {
        if let Some(s) = self.streams.get_mut(stream) {
            s.output(output).drift.sample(audio_us, video_us);
        }
    }

    /// `stream`'s output configured its video for pictures of `size` (`None`: unreadable). It
    /// must be the full size: a simulcast publisher's top layer, which the RTMP output carries.
    fn video_config(&mut self, output: Output, stream: &str, size: Option<(u32, u32)>) {
        let name = size.map_or_else(|| "unreadable".to_owned(), |(w, h)| format!("{w}x{h}"));
        if let Some(s) = self.streams.get_mut(stream) {
            *s.output(output)
                .video_sizes
                .entry(name.clone())
                .or_default() += 1;
        }
        if size != Some((VIDEO_WIDTH, VIDEO_HEIGHT)) {
            self.error(
                output,
                stream,
                format!(
                    "the video configuration says {name}, not the top layer's {VIDEO_WIDTH}x{VIDEO_HEIGHT}"
                ),
            );
        }
    }

    fn error(&mut self, output: Output, stream: &str, error: String) {
        self.output_errors += 1;
        if let Some(s) = self.streams.get_mut(stream) {
            s.output(output).errors += 1;
        }
        self.example(format!("{stream}: {}: {error}", output.name()));
    }

    fn ingest(&mut self, event: IngestEvent) {
        match event {
            IngestEvent::Publishing {
                stream,
                first_byte_us,
            } => self.first_byte(Output::Rtmp, &stream, first_byte_us),
            IngestEvent::Frame {
                stream,
                stamp,
                received_us,
            } => self.frame(Output::Rtmp, &stream, stamp, received_us),
            IngestEvent::VideoConfig { stream, size } => {
                self.video_config(Output::Rtmp, &stream, size);
            }
            IngestEvent::Media {
                stream,
                track,
                timestamp_ms,
            } => {
                let ts = Some(i64::from(timestamp_ms) * 1000);
                let (audio, video) = match track {
                    Track::Audio => (ts, None),
                    Track::Video => (None, ts),
                };
                self.media_time(Output::Rtmp, &stream, audio, video);
            }
        }
    }

    fn hls(&mut self, event: HlsEvent) {
        match event {
            HlsEvent::Part {
                stream,
                rendition: Some(rendition),
                msn,
                segment_start,
                backlog,
                received_us,
                stamps,
                first_video_sample,
                video_size,
                audio_samples,
                video_start_us,
                ..
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                let (Some(started_us), Some(ladder)) = (s.started_us, &mut s.ladder) else {
                    return;
                };
                let part = ladder::Part {
                    msn,
                    segment_start,
                    backlog,
                    received_us,
                    stamps,
                    first_video_sample,
                    video_size,
                    audio_samples,
                    video_start_us,
                };
                for problem in ladder.part(&rendition, started_us, part) {
                    self.error(Output::Hls, &stream, problem);
                }
            }
            HlsEvent::Part {
                stream,
                rendition: None,
                first_byte_us,
                received_us,
                stamps,
                video_end_us,
                audio_end_us,
                ..
            } => {
                let started = self.streams.get(&stream).and_then(|s| s.started_us);
                if stamps
                    .iter()
                    .any(|s| started.is_none_or(|t| s.sent_us >= t))
                {
                    self.first_byte(Output::Hls, &stream, first_byte_us);
                }
                for stamp in stamps {
                    self.frame(Output::Hls, &stream, stamp, received_us);
                }
                self.media_time(Output::Hls, &stream, audio_end_us, video_end_us);
            }
            HlsEvent::Ladder {
                stream,
                variants,
                audio,
            } => {
                let ladder = Ladder::new(self.layers, variants, audio);
                let problems = ladder.problems();
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.ladder = Some(ladder);
                }
                for problem in problems {
                    self.error(Output::Hls, &stream, problem);
                }
            }
            HlsEvent::Ended { stream, rendition } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    match (rendition, &mut s.ladder) {
                        (None, _) => s.output(Output::Hls).ended = true,
                        (Some(r), Some(ladder)) => ladder.ended(&r),
                        (Some(_), None) => {}
                    }
                }
            }
            HlsEvent::Error {
                stream,
                rendition,
                error,
            } => {
                if let (Some(r), Some(s)) = (&rendition, self.streams.get_mut(&stream))
                    && let Some(ladder) = &mut s.ladder
                {
                    ladder.error(r);
                }
                let text = match rendition {
                    Some(r) => format!("rendition {r}: {error}"),
                    None => error.to_string(),
                };
                self.error(Output::Hls, &stream, text);
            }
        }
    }

    fn all_drained(&self, output: Output) -> bool {
        self.streams.values().all(|s| s.drained(output))
    }
}

type Shared = Arc<Mutex<Tally>>;

fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counters of the progress line.
#[derive(Debug)]
struct PublishProgress {
    tally: Shared,
    outputs: Vec<Output>,
}

impl ProgressSource for PublishProgress {
    fn sample(&self) -> progress::Sample {
        let t = lock(&self.tally);
        let connected = t.connected();
        let sending = t.sending();
        let sent: u64 = t.streams.values().map(sent_so_far).sum();
        let mut fields = Vec::new();
        if let Some((step, publishers)) = t.ramp_step {
            fields.push(Field::Count("step", step));
            fields.push(Field::Count("step publishers", publishers));
        }
        fields.push(Field::Count("sending", sending));
        fields.push(Field::Rate("frames sent", sent));
        for &output in &self.outputs {
            let received = t
                .streams
                .values()
                .map(|s| s.outputs[output.index()].frames.received())
                .sum();
            fields.push(Field::Rate(output.name(), received));
        }
        fields.push(Field::Count("failed", t.failed_publishers));
        fields.push(Field::Count("errors", t.output_errors));
        progress::Sample {
            position: connected,
            fields,
        }
    }
}

/// Frames a stream has sent: the final count once sending ended, the live one meanwhile.
fn sent_so_far(s: &StreamState) -> u64 {
    s.sent
        .or_else(|| s.sending.as_ref().map(|n| n.load(Ordering::Relaxed)))
        .unwrap_or(0)
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

/// Starts publishers (and their stream's HLS client) the same way, whenever they start.
struct Launcher {
    args: Arc<PublishArgs>,
    tally: Shared,
    hls_client: HlsClient,
    hls_events: mpsc::UnboundedSender<HlsEvent>,
    /// How long each publisher sends at most.
    send_for: Duration,
    /// Ends sending early once it reads `true` (`--ramp`: when the ramp ends).
    stop: Option<watch::Receiver<bool>>,
}

impl Launcher {
    /// Starts publisher number `index`.
    fn launch(&self, index: u64, tasks: &mut JoinSet<Outcome>, hls_tasks: &mut JoinSet<()>) {
        let endpoint = self.args.url.replace("{i}", &index.to_string());
        let stream = stream_name(&endpoint);
        let started_us = now_us();
        lock(&self.tally)
            .streams
            .entry(stream.clone())
            .or_default()
            .started_us = Some(started_us);
        if let Some(template) = &self.args.hls {
            let url = template
                .replace("{i}", &index.to_string())
                .replace("{stream}", &stream);
            let (client, events, stream) = (
                self.hls_client.clone(),
                self.hls_events.clone(),
                stream.clone(),
            );
            if self.args.simulcast > 1 {
                let (client, events, stream) = (
                    self.hls_client.clone(),
                    self.hls_events.clone(),
                    stream.clone(),
                );
                let (url, layers) = (multivariant_url(&url), usize::from(self.args.simulcast));
                hls_tasks.spawn(async move {
                    let followed = client.follow_ladder(
                        url,
                        stream.clone(),
                        layers,
                        started_us,
                        events.clone(),
                    );
                    if let Err(error) = followed.await {
                        let rendition = None;
                        let _ = events.send(HlsEvent::Error {
                            stream,
                            rendition,
                            error,
                        });
                    }
                });
            }
            hls_tasks.spawn(async move {
                if let Err(error) = client
                    .follow(url, stream.clone(), started_us, events.clone())
                    .await
                {
                    let rendition = None;
                    let _ = events.send(HlsEvent::Error {
                        stream,
                        rendition,
                        error,
                    });
                }
            });
        }
        tasks.spawn(publish_one(
            self.args.clone(),
            endpoint,
            stream,
            self.tally.clone(),
            self.send_for,
            self.stop.clone(),
        ));
    }
}

async fn publish_one(
    args: Arc<PublishArgs>,
    endpoint: String,
    stream: String,
    tally: Shared,
    send_for: Duration,
    stop: Option<watch::Receiver<bool>>,
) -> Outcome {
    let cfg = PublisherConfig {
        token: args.token.clone(),
        bind_ip: args.bind_ip,
        simulcast: args.simulcast,
        ..PublisherConfig::new(endpoint)
    };
    let mut sent_frames = 0;
    let update = |f: &dyn Fn(&mut StreamState)| {
        if let Some(s) = lock(&tally).streams.get_mut(&stream) {
            f(s);
        }
    };
    let result = async {
        let publisher = Publisher::connect(cfg).await.map_err(|e| ("connect", e))?;
        publisher
            .wait_connected(CONNECT_TIMEOUT)
            .await
            .map_err(|e| ("ice", e))?;
        update(&|s| {
            s.connected = true;
            s.sending = Some(publisher.frames_sent());
        });
        let sending = publisher.send_media_stamped(send_for);
        sent_frames = match stop {
            Some(mut stop) => tokio::select! {
                sent = sending => sent.map_err(|e| ("media", e))?.video_frames,
                // Dropping the send between frames is clean: its only await is the timer
                // before the next frame, so every frame it counted was handed to the
                // connection, and this is the only send, so its count is the frames sent.
                _ = stop.wait_for(|stop| *stop) => publisher.frames_sent().load(Ordering::Relaxed),
            },
            None => sending.await.map_err(|e| ("media", e))?.video_frames,
        };
        Ok(publisher)
    }
    .await;
    update(&|s| {
        s.sent = Some(sent_frames);
        s.last_sent = sent_frames.checked_sub(1);
    });
    if result.is_err() {
        lock(&tally).failed_publishers += 1;
    }
    Outcome {
        stream,
        sent_frames,
        result,
    }
}

/// Waits until `done` holds for the tally, or `timeout` passes.
async fn wait_until(tally: &Shared, timeout: Duration, done: impl Fn(&Tally) -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !done(&lock(tally)) {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Scrapes the server at `url` over the steady window: from every publisher connected (or
/// failed) to shortly before the first one to connect stops sending, `duration` after it
/// connected (or to when a connected publisher stopped, if one stopped early).
async fn measure_server(
    url: String,
    tally: Shared,
    total: u64,
    duration: Duration,
) -> ServerReport {
    let deadline = Instant::now() + CONNECT_TIMEOUT + duration;
    let mut first = None;
    loop {
        let (up, failed) = {
            let t = lock(&tally);
            (t.connected(), t.failed_publishers)
        };
        if up > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if up + failed >= total || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let Some(first) = first else {
        return ServerReport::failed(&url, "no publisher connected".to_owned());
    };
    let start = match scrape(&url).await {
        Ok(start) => start,
        Err(e) => return ServerReport::failed(&url, e),
    };
    let publishers = lock(&tally).connected();
    let end_at = (first + duration)
        .checked_sub(WINDOW_MARGIN)
        .unwrap_or(first);
    // Until then, or until a connected publisher stops (it failed, or was late to be seen).
    while Instant::now() < end_at
        && !lock(&tally)
            .streams
            .values()
            .any(|s| s.connected && s.sent.is_some())
    {
        tokio::time::sleep(DRAIN_POLL.min(end_at.saturating_duration_since(Instant::now()))).await;
    }
    let end = match scrape(&url).await {
        Ok(end) => end,
        Err(e) => return ServerReport::failed(&url, e),
    };
    let window = end.at.saturating_duration_since(start.at);
    if window < MIN_WINDOW {
        return ServerReport::failed(
            &url,
            format!(
                "steady window too short ({window:.2?}): the publishers took {:.2?} to connect, out of --duration {duration:?}",
                start.at.saturating_duration_since(first)
            ),
        );
    }
    ServerReport::of(&url, &start, &end, publishers, 0)
}

/// Runs `publish` and reports what it measured.
pub async fn run(args: &PublishArgs) -> Result<Report, PublishError> {
    run_with_limits(args, &[]).await
}

/// Runs `publish`; with `--ramp`, `limits` are what every step must meet (`--slo`). Without
/// `--ramp` they are not read here: the caller gates the whole run.
pub async fn run_with_limits(args: &PublishArgs, limits: &[Slo]) -> Result<Report, PublishError> {
    if !args.url.contains("{i}") && args.publishers > 1 {
        eprintln!(
            "loadgen: --url has no {{i}}: all publishers share one stream, which a server hands from one to the next"
        );
    }
    if let Some(hls) = &args.hls
        && !hls.starts_with("http://")
    {
        return Err(PublishError::Config(format!(
            "--hls {hls:?}: only http:// URLs are supported"
        )));
    }
    let plan = match args.ramp {
        None => None,
        Some(step) => {
            let plan = ramp::plan(step, args.publishers);
            if plan.is_empty() {
                return Err(PublishError::Config(format!(
                    "--ramp {step} --publishers {}: both must be at least 1",
                    args.publishers
                )));
            }
            Some(plan)
        }
    };
    let tally: Shared = Arc::new(Mutex::new(Tally {
        layers: args.simulcast,
        ..Tally::new()
    }));
    let ingest = match args.rtmp_listen {
        Some(addr) => Some(RtmpIngest::bind(addr).await?),
        None => None,
    };
    let mut outputs = Vec::new();
    if ingest.is_some() {
        outputs.push(Output::Rtmp);
    }
    if args.hls.is_some() {
        outputs.push(Output::Hls);
    }
    let rtmp_reader = ingest.map(|mut ingest| {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(event) = ingest.recv().await {
                lock(&tally).ingest(event);
            }
        })
    });
    let (hls_events, mut hls_rx) = mpsc::unbounded_channel();
    let hls_reader = {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(event) = hls_rx.recv().await {
                lock(&tally).hls(event);
            }
        })
    };

    let t0 = Instant::now();
    let display_source = Arc::new(PublishProgress {
        tally: tally.clone(),
        outputs: outputs.clone(),
    });
    let display = progress::spawn(
        progress::Line {
            total: args.publishers,
            label: "connected",
            force: args.progress,
            t0,
        },
        display_source,
    );
    let metrics_url = crate::server::metrics_url(args.server_metrics.as_deref(), &args.url);
    // A ramp measures the server per step instead.
    let server_task = metrics_url.clone().filter(|_| plan.is_none()).map(|url| {
        tokio::spawn(measure_server(
            url,
            tally.clone(),
            args.publishers,
            args.duration,
        ))
    });
    let (stop, stop_rx) = watch::channel(false);
    let launcher = Launcher {
        args: Arc::new(args.clone()),
        tally: tally.clone(),
        hls_client: HlsClient::with_token(args.hls_token.as_deref())
            .map_err(|err| PublishError::Config(err.to_string()))?,
        hls_events,
        send_for: match &plan {
            // Each step: connecting, the hold, the drain, and the two scrapes.
            Some(plan) => ramp::longest(
                plan.len(),
                CONNECT_TIMEOUT,
                args.ramp_hold,
                STEP_DRAIN_TIMEOUT + 2 * SCRAPE_TIMEOUT,
            ),
            None => args.duration,
        },
        stop: plan.is_some().then_some(stop_rx),
    };
    let mut tasks = JoinSet::new();
    let mut hls_tasks = JoinSet::new();
    let mut ramp_outcome = None;
    let started = match &plan {
        None => {
            for index in 0..args.publishers {
                launcher.launch(index, &mut tasks, &mut hls_tasks);
            }
            args.publishers
        }
        Some(plan) => {
            let run = RampRun {
                launcher: &launcher,
                outputs: &outputs,
                server_url: metrics_url.as_deref(),
                limits,
                hold: args.ramp_hold,
                ceiling: args.publishers,
            };
            let outcome = run.run(plan, &mut tasks, &mut hls_tasks).await?;
            let _ = stop.send(true);
            let started = outcome.started;
            ramp_outcome = Some(outcome);
            started
        }
    };
    let mut report = Report {
        commands: vec![std::env::args().collect::<Vec<_>>().join(" ")],
        ..Report::default()
    };
    report.sessions.planned = started;
    let mut sent = Vec::new();
    let mut publishers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A task that never came back (it panicked) counts as failed below.
        let Ok(outcome) = joined else { continue };
        match outcome.result {
            Ok(publisher) => {
                report.sessions.ok += 1;
                if let Some(node) = crate::sdp::node_base(publisher.session_url()) {
                    *report.nodes.entry(node.to_owned()).or_default() += 1;
                }
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
        sent.push((outcome.stream, outcome.sent_frames));
    }
    report.sessions.failed += started - sent.len() as u64;
    if let Some(task) = server_task {
        // The window ended before the first publisher stopped, so this does not wait long.
        report.server = Some(match task.await {
            Ok(server) => server,
            Err(e) => ServerReport::failed("", format!("the measuring task failed: {e}")),
        });
    }
    if let Some(outcome) = ramp_outcome {
        report.server = outcome.server;
        report.ramp = Some(outcome.ramp);
    }
    if outputs.contains(&Output::Rtmp) {
        wait_until(&tally, DRAIN_TIMEOUT, |t| t.all_drained(Output::Rtmp)).await;
    }
    // Deleted only now, so the bridge kept every stream up until its last RTMP frame was
    // counted. Ending a stream makes the bridge cut its last HLS part and end the playlist.
    let mut deletes: JoinSet<_> = publishers.into_iter().map(Publisher::delete).collect();
    while deletes.join_next().await.is_some() {}
    if outputs.contains(&Output::Hls) {
        wait_until(&tally, HLS_DRAIN_TIMEOUT, |t| t.all_drained(Output::Hls)).await;
    }
    report.duration_s = t0.elapsed().as_secs_f64();
    if let Some(reader) = rtmp_reader {
        reader.abort();
    }
    hls_tasks.shutdown().await;
    // It holds the last sender of HLS events.
    drop(launcher);
    // Every sender is gone: the reader ends once it has tallied what they sent.
    let _ = hls_reader.await;
    if let Some(display) = display {
        display.finish().await;
    }

    let tally = lock(&tally);
    report
        .failure_examples
        .extend(tally.failure_examples.iter().cloned());
    for &output in &outputs {
        report.outputs.insert(
            output.name().to_owned(),
            output_report(&tally, output, &sent)?,
        );
    }
    report.set_latency(&tally.recorder)?;
    Ok(report)
}

/// A ramp in progress: what its steps need of the run.
struct RampRun<'a> {
    launcher: &'a Launcher,
    outputs: &'a [Output],
    /// Where to scrape the server, unless `--server-metrics off`.
    server_url: Option<&'a str>,
    limits: &'a [Slo],
    hold: Duration,
    ceiling: u64,
}

/// What a ramp measured.
struct RampOutcome {
    ramp: Ramp,
    /// What the server spent at the knee (at the last step if no step held).
    server: Option<ServerReport>,
    /// Publishers started.
    started: u64,
}

impl RampRun<'_> {
    /// Runs the steps of `plan` (publisher counts), starting publishers into `tasks`, until one
    /// breaks a limit or the plan ends. The publishers are still sending when it returns.
    async fn run(
        &self,
        plan: &[u64],
        tasks: &mut JoinSet<Outcome>,
        hls_tasks: &mut JoinSet<()>,
    ) -> Result<RampOutcome, HistogramError> {
        let tally = &self.launcher.tally;
        let mut started = 0;
        let mut steps = Vec::new();
        let mut servers = Vec::new();
        for (number, &target) in (1..).zip(plan) {
            lock(tally).ramp_step = Some((number, target));
            for index in started..target {
                self.launcher.launch(index, tasks, hls_tasks);
            }
            started = target;
            wait_until(tally, CONNECT_TIMEOUT, |t| {
                t.connected() + t.failed_publishers >= target
            })
            .await;
            let (from, sending) = {
                let mut t = lock(tally);
                t.window = Some(Window {
                    from_us: now_us(),
                    until_us: u64::MAX,
                    recorder: Recorder::new(false),
                });
                (t.sent_marks(), t.sending())
            };
            let start = self.scrape().await;
            tokio::time::sleep(self.hold).await;
            let end = self.scrape().await;
            let until = {
                let mut t = lock(tally);
                if let Some(w) = &mut t.window {
                    w.until_us = now_us();
                }
                t.sent_marks()
            };
            wait_until(tally, STEP_DRAIN_TIMEOUT, |t| {
                window_drained(t, self.outputs, &until)
            })
            .await;
            let server = match (self.server_url, start, end) {
                (Some(url), Some(Ok(start)), Some(Ok(end))) => {
                    Some(ServerReport::of(url, &start, &end, sending, 0))
                }
                (Some(url), Some(Err(e)), _) | (Some(url), _, Some(Err(e))) => {
                    Some(ServerReport::failed(url, e))
                }
                _ => None,
            };
            let report = {
                let mut t = lock(tally);
                let window = t.window.take();
                step_report(&t, self.outputs, window, &from, &until, target, server)?
            };
            let step = ramp::judge(&report, self.limits);
            let more = ramp::go_on(&step, self.ceiling);
            steps.push(step);
            servers.push(report.server);
            if !more {
                break;
            }
        }
        let knee = ramp::knee(&steps);
        let at = steps
            .iter()
            .rposition(|s| s.ok)
            .or(steps.len().checked_sub(1));
        Ok(RampOutcome {
            server: at.and_then(|i| servers.get_mut(i)).and_then(Option::take),
            ramp: Ramp { steps, knee },
            started,
        })
    }

    async fn scrape(&self) -> Option<Result<Scrape, String>> {
        match self.server_url {
            Some(url) => Some(scrape(url).await),
            None => None,
        }
    }
}

/// Whether every output delivered each stream's frames sent before `until` (or ended).
fn window_drained(t: &Tally, outputs: &[Output], until: &HashMap<String, u64>) -> bool {
    until.iter().all(|(stream, &mark)| {
        t.streams.get(stream).is_none_or(|s| {
            outputs.iter().all(|&o| {
                let o = &s.outputs[o.index()];
                o.ended || o.frames.drained(mark.checked_sub(1))
            })
        })
    })
}

/// A ramp step's window as a report: frames sent in it (numbers `from..until` of each stream)
/// and what each output delivered of them, the latencies of the frames sent in it
/// (`frame_rtmp`, `frame_hls`; the other latencies, the errors and the drift are the run's so
/// far), `target` publishers planned, the publishers failed so far, and the server's window.
fn step_report(
    t: &Tally,
    outputs: &[Output],
    window: Option<Window>,
    from: &HashMap<String, u64>,
    until: &HashMap<String, u64>,
    target: u64,
    server: Option<ServerReport>,
) -> Result<Report, HistogramError> {
    let mut r = Report {
        server,
        ..Report::default()
    };
    r.sessions.planned = target;
    r.sessions.failed = t.failed_publishers;
    r.sessions.ok = target.saturating_sub(t.failed_publishers);
    let streams: Vec<(String, u64)> = until.iter().map(|(k, &v)| (k.clone(), v)).collect();
    for &output in outputs {
        let mut o = output_report(t, output, &streams)?;
        o.frames = Frames::default();
        for (stream, &to) in until {
            let (Some(s), Some(&from)) = (t.streams.get(stream), from.get(stream)) else {
                continue;
            };
            let account = &s.outputs[output.index()].frames;
            let lost = account.lost_between(from, to);
            o.frames.sent += to.saturating_sub(from);
            o.frames.lost += lost;
            o.frames.received += account.received_between(from, to);
        }
        r.outputs.insert(output.name().to_owned(), o);
    }
    r.set_latency(&t.recorder)?;
    if let Some(window) = window {
        let mut w = Report::default();
        w.set_latency(&window.recorder)?;
        for output in outputs {
            let name = output.frame_metric().name();
            if let Some(latency) = w.latency.remove(name) {
                r.latency.insert(name.to_owned(), latency);
            }
        }
    }
    Ok(r)
}

/// What `output` delivered of the frames each publisher (stream, frames) sent.
fn output_report(
    tally: &Tally,
    output: Output,
    sent: &[(String, u64)],
) -> Result<OutputReport, HistogramError> {
    let mut out = OutputReport::default();
    let mut drifts = BTreeMap::new();
    for (stream, sent_frames) in sent {
        out.frames.sent += sent_frames;
        let Some(s) = tally.streams.get(stream) else {
            continue;
        };
        let o = &s.outputs[output.index()];
        out.frames.received += o.frames.received();
        out.frames.lost += o.frames.lost(s.last_sent, *sent_frames);
        out.frames.reordered += o.frames.reordered();
        out.frames.duplicated += o.frames.duplicated();
        out.errors += o.errors;
        for (size, n) in &o.video_sizes {
            *out.video_sizes.entry(size.clone()).or_default() += n;
        }
        if let Some(d) = o.drift.drift_us() {
            drifts.insert(stream.clone(), d as f64 / 1000.0);
        }
    }
    out.av_drift_ms = Drift::of(drifts);
    if output == Output::Hls && tally.layers > 1 {
        let ladders = sent.iter().map(|(stream, sent_frames)| {
            let s = tally.streams.get(stream);
            (
                s.and_then(|s| s.ladder.as_ref()),
                s.and_then(|s| s.last_sent),
                *sent_frames,
            )
        });
        ladder::report(ladders, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_video_must_be_the_top_layer() {
        let mut t = Tally::new();
        t.streams.insert("s0".into(), StreamState::default());
        for size in [Some((640, 360)), Some((320, 180)), None, Some((640, 360))] {
            t.ingest(IngestEvent::VideoConfig {
                stream: "s0".into(),
                size,
            });
        }
        let report = output_report(&t, Output::Rtmp, &[("s0".into(), 0)]).unwrap();
        assert_eq!(
            report.video_sizes,
            [
                ("640x360".to_owned(), 2),
                ("320x180".to_owned(), 1),
                ("unreadable".to_owned(), 1)
            ]
            .into()
        );
        assert_eq!(report.errors, 2);
        assert!(
            t.failure_examples[0].contains("says 320x180, not the top layer's 640x360"),
            "{:?}",
            t.failure_examples
        );
    }

    #[test]
    fn stream_name_is_the_last_path_segment() {
        assert_eq!(stream_name("http://h:8080/whip/cam3"), "cam3");
        assert_eq!(stream_name("http://h/whip/cam3/?x=1"), "cam3");
    }
}
