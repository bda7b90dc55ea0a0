//! The clip itself: its H.264 checked for a loop (GOPs, parameter sets) and its audio for as
//! long a run, and the sources that play them in a loop.

use std::sync::LazyLock;

use bridge_proto::media::h264::NAL_PPS;
use bridge_proto::media::h264::sps::NAL_SPS;
use bridge_proto::media::ogg::OggError;
use bytes::Bytes;

use super::annexb::{START_CODE, access_units, annexb};
use super::ogg::opus_packets;
use super::stamp::{FrameStamp, now_us};
use super::{
    AUDIO_CLOCK_RATE, AUDIO_FRAME_MS, AUDIO_PACKET_SAMPLES, GOP_FRAMES, MAX_LAYERS,
    VIDEO_CLOCK_RATE, VIDEO_FPS, VIDEO_FRAME_TICKS, VIDEO_HEIGHT, VIDEO_WIDTH,
};

/// The clip's video: 2 s of x264 Constrained Baseline, 640x360, 30 fps, IDR every 30 frames.
static CLIP_H264: &[u8] = include_bytes!("../../data/clip-640x360-30fps-2s.h264");
/// The clip's audio: 2 s of Ogg Opus, 48 kHz stereo, 100 packets of 20 ms.
pub(super) static CLIP_OGG_OPUS: &[u8] = include_bytes!("../../data/clip-opus-48k-stereo-2s.opus");

/// The embedded clip, parsed at first use.
static EMBEDDED: LazyLock<Result<Clip, ClipError>> =
    LazyLock::new(|| Clip::parse(CLIP_H264, CLIP_OGG_OPUS));

/// The same pictures scaled down for simulcast layers (see `loadgen/data/README.md`), each the
/// fraction `num/den` of the full size, parsed at first use. The full size is [`EMBEDDED`].
static LAYERS: [ScaledClip; 3] = [
    ScaledClip {
        num: 2,
        den: 3,
        size: (426, 240),
        clip: LazyLock::new(|| {
            Clip::parse(
                include_bytes!("../../data/clip-426x240-30fps-2s.h264"),
                CLIP_OGG_OPUS,
            )
        }),
    },
    ScaledClip {
        num: 1,
        den: 2,
        size: (320, 180),
        clip: LazyLock::new(|| {
            Clip::parse(
                include_bytes!("../../data/clip-320x180-30fps-2s.h264"),
                CLIP_OGG_OPUS,
            )
        }),
    },
    ScaledClip {
        num: 1,
        den: 3,
        size: (212, 120),
        clip: LazyLock::new(|| {
            Clip::parse(
                include_bytes!("../../data/clip-212x120-30fps-2s.h264"),
                CLIP_OGG_OPUS,
            )
        }),
    },
];

/// A scaled copy of the embedded clip.
struct ScaledClip {
    /// Its size is `num/den` of the full size (a reduced fraction).
    num: u32,
    den: u32,
    /// Width and height, as its SPS says (the unit tests check).
    size: (u32, u32),
    clip: LazyLock<Result<Clip, ClipError>>,
}

/// Why the H.264 or the Ogg Opus of a clip cannot be played in a loop. Offsets are byte offsets
/// in the file; frames and packets count from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    /// The H.264 does not begin with a start code (only zero bytes may come before it).
    #[error("H.264: no start code at byte {offset}")]
    NoStartCode {
        /// The first byte that is neither a zero nor a start code.
        offset: usize,
    },
    /// A NAL unit is empty, or too short to say whether it begins a picture.
    #[error("H.264: the NAL unit at byte {offset} is truncated")]
    TruncatedNal {
        /// Where the NAL unit begins (after its start code).
        offset: usize,
    },
    /// A NAL unit has its `forbidden_zero_bit` set.
    #[error("H.264: the NAL unit at byte {offset} has forbidden_zero_bit set")]
    ForbiddenBit {
        /// Where the NAL unit begins (after its start code).
        offset: usize,
    },
    /// An access unit has no slice (e.g. the file ends with parameter sets).
    #[error("H.264: access unit {frame} has no slice")]
    NoSlice {
        /// The access unit.
        frame: usize,
    },
    /// The H.264 has no access unit at all.
    #[error("H.264: no access unit")]
    NoVideo,
    /// A frame is an IDR where none should be, or the reverse: the clip must have one exactly
    /// every [`GOP_FRAMES`] frames from frame 0, so that every loop starts with one.
    #[error(
        "H.264: frame {frame} is {}an IDR; the clip needs one exactly every {GOP_FRAMES} frames",
        if *.keyframe { "" } else { "not " }
    )]
    GopStructure {
        /// The frame.
        frame: usize,
        /// Whether it is an IDR.
        keyframe: bool,
    },
    /// The clip is not a whole number of GOPs.
    #[error("H.264: {frames} frames are not a whole number of {GOP_FRAMES}-frame GOPs")]
    PartialGop {
        /// Frames in the clip.
        frames: usize,
    },
    /// An IDR has no SPS and PPS in front of it, so a receiver starting there cannot decode.
    #[error("H.264: the IDR at frame {frame} has no SPS and PPS in front")]
    NoParameterSets {
        /// The frame.
        frame: usize,
    },
    /// The Ogg Opus file's pages do not hold one well-formed stream.
    #[error(transparent)]
    Ogg(#[from] OggError),
    /// The first packet is not an `OpusHead`.
    #[error("Ogg Opus: no OpusHead")]
    NoOpusHead,
    /// The `OpusHead` is too short, of an unknown major version, or not a single mono or
    /// stereo stream (channel mapping family 0), which is all RTP can carry as `opus/48000/2`.
    #[error("Ogg Opus: the OpusHead is malformed or not mapping family 0 with 1 or 2 channels")]
    BadOpusHead,
    /// The second packet is not an `OpusTags`.
    #[error("Ogg Opus: no OpusTags after the OpusHead")]
    NoOpusTags,
    /// An audio packet's TOC cannot be read (empty packet, or code 3 without a frame count).
    #[error("Opus: audio packet {packet} is malformed")]
    BadOpusPacket {
        /// The audio packet (headers not counted).
        packet: usize,
    },
    /// An audio packet does not last [`AUDIO_FRAME_MS`].
    #[error("Opus: audio packet {packet} lasts {samples} samples, not {AUDIO_PACKET_SAMPLES}")]
    OpusDuration {
        /// The audio packet (headers not counted).
        packet: usize,
        /// How long it lasts at 48 kHz.
        samples: u32,
    },
    /// The Ogg Opus has no audio packet.
    #[error("Ogg Opus: no audio packet")]
    NoAudio,
    /// No clip is committed for this simulcast layer: there are 1 to [`MAX_LAYERS`] layers,
    /// numbered from 0 (the full size).
    #[error("no clip for simulcast layer {layer} of {layers} (1 to {MAX_LAYERS} layers)")]
    NoLayer {
        /// The layer asked for.
        layer: u8,
        /// Of this many.
        layers: u8,
    },
    /// Video and audio do not last the same, so they would drift apart loop after loop.
    #[error("the video lasts {video_ms} ms but the audio {audio_ms} ms")]
    LengthMismatch {
        /// How long the video lasts.
        video_ms: u64,
        /// How long the audio lasts.
        audio_ms: u64,
    },
}

/// One access unit of a clip, in Annex B form (a 4-byte start code before every NAL unit).
#[derive(Debug, Clone)]
struct ClipFrame {
    /// All of it.
    whole: Bytes,
    /// The NAL units before the first slice (SPS and PPS in an IDR; usually nothing else).
    head: Bytes,
    /// The first slice and everything after it.
    slices: Bytes,
    /// Whether it has an IDR slice.
    keyframe: bool,
}

/// A test clip, ready to loop: H.264 access units at [`VIDEO_FPS`] with an IDR every
/// [`GOP_FRAMES`] from the first, and as long a run of [`AUDIO_FRAME_MS`] Opus packets.
#[derive(Debug)]
pub struct Clip {
    /// Never empty.
    video: Vec<ClipFrame>,
    /// Never empty.
    audio: Vec<Bytes>,
}

impl Clip {
    /// The clip committed in `loadgen/data/` and compiled in: 2 s of 640x360 H.264 at 30 fps
    /// (`testsrc2`) and 2 s of 48 kHz stereo Opus (a sine with a beep every second). Parsed on
    /// the first call; the unit tests check it parses.
    pub fn embedded() -> Result<&'static Clip, ClipError> {
        EMBEDDED.as_ref().map_err(Clone::clone)
    }

    /// The embedded clip for simulcast layer `layer` of `layers`, the way OBS scales them:
    /// layer `i` of `N` is `(N - i) / N` of the full size (and bitrate), so layer 0 is
    /// [`Clip::embedded`] itself. Every size has the same frames, GOP and timestamps, so the
    /// layers of a publisher stay frame for frame together.
    pub fn embedded_layer(layer: u8, layers: u8) -> Result<&'static Clip, ClipError> {
        let Some((num, den)) = layer_scale(layer, layers) else {
            return Err(ClipError::NoLayer { layer, layers });
        };
        if num == den {
            return Clip::embedded();
        }
        LAYERS
            .iter()
            .find(|l| (l.num, l.den) == (num, den))
            .ok_or(ClipError::NoLayer { layer, layers })?
            .clip
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A clip from raw Annex B H.264 and an Ogg Opus file. The H.264 must start with an IDR
    /// and have one (with SPS and PPS) exactly every [`GOP_FRAMES`] frames, the Opus packets
    /// must each last [`AUDIO_FRAME_MS`], and both must last the same at [`VIDEO_FPS`].
    pub fn parse(h264: &[u8], ogg_opus: &[u8]) -> Result<Clip, ClipError> {
        let video = video_frames(&Bytes::copy_from_slice(h264))?;
        let audio = opus_packets(ogg_opus)?;
        let video_ms = video.len() as u64 * 1000 / u64::from(VIDEO_FPS);
        let audio_ms = audio.len() as u64 * u64::from(AUDIO_FRAME_MS);
        // Exact, in 1/(90000 * 48000) s.
        let video_len = video.len() as u128 * u128::from(VIDEO_FRAME_TICKS * AUDIO_CLOCK_RATE);
        let audio_len = audio.len() as u128 * u128::from(AUDIO_PACKET_SAMPLES * VIDEO_CLOCK_RATE);
        if video_len != audio_len {
            return Err(ClipError::LengthMismatch { video_ms, audio_ms });
        }
        Ok(Clip { video, audio })
    }
}
/// The size of simulcast layer `layer` of `layers`, `(layers - layer) / layers` of the full
/// size, as a reduced fraction; `None` unless `layer < layers <= MAX_LAYERS`.
pub fn layer_scale(layer: u8, layers: u8) -> Option<(u32, u32)> {
    if layer >= layers || layers > MAX_LAYERS {
        return None;
    }
    let (num, den) = (u32::from(layers - layer), u32::from(layers));
    let gcd = (1..=num).rev().find(|d| num % d == 0 && den % d == 0)?;
    Some((num / gcd, den / gcd))
}

/// Width and height of simulcast layer `layer` of `layers` (see [`Clip::embedded_layer`]);
/// `None` for a layer there is no clip for.
pub fn layer_size(layer: u8, layers: u8) -> Option<(u32, u32)> {
    match layer_scale(layer, layers)? {
        (1, 1) => Some((VIDEO_WIDTH, VIDEO_HEIGHT)),
        scale => LAYERS
            .iter()
            .find(|l| (l.num, l.den) == scale)
            .map(|l| l.size),
    }
}

/// The access units of an Annex B stream, checked for what a loop needs: a whole number of
/// GOPs of [`GOP_FRAMES`], each starting with an IDR that has SPS and PPS in front.
fn video_frames(h264: &Bytes) -> Result<Vec<ClipFrame>, ClipError> {
    let units = access_units(h264)?;
    if units.is_empty() {
        return Err(ClipError::NoVideo);
    }
    let gop = GOP_FRAMES as usize;
    if units.len() % gop != 0 {
        return Err(ClipError::PartialGop {
            frames: units.len(),
        });
    }
    let mut frames = Vec::with_capacity(units.len());
    for (frame, unit) in units.into_iter().enumerate() {
        let Some(first_slice) = unit.first_slice else {
            return Err(ClipError::NoSlice { frame });
        };
        if unit.keyframe != (frame % gop == 0) {
            return Err(ClipError::GopStructure {
                frame,
                keyframe: unit.keyframe,
            });
        }
        let (head, slices) = unit.nals.split_at(first_slice);
        let has = |t: u8| {
            head.iter()
                .any(|n| n.first().is_some_and(|h| h & 0x1F == t))
        };
        if unit.keyframe && !(has(NAL_SPS) && has(NAL_PPS)) {
            return Err(ClipError::NoParameterSets { frame });
        }
        let (head, slices) = (annexb(head), annexb(slices));
        frames.push(ClipFrame {
            whole: Bytes::from([head.as_slice(), &slices].concat()),
            head: Bytes::from(head),
            slices: Bytes::from(slices),
            keyframe: unit.keyframe,
        });
    }
    Ok(frames)
}

/// One video access unit in Annex B form.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Annex B bytes (a start code before every NAL unit).
    pub data: Bytes,
    /// Whether this is an IDR access unit (SPS + PPS + IDR slice).
    pub keyframe: bool,
    /// Presentation (and decoding: there are no B-frames) time in the 90 kHz clock, counted
    /// from the source's first frame and continuing across loops.
    pub pts: u64,
    /// How long the frame lasts in the 90 kHz clock.
    pub duration: u32,
}

/// Plays a clip's video in a loop, from its first frame (an IDR), forever; as an
/// [`Iterator`] it never ends.
#[derive(Debug, Clone)]
pub struct H264Source<'a> {
    frames: std::iter::Cycle<std::slice::Iter<'a, ClipFrame>>,
    /// Frames produced so far, which numbers the stamps.
    count: u64,
    stamped: bool,
}

impl<'a> H264Source<'a> {
    /// A source whose frames are the clip's as they are.
    pub fn new(clip: &'a Clip) -> Self {
        Self {
            frames: clip.video.iter().cycle(),
            count: 0,
            stamped: false,
        }
    }

    /// A source like [`H264Source::new`] that puts a [`FrameStamp`] SEI (the wall-clock time
    /// and the frame number, counting across loops from 0) after the parameter sets and before
    /// the slices of every frame, so a receiver downstream can time each frame and tell lost,
    /// reordered and duplicated ones.
    pub fn stamped(clip: &'a Clip) -> Self {
        Self {
            stamped: true,
            ..Self::new(clip)
        }
    }
}

impl Iterator for H264Source<'_> {
    type Item = VideoFrame;

    fn next(&mut self) -> Option<VideoFrame> {
        let frame = self.frames.next()?;
        let number = self.count;
        self.count += 1;
        let data = if self.stamped {
            let sei = FrameStamp {
                sent_us: now_us(),
                frame: number,
            }
            .to_sei();
            let mut data = Vec::with_capacity(frame.whole.len() + START_CODE.len() + sei.len());
            data.extend_from_slice(&frame.head);
            data.extend_from_slice(&START_CODE);
            data.extend(sei);
            data.extend_from_slice(&frame.slices);
            Bytes::from(data)
        } else {
            frame.whole.clone()
        };
        Some(VideoFrame {
            data,
            keyframe: frame.keyframe,
            pts: number * u64::from(VIDEO_FRAME_TICKS),
            duration: VIDEO_FRAME_TICKS,
        })
    }
}

/// One Opus packet.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    /// The packet as RTP carries it.
    pub data: Bytes,
    /// Presentation time in the 48 kHz clock, counted from the source's first packet and
    /// continuing across loops.
    pub pts: u64,
    /// How long the packet lasts in the 48 kHz clock.
    pub duration: u32,
}

/// Plays a clip's audio in a loop, forever; as an [`Iterator`] it never ends. It loops
/// together with [`H264Source`]: the clip's audio lasts as long as its video.
#[derive(Debug, Clone)]
pub struct OpusSource<'a> {
    packets: std::iter::Cycle<std::slice::Iter<'a, Bytes>>,
    /// Packets produced so far.
    count: u64,
}

impl<'a> OpusSource<'a> {
    /// A source starting at the clip's first packet.
    pub fn new(clip: &'a Clip) -> Self {
        Self {
            packets: clip.audio.iter().cycle(),
            count: 0,
        }
    }
}

impl Iterator for OpusSource<'_> {
    type Item = AudioPacket;

    fn next(&mut self) -> Option<AudioPacket> {
        let data = self.packets.next()?.clone();
        let pts = self.count * u64::from(AUDIO_PACKET_SAMPLES);
        self.count += 1;
        Some(AudioPacket {
            data,
            pts,
            duration: AUDIO_PACKET_SAMPLES,
        })
    }
}

#[cfg(test)]
mod tests {
    use bridge_proto::media::h264::NAL_IDR;

    use super::super::annexb::nal_units;
    use super::super::ogg::opus_samples;
    use super::super::stamp::unescape_rbsp;
    use super::*;

    /// Splits Annex B into NAL units.
    fn nals(data: &[u8]) -> Vec<&[u8]> {
        nal_units(&Bytes::copy_from_slice(data))
            .unwrap()
            .into_iter()
            .map(|(at, nal)| &data[at..at + nal.len()])
            .collect()
    }

    fn types(data: &[u8]) -> Vec<u8> {
        nals(data).iter().map(|n| n[0] & 0x1F).collect()
    }

    /// MSB-first reader of Exp-Golomb coded RBSPs.
    struct Bits<'a> {
        data: &'a [u8],
        at: usize,
    }

    impl Bits<'_> {
        fn bit(&mut self) -> u32 {
            let bit = (self.data[self.at / 8] >> (7 - self.at % 8)) & 1;
            self.at += 1;
            u32::from(bit)
        }

        fn bits(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, _| (v << 1) | self.bit())
        }

        fn ue(&mut self) -> u32 {
            let mut zeros = 0;
            while self.bit() == 0 {
                zeros += 1;
            }
            (1 << zeros) - 1 + self.bits(zeros)
        }
    }

    /// What the tests read from an SPS of profile 66 (Baseline).
    #[derive(Debug, PartialEq)]
    struct Sps {
        profile_idc: u32,
        constraint_flags: u32,
        level_idc: u32,
        log2_max_frame_num: u32,
        width: u32,
        height: u32,
    }

    fn parse_sps(nal: &[u8]) -> Sps {
        assert_eq!(nal[0] & 0x1F, NAL_SPS);
        let rbsp = unescape_rbsp(&nal[1..]);
        let mut r = Bits { data: &rbsp, at: 0 };
        let (profile_idc, constraint_flags, level_idc) = (r.bits(8), r.bits(8), r.bits(8));
        assert_eq!(profile_idc, 66, "no chroma_format_idc and friends to skip");
        r.ue(); // seq_parameter_set_id
        let log2_max_frame_num = r.ue() + 4;
        match r.ue() {
            0 => {
                r.ue(); // log2_max_pic_order_cnt_lsb_minus4
            }
            2 => {}
            other => panic!("pic_order_cnt_type {other}"),
        }
        r.ue(); // max_num_ref_frames
        r.bit(); // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue() + 1;
        let height_map_units = r.ue() + 1;
        let frame_mbs_only = r.bit();
        if frame_mbs_only == 0 {
            r.bit(); // mb_adaptive_frame_field_flag
        }
        r.bit(); // direct_8x8_inference_flag
        let [mut left, mut right, mut top, mut bottom] = [0; 4];
        if r.bit() == 1 {
            [left, right, top, bottom] = [r.ue(), r.ue(), r.ue(), r.ue()];
        }
        // 4:2:0: crop units of 2 luma samples across, 2 * (2 - frame_mbs_only) down.
        Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            log2_max_frame_num,
            width: width_mbs * 16 - 2 * (left + right),
            height: (2 - frame_mbs_only) * height_map_units * 16
                - 2 * (2 - frame_mbs_only) * (top + bottom),
        }
    }

    /// `idr_pic_id` of an IDR slice (the SPS has frame_mbs_only_flag set).
    fn idr_pic_id(nal: &[u8], log2_max_frame_num: u32) -> u32 {
        assert_eq!(nal[0] & 0x1F, NAL_IDR);
        let rbsp = unescape_rbsp(&nal[1..]);
        let mut r = Bits { data: &rbsp, at: 0 };
        assert_eq!(r.ue(), 0, "first_mb_in_slice");
        r.ue(); // slice_type
        r.ue(); // pic_parameter_set_id
        assert_eq!(r.bits(log2_max_frame_num), 0, "frame_num of an IDR");
        r.ue()
    }

    fn clip() -> &'static Clip {
        Clip::embedded().unwrap()
    }

    #[test]
    fn embedded_clip_is_two_seconds_of_two_gops() {
        let clip = clip();
        assert_eq!(clip.video.len(), 60);
        assert_eq!(clip.audio.len(), 100);
        let keyframes: Vec<usize> = (0..60).filter(|&i| clip.video[i].keyframe).collect();
        assert_eq!(keyframes, [0, 30]);
        for (i, frame) in clip.video.iter().enumerate() {
            // One slice a picture, nothing else but the parameter sets in front of an IDR.
            let expected: &[u8] = if frame.keyframe { &[7, 8, 5] } else { &[1] };
            assert_eq!(types(&frame.whole), expected, "frame {i}");
            assert_eq!(frame.slices.len(), nals(&frame.slices)[0].len() + 4);
        }
        // Sizes as the README says: IDRs need FU-A, P frames mostly too.
        let idr = nals(&clip.video[0].slices)[0].len();
        assert!((5_000..15_000).contains(&idr), "{idr}");
    }

    #[test]
    fn sps_says_640x360_constrained_baseline() {
        let clip = clip();
        let sps = parse_sps(nals(&clip.video[0].head)[0]);
        assert_eq!(
            (sps.profile_idc, sps.level_idc, sps.width, sps.height),
            (66, 31, VIDEO_WIDTH, VIDEO_HEIGHT)
        );
        // constraint_set1_flag: Constrained Baseline, which the offered 42e01f accepts.
        assert_ne!(sps.constraint_flags & 0x40, 0);
        assert!(crate::H264_FMTP.contains("profile-level-id=42e01f"));
        // Both IDRs carry the same parameter sets.
        assert_eq!(clip.video[0].head, clip.video[30].head);
        // Consecutive IDRs, also across the loop (30 then 0), differ in idr_pic_id.
        let id = |i: usize| idr_pic_id(nals(&clip.video[i].slices)[0], sps.log2_max_frame_num);
        assert_ne!(id(0), id(30));
    }

    #[test]
    fn layers_scale_the_obs_way() {
        // Layer i of N is (N - i) / N of the full size.
        let scales =
            |n: u8| -> Vec<Option<(u32, u32)>> { (0..n).map(|i| layer_scale(i, n)).collect() };
        assert_eq!(scales(1), [Some((1, 1))]);
        assert_eq!(scales(2), [Some((1, 1)), Some((1, 2))]);
        assert_eq!(scales(3), [Some((1, 1)), Some((2, 3)), Some((1, 3))]);
        assert_eq!(layer_scale(1, 1), None);
        assert_eq!(layer_scale(0, 0), None);
        assert_eq!(layer_scale(0, MAX_LAYERS + 1), None);
        let sizes =
            |n: u8| -> Vec<Option<(u32, u32)>> { (0..n).map(|i| layer_size(i, n)).collect() };
        assert_eq!(sizes(2), [Some((640, 360)), Some((320, 180))]);
        assert_eq!(
            sizes(3),
            [Some((640, 360)), Some((426, 240)), Some((212, 120))]
        );
        assert_eq!(layer_size(3, 3), None);
        assert_eq!(
            Clip::embedded_layer(0, 4).unwrap_err(),
            ClipError::NoLayer {
                layer: 0,
                layers: 4
            }
        );
        // The top layer is the clip itself.
        assert!(std::ptr::eq(Clip::embedded_layer(0, 3).unwrap(), clip()));
    }

    #[test]
    fn layer_clips_are_the_clip_scaled() {
        let top = clip();
        let top_sps = parse_sps(nals(&top.video[0].head)[0]);
        for layers in 1..=MAX_LAYERS {
            for layer in 0..layers {
                let clip = Clip::embedded_layer(layer, layers).unwrap();
                let (width, height) = layer_size(layer, layers).unwrap();
                // Same frames, GOP and audio, so the layers stay frame for frame together.
                assert_eq!(clip.video.len(), top.video.len());
                assert_eq!(clip.audio, top.audio);
                for (i, frame) in clip.video.iter().enumerate() {
                    let expected: &[u8] = if frame.keyframe { &[7, 8, 5] } else { &[1] };
                    assert_eq!(types(&frame.whole), expected, "{width}x{height} frame {i}");
                }
                let sps = parse_sps(nals(&clip.video[0].head)[0]);
                assert_eq!((sps.width, sps.height), (width, height));
                assert_eq!(
                    (sps.profile_idc, sps.constraint_flags, sps.level_idc),
                    (
                        top_sps.profile_idc,
                        top_sps.constraint_flags,
                        top_sps.level_idc
                    ),
                    "one fmtp for every layer"
                );
                // Bitrate scaled like the size: the clip's bytes against the top's.
                let bytes = |c: &Clip| c.video.iter().map(|f| f.whole.len()).sum::<usize>() as f64;
                let (num, den) = layer_scale(layer, layers).unwrap();
                let ratio = bytes(clip) / bytes(top) / (f64::from(num) / f64::from(den));
                assert!((0.8..1.2).contains(&ratio), "{width}x{height}: {ratio}");
            }
        }
    }

    #[test]
    fn opus_packets_are_20ms_celt_fullband_stereo() {
        let clip = clip();
        for packet in &clip.audio {
            // TOC: config 31 (CELT fullband 20 ms), stereo, one frame.
            assert_eq!(packet[0], 0xFC);
            assert_eq!(packet.len(), 160, "64 kb/s CBR");
            assert_eq!(opus_samples(packet), Some(960));
        }
    }

    #[test]
    fn loops_keep_timestamps_and_frame_numbers_going() {
        let clip = clip();
        let video: Vec<VideoFrame> = H264Source::new(clip).take(3 * 60).collect();
        for (n, frame) in video.iter().enumerate() {
            assert_eq!(frame.pts, n as u64 * 3000);
            assert_eq!(frame.duration, 3000);
            assert_eq!(frame.keyframe, n % 30 == 0, "frame {n}");
            // The loop is the clip again, byte for byte (and without a copy).
            assert_eq!(frame.data.as_ptr(), video[n % 60].data.as_ptr());
        }
        let audio: Vec<AudioPacket> = OpusSource::new(clip).take(3 * 100).collect();
        for (n, packet) in audio.iter().enumerate() {
            assert_eq!(packet.pts, n as u64 * 960);
            assert_eq!(packet.duration, 960);
            assert_eq!(packet.data, clip.audio[n % 100]);
        }
        // Each loop of both starts at the same instant: 2 s, 4 s.
        for k in 1..3 {
            let v = &video[60 * k];
            let a = &audio[100 * k];
            assert_eq!(v.pts * 48_000, a.pts * 90_000);
            assert_eq!(v.pts, k as u64 * 180_000);
        }
    }

    #[test]
    fn stamped_frames_carry_numbered_sei() {
        let clip = clip();
        let plain: Vec<VideoFrame> = H264Source::new(clip).take(65).collect();
        for (i, f) in H264Source::stamped(clip).take(65).enumerate() {
            let units = nals(&f.data);
            let types: Vec<u8> = units.iter().map(|n| n[0] & 0x1F).collect();
            let expected: &[u8] = if f.keyframe { &[7, 8, 6, 5] } else { &[6, 1] };
            assert_eq!(types, expected, "frame {i}");
            let sei = units.iter().find(|n| n[0] == 0x06).unwrap();
            let stamp = FrameStamp::from_sei(sei).unwrap();
            assert_eq!(stamp.frame, i as u64, "numbers go on across the loop");
            assert!(stamp.sent_us > 0);
            // Without the SEI, the frame is the clip's.
            let unstamped: Vec<&[u8]> = units.into_iter().filter(|n| n[0] != 0x06).collect();
            assert_eq!(unstamped, nals(&plain[i].data));
            assert_eq!(f.pts, plain[i].pts);
        }
    }

    #[test]
    fn clip_errors() {
        let clip = clip();
        let ogg = CLIP_OGG_OPUS;
        let h264 = |frames: &[&ClipFrame]| -> Vec<u8> {
            frames
                .iter()
                .flat_map(|f| f.whole.iter().copied())
                .collect()
        };
        let frames = |range: std::ops::Range<usize>| -> Vec<&ClipFrame> {
            clip.video[range].iter().collect()
        };
        assert_eq!(
            Clip::parse(&h264(&frames(0..30)), ogg).unwrap_err(),
            ClipError::LengthMismatch {
                video_ms: 1000,
                audio_ms: 2000
            }
        );
        assert_eq!(
            Clip::parse(&h264(&frames(0..59)), ogg).unwrap_err(),
            ClipError::PartialGop { frames: 59 }
        );
        assert_eq!(
            Clip::parse(&h264(&frames(1..31)), ogg).unwrap_err(),
            ClipError::GopStructure {
                frame: 0,
                keyframe: false
            }
        );
        let mut early_idr = frames(0..30);
        early_idr[29] = &clip.video[30];
        assert_eq!(
            Clip::parse(&h264(&early_idr), ogg).unwrap_err(),
            ClipError::GopStructure {
                frame: 29,
                keyframe: true
            }
        );
        let mut bare_idr = clip.video[0].slices.to_vec();
        bare_idr.extend(h264(&frames(1..30)));
        assert_eq!(
            Clip::parse(&bare_idr, ogg).unwrap_err(),
            ClipError::NoParameterSets { frame: 0 }
        );
        let mut no_slice = h264(&frames(0..60));
        no_slice.extend_from_slice(&clip.video[0].head);
        assert_eq!(
            Clip::parse(&no_slice, ogg).unwrap_err(),
            ClipError::PartialGop { frames: 61 }
        );
        assert_eq!(Clip::parse(&[], ogg).unwrap_err(), ClipError::NoVideo);

        let h264 = CLIP_H264;
        assert_eq!(Clip::parse(h264, &[]).unwrap_err(), ClipError::NoOpusHead);
        let flipped = |at: usize| {
            let mut ogg = ogg.to_vec();
            ogg[at] ^= 0x01;
            ogg
        };
        // The OpusHead page is 47 bytes: 27 + 1 segment byte + 19.
        assert_eq!(
            Clip::parse(h264, &flipped(40)).unwrap_err(),
            ClipError::Ogg(OggError::PageCrc { offset: 0 })
        );
        assert_eq!(
            Clip::parse(h264, &flipped(47)).unwrap_err(),
            ClipError::Ogg(OggError::NoPage { offset: 47 })
        );
        // The last page: 50 packets of 160 bytes.
        assert_eq!(
            Clip::parse(h264, &ogg[..ogg.len() - 1]).unwrap_err(),
            ClipError::Ogg(OggError::TruncatedPage {
                offset: ogg.len() - 27 - 50 - 50 * 160
            })
        );
        assert_eq!(
            Clip::parse(h264, &ogg[47..]).unwrap_err(),
            ClipError::Ogg(OggError::NoBeginningOfStream)
        );
    }
}
