//! What loadgen's publishers send: a short H.264 + Opus test clip, committed in `loadgen/data/`
//! (its README says how it was made) and compiled in, played in a loop by [`H264Source`] and
//! [`OpusSource`] with timestamps that keep counting across loops; and the [`FrameStamp`] SEI
//! that lets a receiver time every video frame.
//!
//! The clip is parsed and checked once, at first use ([`Clip::embedded`]): Annex B H.264 split
//! into access units, Ogg Opus into packets. The parsers never panic; anything unexpected is a
//! [`ClipError`].

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Video frame rate of the clip.
pub const VIDEO_FPS: u32 = 30;
/// One IDR (with SPS and PPS in front) every this many frames, from the first: one per second.
pub const GOP_FRAMES: u32 = 30;
/// Width of the clip's pictures.
pub const VIDEO_WIDTH: u32 = 640;
/// Height of the clip's pictures.
pub const VIDEO_HEIGHT: u32 = 360;
/// RTP clock rate of H.264.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// Opus frame duration in milliseconds (one frame a packet).
pub const AUDIO_FRAME_MS: u32 = 20;

/// How long a video frame lasts in the 90 kHz clock.
const VIDEO_FRAME_TICKS: u32 = VIDEO_CLOCK_RATE / VIDEO_FPS;
/// How long an Opus packet lasts in the 48 kHz clock.
const AUDIO_PACKET_SAMPLES: u32 = AUDIO_CLOCK_RATE / 1000 * AUDIO_FRAME_MS;

/// The clip's video: 2 s of x264 Constrained Baseline, 640x360, 30 fps, IDR every 30 frames.
static CLIP_H264: &[u8] = include_bytes!("../data/clip-640x360-30fps-2s.h264");
/// The clip's audio: 2 s of Ogg Opus, 48 kHz stereo, 100 packets of 20 ms.
static CLIP_OGG_OPUS: &[u8] = include_bytes!("../data/clip-opus-48k-stereo-2s.opus");

/// The embedded clip, parsed at first use.
static EMBEDDED: LazyLock<Result<Clip, ClipError>> =
    LazyLock::new(|| Clip::parse(CLIP_H264, CLIP_OGG_OPUS));

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// `nal_unit_type` of a non-IDR slice.
const NAL_SLICE: u8 = 1;
/// `nal_unit_type` of an IDR slice.
const NAL_IDR: u8 = 5;
/// `nal_unit_type` of SEI.
const NAL_SEI: u8 = 6;
/// `nal_unit_type` of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// `nal_unit_type` of a picture parameter set.
const NAL_PPS: u8 = 8;

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
    /// No Ogg page begins where one should (no `OggS`).
    #[error("Ogg: no page at byte {offset}")]
    NoPage {
        /// Where the page should begin.
        offset: usize,
    },
    /// A page has a version other than 0.
    #[error("Ogg: the page at byte {offset} has version {version}")]
    PageVersion {
        /// Where the page begins.
        offset: usize,
        /// Its version.
        version: u8,
    },
    /// A page goes past the end of the file.
    #[error("Ogg: the page at byte {offset} is truncated")]
    TruncatedPage {
        /// Where the page begins.
        offset: usize,
    },
    /// A page's CRC does not match its bytes.
    #[error("Ogg: the page at byte {offset} fails its CRC")]
    PageCrc {
        /// Where the page begins.
        offset: usize,
    },
    /// The first page is not marked as the beginning of a stream.
    #[error("Ogg: the first page is not a beginning-of-stream page")]
    NoBeginningOfStream,
    /// A page belongs to another logical stream (only one stream is supported).
    #[error("Ogg: the page at byte {offset} is of stream {serial:#010x}, not {expected:#010x}")]
    OtherStream {
        /// Where the page begins.
        offset: usize,
        /// Its stream serial number.
        serial: u32,
        /// The serial number of the first page.
        expected: u32,
    },
    /// A page is missing or out of order.
    #[error("Ogg: the page at byte {offset} has sequence number {sequence}, not {expected}")]
    PageSequence {
        /// Where the page begins.
        offset: usize,
        /// Its sequence number.
        sequence: u32,
        /// The number that should follow the previous page's.
        expected: u32,
    },
    /// A page's continuation flag disagrees with the previous page: it says it continues a
    /// packet that the previous page finished, or does not continue one left open.
    #[error("Ogg: the page at byte {offset} {}", if *.continued {
        "continues a packet, but none is open"
    } else {
        "does not continue the packet the previous page left open"
    })]
    Continuation {
        /// Where the page begins.
        offset: usize,
        /// Whether its header says it continues a packet.
        continued: bool,
    },
    /// The file ends in the middle of a packet.
    #[error("Ogg: the last packet is unfinished")]
    UnfinishedPacket,
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

    /// A clip from raw Annex B H.264 and an Ogg Opus file. The H.264 must start with an IDR
    /// and have one (with SPS and PPS) exactly every [`GOP_FRAMES`] frames, the Opus packets
    /// must each last [`AUDIO_FRAME_MS`], and both must last the same at [`VIDEO_FPS`].
    pub fn parse(h264: &[u8], ogg_opus: &[u8]) -> Result<Clip, ClipError> {
        let video = video_frames(h264)?;
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

/// The NAL units of an Annex B stream, each with its offset in `data` (after its start code),
/// without the trailing zero bytes that belong to the next start code.
fn annexb_nal_units(data: &[u8]) -> Result<Vec<(usize, &[u8])>, ClipError> {
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(window) = data.get(i..i + 3) {
        if window == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let first = starts.first().map_or(data.len(), |&s| s - 3);
    if let Some(offset) = data.iter().take(first).position(|&b| b != 0) {
        return Err(ClipError::NoStartCode { offset });
    }
    let ends = starts.iter().skip(1).map(|&s| s - 3).chain([data.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| {
            // The zero bytes before a start code are the next one's `zero_byte` (or trailing
            // zeros): a NAL unit never ends with one.
            let nal = data.get(start..end).unwrap_or_default();
            let len = nal.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            let nal = nal.get(..len).unwrap_or_default();
            match nal.first() {
                None => Err(ClipError::TruncatedNal { offset: start }),
                Some(header) if header & 0x80 != 0 => {
                    Err(ClipError::ForbiddenBit { offset: start })
                }
                Some(_) => Ok((start, nal)),
            }
        })
        .collect()
}

/// One access unit as it was found in the file.
#[derive(Debug, Default)]
struct AccessUnit<'a> {
    nals: Vec<&'a [u8]>,
    /// Index in `nals` of the first slice.
    first_slice: Option<usize>,
    /// Whether it has an IDR slice.
    keyframe: bool,
}

/// The access units of an Annex B stream. A new one begins (H.264 7.4.1.2.3, for streams
/// without redundant pictures) at a slice whose `first_mb_in_slice` is 0, or at an SEI, SPS,
/// PPS, access unit delimiter or NAL unit type 14 to 18, once the current one has a slice.
fn access_units(h264: &[u8]) -> Result<Vec<AccessUnit<'_>>, ClipError> {
    let mut units = Vec::new();
    let mut unit = AccessUnit::default();
    for (offset, nal) in annexb_nal_units(h264)? {
        let truncated = || ClipError::TruncatedNal { offset };
        let nal_type = nal.first().ok_or_else(truncated)? & 0x1F;
        let slice = matches!(nal_type, NAL_SLICE | NAL_IDR);
        let begins_unit = if slice {
            // first_mb_in_slice is ue(v), the first bit after the header: 1 means 0.
            nal.get(1).ok_or_else(truncated)? & 0x80 != 0
        } else {
            matches!(nal_type, NAL_SEI..=9 | 14..=18)
        };
        if begins_unit && unit.first_slice.is_some() {
            units.push(std::mem::take(&mut unit));
        }
        if slice {
            unit.first_slice.get_or_insert(unit.nals.len());
            unit.keyframe |= nal_type == NAL_IDR;
        }
        unit.nals.push(nal);
    }
    if !unit.nals.is_empty() {
        units.push(unit);
    }
    Ok(units)
}

/// The access units of an Annex B stream, checked for what a loop needs: a whole number of
/// GOPs of [`GOP_FRAMES`], each starting with an IDR that has SPS and PPS in front.
fn video_frames(h264: &[u8]) -> Result<Vec<ClipFrame>, ClipError> {
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

/// NAL units in Annex B form, a 4-byte start code before each.
fn annexb(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + START_CODE.len()).sum());
    for nal in nals {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    out
}

/// The audio packets of an Ogg Opus file (RFC 7845): after the `OpusHead` and `OpusTags`, each
/// checked to last [`AUDIO_FRAME_MS`].
fn opus_packets(ogg: &[u8]) -> Result<Vec<Bytes>, ClipError> {
    let mut packets = ogg_packets(ogg)?.into_iter();
    let head = packets.next().ok_or(ClipError::NoOpusHead)?;
    if !head.starts_with(b"OpusHead") {
        return Err(ClipError::NoOpusHead);
    }
    // Version (major 0), channel count, mapping family (RFC 7845 §5.1).
    match (head.get(8), head.get(9), head.get(18)) {
        (Some(version), Some(1 | 2), Some(0)) if version >> 4 == 0 => {}
        _ => return Err(ClipError::BadOpusHead),
    }
    if !packets.next().is_some_and(|p| p.starts_with(b"OpusTags")) {
        return Err(ClipError::NoOpusTags);
    }
    let audio: Vec<Bytes> = packets.map(Bytes::from).collect();
    for (packet, data) in audio.iter().enumerate() {
        let samples = opus_samples(data).ok_or(ClipError::BadOpusPacket { packet })?;
        if samples != AUDIO_PACKET_SAMPLES {
            return Err(ClipError::OpusDuration { packet, samples });
        }
    }
    if audio.is_empty() {
        return Err(ClipError::NoAudio);
    }
    Ok(audio)
}

/// How long an Opus packet lasts in samples at 48 kHz, from its TOC byte and, for code 3, its
/// frame count (RFC 6716 §3.1); `None` if it is empty, has no frame or lasts over 120 ms.
fn opus_samples(packet: &[u8]) -> Option<u32> {
    let (&toc, rest) = packet.split_first()?;
    let config = usize::from(toc >> 3);
    let frame = match config {
        // SILK: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][config % 4],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][config % 2],
        // CELT: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(rest.first()? & 0x3F),
    };
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// Ogg page header flags (RFC 3533 §6).
const OGG_CONTINUED: u8 = 0x01;
const OGG_BEGINNING_OF_STREAM: u8 = 0x02;
/// Bytes of an Ogg page header before its segment table.
const OGG_HEADER: usize = 27;

/// The packets of a single-stream Ogg file (RFC 3533), every page's CRC, sequence number and
/// continuation flag checked. A packet is the run of segments up to one shorter than 255 bytes
/// and may span pages.
fn ogg_packets(data: &[u8]) -> Result<Vec<Vec<u8>>, ClipError> {
    let mut packets = Vec::new();
    // The packet the previous page left unfinished.
    let mut open: Option<Vec<u8>> = None;
    // Serial number of the stream and sequence number of the next page.
    let mut stream: Option<(u32, u32)> = None;
    let mut offset = 0;
    while offset < data.len() {
        let truncated = || ClipError::TruncatedPage { offset };
        let header = data
            .get(offset..offset + OGG_HEADER)
            .ok_or_else(truncated)?;
        if !header.starts_with(b"OggS") {
            return Err(ClipError::NoPage { offset });
        }
        let le_u32 = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let (version, flags) = (header[4], header[5]);
        let (serial, sequence, crc) = (le_u32(14), le_u32(18), le_u32(22));
        if version != 0 {
            return Err(ClipError::PageVersion { offset, version });
        }
        let table_end = offset + OGG_HEADER + usize::from(header[26]);
        let table = data
            .get(offset + OGG_HEADER..table_end)
            .ok_or_else(truncated)?;
        let page_end = table_end + table.iter().map(|&len| usize::from(len)).sum::<usize>();
        let page = data.get(offset..page_end).ok_or_else(truncated)?;
        if ogg_crc(page) != crc {
            return Err(ClipError::PageCrc { offset });
        }
        match stream {
            None if flags & OGG_BEGINNING_OF_STREAM == 0 => {
                return Err(ClipError::NoBeginningOfStream);
            }
            Some((expected, _)) if serial != expected => {
                return Err(ClipError::OtherStream {
                    offset,
                    serial,
                    expected,
                });
            }
            Some((_, expected)) if sequence != expected => {
                return Err(ClipError::PageSequence {
                    offset,
                    sequence,
                    expected,
                });
            }
            _ => stream = Some((serial, sequence.wrapping_add(1))),
        }
        let continued = flags & OGG_CONTINUED != 0;
        if continued != open.is_some() {
            return Err(ClipError::Continuation { offset, continued });
        }
        let mut body = data.get(table_end..page_end).ok_or_else(truncated)?;
        for &len in table {
            let (segment, rest) = body
                .split_at_checked(usize::from(len))
                .ok_or_else(truncated)?;
            open.get_or_insert_with(Vec::new).extend_from_slice(segment);
            if len < 255 {
                packets.extend(open.take());
            }
            body = rest;
        }
        offset = page_end;
    }
    if open.is_some() {
        return Err(ClipError::UnfinishedPacket);
    }
    Ok(packets)
}

/// The CRC-32 of an Ogg page (polynomial 0x04C11DB7, MSB first, initial value and final XOR 0),
/// computed with its own CRC field (bytes 22 to 25) taken as zero.
fn ogg_crc(page: &[u8]) -> u32 {
    page.iter()
        .enumerate()
        .map(|(i, &b)| if (22..26).contains(&i) { 0 } else { b })
        .fold(0u32, |mut crc, b| {
            crc ^= u32::from(b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
            }
            crc
        })
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
            let sent_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            let sei = FrameStamp {
                sent_us,
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

/// UUID of loadgen's frame-stamp SEI (user data unregistered), random and ours alone, so a
/// receiver never mistakes an encoder's own SEI for a stamp.
pub const STAMP_SEI_UUID: [u8; 16] = [
    0x6c, 0x6f, 0x61, 0x64, 0x67, 0x65, 0x6e, 0x2d, 0x9b, 0x3e, 0x41, 0xd2, 0x87, 0x5a, 0x0c, 0xf1,
];
/// SEI payload type `user_data_unregistered`.
const SEI_USER_DATA_UNREGISTERED: u8 = 5;

/// What a frame-stamp SEI carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStamp {
    /// Wall-clock time the frame was generated, µs since the UNIX epoch.
    pub sent_us: u64,
    /// Frame number within the stream, from 0.
    pub frame: u64,
}

impl FrameStamp {
    /// The SEI NAL unit (header byte 0x06) carrying this stamp: one `user_data_unregistered`
    /// message with [`STAMP_SEI_UUID`], then `sent_us` and `frame` as big-endian u64.
    pub fn to_sei(self) -> Vec<u8> {
        let mut rbsp = vec![SEI_USER_DATA_UNREGISTERED, 32];
        rbsp.extend_from_slice(&STAMP_SEI_UUID);
        rbsp.extend_from_slice(&self.sent_us.to_be_bytes());
        rbsp.extend_from_slice(&self.frame.to_be_bytes());
        rbsp.push(0x80); // rbsp_trailing_bits
        let mut nal = vec![NAL_SEI];
        nal.extend(escape_rbsp(&rbsp));
        nal
    }

    /// The stamp in an SEI NAL unit made by [`FrameStamp::to_sei`] (`None` for any other NAL).
    pub fn from_sei(nal: &[u8]) -> Option<FrameStamp> {
        let (&header, escaped) = nal.split_first()?;
        if header & 0x1F != NAL_SEI {
            return None;
        }
        let rbsp = unescape_rbsp(escaped);
        let payload = rbsp.strip_prefix(&[SEI_USER_DATA_UNREGISTERED, 32])?;
        let payload = payload.strip_prefix(&STAMP_SEI_UUID)?;
        let sent_us = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
        let frame = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
        Some(FrameStamp { sent_us, frame })
    }
}

/// Inserts emulation prevention bytes (00 00 0x, x <= 3 → 00 00 03 0x).
fn escape_rbsp(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 4);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Removes emulation prevention bytes (00 00 03 → 00 00).
fn unescape_rbsp(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &b in escaped {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits Annex B into NAL units.
    fn nals(data: &[u8]) -> Vec<&[u8]> {
        annexb_nal_units(data)
            .unwrap()
            .into_iter()
            .map(|(_, nal)| nal)
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
    fn opus_durations_from_toc() {
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(opus_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_samples(&[0x18]), Some(2880)); // SILK NB 60 ms
        assert_eq!(opus_samples(&[0x19]), Some(5760)); // two of them
        assert_eq!(opus_samples(&[0x70]), Some(480)); // hybrid FB 10 ms
        assert_eq!(opus_samples(&[0xF8]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_samples(&[0xE3, 0x03]), Some(360)); // CELT FB 2.5 ms x 3
        assert_eq!(opus_samples(&[0xE3, 0x00]), None); // code 3 with no frame
        assert_eq!(opus_samples(&[0xE3]), None); // code 3 with no count
        assert_eq!(opus_samples(&[0xFB, 0x07]), None); // 140 ms
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
    fn annexb_splits_on_both_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 0, 1, 0x65, 0x88,
        ];
        assert_eq!(
            annexb_nal_units(&data).unwrap(),
            vec![
                (4, &[0x67, 0x42][..]),
                (9, &[0x68, 0xCE][..]),
                (16, &[0x65, 0x88][..])
            ]
        );
        assert_eq!(annexb_nal_units(&[0, 0]).unwrap(), vec![]);
        assert_eq!(
            annexb_nal_units(&[0, 7, 0, 0, 1, 0x65]),
            Err(ClipError::NoStartCode { offset: 1 })
        );
        assert_eq!(
            annexb_nal_units(&[0, 0, 1, 0, 0, 1, 0x65]),
            Err(ClipError::TruncatedNal { offset: 3 })
        );
        assert_eq!(
            annexb_nal_units(&[0, 0, 1, 0xE5]),
            Err(ClipError::ForbiddenBit { offset: 3 })
        );
    }

    #[test]
    fn access_units_start_at_first_mb_zero() {
        // Two pictures of two slices each (first_mb_in_slice 0 then 1: 0x88 is ue 0 then
        // slice_type, 0x40 is ue 1), and an SEI that begins the second picture.
        let nals: [&[u8]; 7] = [
            &[0x67, 0x42],
            &[0x68, 0xCE],
            &[0x65, 0x88],
            &[0x65, 0x40],
            &[0x06, 0x05],
            &[0x41, 0x9A],
            &[0x41, 0x40],
        ];
        let data = annexb(&nals);
        let units = access_units(&data).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(
            (
                units[0].nals.as_slice(),
                units[0].first_slice,
                units[0].keyframe
            ),
            (&nals[..4], Some(2), true)
        );
        assert_eq!(
            (
                units[1].nals.as_slice(),
                units[1].first_slice,
                units[1].keyframe
            ),
            (&nals[4..], Some(1), false)
        );
        assert_eq!(
            access_units(&annexb(&[&[0x41]])).unwrap_err(),
            ClipError::TruncatedNal { offset: 4 }
        );
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
            ClipError::PageCrc { offset: 0 }
        );
        assert_eq!(
            Clip::parse(h264, &flipped(47)).unwrap_err(),
            ClipError::NoPage { offset: 47 }
        );
        // The last page: 50 packets of 160 bytes.
        assert_eq!(
            Clip::parse(h264, &ogg[..ogg.len() - 1]).unwrap_err(),
            ClipError::TruncatedPage {
                offset: ogg.len() - 27 - 50 - 50 * 160
            }
        );
        assert_eq!(
            Clip::parse(h264, &ogg[47..]).unwrap_err(),
            ClipError::NoBeginningOfStream
        );
    }

    #[test]
    fn ogg_pages_and_packets() {
        /// One page with a correct CRC.
        fn page(flags: u8, sequence: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
            let mut page = b"OggS".to_vec();
            page.extend_from_slice(&[0, flags]);
            page.extend_from_slice(&[0; 8]); // granule position
            page.extend_from_slice(&0x1234_5678u32.to_le_bytes());
            page.extend_from_slice(&sequence.to_le_bytes());
            page.extend_from_slice(&[0; 4]);
            page.push(lacing.len() as u8);
            page.extend_from_slice(lacing);
            page.extend_from_slice(body);
            let crc = ogg_crc(&page);
            page[22..26].copy_from_slice(&crc.to_le_bytes());
            page
        }
        // A 300-byte packet across two pages, then a 2-byte one; an empty packet.
        let big: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let mut file = page(OGG_BEGINNING_OF_STREAM, 0, &[255], &big[..255]);
        let mut tail = big[255..].to_vec();
        tail.extend_from_slice(&[7, 8]);
        file.extend(page(OGG_CONTINUED, 1, &[45, 2, 0], &tail));
        assert_eq!(
            ogg_packets(&file).unwrap(),
            vec![big.clone(), vec![7, 8], vec![]]
        );
        // The known CRC of a real page: the clip's first.
        assert_eq!(
            ogg_crc(&CLIP_OGG_OPUS[..47]),
            u32::from_le_bytes(CLIP_OGG_OPUS[22..26].try_into().unwrap())
        );

        let first = page(OGG_BEGINNING_OF_STREAM, 0, &[255], &big[..255]);
        let second = |flags, sequence| page(flags, sequence, &[45], &big[255..]);
        let cases = [
            (
                [first.clone(), second(0, 1)].concat(),
                ClipError::Continuation {
                    offset: 283,
                    continued: false,
                },
            ),
            (
                [first.clone(), second(OGG_CONTINUED, 2)].concat(),
                ClipError::PageSequence {
                    offset: 283,
                    sequence: 2,
                    expected: 1,
                },
            ),
            (first.clone(), ClipError::UnfinishedPacket),
            (
                page(OGG_BEGINNING_OF_STREAM | OGG_CONTINUED, 0, &[1], &[1]),
                ClipError::Continuation {
                    offset: 0,
                    continued: true,
                },
            ),
        ];
        for (data, error) in cases {
            assert_eq!(ogg_packets(&data).unwrap_err(), error);
        }
        let mut other = page(OGG_BEGINNING_OF_STREAM, 0, &[1], &[1]);
        let mut next = page(0, 1, &[1], &[1]);
        next[14] ^= 1;
        let crc = ogg_crc(&next);
        next[22..26].copy_from_slice(&crc.to_le_bytes());
        other.extend(next);
        assert_eq!(
            ogg_packets(&other).unwrap_err(),
            ClipError::OtherStream {
                offset: 29,
                serial: 0x1234_5679,
                expected: 0x1234_5678
            }
        );
        let mut v1 = page(OGG_BEGINNING_OF_STREAM, 0, &[1], &[1]);
        v1[4] = 1;
        assert_eq!(
            ogg_packets(&v1).unwrap_err(),
            ClipError::PageVersion {
                offset: 0,
                version: 1
            }
        );
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            escape_rbsp(&[0, 0, 1, 0, 0, 0, 5]),
            vec![0, 0, 3, 1, 0, 0, 3, 0, 5]
        );
        assert_eq!(
            unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 5]),
            vec![0, 0, 1, 0, 0, 0, 5]
        );
    }

    #[test]
    fn stamp_sei_round_trip() {
        // Zero bytes in the values force emulation prevention on the way out.
        for stamp in [
            FrameStamp {
                sent_us: 1_700_000_000_000_000,
                frame: 0,
            },
            FrameStamp {
                sent_us: 0x0000_0300_0000_0001,
                frame: u64::MAX,
            },
        ] {
            let sei = stamp.to_sei();
            assert_eq!(sei[0], 0x06);
            assert!(!sei.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
            assert_eq!(FrameStamp::from_sei(&sei), Some(stamp));
        }
        assert_eq!(FrameStamp::from_sei(&[0x06, 5, 16, 0, 1]), None);
        assert_eq!(FrameStamp::from_sei(&[0x41, 0x9a]), None);
    }
}
