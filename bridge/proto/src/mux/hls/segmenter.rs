//! Where HLS segments and LL-HLS parts begin and end: pure timing policy, no container bytes.
//!
//! Units go in with [`Segmenter::push`]; [`Event`]s come out of [`Segmenter::poll_event`]: a
//! [`Part`] (the units to mux into one fragment), a [`Segment`] (its parts are done; the playlist
//! may list it) or [`Event::KeyframeWanted`] (ask the publisher for an IDR soon).
//!
//! One track leads: video when the stream has video, audio otherwise. Lead units end segments
//! and (unless video is too slow, below) parts. Durations are differences between boundary
//! times on the one session timeline, so a segment's parts add up to exactly its duration.
//! Units of the other track go into whatever part is open when they arrive.
//!
//! The rules, and why:
//!
//! - A segment starts only at a video key frame (every audio frame is one), so each segment and
//!   each part marked independent can start playback.
//! - A segment ends at the first key frame at or after `segment_target - keyframe_lead`. The
//!   segmenter asks for a key frame ([`Event::KeyframeWanted`]) once the segment reaches that same
//!   point, so the requested IDR, arriving a round trip later, lands near the target instead of a
//!   whole GOP after it. Accepting a key frame slightly early is what keeps segments at or under
//!   the target, which keeps `EXT-X-TARGETDURATION` (a ceiling, rounded up) from growing.
//! - A part ends before the first lead unit that would carry it past the part target: past the
//!   target when the unit's end is known (audio frames carry their duration) or estimated from
//!   the last frame interval (video). Cutting "at or after the target" instead would turn a
//!   frame that arrives 1 ms late into a part one frame too long (233 ms instead of 200 ms at
//!   30 fps), and `PART-TARGET` must cover the longest part.
//! - When video is slow (a frame interval over half a part, as screen sharing often is) or stalls
//!   (no frame for half a part while audio goes on), audio frames pace the parts instead, so
//!   LL-HLS clients still get a part every part target and `PART-TARGET` stays small. Segments
//!   still end only at video key frames.
//! - A publisher that never sends a key frame makes segments as long as it takes; the segmenter
//!   keeps asking, and reports the honest maxima ([`Segmenter::max_segment_duration`],
//!   [`Segmenter::max_part_duration`]) that the playlist's target durations must cover.
//! - [`Segmenter::discontinuity`] ends the open segment where it is; the next segment (which
//!   again waits for a key frame) is marked as a discontinuity and its timestamps may restart.
//!   [`Segmenter::finish`] ends the open segment the same way when the publisher leaves.
//!
//! Units must be pushed in order per track. Timestamps that go backwards or repeat are kept in
//! the open part but never end one, so bad input cannot produce empty or negative durations.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::media::unit::{AudioFrame, TIMELINE_HZ, Unit, VideoUnit};

/// Assumed length of a video frame when no interval has been seen yet (one frame at 30 fps).
const DEFAULT_FRAME_TICKS: i64 = TIMELINE_HZ / 30;

/// A configuration the segmenter cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SegmenterError {
    /// The segment target is zero or longer than a timeline can count.
    #[error("segment target {0:?} out of range")]
    SegmentTarget(Duration),
    /// The part target is zero or longer than the segment target.
    #[error("part target {part:?} must be non-zero and at most the segment target {segment:?}")]
    PartTarget {
        /// The part target.
        part: Duration,
        /// The segment target.
        segment: Duration,
    },
    /// The key frame lead is not shorter than the segment target.
    #[error("key frame lead {lead:?} must be shorter than the segment target {segment:?}")]
    KeyframeLead {
        /// The lead.
        lead: Duration,
        /// The segment target.
        segment: Duration,
    },
}

/// How to cut a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// The stream has video: segments start at video key frames and video times lead. Without
    /// video, audio frames lead and video units are dropped.
    pub video: bool,
    /// Segment duration to aim for.
    pub segment_target: Duration,
    /// LL-HLS part duration to aim for; `None` makes each segment a single part (plain HLS).
    pub part_target: Option<Duration>,
    /// How long before the segment target a key frame is requested, and how early one is
    /// accepted as the segment boundary. About one part: a publisher answers a PLI within one
    /// round trip plus one frame.
    pub keyframe_lead: Duration,
    /// Segments end at the first key frame at or after a tick of a grid of `segment_target`
    /// on the timeline (from timeline 0), rather than `segment_target` after their own start.
    /// The renditions of a simulcast ladder share the timeline, so they cut at the same ticks
    /// (each at its own first key frame there) and one long GOP in a rendition does not put
    /// its later segments out of step with the others': players switch renditions at segment
    /// boundaries.
    pub grid: bool,
}

impl SegmenterConfig {
    /// Plain HLS: 2 s segments, no parts.
    pub fn standard(video: bool) -> Self {
        Self {
            video,
            segment_target: Duration::from_secs(2),
            part_target: None,
            keyframe_lead: Duration::from_millis(200),
            grid: false,
        }
    }

    /// Low-Latency HLS: 1 s segments of 200 ms parts.
    pub fn low_latency(video: bool) -> Self {
        Self {
            video,
            segment_target: Duration::from_secs(1),
            part_target: Some(Duration::from_millis(200)),
            keyframe_lead: Duration::from_millis(200),
            grid: false,
        }
    }

    fn validate(&self) -> Result<(), SegmenterError> {
        let segment = self.segment_target;
        if segment.is_zero() || segment > Duration::from_secs(24 * 3600) {
            return Err(SegmenterError::SegmentTarget(segment));
        }
        if let Some(part) = self.part_target
            && (part.is_zero() || part > segment)
        {
            return Err(SegmenterError::PartTarget { part, segment });
        }
        if self.keyframe_lead >= segment {
            return Err(SegmenterError::KeyframeLead {
                lead: self.keyframe_lead,
                segment,
            });
        }
        Ok(())
    }
}

/// What a [`Part`] or [`Segment`] is, without its media: what the playlist needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    /// Media sequence number of the parent segment.
    pub msn: u64,
    /// Index of the part within its segment, from 0.
    pub index: u32,
    /// Its number on one running count over every segment, from 0 (the output adds the
    /// stream's base): its file name. A preload hint names "the next part" before the segmenter
    /// knows whether a key frame will start a new segment with it, so the name cannot depend on
    /// the segment.
    pub number: u64,
    /// Starts with a key frame (always, for audio-only streams): `INDEPENDENT=YES`.
    pub independent: bool,
    /// Duration in timeline ticks, measured on the lead track.
    pub duration: i64,
    /// The parent segment follows a [`Segmenter::discontinuity`] (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// How many discontinuities came before the parent segment: which init section it needs.
    pub epoch: u64,
}

/// A finished part: mux `units` into one fragment (one LL-HLS part; a segment is its parts'
/// fragments concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it belongs and how long it is.
    pub info: PartInfo,
    /// Lead-track time of the first lead unit.
    pub start: i64,
    /// The units in arrival order.
    pub units: Vec<Unit>,
    /// Decode time at which the last video unit ends (the next video unit's `dts`), when known.
    pub video_end: Option<i64>,
    /// Time at which the last audio frame ends, when the next frame's `pts` is known (audio-only
    /// streams, or audio pacing slow video); otherwise the frame's own duration applies.
    pub audio_end: Option<i64>,
}

impl Part {
    /// Splits the units by track, for muxers that take them apart.
    pub fn into_tracks(self) -> (Vec<VideoUnit>, Vec<AudioFrame>) {
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for unit in self.units {
            match unit {
                Unit::Video(v) => video.push(v),
                Unit::Audio(a) => audio.push(a),
            }
        }
        (video, audio)
    }
}

/// A finished segment: all its parts have been emitted before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Lead-track time of its first unit.
    pub start: i64,
    /// Duration in timeline ticks (the sum of its parts').
    pub duration: i64,
    /// Follows a [`Segmenter::discontinuity`].
    pub discontinuity: bool,
    /// How many discontinuities came before it: which init section it needs.
    pub epoch: u64,
    /// Wall-clock time of its first unit (`EXT-X-PROGRAM-DATE-TIME`), when an anchor is known.
    pub program_date_time: Option<SystemTime>,
    /// Its parts, in order.
    pub parts: Vec<PartInfo>,
}

/// What the segmenter decided. Exhaustive on purpose: the output that drives the segmenter must
/// handle every decision, and a new one should fail its build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Ask the publisher for a key frame (PLI/FIR) now; a segment boundary is near or overdue.
    KeyframeWanted,
    /// A part is complete.
    PartReady(Part),
    /// A segment is complete (after its last [`Event::PartReady`]).
    SegmentReady(Segment),
}

/// Which track's unit ended a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pacer {
    /// The leading track (video, or audio in an audio-only stream).
    Lead,
    /// Audio beside slow or stalled video.
    Follower,
}

/// The segment being filled.
#[derive(Debug)]
struct OpenSegment {
    msn: u64,
    start: i64,
    discontinuity: bool,
    epoch: u64,
    program_date_time: Option<SystemTime>,
    parts: Vec<PartInfo>,
    /// Elapsed lead time at which the segment is due to end: the target, or (on a grid) the
    /// first tick more than half a target after its start.
    due: i64,
    /// Elapsed lead time at which the next key frame request is due.
    next_request: i64,
}

/// The part being filled.
#[derive(Debug)]
struct OpenPart {
    start: i64,
    independent: bool,
    units: Vec<Unit>,
}

/// Cuts a unit stream into segments and parts. See the module docs for the rules.
#[derive(Debug)]
pub struct Segmenter {
    video: bool,
    segment_target: i64,
    part_target: Option<i64>,
    keyframe_lead: i64,
    grid: bool,
    anchor: Option<SystemTime>,
    next_msn: u64,
    next_part: u64,
    epoch: u64,
    pending_discontinuity: bool,
    segment: Option<OpenSegment>,
    part: Option<OpenPart>,
    /// Time of the last lead unit that could end a part (monotonic within a segment).
    last_lead: Option<i64>,
    /// Last positive interval between lead units, to predict where the next one ends.
    lead_interval: Option<i64>,
    /// End of the latest audio frame, for flushing an audio-led part.
    audio_end: Option<i64>,
    /// While waiting for the first key frame: timeline time at which to ask again.
    wait_request_at: Option<i64>,
    max_segment: i64,
    max_part: i64,
    dropped: u64,
    events: VecDeque<Event>,
}

impl Segmenter {
    /// A segmenter whose first segment gets media sequence number 0.
    pub fn new(config: SegmenterConfig) -> Result<Self, SegmenterError> {
        config.validate()?;
        Ok(Self {
            video: config.video,
            segment_target: duration_to_ticks(config.segment_target),
            part_target: config.part_target.map(duration_to_ticks),
            keyframe_lead: duration_to_ticks(config.keyframe_lead),
            grid: config.grid,
            anchor: None,
            next_msn: 0,
            next_part: 0,
            epoch: 0,
            pending_discontinuity: false,
            segment: None,
            part: None,
            last_lead: None,
            lead_interval: None,
            audio_end: None,
            wait_request_at: None,
            max_segment: 0,
            max_part: 0,
            dropped: 0,
            events: VecDeque::new(),
        })
    }

    // Getters.

    /// A segment was started: its date (`EXT-X-PROGRAM-DATE-TIME`) is fixed by the wallclock
    /// anchor of that moment.
    pub fn has_started(&self) -> bool {
        self.segment.is_some() || self.next_msn > 0
    }

    /// The longest segment emitted so far, in ticks: `EXT-X-TARGETDURATION` must cover it.
    pub fn max_segment_duration(&self) -> i64 {
        self.max_segment
    }

    /// The longest part emitted so far, in ticks: `PART-TARGET` must cover it.
    pub fn max_part_duration(&self) -> i64 {
        self.max_part
    }

    /// Units dropped: before the first key frame, or video in an audio-only stream.
    pub fn dropped_units(&self) -> u64 {
        self.dropped
    }

    /// Media sequence number of the segment being filled (or the next one to start).
    pub fn next_msn(&self) -> u64 {
        self.segment.as_ref().map_or(self.next_msn, |s| s.msn)
    }

    /// Number of the next part ([`PartInfo::number`]).
    pub fn next_part(&self) -> u64 {
        self.next_part
    }

    // Mutators.

    /// Sets the wall-clock time of timeline 0 (from the RTCP sender-report clock), or forgets
    /// it. Segments started after this get `program_date_time`. A new publisher's timeline has
    /// its own anchor: set it (or clear it) along with [`Segmenter::discontinuity`].
    pub fn set_wallclock_anchor(&mut self, anchor: Option<SystemTime>) {
        self.anchor = anchor;
    }

    /// Takes in the next unit.
    pub fn push(&mut self, unit: Unit) {
        match unit {
            Unit::Video(v) if self.video => {
                let (time, keyframe) = (v.dts, v.keyframe);
                self.push_lead(Unit::Video(v), time, keyframe, None);
            }
            Unit::Video(_) => self.dropped += 1,
            Unit::Audio(a) => {
                let end = a.pts.saturating_add(a.duration.max(0));
                self.audio_end = Some(self.audio_end.map_or(end, |e| e.max(end)));
                if self.video {
                    let (time, duration) = (a.pts, a.duration);
                    self.push_follower(Unit::Audio(a), time, duration);
                } else {
                    let (time, duration) = (a.pts, a.duration);
                    self.push_lead(Unit::Audio(a), time, true, Some(duration));
                }
            }
        }
    }

    /// A new publisher takes over (or the stream's parameters change): ends the open segment
    /// here, and marks the next one, which starts at the next key frame, as a discontinuity
    /// whose timestamps may restart and which needs a new init section.
    pub fn discontinuity(&mut self) {
        self.flush();
        self.pending_discontinuity = true;
        self.epoch += 1;
        self.last_lead = None;
        self.lead_interval = None;
        self.audio_end = None;
        self.wait_request_at = None;
    }

    /// The publisher left or the output stops: ends the open part and segment with what they
    /// have. Pushing more units afterwards starts a new segment; call
    /// [`Segmenter::discontinuity`] first if they come from another publisher.
    pub fn finish(&mut self) {
        self.flush();
    }

    // Polling.

    /// The next decision, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // Internals.

    /// A unit of the leading track: may end the open part and segment before it goes in.
    fn push_lead(&mut self, unit: Unit, time: i64, keyframe: bool, duration: Option<i64>) {
        let Some(segment) = &self.segment else {
            if keyframe {
                self.start_segment(time);
                self.last_lead = Some(time);
                self.push_into_part(unit, time);
            } else {
                self.dropped += 1;
                self.request_while_waiting(time);
            }
            return;
        };
        let seg_start = segment.start;
        let due = segment.due;
        let next_request = segment.next_request;
        let Some(last) = self.last_lead.filter(|&last| time > last) else {
            // Repeated or backwards time: keep the media, decide nothing on it.
            self.push_into_part(unit, time);
            return;
        };
        // How far past its start this unit probably ends. Audio frames say exactly. Video
        // repeats the last interval, less a quarter of it: capture jitter makes the estimate
        // noisy, and cutting one frame early on noise would make a short part.
        let this_len = match duration.filter(|&d| d > 0) {
            Some(exact) => exact,
            None => self.lead_interval.map_or(0, |i| i - i / 4),
        };
        self.lead_interval = Some(time.saturating_sub(last));
        self.last_lead = Some(time);
        let seg_elapsed = time.saturating_sub(seg_start);

        let cut_segment = if self.video {
            keyframe && seg_elapsed >= due.saturating_sub(self.keyframe_lead)
        } else {
            ends_past(seg_elapsed, this_len, due)
        };
        if cut_segment {
            match self.part.take() {
                // Audio, running ahead of slow video, already opened a part at or after this
                // key frame: that part starts the new segment, with the key frame in it.
                Some(mut part) if self.video && part.start >= time => {
                    self.close_segment(part.start);
                    self.start_segment(part.start);
                    part.independent = true;
                    self.part = Some(part);
                }
                part => {
                    self.part = part;
                    self.close_part(time, Some(Pacer::Lead));
                    self.close_segment(time);
                    self.start_segment(time);
                }
            }
            self.push_into_part(unit, time);
            return;
        }
        let paces = !self.video || self.video_paces_parts();
        if let (true, Some(part_target), Some(part)) = (paces, self.part_target, &self.part) {
            let part_elapsed = time.saturating_sub(part.start);
            if part_elapsed > 0 && ends_past(part_elapsed, this_len, part_target) {
                self.close_part(time, Some(Pacer::Lead));
            }
        }
        if self.video && seg_elapsed >= next_request {
            self.events.push_back(Event::KeyframeWanted);
            if let Some(segment) = &mut self.segment {
                // Overdue: ask again each segment target until one comes.
                segment.next_request = next_request.saturating_add(self.segment_target);
            }
        }
        self.push_into_part(unit, time);
    }

    /// A unit of the following track (audio beside video): goes into the open part, which it
    /// may first end if video is too slow or stalled to pace parts.
    fn push_follower(&mut self, unit: Unit, time: i64, duration: i64) {
        let Some(part) = &self.part else {
            self.dropped += 1;
            return;
        };
        if let Some(part_target) = self.part_target {
            // No video for half a part: stalled (a muted camera, a sender gone quiet). Time on
            // both tracks is one timeline, so this also tolerates audio arriving a little early.
            let stalled = self
                .last_lead
                .is_some_and(|last| time.saturating_sub(last) > part_target / 2);
            let elapsed = time.saturating_sub(part.start);
            if (stalled || !self.video_paces_parts())
                && elapsed > 0
                && ends_past(elapsed, duration.max(0), part_target)
            {
                self.close_part(time, Some(Pacer::Follower));
            }
        }
        let part = self.part.get_or_insert_with(|| OpenPart {
            start: time,
            independent: false,
            units: Vec::new(),
        });
        part.units.push(unit);
    }

    /// Whether video frames come often enough to end parts near the part target.
    fn video_paces_parts(&self) -> bool {
        match (self.part_target, self.lead_interval) {
            (Some(target), Some(interval)) => interval <= target / 2,
            _ => true,
        }
    }

    /// Appends a lead unit to the open part, opening one at `time` if there is none.
    fn push_into_part(&mut self, unit: Unit, time: i64) {
        let part = self.part.get_or_insert_with(|| OpenPart {
            start: time,
            // Every audio frame can start playback; video parts need a key frame first.
            independent: !self.video || matches!(&unit, Unit::Video(v) if v.keyframe),
            units: Vec::new(),
        });
        part.units.push(unit);
    }

    fn request_while_waiting(&mut self, time: i64) {
        if self.wait_request_at.is_none_or(|at| time >= at) {
            self.events.push_back(Event::KeyframeWanted);
            self.wait_request_at = Some(time.saturating_add(self.segment_target));
        }
    }

    fn start_segment(&mut self, time: i64) {
        let program_date_time = self.anchor.and_then(|anchor| add_ticks(anchor, time));
        let target = self.segment_target;
        let due = if self.grid {
            // The first tick more than half a target after the start: a segment that starts a
            // little after a tick (a late key frame) ends at the next tick, not one target on,
            // and none is shorter than half a target.
            let after = time.saturating_add(target / 2);
            let tick = after
                .div_euclid(target)
                .saturating_add(1)
                .saturating_mul(target);
            tick.saturating_sub(time)
        } else {
            target
        };
        self.segment = Some(OpenSegment {
            msn: self.next_msn,
            start: time,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            epoch: self.epoch,
            program_date_time,
            parts: Vec::new(),
            due,
            next_request: due.saturating_sub(self.keyframe_lead).max(0),
        });
        self.next_msn = self.next_msn.saturating_add(1);
        self.wait_request_at = None;
    }

    /// Ends the open part at `end`: the time of the unit that ends it, of the track `by`, or an
    /// estimate when flushing (`None`).
    fn close_part(&mut self, end: i64, by: Option<Pacer>) {
        let (Some(part), Some(segment)) = (self.part.take(), &mut self.segment) else {
            return;
        };
        let duration = end.saturating_sub(part.start).max(1);
        let info = PartInfo {
            msn: segment.msn,
            index: u32::try_from(segment.parts.len()).unwrap_or(u32::MAX),
            number: self.next_part,
            independent: part.independent,
            duration,
            discontinuity: segment.discontinuity,
            epoch: segment.epoch,
        };
        segment.parts.push(info);
        self.next_part = self.next_part.saturating_add(1);
        self.max_part = self.max_part.max(duration);
        let video_end = (by == Some(Pacer::Lead) && self.video).then_some(end);
        let audio_end = match by {
            Some(Pacer::Follower) => Some(end),
            Some(Pacer::Lead) if !self.video => Some(end),
            _ => None,
        };
        self.events.push_back(Event::PartReady(Part {
            info,
            start: part.start,
            units: part.units,
            video_end,
            audio_end,
        }));
    }

    /// Ends the open segment at `end`; its parts must be closed already.
    fn close_segment(&mut self, end: i64) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        let duration = end.saturating_sub(segment.start).max(1);
        self.max_segment = self.max_segment.max(duration);
        self.events.push_back(Event::SegmentReady(Segment {
            msn: segment.msn,
            start: segment.start,
            duration,
            discontinuity: segment.discontinuity,
            epoch: segment.epoch,
            program_date_time: segment.program_date_time,
            parts: segment.parts,
        }));
    }

    /// Ends the open part and segment where the media ends, as far as it is known.
    fn flush(&mut self) {
        let Some(last) = self.last_lead else {
            return;
        };
        let audio_end = self.audio_end.filter(|&end| end > last);
        let end = if self.video {
            let estimate = last.saturating_add(self.lead_interval.unwrap_or(DEFAULT_FRAME_TICKS));
            // Measured on video, unless audio (pacing for stalled video) opened the last part
            // after the last frame.
            let part_start = self.part.as_ref().map_or(last, |p| p.start);
            match audio_end {
                Some(audio) if estimate <= part_start => audio,
                _ => estimate,
            }
        } else {
            audio_end.unwrap_or_else(|| last.saturating_add(DEFAULT_FRAME_TICKS))
        };
        self.close_part(end, None);
        self.close_segment(end);
        self.last_lead = None;
    }
}

/// Whether a unit starting `elapsed` into a span and lasting about `len` would end the span past
/// `target`: at or past it already, or ending past it.
fn ends_past(elapsed: i64, len: i64, target: i64) -> bool {
    elapsed >= target || elapsed.saturating_add(len) > target
}

/// Timeline ticks in a duration, rounded down, saturating.
pub fn duration_to_ticks(d: Duration) -> i64 {
    let ticks = d.as_nanos() * TIMELINE_HZ as u128 / 1_000_000_000;
    i64::try_from(ticks).unwrap_or(i64::MAX)
}

/// `anchor` moved by `ticks` (either way); `None` past what `SystemTime` can hold.
pub fn add_ticks(anchor: SystemTime, ticks: i64) -> Option<SystemTime> {
    let nanos = i128::from(ticks) * 1_000_000_000 / i128::from(TIMELINE_HZ);
    let offset = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).ok()?);
    if nanos >= 0 {
        anchor.checked_add(offset)
    } else {
        anchor.checked_sub(offset)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const HZ: i64 = TIMELINE_HZ;
    /// One frame at 30 fps.
    const FRAME: i64 = HZ / 30;
    /// One 20 ms Opus frame.
    const OPUS: i64 = HZ / 50;

    use crate::testdata::{timed_audio as audio, timed_video as video};

    /// Everything a run produced, sorted by kind.
    #[derive(Debug, Default)]
    struct Run {
        parts: Vec<Part>,
        segments: Vec<Segment>,
        keyframe_requests: Vec<i64>,
        /// Kinds in emission order, to check that parts come before their segment.
        order: Vec<char>,
    }

    impl Run {
        fn collect(&mut self, s: &mut Segmenter, now: i64) {
            while let Some(event) = s.poll_event() {
                match event {
                    Event::KeyframeWanted => {
                        self.keyframe_requests.push(now);
                        self.order.push('k');
                    }
                    Event::PartReady(p) => {
                        self.parts.push(p);
                        self.order.push('p');
                    }
                    Event::SegmentReady(seg) => {
                        self.segments.push(seg);
                        self.order.push('s');
                    }
                }
            }
        }

        fn segment_secs(&self) -> Vec<f64> {
            self.segments
                .iter()
                .map(|s| s.duration as f64 / HZ as f64)
                .collect()
        }
    }

    /// Feeds units, finishes, and checks the invariants every run must hold.
    fn run(config: SegmenterConfig, units: impl IntoIterator<Item = Unit>) -> Run {
        let mut s = Segmenter::new(config).unwrap();
        let mut out = Run::default();
        for unit in units {
            let now = match &unit {
                Unit::Video(v) => v.dts,
                Unit::Audio(a) => a.pts,
            };
            s.push(unit);
            out.collect(&mut s, now);
        }
        s.finish();
        out.collect(&mut s, i64::MAX);
        check_invariants(&s, &out);
        out
    }

    fn check_invariants(s: &Segmenter, out: &Run) {
        let mut parts = out.parts.iter();
        for (i, seg) in out.segments.iter().enumerate() {
            assert_eq!(seg.msn, i as u64, "msn counts up from 0");
            let mine: Vec<&Part> = parts.by_ref().take(seg.parts.len()).collect();
            assert_eq!(mine.len(), seg.parts.len());
            let mut start = seg.start;
            for (index, (part, info)) in mine.iter().zip(&seg.parts).enumerate() {
                assert_eq!(&part.info, info);
                assert_eq!(info.msn, seg.msn);
                assert_eq!(info.index, index as u32);
                assert_eq!(part.start, start, "parts are contiguous");
                assert!(info.duration > 0);
                start += info.duration;
            }
            assert_eq!(
                start,
                seg.start + seg.duration,
                "parts add up to the segment"
            );
            assert!(seg.parts[0].independent, "segments start independent");
            assert!(seg.duration <= s.max_segment_duration());
        }
        assert!(parts.next().is_none(), "no part without a segment");
        for (number, part) in out.parts.iter().enumerate() {
            assert_eq!(
                part.info.number, number as u64,
                "one running count of parts"
            );
            assert!(part.info.duration <= s.max_part_duration());
            // A part starts at its first unit (video, or audio pacing slow video).
            match part.units.first() {
                Some(Unit::Video(v)) => assert_eq!(v.dts, part.start),
                Some(Unit::Audio(a)) => assert_eq!(a.pts, part.start),
                None => panic!("an empty part"),
            }
            let first_video = part.units.iter().find_map(|u| match u {
                Unit::Video(v) => Some(v),
                Unit::Audio(_) => None,
            });
            if s.video && part.info.independent {
                assert!(first_video.is_some_and(|v| v.keyframe), "{:?}", part.info);
            }
            if !s.video {
                assert!(part.info.independent);
            }
        }
        // Every part's event precedes its segment's.
        let mut open_parts = 0;
        for kind in &out.order {
            match kind {
                'p' => open_parts += 1,
                's' => {
                    assert!(open_parts > 0, "segment without parts before it");
                    open_parts = 0;
                }
                _ => {}
            }
        }
        assert_eq!(open_parts, 0);
    }

    /// 30 fps video from `from` for `secs`, key frames where `keyframe(frame index)` says.
    fn video_stream(from: i64, frames: i64, keyframe: impl Fn(i64) -> bool) -> Vec<Unit> {
        (0..frames)
            .map(|i| video(from + i * FRAME, keyframe(i)))
            .collect()
    }

    fn secs(v: &[f64]) -> Vec<String> {
        v.iter().map(|s| format!("{s:.3}")).collect()
    }

    #[test]
    fn low_latency_keyframe_every_second() {
        let out = run(
            SegmenterConfig::low_latency(true),
            video_stream(0, 150, |i| i % 30 == 0),
        );
        assert_eq!(
            secs(&out.segment_secs()),
            ["1.000", "1.000", "1.000", "1.000", "1.000"]
        );
        for seg in &out.segments {
            let durations: Vec<i64> = seg.parts.iter().map(|p| p.duration).collect();
            assert_eq!(durations, [HZ / 5; 5], "five exact 200 ms parts");
            let independent: Vec<bool> = seg.parts.iter().map(|p| p.independent).collect();
            assert_eq!(independent, [true, false, false, false, false]);
        }
        // Asked one part ahead of each boundary: at 0.8 s into each segment.
        assert_eq!(
            out.keyframe_requests,
            [24, 54, 84, 114, 144].map(|f| f * FRAME)
        );
        // Cut by the next frame, so the muxer knows where each part's last frame ends.
        assert_eq!(out.parts[0].video_end, Some(6 * FRAME));
        // The last part was flushed by finish(): its end was estimated.
        assert_eq!(out.parts.last().unwrap().video_end, None);
    }

    #[test]
    fn standard_keyframe_every_two_seconds() {
        let out = run(
            SegmenterConfig::standard(true),
            video_stream(0, 300, |i| i % 60 == 0),
        );
        assert_eq!(
            secs(&out.segment_secs()),
            ["2.000", "2.000", "2.000", "2.000", "2.000"]
        );
        for seg in &out.segments {
            assert_eq!(seg.parts.len(), 1, "no parts: one fragment per segment");
        }
        assert_eq!(out.parts[0].units.len(), 60);
        assert_eq!(
            out.keyframe_requests.len(),
            5,
            "one request per segment, at 1.8 s"
        );
    }

    #[test]
    fn low_latency_with_two_second_gop_waits_for_the_keyframe() {
        let out = run(
            SegmenterConfig::low_latency(true),
            video_stream(0, 240, |i| i % 60 == 0),
        );
        // A 1 s target cannot cut between key frames: segments follow the GOP, and say so.
        assert_eq!(
            secs(&out.segment_secs()),
            ["2.000", "2.000", "2.000", "2.000"]
        );
        assert_eq!(out.segments[0].parts.len(), 10);
        assert!(out.parts.iter().all(|p| p.info.duration == HZ / 5));
        // Asked at 0.8 s, again at 1.8 s (overdue), for every segment.
        let first: Vec<i64> = out.keyframe_requests.iter().take(2).copied().collect();
        assert_eq!(first, [24 * FRAME, 54 * FRAME]);
    }

    #[test]
    fn irregular_keyframes_cut_at_the_first_one_in_the_window() {
        // Key frames at 0, 0.7, 1.9 (answering a request), 2.3, 5.0 and 5.9 s, target 2 s.
        let keyframes = [0, 21, 57, 69, 150, 177];
        let out = run(
            SegmenterConfig::standard(true),
            video_stream(0, 210, |i| keyframes.contains(&i)),
        );
        // 1.9 s is in the window [1.8, ...): cut there. Then nothing until 5.0 s (3.1 s later).
        assert_eq!(secs(&out.segment_secs()), ["1.900", "3.100", "2.000"]);
        assert_eq!(
            out.segments
                .iter()
                .map(|s| s.start / FRAME)
                .collect::<Vec<_>>(),
            [0, 57, 150]
        );
    }

    /// Two renditions of one ladder: one has key frames every second on the second; the other
    /// starts 2 frames later, has one 1.5 s GOP, then key frames every half second. On the grid
    /// both cut at each second's first key frame, so after the long GOP they are in step
    /// again; cut relative to their own starts, the second stays half a second out of step.
    #[test]
    fn renditions_on_a_grid_cut_at_the_same_ticks() {
        let grid = SegmenterConfig {
            grid: true,
            ..SegmenterConfig::low_latency(true)
        };
        let top = run(grid, video_stream(0, 180, |i| i % 30 == 0));
        let odd = |i: i64| i == 0 || (i >= 45 && i % 15 == 0);
        let other = run(grid, video_stream(2 * FRAME, 178, odd));
        let starts = |r: &Run| {
            r.segments
                .iter()
                .map(|s| s.start / FRAME)
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(&top), [0, 30, 60, 90, 120, 150]);
        // The tick at 60 is within half a target of the key frame at 47: the next one counts.
        assert_eq!(starts(&other), [2, 47, 92, 122, 152]);
        let relative = run(
            SegmenterConfig::low_latency(true),
            video_stream(2 * FRAME, 178, odd),
        );
        assert_eq!(starts(&relative), [2, 47, 77, 107, 137, 167]);
        // A start more than half a target before a tick: that segment ends at the tick.
        let late = run(grid, video_stream(10 * FRAME, 110, |i| i % 10 == 0));
        assert_eq!(starts(&late), [10, 30, 60, 90]);
    }

    #[test]
    fn keyframe_only_at_start_grows_segments_honestly() {
        let mut s = Segmenter::new(SegmenterConfig::low_latency(true)).unwrap();
        let mut out = Run::default();
        for unit in video_stream(0, 300, |i| i == 0) {
            let now = match &unit {
                Unit::Video(v) => v.dts,
                Unit::Audio(_) => unreachable!(),
            };
            s.push(unit);
            out.collect(&mut s, now);
        }
        assert!(out.segments.is_empty(), "no key frame, no boundary");
        // Parts keep flowing for LL-HLS clients; only the first can start playback.
        assert_eq!(out.parts.len(), 49);
        assert!(out.parts[1..].iter().all(|p| !p.info.independent));
        // Requested at 0.8 s, then every second while overdue.
        let requests: Vec<i64> = out.keyframe_requests.iter().map(|t| t / FRAME).collect();
        assert_eq!(requests, [24, 54, 84, 114, 144, 174, 204, 234, 264, 294]);
        s.finish();
        out.collect(&mut s, 0);
        check_invariants(&s, &out);
        assert_eq!(secs(&out.segment_secs()), ["10.000"]);
        assert_eq!(s.max_segment_duration(), 10 * HZ, "the maximum says so");
        assert_eq!(s.max_part_duration(), HZ / 5);
    }

    #[test]
    fn waits_for_the_first_keyframe_and_asks_for_it() {
        let mut units = video_stream(0, 45, |i| i == 40);
        // Audio from the start: whatever comes before the key frame is useless without video.
        units.extend((0..70).map(|i| audio(i * OPUS, OPUS)));
        units.sort_by_key(|u| match u {
            Unit::Video(v) => v.dts,
            Unit::Audio(a) => a.pts,
        });
        let mut s = Segmenter::new(SegmenterConfig::low_latency(true)).unwrap();
        let mut out = Run::default();
        for unit in units {
            s.push(unit);
            out.collect(&mut s, 0);
        }
        s.finish();
        out.collect(&mut s, 0);
        check_invariants(&s, &out);
        assert_eq!(
            out.order.first(),
            Some(&'k'),
            "asked for a key frame at once"
        );
        assert_eq!(out.segments.len(), 1);
        assert_eq!(out.segments[0].start, 40 * FRAME);
        let first = &out.parts[0];
        assert!(first.info.independent);
        assert!(first.units.iter().all(|u| match u {
            Unit::Video(v) => v.dts >= 40 * FRAME,
            Unit::Audio(a) => a.pts >= 40 * FRAME - OPUS,
        }));
        // 40 frames and the audio frames that arrived before the key frame.
        assert_eq!(s.dropped_units(), 40 + 67);
    }

    #[test]
    fn audio_and_video_interleaved() {
        let mut units = video_stream(0, 180, |i| i % 30 == 0);
        units.extend((0..300).map(|i| audio(i * OPUS + 90, OPUS)));
        units.sort_by_key(|u| match u {
            Unit::Video(v) => v.dts,
            Unit::Audio(a) => a.pts,
        });
        let out = run(SegmenterConfig::low_latency(true), units);
        assert_eq!(out.segments.len(), 6);
        assert!(out.segments.iter().all(|s| s.duration == HZ));
        // Audio rides along: every 20 ms frame lands in the part open when it arrives.
        let audio_per_part: Vec<usize> = out.parts[..5]
            .iter()
            .map(|p| {
                p.units
                    .iter()
                    .filter(|u| matches!(u, Unit::Audio(_)))
                    .count()
            })
            .collect();
        assert_eq!(audio_per_part, [10, 10, 10, 10, 10]);
        let (v, a) = out.parts[0].clone().into_tracks();
        assert_eq!((v.len(), a.len()), (6, 10));
    }

    #[test]
    fn audio_only_cuts_on_audio_frames() {
        let out = run(
            SegmenterConfig::low_latency(false),
            (0..250).map(|i| audio(i * OPUS, OPUS)),
        );
        assert_eq!(
            secs(&out.segment_secs()),
            ["1.000", "1.000", "1.000", "1.000", "1.000"]
        );
        assert!(
            out.parts
                .iter()
                .all(|p| p.info.duration == HZ / 5 && p.info.independent)
        );
        assert!(
            out.keyframe_requests.is_empty(),
            "no video, nothing to ask for"
        );
        assert_eq!(out.parts[0].audio_end, Some(HZ / 5));
        // The flushed last part ends where its last frame does.
        assert_eq!(out.segments.last().unwrap().duration, HZ);
    }

    #[test]
    fn audio_only_aac_frames_never_exceed_the_targets() {
        // 1024 samples at 48 kHz: 1920 ticks, which does not divide 200 ms or 2 s.
        let aac = 1920;
        let out = run(
            SegmenterConfig {
                part_target: Some(Duration::from_millis(200)),
                ..SegmenterConfig::standard(false)
            },
            (0..400).map(|i| audio(i * aac, aac)),
        );
        assert!(out.segments.iter().all(|s| s.duration <= 2 * HZ));
        assert!(out.parts.iter().all(|p| p.info.duration <= HZ / 5));
        assert_eq!(
            out.parts[0].info.duration,
            9 * aac,
            "nine frames fit in 200 ms"
        );
        assert_eq!(out.segments[0].duration, 93 * aac, "93 frames fit in 2 s");
    }

    /// Video at `fps` frames per second (key frame every `gop` frames) for `secs`, with 20 ms
    /// audio arriving `audio_lead` ticks ahead of its time, interleaved by arrival.
    fn av_stream(fps: i64, gop: i64, secs: i64, audio_lead: i64) -> Vec<Unit> {
        let mut units: Vec<(i64, Unit)> = (0..secs * fps)
            .map(|i| (i * HZ / fps, video(i * HZ / fps, i % gop == 0)))
            .chain((0..secs * 50).map(|i| (i * OPUS - audio_lead, audio(i * OPUS, OPUS))))
            .collect();
        units.sort_by_key(|(arrival, _)| *arrival);
        units.into_iter().map(|(_, u)| u).collect()
    }

    #[test]
    fn slow_video_lets_audio_pace_the_parts() {
        // Screen sharing at 2 fps, a key frame every second; audio arrives 30 ms early.
        let out = run(SegmenterConfig::low_latency(true), av_stream(2, 2, 6, 2700));
        assert_eq!(
            secs(&out.segment_secs()),
            ["1.000", "1.000", "1.000", "1.000", "1.000", "1.000"]
        );
        let longest = out.parts.iter().map(|p| p.info.duration).max().unwrap();
        assert_eq!(longest, HZ / 5, "parts of 200 ms, not of a 500 ms frame");
        // Audio, arriving 30 ms early, opened each segment's first part just before its key
        // frame came: the key frame is in it, so it is still independent.
        assert!(out.segments.iter().all(|s| s.parts[0].independent));
        let audio_paced = out.parts.iter().filter(|p| p.audio_end.is_some()).count();
        assert!(audio_paced > out.parts.len() / 2);
    }

    #[test]
    fn a_video_stall_does_not_stall_parts() {
        // 30 fps with a key frame each second, but no video from 2 s to 5 s (the key frames at
        // 2, 3 and 4 s are lost too); audio goes on.
        let units = av_stream(30, 30, 7, 0)
            .into_iter()
            .filter(|u| !matches!(u, Unit::Video(v) if (2 * HZ..5 * HZ).contains(&v.dts)));
        let out = run(SegmenterConfig::low_latency(true), units);
        let longest = out.parts.iter().map(|p| p.info.duration).max().unwrap();
        // Noticing the stall takes half a part: the part it happens in runs that much longer.
        assert!(longest <= HZ / 5 + HZ / 10 + OPUS, "longest part {longest}");
        let stall_parts = out
            .parts
            .iter()
            .filter(|p| (2 * HZ..5 * HZ).contains(&p.start));
        assert!(
            stall_parts.count() >= 14,
            "a part every 200 ms through the stall"
        );
        // The segment spanning the stall waits for the key frame at 5 s.
        assert_eq!(
            secs(&out.segment_secs()),
            ["1.000", "4.000", "1.000", "1.000"]
        );
    }

    #[test]
    fn video_in_an_audio_only_stream_is_dropped() {
        let mut s = Segmenter::new(SegmenterConfig::low_latency(false)).unwrap();
        s.push(video(0, true));
        s.push(audio(0, OPUS));
        assert_eq!(s.dropped_units(), 1);
    }

    #[test]
    fn jitter_does_not_make_long_parts() {
        // 30 fps with ±1 ms of capture jitter, a key frame each second.
        let jitter = [0, 90, -90, 45, -45, 0, 90, -90];
        let units: Vec<Unit> = (0..300)
            .map(|i| video(i * FRAME + jitter[i as usize % 8], i % 30 == 0))
            .collect();
        let out = run(SegmenterConfig::low_latency(true), units);
        let longest = out.parts.iter().map(|p| p.info.duration).max().unwrap();
        // At most the jitter over 200 ms, never a whole frame.
        assert!(longest <= HZ / 5 + 180, "longest part {longest}");
        // Nor a frame short: noise does not cut early (the last part was flushed, skip it).
        let full = &out.parts[..out.parts.len() - 1];
        let shortest = full.iter().map(|p| p.info.duration).min().unwrap();
        assert!(shortest >= HZ / 5 - 180, "shortest part {shortest}");
        assert!(out.segments.iter().all(|s| s.duration <= HZ + 180));
    }

    #[test]
    fn discontinuity_restarts_timestamps_and_marks_the_next_segment() {
        let mut s = Segmenter::new(SegmenterConfig::low_latency(true)).unwrap();
        let mut out = Run::default();
        for unit in video_stream(50 * HZ, 45, |i| i % 30 == 0) {
            s.push(unit);
        }
        out.collect(&mut s, 0);
        s.discontinuity();
        out.collect(&mut s, 0);
        assert_eq!(
            out.segments.len(),
            2,
            "the open segment was ended at the switch"
        );
        assert_eq!(out.segments[1].duration, 15 * FRAME);
        // The new publisher starts at 0 again, first without a key frame.
        for unit in video_stream(0, 65, |i| i == 5 || i == 35) {
            s.push(unit);
        }
        s.finish();
        out.collect(&mut s, 0);
        check_invariants(&s, &out);
        let flags: Vec<(u64, bool, u64)> = out
            .segments
            .iter()
            .map(|s| (s.msn, s.discontinuity, s.epoch))
            .collect();
        assert_eq!(
            flags,
            [(0, false, 0), (1, false, 0), (2, true, 1), (3, false, 1)]
        );
        assert_eq!(out.segments[2].start, 5 * FRAME);
        assert!(
            out.parts
                .iter()
                .filter(|p| p.info.msn == 2)
                .all(|p| p.info.discontinuity)
        );
    }

    #[test]
    fn program_date_time_follows_the_anchor() {
        let anchor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s = Segmenter::new(SegmenterConfig::low_latency(true)).unwrap();
        let mut out = Run::default();
        // No anchor yet for the first segment (the sender report has not come).
        for unit in video_stream(0, 30, |i| i == 0) {
            s.push(unit);
        }
        s.set_wallclock_anchor(Some(anchor));
        for unit in video_stream(30 * FRAME, 61, |i| i % 30 == 0) {
            s.push(unit);
        }
        out.collect(&mut s, 0);
        let pdt: Vec<Option<SystemTime>> =
            out.segments.iter().map(|s| s.program_date_time).collect();
        let at = |secs| Some(anchor + Duration::from_secs(secs));
        assert_eq!(pdt, [None, at(1), at(2)]);
        assert_eq!(
            add_ticks(anchor, -HZ / 2),
            Some(anchor - Duration::from_millis(500))
        );
    }

    #[test]
    fn bad_timestamps_never_panic_or_make_empty_parts() {
        let weird = [
            0,
            i64::MAX,
            i64::MIN,
            -5,
            -5,
            3000,
            2000,
            i64::MAX - 1,
            i64::MAX,
            0,
            1,
        ];
        for lead_video in [true, false] {
            let mut s = Segmenter::new(SegmenterConfig::low_latency(lead_video)).unwrap();
            for (i, &t) in weird.iter().enumerate() {
                s.push(video(t, i % 3 == 0));
                s.push(audio(t, if i % 2 == 0 { OPUS } else { i64::MIN }));
            }
            s.discontinuity();
            s.push(video(i64::MIN, true));
            s.finish();
            while let Some(event) = s.poll_event() {
                if let Event::PartReady(p) = event {
                    assert!(p.info.duration > 0);
                }
            }
        }
    }

    #[test]
    fn rejects_impossible_configs() {
        let base = SegmenterConfig::low_latency(true);
        let bad = [
            SegmenterConfig {
                segment_target: Duration::ZERO,
                ..base
            },
            SegmenterConfig {
                part_target: Some(Duration::ZERO),
                ..base
            },
            SegmenterConfig {
                part_target: Some(Duration::from_secs(2)),
                ..base
            },
            SegmenterConfig {
                keyframe_lead: Duration::from_secs(1),
                ..base
            },
        ];
        for config in bad {
            assert!(Segmenter::new(config).is_err(), "{config:?}");
        }
    }
}
