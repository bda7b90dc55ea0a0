//! When an output may start: the gate every output (RTMP, HLS) holds its first units behind.
//!
//! An output cannot describe its tracks before it knows them: the audio format (the channel
//! count, read from the first Opus frame) and, for RTMP's `onMetaData`, the frame rate (from
//! the first two pictures). So it holds the units that come first and asks [`StartGate::open`]
//! after each one. The wait is measured on the media timeline (the held units' own timestamps,
//! the only "now" the gate needs), so it is pure and the same for every output: at most
//! [`AUDIO_WAIT`] of media or [`MAX_PENDING`] units, after which the output starts without what
//! it still lacks.

use super::unit::{AudioFrame, TIMELINE_HZ, Unit};

/// An output waits at most this long (timeline ticks: one second) for the first audio frame
/// and the second picture before it starts without them.
pub const AUDIO_WAIT: i64 = TIMELINE_HZ;
/// Units held while waiting.
pub const MAX_PENDING: usize = 256;

/// What an output waits for before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartGate {
    audio: bool,
    frame_rate: bool,
}

/// What the held units said when the gate opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start<'a> {
    /// The first audio frame held, if one came.
    pub first_audio: Option<&'a AudioFrame>,
    /// The frame rate the held pictures show, if two with rising timestamps came.
    pub frame_rate: Option<f64>,
}

impl StartGate {
    /// A gate that waits for the first audio frame (when `audio`) and for the frame rate (when
    /// `frame_rate`). Waiting for neither, it opens at the first unit.
    pub fn new(audio: bool, frame_rate: bool) -> Self {
        Self { audio, frame_rate }
    }

    /// Whether the output may start with the units it holds (oldest first), and what they
    /// said: opens when everything waited for is known, when the held units span
    /// [`AUDIO_WAIT`], or when [`MAX_PENDING`] are held. `None` while it stays shut (and
    /// always for no units).
    pub fn open<'a>(&self, held: &'a [Unit]) -> Option<Start<'a>> {
        let (first, last) = (held.first()?, held.last()?);
        let first_audio = held.iter().find_map(|u| match u {
            Unit::Audio(f) => Some(f),
            Unit::Video(_) => None,
        });
        let mut rate = FrameRate::default();
        for unit in held {
            if let Unit::Video(v) = unit {
                rate.observe(v.pts);
            }
        }
        let audio_known = first_audio.is_some() || !self.audio;
        let rate_known = rate.get().is_some() || !self.frame_rate;
        let waited = pts(last).saturating_sub(pts(first));
        let open = (audio_known && rate_known) || waited >= AUDIO_WAIT || held.len() >= MAX_PENDING;
        open.then_some(Start {
            first_audio,
            frame_rate: rate.get(),
        })
    }
}

fn pts(unit: &Unit) -> i64 {
    match unit {
        Unit::Video(v) => v.pts,
        Unit::Audio(a) => a.pts,
    }
}

/// The frame rate of a video track, from its first picture and the first later one: what
/// `onMetaData` and `main.m3u8`'s `FRAME-RATE` report. Rounded to three decimals (29.97 stays
/// 29.97, not 29.970029...).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameRate {
    first: Option<i64>,
    rate: Option<f64>,
}

impl FrameRate {
    /// Takes a picture's presentation time; returns the rate once known.
    pub fn observe(&mut self, pts: i64) -> Option<f64> {
        match self.first {
            None => self.first = Some(pts),
            Some(first) if self.rate.is_none() && pts > first => {
                let fps = TIMELINE_HZ as f64 / (pts - first) as f64;
                self.rate = Some((fps * 1000.0).round() / 1000.0);
            }
            Some(_) => {}
        }
        self.rate
    }

    /// The rate, once two pictures with rising timestamps came.
    pub fn get(&self) -> Option<f64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(pts: i64) -> Unit {
        crate::testdata::timed_video(pts, pts == 0)
    }

    fn audio(pts: i64) -> Unit {
        Unit::Audio(AudioFrame {
            pts,
            duration: 1800,
            data: Bytes::from_static(&[0xfc]),
        })
    }

    #[test]
    fn a_gate_opens_when_what_it_waits_for_is_known() {
        let both = StartGate::new(true, true);
        assert_eq!(both.open(&[]), None);
        assert_eq!(both.open(&[video(0)]), None);
        assert_eq!(both.open(&[video(0), video(3000)]), None, "no audio yet");
        let held = [video(0), video(3000), audio(3000)];
        let start = both.open(&held).unwrap();
        assert_eq!(start.frame_rate, Some(30.0));
        assert_eq!(start.first_audio.map(|a| a.pts), Some(3000));
        let nothing = StartGate::new(false, false);
        assert!(nothing.open(&[video(0)]).is_some());
        let audio_only = StartGate::new(true, false);
        assert!(audio_only.open(&[audio(0)]).is_some());
        assert!(audio_only.open(&[video(0), video(3000)]).is_none());
    }

    #[test]
    fn a_second_of_media_or_a_full_queue_opens_it_anyway() {
        let gate = StartGate::new(true, true);
        assert!(
            gate.open(&[video(0), video(89_999)]).is_none(),
            "audio unknown"
        );
        assert!(gate.open(&[video(0), video(90_000)]).is_some());
        assert!(gate.open(&[video(0), video(0)]).is_none());
        assert!(gate.open(&[video(0), video(0), video(90_000)]).is_some());
        let full: Vec<_> = (0..MAX_PENDING).map(|_| video(0)).collect();
        assert!(gate.open(&full).is_some());
        assert!(gate.open(&full[1..]).is_none());
    }

    #[test]
    fn the_frame_rate_comes_from_the_first_rising_pair() {
        let mut rate = FrameRate::default();
        assert_eq!(rate.observe(100), None);
        assert_eq!(rate.observe(100), None, "same picture time");
        assert_eq!(rate.observe(100 + 3754), Some(23.974));
        assert_eq!(rate.observe(100 + 3754 + 3000), Some(23.974), "kept");
        let mut rate = FrameRate::default();
        rate.observe(0);
        assert_eq!(rate.observe(3003), Some(29.97));
    }
}
