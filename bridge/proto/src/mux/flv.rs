//! FLV tag bodies for RTMP: H.264 (AVC sequence header and NALU tags), AAC, and Opus in
//! Enhanced RTMP v2 audio tags.
//!
//! RTMP carries FLV tag *bodies*: a video or audio message is exactly what follows the 11-byte
//! tag header in an `.flv` file (Adobe FLV spec v10.1 annex E.4.2/E.4.3; Enhanced RTMP v2,
//! veovera). [`file_header`] and [`write_tag`] add the file framing for recordings and tests.
//!
//! Times come in as 90 kHz session-timeline ticks and leave as RTMP's 32-bit milliseconds
//! ([`RtmpClock`]), relative to the first tag of the output.
//!
//! Copying: `rml_rtmp` takes one contiguous `Bytes` per message (and copies it into chunks), so
//! each tag body is built with one copy into a buffer sized exactly beforehand; NAL units are not
//! copied anywhere else.

use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::sessions::StreamMetadata;

use crate::media::h264::avcc::{self, AvccError};
use crate::media::h264::nal::{NAL_IDR, NAL_PPS, NAL_SPS, is_framing, nal_type};
use crate::media::h264::params::ParameterSets;
use crate::media::h264::sps::{self, Sps};
use crate::media::unit::{AudioFrame, VideoUnit};

/// FLV tag type of audio.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data (onMetaData).
pub const TAG_SCRIPT: u8 = 18;
/// FLV video CodecID of AVC.
pub const CODEC_AVC: u8 = 7;
/// FLV audio SoundFormat of AAC.
pub const SOUND_AAC: u8 = 10;
/// Enhanced RTMP SoundFormat announcing an extended header with a FourCC.
pub const SOUND_EX_HEADER: u8 = 9;
/// Enhanced RTMP FourCC of Opus, also its `audiocodecid` in onMetaData.
pub const FOURCC_OPUS: [u8; 4] = *b"Opus";
/// Largest tag body: RTMP message and FLV tag lengths are 24-bit.
pub const MAX_BODY: usize = (1 << 24) - 1;

/// AVCPacketType values (FLV spec E.4.3.1).
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
const AVC_END_OF_SEQUENCE: u8 = 2;
/// FLV video FrameType values.
const FRAME_KEY: u8 = 1;
const FRAME_INTER: u8 = 2;
/// AACPacketType values.
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;
/// Enhanced RTMP AudioPacketType values.
const AUDIO_SEQUENCE_START: u8 = 0;
const AUDIO_CODED_FRAMES: u8 = 1;
/// Signed 24-bit range of CompositionTime.
const CTS_MAX: i64 = (1 << 23) - 1;

/// Why a tag could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The parameter sets make no AVCDecoderConfigurationRecord.
    #[error(transparent)]
    Avcc(#[from] AvccError),
    /// A tag body longer than RTMP's 24-bit message length.
    #[error("tag body of {0} bytes (RTMP and FLV allow at most 16777215)")]
    TooLong(usize),
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// An audio message (FLV tag type 8).
    Audio,
    /// A video message (FLV tag type 9).
    Video,
}

impl TagKind {
    /// The FLV tag type byte.
    pub fn tag_type(self) -> u8 {
        match self {
            Self::Audio => TAG_AUDIO,
            Self::Video => TAG_VIDEO,
        }
    }
}

/// One RTMP audio or video message: an FLV tag body and its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Audio or video.
    pub kind: TagKind,
    /// RTMP timestamp: milliseconds since the output's first tag, wrapping at 2^32.
    pub timestamp: u32,
    /// The tag body (what `rml_rtmp`'s `publish_video_data`/`publish_audio_data` take).
    pub body: Bytes,
    /// A sequence header (decoder configuration): never to be dropped.
    pub config: bool,
    /// Video FrameType 1: a keyframe (a place a player can start) or an AVC sequence header.
    pub keyframe: bool,
}

/// Turns session-timeline ticks into RTMP milliseconds relative to the first time it is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtmpClock {
    origin: Option<i64>,
}

impl RtmpClock {
    /// A clock whose origin is the first time it converts.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock with a known origin.
    pub fn with_origin(origin: i64) -> Self {
        Self {
            origin: Some(origin),
        }
    }

    /// The origin, once set.
    pub fn origin(&self) -> Option<i64> {
        self.origin
    }

    /// Milliseconds from the origin to `ticks` (90 kHz), rounded to nearest; negative before
    /// the origin. Sets the origin on first use.
    pub fn ms(&mut self, ticks: i64) -> i64 {
        let origin = *self.origin.get_or_insert(ticks);
        ticks
            .saturating_sub(origin)
            .saturating_add(45)
            .div_euclid(90)
    }

    /// The 32-bit RTMP timestamp of a millisecond count: negative clamps to 0, and past 2^32 it
    /// wraps, as RTMP timestamps do (after 49.7 days).
    pub fn timestamp(ms: i64) -> u32 {
        // rem_euclid keeps the value in 0..2^32, so the cast is exact.
        ms.max(0).rem_euclid(1 << 32) as u32
    }
}

/// The video tag body of an AVC sequence header: keyframe, AVC, AVCPacketType 0, composition
/// time 0, then the AVCDecoderConfigurationRecord (the one [`avcc`] writes for MP4 too).
pub fn avc_sequence_header(sps_list: &[Bytes], pps_list: &[Bytes]) -> Result<Bytes, FlvError> {
    let sets_len: usize = sps_list.iter().chain(pps_list).map(|s| 2 + s.len()).sum();
    let mut out = BytesMut::with_capacity(5 + 7 + sets_len + 4);
    out.put_slice(&[(FRAME_KEY << 4) | CODEC_AVC, AVC_SEQUENCE_HEADER, 0, 0, 0]);
    avcc::write(&mut out, sps_list, pps_list)?;
    Ok(out.freeze())
}

/// The video tag body ending an AVC sequence (sent before closing a stream cleanly).
pub fn avc_end_of_sequence() -> Bytes {
    Bytes::from_static(&[(FRAME_KEY << 4) | CODEC_AVC, AVC_END_OF_SEQUENCE, 0, 0, 0])
}

/// The video tag body of one picture: frame type, AVC, AVCPacketType 1, the composition time
/// offset (pts - dts, ms, signed 24-bit, clamped), then each NAL unit with a 4-byte big-endian
/// length. NAL units are taken as given; [`FlvVideo`] leaves out those that do not belong.
pub fn avc_nalu_body<'a>(
    keyframe: bool,
    composition_ms: i64,
    nalus: impl Iterator<Item = &'a Bytes> + Clone,
) -> Result<Bytes, FlvError> {
    let len = nalus
        .clone()
        .fold(5usize, |n, nal| n.saturating_add(4 + nal.len()));
    if len > MAX_BODY {
        return Err(FlvError::TooLong(len));
    }
    let frame_type = if keyframe { FRAME_KEY } else { FRAME_INTER };
    let cts = composition_ms.clamp(-CTS_MAX - 1, CTS_MAX) as i32;
    let mut out = BytesMut::with_capacity(len);
    out.put_u8((frame_type << 4) | CODEC_AVC);
    out.put_u8(AVC_NALU);
    // Two's complement in 24 bits: the low three bytes of the 32-bit value.
    out.put_slice(&cts.to_be_bytes()[1..]);
    for nal in nalus {
        // Each NAL is shorter than the whole body, checked against 24 bits above.
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    Ok(out.freeze())
}

/// The first byte of every AAC audio tag: AAC, "44 kHz", 16-bit, "stereo". The FLV spec fixes
/// these for AAC whatever the stream is; the decoder reads the AudioSpecificConfig instead.
const AAC_FLAGS: u8 = (SOUND_AAC << 4) | (3 << 2) | (1 << 1) | 1;

/// The audio tag body of an AAC sequence header: the AudioSpecificConfig.
pub fn aac_sequence_header(audio_specific_config: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + audio_specific_config.len());
    out.put_slice(&[AAC_FLAGS, AAC_SEQUENCE_HEADER]);
    out.put_slice(audio_specific_config);
    out.freeze()
}

/// The audio tag body of one raw AAC frame (no ADTS header).
pub fn aac_raw(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + frame.len());
    out.put_slice(&[AAC_FLAGS, AAC_RAW]);
    out.put_slice(frame);
    out.freeze()
}

/// The Opus identification header (RFC 7845 §5.1) for a WebRTC stream: version 1, the channel
/// count, pre-skip 0 (the RTP timestamps already place every sample), input rate 48 kHz, gain
/// 0, channel mapping family 0 (mono or stereo).
pub fn opus_head(channels: u8) -> [u8; 19] {
    let mut head = [0u8; 19];
    head[..8].copy_from_slice(b"OpusHead");
    head[8] = 1;
    head[9] = channels;
    head[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    head
}

/// Enhanced RTMP audio body: ExHeader SoundFormat, the packet type, the FourCC, then `payload`.
fn ex_audio(packet_type: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8((SOUND_EX_HEADER << 4) | packet_type);
    out.put_slice(&FOURCC_OPUS);
    out.put_slice(payload);
    out.freeze()
}

/// The Enhanced RTMP audio tag body starting an Opus sequence (AudioPacketType SequenceStart,
/// FourCC `Opus`, the OpusHead).
pub fn opus_sequence_start(channels: u8) -> Bytes {
    ex_audio(AUDIO_SEQUENCE_START, &opus_head(channels))
}

/// The Enhanced RTMP audio tag body of one Opus packet (AudioPacketType CodedFrames).
pub fn opus_coded_frames(packet: &[u8]) -> Bytes {
    ex_audio(AUDIO_CODED_FRAMES, packet)
}

/// Counters of a video muxer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlvVideoStats {
    /// Picture tags produced.
    pub frames: u64,
    /// Sequence headers produced.
    pub sequence_headers: u64,
    /// Pictures left out while waiting for parameter sets and a keyframe.
    pub skipped: u64,
}

/// H.264 units to FLV video tags: keeps the current SPS and PPS, sends a sequence header before
/// the first picture and again whenever they change, starts at a keyframe, and leaves parameter
/// sets, delimiters and filler out of the pictures (they are in the sequence header, or
/// meaningless in FLV).
#[derive(Debug, Default)]
pub struct FlvVideo {
    params: ParameterSets,
    parsed: Option<Sps>,
    configured: bool,
    started: bool,
    stats: FlvVideoStats,
}

impl FlvVideo {
    /// A muxer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> FlvVideoStats {
        self.stats
    }

    /// The current SPS, parsed (for onMetaData width and height).
    pub fn sps(&self) -> Option<&Sps> {
        self.parsed.as_ref()
    }

    /// Tags for one unit: zero (still waiting), one, or two (a new sequence header first). An
    /// error leaves the previous parameter sets in force.
    pub fn push(
        &mut self,
        unit: &VideoUnit,
        clock: &mut RtmpClock,
    ) -> Result<Vec<FlvTag>, FlvError> {
        let mut tags = Vec::new();
        if let Some(next) = self.params.changed_by(&unit.nalus) {
            if next.is_complete() {
                let body = avc_sequence_header(next.sps(), next.pps())?;
                self.parsed = next.sps().first().and_then(|s| sps::parse(s).ok());
                tags.push(FlvTag {
                    kind: TagKind::Video,
                    timestamp: RtmpClock::timestamp(clock.ms(unit.dts)),
                    body,
                    config: true,
                    keyframe: true,
                });
                self.configured = true;
                self.stats.sequence_headers += 1;
            }
            self.params = next;
        }
        let keyframe = unit.keyframe || unit.nalus.iter().any(|n| nal_type(n) == Some(NAL_IDR));
        if !self.configured || !(self.started || keyframe) {
            self.stats.skipped += 1;
            return Ok(tags);
        }
        // Parameter sets are in the sequence header (every one in the unit is in force now).
        let picture = unit.nalus.iter().filter(|n| {
            nal_type(n).is_some_and(|t| !is_framing(t) && !matches!(t, NAL_SPS | NAL_PPS))
        });
        if picture.clone().next().is_none() {
            return Ok(tags);
        }
        let dts = clock.ms(unit.dts);
        let body = avc_nalu_body(keyframe, clock.ms(unit.pts) - dts, picture)?;
        tags.push(FlvTag {
            kind: TagKind::Video,
            timestamp: RtmpClock::timestamp(dts),
            body,
            config: false,
            keyframe,
        });
        self.started = true;
        self.stats.frames += 1;
        Ok(tags)
    }
}

/// The audio codec of an FLV output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioCodec {
    /// AAC (legacy FLV), with its AudioSpecificConfig.
    Aac {
        /// The AudioSpecificConfig (2 bytes for AAC-LC).
        audio_specific_config: Bytes,
    },
    /// Opus in Enhanced RTMP v2 audio tags (for servers that announce it).
    Opus {
        /// 1 or 2.
        channels: u8,
    },
}

impl AudioCodec {
    /// Channels, for onMetaData (read from the AudioSpecificConfig for AAC).
    pub fn channels(&self) -> u8 {
        match self {
            Self::Aac {
                audio_specific_config,
            } => audio_specific_config.get(1).map_or(2, |b| (b >> 3) & 0x0f),
            Self::Opus { channels } => *channels,
        }
    }
}

/// Counters of an audio muxer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlvAudioStats {
    /// Frame tags produced.
    pub frames: u64,
    /// Frames dropped for playing before the output's first tag.
    pub early: u64,
}

/// Audio frames to FLV audio tags: a sequence header before the first frame, then one tag per
/// frame. Frames timed before the output's origin are dropped: a player would play them
/// back to back with the rest, and the audio would run late against the video.
#[derive(Debug)]
pub struct FlvAudio {
    codec: AudioCodec,
    configured: bool,
    stats: FlvAudioStats,
}

impl FlvAudio {
    /// A muxer for `codec`.
    pub fn new(codec: AudioCodec) -> Self {
        Self {
            codec,
            configured: false,
            stats: FlvAudioStats::default(),
        }
    }

    /// The codec.
    pub fn codec(&self) -> &AudioCodec {
        &self.codec
    }

    /// Counters so far.
    pub fn stats(&self) -> FlvAudioStats {
        self.stats
    }

    /// Tags for one frame (an AAC frame or an Opus packet, as the codec says): none (empty or
    /// early), one, or two (the sequence header first).
    pub fn push(&mut self, frame: &AudioFrame, clock: &mut RtmpClock) -> Vec<FlvTag> {
        // An empty audio message means "silence" to RTMP players; there is nothing to send.
        if frame.data.is_empty() || frame.data.len() > MAX_BODY - 5 {
            return Vec::new();
        }
        let ms = clock.ms(frame.pts);
        if ms < 0 {
            self.stats.early += 1;
            return Vec::new();
        }
        let timestamp = RtmpClock::timestamp(ms);
        let mut tags = Vec::with_capacity(2);
        if !self.configured {
            let body = match &self.codec {
                AudioCodec::Aac {
                    audio_specific_config,
                } => aac_sequence_header(audio_specific_config),
                AudioCodec::Opus { channels } => opus_sequence_start(*channels),
            };
            tags.push(FlvTag {
                kind: TagKind::Audio,
                timestamp,
                body,
                config: true,
                keyframe: false,
            });
            self.configured = true;
        }
        let body = match &self.codec {
            AudioCodec::Aac { .. } => aac_raw(&frame.data),
            AudioCodec::Opus { .. } => opus_coded_frames(&frame.data),
        };
        tags.push(FlvTag {
            kind: TagKind::Audio,
            timestamp,
            body,
            config: false,
            keyframe: false,
        });
        self.stats.frames += 1;
        tags
    }
}

/// One FLV output: video and (optionally) audio sharing one clock, whose origin is the first
/// tag produced.
#[derive(Debug)]
pub struct FlvMuxer {
    clock: RtmpClock,
    video: FlvVideo,
    audio: Option<FlvAudio>,
}

impl FlvMuxer {
    /// A muxer for H.264 and, if given, `audio`.
    pub fn new(audio: Option<AudioCodec>) -> Self {
        Self {
            clock: RtmpClock::new(),
            video: FlvVideo::new(),
            audio: audio.map(FlvAudio::new),
        }
    }

    /// Starts over on a new connection: sequence headers are sent again and video waits for
    /// the next keyframe, while the clock keeps its origin so timestamps stay monotonic.
    pub fn restart(&mut self) {
        self.video = FlvVideo::new();
        self.audio = self.audio.take().map(|a| FlvAudio::new(a.codec().clone()));
    }

    /// The video half.
    pub fn video_muxer(&self) -> &FlvVideo {
        &self.video
    }

    /// The audio half.
    pub fn audio_muxer(&self) -> Option<&FlvAudio> {
        self.audio.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &RtmpClock {
        &self.clock
    }

    /// Tags for a video unit (see [`FlvVideo::push`]). Nothing is sent, and the clock does not
    /// start, until the first unit with parameter sets and a keyframe.
    pub fn video(&mut self, unit: &VideoUnit) -> Result<Vec<FlvTag>, FlvError> {
        self.video.push(unit, &mut self.clock)
    }

    /// Tags for an audio frame (see [`FlvAudio::push`]); none without an audio codec.
    pub fn audio(&mut self, frame: &AudioFrame) -> Vec<FlvTag> {
        match &mut self.audio {
            Some(audio) => audio.push(frame, &mut self.clock),
            None => Vec::new(),
        }
    }

    /// The onMetaData to send after publishing starts: what is known so far (picture size once
    /// an SPS was seen). Opus is announced by its FourCC, as Enhanced RTMP says.
    pub fn metadata(&self) -> StreamMetadata {
        let mut meta = StreamMetadata::new();
        meta.video_codec_id = Some(u32::from(CODEC_AVC));
        if let Some(sps) = self.video.sps() {
            meta.video_width = Some(sps.width);
            meta.video_height = Some(sps.height);
        }
        if let Some(audio) = &self.audio {
            let channels = audio.codec().channels();
            meta.audio_codec_id = Some(match audio.codec() {
                AudioCodec::Aac { .. } => u32::from(SOUND_AAC),
                AudioCodec::Opus { .. } => u32::from_be_bytes(FOURCC_OPUS),
            });
            meta.audio_sample_rate = Some(48_000);
            meta.audio_channels = Some(u32::from(channels));
            meta.audio_is_stereo = Some(channels == 2);
        }
        meta.encoder = Some(concat!("whip-bridge/", env!("CARGO_PKG_VERSION")).to_owned());
        meta
    }
}

/// The 9-byte FLV file header and the first PreviousTagSize (0).
pub fn file_header(audio: bool, video: bool) -> [u8; 13] {
    let flags = (u8::from(audio) << 2) | u8::from(video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends one FLV file tag: the 11-byte header (type, 24-bit size, timestamp in 24 bits plus
/// an extension byte for the top 8, stream id 0), the body, and the PreviousTagSize after it.
pub fn write_tag(
    out: &mut Vec<u8>,
    tag_type: u8,
    timestamp: u32,
    body: &[u8],
) -> Result<(), FlvError> {
    if body.len() > MAX_BODY {
        return Err(FlvError::TooLong(body.len()));
    }
    // Checked above: fits in 24 bits.
    let size = (body.len() as u32).to_be_bytes();
    let ts = timestamp.to_be_bytes();
    out.reserve(11 + body.len() + 4);
    out.push(tag_type);
    out.extend_from_slice(&size[1..]);
    out.extend_from_slice(&ts[1..]);
    out.push(ts[0]);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{HIGH_PPS, HIGH_SPS, HIGH444_PPS, HIGH444_SPS, hex, video_units};

    const PTS0: i64 = 900_000;

    /// Sequence headers byte for byte against ffmpeg 9's FLV muxer (`-c copy -f flv`) on the
    /// same parameter sets: the test file (Baseline), and one-frame x264 High and High 4:4:4
    /// Predictive streams (64x64) whose SPS and PPS are inlined here.
    #[test]
    fn sequence_header_matches_ffmpeg() {
        let units = video_units(PTS0);
        let sets = ParameterSets::from_nalus(&units[0].nalus);
        assert_eq!(
            avc_sequence_header(sets.sps(), sets.pps()).unwrap(),
            hex(
                "1700000000 0142c01effe1 0019 6742c01eda0280bfe5c044000003000400000300f23c58ba80
                 01 0004 68ce3c80"
            )
        );
        let (high_sps, high_pps) = (hex(HIGH_SPS), hex(HIGH_PPS));
        assert_eq!(
            avc_sequence_header(&[high_sps], &[high_pps]).unwrap(),
            hex(
                "1700000000 0164000affe1 0018 6764000aacd94426c044000003000400000300f03c489658
                 01 0006 68ebe3cb22c0 fd f8 f8 00"
            )
        );
        let (h444_sps, h444_pps) = (hex(HIGH444_SPS), hex(HIGH444_PPS));
        assert_eq!(
            avc_sequence_header(&[h444_sps], &[h444_pps]).unwrap(),
            hex(
                "1700000000 01f4000affe1 0017 67f4000a919b2884d80880000003008000001e078912cb
                 01 0006 68ebe3c44844 ff f8 f8 00"
            )
        );
    }

    fn unit(pts: i64, dts: i64, keyframe: bool, nalus: &[&str]) -> VideoUnit {
        VideoUnit {
            pts,
            dts,
            keyframe,
            nalus: nalus.iter().map(|s| hex(s)).collect(),
        }
    }

    const SPS: &str = "6742c01eda0280bfe5c044000003000400000300f23c58ba80";
    const PPS: &str = "68ce3c80";

    #[test]
    fn nalu_tag_fields() {
        let nals = [hex("0605aa"), hex("658880"), hex("65c0")];
        let body = avc_nalu_body(true, 0, nals.iter()).unwrap();
        assert_eq!(
            body,
            hex("17 01 000000 00000003 0605aa 00000003 658880 00000002 65c0")
        );
        let body = avc_nalu_body(false, 67, nals[..1].iter()).unwrap();
        assert_eq!(
            &body[..5],
            &[0x27, 0x01, 0, 0, 67],
            "inter frame, cts 67 ms"
        );
        let body = avc_nalu_body(false, -33, nals[..1].iter()).unwrap();
        assert_eq!(
            &body[2..5],
            &[0xff, 0xff, 0xdf],
            "cts -33 in 24-bit two's complement"
        );
        let body = avc_nalu_body(false, 1 << 30, nals[..1].iter()).unwrap();
        assert_eq!(&body[2..5], &[0x7f, 0xff, 0xff], "clamped");
        let body = avc_nalu_body(false, -(1 << 30), nals[..1].iter()).unwrap();
        assert_eq!(&body[2..5], &[0x80, 0x00, 0x00], "clamped");
        assert_eq!(avc_end_of_sequence(), hex("17 02 000000"));
    }

    #[test]
    fn video_waits_for_parameter_sets_and_a_keyframe() {
        let mut clock = RtmpClock::new();
        let mut v = FlvVideo::new();
        // A picture before anything is known: nothing, and the clock has not started.
        assert!(
            v.push(&unit(0, 0, false, &["4188"]), &mut clock)
                .unwrap()
                .is_empty()
        );
        // An IDR without parameter sets: still nothing.
        assert!(
            v.push(&unit(3000, 3000, true, &["6588"]), &mut clock)
                .unwrap()
                .is_empty()
        );
        assert_eq!(clock.origin(), None);
        // AUD, SPS, PPS, SEI, IDR: a sequence header, then the picture without AUD/SPS/PPS.
        let tags = v
            .push(
                &unit(6000, 6000, true, &["0910", SPS, PPS, "0605aa", "658880"]),
                &mut clock,
            )
            .unwrap();
        assert_eq!(tags.len(), 2);
        assert!(tags[0].config && tags[0].keyframe && tags[0].kind == TagKind::Video);
        assert_eq!(tags[0].body[..2], [0x17, 0x00]);
        assert_eq!(
            tags[1].body,
            hex("17 01 000000 00000003 0605aa 00000003 658880")
        );
        assert!(!tags[1].config && tags[1].keyframe);
        assert_eq!((tags[0].timestamp, tags[1].timestamp), (0, 0));
        assert_eq!(clock.origin(), Some(6000));
        assert_eq!(v.sps().map(|s| (s.width, s.height)), Some((640, 360)));
        // Inter frame with a 2-frame composition offset (pts 67 ms after dts).
        let tags = v
            .push(&unit(15000, 9000, false, &["0910", "419a"]), &mut clock)
            .unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].timestamp, 33);
        assert_eq!(tags[0].body, hex("27 01 000043 00000002 419a"));
        // The same parameter sets again: no new header.
        let tags = v
            .push(&unit(12000, 12000, true, &[SPS, PPS, "6588"]), &mut clock)
            .unwrap();
        assert_eq!(tags.len(), 1);
        // A new PPS alone: a new header carrying the old SPS and the new PPS.
        let tags = v
            .push(&unit(15000, 15000, true, &["68ce3c81", "6588"]), &mut clock)
            .unwrap();
        assert_eq!(tags.len(), 2);
        assert!(tags[0].body.ends_with(&hex("01 0004 68ce3c81")));
        assert!(tags[0].body.windows(25).any(|w| w == hex(SPS)));
        // A broken SPS is an error, and the previous sets stay in force.
        assert!(
            v.push(&unit(18000, 18000, true, &["6742", "6588"]), &mut clock)
                .is_err()
        );
        let tags = v
            .push(&unit(21000, 21000, false, &["419a"]), &mut clock)
            .unwrap();
        assert_eq!(tags.len(), 1);
        // A unit of nothing but parameter sets and delimiters makes no picture tag.
        assert!(
            v.push(&unit(24000, 24000, false, &["0910", ""]), &mut clock)
                .unwrap()
                .is_empty()
        );
        let stats = v.stats();
        assert_eq!(
            (stats.frames, stats.sequence_headers, stats.skipped),
            (5, 2, 2)
        );
    }

    #[test]
    fn clock_rounds_clamps_and_wraps() {
        let mut c = RtmpClock::with_origin(PTS0);
        assert_eq!(c.ms(PTS0), 0);
        assert_eq!(c.ms(PTS0 + 3000), 33); // 33.3 ms
        assert_eq!(c.ms(PTS0 + 6000), 67); // 66.7 ms
        assert_eq!(c.ms(PTS0 + 45), 1, "half a millisecond rounds up");
        assert_eq!(c.ms(PTS0 + 44), 0);
        assert_eq!(c.ms(PTS0 - 90), -1);
        assert_eq!(RtmpClock::timestamp(-1), 0);
        assert_eq!(RtmpClock::timestamp((1 << 32) + 5), 5);
        assert_eq!(RtmpClock::timestamp(u32::MAX.into()), u32::MAX);
        assert_eq!(c.ms(i64::MAX), (i64::MAX - PTS0 + 45) / 90, "no overflow");
        assert_eq!(c.ms(i64::MIN), (i64::MIN + 45).div_euclid(90), "saturates");
        let mut fresh = RtmpClock::new();
        assert_eq!(fresh.ms(-5), 0);
        assert_eq!(fresh.origin(), Some(-5));
    }

    #[test]
    fn aac_tag_fields() {
        // SoundFormat 10, SoundRate 3 (44 kHz), SoundSize 1 (16-bit), SoundType 1 (stereo):
        // fixed for AAC by the FLV spec.
        assert_eq!(aac_sequence_header(&[0x11, 0x88]), hex("af 00 1188"));
        assert_eq!(aac_raw(&[1, 2, 3]), hex("af 01 010203"));
        let codec = AudioCodec::Aac {
            audio_specific_config: hex("1188"),
        };
        assert_eq!(codec.channels(), 1);
        let mut clock = RtmpClock::with_origin(PTS0);
        let mut a = FlvAudio::new(codec);
        let frame = |pts, data: &str| AudioFrame {
            pts,
            duration: 1920,
            data: hex(data),
        };
        // Before the origin: dropped, and no header spent on it.
        assert!(a.push(&frame(PTS0 - 1920, "21"), &mut clock).is_empty());
        assert!(a.push(&frame(PTS0, ""), &mut clock).is_empty());
        let tags = a.push(&frame(PTS0 + 1920, "2122"), &mut clock);
        assert_eq!(tags.len(), 2);
        assert!(tags[0].config && tags[0].kind == TagKind::Audio);
        assert_eq!(tags[0].body, hex("af00 1188"));
        assert_eq!(tags[1].body, hex("af01 2122"));
        assert_eq!((tags[0].timestamp, tags[1].timestamp), (21, 21));
        let tags = a.push(&frame(PTS0 + 3840, "23"), &mut clock);
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].timestamp, 43);
        assert_eq!(
            a.stats(),
            FlvAudioStats {
                frames: 2,
                early: 1
            }
        );
    }

    #[test]
    fn opus_enhanced_rtmp_tag_fields() {
        let head = opus_head(2);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[8], 1, "version");
        assert_eq!(head[9], 2, "channels");
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 0, "pre-skip");
        assert_eq!(
            u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
            48_000
        );
        assert_eq!(i16::from_le_bytes([head[16], head[17]]), 0, "output gain");
        assert_eq!(head[18], 0, "mapping family 0");
        // SoundFormat 9 (ExHeader) | AudioPacketType 0 (SequenceStart), FourCC, OpusHead.
        let start = opus_sequence_start(2);
        assert_eq!(start[0], 0x90);
        assert_eq!(&start[1..5], b"Opus");
        assert_eq!(&start[5..], &head);
        // AudioPacketType 1 (CodedFrames).
        assert_eq!(opus_coded_frames(&[0xfc, 1]), hex("91 4f707573 fc01"));
        assert_eq!(u32::from_be_bytes(FOURCC_OPUS), 0x4F70_7573);
    }

    #[test]
    fn metadata() {
        let mut m = FlvMuxer::new(Some(AudioCodec::Opus { channels: 2 }));
        let meta = m.metadata();
        assert_eq!(meta.video_codec_id, Some(7));
        assert_eq!(meta.video_width, None);
        assert_eq!(meta.audio_codec_id, Some(1_332_770_163));
        m.video(&unit(0, 0, true, &[SPS, PPS, "6588"])).unwrap();
        let meta = m.metadata();
        assert_eq!(
            (meta.video_width, meta.video_height),
            (Some(640), Some(360))
        );
        assert_eq!(meta.audio_is_stereo, Some(true));
        let m = FlvMuxer::new(Some(AudioCodec::Aac {
            audio_specific_config: hex("1190"),
        }));
        assert_eq!(m.metadata().audio_codec_id, Some(10));
        assert_eq!(m.metadata().audio_channels, Some(2));
    }

    #[test]
    fn file_framing() {
        assert_eq!(
            file_header(true, true),
            *b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
        );
        let mut out = Vec::new();
        write_tag(&mut out, TAG_VIDEO, 0x0123_4567, &[0xaa, 0xbb]).unwrap();
        assert_eq!(out, hex("09 000002 234567 01 000000 aabb 0000000d"));
    }
}
