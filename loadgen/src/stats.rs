//! Latency recording: one pair of HDR histograms per metric, one timed from each request's actual
//! start (raw) and one from its intended start (corrected for coordinated omission), plus the
//! optional HdrHistogram interval log.
//!
//! Values are microseconds. Four significant digits keep a 1 s value within 64 µs, which the
//! instrument's self-test needs to compare percentiles with theory to the millisecond.

use std::fmt;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

/// Significant digits kept by every histogram.
const SIGFIG: u8 = 4;
/// Largest value tracked (10 min in µs); larger ones are clamped to it.
const HIGHEST_US: u64 = 600 * 1_000_000;

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// POST to its final answer (redirects and Retry-After waits included in the corrected value).
    Post,
    /// A trickle PATCH to its answer.
    PatchTrickle,
    /// An ICE-restart PATCH to its answer.
    PatchRestart,
    /// DELETE to its answer.
    Delete,
    /// Session start (POST) to ICE + DTLS connected (`--connect`).
    IceConnected,
    /// ICE-restart PATCH to connected again (`--connect`).
    IceReconnected,
    /// `publish`: a video frame's generation to its FLV tag reaching the RTMP ingest.
    FrameRtmp,
    /// `publish`: a publisher's start (POST) to the first byte of its stream's RTMP connection.
    FirstRtmp,
    /// `publish`: a video frame's generation to the LL-HLS part (or segment) holding it fully
    /// received by the built-in HLS client.
    FrameHls,
    /// `publish`: a publisher's start (POST) to the first byte of its stream's first HLS part.
    FirstHls,
    /// `signal`: a POST answered `201`, alone: no redirect or Retry-After wait before it (its
    /// corrected value counts from when that attempt was due).
    PostAdmitted,
    /// `signal`: a POST refused for load (`429`, `503`), each attempt alone, timed like
    /// [`Metric::PostAdmitted`]: how fast a server says "not now".
    PostRefused,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 12] = [
        Metric::Post,
        Metric::PatchTrickle,
        Metric::PatchRestart,
        Metric::Delete,
        Metric::IceConnected,
        Metric::IceReconnected,
        Metric::FrameRtmp,
        Metric::FirstRtmp,
        Metric::FrameHls,
        Metric::FirstHls,
        Metric::PostAdmitted,
        Metric::PostRefused,
    ];

    /// The name used in reports, JSON and SLO expressions.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Post => "post",
            Metric::PatchTrickle => "patch_trickle",
            Metric::PatchRestart => "patch_restart",
            Metric::Delete => "delete",
            Metric::IceConnected => "ice_connected",
            Metric::IceReconnected => "ice_reconnected",
            Metric::FrameRtmp => "frame_rtmp",
            Metric::FirstRtmp => "first_rtmp",
            Metric::FrameHls => "frame_hls",
            Metric::FirstHls => "first_hls",
            Metric::PostAdmitted => "post_admitted",
            Metric::PostRefused => "post_refused",
        }
    }

    /// The metric called `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of histogram (de)serialization.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// The histogram could not be encoded.
    #[error("cannot encode histogram: {0}")]
    Encode(String),
    /// The text is not base64 of a V2 (compressed) histogram.
    #[error("cannot decode histogram: {0}")]
    Decode(String),
    /// Two histograms could not be added.
    #[error("cannot merge histograms: {0}")]
    Merge(String),
    /// The interval log could not be written.
    #[error("interval log: {0}")]
    Log(String),
}

/// A new empty histogram with the crate's bounds and precision.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant arguments that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5):
    // this cannot fail at run time.
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Microseconds, rounded down, at least 1 (the histograms' lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Base64 of the V2 deflate encoding, the form the HdrHistogram tools exchange.
pub fn encode(h: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Inverse of [`encode`] (also reads uncompressed V2).
pub fn decode(text: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| HistogramError::Decode(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))
}

/// Raw and corrected histograms of one metric.
#[derive(Debug, Clone)]
pub struct Pair {
    /// From each request's actual start.
    pub raw: Histogram<u64>,
    /// From each request's intended start.
    pub corrected: Histogram<u64>,
}

impl Pair {
    fn new() -> Self {
        Self {
            raw: new_histogram(),
            corrected: new_histogram(),
        }
    }

    fn record(&mut self, raw: Duration, corrected: Duration) {
        self.raw.saturating_record(micros(raw));
        // The intended start is never after the actual one, so neither is the value.
        self.corrected.saturating_record(micros(corrected.max(raw)));
    }

    fn reset(&mut self) {
        self.raw.reset();
        self.corrected.reset();
    }
}

/// All metrics' histograms for a run, with the interval log if asked for.
#[derive(Debug)]
pub struct Recorder {
    total: Vec<Pair>,
    interval: Option<IntervalLog>,
}

impl Recorder {
    /// A recorder; with `interval_log`, it also keeps the current interval's histograms.
    pub fn new(interval_log: bool) -> Self {
        Self {
            total: Metric::ALL.iter().map(|_| Pair::new()).collect(),
            interval: interval_log.then(IntervalLog::new),
        }
    }

    /// Records one value of `metric`.
    pub fn record(&mut self, metric: Metric, raw: Duration, corrected: Duration) {
        if let Some(pair) = self.total.get_mut(metric.index()) {
            pair.record(raw, corrected);
        }
        if let Some(log) = &mut self.interval
            && let Some(pair) = log.current.get_mut(metric.index())
        {
            pair.record(raw, corrected);
        }
    }

    /// The histograms of `metric` over the whole run.
    pub fn pair(&self, metric: Metric) -> Option<&Pair> {
        self.total.get(metric.index())
    }

    /// Closes the current interval (`start`..`start + length`, relative to the log's start)
    /// into the interval log.
    pub fn close_interval(
        &mut self,
        start: Duration,
        length: Duration,
    ) -> Result<(), HistogramError> {
        match &mut self.interval {
            Some(log) => log.close(start, length),
            None => Ok(()),
        }
    }

    /// The interval log text (`.hlog`), if one was kept. `started` is the run's wall-clock start.
    pub fn interval_log(&self, started: SystemTime) -> Option<Vec<u8>> {
        self.interval.as_ref().map(|log| log.render(started))
    }
}

/// An HdrHistogram interval log being built: the lines of closed intervals, and the histograms
/// of the open one.
#[derive(Debug)]
struct IntervalLog {
    current: Vec<Pair>,
    lines: Vec<u8>,
}

impl IntervalLog {
    fn new() -> Self {
        Self {
            current: Metric::ALL.iter().map(|_| Pair::new()).collect(),
            lines: Vec::new(),
        }
    }

    fn close(&mut self, start: Duration, length: Duration) -> Result<(), HistogramError> {
        let mut serializer = V2DeflateSerializer::new();
        // No comments or times set: the builder writes no header here, only our lines.
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.lines, &mut serializer)
            .map_err(|e| HistogramError::Log(e.to_string()))?;
        for (metric, pair) in Metric::ALL.iter().zip(&self.current) {
            if pair.raw.is_empty() {
                continue;
            }
            let corrected_tag = format!("{}.corrected", metric.name());
            for (tag, h) in [
                (metric.name(), &pair.raw),
                (corrected_tag.as_str(), &pair.corrected),
            ] {
                writer
                    .write_histogram(h, start, length, Tag::new(tag))
                    .map_err(|e| HistogramError::Log(format!("{e:?}")))?;
            }
        }
        for pair in &mut self.current {
            pair.reset();
        }
        Ok(())
    }

    fn render(&self, started: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let header = IntervalLogWriterBuilder::new()
            .add_comment("loadgen: WHIP latencies in microseconds; tag <metric> is timed from the actual start, <metric>.corrected from the intended start")
            .with_start_time(started)
            .with_base_time(started)
            .begin_log_with(&mut out, &mut serializer)
            .map(drop);
        if header.is_ok() {
            let _ = writeln!(
                out,
                "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
            );
        }
        out.extend_from_slice(&self.lines);
        out
    }
}
