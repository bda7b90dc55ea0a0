//! Reading fragmented MP4 (CMAF) as an LL-HLS server serves it: the init section (`EXT-X-MAP`)
//! for the tracks, then parts and segments (`moof` + `mdat` pairs) for the frame stamps in the
//! video samples and the time each track covers.
//!
//! Only what `publish` measures is read: `tkhd` track IDs, `mdhd` timescales, `hdlr` handler
//! types, the `avcC` NAL length size and `trex` defaults from the init section; `tfhd`, `tfdt`
//! and `trun` from each fragment. Everything else is skipped by its size.
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
}

/// What an init section says about the tracks `publish` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init {
    /// The H.264 track (the first one, if there are several).
    pub video: VideoTrack,
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

/// What one part or segment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Frame stamps found in the video samples, in sample order.
    pub stamps: Vec<FrameStamp>,
    /// Video samples read.
    pub video_samples: u64,
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
                defaults.push((track_id, SampleDefaults { duration, size }));
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
                    if let Some(nal_length_size) = avc_nal_length_size(&mdia)? {
                        if timescale == 0 {
                            return Err(Fmp4Error::ZeroTimescale(track_id));
                        }
                        video = Some(VideoTrack {
                            track: info,
                            nal_length_size,
                        });
                    }
                }
                b"soun" if audio.is_none() && timescale > 0 => audio = Some(info),
                _ => {}
            }
        }
        Ok(Init {
            video: video.ok_or(Fmp4Error::NoVideoTrack)?,
            audio,
        })
    }

    fn track(&self, id: u32) -> Option<(TrackInfo, bool)> {
        if self.video.track.track_id == id {
            return Some((self.video.track, true));
        }
        self.audio.filter(|a| a.track_id == id).map(|a| (a, false))
    }
}

/// `minf/stbl/stsd/avc1|avc3/avcC` of a `mdia`: the NAL length size, `None` if not H.264.
fn avc_nal_length_size(mdia: &Mp4Box<'_>) -> Result<Option<u8>, Fmp4Error> {
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
            return Ok(Some(size));
        }
    }
    Ok(None)
}

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
            let Some((track, is_video)) = init.track(track_id) else {
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
            if flags & TFHD_DEFAULT_FLAGS != 0 {
                r.u32()?;
            }
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
                    is_video,
                    default_duration,
                    default_size,
                    nal_length_size: init.video.nal_length_size,
                };
                let (end, duration) = self.read_trun(&run, file, &trun, base, data_pos)?;
                data_pos = end;
                if let Some(start) = decode_time {
                    let end = start.saturating_add(duration);
                    let span = if is_video {
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
        if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
            r.u32()?;
        }
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
            if flags & TRUN_FLAGS != 0 {
                r.u32()?;
            }
            if flags & TRUN_COMPOSITION_OFFSET != 0 {
                r.u32()?;
            }
            duration += u64::from(sample_duration);
            let end = pos + i128::from(size);
            if run.is_video {
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
                self.video_samples += 1;
                self.read_video_sample(run, index, sample)?;
            }
            pos = end;
        }
        Ok((pos, duration))
    }

    /// The stamps among one video sample's length-prefixed NAL units.
    fn read_video_sample(&mut self, run: &Run, index: u32, sample: &[u8]) -> Result<(), Fmp4Error> {
        let size = usize::from(run.nal_length_size);
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
            self.stamps.extend(FrameStamp::from_sei(nal));
            rest = tail;
        }
        Ok(())
    }
}

/// What a `trun` walk needs of its track.
struct Run {
    track: TrackInfo,
    is_video: bool,
    default_duration: u32,
    default_size: u32,
    nal_length_size: u8,
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

    /// An `avc1` sample entry whose `avcC` says `length_size`-byte NAL lengths.
    fn avc1(length_size: u8) -> Vec<u8> {
        let avcc = mp4_box(
            b"avcC",
            &[1, 0x42, 0xe0, 0x1f, 0xfc | (length_size - 1), 0xe0, 0],
        );
        let mut body = vec![0; VISUAL_SAMPLE_ENTRY_FIELDS];
        body.extend(avcc);
        mp4_box(b"avc1", &body)
    }

    /// An init section: video track 1 at 90 kHz, audio track 2 at 48 kHz (trex default
    /// duration 1024).
    pub(crate) fn init_section(length_size: u8) -> Vec<u8> {
        let mut trex = 2u32.to_be_bytes().to_vec();
        trex.extend_from_slice(&[0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let moov = [
            full_box(b"mvhd", 0, 0, &[0; 96]),
            trak(1, 90_000, b"vide", Some(avc1(length_size))),
            trak(2, 48_000, b"soun", None),
            mp4_box(b"mvex", &full_box(b"trex", 0, 0, &trex)),
        ]
        .concat();
        [mp4_box(b"ftyp", b"iso6\0\0\0\0"), mp4_box(b"moov", &moov)].concat()
    }

    /// A fragment: video samples (each one NAL list, 3000 ticks) from `video_dts`, then
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
            for s in &samples {
                vtrun.extend_from_slice(&3000u32.to_be_bytes());
                vtrun.extend_from_slice(&(s.len() as u32).to_be_bytes());
            }
            let vtraf = [
                full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, &1u32.to_be_bytes()),
                full_box(b"tfdt", 1, 0, &video_dts.to_be_bytes()),
                full_box(
                    b"trun",
                    0,
                    TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE,
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
        assert_eq!(init.video.track.track_id, 1);
        assert_eq!(init.video.track.timescale, 90_000);
        assert_eq!(init.video.nal_length_size, 4);
        let audio = init.audio.unwrap();
        assert_eq!((audio.track_id, audio.timescale), (2, 48_000));
        assert_eq!(audio.defaults.duration, 1024);
        assert_eq!(
            Init::parse(&init_section(2)).unwrap().video.nal_length_size,
            2
        );
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
        let no_video = mp4_box(b"moov", &trak(2, 48_000, b"soun", None));
        assert_eq!(Init::parse(&no_video), Err(Fmp4Error::NoVideoTrack));
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
