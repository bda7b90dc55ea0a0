//! RTP timestamps of a session's tracks onto one timeline (90 kHz ticks from the session epoch),
//! so audio and video line up.
//!
//! Each track's timestamps are extended past their 32-bit wrap and counted from an anchor:
//!
//! - Before the track's first RTCP sender report, the anchor is the arrival of its first packet
//!   (`now - epoch`): each track is as well placed as the network delivered it.
//! - Once a sender report has arrived for it, the track is placed by the report's NTP <-> RTP pair:
//!   all tracks of a sender share its wallclock, so this is what lines them up (RFC 3550 §6.4.1).
//!   The first report of the session pins that wallclock to the timeline where its own track
//!   already was, so that track continues without a step.
//!
//! Output never goes backwards on a track (nor before the epoch): a mapping that would is clamped
//! to the previous value and counted. A mapping further than [`MAX_DRIFT`] from arrival time (a
//! sender that jumped its timestamps, or a report with a bogus wallclock) re-anchors the track on
//! arrival rather than trusting it.
//!
//! All inputs are numbers and `Instant`s passed in: no clock is read.

use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use super::unit::TIMELINE_HZ;

/// Furthest a track's mapped time may stray from its arrival time before the track is re-anchored
/// on arrival.
pub const MAX_DRIFT: Duration = Duration::from_secs(10);

/// Errors from [`SessionClock`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClockError {
    /// No track was added with this SSRC.
    #[error("no track with ssrc {0:08x}")]
    UnknownSsrc(u32),
    /// A clock rate of zero cannot map anything.
    #[error("track ssrc {0:08x} with a clock rate of 0")]
    ZeroClockRate(u32),
}

/// Counters since the clock was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockStats {
    /// Outputs raised to the track's previous one (or to 0) rather than going backwards.
    pub clamped: u64,
    /// Sender reports taken.
    pub sender_reports: u64,
    /// Tracks re-anchored on arrival because their mapping strayed past [`MAX_DRIFT`].
    pub reanchored: u64,
}

#[derive(Debug)]
struct Track {
    ssrc: u32,
    clock_rate: u32,
    /// The latest extended timestamp: the reference the next 32-bit one is extended against.
    last_rtp: Option<i64>,
    /// `(extended rtp, ticks)` of the first packet's arrival.
    arrival: Option<(i64, i64)>,
    /// `(ntp, extended rtp)` of the latest sender report.
    report: Option<(u64, i64)>,
    last_out: Option<i64>,
}

impl Track {
    /// Extends a 32-bit timestamp to the one nearest the previous (steps under 2^31 either way).
    fn extend(&mut self, rtp: u32) -> i64 {
        let ext = match self.last_rtp {
            None => i64::from(rtp),
            Some(last) => last + i64::from(rtp.wrapping_sub(last as u32) as i32),
        };
        self.last_rtp = Some(ext);
        ext
    }

    fn rtp_ticks(&self, delta: i64) -> i64 {
        scale(
            i128::from(delta),
            i128::from(TIMELINE_HZ),
            i128::from(self.clock_rate),
        )
    }
}

/// One session's timeline. See the module docs.
#[derive(Debug)]
pub struct SessionClock {
    epoch: Instant,
    /// `(ntp, ticks)`: where the senders' wallclock sits on the timeline, once a report came.
    wallclock: Option<(u64, i64)>,
    tracks: Vec<Track>,
    stats: ClockStats,
}

impl SessionClock {
    /// A timeline whose zero is `epoch` (the session's start).
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            wallclock: None,
            tracks: Vec::with_capacity(2),
            stats: ClockStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ClockStats {
        self.stats
    }

    /// Adds a track (or starts an existing SSRC's afresh) with its RTP clock rate: 90000 for
    /// video, 48000 for Opus.
    pub fn add_track(&mut self, ssrc: u32, clock_rate: u32) -> Result<(), ClockError> {
        if clock_rate == 0 {
            return Err(ClockError::ZeroClockRate(ssrc));
        }
        self.tracks.retain(|t| t.ssrc != ssrc);
        self.tracks.push(Track {
            ssrc,
            clock_rate,
            last_rtp: None,
            arrival: None,
            report: None,
            last_out: None,
        });
        Ok(())
    }

    /// Takes an RTCP sender report's NTP <-> RTP pair for a track; `now` is when it arrived.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
        now: Instant,
    ) -> Result<(), ClockError> {
        let now_ticks = self.ticks_since_epoch(now);
        let track = self.track(ssrc)?;
        let ext = track.extend(rtp);
        track.report = Some((ntp, ext));
        let anchored = track
            .arrival
            .map(|(a_rtp, a_ticks)| a_ticks.saturating_add(track.rtp_ticks(ext - a_rtp)));
        self.stats.sender_reports += 1;
        if self.wallclock.is_none() {
            self.wallclock = Some((ntp, anchored.unwrap_or(now_ticks)));
        }
        Ok(())
    }

    /// The senders' wallclock time of timeline 0, once a sender report pinned it: when the
    /// session's media was captured, by the publisher's clock (what `EXT-X-PROGRAM-DATE-TIME`
    /// should say). `None` before the first report, or when the report's NTP time is before the
    /// UNIX epoch (a sender counting from its own boot, not from 1900).
    pub fn wallclock_origin(&self) -> Option<SystemTime> {
        let (ntp, ticks) = self.wallclock?;
        let unix = ntp_to_unix(ntp)?;
        let nanos = i128::from(ticks) * 1_000_000_000 / i128::from(TIMELINE_HZ);
        let back = Duration::from_nanos(u64::try_from(nanos).ok()?);
        unix.checked_sub(back)
    }

    /// The timeline time of a track's RTP timestamp; `now` is when the packet (for video, the
    /// access unit's last packet) arrived.
    pub fn map(&mut self, ssrc: u32, rtp: u32, now: Instant) -> Result<i64, ClockError> {
        let now_ticks = self.ticks_since_epoch(now);
        let wallclock = self.wallclock;
        let max_drift = duration_ticks(MAX_DRIFT);
        let track = self.track(ssrc)?;
        let ext = track.extend(rtp);
        let (a_rtp, a_ticks) = *track.arrival.get_or_insert((ext, now_ticks));
        let mut mapped = match (track.report, wallclock) {
            (Some((ntp, r_rtp)), Some((w_ntp, w_ticks))) => w_ticks
                .saturating_add(ntp_ticks(ntp, w_ntp))
                .saturating_add(track.rtp_ticks(ext - r_rtp)),
            _ => a_ticks.saturating_add(track.rtp_ticks(ext - a_rtp)),
        };
        let mut reanchored = false;
        if mapped.saturating_sub(now_ticks).saturating_abs() > max_drift {
            track.arrival = Some((ext, now_ticks));
            track.report = None;
            mapped = now_ticks;
            reanchored = true;
        }
        let floor = track.last_out.unwrap_or(0);
        let out = mapped.max(floor);
        track.last_out = Some(out);
        self.stats.reanchored += u64::from(reanchored);
        self.stats.clamped += u64::from(out != mapped);
        Ok(out)
    }

    fn track(&mut self, ssrc: u32) -> Result<&mut Track, ClockError> {
        self.tracks
            .iter_mut()
            .find(|t| t.ssrc == ssrc)
            .ok_or(ClockError::UnknownSsrc(ssrc))
    }

    fn ticks_since_epoch(&self, now: Instant) -> i64 {
        duration_ticks(now.saturating_duration_since(self.epoch))
    }
}

fn duration_ticks(d: Duration) -> i64 {
    scale(
        i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        i128::from(TIMELINE_HZ),
        1_000_000_000,
    )
}

/// Seconds from the NTP epoch (1900) to the UNIX epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// An NTP timestamp (32.32 seconds since 1900) as a `SystemTime`; `None` before 1970.
fn ntp_to_unix(ntp: u64) -> Option<SystemTime> {
    let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
    let nanos = ((ntp & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(nanos).ok()?))
}

/// Ticks from NTP time `from` to `to` (NTP times are seconds in 32.32 fixed point).
fn ntp_ticks(to: u64, from: u64) -> i64 {
    let delta = i128::from(to) - i128::from(from);
    scale(delta, i128::from(TIMELINE_HZ), 1 << 32)
}

/// `value * num / den` rounded to nearest, saturated to `i64`; `den` is positive.
fn scale(value: i128, num: i128, den: i128) -> i64 {
    let scaled = value
        .saturating_mul(num)
        .saturating_mul(2)
        .saturating_add(den)
        .div_euclid(den.saturating_mul(2).max(1));
    i64::try_from(scaled).unwrap_or(if scaled < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO: u32 = 0x1111;
    const AUDIO: u32 = 0x2222;

    fn at(epoch: Instant, ms: u64) -> Instant {
        epoch + Duration::from_millis(ms)
    }

    /// NTP time (32.32) of `ms` after an arbitrary wallclock origin.
    fn ntp(ms: u64) -> u64 {
        let base = 3_900_000_000u64 << 32;
        base + (ms << 32) / 1000
    }

    #[test]
    fn timestamps_wrap_forwards_and_backwards() {
        // (first rtp timestamp, later ones 33 ms apart, expected ticks after the first)
        let cases: &[(&str, &[u32], &[i64])] = &[
            ("plain", &[1000, 4000, 7000], &[0, 3000, 6000]),
            (
                "wraps up",
                &[u32::MAX - 2999, 0, 3000, 6000],
                &[0, 3000, 6000, 9000],
            ),
            (
                "reordered across the wrap is clamped",
                &[2, u32::MAX - 1, 3002],
                &[0, 0, 3000],
            ),
            (
                "a step back is clamped",
                &[90_000, 93_000, 92_000, 96_000],
                &[0, 3000, 3000, 6000],
            ),
        ];
        for &(name, rtp, want) in cases {
            let epoch = Instant::now();
            let mut clock = SessionClock::new(epoch);
            clock.add_track(VIDEO, 90_000).unwrap();
            let got: Vec<i64> = rtp
                .iter()
                .enumerate()
                .map(|(i, &ts)| {
                    clock
                        .map(VIDEO, ts, at(epoch, 1000 + 33 * i as u64))
                        .unwrap()
                        - 90_000
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn many_wraps_keep_counting() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(AUDIO, 48_000).unwrap();
        let mut rtp = 0u32;
        let mut last = 0;
        // 2^32 samples at 48 kHz is ~24.9 hours; step 20 ms frames for 3 wraps.
        for i in 0..(3u64 << 32) / 960 / 4096 {
            rtp = rtp.wrapping_add(960 * 4096);
            let now = at(epoch, (i + 1) * 20 * 4096);
            last = clock.map(AUDIO, rtp, now).unwrap();
        }
        let frames = (3u64 << 32) / 960 / 4096 * 4096;
        assert_eq!(last, (frames * 1800) as i64);
        assert_eq!(clock.stats().clamped, 0);
        assert_eq!(clock.stats().reanchored, 0);
    }

    #[test]
    fn before_reports_each_track_is_placed_by_its_arrival() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        assert_eq!(clock.map(VIDEO, 5_000, at(epoch, 100)), Ok(9_000));
        // RTP timestamps, not arrival times, space a track's outputs.
        assert_eq!(clock.map(VIDEO, 8_000, at(epoch, 160)), Ok(12_000));
        assert_eq!(clock.map(AUDIO, 700, at(epoch, 120)), Ok(10_800));
        assert_eq!(clock.map(AUDIO, 1660, at(epoch, 150)), Ok(12_600));
        assert_eq!(clock.map(0x9, 0, epoch), Err(ClockError::UnknownSsrc(9)));
        assert_eq!(clock.add_track(0x9, 0), Err(ClockError::ZeroClockRate(9)));
    }

    #[test]
    fn the_first_report_dates_timeline_zero_by_the_senders_clock() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        assert_eq!(clock.wallclock_origin(), None);
        // Captured at sender time 0, arrived 100 ms into the session: timeline 0 was captured
        // 100 ms before the sender's 0.
        clock.map(VIDEO, 0, at(epoch, 100)).unwrap();
        clock
            .sender_report(VIDEO, ntp(1000), 90_000, at(epoch, 1150))
            .unwrap();
        let sender_zero =
            SystemTime::UNIX_EPOCH + Duration::from_secs(3_900_000_000 - NTP_UNIX_OFFSET_SECS);
        assert_eq!(
            clock.wallclock_origin(),
            Some(sender_zero - Duration::from_millis(100))
        );
        // Later reports do not move it.
        clock
            .sender_report(VIDEO, ntp(3000), 270_000, at(epoch, 3300))
            .unwrap();
        assert_eq!(
            clock.wallclock_origin(),
            Some(sender_zero - Duration::from_millis(100))
        );
    }

    #[test]
    fn ntp_times_before_1970_date_nothing() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        // A sender counting NTP from its boot: 5 s after "1900".
        clock
            .sender_report(VIDEO, 5 << 32, 0, at(epoch, 10))
            .unwrap();
        assert_eq!(clock.wallclock_origin(), None);
        assert_eq!(
            ntp_to_unix((NTP_UNIX_OFFSET_SECS << 32) | (1 << 31)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(500))
        );
    }

    /// A sender whose audio and video were captured on one wallclock, with random RTP offsets
    /// and audio arriving 40 ms ahead of video.
    #[test]
    fn sender_reports_align_two_tracks() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        let (v0, a0) = (4_290_000_000u32, 123_456u32); // video wraps
        // Capture time `ms` on the sender's wallclock, as each track's RTP timestamp.
        let v = |ms: u32| v0.wrapping_add(ms * 90);
        let a = |ms: u32| a0.wrapping_add(ms * 48);
        // First packets: video captured at 0 arrives at 100 ms; audio at 0 arrives at 60 ms.
        clock.map(VIDEO, v(0), at(epoch, 100)).unwrap();
        clock.map(AUDIO, a(0), at(epoch, 60)).unwrap();
        // Reports: video's at wallclock 1000, audio's at 1500.
        clock
            .sender_report(VIDEO, ntp(1000), v(1000), at(epoch, 1100))
            .unwrap();
        clock
            .sender_report(AUDIO, ntp(1500), a(1500), at(epoch, 1560))
            .unwrap();
        for ms in [2000, 2020, 5000, 60_000] {
            let now = at(epoch, u64::from(ms) + 100);
            let video = clock.map(VIDEO, v(ms), now).unwrap();
            let audio = clock.map(AUDIO, a(ms), now).unwrap();
            assert_eq!(video, audio, "captured together at {ms} ms");
            // Video kept its arrival placement (it brought the first report).
            assert_eq!(video, i64::from(ms + 100) * 90);
        }
        assert_eq!(clock.stats().sender_reports, 2);
    }

    #[test]
    fn switching_to_reports_never_steps_back() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        let v = |ms: u32| 90 * ms;
        let a = |ms: u32| 48 * ms;
        // Video arrives after 100 ms, audio after 20 ms: before reports, audio is 80 ms early.
        for ms in (0..1000).step_by(20) {
            clock
                .map(VIDEO, v(ms), at(epoch, u64::from(ms) + 100))
                .unwrap();
            clock
                .map(AUDIO, a(ms), at(epoch, u64::from(ms) + 20))
                .unwrap();
        }
        // Video's report comes first: video goes on seamlessly.
        clock
            .sender_report(VIDEO, ntp(1000), v(1000), at(epoch, 1100))
            .unwrap();
        let before = clock.map(VIDEO, v(1000), at(epoch, 1100)).unwrap();
        assert_eq!(before, 1100 * 90);
        // Audio was placed at its earlier arrival; its report moves it 80 ms later (forward).
        let audio_before = clock.map(AUDIO, a(1000), at(epoch, 1020)).unwrap();
        assert_eq!(audio_before, 1020 * 90);
        clock
            .sender_report(AUDIO, ntp(1010), a(1010), at(epoch, 1030))
            .unwrap();
        let audio_after = clock.map(AUDIO, a(1020), at(epoch, 1040)).unwrap();
        assert_eq!(audio_after, 1120 * 90);

        // Now the other way round: audio reports first, so video (late by 80 ms on arrival) is
        // pulled 80 ms back and is held until it catches up instead.
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        clock.map(AUDIO, a(0), at(epoch, 20)).unwrap();
        clock.map(VIDEO, v(0), at(epoch, 100)).unwrap();
        clock
            .sender_report(AUDIO, ntp(500), a(500), at(epoch, 520))
            .unwrap();
        let held = clock.map(VIDEO, v(960), at(epoch, 1060)).unwrap();
        clock
            .sender_report(VIDEO, ntp(980), v(980), at(epoch, 1080))
            .unwrap();
        let mut prev = held;
        for ms in (1000..1200).step_by(20) {
            let out = clock
                .map(VIDEO, v(ms), at(epoch, u64::from(ms) + 100))
                .unwrap();
            assert!(out >= prev, "stepped back at {ms} ms");
            prev = out;
        }
        assert_eq!(held, 1060 * 90);
        // Frames of 1000 and 1020 ms map before 1060 ms and are held there.
        assert_eq!(clock.stats().clamped, 2);
        // Once caught up, video sits where audio's wallclock puts it: 20 ms after capture.
        assert_eq!(prev, (1180 + 20) * 90);
    }

    #[test]
    fn a_wild_jump_reanchors_on_arrival() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.map(VIDEO, 0, at(epoch, 0)).unwrap();
        clock.map(VIDEO, 3000, at(epoch, 33)).unwrap();
        // The sender jumps its timestamps by an hour.
        let out = clock
            .map(VIDEO, 3000 + 3600 * 90_000, at(epoch, 66))
            .unwrap();
        assert_eq!(out, 66 * 90);
        assert_eq!(
            clock.map(VIDEO, 6000 + 3600 * 90_000, at(epoch, 99)),
            Ok(66 * 90 + 3000)
        );
        assert_eq!(clock.stats().reanchored, 1);
    }

    #[test]
    fn random_input_is_monotonic_and_never_panics() {
        let epoch = Instant::now();
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        let mut x = 0xfeed_5eed_1234_5678_u64;
        let mut last = [0i64; 2];
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (ssrc, k) = if x & 1 == 0 { (VIDEO, 0) } else { (AUDIO, 1) };
            let now = at(epoch, i * (x >> 60));
            if x >> 8 & 15 == 0 {
                clock
                    .sender_report(ssrc, x.rotate_left(17), (x >> 32) as u32, now)
                    .unwrap();
            } else {
                let out = clock.map(ssrc, (x >> 20) as u32, now).unwrap();
                assert!(out >= last[k] && out >= 0);
                last[k] = out;
            }
        }
    }
}
