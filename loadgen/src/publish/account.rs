//! What each output (RTMP, HLS) of each stream delivered, counted the same way for both: frames
//! received, lost, reordered and duplicated by their stamp's frame number, and the drift between
//! the output's audio and video timelines.

use std::collections::{HashSet, VecDeque};

/// The frame numbers one output delivered for one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameAccount {
    first: Option<u64>,
    max: Option<u64>,
    seen: HashSet<u64>,
    reordered: u64,
    duplicated: u64,
}

impl FrameAccount {
    /// Counts one delivered frame.
    pub fn frame(&mut self, frame: u64) {
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

    /// Distinct frames delivered.
    pub fn received(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Frames that arrived after a later one.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Frames that arrived again.
    pub fn duplicated(&self) -> u64 {
        self.duplicated
    }

    /// Frames never delivered, from the first one delivered to `last_sent` (an output starts at
    /// a key frame, so the frames before its first are not lost); all `sent` ones if none was
    /// delivered (the output never started).
    pub fn lost(&self, last_sent: Option<u64>, sent: u64) -> u64 {
        match (self.first, last_sent) {
            (Some(first), Some(last)) if last >= first => {
                let seen = self.seen.iter().filter(|&&f| f >= first && f <= last);
                (last - first + 1).saturating_sub(seen.count() as u64)
            }
            (Some(_), _) => 0,
            (None, _) => sent,
        }
    }

    /// Frames numbered `from..to` never delivered, counted like [`FrameAccount::lost`]: only
    /// from the first frame delivered on (the frames before it precede the output's start), and
    /// all of them if none was delivered. `publish --ramp` counts each step's window this way.
    pub fn lost_between(&self, from: u64, to: u64) -> u64 {
        match self.first {
            Some(first) => (from.max(first)..to)
                .filter(|f| !self.seen.contains(f))
                .count() as u64,
            None => to.saturating_sub(from),
        }
    }

    /// Distinct frames numbered `from..to` delivered.
    pub fn received_between(&self, from: u64, to: u64) -> u64 {
        (from..to).filter(|f| self.seen.contains(f)).count() as u64
    }

    /// Whether the last frame sent (if sending ended) was delivered, or a later one.
    pub fn drained(&self, last_sent: Option<u64>) -> bool {
        last_sent.is_none_or(|last| self.max >= Some(last))
    }
}

/// Which timeline a timestamp belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// The audio track.
    Audio,
    /// The video track.
    Video,
}

/// Audio/video drift of one output of one stream: how far its audio timeline moved against its
/// video timeline over the run.
///
/// At each moment the output delivers media once both tracks have been seen (each FLV tag for
/// RTMP; each part for HLS), `a` and `v` are the latest audio and video timestamps it carried,
/// on the output's own timeline (FLV tag times; `tfdt` plus sample durations, i.e. where each
/// track of the part ends). Then
///
/// ```text
/// drift = mean(a - v over the last second) - mean(a - v over the first second)
/// ```
///
/// with the seconds counted on the video timeline from the first such moment and back from the
/// last one. The constant offset between the tracks (encoder delay, where each track started,
/// how the muxer interleaves them) cancels out; what remains is audio running ahead (positive)
/// or behind (negative) video. Averaging over a second rather than taking one moment at each
/// end removes the jitter of sampling two cadences (33 ms video frames, 21 ms AAC frames),
/// which alone swings a single `a - v` by tens of ms. Runs shorter than two seconds have
/// overlapping windows and report less than their drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvDrift {
    audio_us: Option<i64>,
    video_us: Option<i64>,
    /// The first window: where it ends (video time), the sum and count of its offsets.
    first_until: Option<i64>,
    first_sum: i128,
    first_count: i128,
    /// The last window: (video time, offset), oldest first.
    last: VecDeque<(i64, i64)>,
}

/// Length of the windows averaged at each end of the run.
const DRIFT_WINDOW_US: i64 = 1_000_000;
/// Offsets kept for the last window at most (a second of FLV tags is about 80).
const DRIFT_WINDOW_MAX: usize = 4096;

impl AvDrift {
    /// The output delivered media at one moment: the latest audio and/or video timestamps it
    /// carried (µs on its timeline).
    pub fn sample(&mut self, audio_us: Option<i64>, video_us: Option<i64>) {
        if audio_us.is_some() {
            self.audio_us = audio_us;
        }
        if video_us.is_some() {
            self.video_us = video_us;
        }
        let (Some(a), Some(v)) = (self.audio_us, self.video_us) else {
            return;
        };
        let offset = a.saturating_sub(v);
        let until = *self
            .first_until
            .get_or_insert(v.saturating_add(DRIFT_WINDOW_US));
        if v <= until {
            self.first_sum += i128::from(offset);
            self.first_count += 1;
        }
        self.last.push_back((v, offset));
        while let Some(&(t, _)) = self.last.front() {
            if t >= v.saturating_sub(DRIFT_WINDOW_US) && self.last.len() <= DRIFT_WINDOW_MAX {
                break;
            }
            self.last.pop_front();
        }
    }

    /// The drift so far, µs; `None` until both tracks have been seen.
    pub fn drift_us(&self) -> Option<i64> {
        if self.first_count == 0 || self.last.is_empty() {
            return None;
        }
        // i128: a forged timestamp near i64::MAX must not overflow the sums.
        let last: i128 = self.last.iter().map(|&(_, o)| i128::from(o)).sum();
        let drift = last / self.last.len() as i128 - self.first_sum / self.first_count;
        Some(i64::try_from(drift).unwrap_or(if drift < 0 { i64::MIN } else { i64::MAX }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_from_the_first_frame_seen() {
        let mut s = FrameAccount::default();
        // The output starts at frame 30 (a keyframe); 32 is lost, 34 comes late, 33 twice.
        for f in [30, 31, 33, 33, 35, 34] {
            s.frame(f);
        }
        assert!(s.drained(None));
        assert!(s.drained(Some(35)));
        assert!(!s.drained(Some(36)));
        assert_eq!((s.reordered(), s.duplicated(), s.received()), (1, 1, 5));
        // 32 and 36 never arrived.
        assert_eq!(s.lost(Some(36), 37), 2);
        assert_eq!(FrameAccount::default().lost(Some(36), 37), 37);
        // Sending never ended (the publisher failed): nothing is called lost.
        assert_eq!(s.lost(None, 0), 0);
        // Windows of frame numbers: 32 and 36 are missing; before 30 is before the output.
        for (from, to, lost) in [
            (0, 30, 0),
            (0, 33, 1),
            (31, 36, 1),
            (33, 36, 0),
            (33, 37, 1),
        ] {
            assert_eq!(s.lost_between(from, to), lost, "{from}..{to}");
        }
        assert_eq!(s.lost_between(40, 30), 0);
        assert_eq!(s.received_between(31, 36), 4);
        assert_eq!(FrameAccount::default().lost_between(10, 40), 30);
    }

    #[test]
    fn drift_is_the_change_of_the_track_offset() {
        let mut d = AvDrift::default();
        d.sample(None, Some(1_000_000));
        assert_eq!(d.drift_us(), None);
        // Audio 20 ms behind video: that offset is the origin, not drift.
        d.sample(Some(980_000), None);
        assert_eq!(d.drift_us(), Some(0));
        // Ten seconds on, audio is 30 ms ahead: it ran 50 ms further than video.
        d.sample(Some(11_030_000), Some(11_000_000));
        assert_eq!(d.drift_us(), Some(50_000));
    }

    #[test]
    fn drift_ignores_the_jitter_of_interleaved_tracks() {
        // RTMP-like: video every 33.3 ms, audio every 21.3 ms, audio delivered 40 ms late, and
        // from 5 s on audio running 2% fast (a real drift of 20 ms per second).
        let mut d = AvDrift::default();
        let (video_step, audio_step) = (33_333, 21_333);
        let (mut v, mut a) = (0i64, 0i64);
        let mut events = Vec::new();
        while v < 10_000_000 {
            events.push((v, None, Some(v)));
            v += video_step;
        }
        while a < 10_000_000 {
            let fast = (a - 5_000_000).max(0) / 50;
            events.push((a + 40_000, Some(a + fast), None));
            a += audio_step;
        }
        events.sort_by_key(|e| e.0);
        for (_, audio, video) in &events[..events.len() / 2] {
            d.sample(*audio, *video);
        }
        // Half way, no drift yet: one moment alone can be 50 ms off, the mean is not.
        let half = d.drift_us().unwrap();
        assert!(half.abs() < 3_000, "{half}");
        for (_, audio, video) in &events[events.len() / 2..] {
            d.sample(*audio, *video);
        }
        // At the end audio is 100 ms ahead, 90 ms on average over the last second.
        let end = d.drift_us().unwrap();
        assert!((85_000..95_000).contains(&end), "{end}");
    }
}
