//! One publisher's media in: RTP packets of the audio and video tracks become timed units on the
//! session timeline. Reorder, depacketize, map clocks; pure, driven by the session with `now`.

use std::collections::VecDeque;
use std::time::Instant;

use super::clock::SessionClock;
use super::h264::{DepacketizeError, Depacketizer, FmtpError};
use super::opus;
use super::reorder::{ReorderBuffer, ReorderConfig};
use super::rtp::RtpPacket;
use super::simulcast::{LayerSelect, MAX_LAYERS, Switch};
use super::unit::{Unit, VideoUnit};

/// Which track a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opus.
    Audio,
    /// H.264.
    Video,
}

impl Kind {
    /// `audio` / `video`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

/// One value per media kind (counters, dump files): indexed by [`Kind`], not by a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerKind<T> {
    /// The audio track's.
    pub audio: T,
    /// The video track's.
    pub video: T,
}

impl<T> PerKind<T> {
    /// One value per kind, made by `f`.
    pub fn from_fn(mut f: impl FnMut(Kind) -> T) -> Self {
        Self {
            audio: f(Kind::Audio),
            video: f(Kind::Video),
        }
    }

    /// The value for `kind`.
    pub fn get(&self, kind: Kind) -> &T {
        match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video,
        }
    }

    /// The value for `kind`, to change.
    pub fn get_mut(&mut self, kind: Kind) -> &mut T {
        match kind {
            Kind::Audio => &mut self.audio,
            Kind::Video => &mut self.video,
        }
    }
}

/// What the pipeline dropped, with enough context to find the packet in a capture. The pipeline
/// goes on (and counts the loss in [`IngestStats`]); the session logs these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A video packet the depacketizer refused; its access unit is dropped.
    #[error(transparent)]
    Depacketize(#[from] DepacketizeError),
    /// The negotiated fmtp's parameter sets are unusable: video waits for in-band SPS/PPS.
    #[error(transparent)]
    Fmtp(#[from] FmtpError),
}

/// Errors kept for the session to read; beyond this many unread, more are only counted.
const MAX_PENDING_ERRORS: usize = 64;

/// Counters worth exporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Video access units emitted.
    pub video_units: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Audio frames emitted.
    pub audio_frames: u64,
    /// Packets the reorder buffers gave up on.
    pub lost: u64,
    /// Access units dropped whole because of loss or malformed packets.
    pub video_dropped: u64,
    /// Audio packets that were not valid Opus, or could not be timed.
    pub audio_dropped: u64,
}

struct Track {
    ssrc: u32,
    reorder: ReorderBuffer,
}

impl Track {
    /// Adds what this track's buffer (and depacketizer) counted to `stats`.
    fn add_stats(&self, stats: &mut IngestStats, depacketizer: Option<&Depacketizer>) {
        stats.lost += self.reorder.stats().lost;
        if let Some(d) = depacketizer {
            let s = d.stats();
            stats.video_dropped += s.dropped_loss + s.dropped_malformed + s.dropped_no_parameters;
        }
    }
}

/// One video layer's packets in: its own reorder buffer, depacketizer and parameter sets.
struct VideoTrack {
    track: Track,
    depacketizer: Depacketizer,
}

/// The ingest pipeline of one session.
pub struct Ingest {
    config: ReorderConfig,
    clock: SessionClock,
    video_fmtp: Option<String>,
    /// By layer: one without simulcast, one per rid with it.
    video: Vec<Option<VideoTrack>>,
    select: LayerSelect,
    /// Every layer's pictures too, for an HLS ladder; `None` when nothing reads them.
    layer_out: Option<VecDeque<(usize, VideoUnit)>>,
    audio: Option<Track>,
    out: VecDeque<Unit>,
    errors: VecDeque<IngestError>,
    stats: IngestStats,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// A pipeline whose timeline starts at `epoch`; `video_fmtp` is the negotiated H.264 fmtp
    /// line (it may carry `sprop-parameter-sets`).
    pub fn new(epoch: Instant, config: ReorderConfig, video_fmtp: Option<String>) -> Self {
        Self {
            config,
            clock: SessionClock::new(epoch),
            video_fmtp,
            video: Vec::new(),
            select: LayerSelect::new(1),
            layer_out: None,
            audio: None,
            out: VecDeque::new(),
            errors: VecDeque::new(),
            stats: IngestStats::default(),
        }
    }

    /// The same, for a simulcast publisher whose offer announced `layers` video layers (rids):
    /// the start waits for each of them (see [`LayerSelect`]).
    pub fn with_video_layers(mut self, layers: usize) -> Self {
        self.select = LayerSelect::new(layers);
        self
    }

    /// Also hands out every layer's pictures ([`Self::poll_layer`]), for outputs that make a
    /// rendition of each (an HLS ladder).
    pub fn with_layer_output(mut self) -> Self {
        self.layer_out = Some(VecDeque::new());
        self
    }

    /// The next picture of any layer, with its layer number (only with
    /// [`Self::with_layer_output`]). Each layer's pictures are on the session timeline, from
    /// its first keyframe on.
    pub fn poll_layer(&mut self) -> Option<(usize, VideoUnit)> {
        self.layer_out.as_mut()?.pop_front()
    }

    /// Counters so far, of every track the session had: they never go down, so they can be
    /// exported as counters.
    pub fn stats(&self) -> IngestStats {
        let mut stats = self.stats;
        for v in self.video.iter().flatten() {
            v.track.add_stats(&mut stats, Some(&v.depacketizer));
        }
        if let Some(track) = &self.audio {
            track.add_stats(&mut stats, None);
        }
        stats
    }

    /// The video layers and which of them the outputs get.
    pub fn layers(&self) -> &LayerSelect {
        &self.select
    }

    /// The next change of the layer the outputs get, for the session to log and count.
    pub fn poll_switch(&mut self) -> Option<(Switch, usize)> {
        self.select.poll_switch()
    }

    /// True while video output waits for a keyframe (at the start, after loss, when the
    /// selected layer went silent): time for a PLI.
    pub fn wants_keyframe(&self, now: Instant) -> bool {
        self.video.iter().flatten().next().is_none()
            || self
                .video
                .iter()
                .flatten()
                .any(|v| v.depacketizer.waiting_for_idr())
            || self.select.wants_fallback(now)
    }

    /// The SSRCs of the video layers, for keyframe requests: every layer is asked at once, so
    /// their keyframes stay lined up.
    pub fn video_ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.video.iter().flatten().map(|v| v.track.ssrc)
    }

    /// When the reorder buffers next give up waiting for a missing packet, or the layer
    /// selection's start window closes.
    pub fn deadline(&self) -> Option<Instant> {
        let video = self
            .video
            .iter()
            .flatten()
            .filter_map(|v| v.track.reorder.deadline());
        let audio = self.audio.as_ref().and_then(|t| t.reorder.deadline());
        video.chain(audio).chain(self.select.deadline()).min()
    }

    /// The publisher's wallclock time of timeline 0, once a sender report gave it; see
    /// [`SessionClock::wallclock_origin`].
    pub fn wallclock_origin(&self) -> Option<std::time::SystemTime> {
        self.clock.wallclock_origin()
    }

    /// A sender report (RTCP SR) for `ssrc`.
    pub fn sender_report(&mut self, ssrc: u32, ntp: u64, rtp: u32, now: Instant) {
        // The only error is an SSRC not seen yet (its SR came before its first RTP packet): not
        // useful yet, and the next SR comes within seconds.
        let _ = self.clock.sender_report(ssrc, ntp, rtp, now);
    }

    /// One RTP packet of a track; `layer` tells video layers apart (0 without simulcast; for
    /// audio, ignored). Layers from [`MAX_LAYERS`] on are dropped.
    pub fn push(&mut self, kind: Kind, layer: usize, packet: RtpPacket, now: Instant) {
        let ssrc = packet.ssrc;
        let track = match kind {
            Kind::Video => {
                if layer >= MAX_LAYERS {
                    return;
                }
                self.select.packet(layer);
                if self.video.len() <= layer {
                    self.video.resize_with(layer + 1, || None);
                }
                let slot = &mut self.video[layer];
                if slot.as_ref().is_none_or(|v| v.track.ssrc != ssrc) {
                    if let Some(old) = slot {
                        old.track
                            .add_stats(&mut self.stats, Some(&old.depacketizer));
                    }
                    let mut depacketizer = Depacketizer::new();
                    if let Some(fmtp) = &self.video_fmtp
                        && let Err(err) = depacketizer.set_fmtp(fmtp)
                    {
                        // A bad sprop-parameter-sets only means waiting for in-band SPS/PPS.
                        Self::report(&mut self.errors, err.into());
                    }
                    // Fails only for a clock rate of 0.
                    let _ = self.clock.add_track(ssrc, 90_000);
                    *slot = Some(VideoTrack {
                        track: Track {
                            ssrc,
                            reorder: ReorderBuffer::new(self.config),
                        },
                        depacketizer,
                    });
                }
                slot.as_mut().map(|v| &mut v.track)
            }
            Kind::Audio => {
                if self.audio.as_ref().is_none_or(|t| t.ssrc != ssrc) {
                    if let Some(old) = &self.audio {
                        old.add_stats(&mut self.stats, None);
                    }
                    // Fails only for a clock rate of 0.
                    let _ = self.clock.add_track(ssrc, 48_000);
                    self.audio = Some(Track {
                        ssrc,
                        reorder: ReorderBuffer::new(self.config),
                    });
                }
                self.audio.as_mut()
            }
        };
        if let Some(track) = track {
            // Duplicates, late and stray packets are counted by the buffer and go no further. The
            // only error is an SSRC other than the buffer's, and each SSRC has its own buffer.
            let _ = track.reorder.push(packet, now);
        }
        self.drain(now);
    }

    /// Releases whatever the reorder buffers give up at `now`, and closes the layer selection's
    /// start window (call when `deadline` passes).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain(now);
        self.select.handle_timeout(now, &mut self.out);
    }

    /// The next unit, in the order produced.
    pub fn poll(&mut self) -> Option<Unit> {
        self.out.pop_front()
    }

    /// The next thing dropped for a reason worth logging, oldest first.
    pub fn poll_error(&mut self) -> Option<IngestError> {
        self.errors.pop_front()
    }

    /// Keeps `err` for [`Self::poll_error`], unless too many are unread already (a session that
    /// never reads them must not grow without bound; the stats count every drop anyway).
    fn report(errors: &mut VecDeque<IngestError>, err: IngestError) {
        if errors.len() < MAX_PENDING_ERRORS {
            errors.push_back(err);
        }
    }

    fn drain(&mut self, now: Instant) {
        for (layer, video) in self.video.iter_mut().enumerate() {
            let Some(VideoTrack {
                track,
                depacketizer,
            }) = video
            else {
                continue;
            };
            while let Some(packet) = track.reorder.pop(now) {
                if let Err(err) = depacketizer.push(&packet) {
                    Self::report(&mut self.errors, err.into());
                    continue;
                }
                while let Some(frame) = depacketizer.pull() {
                    match self.clock.map(track.ssrc, frame.timestamp, now) {
                        Ok(pts) => {
                            self.stats.video_units += 1;
                            self.stats.keyframes += u64::from(frame.keyframe);
                            let unit = frame.into_unit(pts);
                            if let Some(layers) = self.layer_out.as_mut() {
                                layers.push_back((layer, unit.clone()));
                            }
                            self.select.push(layer, unit, now, &mut self.out);
                        }
                        Err(_) => self.stats.video_dropped += 1,
                    }
                }
            }
        }
        if let Some(track) = self.audio.as_mut() {
            while let Some(packet) = track.reorder.pop(now) {
                let frame = self
                    .clock
                    .map(track.ssrc, packet.timestamp, now)
                    .ok()
                    .and_then(|pts| opus::audio_frame(packet.payload, pts).ok());
                match frame {
                    Some(frame) => {
                        self.stats.audio_frames += 1;
                        self.out.push_back(Unit::Audio(frame));
                    }
                    None => self.stats.audio_dropped += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    #[test]
    fn audio_and_video_come_out_timed_and_in_order() {
        let t0 = Instant::now();
        let mut ingest = Ingest::new(t0, ReorderConfig::default(), None);
        assert!(ingest.wants_keyframe(t0));
        // SPS, PPS, IDR as single NAL packets of one access unit, then an Opus frame.
        let sps = Bytes::from_static(&[
            0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00,
            0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xba, 0x80,
        ]);
        let pps = Bytes::from_static(&[0x68, 0xce, 0x0f, 0x2c, 0x80]);
        let idr = Bytes::from_static(&[0x65, 0x88, 0x84, 0x00, 0x33]);
        for (seq, nal, marker) in [(10, sps, false), (11, pps, false), (12, idr, true)] {
            ingest.push(
                Kind::Video,
                0,
                RtpPacket::new(1, seq, 9000, marker, nal),
                t0,
            );
        }
        let opus = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
        ingest.push(
            Kind::Audio,
            0,
            RtpPacket::new(2, 500, 48_000, true, opus),
            t0,
        );
        let units: Vec<Unit> = std::iter::from_fn(|| ingest.poll()).collect();
        assert_eq!(units.len(), 2, "{units:?}");
        let Unit::Video(v) = &units[0] else { panic!() };
        assert!(v.keyframe);
        assert_eq!(v.nalus.len(), 3);
        let Unit::Audio(a) = &units[1] else { panic!() };
        assert_eq!(a.duration, 1800, "20 ms at 90 kHz");
        assert!(!ingest.wants_keyframe(t0));
        assert_eq!(ingest.stats().keyframes, 1);
        assert_eq!(ingest.video_ssrcs().collect::<Vec<_>>(), [1]);

        // A gap: the next packet waits for the missing one until the deadline, then loss is marked
        // and video waits for the next keyframe.
        let inter = Bytes::from_static(&[0x41, 0x9a]);
        ingest.push(
            Kind::Video,
            0,
            RtpPacket::new(1, 14, 12000, true, inter),
            t0,
        );
        assert!(ingest.poll().is_none());
        let deadline = ingest.deadline().unwrap();
        assert!(deadline <= t0 + Duration::from_millis(100));
        ingest.handle_timeout(deadline);
        assert!(ingest.poll().is_none(), "inter frame after loss is dropped");
        assert!(ingest.wants_keyframe(t0));
        assert_eq!(ingest.stats().lost, 1);
    }

    #[test]
    fn a_refused_packet_is_reported_with_its_ssrc_and_seq() {
        let t0 = Instant::now();
        let mut ingest = Ingest::new(
            t0,
            ReorderConfig::default(),
            Some("sprop-parameter-sets=!!".into()),
        );
        // NAL unit type 25 (STAP-B): packetization mode 2, never negotiated.
        let stap_b = Bytes::from_static(&[0x19, 0x00, 0x01, 0x41]);
        ingest.push(Kind::Video, 0, RtpPacket::new(5, 7, 0, true, stap_b), t0);
        assert!(matches!(ingest.poll_error(), Some(IngestError::Fmtp(_))));
        assert_eq!(
            ingest.poll_error(),
            Some(IngestError::Depacketize(DepacketizeError::Unsupported {
                ssrc: 5,
                seq: 7,
                nal_type: 25
            }))
        );
        assert_eq!(ingest.poll_error(), None);
    }

    /// The RTP an ffmpeg 9 publisher sends (tests/data/README.md says how it was captured).
    fn ffmpeg_capture() -> Vec<RtpPacket> {
        read_capture(include_bytes!("../../../tests/data/ffmpeg9-whip-h264.rtp"))
    }

    /// Length-prefixed plain RTP packets, as `--rtp-dump` writes them.
    fn read_capture(data: &[u8]) -> Vec<RtpPacket> {
        let mut packets = Vec::new();
        let mut rest = data;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let d = &rest[2..2 + len];
            let csrc = usize::from(d[0] & 0x0f);
            let start = 12 + 4 * csrc;
            packets.push(RtpPacket::new(
                u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
                u16::from_be_bytes([d[2], d[3]]),
                u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
                d[1] & 0x80 != 0,
                Bytes::copy_from_slice(&d[start..]),
            ));
            rest = &rest[2 + len..];
        }
        packets
    }

    fn video_units(
        packets: impl IntoIterator<Item = RtpPacket>,
    ) -> Vec<crate::media::unit::VideoUnit> {
        let t0 = Instant::now();
        let mut ingest = Ingest::new(t0, ReorderConfig::default(), None);
        for (i, p) in packets.into_iter().enumerate() {
            ingest.push(Kind::Video, 0, p, t0 + Duration::from_millis(i as u64 * 5));
        }
        ingest.handle_timeout(t0 + Duration::from_secs(60));
        std::iter::from_fn(|| ingest.poll())
            .filter_map(|u| match u {
                Unit::Video(v) => Some(v),
                Unit::Audio(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_real_ffmpeg_capture_gives_every_frame() {
        let packets = ffmpeg_capture();
        assert!(packets.len() > 60, "{} packets", packets.len());
        let units = video_units(packets);
        assert_eq!(units.len(), 90, "3 s at 30 fps");
        let keyframes: Vec<usize> = (0..units.len()).filter(|&i| units[i].keyframe).collect();
        assert_eq!(keyframes, [0, 30, 60], "-g 30");
        // SPS first in every keyframe, and it says 640x360.
        let sps = crate::media::h264::sps::parse(&units[0].nalus[0]).unwrap();
        assert_eq!((sps.width, sps.height), (640, 360));
        assert!(
            units.windows(2).all(|w| w[1].pts - w[0].pts == 3000),
            "30 fps on the 90 kHz timeline"
        );
    }

    #[test]
    fn a_real_ffmpeg_opus_capture_gives_every_frame() {
        let packets = read_capture(include_bytes!("../../../tests/data/ffmpeg9-whip-opus.rtp"));
        let count = packets.len() as u64;
        let t0 = Instant::now();
        let mut ingest = Ingest::new(t0, ReorderConfig::default(), None);
        for p in packets {
            ingest.push(Kind::Audio, 0, p, t0);
        }
        ingest.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(ingest.stats().audio_frames, count);
        let frames: Vec<_> = std::iter::from_fn(|| ingest.poll()).collect();
        assert!(frames.windows(2).all(|w| match (&w[0], &w[1]) {
            (Unit::Audio(a), Unit::Audio(b)) => b.pts - a.pts == a.duration && a.duration == 1800,
            _ => false,
        }));
    }

    #[test]
    fn a_lost_fragment_drops_until_the_next_idr() {
        let packets = ffmpeg_capture();
        // The first IDR is FU-A fragmented: lose one of its middle fragments.
        let victim = packets
            .iter()
            .position(|p| {
                p.payload.len() > 2 && p.payload[0] & 0x1f == 28 && p.payload[1] & 0xc0 == 0
            })
            .unwrap();
        let units = video_units(
            packets
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, p)| p),
        );
        assert_eq!(units.len(), 60, "frames 0-29 depend on the broken IDR");
        assert!(units[0].keyframe);
    }

    /// Chromium's three simulcast layers (tests/data/README.md), interleaved as they came: each
    /// SSRC is a layer (numbered by its first packet, as rids are), and the outputs get every
    /// picture of the largest one, whichever order the layers came in.
    #[test]
    fn a_real_chromium_simulcast_capture_gives_every_picture_of_the_top_layer() {
        let packets = read_capture(include_bytes!(
            "../../../tests/data/chromium-simulcast3-h264.rtp"
        ));
        let packets_in = packets.len();
        for reverse in [false, true] {
            let mut ssrcs: Vec<u32> = Vec::new();
            for p in &packets {
                if !ssrcs.contains(&p.ssrc) {
                    ssrcs.push(p.ssrc);
                }
            }
            if reverse {
                ssrcs.reverse();
            }
            let t0 = Instant::now();
            let mut ingest = Ingest::new(t0, ReorderConfig::default(), None).with_video_layers(3);
            if reverse {
                ingest = ingest.with_layer_output();
            }
            for (i, p) in packets.iter().enumerate() {
                let layer = ssrcs.iter().position(|&s| s == p.ssrc).unwrap();
                let at = t0 + Duration::from_millis(i as u64 * 3000 / packets.len() as u64);
                ingest.push(Kind::Video, layer, p.clone(), at);
            }
            ingest.handle_timeout(t0 + Duration::from_secs(60));
            let stats = ingest.stats();
            assert_eq!((stats.lost, stats.video_dropped), (0, 0), "{stats:?}");
            assert_eq!(
                stats.video_units,
                3 * 90,
                "every layer's pictures assembled"
            );
            let packets: u64 = (0..3)
                .map(|l| ingest.layers().layer_stats(l).unwrap().packets)
                .sum();
            assert_eq!(packets, packets_in as u64);
            let layer_units = std::iter::from_fn(|| ingest.poll_layer()).count();
            // Asked for in the second run only (an HLS ladder): every layer's pictures.
            assert_eq!(layer_units, if reverse { 3 * 90 } else { 0 });
            let units: Vec<_> = std::iter::from_fn(|| ingest.poll())
                .filter_map(|u| match u {
                    Unit::Video(v) => Some(v),
                    Unit::Audio(_) => None,
                })
                .collect();
            assert_eq!(units.len(), 90, "every picture of one layer");
            let sps = crate::media::h264::sps::parse(&units[0].nalus[0]).unwrap();
            assert_eq!((sps.width, sps.height), (640, 360), "the top layer");
            assert!(units.windows(2).all(|w| w[1].pts > w[0].pts));
            let top = ssrcs.iter().position(|&s| s == 3_881_032_844).unwrap();
            assert_eq!(ingest.layers().selected(), Some(top));
            assert_eq!(
                ingest.video_ssrcs().count(),
                3,
                "keyframe requests go to every layer"
            );
        }
    }

    #[test]
    fn a_real_chromium_capture_gives_every_frame_and_audio_packet() {
        let video = read_capture(include_bytes!(
            "../../../tests/data/chromium156-whipclient-h264.rtp"
        ));
        let audio = read_capture(include_bytes!(
            "../../../tests/data/chromium156-whipclient-opus.rtp"
        ));
        let t0 = Instant::now();
        let mut ingest = Ingest::new(t0, ReorderConfig::default(), None);
        let frames: std::collections::BTreeSet<u32> = video.iter().map(|p| p.timestamp).collect();
        for (i, p) in video.into_iter().enumerate() {
            ingest.push(Kind::Video, 0, p, t0 + Duration::from_millis(i as u64));
        }
        // Chromium sends the odd empty packet (padding, bandwidth probing): not a frame.
        let audio_packets = audio.iter().filter(|p| !p.payload.is_empty()).count() as u64;
        for (i, p) in audio.into_iter().enumerate() {
            ingest.push(Kind::Audio, 0, p, t0 + Duration::from_millis(i as u64));
        }
        ingest.handle_timeout(t0 + Duration::from_secs(60));
        let stats = ingest.stats();
        eprintln!(
            "chromium capture: {stats:?}, {} RTP timestamps",
            frames.len()
        );
        assert_eq!(stats.lost, 0);
        assert_eq!(stats.video_dropped, 0, "every picture complete");
        assert!(stats.keyframes >= 1);
        // The capture starts with a keyframe (the bridge asks for one): every picture comes out.
        assert!(
            stats.video_units as usize + 1 >= frames.len() - 1,
            "{stats:?}"
        );
        assert_eq!(stats.audio_frames, audio_packets);
        let first = std::iter::from_fn(|| ingest.poll())
            .find_map(|u| match u {
                Unit::Video(v) if v.keyframe => Some(v),
                _ => None,
            })
            .unwrap();
        let sps = crate::media::h264::sps::parse(&first.nalus[0]).unwrap();
        eprintln!(
            "chromium SPS: {}x{} profile {}",
            sps.width, sps.height, sps.profile_idc
        );
        assert!(sps.width >= 320 && sps.height >= 180);
    }
}
