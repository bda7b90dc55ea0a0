//! The HLS output: one task per session cuts its units into segments (and LL-HLS parts), muxes
//! them (fMP4 or MPEG-TS), writes them to `hls_dir/{stream}/` and publishes the playlist to the
//! HTTP layer ([`crate::http`] serves `/hls/{stream}/...` from [`HlsStreams`]).
//!
//! Decisions, and why:
//!
//! - A stream's state ([`StreamState`]: the playlist, recent parts, the files written) is keyed
//!   by stream name and outlives sessions. A publisher taking a stream over continues the same
//!   playlist after an `EXT-X-DISCONTINUITY`, with sequence numbers running on, so players keep
//!   playing; only the last publisher's task ends the playlist (`EXT-X-ENDLIST`). Each session
//!   has its own segmenter and muxer (a new publisher brings a new timeline and new parameter
//!   sets); its sequence numbers and init-section epochs are offset to follow the last session's.
//! - Segments, parts and init sections are served as immutable, so a name must never be reused
//!   for other bytes, not even after the bridge restarts (a CDN may still hold the old ones).
//!   Sequence numbers and epochs therefore start at the wall clock in milliseconds when a stream
//!   is first published in this process (`seg1718000000000.m4s`), not at 0.
//! - Files are written atomically (a temporary file, then a rename), media before the playlist
//!   that lists it, so a web server serving the folder never sees a half file or a dangling
//!   entry. LL-HLS parts go to disk too (the folder is then a complete origin, less blocking
//!   reload); recent parts are also kept in memory, where blocking requests are answered from.
//! - The folder holds exactly one presentation: a stream's stale files are removed when it is
//!   first published after a bridge start, and the previous presentation's files when a new one
//!   starts after `EXT-X-ENDLIST`.
//! - `EXT-X-PROGRAM-DATE-TIME` comes from the publisher's clock: the first RTCP sender report
//!   dates the session timeline (capture time, as RFC 3550 intends), so a player comparing it
//!   with its own clock sees the whole glass-to-glass delay, and streams from one sender line up.
//!   Until that report comes (the first second or so), and for a sender whose clock is more than
//!   [`MAX_CLOCK_SKEW`] off the bridge's, the bridge's clock at the first unit dates it: within
//!   the network delay of the capture time.
//! - File IO runs on the blocking pool (tokio's `fs` feature is not enabled; `std::fs` there is
//!   what it would do anyway), one batch per segmenter event, so the muxers and the playlist
//!   stay pure.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{OwnedMutexGuard, mpsc, watch};

use crate::media::unit::{AudioFrame, TIMELINE_HZ, Unit};
use crate::mux::hls::fmp4::{
    AacConfig, AudioParams, Fmp4Muxer, FragmentSamples, OpusParams, VideoParams,
};
use crate::mux::hls::playlist::{
    BandwidthMeter, Container, DeliveryDirectives, MEDIA_PLAYLIST_URI, MULTIVARIANT_PLAYLIST_URI,
    Playlist, PlaylistConfig, Reload, Variant,
};
use crate::mux::hls::segmenter::{
    Event, Part, PartInfo, Segment, Segmenter, SegmenterConfig, add_ticks,
};
use crate::mux::hls::ts::TsMuxer;
use crate::transcode::{OpusToAac, channels_for};

pub use crate::config::{HlsAudio, HlsContainer, HlsSettings};

/// An output waits at most this long (timeline ticks) for the first audio frame, which says the
/// channel count, before it starts without audio.
const AUDIO_WAIT: i64 = TIMELINE_HZ;
/// Units held while waiting for that first audio frame.
const MAX_PENDING: usize = 256;

impl HlsSettings {
    fn segmenter(&self, video: bool) -> SegmenterConfig {
        if self.low_latency {
            SegmenterConfig::low_latency(video)
        } else {
            SegmenterConfig::standard(video)
        }
    }

    fn playlist(&self, segmenter: &SegmenterConfig) -> PlaylistConfig {
        PlaylistConfig {
            kind: self.kind,
            ..PlaylistConfig::new(self.container, segmenter)
        }
    }

    /// How long a request waits for a stream's first playlist: the blocking reload timeout of
    /// an empty playlist (three target durations).
    pub fn first_playlist_wait(&self) -> Duration {
        let target = self.segmenter(true).segment_target;
        Duration::from_secs(target.as_secs_f64().ceil() as u64 * 3)
    }
}

/// A file name the HLS output writes, parsed strictly: nothing else is served or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsFile {
    /// `index.m3u8`.
    MediaPlaylist,
    /// `main.m3u8`.
    MultivariantPlaylist,
    /// `init.mp4` or `init{epoch}.mp4`.
    Init,
    /// `seg{msn}.m4s` or `seg{msn}.ts`.
    Segment,
    /// `part{msn}.{index}.m4s` or `.ts`.
    Part {
        /// Parent segment.
        msn: u64,
        /// Index within it.
        index: u32,
    },
}

impl HlsFile {
    /// Recognises the names [`Container`] makes; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            MEDIA_PLAYLIST_URI => return Some(Self::MediaPlaylist),
            MULTIVARIANT_PLAYLIST_URI => return Some(Self::MultivariantPlaylist),
            "init.mp4" => return Some(Self::Init),
            _ => {}
        }
        if let Some(epoch) = name
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return number(epoch).map(|_| Self::Init);
        }
        let stem = name
            .strip_suffix(".m4s")
            .or_else(|| name.strip_suffix(".ts"))?;
        if let Some(msn) = stem.strip_prefix("seg") {
            return number(msn).map(|_| Self::Segment);
        }
        let (msn, index) = stem.strip_prefix("part")?.split_once('.')?;
        Some(Self::Part {
            msn: number(msn)?,
            index: u32::try_from(number(index)?).ok()?,
        })
    }

    /// The `Content-Type` of a file of this kind named `name`.
    pub fn content_type(self, name: &str) -> &'static str {
        match self {
            Self::MediaPlaylist | Self::MultivariantPlaylist => "application/vnd.apple.mpegurl",
            _ if name.ends_with(".ts") => "video/mp2t",
            _ => "video/mp4",
        }
    }
}

/// A decimal number as the playlist writes them: digits only, no leading zero, fits u64.
fn number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the view consistent (a playlist call, map updates, a
    // render), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Furthest a publisher's sender-report clock may be from the bridge's for
/// `EXT-X-PROGRAM-DATE-TIME` to follow it; beyond, the sender's clock is wrong (or counts from
/// something else than 1900) and the bridge's dates the segments.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The HLS outputs' Prometheus metrics (see [`crate::metrics::Metrics`]).
#[derive(Debug, Clone)]
pub struct HlsMetrics {
    /// Segments listed.
    pub segments: Counter,
    /// LL-HLS parts listed.
    pub parts: Counter,
    /// Media bytes written (segments).
    pub bytes: Counter,
    /// Units dropped by the output queues.
    pub drops: Counter,
    /// Seconds from a video frame reaching the output to the playlist listing it.
    pub listing_delay: Histogram,
}

/// Every stream's HLS state, shared by the outputs (writers) and the HTTP layer (readers).
#[derive(Debug)]
pub struct HlsStreams {
    settings: HlsSettings,
    metrics: HlsMetrics,
    streams: Mutex<HashMap<String, Arc<StreamState>>>,
}

impl HlsStreams {
    /// No streams yet.
    pub fn new(settings: HlsSettings, metrics: HlsMetrics) -> Self {
        Self {
            settings,
            metrics,
            streams: Mutex::default(),
        }
    }

    /// The shared settings.
    pub fn settings(&self) -> &HlsSettings {
        &self.settings
    }

    /// The outputs' metrics.
    pub fn metrics(&self) -> &HlsMetrics {
        &self.metrics
    }

    /// A stream published since the bridge started (live or ended).
    pub fn get(&self, stream: &str) -> Option<Arc<StreamState>> {
        lock(&self.streams).get(stream).cloned()
    }

    /// The output task of a new session on `stream`. Call it when the session is created, before
    /// the session it replaces ends: that is how the old session's output knows it is taken over
    /// and hands the playlist on instead of ending it.
    pub fn output(
        &self,
        stream: &str,
        has_audio: bool,
        has_video: bool,
        keyframe_wanted: Arc<AtomicBool>,
        wallclock: watch::Receiver<Option<SystemTime>>,
    ) -> HlsOutput {
        let state = lock(&self.streams)
            .entry(stream.to_owned())
            .or_insert_with(|| Arc::new(StreamState::new(stream, &self.settings.dir)))
            .clone();
        let generation = state.generation.fetch_add(1, Ordering::SeqCst) + 1;
        HlsOutput {
            state,
            settings: self.settings.clone(),
            generation,
            has_audio,
            has_video,
            keyframe_wanted,
            wallclock,
            metrics: self.metrics.clone(),
        }
    }
}

/// What the HTTP layer reads: the playlist and what it lists that is kept in memory.
#[derive(Debug, Default)]
struct View {
    playlist: Option<Playlist>,
    /// `index.m3u8` as last rendered.
    index: Bytes,
    /// The delta update (`_HLS_skip=YES`), when the playlist offers them.
    delta: Option<Bytes>,
    /// `main.m3u8`, once a segment has measured the bandwidth.
    main: Option<Bytes>,
    /// Init sections by name.
    init: HashMap<String, Bytes>,
    /// The newest LL-HLS parts, by (msn, index): those of the open segment and the one before,
    /// which is what clients at the live edge ask for. Older ones are read from disk, where
    /// they stay as long as the spec says; memory would otherwise hold seconds of media per
    /// stream.
    parts: BTreeMap<(u64, u32), Bytes>,
}

impl View {
    fn render(&mut self, stream: &str) {
        let Some(playlist) = &self.playlist else {
            return;
        };
        match playlist.to_bytes(false) {
            Ok(bytes) => self.index = Bytes::from(bytes),
            Err(err) => tracing::error!(%stream, %err, "rendering the HLS playlist failed"),
        }
        let delta = playlist.config().part_target.is_some() && playlist.config().delta_updates;
        self.delta = delta
            .then(|| playlist.to_bytes(true).ok().map(Bytes::from))
            .flatten();
    }

    /// Takes the files the playlist no longer needs out of memory; returns them for deletion.
    fn take_expired(&mut self) -> Vec<String> {
        let expired = self
            .playlist
            .as_mut()
            .map(Playlist::take_expired)
            .unwrap_or_default();
        for name in &expired {
            if let Some(HlsFile::Part { msn, index }) = HlsFile::parse(name) {
                self.parts.remove(&(msn, index));
            }
            self.init.remove(name);
        }
        expired
    }
}

/// What a playlist request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistAnswer {
    /// The playlist.
    Ready(Bytes),
    /// Not yet: wait for a change and ask again.
    Wait,
    /// Too far ahead of the live edge (400).
    BadRequest,
}

/// What a part request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswer {
    /// The part, from memory.
    Ready(Bytes),
    /// It is the preload-hinted part: wait for a change and ask again.
    Wait,
    /// Not in memory: look on disk.
    NotHere,
}

/// The per-session segmenter parameters the writer hands from session to session.
#[derive(Debug)]
struct Writer {
    /// Sequence number the next session's first segment gets.
    next_msn: u64,
    /// Epoch (init section) the next session's first segment gets.
    next_epoch: u64,
    /// Files on disk of the current presentation.
    files: BTreeSet<String>,
    /// The folder exists and stale files from an earlier run are gone.
    prepared: bool,
    /// Measures the variant's bandwidth over the presentation.
    meter: Option<BandwidthMeter>,
    /// Writes are failing (logged once until they work again).
    failing: bool,
}

/// One stream's HLS state.
#[derive(Debug)]
pub struct StreamState {
    name: String,
    dir: PathBuf,
    /// Bumped by every new session on the stream; the output whose session is the newest ends
    /// the playlist, the others hand it on.
    generation: AtomicU64,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    view: Mutex<View>,
    /// Bumped after every change to the view: blocked requests wait on it.
    changed: watch::Sender<u64>,
}

impl StreamState {
    fn new(name: &str, root: &Path) -> Self {
        // Milliseconds since 1970: see the module docs.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2));
        Self {
            name: name.to_owned(),
            dir: root.join(name),
            generation: AtomicU64::new(0),
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                next_msn: base,
                next_epoch: base,
                files: BTreeSet::new(),
                prepared: false,
                meter: None,
                failing: false,
            })),
            view: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    /// The stream's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver that wakes after each change; take it before asking, so no change is missed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The media playlist for a request with these delivery directives (RFC 8216bis §6.2.5).
    /// Before the stream has any media it is always [`PlaylistAnswer::Wait`].
    pub fn media_playlist(&self, directives: &DeliveryDirectives) -> PlaylistAnswer {
        let view = lock(&self.view);
        let Some(playlist) = &view.playlist else {
            return PlaylistAnswer::Wait;
        };
        if !playlist.has_media() && !playlist.is_ended() {
            return PlaylistAnswer::Wait;
        }
        match playlist.reload(directives) {
            Reload::Ready => PlaylistAnswer::Ready(match (&view.delta, directives.skip) {
                (Some(delta), true) => delta.clone(),
                _ => view.index.clone(),
            }),
            Reload::Wait => PlaylistAnswer::Wait,
            Reload::BadRequest => PlaylistAnswer::BadRequest,
        }
    }

    /// How long a blocking request may wait: three target durations.
    pub fn blocking_timeout(&self) -> Option<Duration> {
        lock(&self.view)
            .playlist
            .as_ref()
            .map(Playlist::blocking_timeout)
    }

    /// `main.m3u8`, once known.
    pub fn multivariant_playlist(&self) -> Option<Bytes> {
        lock(&self.view).main.clone()
    }

    /// An init section kept in memory.
    pub fn init(&self, name: &str) -> Option<Bytes> {
        lock(&self.view).init.get(name).cloned()
    }

    /// A part request.
    pub fn part(&self, msn: u64, index: u32) -> PartAnswer {
        let view = lock(&self.view);
        if let Some(bytes) = view.parts.get(&(msn, index)) {
            return PartAnswer::Ready(bytes.clone());
        }
        // Only the hinted part is waited for (RFC 8216bis §6.2.6); a part the segment ended
        // before is not, once the hint has moved on.
        let hinted = view
            .playlist
            .as_ref()
            .and_then(Playlist::preload_hint)
            .is_some_and(|h| (h.msn, h.index) == (msn, index));
        if hinted {
            PartAnswer::Wait
        } else {
            PartAnswer::NotHere
        }
    }

    /// Changes the view, re-renders the playlist and wakes blocked requests; returns what `f`
    /// returned and the new `index.m3u8`.
    fn update<R>(&self, f: impl FnOnce(&mut View) -> R) -> (R, Bytes) {
        let (result, index) = {
            let mut view = lock(&self.view);
            let result = f(&mut view);
            view.render(&self.name);
            (result, view.index.clone())
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        (result, index)
    }
}

/// A file operation in a stream's folder.
#[derive(Debug)]
enum FileOp {
    /// Write atomically.
    Write(String, Vec<Bytes>),
    /// Delete (a file already gone is fine).
    Remove(String),
}

/// Runs `ops` in order in `dir`; returns the failures.
fn apply_blocking(dir: &Path, ops: Vec<FileOp>) -> Vec<(String, std::io::Error)> {
    let mut errors = Vec::new();
    for op in ops {
        let result = match &op {
            FileOp::Write(name, chunks) => write_atomic(dir, name, chunks),
            FileOp::Remove(name) => match std::fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        if let Err(err) = result {
            let (FileOp::Write(name, _) | FileOp::Remove(name)) = op;
            errors.push((name, err));
        }
    }
    errors
}

/// Writes a temporary file beside the target and renames it over: readers see the old file or
/// the new one, never a part of it. No fsync: after a crash, live HLS is worthless anyway.
fn write_atomic(dir: &Path, name: &str, chunks: &[Bytes]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        for chunk in chunks {
            file.write_all(chunk)?;
        }
        Ok(())
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates the folder and removes what an earlier run left in it (our names only).
fn prepare_blocking(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = HlsFile::parse(name).is_some()
            || name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| HlsFile::parse(n).is_some());
        if ours && std::fs::remove_file(dir.join(name)).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// One session's HLS output task; see [`HlsStreams::output`].
#[derive(Debug)]
pub struct HlsOutput {
    state: Arc<StreamState>,
    settings: HlsSettings,
    generation: u64,
    has_audio: bool,
    has_video: bool,
    keyframe_wanted: Arc<AtomicBool>,
    /// The publisher's wallclock of timeline 0, once its first sender report came.
    wallclock: watch::Receiver<Option<SystemTime>>,
    metrics: HlsMetrics,
}

/// How audio is handled, once the first frame said how many channels there are.
#[derive(Debug)]
enum AudioOut {
    None,
    Aac(Box<OpusToAac>, AacConfig),
    Opus(OpusParams),
}

#[derive(Debug)]
enum Muxer {
    Fmp4(Fmp4Muxer),
    Ts(TsMuxer),
}

impl Muxer {
    fn init(&self) -> Option<Bytes> {
        match self {
            Muxer::Fmp4(m) => Some(m.init()),
            Muxer::Ts(_) => None,
        }
    }

    /// One part's bytes. A unit that cannot be muxed is left out (and logged) rather than
    /// losing the part: the playlist has already been promised it.
    fn part(&mut self, part: Part, segment_start: bool) -> Vec<Bytes> {
        let (video_end, audio_end) = (part.video_end, part.audio_end);
        match self {
            Muxer::Fmp4(m) => {
                let (video, mut audio) = part.into_tracks();
                if m.audio_params().is_none() {
                    audio.clear();
                }
                let samples = FragmentSamples {
                    video: &video,
                    video_end,
                    audio: &audio,
                    audio_end,
                };
                match m.fragment(samples) {
                    Ok(chunks) => chunks,
                    Err(err) => {
                        // Nothing changed in the muxer: try again with video alone.
                        tracing::warn!(%err, "fMP4 fragment failed; retrying without audio");
                        let video_only = FragmentSamples {
                            audio: &[],
                            audio_end: None,
                            ..samples
                        };
                        m.fragment(video_only).unwrap_or_else(|err| {
                            tracing::warn!(%err, "fMP4 fragment failed; part left empty");
                            Vec::new()
                        })
                    }
                }
            }
            Muxer::Ts(m) => {
                let mut out = Vec::new();
                if segment_start {
                    out.push(m.segment_start());
                }
                // Audio frames between two pictures go in one PES: less stuffing.
                let mut run: Vec<AudioFrame> = Vec::new();
                fn flush(m: &mut TsMuxer, run: &mut Vec<AudioFrame>, out: &mut Vec<Bytes>) {
                    if !run.is_empty() {
                        match m.audio(run) {
                            Ok(bytes) => out.push(bytes),
                            Err(err) => tracing::debug!(%err, "audio not muxable"),
                        }
                        run.clear();
                    }
                }
                for unit in part.units {
                    match unit {
                        Unit::Audio(frame) => run.push(frame),
                        Unit::Video(v) => {
                            flush(m, &mut run, &mut out);
                            match m.video(&v) {
                                Ok(bytes) => out.push(bytes),
                                Err(err) => tracing::debug!(%err, "video unit not muxable"),
                            }
                        }
                    }
                }
                flush(m, &mut run, &mut out);
                out
            }
        }
    }
}

/// A session's output at work: its segmenter and muxer, and the stream's writer state, held
/// for the whole session.
#[derive(Debug)]
struct Run {
    out: HlsOutput,
    writer: OwnedMutexGuard<Writer>,
    segmenter: Segmenter,
    /// Added to the segmenter's sequence numbers and epochs (they start at 0 per session).
    msn_base: u64,
    epoch_base: u64,
    /// Discontinuities this session made (new parameter sets): epochs it used past its first.
    splits: u64,
    /// This session continues a playlist another one started: its first segment follows a
    /// discontinuity.
    continuing: bool,
    /// The new presentation's playlist, until the first part replaces the last presentation
    /// with it (so a publisher that never sends media replaces nothing).
    fresh: Option<Playlist>,
    segment_target: Duration,
    /// Units held until the audio format is known; `None` once it is.
    pending: Option<Vec<Unit>>,
    audio: AudioOut,
    late_audio: bool,
    /// Parameter sets of the current epoch (from its first key frame).
    video_params: Option<VideoParams>,
    /// Made at the first part of each epoch.
    muxer: Option<Muxer>,
    /// The open segment's parts, which make the segment file.
    segment_parts: Vec<Bytes>,
    first_video_pts: Option<i64>,
    frame_rate: Option<f64>,
    /// How `EXT-X-PROGRAM-DATE-TIME` is dated so far.
    dated: Dating,
    segments: u64,
    /// `(dts, when it reached this output)` of video units not listed yet, oldest first.
    arrivals: VecDeque<(i64, Instant)>,
    /// Arrivals of the open segment's frames, without LL-HLS (listed with the segment).
    unlisted: Vec<Instant>,
}

/// What dates the segments (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dating {
    /// Nothing yet: no unit came.
    Undated,
    /// The bridge's clock at the first unit, until a sender report comes.
    Arrival(SystemTime),
    /// The publisher's sender-report clock, or the bridge's for good when the publisher's was
    /// implausible: no more changes.
    Settled,
}

/// Arrivals kept for frames the segmenter has not put in a part yet: past this, the oldest go
/// (frames dropped before the first key frame never reach a part).
const MAX_ARRIVALS: usize = 512;

impl HlsOutput {
    /// Runs until the queue closes (the session ended), then finishes the last segment and ends
    /// the playlist, unless another session has taken the stream over.
    pub async fn run(self, mut units: mpsc::Receiver<Unit>) {
        let Some(mut run) = Run::begin(self).await else {
            return;
        };
        while let Some(unit) = units.recv().await {
            run.unit(unit).await;
        }
        run.finish().await;
    }
}

impl Run {
    async fn begin(out: HlsOutput) -> Option<Self> {
        let state = out.state.clone();
        let writer = state.writer.clone().lock_owned().await;
        if state.generation.load(Ordering::SeqCst) != out.generation {
            // A newer session on this stream got the writer first: this one has been taken
            // over already and must not touch what the newer one wrote.
            tracing::debug!("HLS output superseded before it started");
            return None;
        }
        let config = out.settings.segmenter(out.has_video);
        let segmenter = match Segmenter::new(config) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "HLS segmenter configuration refused");
                return None;
            }
        };
        let continuing = lock(&state.view)
            .playlist
            .as_ref()
            .is_some_and(|p| !p.is_ended());
        let fresh = if continuing {
            None
        } else {
            match Playlist::new(out.settings.playlist(&config)) {
                Ok(p) => Some(p),
                Err(err) => {
                    tracing::error!(%err, "HLS playlist configuration refused");
                    return None;
                }
            }
        };
        let (msn_base, epoch_base) = (writer.next_msn, writer.next_epoch);
        tracing::info!(continuing, msn = msn_base, "HLS output started");
        out.keyframe_wanted.store(true, Ordering::Relaxed);
        let audio_wanted = out.has_audio && out.settings.audio != HlsAudio::None;
        Some(Self {
            writer,
            segmenter,
            msn_base,
            epoch_base,
            splits: 0,
            continuing,
            fresh,
            segment_target: config.segment_target,
            pending: audio_wanted.then(Vec::new),
            audio: AudioOut::None,
            late_audio: false,
            video_params: None,
            muxer: None,
            segment_parts: Vec::new(),
            first_video_pts: None,
            frame_rate: None,
            dated: Dating::Undated,
            segments: 0,
            arrivals: VecDeque::new(),
            unlisted: Vec::new(),
            out,
        })
    }

    async fn unit(&mut self, unit: Unit) {
        self.date(&unit);
        if let Unit::Video(v) = &unit {
            if self.arrivals.len() == MAX_ARRIVALS {
                self.arrivals.pop_front();
            }
            self.arrivals.push_back((v.dts, Instant::now()));
        }
        let Some(pending) = self.pending.as_mut() else {
            self.admit(unit).await;
            return;
        };
        pending.push(unit);
        if !audio_known(pending) {
            return;
        }
        self.start_audio().await;
    }

    /// Dates timeline 0 for `EXT-X-PROGRAM-DATE-TIME`: by the bridge's clock at the first unit,
    /// then by the publisher's sender-report clock once it is known and plausible.
    fn date(&mut self, unit: &Unit) {
        let arrival = match self.dated {
            Dating::Settled => return,
            Dating::Arrival(origin) => origin,
            Dating::Undated => {
                let pts = match unit {
                    Unit::Video(v) => v.pts,
                    Unit::Audio(a) => a.pts,
                };
                let Some(origin) = add_ticks(SystemTime::now(), pts.saturating_neg()) else {
                    self.dated = Dating::Settled;
                    return;
                };
                self.segmenter.set_wallclock_anchor(Some(origin));
                self.dated = Dating::Arrival(origin);
                origin
            }
        };
        let Some(sender) = *self.out.wallclock.borrow_and_update() else {
            return;
        };
        self.dated = Dating::Settled;
        if plausible_clock(sender, arrival) {
            // Positive: the publisher's clock dates the media earlier than its arrival did.
            let ahead_ms = match arrival.duration_since(sender) {
                Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
                Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
            };
            tracing::debug!(ahead_ms, "HLS dated by the publisher's sender-report clock");
            self.segmenter.set_wallclock_anchor(Some(sender));
        } else {
            tracing::warn!(
                sender = ?sender,
                bridge = ?arrival,
                "publisher's sender-report clock is off by more than {MAX_CLOCK_SKEW:?}; \
                 EXT-X-PROGRAM-DATE-TIME follows the bridge's clock"
            );
        }
    }

    /// When the video frames of a part reached this output (those of frames the segmenter
    /// dropped are passed over).
    fn arrivals_of(&mut self, part: &Part) -> Vec<Instant> {
        let mut found = Vec::new();
        for unit in &part.units {
            let Unit::Video(v) = unit else { continue };
            while let Some(&(dts, at)) = self.arrivals.front() {
                if dts > v.dts {
                    break;
                }
                self.arrivals.pop_front();
                if dts == v.dts {
                    found.push(at);
                    break;
                }
            }
        }
        found
    }

    fn listed(&self, arrivals: &[Instant]) {
        let now = Instant::now();
        for at in arrivals {
            self.out
                .metrics
                .listing_delay
                .observe(now.saturating_duration_since(*at).as_secs_f64());
        }
    }

    /// Decides the audio format from the first held frame (if any), then lets the held units in.
    async fn start_audio(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let first = pending.iter().find_map(|u| match u {
            Unit::Audio(a) => Some(a),
            Unit::Video(_) => None,
        });
        self.audio = match (self.out.settings.audio, first) {
            (HlsAudio::Aac, Some(first)) => {
                let made = OpusToAac::new(channels_for(&first.data), self.out.settings.aac_bitrate)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        let config = AacConfig::parse(&t.audio_specific_config())
                            .map_err(|e| e.to_string())?;
                        Ok(AudioOut::Aac(Box::new(t), config))
                    });
                made.unwrap_or_else(|err| {
                    tracing::warn!(%err, "AAC encoder unavailable; HLS without audio");
                    AudioOut::None
                })
            }
            (HlsAudio::Opus, Some(first)) => AudioOut::Opus(OpusParams {
                channels: channels_for(&first.data),
                pre_skip: 0,
            }),
            _ => AudioOut::None,
        };
        for unit in pending {
            self.admit(unit).await;
        }
    }

    /// A unit past the start: transcoded, checked for new parameter sets, then segmented.
    async fn admit(&mut self, unit: Unit) {
        match unit {
            Unit::Audio(frame) => {
                let frames = match &mut self.audio {
                    AudioOut::Aac(t, _) => t.push(&frame).unwrap_or_else(|err| {
                        tracing::debug!(%err, "audio frame not transcodable");
                        Vec::new()
                    }),
                    AudioOut::Opus(_) => vec![frame],
                    AudioOut::None => {
                        if self.out.has_audio
                            && self.out.settings.audio != HlsAudio::None
                            && !self.late_audio
                        {
                            self.late_audio = true;
                            tracing::info!("audio came too late for this HLS session; left out");
                        }
                        Vec::new()
                    }
                };
                for frame in frames {
                    self.push(Unit::Audio(frame)).await;
                }
            }
            Unit::Video(v) if self.out.has_video => {
                match self.first_video_pts {
                    None => self.first_video_pts = Some(v.pts),
                    Some(first) if self.frame_rate.is_none() && v.pts > first => {
                        let fps = TIMELINE_HZ as f64 / (v.pts - first) as f64;
                        self.frame_rate = Some((fps * 1000.0).round() / 1000.0);
                    }
                    Some(_) => {}
                }
                if v.keyframe {
                    match (VideoParams::from_unit(&v), &self.video_params) {
                        (Ok(params), None) => self.video_params = Some(params),
                        (Ok(params), Some(old)) if *old != params => {
                            // New parameter sets (a resolution change): a new init section,
                            // which only a discontinuity can introduce.
                            tracing::info!(
                                codec = %params.codec_string(),
                                "video parameters changed; HLS discontinuity"
                            );
                            self.segmenter.discontinuity();
                            self.splits += 1;
                            self.drain().await;
                            self.muxer = None;
                            self.video_params = Some(params);
                        }
                        (Ok(_), Some(_)) => {}
                        (Err(err), None) => {
                            // Nothing to describe the track with yet: wait for a better one.
                            tracing::debug!(%err, "key frame without usable parameter sets");
                            self.out.keyframe_wanted.store(true, Ordering::Relaxed);
                            return;
                        }
                        // Decoders read in-band sets; the init section keeps the old ones.
                        (Err(_), Some(_)) => {}
                    }
                } else if self.video_params.is_none() {
                    return;
                }
                self.push(Unit::Video(v)).await;
            }
            Unit::Video(_) => {}
        }
    }

    async fn push(&mut self, unit: Unit) {
        self.segmenter.push(unit);
        self.drain().await;
    }

    async fn drain(&mut self) {
        while let Some(event) = self.segmenter.poll_event() {
            match event {
                Event::KeyframeWanted => self.out.keyframe_wanted.store(true, Ordering::Relaxed),
                Event::PartReady(part) => self.part(part).await,
                Event::SegmentReady(segment) => self.segment(segment).await,
            }
        }
    }

    /// The segmenter's per-session numbers on the stream's scale.
    fn map_info(&self, info: PartInfo) -> PartInfo {
        PartInfo {
            msn: info.msn.saturating_add(self.msn_base),
            epoch: info.epoch.saturating_add(self.epoch_base),
            discontinuity: info.discontinuity || (self.continuing && info.msn == 0),
            ..info
        }
    }

    fn make_muxer(&self) -> Option<Muxer> {
        let video = if self.out.has_video {
            Some(self.video_params.clone()?)
        } else {
            None
        };
        let made = match (self.out.settings.container, &self.audio) {
            (Container::Fmp4, audio) => {
                let audio = match audio {
                    AudioOut::Aac(_, config) => Some(AudioParams::Aac(config.clone())),
                    AudioOut::Opus(params) => Some(AudioParams::Opus(*params)),
                    AudioOut::None => None,
                };
                Fmp4Muxer::new(video, audio)
                    .map(Muxer::Fmp4)
                    .map_err(|e| e.to_string())
            }
            (Container::MpegTs, audio) => {
                let aac = match audio {
                    AudioOut::Aac(_, config) => Some(config),
                    _ => None,
                };
                TsMuxer::new(video.is_some(), aac)
                    .map(Muxer::Ts)
                    .map_err(|e| e.to_string())
            }
        };
        made.inspect_err(|err| tracing::error!(%err, "HLS muxer refused the stream"))
            .ok()
    }

    /// Starts the new presentation: its playlist replaces the last one's, whose files go.
    async fn install(&mut self) {
        let Some(playlist) = self.fresh.take() else {
            return;
        };
        let mut ops: Vec<FileOp> = std::mem::take(&mut self.writer.files)
            .into_iter()
            .map(FileOp::Remove)
            .collect();
        ops.push(FileOp::Remove(MEDIA_PLAYLIST_URI.to_owned()));
        ops.push(FileOp::Remove(MULTIVARIANT_PLAYLIST_URI.to_owned()));
        // The empty playlist first: meanwhile requests wait for new media rather than get a
        // playlist whose files are going.
        self.out.state.update(|view| {
            *view = View {
                playlist: Some(playlist),
                ..View::default()
            };
        });
        self.writer.meter = Some(BandwidthMeter::new(self.segment_target));
        self.apply(ops).await;
    }

    async fn part(&mut self, part: Part) {
        self.install().await;
        let arrivals = self.arrivals_of(&part);
        let info = self.map_info(part.info);
        let container = self.out.settings.container;
        let mut ops = Vec::new();
        let mut init = None;
        if self.muxer.is_none() {
            self.muxer = self.make_muxer();
            init = self
                .muxer
                .as_ref()
                .and_then(Muxer::init)
                .zip(container.init_uri(info.epoch));
        }
        let chunks = match self.muxer.as_mut() {
            Some(m) => m.part(part, info.index == 0),
            None => Vec::new(),
        };
        let bytes = concat(chunks);
        self.segment_parts.push(bytes.clone());
        if let Some((bytes, name)) = &init {
            ops.push(FileOp::Write(name.clone(), vec![bytes.clone()]));
        }
        if !self.out.settings.low_latency {
            self.unlisted.extend(arrivals);
            if let Some((bytes, name)) = init {
                self.out.state.update(|view| view.init.insert(name, bytes));
                self.apply(ops).await;
            }
            return;
        }
        let name = container.part_uri(info.msn, info.index);
        let (expired, index) = self.out.state.update(|view| {
            if let Some((bytes, name)) = init {
                view.init.insert(name, bytes);
            }
            view.parts.insert((info.msn, info.index), bytes.clone());
            view.parts = view.parts.split_off(&(info.msn.saturating_sub(1), 0));
            if let Some(playlist) = view.playlist.as_mut()
                && let Err(err) = playlist.add_part(info)
            {
                tracing::warn!(%err, "HLS part not listed");
            }
            view.take_expired()
        });
        self.out.metrics.parts.inc();
        self.listed(&arrivals);
        ops.push(FileOp::Write(name, vec![bytes]));
        ops.push(FileOp::Write(MEDIA_PLAYLIST_URI.to_owned(), vec![index]));
        ops.extend(expired.into_iter().map(FileOp::Remove));
        self.apply(ops).await;
    }

    async fn segment(&mut self, segment: Segment) {
        let segment = Segment {
            msn: segment.msn.saturating_add(self.msn_base),
            epoch: segment.epoch.saturating_add(self.epoch_base),
            discontinuity: segment.discontinuity || (self.continuing && segment.msn == 0),
            parts: segment.parts.iter().map(|p| self.map_info(*p)).collect(),
            ..segment
        };
        let parts = std::mem::take(&mut self.segment_parts);
        let size: usize = parts.iter().map(Bytes::len).sum();
        let name = self.out.settings.container.segment_uri(segment.msn);
        // On disk before it is listed: the HTTP layer serves segments from there.
        self.apply(vec![FileOp::Write(name, parts)]).await;
        self.segments += 1;
        if let Some(meter) = self.writer.meter.as_mut() {
            meter.add_segment(size as u64, segment.duration);
        }
        let main = self.variant();
        let main_changed = main.is_some() && lock(&self.out.state.view).main != main;
        let (expired, index) = self.out.state.update(|view| {
            if let Some(playlist) = view.playlist.as_mut()
                && let Err(err) = playlist.add_segment(&segment)
            {
                tracing::warn!(%err, "HLS segment not listed");
            }
            if main_changed {
                view.main.clone_from(&main);
            }
            view.take_expired()
        });
        self.out.metrics.segments.inc();
        self.out.metrics.bytes.inc_by(size as u64);
        let unlisted = std::mem::take(&mut self.unlisted);
        self.listed(&unlisted);
        tracing::debug!(msn = segment.msn, bytes = size, "HLS segment");
        let mut ops = vec![FileOp::Write(MEDIA_PLAYLIST_URI.to_owned(), vec![index])];
        if let (true, Some(main)) = (main_changed, main) {
            ops.push(FileOp::Write(
                MULTIVARIANT_PLAYLIST_URI.to_owned(),
                vec![main],
            ));
        }
        ops.extend(expired.into_iter().map(FileOp::Remove));
        self.apply(ops).await;
    }

    /// `main.m3u8`, once a segment measured the bandwidth.
    fn variant(&self) -> Option<Bytes> {
        let meter = self.writer.meter.as_ref()?;
        let video = self.video_params.as_ref();
        let codecs = match self.muxer.as_ref() {
            Some(Muxer::Fmp4(m)) => m.codecs(),
            _ => {
                let audio = match &self.audio {
                    AudioOut::Aac(_, config) => Some(config.codec_string()),
                    _ => None,
                };
                video
                    .map(VideoParams::codec_string)
                    .into_iter()
                    .chain(audio)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let variant = Variant {
            uri: MEDIA_PLAYLIST_URI.to_owned(),
            bandwidth: meter.peak()?,
            average_bandwidth: meter.average(),
            codecs,
            resolution: video.map(|p| (p.info().width, p.info().height)),
            frame_rate: self.frame_rate,
        };
        variant
            .to_bytes()
            .inspect_err(|err| tracing::error!(%err, "rendering main.m3u8 failed"))
            .ok()
            .map(Bytes::from)
    }

    async fn apply(&mut self, ops: Vec<FileOp>) {
        if ops.is_empty() {
            return;
        }
        for op in &ops {
            match op {
                FileOp::Write(name, _) => self.writer.files.insert(name.clone()),
                FileOp::Remove(name) => self.writer.files.remove(name),
            };
        }
        let dir = self.out.state.dir.clone();
        // The folder is made (and what an earlier run left there removed) at the first write,
        // not when the session starts: a publisher that never sends media leaves nothing.
        let prepare = !self.writer.prepared;
        let result = tokio::task::spawn_blocking(move || {
            let removed = if prepare {
                Some(prepare_blocking(&dir))
            } else {
                None
            };
            (removed, apply_blocking(&dir, ops))
        })
        .await;
        let errors = match result {
            Ok((Some(Err(err)), mut errors)) => {
                errors.insert(0, (".".to_owned(), err));
                errors
            }
            Ok((Some(Ok(removed)), errors)) => {
                self.writer.prepared = true;
                if removed > 0 {
                    tracing::info!(removed, dir = %self.out.state.dir.display(), "stale HLS files removed");
                }
                errors
            }
            Ok((None, errors)) => errors,
            Err(err) => {
                tracing::error!(%err, "HLS file task failed");
                return;
            }
        };
        match errors.first() {
            // Once per outage, not five times a second.
            Some((file, err)) if !self.writer.failing => {
                self.writer.failing = true;
                tracing::warn!(%file, %err, dir = %self.out.state.dir.display(), "HLS files not written");
            }
            None if self.writer.failing => {
                self.writer.failing = false;
                tracing::info!("HLS files written again");
            }
            _ => {}
        }
    }

    async fn finish(mut self) {
        if self.pending.is_some() {
            self.start_audio().await;
        }
        if let AudioOut::Aac(t, _) = &mut self.audio {
            let tail = t.flush().unwrap_or_default();
            for frame in tail {
                self.push(Unit::Audio(frame)).await;
            }
        }
        self.segmenter.finish();
        self.drain().await;
        self.writer.next_msn = self.msn_base.saturating_add(self.segmenter.next_msn());
        self.writer.next_epoch = self.epoch_base.saturating_add(self.splits + 1);
        if self.fresh.is_some() {
            tracing::info!("HLS output ended without media");
            return;
        }
        let state = self.out.state.clone();
        if state.generation.load(Ordering::SeqCst) != self.out.generation {
            tracing::info!(
                segments = self.segments,
                "HLS output handed over to the next publisher"
            );
            return;
        }
        let ((), index) = state.update(|view| {
            if let Some(playlist) = view.playlist.as_mut() {
                playlist.end();
            }
            // Every part is on disk; memory is for live streams.
            view.parts.clear();
        });
        // A presentation that never wrote anything (no media came) leaves no folder behind.
        if !self.writer.files.is_empty() {
            let ops = vec![FileOp::Write(MEDIA_PLAYLIST_URI.to_owned(), vec![index])];
            self.apply(ops).await;
        }
        tracing::info!(segments = self.segments, "HLS playlist ended");
    }
}

/// Whether the held units say enough about audio to start: a frame came, or a second passed,
/// or too many units wait.
/// The publisher's clock (`sender`) is within [`MAX_CLOCK_SKEW`] of the bridge's (`bridge`),
/// both as the wallclock time of timeline 0.
fn plausible_clock(sender: SystemTime, bridge: SystemTime) -> bool {
    let skew = sender
        .duration_since(bridge)
        .or_else(|_| bridge.duration_since(sender))
        .unwrap_or(Duration::MAX);
    skew <= MAX_CLOCK_SKEW
}

fn audio_known(pending: &[Unit]) -> bool {
    let pts = |u: &Unit| match u {
        Unit::Video(v) => v.pts,
        Unit::Audio(a) => a.pts,
    };
    let waited = match (pending.first(), pending.last()) {
        (Some(a), Some(b)) => pts(b).saturating_sub(pts(a)),
        _ => 0,
    };
    pending.iter().any(|u| matches!(u, Unit::Audio(_)))
        || waited >= AUDIO_WAIT
        || pending.len() >= MAX_PENDING
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                out.extend_from_slice(&chunk);
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_file_names_parse() {
        assert_eq!(HlsFile::parse("index.m3u8"), Some(HlsFile::MediaPlaylist));
        assert_eq!(
            HlsFile::parse("main.m3u8"),
            Some(HlsFile::MultivariantPlaylist)
        );
        assert_eq!(HlsFile::parse("init.mp4"), Some(HlsFile::Init));
        assert_eq!(HlsFile::parse("init17.mp4"), Some(HlsFile::Init));
        assert_eq!(HlsFile::parse("seg0.m4s"), Some(HlsFile::Segment));
        assert_eq!(
            HlsFile::parse("seg1718000000000.ts"),
            Some(HlsFile::Segment)
        );
        assert_eq!(
            HlsFile::parse("part12.3.m4s"),
            Some(HlsFile::Part { msn: 12, index: 3 })
        );
        for bad in [
            "",
            "..",
            "../index.m3u8",
            "index.m3u8/",
            "seg.m4s",
            "seg01.m4s",
            "seg-1.m4s",
            "seg+1.m4s",
            "seg1.mp4",
            "part1.m4s",
            "part1.2.3.m4s",
            "part1.99999999999.m4s",
            "init0.mp4x",
            "seg123456789012345678901.ts",
            ".seg1.m4s.tmp",
            "SEG1.M4S",
        ] {
            assert_eq!(HlsFile::parse(bad), None, "{bad:?}");
        }
        assert_eq!(HlsFile::Segment.content_type("seg1.ts"), "video/mp2t", "TS");
        assert_eq!(HlsFile::Init.content_type("init.mp4"), "video/mp4");
    }

    #[test]
    fn a_clock_within_a_minute_is_plausible() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secs = Duration::from_secs;
        for (sender, ok) in [
            (t, true),
            (t + secs(59), true),
            (t - secs(60), true),
            (t + secs(61), false),
            (t - secs(3600), false),
            (UNIX_EPOCH, false),
        ] {
            assert_eq!(plausible_clock(sender, t), ok, "{sender:?}");
        }
    }

    /// Runs 2 s of real video through an LL-HLS output whose publisher's sender-report clock
    /// says timeline 0 was `skew` from now; returns the first segment's date, in ms since the
    /// epoch, and the metrics text.
    async fn dated_run(name: &str, skew: i64) -> (i64, String) {
        let metrics = crate::metrics::Metrics::default();
        let settings = HlsSettings {
            dir: bridge_proto::testdata::temp_dir(name),
            container: Container::Fmp4,
            low_latency: true,
            kind: crate::mux::hls::playlist::PlaylistKind::Live { window: 6 },
            audio: HlsAudio::None,
            aac_bitrate: 64_000,
        };
        let streams = HlsStreams::new(settings, metrics.hls());
        let now = SystemTime::now();
        let shift = Duration::from_secs(skew.unsigned_abs());
        let sender = if skew < 0 { now - shift } else { now + shift };
        let (_clock, wallclock) = watch::channel(Some(sender));
        let output = streams.output("s", false, true, Arc::default(), wallclock);
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(output.run(rx));
        for unit in bridge_proto::testdata::video_units(0) {
            tx.send(Unit::Video(unit)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let index = std::fs::read(streams.get("s").unwrap().dir().join("index.m3u8")).unwrap();
        let playlist = m3u8_rs::parse_media_playlist_res(&index).unwrap();
        let date = playlist.segments[0].program_date_time.unwrap();
        (date.timestamp_millis(), metrics.render())
    }

    fn ms(t: SystemTime) -> i64 {
        i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    #[tokio::test]
    async fn segments_are_dated_by_the_publishers_clock_when_plausible() {
        let before = ms(SystemTime::now());
        let (date, metrics) = dated_run("dated-sender", -20).await;
        // The first segment starts at timeline 0, which the sender dated 20 s ago.
        assert!(
            (date - (before - 20_000)).abs() < 1_000,
            "{date} vs {before}"
        );
        // Every one of the 60 frames was listed in a part, each within the run.
        let line = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {metrics}"))
                .to_owned()
        };
        assert_eq!(
            line("bridge_hls_listing_delay_seconds_count"),
            "bridge_hls_listing_delay_seconds_count 60"
        );
        assert_eq!(
            line("bridge_hls_segments_total"),
            "bridge_hls_segments_total 2"
        );
        assert!(line("bridge_hls_parts_total").ends_with(" 10"), "{metrics}");

        // Two hours off: the bridge's own clock dates it.
        let before = ms(SystemTime::now());
        let (date, _) = dated_run("dated-bridge", -7200).await;
        assert!((date - before).abs() < 1_000, "{date} vs {before}");
    }

    #[test]
    fn files_are_replaced_whole_and_stale_ones_removed() {
        let dir = std::env::temp_dir().join(format!("bridge-hls-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seg5.m4s"), b"old").unwrap();
        std::fs::write(dir.join(".index.m3u8.tmp"), b"half").unwrap();
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        assert_eq!(prepare_blocking(&dir).unwrap(), 2);
        assert!(dir.join("notes.txt").exists());
        let errors = apply_blocking(
            &dir,
            vec![
                FileOp::Write(
                    "seg6.m4s".into(),
                    vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                ),
                FileOp::Remove("seg5.m4s".into()),
            ],
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(std::fs::read(dir.join("seg6.m4s")).unwrap(), b"ab");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
