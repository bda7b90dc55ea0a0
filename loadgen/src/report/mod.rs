//! A run's results: the JSON report (`--json`), the text table, merging runs, CI gates and the
//! percentile plot.
//!
//! Each latency summary carries its histogram (base64 of the V2 compressed encoding), so `merge`
//! adds histograms and recomputes percentiles rather than averaging them.

mod gate;
mod plot;
pub mod progress;
mod ramp;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use gate::{Gate, GateError, Slo, parse_fraction};
pub use plot::{PlotError, plot};
pub use ramp::{Ramp, RampStep};

use crate::server::ServerReport;
use crate::stats::{self, HistogramError, Metric, Recorder};

/// Percentiles and histogram of one metric, timed one way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest value, ms.
    pub max_ms: f64,
    /// The histogram (µs): base64 of its V2 compressed encoding.
    pub histogram: String,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Summary {
    /// Summarises `h` (µs).
    pub fn of(h: &Histogram<u64>) -> Result<Self, HistogramError> {
        let q = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Ok(Self {
            count: h.len(),
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            histogram: stats::encode(h)?,
        })
    }

    /// The histogram back.
    pub fn histogram(&self) -> Result<Histogram<u64>, HistogramError> {
        stats::decode(&self.histogram)
    }

    /// A statistic by its SLO name (`count`, `mean`, `p50`, `p90`, `p99`, `p999` or `p99.9`,
    /// `max`).
    pub fn stat(&self, name: &str) -> Option<f64> {
        Some(match name {
            "count" => self.count as f64,
            "mean" => self.mean_ms,
            "p50" => self.p50_ms,
            "p90" => self.p90_ms,
            "p99" => self.p99_ms,
            "p999" | "p99.9" => self.p999_ms,
            "max" => self.max_ms,
            _ => return None,
        })
    }
}

/// One metric: timed from each request's actual start, and (`corrected`) from its intended start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// From the actual start.
    #[serde(flatten)]
    pub raw: Summary,
    /// From the intended start (coordinated omission corrected).
    pub corrected: Summary,
}

impl Latency {
    fn of(raw: &Histogram<u64>, corrected: &Histogram<u64>) -> Result<Self, HistogramError> {
        Ok(Self {
            raw: Summary::of(raw)?,
            corrected: Summary::of(corrected)?,
        })
    }
}

/// Session outcomes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sessions {
    /// Sessions the run meant to start.
    pub planned: u64,
    /// Ran their plan with every answer as the oracle expected.
    pub ok: u64,
    /// Did not (violation, failure).
    pub failed: u64,
    /// Failures by kind (a session counts once, under its first failure).
    pub failures: BTreeMap<String, u64>,
    /// PATCHes the oracle could not judge (an earlier restart's outcome was unknown).
    pub unchecked_patches: u64,
}

/// POSTs refused for load (`429`, `503`): a server that refuses should say when to come back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Refusals {
    /// Refused POSTs (flood POSTs included).
    pub count: u64,
    /// Of which with a `Retry-After` header.
    pub with_retry_after: u64,
}

impl Refusals {
    /// Refused POSTs without a `Retry-After`.
    pub fn without_retry_after(&self) -> u64 {
        self.count.saturating_sub(self.with_retry_after)
    }
}

/// Protocol violations: `total`, then one count per kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Violations {
    /// All violations.
    pub total: u64,
    /// Per kind.
    #[serde(flatten)]
    pub by_kind: BTreeMap<String, u64>,
}

/// Video frames of `publish` through one output, told apart by the frame numbers their stamp SEI
/// carries.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Frames {
    /// Sent by the publishers.
    pub sent: u64,
    /// Distinct frames found in the output.
    pub received: u64,
    /// Never found, from each stream's first received frame on (an output starts at a keyframe,
    /// so the frames before it are not lost) to its last sent one.
    pub lost: u64,
    /// Arrived after a later frame of their stream.
    pub reordered: u64,
    /// Arrived again.
    pub duplicated: u64,
}

impl Frames {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Frames) {
        self.sent += other.sent;
        self.received += other.received;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicated += other.duplicated;
    }

    /// A count by its SLO name (`sent`, `received`, `lost`, `reordered`, `duplicated`).
    pub fn count(&self, name: &str) -> Option<u64> {
        Some(match name {
            "sent" => self.sent,
            "received" => self.received,
            "lost" => self.lost,
            "reordered" => self.reordered,
            "duplicated" => self.duplicated,
            _ => return None,
        })
    }
}

/// Audio/video drift of an output's streams, ms: how far audio ran ahead (positive) or behind
/// (negative) video from the first second of a stream to its last (`publish` measures it; its
/// `account::AvDrift` has the definition).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Drift {
    /// The drift of largest magnitude among the streams, with its sign.
    pub worst: f64,
    /// Per stream.
    pub streams: BTreeMap<String, f64>,
}

impl Drift {
    /// From per-stream values; `None` if there are none.
    pub fn of(streams: BTreeMap<String, f64>) -> Option<Drift> {
        let worst = streams
            .values()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))?;
        Some(Drift { worst, streams })
    }

    /// Adds another run's streams (a stream in both keeps its larger magnitude).
    pub fn add(&mut self, other: &Drift) {
        for (stream, d) in &other.streams {
            let e = self.streams.entry(stream.clone()).or_insert(*d);
            if d.abs() > e.abs() {
                *e = *d;
            }
        }
        if other.worst.abs() > self.worst.abs() {
            self.worst = other.worst;
        }
    }
}

/// What one output of `publish` delivered: `rtmp` (the built-in RTMP ingest) or `hls` (the
/// built-in LL-HLS client).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutputReport {
    /// Video frames.
    pub frames: Frames,
    /// Errors of the output's receiver (failed HLS requests, unreadable parts, ...).
    #[serde(default)]
    pub errors: u64,
    /// Audio/video drift; absent when no stream carried both tracks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub av_drift_ms: Option<Drift>,
    /// The picture sizes the output's video configurations said (`"640x360"`, or
    /// `"unreadable"`), each with how many it delivered: the RTMP ingest counts AVC sequence
    /// headers, which name the simulcast layer the bridge forwards. Absent when none was read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub video_sizes: BTreeMap<String, u64>,
    /// `hls` with `--simulcast` > 1: each video rendition of the ladder the multivariant
    /// playlist (`main.m3u8`) listed, over every stream, in the playlist's order. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<RenditionReport>,
    /// `hls` with `--simulcast` > 1: the ladder's audio rendition, when it listed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_rendition: Option<AudioRenditionReport>,
}

/// One video rendition of an HLS ladder, over every stream: what its media playlist delivered
/// of the frames sent, and whether a player can switch to it at any segment boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RenditionReport {
    /// Its media playlist, as the multivariant playlist lists it (`v0/index.m3u8`).
    pub uri: String,
    /// Picture width its init section's SPS says (the last one read).
    pub width: Option<u32>,
    /// Picture height its init section's SPS says.
    pub height: Option<u32>,
    /// The `RESOLUTION` the multivariant playlist gives it (`"640x360"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playlist_resolution: Option<String>,
    /// Video frames: every rendition carries every frame sent (each layer's frames carry the
    /// same stamps).
    pub frames: Frames,
    /// Errors of its client, and sizes that are no layer's.
    pub errors: u64,
    /// Frame latency, as `frame_hls` times it (send to the part holding the frame received),
    /// of the frames that came out while its client followed it (not those of the parts
    /// already listed when it started, fetched as a backlog).
    pub latency: Option<Summary>,
    /// Segments whose start was fetched (their first part, or the whole segment).
    pub segments: u64,
    /// Of those, the ones that start with a key frame (the first sample flagged sync and
    /// holding an IDR slice): where a player may switch to this rendition.
    pub keyframe_starts: u64,
    /// The largest distance, ms, from one of its segments' start to the nearest segment start
    /// of the top rendition of the same stream, over the time the top rendition's segments
    /// cover (0 for the top rendition itself); absent when there was nothing to compare.
    pub max_misalignment_ms: Option<f64>,
}

/// The audio rendition of an HLS ladder, over every stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AudioRenditionReport {
    /// Its media playlist, as the multivariant playlist lists it (`audio/index.m3u8`).
    pub uri: String,
    /// Parts and segments fetched and read.
    pub fragments: u64,
    /// Segments whose start was fetched.
    pub segments: u64,
    /// Audio frames (samples) in them.
    pub audio_frames: u64,
    /// Errors of its client.
    pub errors: u64,
}

impl RenditionReport {
    /// Adds the same rendition of another run.
    fn add(&mut self, other: &RenditionReport) -> Result<(), HistogramError> {
        self.frames.add(&other.frames);
        self.errors += other.errors;
        self.segments += other.segments;
        self.keyframe_starts += other.keyframe_starts;
        if other.width.is_some() {
            (self.width, self.height) = (other.width, other.height);
        }
        if self.playlist_resolution.is_none() {
            self.playlist_resolution = other.playlist_resolution.clone();
        }
        self.max_misalignment_ms = match (self.max_misalignment_ms, other.max_misalignment_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.latency = match (&self.latency, &other.latency) {
            (Some(a), Some(b)) => {
                let mut h = a.histogram()?;
                h.add(b.histogram()?)
                    .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
                Some(Summary::of(&h)?)
            }
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Ok(())
    }

    /// Segments that do not start with a key frame.
    pub fn non_keyframe_starts(&self) -> u64 {
        self.segments.saturating_sub(self.keyframe_starts)
    }
}

impl OutputReport {
    /// Adds another run's output.
    pub fn add(&mut self, other: &OutputReport) -> Result<(), HistogramError> {
        self.frames.add(&other.frames);
        self.errors += other.errors;
        for r in &other.renditions {
            match self.renditions.iter_mut().find(|m| m.uri == r.uri) {
                Some(mine) => mine.add(r)?,
                None => self.renditions.push(r.clone()),
            }
        }
        if let Some(a) = &other.audio_rendition {
            let mine = self
                .audio_rendition
                .get_or_insert_with(|| AudioRenditionReport {
                    uri: a.uri.clone(),
                    ..AudioRenditionReport::default()
                });
            mine.fragments += a.fragments;
            mine.segments += a.segments;
            mine.audio_frames += a.audio_frames;
            mine.errors += a.errors;
        }
        for (size, n) in &other.video_sizes {
            *self.video_sizes.entry(size.clone()).or_default() += n;
        }
        match (&mut self.av_drift_ms, &other.av_drift_ms) {
            (Some(d), Some(o)) => d.add(o),
            (None, Some(o)) => self.av_drift_ms = Some(o.clone()),
            _ => {}
        }
        Ok(())
    }
}

/// Everything a run (or a merge of runs) measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The command line of each run.
    pub commands: Vec<String>,
    /// Wall time of the run (sum over merged runs), seconds.
    pub duration_s: f64,
    /// Session outcomes.
    pub sessions: Sessions,
    /// Violations.
    pub violations: Violations,
    /// The first examples of each violation kind.
    pub violation_examples: BTreeMap<String, Vec<String>>,
    /// The first examples of failures.
    pub failure_examples: Vec<String>,
    /// Sessions per injected fault.
    pub faults: BTreeMap<String, u64>,
    /// Sessions per client profile.
    pub profiles: BTreeMap<String, u64>,
    /// Sessions created per node (the node base of the session URL answered with the 201, after
    /// redirects: its origin, or the node's path behind a proxy):
    /// how a cluster of bridges spread them.
    #[serde(default)]
    pub nodes: BTreeMap<String, u64>,
    /// Answers per request kind and status (`no answer` for none).
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    /// Datagrams that reached the candidate sink sockets.
    pub stray_datagrams: u64,
    /// POSTs refused for load, and how many with `Retry-After` (absent from reports written
    /// before it was counted: zero).
    #[serde(default)]
    pub refusals: Refusals,
    /// Latency per metric (`post`, `patch_trickle`, `patch_restart`, `delete`, `ice_connected`,
    /// `ice_reconnected`, `frame_rtmp`, `first_rtmp`, `frame_hls`, `first_hls`, `post_admitted`,
    /// `post_refused`).
    pub latency: BTreeMap<String, Latency>,
    /// What each output measured (`publish` only): `rtmp`, `hls`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, OutputReport>,
    /// What the server spent over the steady window (`--server-metrics`): `null` when not
    /// measured (`--server-metrics off`), with `error` set when it could not be.
    #[serde(default)]
    pub server: Option<ServerReport>,
    /// `publish --ramp`: each step and the knee (absent without `--ramp`; `merge` leaves it
    /// out, as steps of separate runs do not add up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
}

/// Errors reading, merging or writing reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not a report.
    #[error("{path}: not a loadgen report: {source}")]
    Json {
        /// The file.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A histogram could not be encoded, decoded or added.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

impl Report {
    /// Fills `latency` from a recorder.
    pub fn set_latency(&mut self, recorder: &Recorder) -> Result<(), HistogramError> {
        for metric in Metric::ALL {
            if let Some(pair) = recorder.pair(metric) {
                self.latency.insert(
                    metric.name().to_owned(),
                    Latency::of(&pair.raw, &pair.corrected)?,
                );
            }
        }
        Ok(())
    }

    /// Reads a report written by `--json`.
    pub fn load(path: &str) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ReportError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the report as pretty JSON.
    pub fn save(&self, path: &str) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    /// Combines runs: counts add up, histograms are merged and percentiles recomputed.
    pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
        let mut out = Report::default();
        let mut hists: BTreeMap<String, (Histogram<u64>, Histogram<u64>)> = BTreeMap::new();
        fn add(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        for r in reports {
            out.commands.extend(r.commands.iter().cloned());
            out.duration_s += r.duration_s;
            out.sessions.planned += r.sessions.planned;
            out.sessions.ok += r.sessions.ok;
            out.sessions.failed += r.sessions.failed;
            out.sessions.unchecked_patches += r.sessions.unchecked_patches;
            add(&mut out.sessions.failures, &r.sessions.failures);
            out.violations.total += r.violations.total;
            add(&mut out.violations.by_kind, &r.violations.by_kind);
            for (k, v) in &r.violation_examples {
                out.violation_examples
                    .entry(k.clone())
                    .or_default()
                    .extend(v.iter().cloned());
            }
            out.failure_examples
                .extend(r.failure_examples.iter().cloned());
            add(&mut out.faults, &r.faults);
            add(&mut out.profiles, &r.profiles);
            add(&mut out.nodes, &r.nodes);
            for (k, v) in &r.statuses {
                add(out.statuses.entry(k.clone()).or_default(), v);
            }
            out.stray_datagrams += r.stray_datagrams;
            out.refusals.count += r.refusals.count;
            out.refusals.with_retry_after += r.refusals.with_retry_after;
            for (name, o) in &r.outputs {
                out.outputs.entry(name.clone()).or_default().add(o)?;
            }
            if let Some(server) = &r.server {
                match &mut out.server {
                    Some(merged) => merged.add(server),
                    None => out.server = Some(server.clone()),
                }
            }
            for (name, lat) in &r.latency {
                let (raw, corrected) = (lat.raw.histogram()?, lat.corrected.histogram()?);
                match hists.get_mut(name) {
                    Some((r, c)) => {
                        r.add(&raw)
                            .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
                        c.add(&corrected)
                            .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
                    }
                    None => {
                        hists.insert(name.clone(), (raw, corrected));
                    }
                }
            }
        }
        for (name, (raw, corrected)) in hists {
            out.latency.insert(name, Latency::of(&raw, &corrected)?);
        }
        Ok(out)
    }

    /// The human-readable summary printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.sessions;
        let _ = writeln!(
            out,
            "sessions: {} planned, {} ok, {} failed in {:.1} s; violations: {}",
            s.planned, s.ok, s.failed, self.duration_s, self.violations.total
        );
        if !self.profiles.is_empty() {
            let _ = writeln!(out, "profiles: {}", join_counts(&self.profiles));
        }
        if !self.nodes.is_empty() {
            let _ = writeln!(out, "sessions per node: {}", join_counts(&self.nodes));
        }
        if !self.faults.is_empty() {
            let _ = writeln!(
                out,
                "faults injected (sessions): {}",
                join_counts(&self.faults)
            );
        }
        for (kind, counts) in &self.statuses {
            let _ = writeln!(out, "{kind} answers: {}", join_counts(counts));
        }
        if self.refusals.count > 0 {
            let _ = writeln!(
                out,
                "POSTs refused for load: {}, {} of them without Retry-After",
                self.refusals.count,
                self.refusals.without_retry_after()
            );
        }
        if !s.failures.is_empty() {
            let _ = writeln!(out, "failures: {}", join_counts(&s.failures));
        }
        if s.unchecked_patches > 0 {
            let _ = writeln!(
                out,
                "unchecked PATCHes (after a restart with no answer): {}",
                s.unchecked_patches
            );
        }
        if self.stray_datagrams > 0 {
            let _ = writeln!(
                out,
                "datagrams to the candidate sink sockets: {}",
                self.stray_datagrams
            );
        }
        if !self.outputs.is_empty() {
            self.outputs_table(&mut out);
        }
        if let Some(server) = &self.server {
            out += &server.table();
        }
        if let Some(ramp) = &self.ramp {
            out += &ramp.table();
        }
        let _ = writeln!(
            out,
            "\n{:<16}{:<11}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for metric in Metric::ALL {
            let Some(lat) = self.latency.get(metric.name()) else {
                continue;
            };
            if lat.raw.count == 0 {
                continue;
            }
            for (label, sum, name) in [
                ("raw", &lat.raw, metric.name()),
                ("corrected", &lat.corrected, ""),
            ] {
                let _ = writeln!(
                    out,
                    "{name:<16}{label:<11}{:>8}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                    sum.count, sum.p50_ms, sum.p90_ms, sum.p99_ms, sum.p999_ms, sum.max_ms
                );
            }
        }
        if self.violations.total > 0 {
            let _ = writeln!(out, "\nviolations:");
            for (kind, n) in &self.violations.by_kind {
                let _ = writeln!(out, "  {kind}: {n}");
                for e in self.violation_examples.get(kind).into_iter().flatten() {
                    let _ = writeln!(out, "    e.g. {e}");
                }
            }
        }
        if !self.failure_examples.is_empty() {
            let _ = writeln!(out, "\nfirst failures:");
            for e in &self.failure_examples {
                let _ = writeln!(out, "  {e}");
            }
        }
        out
    }
}

impl Report {
    /// The frames of every output together: counts summed, `sent` the largest (every output
    /// carries the same frames sent).
    pub fn frames_total(&self) -> Option<Frames> {
        let mut outputs = self.outputs.values();
        let first = outputs.next()?.frames;
        Some(outputs.fold(first, |mut t, o| {
            let sent = t.sent.max(o.frames.sent);
            t.add(&o.frames);
            t.sent = sent;
            t
        }))
    }

    /// The per-output lines of the table.
    fn outputs_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n{:<8}{:>8}{:>10}{:>8}{:>11}{:>12}{:>8}  av_drift_ms worst (per stream)",
            "output", "sent", "received", "lost", "reordered", "duplicated", "errors",
        );
        for (name, o) in &self.outputs {
            let f = &o.frames;
            let drift = match &o.av_drift_ms {
                Some(d) => {
                    let mut streams: Vec<String> = d
                        .streams
                        .iter()
                        .take(DRIFT_STREAMS_SHOWN)
                        .map(|(s, v)| format!("{s} {v:+.1}"))
                        .collect();
                    if d.streams.len() > DRIFT_STREAMS_SHOWN {
                        streams.push(format!("+{} more", d.streams.len() - DRIFT_STREAMS_SHOWN));
                    }
                    format!("{:+.1} ({})", d.worst, streams.join(", "))
                }
                None => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name:<8}{:>8}{:>10}{:>8}{:>11}{:>12}{:>8}  {drift}",
                f.sent, f.received, f.lost, f.reordered, f.duplicated, o.errors
            );
        }
        for (name, o) in &self.outputs {
            for r in &o.renditions {
                out.push_str(&r.line(name));
            }
            if let Some(a) = &o.audio_rendition {
                let _ = writeln!(
                    out,
                    "{name} rendition {}: {} segments, {} parts and segments read, {} audio frames, {} errors",
                    a.uri, a.segments, a.fragments, a.audio_frames, a.errors
                );
            }
        }
    }
}

impl RenditionReport {
    /// Its line in the table.
    fn line(&self, output: &str) -> String {
        let size = match (self.width, self.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "size unknown".to_owned(),
        };
        let f = &self.frames;
        let latency = self.latency.as_ref().map_or_else(
            || "-".to_owned(),
            |l| format!("p50 {:.1} ms, p99 {:.1} ms", l.p50_ms, l.p99_ms),
        );
        let misaligned = self
            .max_misalignment_ms
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.1} ms"));
        format!(
            "{output} rendition {} {size}: frames {} sent, {} received, {} lost; latency {latency}; \
             {} of {} segments start with a key frame; boundaries off the top rendition's by at most {misaligned}; {} errors\n",
            self.uri, f.sent, f.received, f.lost, self.keyframe_starts, self.segments, self.errors
        )
    }
}

/// Streams whose drift the table lists by name (the JSON has them all).
const DRIFT_STREAMS_SHOWN: usize = 6;

fn join_counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(values_ms: &[u64]) -> Report {
        let mut rec = Recorder::new(false);
        for v in values_ms {
            let d = Duration::from_millis(*v);
            rec.record(Metric::Post, d, d * 2);
        }
        let mut r = Report {
            sessions: Sessions {
                planned: values_ms.len() as u64,
                ok: values_ms.len() as u64,
                ..Sessions::default()
            },
            ..Report::default()
        };
        r.violations.by_kind.insert("stale_tag_accepted".into(), 1);
        r.violations.total = 1;
        r.set_latency(&rec).unwrap();
        r
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = report(&[1, 2, 3]);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["violations"]["total"], 1);
        assert_eq!(v["violations"]["stale_tag_accepted"], 1);
        assert_eq!(v["sessions"]["ok"], 3);
        assert_eq!(v["latency"]["post"]["count"], 3);
        assert_eq!(v["latency"]["post"]["max_ms"], 3.0);
        assert_eq!(v["latency"]["post"]["corrected"]["max_ms"], 6.0);
        for m in Metric::ALL {
            assert!(v["latency"][m.name()]["p999_ms"].is_number(), "{m}");
        }
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn merging_adds_histograms_not_percentiles() {
        // One run fast, one slow: the merged median is not the mean of the medians.
        let mut a = report(&[1; 90]);
        let drift = |s: &str, v: f64| Drift::of([(s.to_owned(), v)].into()).unwrap();
        a.outputs.insert(
            "rtmp".into(),
            OutputReport {
                frames: Frames {
                    sent: 10,
                    received: 9,
                    lost: 1,
                    ..Frames::default()
                },
                errors: 0,
                av_drift_ms: Some(drift("p0", -4.0)),
                video_sizes: [("640x360".to_owned(), 1)].into(),
                ..OutputReport::default()
            },
        );
        let mut a2 = a.clone();
        a2.outputs.get_mut("rtmp").unwrap().av_drift_ms = Some(drift("p1", 2.5));
        let b = report(&[100; 10]);
        let m = Report::merge(&[a.clone(), b.clone(), a2]).unwrap();
        let rtmp = &m.outputs["rtmp"];
        assert_eq!((rtmp.frames.sent, rtmp.frames.lost), (20, 2));
        assert_eq!(rtmp.video_sizes, [("640x360".to_owned(), 2)].into());
        let d = rtmp.av_drift_ms.as_ref().unwrap();
        assert_eq!(d.worst, -4.0);
        assert_eq!(d.streams.len(), 2);
        let table = m.table();
        assert!(
            table.contains("rtmp          20        18       2          0           0       0  -4.0 (p0 -4.0, p1 +2.5)"),
            "{table}"
        );
        let m = Report::merge(&[report(&[1; 90]), b]).unwrap();
        assert!(m.outputs.is_empty());
        assert_eq!(m.frames_total(), None);
        let post = &m.latency["post"];
        assert_eq!(post.raw.count, 100);
        assert_eq!(post.raw.p50_ms, 1.0);
        // Within the histogram's precision (4 significant digits).
        assert!(
            (post.raw.p99_ms - 100.0).abs() < 0.01,
            "{}",
            post.raw.p99_ms
        );
        assert_eq!(m.violations.total, 2);
        assert_eq!(m.violations.by_kind["stale_tag_accepted"], 2);
        assert_eq!(m.sessions.ok, 100);
        assert!(m.table().contains("post"));
    }
}
