//! Opus packets in, AAC-LC frames out, on the session timeline.
//!
//! The decoder is `opus-pure` (pure Rust, bit-exact with libopus on SILK and hybrid, within
//! rounding on CELT); the encoder is FDK AAC ([`super::aac`]). Both run at 48 kHz, so samples pass
//! from one to the other through a small FIFO without resampling.
//!
//! Timing: the first packet's pts anchors sample 0. Every decoded or concealed sample then has a
//! place on the timeline, and AAC frame `k` gets `anchor + (1024 k - encoder delay)` samples, so
//! the output is continuous (each pts is the last one plus 1920 ticks) and the encoder's delay is
//! paid in the timestamps rather than as an A/V offset. Gaps in the input are filled (in-band FEC,
//! then loss concealment); a jump of more than [`MAX_FILL_SAMPLES`] either way starts a new run
//! instead, and the output pts jumps with the input.

use bytes::Bytes;
use opus_pure::OpusDecoder;

use super::TranscodeError;
use super::encoder::AacEncoder;
use crate::media::aac::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::media::opus::{MAX_PACKET_SAMPLES, OpusPacket, Toc};
use crate::media::unit::{AudioFrame, TIMELINE_HZ};

/// The longest gap filled with concealed audio, and the furthest a packet may fall behind before
/// it starts a new run rather than being dropped as late: 1 s. Discontinuous transmission leaves gaps of
/// up to 400 ms between packets; anything longer is a stall or a muted track, and inventing
/// seconds of audio would only push everything after it late.
pub const MAX_FILL_SAMPLES: i64 = SAMPLE_RATE as i64;
/// Opus frames come in multiples of 2.5 ms, and concealment works in those steps; a smaller gap
/// or overlap is timing jitter and is not corrected.
const STEP_SAMPLES: i64 = 120;
/// Concealment is asked for at most one 20 ms frame at a time (libopus PLC fades per call).
const PLC_CHUNK_SAMPLES: i64 = 960;
/// Duration of one output frame on the timeline (exact: 1024 samples at 48 kHz).
const FRAME_TICKS: i64 = FRAME_SAMPLES as i64 * TIMELINE_HZ / SAMPLE_RATE as i64;

/// Counters since the transcoder was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeStats {
    /// Opus packets taken.
    pub packets: u64,
    /// Packets that did not parse or decode (concealed instead).
    pub bad_packets: u64,
    /// Packets dropped for arriving at or behind audio already produced (duplicates, late).
    pub late_packets: u64,
    /// Samples per channel of lost audio decoded through the in-band FEC path: recovered when
    /// the next packet carries a copy (SILK and hybrid with FEC on, as WebRTC has it), concealed
    /// by the decoder otherwise.
    pub fec_samples: u64,
    /// Samples per channel made up by loss concealment.
    pub concealed_samples: u64,
    /// Gaps too long to fill, after which the output timeline jumps.
    pub resyncs: u64,
    /// AAC frames produced.
    pub aac_frames: u64,
}

/// Transcodes one Opus stream (48 kHz, as WebRTC always sends it) to AAC-LC 48 kHz.
///
/// Never panics on input: malformed packets are concealed like lost ones and counted.
pub struct OpusToAac {
    decoder: OpusDecoder,
    encoder: AacEncoder,
    channels: usize,
    /// Decoded PCM not yet encoded, interleaved.
    fifo: Vec<i16>,
    /// Decoder output buffer (the longest packet: 120 ms).
    scratch: Vec<i16>,
    /// Timeline time of sample 0 of the current run (set by the first packet).
    anchor: Option<i64>,
    /// Samples per channel put into the FIFO so far.
    fed: i64,
    /// AAC frames encoded so far.
    encoded: i64,
    stats: TranscodeStats,
}

impl std::fmt::Debug for OpusToAac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusToAac")
            .field("encoder", &self.encoder)
            .field("anchor", &self.anchor)
            .field("fed", &self.fed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Channels to transcode with, from a packet's TOC: browsers send mono unless the SDP asked for
/// `stereo=1`, whatever the `opus/48000/2` rtpmap says.
pub fn channels_for(packet: &[u8]) -> u8 {
    match packet.first() {
        Some(&toc) if Toc::new(toc).stereo => 2,
        _ => 1,
    }
}

impl OpusToAac {
    /// A transcoder producing `channels` (1 or 2) of AAC-LC at `bitrate` bits per second
    /// ([`super::DEFAULT_BITRATE`] is a good choice). Opus packets of either channel count are
    /// mixed down or up to it.
    pub fn new(channels: u8, bitrate: u32) -> Result<Self, TranscodeError> {
        let encoder = AacEncoder::new(channels, bitrate)?;
        let channels = usize::from(channels);
        let decoder = OpusDecoder::new(SAMPLE_RATE as i32, channels)
            .map_err(|e| TranscodeError::Decoder(e.to_string()))?;
        Ok(Self {
            decoder,
            encoder,
            channels,
            fifo: Vec::with_capacity((MAX_PACKET_SAMPLES as usize + FRAME_SAMPLES) * channels),
            scratch: vec![0; MAX_PACKET_SAMPLES as usize * channels],
            anchor: None,
            fed: 0,
            encoded: 0,
            stats: TranscodeStats::default(),
        })
    }

    /// The AudioSpecificConfig for the FLV AAC sequence header (2 bytes: AAC-LC, 48 kHz,
    /// channels).
    pub fn audio_specific_config(&self) -> Bytes {
        self.encoder.audio_specific_config()
    }

    /// Output channels.
    pub fn channels(&self) -> u8 {
        self.encoder.channels()
    }

    /// Counters since the transcoder was made.
    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// Takes one Opus packet (`frame.pts` on the session timeline) and returns the AAC frames
    /// completed by it (usually zero or one; more after a filled gap): raw AAC (no ADTS), 1024
    /// samples each, `duration` 1920 ticks, pts continuous within a run.
    ///
    /// An `Err` means the AAC encoder failed, which no input should cause; the stream cannot go
    /// on with this transcoder.
    pub fn push(&mut self, frame: &AudioFrame) -> Result<Vec<AudioFrame>, TranscodeError> {
        self.stats.packets += 1;
        let packet = OpusPacket::parse(&frame.data).ok();
        let samples = match packet {
            Some(p) => i64::from(p.samples()),
            // Trust the frame's own duration for a packet that cannot tell us.
            None => round_down(
                ticks_to_samples(frame.duration).clamp(STEP_SAMPLES, i64::from(MAX_PACKET_SAMPLES)),
            ),
        };
        let anchor = *self.anchor.get_or_insert(frame.pts);
        let gap = ticks_to_samples(frame.pts.saturating_sub(anchor)).saturating_sub(self.fed);
        if gap.unsigned_abs() > MAX_FILL_SAMPLES.unsigned_abs() {
            // Far ahead (a stall) or far behind (the timeline was re-anchored): start a new run
            // here rather than invent seconds of audio or drop everything until time catches up.
            self.anchor = Some(frame.pts.saturating_sub(samples_to_ticks(self.fed)));
            self.stats.resyncs += 1;
        } else if gap <= -(samples / 2).max(STEP_SAMPLES) {
            self.stats.late_packets += 1;
            return Ok(Vec::new());
        } else if gap >= STEP_SAMPLES {
            let gap = round_down(gap);
            // The packet after a loss may carry a low-rate copy of the frame before it (in-band
            // FEC, on by default in WebRTC for SILK and hybrid); that beats concealment for the
            // last `samples` of the gap.
            let fec = if packet.is_some() && gap >= samples {
                samples
            } else {
                0
            };
            self.conceal(gap - fec);
            if fec > 0 {
                self.recover_fec(&frame.data, fec);
            }
        }
        match packet.map(|_| self.decode(&frame.data)) {
            Some(Ok(n)) => self.append(n),
            _ => {
                self.stats.bad_packets += 1;
                self.conceal(samples);
            }
        }
        self.drain()
    }

    /// Encodes what is buffered, padded with silence, and pushes the encoder's delayed samples
    /// out: call once at the end of a stream so its last moments are heard.
    pub fn flush(&mut self) -> Result<Vec<AudioFrame>, TranscodeError> {
        if self.anchor.is_none() {
            return Ok(Vec::new());
        }
        let frame = FRAME_SAMPLES as i64;
        let tail = self.fifo.len() as i64 / self.channels as i64 + i64::from(self.encoder.delay());
        let padded = (tail + frame - 1) / frame * frame;
        let silence = padded - self.fifo.len() as i64 / self.channels as i64;
        self.fifo
            .resize(self.fifo.len() + silence as usize * self.channels, 0);
        self.fed += silence;
        self.drain()
    }

    fn decode(&mut self, data: &[u8]) -> Result<usize, opus_pure::Error> {
        self.decoder
            .decode_s16(data, MAX_PACKET_SAMPLES as usize, &mut self.scratch)
    }

    fn recover_fec(&mut self, data: &[u8], samples: i64) {
        match self
            .decoder
            .decode_fec_s16(data, samples as usize, &mut self.scratch)
        {
            Ok(n) => {
                self.stats.fec_samples += n as u64;
                self.append(n);
            }
            Err(_) => self.silence(samples),
        }
    }

    /// Fills `samples` (a multiple of 2.5 ms) with the decoder's loss concealment, or silence if
    /// it has nothing to offer.
    fn conceal(&mut self, samples: i64) {
        let mut left = samples;
        while left >= STEP_SAMPLES {
            let chunk = left.min(PLC_CHUNK_SAMPLES);
            match self
                .decoder
                .decode_s16(&[], chunk as usize, &mut self.scratch)
            {
                Ok(n) if n > 0 => {
                    self.stats.concealed_samples += n as u64;
                    self.append(n);
                    left -= n as i64;
                }
                _ => {
                    self.silence(left);
                    return;
                }
            }
        }
    }

    fn silence(&mut self, samples: i64) {
        let samples = samples.max(0);
        self.stats.concealed_samples += samples as u64;
        self.fifo
            .resize(self.fifo.len() + samples as usize * self.channels, 0);
        self.fed += samples;
    }

    fn append(&mut self, samples: usize) {
        let n = (samples * self.channels).min(self.scratch.len());
        self.fifo
            .extend_from_slice(self.scratch.get(..n).unwrap_or_default());
        self.fed += (n / self.channels) as i64;
    }

    fn drain(&mut self) -> Result<Vec<AudioFrame>, TranscodeError> {
        let anchor = self.anchor.unwrap_or_default();
        let frame_len = FRAME_SAMPLES * self.channels;
        let mut out = Vec::with_capacity(self.fifo.len() / frame_len);
        let mut done = 0;
        while let Some(pcm) = self.fifo.get(done..done + frame_len) {
            let data = self.encoder.encode(pcm)?;
            let position = self.encoded * FRAME_SAMPLES as i64 - i64::from(self.encoder.delay());
            out.push(AudioFrame {
                pts: anchor.saturating_add(samples_to_ticks(position)),
                duration: FRAME_TICKS,
                data,
            });
            self.encoded += 1;
            done += frame_len;
        }
        self.fifo.drain(..done);
        self.stats.aac_frames += out.len() as u64;
        Ok(out)
    }
}

/// 48 kHz samples to 90 kHz ticks (15/8 each; exact for multiples of 8 samples).
fn samples_to_ticks(samples: i64) -> i64 {
    samples.saturating_mul(15).div_euclid(8)
}

/// 90 kHz ticks to the nearest 48 kHz sample.
fn ticks_to_samples(ticks: i64) -> i64 {
    ticks.saturating_mul(8).saturating_add(7).div_euclid(15)
}

fn round_down(samples: i64) -> i64 {
    samples.div_euclid(STEP_SAMPLES) * STEP_SAMPLES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::aac::adts_header;
    use crate::transcode::DEFAULT_BITRATE;
    use bridge_proto::testdata::{self, ogg_opus, s16le, snr_db};

    const PTS0: i64 = 900_000;

    /// The same packets through our decoder and through ffmpeg 9's libopus decoder (stored
    /// output): three files covering CELT (stereo music), hybrid and SILK (mono voice).
    #[test]
    fn opus_decoder_matches_libopus() {
        for (name, min_db) in [
            ("opus-music-stereo-96k", 60.0),
            ("opus-voice-mono-20k-hybrid", 60.0),
            ("opus-voice-mono-10k-silk", 60.0),
        ] {
            let ogg = ogg_opus(&format!("{name}.ogg"), PTS0);
            let reference = s16le(&testdata::read(&format!("{name}.ffmpeg.s16le")));
            let mut t = OpusToAac::new(ogg.channels, DEFAULT_BITRATE).unwrap();
            let mut pcm = Vec::new();
            for f in &ogg.frames {
                let n = t.decode(&f.data).unwrap();
                pcm.extend_from_slice(&t.scratch[..n * t.channels]);
            }
            // ffmpeg drops the encoder's pre-skip and trims the end to the last granule position.
            let ours = &pcm[ogg.pre_skip * t.channels..];
            assert!(ours.len() >= reference.len());
            let snr = snr_db(&reference, ours);
            println!(
                "{name}: SNR against libopus {snr:.1} dB over {} samples",
                reference.len()
            );
            assert!(snr > min_db, "{name}: {snr:.1} dB");
        }
    }

    fn transcode_all(t: &mut OpusToAac, frames: &[AudioFrame]) -> Vec<AudioFrame> {
        let mut out = Vec::new();
        for f in frames {
            out.extend(t.push(f).unwrap());
        }
        out.extend(t.flush().unwrap());
        out
    }

    fn assert_continuous(out: &[AudioFrame], first: i64) {
        assert_eq!(out[0].pts, first);
        for pair in out.windows(2) {
            assert_eq!(pair[1].pts - pair[0].pts, 1920, "at pts {}", pair[0].pts);
            assert_eq!(pair[0].duration, 1920);
        }
    }

    #[test]
    fn timing_is_continuous_and_pays_the_encoder_delay() {
        let ogg = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        assert_eq!(&t.audio_specific_config()[..], &[0x11, 0x90]);
        let out = transcode_all(&mut t, &ogg.frames);
        // 2048 samples of encoder delay at 48 kHz = 3840 ticks before the first input.
        assert_continuous(&out, PTS0 - 3840);
        let input = ogg.frames.len() as i64 * 960;
        assert!(out.len() as i64 * 1024 >= input + 2048);
        let stats = t.stats();
        assert_eq!(stats.packets, ogg.frames.len() as u64);
        assert_eq!(stats.aac_frames, out.len() as u64);
        assert_eq!(stats.bad_packets + stats.late_packets + stats.resyncs, 0);
        assert_eq!(stats.concealed_samples, 0);
    }

    /// Encodes the music file, wraps it in ADTS, and has ffmpeg decode it: no complaint, and the
    /// decoded audio lines up with the Opus decode 2048 samples later (the delay the pts carry).
    #[test]
    fn aac_decodes_with_ffmpeg() {
        let Some(ffmpeg) = testdata::ffmpeg() else {
            println!("SKIPPED aac_decodes_with_ffmpeg: no ffmpeg (set FFMPEG or put it on PATH)");
            return;
        };
        let ogg = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        let out = transcode_all(&mut t, &ogg.frames);
        let mut adts = Vec::new();
        for f in &out {
            adts.extend_from_slice(&adts_header(2, f.data.len()).unwrap());
            adts.extend_from_slice(&f.data);
        }
        let aac = testdata::scratch("music.aac");
        let pcm = testdata::scratch("music-aac.s16le");
        std::fs::write(&aac, &adts).unwrap();
        let aac = aac.to_str().unwrap();
        let (stdout, stderr) =
            testdata::run(&ffmpeg, &["-v", "error", "-i", aac, "-f", "null", "-"]);
        assert_eq!(
            (stdout.as_str(), stderr.as_str()),
            ("", ""),
            "ffmpeg complained"
        );
        let pcm_path = pcm.to_str().unwrap();
        testdata::run(
            &ffmpeg,
            &[
                "-v",
                "error",
                "-y",
                "-i",
                aac,
                "-f",
                "s16le",
                "-c:a",
                "pcm_s16le",
                pcm_path,
            ],
        );
        let decoded = s16le(&std::fs::read(&pcm).unwrap());
        let reference = s16le(&testdata::read("opus-music-stereo-96k.ffmpeg.s16le"));
        // Sample n of the Opus decode (after pre-skip) went in at position pre_skip + n and comes
        // out of the AAC decoder at pre_skip + n + 2048.
        let offset = (ogg.pre_skip + 2048) * 2;
        let snr = snr_db(&reference, &decoded[offset..]);
        println!("AAC 128 kb/s round trip: SNR {snr:.1} dB against the Opus decode");
        assert!(snr > 15.0, "{snr:.1} dB");
        // One sample off either way must be worse, or the alignment proves nothing.
        assert!(snr > snr_db(&reference, &decoded[offset + 2..]) + 3.0);
        assert!(snr > snr_db(&reference, &decoded[offset - 2..]) + 3.0);
    }

    #[test]
    fn lost_packets_are_concealed_and_timing_holds() {
        let ogg = ogg_opus("opus-voice-mono-20k-hybrid.ogg", PTS0);
        let mut t = OpusToAac::new(1, 64_000).unwrap();
        // Lose every fifth packet, and two in a row once (12, 13).
        let kept: Vec<AudioFrame> = ogg
            .frames
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 5 != 3 && *i != 12)
            .map(|(_, f)| f.clone())
            .collect();
        let out = transcode_all(&mut t, &kept);
        assert_continuous(&out, PTS0 - 3840);
        let stats = t.stats();
        let lost = (ogg.frames.len() - kept.len()) as u64 * 960;
        assert_eq!(
            stats.concealed_samples + stats.fec_samples,
            lost,
            "{stats:?}"
        );
        assert!(stats.fec_samples > 0, "the FEC path was taken: {stats:?}");
        let samples = kept.len() as i64 * 960 + lost as i64;
        assert!(out.len() as i64 * 1024 >= samples + 2048);
    }

    #[test]
    fn garbage_never_panics() {
        let ogg = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut pts = PTS0;
        let mut frames = 0;
        for i in 0..400 {
            let data: Bytes = match i % 4 {
                0 => ogg.frames[i % ogg.frames.len()].data.clone(),
                1 => Bytes::new(),
                _ => (0..rnd() % 1500).map(|_| rnd() as u8).collect(),
            };
            let duration = [0, 1800, -5, i64::MAX][(rnd() % 4) as usize];
            frames += t
                .push(&AudioFrame {
                    pts,
                    duration,
                    data,
                })
                .unwrap()
                .len();
            pts += 1800;
        }
        // Timestamps from nowhere must not overflow either.
        for pts in [i64::MAX, i64::MIN, 0, i64::MAX / 2] {
            let data = ogg.frames[0].data.clone();
            t.push(&AudioFrame {
                pts,
                duration: 1800,
                data,
            })
            .unwrap();
        }
        // Random bytes often make a valid packet, of any length up to 120 ms; those that do not
        // are concealed, and the audio they push ahead makes the next few late.
        let stats = t.stats();
        assert_eq!(stats.packets, 404);
        assert!(frames > 300, "{frames}");
        assert!(
            stats.bad_packets > 50 && stats.late_packets > 50,
            "{stats:?}"
        );
    }

    #[test]
    fn duplicates_are_dropped_and_long_gaps_resync() {
        let ogg = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        let mut out = Vec::new();
        for f in &ogg.frames[..20] {
            out.extend(t.push(f).unwrap());
            // A retransmitted duplicate right behind it.
            assert!(t.push(f).unwrap().is_empty());
        }
        assert_eq!(t.stats().late_packets, 20);
        let before = out.len();
        // Five seconds of nothing, then the stream goes on.
        for f in &ogg.frames[20..] {
            let mut f = f.clone();
            f.pts += 5 * 90_000;
            out.extend(t.push(&f).unwrap());
        }
        assert_eq!(t.stats().resyncs, 1);
        assert_eq!(t.stats().concealed_samples, 0);
        assert_continuous(&out[..before], PTS0 - 3840);
        let jumps: Vec<i64> = out
            .windows(2)
            .map(|w| w[1].pts - w[0].pts)
            .filter(|&d| d != 1920)
            .collect();
        assert_eq!(jumps.len(), 1);
        assert!((jumps[0] - 1920 - 5 * 90_000).abs() <= 1, "{jumps:?}");
        // The timeline goes back ten seconds: a new run, not a wall of late packets.
        let before = out.len();
        for f in &ogg.frames[..10] {
            let mut f = f.clone();
            f.pts -= 10 * 90_000;
            out.extend(t.push(&f).unwrap());
        }
        assert_eq!(t.stats().resyncs, 2);
        assert_eq!(t.stats().late_packets, 20);
        assert!(out.len() > before);
        assert!(out[before].pts < out[before - 1].pts);
    }

    #[test]
    fn mono_packets_into_stereo_and_back() {
        let mono = ogg_opus("opus-voice-mono-10k-silk.ogg", PTS0);
        let stereo = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        assert_eq!(channels_for(&mono.frames[0].data), 1);
        assert_eq!(channels_for(&stereo.frames[0].data), 2);
        assert_eq!(channels_for(&[]), 1);
        let mut up = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        assert!(!transcode_all(&mut up, &mono.frames).is_empty());
        let mut down = OpusToAac::new(1, DEFAULT_BITRATE).unwrap();
        assert!(!transcode_all(&mut down, &stereo.frames).is_empty());
        assert_eq!(up.stats().bad_packets + down.stats().bad_packets, 0);
    }

    #[test]
    fn is_send() {
        fn send<T: Send>() {}
        send::<OpusToAac>();
    }
}
