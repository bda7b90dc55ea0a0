//! Reading fragmented MP4 (CMAF) as an LL-HLS server serves it: the init section (`EXT-X-MAP`)
//! for the tracks, then parts and segments (`moof` + `mdat` pairs) for the frame stamps in the
//! video samples and the time each track covers.
//!
//! Only what `publish` measures is read: `tkhd` track IDs, `mdhd` timescales, `hdlr` handler
//! types, the `avcC` NAL length size and first SPS (for the picture size) and `trex` defaults
//! from the init section; `tfhd`, `tfdt` and `trun` from each fragment (with the first video
//! sample's flags and NAL types, to tell whether the fragment starts at a key frame). Everything
//! else is skipped by its size.
//!
//! An init section may hold video, audio or both: an HLS ladder's renditions are video-only and
//! audio-only media playlists beside the muxed one.
//!
//! The bytes come from the network, so nothing here panics or trusts a length: every box, sample
//! and NAL unit is bounds-checked and a bad one is a [`Fmp4Error`] naming where it was.

use std::fmt;

use crate::media::FrameStamp;

/// Samples one `trun` may declare: far more than any part or segment holds (a 10 s segment at
/// 240 fps is 2,400), small enough that a forged count cannot make the walk spin.
const MAX_SAMPLES_PER_RUN: u32 = 1 << 20;

/// A box type, printed as text when it is ASCII.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

/// Why an init section or fragment could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fmp4Error {
    /// A box's size is smaller than its header or runs past its parent.
    #[error("box {fourcc} at byte {offset}: size {size} does not fit in the {room} bytes left")]
    BadBoxSize {
        /// Box type.
        fourcc: FourCc,
        /// Where the box starts in the file.
        offset: usize,
        /// Its declared size.
        size: u64,
        /// Bytes from its start to the end of its parent.
        room: usize,
    },
    /// Fewer bytes than a box header or field needs.
    #[error("{what} at byte {offset}: truncated")]
    Truncated {
        /// The box or field.
        what: &'static str,
        /// Where it starts in the file.
        offset: usize,
    },
    /// A box the format requires is absent.
    #[error("no {0} box")]
    Missing(&'static str),
    /// The init section has no H.264 track (`hdlr` `vide` with an `avc1`/`avc3` `avcC`).
    #[error("the init section has no H.264 video track")]
    NoVideoTrack,
    /// The init section has no sound track (`hdlr` `soun`).
    #[error("the init section has no audio track")]
    NoAudioTrack,
    /// The init section has neither an H.264 nor a sound track.
    #[error("the init section has neither an H.264 nor an audio track")]
    NoTrack,
    /// `avcC` declares a NAL length size H.264 does not allow (1, 2 or 4).
    #[error("avcC NAL unit length size {0} (must be 1, 2 or 4)")]
    BadNalLengthSize(u8),
    /// A track's timescale is 0.
    #[error("track {0}: timescale 0")]
    ZeroTimescale(u32),
    /// A `trun` declares more samples than it could hold.
    #[error("track {track}: trun of {count} samples")]
    TooManySamples {
        /// Track ID.
        track: u32,
        /// Declared sample count.
        count: u32,
    },
    /// A sample's bytes lie outside the file.
    #[error("track {track}: sample {index} at {start}..{end} lies outside the {len} bytes")]
    SampleOutOfBounds {
        /// Track ID.
        track: u32,
        /// Sample number within its `trun`.
        index: u32,
        /// First byte (may be negative when a data offset points before the file).
        start: i128,
        /// End (exclusive).
        end: i128,
        /// File length.
        len: usize,
    },
    /// A NAL unit's length prefix runs past the end of its sample.
    #[error("track {track}: sample {index}: NAL unit of {nal_len} bytes overruns the sample")]
    NalOverrun {
        /// Track ID.
        track: u32,
        /// Sample number within its `trun`.
        index: u32,
        /// The declared length.
        nal_len: usize,
    },
}

/// `trex` defaults of one track (ISO/IEC 14496-12 §8.8.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SampleDefaults {
    duration: u32,
    size: u32,
    flags: u32,
}

/// One track of the init section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    /// `tkhd` track ID.
    pub track_id: u32,
    /// `mdhd` timescale (ticks per second).
    pub timescale: u32,
    defaults: SampleDefaults,
}

/// The H.264 track of the init section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTrack {
    /// ID and timescale.
    pub track: TrackInfo,
    /// Bytes of each NAL unit's length prefix in the samples (`avcC` `lengthSizeMinusOne + 1`).
    pub nal_length_size: u8,
    /// Width and height the first SPS of the `avcC` says; `None` if it has none or it cannot
    /// be read.
    pub size: Option<(u32, u32)>,
}

/// What an init section says about the tracks `publish` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init {
    /// The H.264 track (the first one, if there are several), if any.
    pub video: Option<VideoTrack>,
    /// The first sound track (`hdlr` `soun`), if any.
    pub audio: Option<TrackInfo>,
}

/// The time one track covers in a fragment, in its timescale's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The earliest `tfdt`.
    pub start: u64,
    /// The latest `tfdt` plus the durations of that run's samples: where the track ends.
    pub end: u64,
    /// Ticks per second.
    pub timescale: u32,
}

impl Span {
    /// `start` in microseconds.
    pub fn start_us(&self) -> i64 {
        ticks_to_us(self.start, self.timescale)
    }

    /// `end` in microseconds.
    pub fn end_us(&self) -> i64 {
        ticks_to_us(self.end, self.timescale)
    }
}

/// Ticks to microseconds, saturating (timescale 0 gives 0).
fn ticks_to_us(ticks: u64, timescale: u32) -> i64 {
    if timescale == 0 {
        return 0;
    }
    let us = u128::from(ticks) * 1_000_000 / u128::from(timescale);
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// What the first video sample of a fragment is: a player switching renditions at a segment
/// boundary can only start decoding there if it is a key frame both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstSample {
    /// Its sample flags (from `trun`, `tfhd` or `trex`) call it a sync sample
    /// (`sample_is_non_sync_sample` clear).
    pub sync: bool,
    /// It holds an IDR slice (NAL unit type 5).
    pub idr: bool,
}

impl FirstSample {
    /// A key frame both by its flags and by its bytes.
    pub fn keyframe(&self) -> bool {
        self.sync && self.idr
    }
}

/// What one part or segment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Frame stamps found in the video samples, in sample order.
    pub stamps: Vec<FrameStamp>,
    /// Video samples read.
    pub video_samples: u64,
    /// The first video sample (of the earliest `moof`), if there is one.
    pub first_video_sample: Option<FirstSample>,
    /// Audio samples (coded audio frames) counted.
    pub audio_samples: u64,
    /// The time the video track covers.
    pub video: Option<Span>,
    /// The time the audio track covers.
    pub audio: Option<Span>,
}

/// One box: its type, where it starts in the file, and its body.
#[derive(Debug, Clone, Copy)]
struct Mp4Box<'a> {
    fourcc: [u8; 4],
    /// File offset of the box's first header byte.
    start: usize,
    /// File offset of the body's first byte.
    body_start: usize,
    body: &'a [u8],
}

/// The boxes in `data`, whose first byte is at file offset `base`.
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

fn boxes(data: &[u8], base: usize) -> Boxes<'_> {
    Boxes { data, pos: 0, base }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Mp4Box<'a>, Fmp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.pos..).filter(|r| !r.is_empty())?;
        let start = self.base + self.pos;
        let result = parse_box(rest, start);
        match &result {
            Ok((_, len)) => self.pos += len,
            // One bad box makes the rest of this level unreadable.
            Err(_) => self.pos = self.data.len(),
        }
        Some(result.map(|(b, _)| b))
    }
}

/// A box's type and body.
pub type RawBox<'a> = ([u8; 4], &'a [u8]);

/// The boxes at one level of `data`, as `(type, body)`, for tests and tools that look inside
/// boxes this reader does not interpret. An error if a size does not fit what is left.
pub fn read_boxes(data: &[u8]) -> Result<Vec<RawBox<'_>>, Fmp4Error> {
    boxes(data, 0)
        .map(|b| b.map(|b| (b.fourcc, b.body)))
        .collect()
}

/// The box at the start of `rest` and its total length.
fn parse_box(rest: &[u8], start: usize) -> Result<(Mp4Box<'_>, usize), Fmp4Error> {
    let truncated = Fmp4Error::Truncated {
        what: "box header",
        offset: start,
    };
    let (size, tail) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
    let (fourcc, tail) = tail.split_first_chunk::<4>().ok_or(truncated.clone())?;
    let (size, header) = match u32::from_be_bytes(*size) {
        0 => (rest.len() as u64, 8),
        1 => {
            let (large, _) = tail.split_first_chunk::<8>().ok_or(truncated)?;
            (u64::from_be_bytes(*large), 16)
        }
        n => (u64::from(n), 8),
    };
    let bad = || Fmp4Error::BadBoxSize {
        fourcc: FourCc(*fourcc),
        offset: start,
        size,
        room: rest.len(),
    };
    let len = usize::try_from(size).map_err(|_| bad())?;
    if len < header || len > rest.len() {
        return Err(bad());
    }
    let body = rest.get(header..len).ok_or_else(bad)?;
    Ok((
        Mp4Box {
            fourcc: *fourcc,
            start,
            body_start: start + header,
            body,
        },
        len,
    ))
}

impl<'a> Mp4Box<'a> {
    /// The child boxes of a container box, starting `skip` bytes into its body (a sample entry's
    /// fixed fields, a full box's version and count).
    fn children(&self, skip: usize) -> Result<Boxes<'a>, Fmp4Error> {
        let data = self.body.get(skip..).ok_or(Fmp4Error::Truncated {
            what: "box body",
            offset: self.body_start,
        })?;
        Ok(boxes(data, self.body_start + skip))
    }

    /// The first child of type `fourcc`.
    fn child(&self, fourcc: &[u8; 4]) -> Result<Option<Mp4Box<'a>>, Fmp4Error> {
        for b in self.children(0)? {
            let b = b?;
            if &b.fourcc == fourcc {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// A field reader over the body.
    fn reader(&self, what: &'static str) -> Reader<'a> {
        Reader {
            data: self.body,
            pos: 0,
            base: self.body_start,
            what,
        }
    }
}

/// Big-endian field reads with offsets for errors.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    what: &'static str,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Fmp4Error> {
        let out = self
            .data
            .get(self.pos..)
            .and_then(|r| r.first_chunk::<N>())
            .copied()
            .ok_or(Fmp4Error::Truncated {
                what: self.what,
                offset: self.base + self.pos,
            })?;
        self.pos += N;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Fmp4Error> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Fmp4Error> {
        self.bytes().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, Fmp4Error> {
        self.bytes().map(u64::from_be_bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), Fmp4Error> {
        if self.data.len().saturating_sub(self.pos) < n {
            return Err(Fmp4Error::Truncated {
                what: self.what,
                offset: self.base + self.pos,
            });
        }
        self.pos += n;
        Ok(())
    }

    /// A full box's version and flags.
    fn version_flags(&mut self) -> Result<(u8, u32), Fmp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    fn left(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

/// Sample entry types of H.264 (`avc3` keeps parameter sets in band).
const AVC_ENTRIES: [&[u8; 4]; 2] = [b"avc1", b"avc3"];
/// Bytes of a visual sample entry before its child boxes (ISO/IEC 14496-12 §12.1.3).
const VISUAL_SAMPLE_ENTRY_FIELDS: usize = 78;

impl Init {
    /// Reads an init section (`ftyp` + `moov`).
    pub fn parse(data: &[u8]) -> Result<Init, Fmp4Error> {
        let mut moov = None;
        for b in boxes(data, 0) {
            let b = b?;
            if &b.fourcc == b"moov" {
                moov = Some(b);
                break;
            }
        }
        let moov = moov.ok_or(Fmp4Error::Missing("moov"))?;
        let mut defaults = Vec::new();
        if let Some(mvex) = moov.child(b"mvex")? {
            for trex in mvex.children(0)? {
                let trex = trex?;
                if &trex.fourcc != b"trex" {
                    continue;
                }
                let mut r = trex.reader("trex");
                r.version_flags()?;
                let track_id = r.u32()?;
                r.u32()?; // default_sample_description_index
                let duration = r.u32()?;
                let size = r.u32()?;
                let flags = r.u32()?;
                defaults.push((
                    track_id,
                    SampleDefaults {
                        duration,
                        size,
                        flags,
                    },
                ));
            }
        }
        let defaults_of = |id: u32| {
            defaults
                .iter()
                .find(|(t, _)| *t == id)
                .map(|(_, d)| *d)
                .unwrap_or_default()
        };
        let (mut video, mut audio) = (None, None);
        for trak in moov.children(0)? {
            let trak = trak?;
            if &trak.fourcc != b"trak" {
                continue;
            }
            let tkhd = trak.child(b"tkhd")?.ok_or(Fmp4Error::Missing("tkhd"))?;
            let mut r = tkhd.reader("tkhd");
            let (version, _) = r.version_flags()?;
            r.skip(if version == 1 { 16 } else { 8 })?; // creation, modification times
            let track_id = r.u32()?;
            let mdia = trak.child(b"mdia")?.ok_or(Fmp4Error::Missing("mdia"))?;
            let mdhd = mdia.child(b"mdhd")?.ok_or(Fmp4Error::Missing("mdhd"))?;
            let mut r = mdhd.reader("mdhd");
            let (version, _) = r.version_flags()?;
            r.skip(if version == 1 { 16 } else { 8 })?;
            let timescale = r.u32()?;
            let hdlr = mdia.child(b"hdlr")?.ok_or(Fmp4Error::Missing("hdlr"))?;
            let mut r = hdlr.reader("hdlr");
            r.version_flags()?;
            r.u32()?; // pre_defined
            let handler: [u8; 4] = r.bytes()?;
            let info = TrackInfo {
                track_id,
                timescale,
                defaults: defaults_of(track_id),
            };
            match &handler {
                b"vide" if video.is_none() => {
                    if let Some((nal_length_size, size)) = avc_config(&mdia)? {
                        if timescale == 0 {
                            return Err(Fmp4Error::ZeroTimescale(track_id));
                        }
                        video = Some(VideoTrack {
                            track: info,
                            nal_length_size,
                            size,
                        });
                    }
                }
                b"soun" if audio.is_none() && timescale > 0 => audio = Some(info),
                _ => {}
            }
        }
        if video.is_none() && audio.is_none() {
            return Err(Fmp4Error::NoTrack);
        }
        Ok(Init { video, audio })
    }

    /// The H.264 track, or [`Fmp4Error::NoVideoTrack`] for a playlist that must carry video.
    pub fn require_video(&self) -> Result<&VideoTrack, Fmp4Error> {
        self.video.as_ref().ok_or(Fmp4Error::NoVideoTrack)
    }

    /// The sound track, or [`Fmp4Error::NoAudioTrack`] for a playlist that must carry audio.
    pub fn require_audio(&self) -> Result<&TrackInfo, Fmp4Error> {
        self.audio.as_ref().ok_or(Fmp4Error::NoAudioTrack)
    }

    fn track(&self, id: u32) -> Option<(TrackInfo, Option<u8>)> {
        if let Some(video) = self.video.filter(|v| v.track.track_id == id) {
            return Some((video.track, Some(video.nal_length_size)));
        }
        self.audio.filter(|a| a.track_id == id).map(|a| (a, None))
    }
}

/// What an `avcC` says: the NAL length size, and the picture size of its first SPS.
type AvcConfig = (u8, Option<(u32, u32)>);

/// `minf/stbl/stsd/avc1|avc3/avcC` of a `mdia`, `None` if not H.264.
fn avc_config(mdia: &Mp4Box<'_>) -> Result<Option<AvcConfig>, Fmp4Error> {
    let Some(stsd) = mdia
        .child(b"minf")?
        .map(|minf| minf.child(b"stbl"))
        .transpose()?
        .flatten()
        .map(|stbl| stbl.child(b"stsd"))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    // version + flags, entry_count
    for entry in stsd.children(8)? {
        let entry = entry?;
        if !AVC_ENTRIES.contains(&&entry.fourcc) {
            continue;
        }
        for child in entry.children(VISUAL_SAMPLE_ENTRY_FIELDS)? {
            let child = child?;
            if &child.fourcc != b"avcC" {
                continue;
            }
            let mut r = child.reader("avcC");
            r.skip(4)?; // configurationVersion, profile, compatibility, level
            let size = (r.u8()? & 0x03) + 1;
            if size == 3 {
                return Err(Fmp4Error::BadNalLengthSize(size));
            }
            return Ok(Some((size, first_sps_size(&mut r))));
        }
    }
    Ok(None)
}

/// The picture size of the first SPS of an `avcC` (ISO/IEC 14496-15 §5.3.3.1), read from
/// `numOfSequenceParameterSets` on; `None` if there is none or it cannot be read (the size is
/// a check of its own, so an unreadable SPS is reported, not an error of the init section).
fn first_sps_size(r: &mut Reader<'_>) -> Option<(u32, u32)> {
    let count = r.u8().ok()? & 0x1f;
    if count == 0 {
        return None;
    }
    let [hi, lo] = r.bytes::<2>().ok()?;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let sps = r.data.get(r.pos..)?.get(..len)?;
    super::sps::picture_size(sps)
}

/// `sample_flags` bit `sample_is_non_sync_sample` (ISO/IEC 14496-12 §8.8.3.1).
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;
/// H.264 NAL unit type of an IDR slice.
const NAL_IDR: u8 = 5;

/// `tfhd` flags (ISO/IEC 14496-12 §8.8.7).
const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8).
const TRUN_DATA_OFFSET: u32 = 0x001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x004;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x800;

/// A track's time in one fragment, as it accumulates.
fn widen(span: &mut Option<Span>, start: u64, end: u64, timescale: u32) {
    match span {
        Some(s) => {
            s.start = s.start.min(start);
            s.end = s.end.max(end);
        }
        None => {
            *span = Some(Span {
                start,
                end,
                timescale,
            })
        }
    }
}

impl Fragment {
    /// Reads a part or segment: every `moof` (with the `mdat` its data offsets point into).
    pub fn parse(init: &Init, data: &[u8]) -> Result<Fragment, Fmp4Error> {
        let mut out = Fragment::default();
        for b in boxes(data, 0) {
            let b = b?;
            if &b.fourcc == b"moof" {
                out.read_moof(init, data, &b)?;
            }
        }
        Ok(out)
    }

    fn read_moof(&mut self, init: &Init, file: &[u8], moof: &Mp4Box<'_>) -> Result<(), Fmp4Error> {
        // Without default-base-is-moof or an explicit base, a traf's data follows the previous
        // traf's (§8.8.7.1); the first one's starts at the moof.
        let mut previous_end = moof.start as i128;
        for traf in moof.children(0)? {
            let traf = traf?;
            if &traf.fourcc != b"traf" {
                continue;
            }
            let tfhd = traf.child(b"tfhd")?.ok_or(Fmp4Error::Missing("tfhd"))?;
            let mut r = tfhd.reader("tfhd");
            let (_, flags) = r.version_flags()?;
            let track_id = r.u32()?;
            let Some((track, nal_length_size)) = init.track(track_id) else {
                continue;
            };
            let base = if flags & TFHD_BASE_DATA_OFFSET != 0 {
                i128::from(r.u64()?)
            } else if flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 {
                moof.start as i128
            } else {
                previous_end
            };
            if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
                r.u32()?;
            }
            let default_duration = if flags & TFHD_DEFAULT_DURATION != 0 {
                r.u32()?
            } else {
                track.defaults.duration
            };
            let default_size = if flags & TFHD_DEFAULT_SIZE != 0 {
                r.u32()?
            } else {
                track.defaults.size
            };
            let default_flags = if flags & TFHD_DEFAULT_FLAGS != 0 {
                r.u32()?
            } else {
                track.defaults.flags
            };
            let mut decode_time = match traf.child(b"tfdt")? {
                Some(tfdt) => {
                    let mut r = tfdt.reader("tfdt");
                    let (version, _) = r.version_flags()?;
                    Some(if version == 1 {
                        r.u64()?
                    } else {
                        u64::from(r.u32()?)
                    })
                }
                None => None,
            };
            let mut data_pos = base;
            for trun in traf.children(0)? {
                let trun = trun?;
                if &trun.fourcc != b"trun" {
                    continue;
                }
                let run = Run {
                    track,
                    nal_length_size,
                    default_duration,
                    default_size,
                    default_flags,
                };
                let (end, duration) = self.read_trun(&run, file, &trun, base, data_pos)?;
                data_pos = end;
                if let Some(start) = decode_time {
                    let end = start.saturating_add(duration);
                    let span = if nal_length_size.is_some() {
                        &mut self.video
                    } else {
                        &mut self.audio
                    };
                    widen(span, start, end, track.timescale);
                    decode_time = Some(end);
                }
            }
            previous_end = data_pos;
        }
        Ok(())
    }

    /// Walks one `trun`'s samples; returns where its data ended and its total duration.
    fn read_trun(
        &mut self,
        run: &Run,
        file: &[u8],
        trun: &Mp4Box<'_>,
        base: i128,
        data_pos: i128,
    ) -> Result<(i128, u64), Fmp4Error> {
        let mut r = trun.reader("trun");
        let (_, flags) = r.version_flags()?;
        let count = r.u32()?;
        let mut pos = if flags & TRUN_DATA_OFFSET != 0 {
            // Signed, relative to the base (§8.8.8.2).
            base + i128::from(r.u32()? as i32)
        } else {
            data_pos
        };
        let first_sample_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let per_sample = [
            TRUN_DURATION,
            TRUN_SIZE,
            TRUN_FLAGS,
            TRUN_COMPOSITION_OFFSET,
        ]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
            * 4;
        let too_many = Fmp4Error::TooManySamples {
            track: run.track.track_id,
            count,
        };
        if count > MAX_SAMPLES_PER_RUN || (per_sample > 0 && r.left() / per_sample < count as usize)
        {
            return Err(too_many);
        }
        let mut duration = 0u64;
        for index in 0..count {
            let sample_duration = if flags & TRUN_DURATION != 0 {
                r.u32()?
            } else {
                run.default_duration
            };
            let size = if flags & TRUN_SIZE != 0 {
                r.u32()?
            } else {
                run.default_size
            };
            let sample_flags = if flags & TRUN_FLAGS != 0 {
                r.u32()?
            } else {
                run.default_flags
            };
            // §8.8.8.3: the first sample's flags override the others for it alone.
            let sample_flags = match first_sample_flags {
                Some(first) if index == 0 => first,
                _ => sample_flags,
            };
            if flags & TRUN_COMPOSITION_OFFSET != 0 {
                r.u32()?;
            }
            duration += u64::from(sample_duration);
            let end = pos + i128::from(size);
            let Some(nal_length_size) = run.nal_length_size else {
                self.audio_samples += 1;
                pos = end;
                continue;
            };
            let out_of_bounds = || Fmp4Error::SampleOutOfBounds {
                track: run.track.track_id,
                index,
                start: pos,
                end,
                len: file.len(),
            };
            let start = usize::try_from(pos).map_err(|_| out_of_bounds())?;
            let stop = usize::try_from(end).map_err(|_| out_of_bounds())?;
            let sample = file.get(start..stop).ok_or_else(out_of_bounds)?;
            let first = self.video_samples == 0;
            self.video_samples += 1;
            let idr = self.read_video_sample(run, nal_length_size, index, sample)?;
            if first {
                self.first_video_sample = Some(FirstSample {
                    sync: sample_flags & NON_SYNC_SAMPLE == 0,
                    idr,
                });
            }
            pos = end;
        }
        Ok((pos, duration))
    }

    /// The stamps among one video sample's length-prefixed NAL units; returns whether one of
    /// them is an IDR slice.
    fn read_video_sample(
        &mut self,
        run: &Run,
        nal_length_size: u8,
        index: u32,
        sample: &[u8],
    ) -> Result<bool, Fmp4Error> {
        let size = usize::from(nal_length_size);
        let mut idr = false;
        let mut rest = sample;
        while !rest.is_empty() {
            let (prefix, tail) = rest.split_at_checked(size).ok_or(Fmp4Error::NalOverrun {
                track: run.track.track_id,
                index,
                nal_len: size,
            })?;
            let nal_len = prefix
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let (nal, tail) = tail
                .split_at_checked(nal_len)
                .ok_or(Fmp4Error::NalOverrun {
                    track: run.track.track_id,
                    index,
                    nal_len,
                })?;
            idr |= nal.first().is_some_and(|h| h & 0x1f == NAL_IDR);
            self.stamps.extend(FrameStamp::from_sei(nal));
            rest = tail;
        }
        Ok(idr)
    }
}

/// What a `trun` walk needs of its track.
struct Run {
    track: TrackInfo,
    /// The NAL length size of a video track; `None` for audio.
    nal_length_size: Option<u8>,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A box with this body.
    pub(crate) fn mp4_box(fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(fourcc);
        b.extend_from_slice(body);
        b
    }

    fn full_box(fourcc: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut b = (u32::from(version) << 24 | flags).to_be_bytes().to_vec();
        b.extend_from_slice(body);
        mp4_box(fourcc, &b)
    }

    fn trak(id: u32, timescale: u32, handler: &[u8; 4], stsd_entry: Option<Vec<u8>>) -> Vec<u8> {
        let mut tkhd = vec![0; 8];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0; 68]);
        let mut mdhd = vec![0; 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let mut hdlr = vec![0; 4];
        hdlr.extend_from_slice(handler);
        hdlr.extend_from_slice(&[0; 13]);
        let mut stsd = 1u32.to_be_bytes().to_vec();
        stsd.extend(stsd_entry.unwrap_or_default());
        let stbl = mp4_box(b"stbl", &full_box(b"stsd", 0, 0, &stsd));
        let minf = mp4_box(b"minf", &stbl);
        let mdia = [
            full_box(b"mdhd", 0, 0, &mdhd),
            full_box(b"hdlr", 0, 0, &hdlr),
            minf,
        ]
        .concat();
        mp4_box(
            b"trak",
            &[full_box(b"tkhd", 0, 3, &tkhd), mp4_box(b"mdia", &mdia)].concat(),
        )
    }

    /// An `avc1` sample entry whose `avcC` says `length_size`-byte NAL lengths and holds `sps`
    /// (none if empty) and no PPS.
    fn avc1(length_size: u8, sps: &[u8]) -> Vec<u8> {
        let mut avcc = vec![1, 0x42, 0xe0, 0x1f, 0xfc | (length_size - 1)];
        if sps.is_empty() {
            avcc.push(0xe0);
        } else {
            avcc.push(0xe1);
            avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            avcc.extend_from_slice(sps);
        }
        avcc.push(0); // numOfPictureParameterSets
        let mut body = vec![0; VISUAL_SAMPLE_ENTRY_FIELDS];
        body.extend(mp4_box(b"avcC", &avcc));
        mp4_box(b"avc1", &body)
    }

    /// The SPS of the first frame of simulcast layer `layer` of `layers`.
    fn layer_sps(layer: u8, layers: u8) -> Vec<u8> {
        let clip = crate::media::Clip::embedded_layer(layer, layers).unwrap();
        let frame = crate::media::H264Source::new(clip).next().unwrap();
        // The first NAL unit after the 4-byte start code, up to the next start code.
        let rest = &frame.data[4..];
        let end = rest.windows(4).position(|w| w == [0, 0, 0, 1]).unwrap();
        rest[..end].to_vec()
    }

    /// An init section: video track 1 at 90 kHz, audio track 2 at 48 kHz (trex default
    /// duration 1024).
    pub(crate) fn init_section(length_size: u8) -> Vec<u8> {
        init_of(true, true, length_size, &[])
    }

    /// An init section with the video track (its `avcC` holding `sps`), the audio track, or
    /// both, as [`init_section`] has them: the bridge's ladder renditions are video-only and
    /// audio-only.
    fn init_of(video: bool, audio: bool, length_size: u8, sps: &[u8]) -> Vec<u8> {
        let mut trex = 2u32.to_be_bytes().to_vec();
        trex.extend_from_slice(&[0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut moov = full_box(b"mvhd", 0, 0, &[0; 96]);
        if video {
            moov.extend(trak(1, 90_000, b"vide", Some(avc1(length_size, sps))));
        }
        if audio {
            moov.extend(trak(2, 48_000, b"soun", None));
        }
        moov.extend(mp4_box(b"mvex", &full_box(b"trex", 0, 0, &trex)));
        [mp4_box(b"ftyp", b"iso6\0\0\0\0"), mp4_box(b"moov", &moov)].concat()
    }

    /// A fragment: video samples (each one NAL list, 3000 ticks, flagged sync when it holds an
    /// IDR slice and non-sync otherwise, as the bridge writes them) from `video_dts`, then
    /// `audio` samples of 1024 ticks (default duration from trex) from `audio_dts`.
    pub(crate) fn fragment(
        video_dts: u64,
        video: &[Vec<Vec<u8>>],
        audio_dts: u64,
        audio: usize,
    ) -> Vec<u8> {
        fragment_sized(4, video_dts, video, audio_dts, audio)
    }

    /// [`fragment`] with `length_size`-byte NAL length prefixes.
    fn fragment_sized(
        length_size: usize,
        video_dts: u64,
        video: &[Vec<Vec<u8>>],
        audio_dts: u64,
        audio: usize,
    ) -> Vec<u8> {
        let samples: Vec<Vec<u8>> = video
            .iter()
            .map(|nals| {
                nals.iter()
                    .flat_map(|n| {
                        let len = (n.len() as u32).to_be_bytes();
                        [&len[4 - length_size..], n].concat()
                    })
                    .collect()
            })
            .collect();
        let build = |video_offset: u32, audio_offset: u32| {
            let mut vtrun = (video.len() as u32).to_be_bytes().to_vec();
            vtrun.extend_from_slice(&video_offset.to_be_bytes());
            for (s, nals) in samples.iter().zip(video) {
                let idr = nals
                    .iter()
                    .any(|n| n.first().is_some_and(|h| h & 0x1f == 5));
                let flags: u32 = if idr { 0x0200_0000 } else { 0x0101_0000 };
                vtrun.extend_from_slice(&3000u32.to_be_bytes());
                vtrun.extend_from_slice(&(s.len() as u32).to_be_bytes());
                vtrun.extend_from_slice(&flags.to_be_bytes());
            }
            let vtraf = [
                full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, &1u32.to_be_bytes()),
                full_box(b"tfdt", 1, 0, &video_dts.to_be_bytes()),
                full_box(
                    b"trun",
                    0,
                    TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS,
                    &vtrun,
                ),
            ]
            .concat();
            let mut atrun = (audio as u32).to_be_bytes().to_vec();
            atrun.extend_from_slice(&audio_offset.to_be_bytes());
            let mut atfhd = 2u32.to_be_bytes().to_vec();
            atfhd.extend_from_slice(&7u32.to_be_bytes()); // default size
            let atraf = [
                full_box(
                    b"tfhd",
                    0,
                    TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_SIZE,
                    &atfhd,
                ),
                full_box(b"tfdt", 0, 0, &(audio_dts as u32).to_be_bytes()),
                full_box(b"trun", 0, TRUN_DATA_OFFSET, &atrun),
            ]
            .concat();
            mp4_box(
                b"moof",
                &[
                    full_box(b"mfhd", 0, 0, &1u32.to_be_bytes()),
                    mp4_box(b"traf", &vtraf),
                    mp4_box(b"traf", &atraf),
                ]
                .concat(),
            )
        };
        let video_bytes: Vec<u8> = samples.concat();
        let moof_len = build(0, 0).len() as u32;
        let moof = build(moof_len + 8, moof_len + 8 + video_bytes.len() as u32);
        let mdat = mp4_box(b"mdat", &[video_bytes, vec![0xAA; 7 * audio]].concat());
        [mp4_box(b"styp", b"msdh\0\0\0\0"), moof, mdat].concat()
    }

    fn stamp(frame: u64) -> FrameStamp {
        FrameStamp {
            sent_us: 1_700_000_000_000_000 + frame,
            frame,
        }
    }

    #[test]
    fn reads_the_tracks_of_an_init_section() {
        let init = Init::parse(&init_section(4)).unwrap();
        let video = init.video.unwrap();
        assert_eq!(video.track.track_id, 1);
        assert_eq!(video.track.timescale, 90_000);
        assert_eq!(video.nal_length_size, 4);
        assert_eq!(video.size, None, "no SPS in the avcC");
        let audio = init.audio.unwrap();
        assert_eq!((audio.track_id, audio.timescale), (2, 48_000));
        assert_eq!(audio.defaults.duration, 1024);
        assert_eq!(
            Init::parse(&init_section(2)).unwrap().require_video(),
            Ok(&VideoTrack {
                nal_length_size: 2,
                ..video
            })
        );
    }

    /// The ladder's renditions: video-only with the layer's SPS in the avcC, audio-only.
    #[test]
    fn reads_video_only_and_audio_only_init_sections() {
        for (layer, size) in [(0, (640, 360)), (1, (426, 240)), (2, (212, 120))] {
            let init = Init::parse(&init_of(true, false, 4, &layer_sps(layer, 3))).unwrap();
            assert_eq!(init.audio, None);
            assert_eq!(init.require_video().unwrap().size, Some(size));
            assert_eq!(init.require_audio(), Err(Fmp4Error::NoAudioTrack));
        }
        let audio = Init::parse(&init_of(false, true, 4, &[])).unwrap();
        assert_eq!(audio.video, None);
        assert_eq!(audio.require_video(), Err(Fmp4Error::NoVideoTrack));
        assert_eq!(audio.require_audio().unwrap().timescale, 48_000);
        // An SPS cut short reads no size, and the init section is still read.
        let sps = layer_sps(0, 3);
        let cut = Init::parse(&init_of(true, false, 4, &sps[..4])).unwrap();
        assert_eq!(cut.require_video().unwrap().size, None);
    }

    #[test]
    fn tells_whether_a_fragment_starts_at_a_key_frame() {
        let init = Init::parse(&init_section(4)).unwrap();
        let (idr, p) = (vec![0x65, 0x88, 0x84, 0x00], vec![0x41, 0x9a, 0x02]);
        let keyed = fragment(
            0,
            &[vec![stamp(1).to_sei(), idr.clone()], vec![p.clone()]],
            0,
            4,
        );
        let f = Fragment::parse(&init, &keyed).unwrap();
        let first = f.first_video_sample.unwrap();
        assert_eq!(
            first,
            FirstSample {
                sync: true,
                idr: true
            }
        );
        assert!(first.keyframe());
        assert_eq!((f.video_samples, f.audio_samples), (2, 4));
        let inner = fragment(3000, &[vec![p.clone()], vec![idr.clone()]], 0, 0);
        let first = Fragment::parse(&init, &inner).unwrap().first_video_sample;
        assert_eq!(
            first,
            Some(FirstSample {
                sync: false,
                idr: false
            })
        );
        // An IDR whose flags say non-sync (or a sync-flagged P frame) is no switch point.
        let mut lying = keyed.clone();
        // The first sample's trun record: duration, size, flags.
        let size = (8 + stamp(1).to_sei().len() + idr.len()) as u32;
        let record = [3000u32, size, 0x0200_0000].map(u32::to_be_bytes).concat();
        let at = lying.windows(12).position(|w| w == record).unwrap() + 8;
        lying[at..at + 4].copy_from_slice(&0x0101_0000u32.to_be_bytes());
        let first = Fragment::parse(&init, &lying)
            .unwrap()
            .first_video_sample
            .unwrap();
        assert_eq!(
            first,
            FirstSample {
                sync: false,
                idr: true
            }
        );
        assert!(!first.keyframe());
        // Audio only: samples counted, no video.
        let audio_init = Init::parse(&init_of(false, true, 4, &[])).unwrap();
        let f = Fragment::parse(&audio_init, &keyed).unwrap();
        assert_eq!((f.video_samples, f.audio_samples), (0, 4));
        assert_eq!((f.first_video_sample, f.stamps.len()), (None, 0));
        assert!(f.audio.is_some() && f.video.is_none());
    }

    #[test]
    fn finds_stamps_and_track_times_in_a_fragment() {
        let init = Init::parse(&init_section(4)).unwrap();
        let idr = vec![0x65, 0x88, 0x84, 0x00];
        let p = vec![0x41, 0x9a, 0x02];
        let video = vec![
            vec![stamp(30).to_sei(), idr],
            vec![stamp(31).to_sei(), p.clone()],
            // A frame without a stamp is read but gives none.
            vec![p],
        ];
        let data = fragment(90_000, &video, 48_000, 10);
        let f = Fragment::parse(&init, &data).unwrap();
        assert_eq!(f.stamps, vec![stamp(30), stamp(31)]);
        assert_eq!(f.video_samples, 3);
        let v = f.video.unwrap();
        assert_eq!((v.start, v.end), (90_000, 99_000));
        assert_eq!(v.end_us(), 1_100_000);
        let a = f.audio.unwrap();
        assert_eq!(
            (a.start, a.end, a.timescale),
            (48_000, 48_000 + 10_240, 48_000)
        );
        assert_eq!(a.end_us(), 1_213_333);
    }

    #[test]
    fn two_byte_nal_lengths() {
        let init = Init::parse(&init_section(2)).unwrap();
        let video = [vec![stamp(5).to_sei(), vec![0x65; 300]]];
        let data = fragment_sized(2, 0, &video, 0, 0);
        assert_eq!(
            Fragment::parse(&init, &data).unwrap().stamps,
            vec![stamp(5)]
        );
        // Read with 4-byte lengths, the same bytes overrun.
        let init4 = Init::parse(&init_section(4)).unwrap();
        assert!(matches!(
            Fragment::parse(&init4, &data),
            Err(Fmp4Error::NalOverrun { .. })
        ));
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let init = Init::parse(&init_section(4)).unwrap();
        let good = fragment(0, &[vec![stamp(1).to_sei()]], 0, 2);
        // Every truncation either parses (a prefix of whole boxes) or fails cleanly.
        for cut in 0..good.len() {
            let _ = Fragment::parse(&init, &good[..cut]);
        }
        for cut in 0..init_section(4).len() {
            let _ = Init::parse(&init_section(4)[..cut]);
        }
        // A box larger than the file.
        let mut big = good.clone();
        big[3] = 0xff;
        assert!(matches!(
            Fragment::parse(&init, &big),
            Err(Fmp4Error::BadBoxSize { .. })
        ));
        // A sample pointing past the mdat.
        let short = &good[..good.len() - 20];
        assert!(matches!(
            Fragment::parse(&init, short),
            Err(Fmp4Error::BadBoxSize { .. } | Fmp4Error::SampleOutOfBounds { .. })
        ));
        // A NAL length running past its sample.
        let bad_nal = fragment(0, &[vec![vec![0x65; 4]]], 0, 0);
        let at = bad_nal.len() - 8; // the 4-byte length prefix of the only NAL
        let mut bad_nal = bad_nal;
        bad_nal[at..at + 4].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(
            Fragment::parse(&init, &bad_nal),
            Err(Fmp4Error::NalOverrun { nal_len: 100, .. })
        ));
        assert_eq!(Init::parse(b""), Err(Fmp4Error::Missing("moov")));
        let neither = mp4_box(b"moov", &trak(3, 1000, b"text", None));
        assert_eq!(Init::parse(&neither), Err(Fmp4Error::NoTrack));
        assert_eq!(
            FourCc(*b"mo\x00v").to_string(),
            "mo\\x00v",
            "non-ASCII types print escaped"
        );
    }

    #[test]
    fn mutated_bytes_never_panic() {
        use rand::rngs::SmallRng;
        use rand::{RngExt as _, SeedableRng as _};
        let mut rng = SmallRng::seed_from_u64(7);
        let init_bytes = init_section(4);
        let init = Init::parse(&init_bytes).unwrap();
        let good = fragment(0, &[vec![stamp(1).to_sei(), vec![0x65; 40]]], 0, 3);
        for _ in 0..20_000 {
            let (mut f, mut i) = (good.clone(), init_bytes.clone());
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..f.len());
                f[at] = rng.random();
                let at = rng.random_range(0..i.len());
                i[at] = rng.random();
            }
            let _ = Fragment::parse(&init, &f);
            let _ = Init::parse(&i);
        }
    }

    #[test]
    fn a_forged_sample_count_is_refused() {
        let init = Init::parse(&init_section(4)).unwrap();
        let mut trun = 0xFFFF_FFFFu32.to_be_bytes().to_vec();
        trun.extend_from_slice(&0u32.to_be_bytes());
        let traf = [
            full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, &1u32.to_be_bytes()),
            full_box(b"trun", 0, TRUN_DATA_OFFSET | TRUN_SIZE, &trun),
        ]
        .concat();
        let moof = mp4_box(b"moof", &mp4_box(b"traf", &traf));
        assert!(matches!(
            Fragment::parse(&init, &moof),
            Err(Fmp4Error::TooManySamples { track: 1, .. })
        ));
    }
}
