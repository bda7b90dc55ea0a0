//! The HLS ladder of one simulcast stream, as `publish` accounts it: what the multivariant
//! playlist listed, then what each rendition's client fetched.
//!
//! Every video rendition must carry every frame the publisher sent: each layer's frames carry
//! the same stamps, so each rendition is accounted like the stream's own playlist
//! ([`FrameAccount`], frame latency; the frames of the parts already out when the rendition's
//! client started are not timed, as they were fetched as a backlog). A player switches renditions at segment boundaries, so
//! each segment of each rendition must start with a key frame, and the renditions' boundaries
//! must fall at the same times: each segment start is compared with the nearest one of the top
//! rendition (the one at the full size). Its picture size (its init section's SPS) must be its
//! layer's and what the multivariant playlist says.
//!
//! Pure bookkeeping: the events come from [`hls`](super::hls), the results go to the report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::account::FrameAccount;
use super::fmp4::FirstSample;
use super::playlist::Variant;
use crate::media::{FrameStamp, layer_size};
use crate::report::{AudioRenditionReport, OutputReport, RenditionReport, Summary};
use crate::stats::{HistogramError, micros, new_histogram};

/// What one part (or whole segment) of a rendition held.
#[derive(Debug, Clone, Default)]
pub(super) struct Part {
    /// Its segment's media sequence number.
    pub(super) msn: u64,
    /// It starts its segment.
    pub(super) segment_start: bool,
    /// It was listed in the first playlist its client read.
    pub(super) backlog: bool,
    /// When it was fully received, µs since the UNIX epoch.
    pub(super) received_us: u64,
    /// The frame stamps in it.
    pub(super) stamps: Vec<FrameStamp>,
    /// Its first video sample.
    pub(super) first_video_sample: Option<FirstSample>,
    /// The picture size its init section's SPS says.
    pub(super) video_size: Option<(u32, u32)>,
    /// Audio samples in it.
    pub(super) audio_samples: u64,
    /// Where its video starts on the stream's timeline, µs.
    pub(super) video_start_us: Option<i64>,
}

/// One video rendition of one stream.
#[derive(Debug)]
struct Rendition {
    uri: String,
    /// `RESOLUTION` in the multivariant playlist.
    playlist_resolution: Option<(u32, u32)>,
    /// The size the SPS of its init section said last (`None` before any part, or unreadable).
    size: Option<(u32, u32)>,
    /// Whether a part was read (so `size` is what it said).
    sized: bool,
    frames: FrameAccount,
    latency: Histogram<u64>,
    keyframe_starts: u64,
    /// Where each segment whose start was fetched starts (µs), by sequence number.
    segment_starts: BTreeMap<u64, i64>,
    errors: u64,
    ended: bool,
}

/// The audio rendition of one stream.
#[derive(Debug, Default)]
struct AudioRendition {
    uri: String,
    fragments: u64,
    segments: u64,
    audio_frames: u64,
    errors: u64,
}

/// One stream's ladder.
#[derive(Debug)]
pub(super) struct Ladder {
    /// The picture size of each layer sent, top first.
    layer_sizes: Vec<(u32, u32)>,
    video: Vec<Rendition>,
    audio: Option<AudioRendition>,
}

impl Ladder {
    /// The ladder the multivariant playlist listed for a publisher of `layers` layers.
    pub(super) fn new(layers: u8, variants: Vec<Variant>, audio: Option<String>) -> Ladder {
        Ladder {
            layer_sizes: (0..layers).filter_map(|i| layer_size(i, layers)).collect(),
            video: variants
                .into_iter()
                .map(|v| Rendition {
                    uri: v.uri,
                    playlist_resolution: v.resolution,
                    size: None,
                    sized: false,
                    frames: FrameAccount::default(),
                    latency: new_histogram(),
                    keyframe_starts: 0,
                    segment_starts: BTreeMap::new(),
                    errors: 0,
                    ended: false,
                })
                .collect(),
            audio: audio.map(|uri| AudioRendition {
                uri,
                ..AudioRendition::default()
            }),
        }
    }

    /// What is wrong with the ladder as listed: not one variant per layer, a `RESOLUTION`
    /// that is no layer's, a layer no variant has.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.video.len() != self.layer_sizes.len() {
            out.push(format!(
                "the multivariant playlist lists {} variants for {} layers sent",
                self.video.len(),
                self.layer_sizes.len()
            ));
        }
        for r in &self.video {
            if let Some((w, h)) = r.playlist_resolution
                && !self.layer_sizes.contains(&(w, h))
            {
                out.push(format!(
                    "rendition {}: RESOLUTION={w}x{h} is no layer's size",
                    r.uri
                ));
            }
        }
        for &(w, h) in &self.layer_sizes {
            if !self
                .video
                .iter()
                .any(|r| r.playlist_resolution == Some((w, h)))
            {
                out.push(format!("no variant has RESOLUTION={w}x{h}, a layer's size"));
            }
        }
        out
    }

    /// Accounts a part of rendition `uri` of a stream that started at `started_us`; returns
    /// what is wrong with it (a size that is not the rendition's layer's, a segment that does
    /// not start with a key frame).
    pub(super) fn part(&mut self, uri: &str, started_us: u64, part: Part) -> Vec<String> {
        if let Some(audio) = self.audio.as_mut().filter(|a| a.uri == uri) {
            audio.fragments += 1;
            audio.segments += u64::from(part.segment_start);
            audio.audio_frames += part.audio_samples;
            return Vec::new();
        }
        let layer_sizes = &self.layer_sizes;
        let Some(r) = self.video.iter_mut().find(|r| r.uri == uri) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        // Frames of an earlier run on the same stream name are not this one's.
        let current: Vec<&FrameStamp> = part
            .stamps
            .iter()
            .filter(|s| s.sent_us >= started_us)
            .collect();
        if !r.sized || r.size != part.video_size {
            r.sized = true;
            r.size = part.video_size;
            let wrong = match part.video_size {
                None => Some("its SPS cannot be read".to_owned()),
                Some((w, h)) if !layer_sizes.contains(&(w, h)) => {
                    Some(format!("its SPS says {w}x{h}, which no layer sent has"))
                }
                Some(size) if r.playlist_resolution.is_some_and(|p| p != size) => Some(format!(
                    "its SPS says {}x{}, its RESOLUTION another size",
                    size.0, size.1
                )),
                Some(_) => None,
            };
            if let Some(wrong) = wrong {
                r.errors += 1;
                problems.push(format!("rendition {uri}: {wrong}"));
            }
        }
        for stamp in &current {
            r.frames.frame(stamp.frame);
            // The ladder is followed from when the multivariant playlist lists it, a second or
            // more after the start: the parts already out then were fetched as a backlog, so
            // their frames are counted but not timed.
            if !part.backlog {
                let d = Duration::from_micros(part.received_us.saturating_sub(stamp.sent_us));
                r.latency.saturating_record(micros(d));
            }
        }
        if part.segment_start
            && !current.is_empty()
            && !r.segment_starts.contains_key(&part.msn)
            && let Some(start) = part.video_start_us
        {
            r.segment_starts.insert(part.msn, start);
            match part.first_video_sample {
                Some(first) if first.keyframe() => r.keyframe_starts += 1,
                first => problems.push(format!(
                    "rendition {uri}: segment {} starts with {first:?}, not a key frame",
                    part.msn
                )),
            }
        }
        problems
    }

    /// Rendition `uri`'s playlist ended.
    pub(super) fn ended(&mut self, uri: &str) {
        if let Some(r) = self.video.iter_mut().find(|r| r.uri == uri) {
            r.ended = true;
        }
    }

    /// Rendition `uri`'s client reported an error.
    pub(super) fn error(&mut self, uri: &str) {
        if let Some(r) = self.video.iter_mut().find(|r| r.uri == uri) {
            r.errors += 1;
        } else if let Some(a) = self.audio.as_mut().filter(|a| a.uri == uri) {
            a.errors += 1;
        }
    }

    /// Whether every video rendition delivered the last frame sent (or ended). The audio
    /// rendition has no frame numbers to wait for.
    pub(super) fn drained(&self, last_sent: Option<u64>) -> bool {
        self.video
            .iter()
            .all(|r| r.ended || r.frames.drained(last_sent))
    }

    /// The top rendition: the one at the full size (the first listed if none is).
    fn top(&self) -> Option<&Rendition> {
        let full = self.layer_sizes.first().copied();
        self.video
            .iter()
            .find(|r| r.size.is_some() && r.size == full)
            .or(self.video.first())
    }
}

/// The largest distance, ms, from a segment start in `starts` to the nearest one in `top`,
/// over the time both cover (a rendition followed longer than the other has starts with nothing
/// to compare to); `None` if no start falls in that time.
fn misalignment_ms(starts: &BTreeMap<u64, i64>, top: &BTreeMap<u64, i64>) -> Option<f64> {
    let mut top: Vec<i64> = top.values().copied().collect();
    top.sort_unstable();
    let (&top_first, &top_last) = (top.first()?, top.last()?);
    let (first, last) = (starts.values().min()?, starts.values().max()?);
    let (from, to) = (top_first.max(*first), top_last.min(*last));
    starts
        .values()
        .filter(|&&s| (from..=to).contains(&s))
        .map(|&s| {
            let at = top.partition_point(|&t| t < s);
            let after = top.get(at).map(|&t| t - s);
            let before = at.checked_sub(1).and_then(|i| top.get(i)).map(|&t| s - t);
            after.into_iter().chain(before).min().unwrap_or(0)
        })
        .max()
        .map(|us| us as f64 / 1000.0)
}

/// Adds every stream's ladder to the HLS output's report: `(ladder, last frame sent, frames
/// sent)` per stream, the ladder `None` for a stream whose multivariant playlist never listed
/// one (its frames count as lost on every rendition, and as an error).
pub(super) fn report<'a>(
    streams: impl Iterator<Item = (Option<&'a Ladder>, Option<u64>, u64)>,
    out: &mut OutputReport,
) -> Result<(), HistogramError> {
    let mut latency: Vec<Histogram<u64>> = Vec::new();
    let mut missing = 0;
    for (ladder, last_sent, sent) in streams {
        let Some(ladder) = ladder else {
            missing += sent;
            out.errors += 1;
            continue;
        };
        let top = ladder.top();
        for r in &ladder.video {
            let at = match out.renditions.iter().position(|m| m.uri == r.uri) {
                Some(at) => at,
                None => {
                    out.renditions.push(RenditionReport {
                        uri: r.uri.clone(),
                        ..RenditionReport::default()
                    });
                    latency.push(new_histogram());
                    out.renditions.len() - 1
                }
            };
            let (Some(m), Some(h)) = (out.renditions.get_mut(at), latency.get_mut(at)) else {
                continue;
            };
            m.frames.sent += sent;
            m.frames.received += r.frames.received();
            m.frames.lost += r.frames.lost(last_sent, sent);
            m.frames.reordered += r.frames.reordered();
            m.frames.duplicated += r.frames.duplicated();
            m.errors += r.errors;
            m.segments += r.segment_starts.len() as u64;
            m.keyframe_starts += r.keyframe_starts;
            if let Some((w, h)) = r.size {
                (m.width, m.height) = (Some(w), Some(h));
            }
            if let Some((w, h)) = r.playlist_resolution {
                m.playlist_resolution = Some(format!("{w}x{h}"));
            }
            let off = top.and_then(|t| misalignment_ms(&r.segment_starts, &t.segment_starts));
            m.max_misalignment_ms = match (m.max_misalignment_ms, off) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            h.add(&r.latency)
                .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        }
        if let Some(a) = &ladder.audio {
            let m = out
                .audio_rendition
                .get_or_insert_with(|| AudioRenditionReport {
                    uri: a.uri.clone(),
                    ..AudioRenditionReport::default()
                });
            m.fragments += a.fragments;
            m.segments += a.segments;
            m.audio_frames += a.audio_frames;
            m.errors += a.errors;
        }
    }
    for (m, h) in out.renditions.iter_mut().zip(&latency) {
        m.frames.sent += missing;
        m.frames.lost += missing;
        m.latency = (!h.is_empty()).then(|| Summary::of(h)).transpose()?;
    }
    Ok(())
}
