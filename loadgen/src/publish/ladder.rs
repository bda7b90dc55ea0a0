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

/// The largest distance, ms, from a segment start in `starts` to the nearest one in `top`, over
/// the time the top rendition's starts cover, widened by half its longest segment on each side
/// (a rendition followed longer than the top one has starts with nothing to compare them to);
/// `None` if no start falls in that time.
fn misalignment_ms(starts: &BTreeMap<u64, i64>, top: &BTreeMap<u64, i64>) -> Option<f64> {
    let mut top: Vec<i64> = top.values().copied().collect();
    top.sort_unstable();
    let (&first, &last) = (top.first()?, top.last()?);
    let margin = top.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) / 2;
    let covered = first.saturating_sub(margin)..=last.saturating_add(margin);
    starts
        .values()
        .filter(|s| covered.contains(s))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const STARTED: u64 = 1_700_000_000_000_000;

    /// The bridge's three-layer ladder as `main.m3u8` lists it.
    fn ladder() -> Ladder {
        let variant = |uri: &str, size| Variant {
            uri: uri.to_owned(),
            bandwidth: 1,
            resolution: Some(size),
            audio_group: Some("audio".to_owned()),
        };
        Ladder::new(
            3,
            vec![
                variant("v0/index.m3u8", (640, 360)),
                variant("v1/index.m3u8", (426, 240)),
                variant("v2/index.m3u8", (212, 120)),
            ],
            Some("audio/index.m3u8".to_owned()),
        )
    }

    /// A part of segment `msn` holding `frames` (sent 33 ms apart, received 150 ms after the
    /// last), starting its segment at `start_ms` if `segment_start`, at a key frame if `key`.
    fn part(msn: u64, frames: std::ops::Range<u64>, start_ms: Option<i64>, key: bool) -> Part {
        let stamps: Vec<FrameStamp> = frames
            .clone()
            .map(|frame| FrameStamp {
                frame,
                sent_us: STARTED + frame * 33_333,
            })
            .collect();
        Part {
            msn,
            segment_start: start_ms.is_some(),
            backlog: false,
            received_us: STARTED + frames.end * 33_333 + 150_000,
            stamps,
            first_video_sample: Some(FirstSample {
                sync: key,
                idr: key,
            }),
            video_size: Some((640, 360)),
            audio_samples: 0,
            video_start_us: start_ms.map(|ms| ms * 1000),
        }
    }

    fn sized(p: Part, size: (u32, u32)) -> Part {
        Part {
            video_size: Some(size),
            ..p
        }
    }

    #[test]
    fn a_clean_ladder_has_no_problem() {
        let mut l = ladder();
        assert_eq!(l.problems(), Vec::<String>::new());
        for (uri, size) in [
            ("v0/index.m3u8", (640, 360)),
            ("v1/index.m3u8", (426, 240)),
            ("v2/index.m3u8", (212, 120)),
        ] {
            // Two segments of 30 frames, each in two parts; the second starts 1 s later.
            for p in [
                part(7, 0..15, Some(0), true),
                part(7, 15..30, None, false),
                part(8, 30..45, Some(1000), true),
                part(8, 45..60, None, false),
            ] {
                assert_eq!(l.part(uri, STARTED, sized(p, size)), Vec::<String>::new());
            }
        }
        let audio = Part {
            audio_samples: 47,
            stamps: Vec::new(),
            ..part(7, 0..0, Some(0), false)
        };
        assert!(l.part("audio/index.m3u8", STARTED, audio).is_empty());
        assert!(l.drained(Some(59)) && !l.drained(Some(60)));
        let mut out = OutputReport::default();
        report([(Some(&l), Some(59), 60)].into_iter(), &mut out).unwrap();
        assert_eq!(out.renditions.len(), 3);
        let v1 = &out.renditions[1];
        assert_eq!(v1.uri, "v1/index.m3u8");
        assert_eq!((v1.width, v1.height), (Some(426), Some(240)));
        assert_eq!(v1.playlist_resolution.as_deref(), Some("426x240"));
        assert_eq!(
            (v1.frames.sent, v1.frames.received, v1.frames.lost),
            (60, 60, 0)
        );
        assert_eq!((v1.segments, v1.keyframe_starts), (2, 2));
        assert_eq!(v1.max_misalignment_ms, Some(0.0));
        let latency = v1.latency.as_ref().unwrap();
        assert_eq!(latency.count, 60);
        // The first frame of each part waited for the 15 frames of its part, then 150 ms.
        assert!((649.0..651.0).contains(&latency.max_ms), "{latency:?}");
        let audio = out.audio_rendition.unwrap();
        assert_eq!(
            (
                audio.uri.as_str(),
                audio.segments,
                audio.fragments,
                audio.audio_frames
            ),
            ("audio/index.m3u8", 1, 1, 47)
        );
    }

    #[test]
    fn losses_wrong_sizes_inner_frames_and_drift_are_told_apart() {
        let mut l = ladder();
        // v0: every frame, boundaries at 0 and 1000 ms.
        for p in [
            part(7, 0..30, Some(0), true),
            part(8, 30..60, Some(1000), true),
        ] {
            assert!(l.part("v0/index.m3u8", STARTED, p).is_empty());
        }
        // v1: frames 30..45 lost, its second segment starting 40 ms late on a P frame.
        let problems = l.part(
            "v1/index.m3u8",
            STARTED,
            sized(part(7, 0..30, Some(0), true), (426, 240)),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let problems = l.part(
            "v1/index.m3u8",
            STARTED,
            sized(part(8, 45..60, Some(1040), false), (426, 240)),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("segment 8 starts with"),
            "{problems:?}"
        );
        // v2: the top layer's size, which is not what its RESOLUTION says.
        let problems = l.part("v2/index.m3u8", STARTED, part(7, 0..60, Some(0), true));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("RESOLUTION"), "{problems:?}");
        // Said once, not for every part.
        assert!(
            l.part("v2/index.m3u8", STARTED, part(9, 60..61, None, false))
                .is_empty()
        );
        // A frame of an earlier run on the stream name is no frame of this one.
        let mut old = part(6, 0..1, Some(-1000), true);
        old.stamps[0].sent_us = STARTED - 1;
        assert!(l.part("v0/index.m3u8", STARTED, old).is_empty());
        l.error("v2/index.m3u8");
        let mut out = OutputReport::default();
        report([(Some(&l), Some(59), 60)].into_iter(), &mut out).unwrap();
        let [v0, v1, v2] = &out.renditions[..] else {
            panic!("{out:?}")
        };
        assert_eq!((v0.frames.lost, v0.segments, v0.keyframe_starts), (0, 2, 2));
        assert_eq!(
            v0.frames.received, 60,
            "the earlier run's frame is not counted"
        );
        assert_eq!(
            (v1.frames.lost, v1.segments, v1.keyframe_starts),
            (15, 2, 1)
        );
        assert_eq!(v1.non_keyframe_starts(), 1);
        assert_eq!(v1.max_misalignment_ms, Some(40.0));
        assert_eq!((v2.frames.lost, v2.errors), (0, 2));
        assert_eq!((v2.width, v2.height), (Some(640), Some(360)));
    }

    #[test]
    fn a_ladder_short_of_a_layer_is_a_problem() {
        let listed = Ladder::new(
            3,
            vec![Variant {
                uri: "v0/index.m3u8".to_owned(),
                bandwidth: 1,
                resolution: Some((640, 480)),
                audio_group: None,
            }],
            None,
        );
        let problems = listed.problems().join("\n");
        assert!(
            problems.contains("lists 1 variants for 3 layers"),
            "{problems}"
        );
        assert!(
            problems.contains("RESOLUTION=640x480 is no layer's"),
            "{problems}"
        );
        for size in ["640x360", "426x240", "212x120"] {
            assert!(
                problems.contains(&format!("no variant has RESOLUTION={size}")),
                "{problems}"
            );
        }
    }

    #[test]
    fn a_stream_without_a_ladder_loses_every_frame_on_every_rendition() {
        let mut l = ladder();
        assert!(
            l.part("v0/index.m3u8", STARTED, part(7, 0..30, Some(0), true))
                .is_empty()
        );
        let mut out = OutputReport::default();
        report(
            [(Some(&l), Some(29), 30), (None, Some(29), 30)].into_iter(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.errors, 1);
        let v0 = &out.renditions[0];
        assert_eq!(
            (v0.frames.sent, v0.frames.received, v0.frames.lost),
            (60, 30, 30)
        );
        // v1 and v2 delivered nothing of either stream.
        assert_eq!(out.renditions[1].frames.lost, 60);
        assert_eq!(out.renditions[1].latency, None);
    }

    #[test]
    fn misalignment_is_measured_where_both_renditions_were_followed() {
        let starts = |ms: &[i64]| -> BTreeMap<u64, i64> {
            ms.iter()
                .enumerate()
                .map(|(i, &m)| (i as u64, m * 1000))
                .collect()
        };
        let top = starts(&[1000, 2000, 3000]);
        assert_eq!(misalignment_ms(&top, &top), Some(0.0));
        // Its first segment starts a segment before the top's first: nothing to compare it
        // with. Its last starts a little after the top's last: compared.
        assert_eq!(
            misalignment_ms(&starts(&[0, 1010, 1990, 3040]), &top),
            Some(40.0)
        );
        assert_eq!(misalignment_ms(&starts(&[1500]), &top), Some(500.0));
        assert_eq!(misalignment_ms(&starts(&[4000]), &top), None);
        // One start in the top: only that time is covered.
        assert_eq!(misalignment_ms(&top, &starts(&[2000])), Some(0.0));
        assert_eq!(misalignment_ms(&BTreeMap::new(), &top), None);
        assert_eq!(misalignment_ms(&top, &BTreeMap::new()), None);
    }

    #[test]
    fn backlog_frames_are_counted_not_timed() {
        let mut l = ladder();
        let backlog = Part {
            backlog: true,
            ..part(7, 0..30, Some(0), true)
        };
        assert!(l.part("v0/index.m3u8", STARTED, backlog).is_empty());
        assert!(
            l.part("v0/index.m3u8", STARTED, part(8, 30..60, Some(1000), true))
                .is_empty()
        );
        let mut out = OutputReport::default();
        report([(Some(&l), Some(59), 60)].into_iter(), &mut out).unwrap();
        let v0 = &out.renditions[0];
        assert_eq!((v0.frames.received, v0.frames.lost), (60, 0));
        assert_eq!(v0.latency.as_ref().unwrap().count, 30);
    }
}
