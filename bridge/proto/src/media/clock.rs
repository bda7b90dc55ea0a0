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
//! - A report that would place its track earlier than the track already is moves that pin later
//!   instead (see [`SessionClock::sender_report`]), so every track only ever steps forward.
//!
//! Output never goes backwards on a track (nor before the epoch): a timestamp the sender itself
//! stepped back is clamped to the previous value and counted. A mapping further than
//! [`MAX_DRIFT`] from arrival time (a sender that jumped its timestamps, or a report with a bogus
//! wallclock) re-anchors the track on arrival rather than trusting it.
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
    /// Sender reports that would have moved their track back, taken by moving the wallclock pin
    /// later instead.
    pub repinned: u64,
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
    /// `(extended rtp, ticks)` of the latest output.
    last_out: Option<(i64, i64)>,
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

    /// Where the track's latest report and the senders' wallclock `(ntp, ticks)` place `ext`.
    fn reported(&self, ext: i64, wallclock: Option<(u64, i64)>) -> Option<i64> {
        let (ntp, r_rtp) = self.report?;
        let (w_ntp, w_ticks) = wallclock?;
        Some(
            w_ticks
                .saturating_add(ntp_ticks(ntp, w_ntp))
                .saturating_add(self.rtp_ticks(ext - r_rtp)),
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
    ///
    /// When the report places the track's latest output earlier than it went out, the wallclock
    /// pin moves later by the difference: that track goes on without a step and every other
    /// track placed by reports steps forward once. Sender reports exist to line tracks up
    /// (RFC 3550 §6.4.1), and this keeps them lined up by the latest reports, whereas holding
    /// the track at its last output until the new mapping caught up (clamping) gave each frame
    /// in between one and the same timestamp: up to 0.6 s of video on one DTS from GStreamer's
    /// webrtcbin, whose first reports, sent amid the burst of media it held back while
    /// connecting, are 0.3 to 0.6 s off its later ones. A forward step is a gap, which the AAC
    /// transcoder and the segmenter take; equal or backward timestamps break muxers.
    /// Slewing towards the new mapping would avoid the gap, but would leave the tracks out of
    /// line for as long as it slews and bend audio frames' spacing.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
        now: Instant,
    ) -> Result<(), ClockError> {
        let now_ticks = self.ticks_since_epoch(now);
        let wallclock = self.wallclock;
        let track = self.track(ssrc)?;
        let ext = track.extend(rtp);
        track.report = Some((ntp, ext));
        let (w_ntp, mut w_ticks) = wallclock.unwrap_or_else(|| {
            let anchored = track
                .arrival
                .map(|(a_rtp, a_ticks)| a_ticks.saturating_add(track.rtp_ticks(ext - a_rtp)));
            (ntp, anchored.unwrap_or(now_ticks))
        });
        let step_back = track.last_out.and_then(|(l_rtp, l_out)| {
            let placed = track.reported(l_rtp, Some((w_ntp, w_ticks)))?;
            (placed < l_out).then(|| l_out - placed)
        });
        tracing::debug!(
            ssrc,
            ntp,
            rtp,
            arrival = now_ticks,
            ?step_back,
            "sender report"
        );
        if let Some(step) = step_back {
            w_ticks = w_ticks.saturating_add(step);
            self.stats.repinned += 1;
        }
        self.wallclock = Some((w_ntp, w_ticks));
        self.stats.sender_reports += 1;
        Ok(())
    }

    /// The senders' wallclock time of timeline 0, once a sender report pinned it: when the
    /// session's media was captured, by the publisher's clock (what `EXT-X-PROGRAM-DATE-TIME`
    /// should say). `None` before the first report, or when the report's NTP time is before the
    /// UNIX epoch (a sender counting from its own boot, not from 1900). A re-pin (see
    /// [`Self::sender_report`]) moves it earlier by its step.
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
        let mut mapped = track
            .reported(ext, wallclock)
            .unwrap_or_else(|| a_ticks.saturating_add(track.rtp_ticks(ext - a_rtp)));
        let mut reanchored = false;
        if mapped.saturating_sub(now_ticks).saturating_abs() > max_drift {
            track.arrival = Some((ext, now_ticks));
            track.report = None;
            mapped = now_ticks;
            reanchored = true;
        }
        let floor = track.last_out.map_or(0, |(_, out)| out);
        let out = mapped.max(floor);
        track.last_out = Some((ext, out));
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

        // Now the other way round: audio reports first, so video's report (it arrives 80 ms later
        // than audio) would pull it 80 ms back. Video goes on instead and audio steps 80 ms on.
        let mut clock = SessionClock::new(epoch);
        clock.add_track(VIDEO, 90_000).unwrap();
        clock.add_track(AUDIO, 48_000).unwrap();
        clock.map(AUDIO, a(0), at(epoch, 20)).unwrap();
        clock.map(VIDEO, v(0), at(epoch, 100)).unwrap();
        clock
            .sender_report(AUDIO, ntp(500), a(500), at(epoch, 520))
            .unwrap();
        assert_eq!(clock.map(AUDIO, a(960), at(epoch, 980)), Ok(980 * 90));
        let last = clock.map(VIDEO, v(960), at(epoch, 1060)).unwrap();
        assert_eq!(last, 1060 * 90);
        clock
            .sender_report(VIDEO, ntp(980), v(980), at(epoch, 1080))
            .unwrap();
        for ms in (1000..1200).step_by(20) {
            let now = at(epoch, u64::from(ms) + 100);
            let video = clock.map(VIDEO, v(ms), now).unwrap();
            assert_eq!(video, (ms + 100) as i64 * 90, "video goes on at {ms} ms");
            assert_eq!(
                clock.map(AUDIO, a(ms), now),
                Ok(video),
                "lined up at {ms} ms"
            );
        }
        assert_eq!(clock.stats().clamped, 0);
        assert_eq!(clock.stats().repinned, 1);
    }

    /// A sender's reports, however they disagree with arrival or with each other, never make a
    /// track's timestamps repeat or go back, and the latest reports line the tracks up.
    #[test]
    fn reports_that_pull_a_track_back_step_the_others_forward() {
        struct Case {
            name: &'static str,
            /// Arrival minus capture, ms.
            video_lag: u64,
            audio_lag: u64,
            /// Media captured before this (ms) arrives at this in one burst, as when a sender
            /// holds it back while connecting.
            burst: u64,
            /// `(track, arrival ms, error ms)`: a report sent then, whose NTP time is `error`
            /// later than the capture time its RTP timestamp stands for.
            reports: &'static [(u32, u64, u64)],
            repinned: u64,
        }
        let cases = [
            Case {
                name: "well-behaved, video reports first",
                video_lag: 100,
                audio_lag: 20,
                burst: 0,
                reports: &[
                    (VIDEO, 1000, 0),
                    (AUDIO, 1500, 0),
                    (VIDEO, 6000, 0),
                    (AUDIO, 6500, 0),
                ],
                repinned: 0,
            },
            Case {
                name: "well-behaved, audio reports first",
                video_lag: 100,
                audio_lag: 20,
                burst: 0,
                reports: &[
                    (AUDIO, 1000, 0),
                    (VIDEO, 1500, 0),
                    (AUDIO, 6000, 0),
                    (VIDEO, 6500, 0),
                ],
                repinned: 1,
            },
            Case {
                // An encoder buffering video for seconds, its reports 2 s apart from audio's.
                name: "video reports capture 2 s before arrival",
                video_lag: 2000,
                audio_lag: 50,
                burst: 0,
                reports: &[
                    (AUDIO, 1000, 0),
                    (VIDEO, 3000, 0),
                    (AUDIO, 5000, 0),
                    (VIDEO, 7000, 0),
                ],
                repinned: 1,
            },
            Case {
                // GStreamer's webrtcbin: 470 ms held back while connecting; its first reports (sent
                // with that burst) are 470 ms off the later ones.
                name: "startup burst, first reports off by the burst",
                video_lag: 32,
                audio_lag: 11,
                burst: 470,
                reports: &[
                    (VIDEO, 330, 470),
                    (AUDIO, 330, 470),
                    (VIDEO, 800, 0),
                    (AUDIO, 800, 0),
                    (VIDEO, 5800, 0),
                    (AUDIO, 5800, 0),
                ],
                repinned: 1,
            },
            Case {
                // Each report pulls its own track back after the other's re-pin pushed it on: two
                // gaps where paired reports make one, but still nothing repeated.
                name: "startup burst, audio's good report a second after video's",
                video_lag: 32,
                audio_lag: 11,
                burst: 470,
                reports: &[
                    (VIDEO, 330, 470),
                    (AUDIO, 330, 470),
                    (VIDEO, 800, 0),
                    (AUDIO, 1800, 0),
                ],
                repinned: 2,
            },
        ];
        let v = |ms: u64| 4_290_000_000u32.wrapping_add(ms as u32 * 90);
        let a = |ms: u64| 123_456u32.wrapping_add(ms as u32 * 48);
        for case in cases {
            let epoch = Instant::now();
            let mut clock = SessionClock::new(epoch);
            clock.add_track(VIDEO, 90_000).unwrap();
            clock.add_track(AUDIO, 48_000).unwrap();
            let arrival = |capture: u64, lag: u64| (capture + lag).max(case.burst);
            // (arrival, track, capture or report), media before reports that arrive with it.
            let mut events: Vec<(u64, u32, Option<u64>)> = (0..10_000)
                .step_by(33)
                .map(|ms| (arrival(ms, case.video_lag), VIDEO, Some(ms)))
                .chain(
                    (0..10_000)
                        .step_by(20)
                        .map(|ms| (arrival(ms, case.audio_lag), AUDIO, Some(ms))),
                )
                .chain(case.reports.iter().map(|&(ssrc, ms, _)| (ms, ssrc, None)))
                .collect();
            events.sort_by_key(|&(ms, ssrc, capture)| (ms, capture.is_none(), ssrc));
            let mut reports = case.reports.iter();
            let mut last = [None::<i64>; 2];
            for (ms, ssrc, capture) in events {
                let now = at(epoch, ms);
                let lag = if ssrc == VIDEO {
                    case.video_lag
                } else {
                    case.audio_lag
                };
                let rtp = |ms: u64| if ssrc == VIDEO { v(ms) } else { a(ms) };
                let Some(capture) = capture else {
                    let &(_, _, error) = reports.next().unwrap();
                    let captured = ms - lag;
                    let report = ntp(captured + error);
                    clock
                        .sender_report(ssrc, report, rtp(captured), now)
                        .unwrap();
                    continue;
                };
                let out = clock.map(ssrc, rtp(capture), now).unwrap();
                let k = usize::from(ssrc == AUDIO);
                assert!(
                    last[k].is_none_or(|l| out > l),
                    "{}: ssrc {ssrc:x} at {out} after {last:?}, captured {capture} ms",
                    case.name
                );
                last[k] = Some(out);
            }
            let stats = clock.stats();
            assert_eq!((stats.clamped, stats.reanchored), (0, 0), "{}", case.name);
            assert_eq!(stats.repinned, case.repinned, "{}", case.name);
            // Both grids hold 10560 ms.
            let video = clock.map(VIDEO, v(10_560), at(epoch, 10_560 + case.video_lag));
            let audio = clock.map(AUDIO, a(10_560), at(epoch, 10_560 + case.audio_lag));
            assert_eq!(video, audio, "{}: lined up", case.name);
        }
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
