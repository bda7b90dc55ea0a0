//! Fragmented MP4 for HLS (CMAF, ISO/IEC 14496-12 with the AVC file format of ISO/IEC 14496-15):
//! an init segment describing the tracks, then one movie fragment (`moof` + `mdat`) per call.
//!
//! Layout decisions, for whoever writes the playlist around these bytes:
//!
//! - Track 1 is video (timescale 90 000: the session timeline itself), track 2 audio (timescale
//!   the sample rate, 48 000 for Opus). Both tracks keep the session timeline's origin, so a
//!   player lines them up by `tfdt` alone; no edit lists.
//! - Audio times are converted from the timeline by flooring absolute times, never by scaling
//!   durations, so rounding cannot accumulate: a sample lasts until the next one's converted time
//!   and consecutive fragments' `tfdt`s differ by exactly the sum of the durations between them.
//!   AAC at 48 kHz (1920 ticks) and Opus (1800 ticks per 20 ms) convert exactly anyway.
//! - A fragment's last sample lasts until the end time the caller passes (the next unit's time,
//!   which a segmenter that cuts on arrival has), else as long as the sample before it.
//! - Times only move forward in MP4 (each sample lasts until the next starts). A time before the
//!   one before it, or before where the track's previous fragment ended, is raised to it and
//!   counted ([`Fmp4Muxer::clamped`]) rather than failing the part; a stream whose times restart
//!   needs a new muxer.
//! - `mdat` holds the video samples, then the audio samples (not interleaved: a fragment is one
//!   ~200 ms LL-HLS part, so there is nothing to gain from interleaving).
//! - Video samples are AVCC (4-byte lengths). Access unit delimiters and filler data are dropped
//!   (they mean nothing in MP4). SPS and PPS identical to the init segment's are dropped too: the
//!   `avc1` sample entry says parameter sets live in `avcC`. A key frame whose parameter sets
//!   differ (the publisher changed resolution) keeps them in band, which decoders that read
//!   in-band sets (ffmpeg's among them) use; the segmenter should still start a new segment
//!   with a new init segment (and a discontinuity) when [`VideoParams::from_unit`] of a key frame
//!   no longer equals [`Fmp4Muxer::video_params`].
//!
//! Output is a `Vec<Bytes>` per fragment for vectored writes: box headers, length prefixes and
//! small NAL units (parameter sets, SEI) are written into one buffer; larger payloads are the
//! caller's own `Bytes`, not copied.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

// Re-exported: the AudioSpecificConfig parser lived here before it joined the AAC module.
pub use crate::media::aac::{AacConfig, AacConfigError};
use crate::media::h264::avcc::AvccError;
use crate::media::h264::nal::{NAL_PPS, NAL_SPS, is_framing, nal_type};
use crate::media::h264::params::ParameterSets;
use crate::media::h264::sps::{self, Sps, SpsError};
use crate::media::unit::{AudioFrame, TIMELINE_HZ, VideoUnit};

/// Track ID of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track ID of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Payloads shorter than this are copied next to the headers rather than handed on as their own
/// chunk: an iovec and a refcount cost more than copying a parameter set.
const COPY_BELOW: usize = 128;

/// Duration of a lone video sample with nothing to measure it by: one frame at 30 fps.
const DEFAULT_VIDEO_DURATION: i64 = TIMELINE_HZ / 30;

/// Which track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// The H.264 track.
    Video,
    /// The AAC or Opus track.
    Audio,
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Track::Video => "video",
            Track::Audio => "audio",
        })
    }
}

/// What went wrong describing or muxing a stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Fmp4Error {
    /// A muxer was asked for with neither track.
    #[error("an fMP4 muxer needs at least one track")]
    NoTracks,
    /// Samples were given for a track the muxer was not made with.
    #[error("{0} samples for a muxer without a {0} track")]
    NoSuchTrack(Track),
    /// A key frame lacks a parameter set (`"SPS"` or `"PPS"`), or a NAL unit is not the one named.
    #[error("no usable {0}")]
    MissingParameterSet(&'static str),
    /// `avcC` stores parameter set lengths in 16 bits.
    #[error("parameter set of {0} bytes (avcC allows 65535)")]
    ParameterSetTooLong(usize),
    /// The SPS does not parse.
    #[error(transparent)]
    Sps(#[from] SpsError),
    /// The parameter sets make no `avcC`.
    #[error(transparent)]
    Avcc(#[from] AvccError),
    /// The AudioSpecificConfig does not parse.
    #[error(transparent)]
    AacConfig(#[from] AacConfigError),
    /// Opus in MP4 with channel mapping family 0 is mono or stereo.
    #[error("{0} Opus channels (1 or 2 supported)")]
    OpusChannels(u8),
    /// A duration or composition offset does not fit its 32-bit field (a gap of half a day).
    #[error("{track} {what} {value} does not fit 32 bits")]
    OutOfRange {
        /// The track.
        track: Track,
        /// `"duration"` or `"composition offset"`.
        what: &'static str,
        /// The value in the track's timescale.
        value: i64,
    },
    /// The fragment is over 2 GiB (`trun` data offsets are signed 32-bit).
    #[error("fragment of {0} bytes is too large")]
    TooLarge(u64),
    /// Neither track has a sample.
    #[error("a fragment needs at least one sample")]
    Empty,
}

/// The H.264 stream's description: its parameter sets, what the first SPS says, and the
/// `avcC` record made of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    sets: ParameterSets,
    info: Sps,
    avcc: Bytes,
}

impl VideoParams {
    /// From an SPS and a PPS NAL unit (header byte included, no start code).
    pub fn new(sps: Bytes, pps: Bytes) -> Result<Self, Fmp4Error> {
        sps::parse(&sps)?;
        if nal_type(&pps) != Some(NAL_PPS) {
            return Err(Fmp4Error::MissingParameterSet("PPS"));
        }
        Self::from_sets(&ParameterSets::from_nalus(&[sps, pps]))
    }

    /// From the parameter sets a unit carries (a key frame carries them before its IDR).
    pub fn from_unit(unit: &VideoUnit) -> Result<Self, Fmp4Error> {
        Self::from_sets(&ParameterSets::from_nalus(&unit.nalus))
    }

    /// From the parameter sets in force (see [`ParameterSets::changed_by`]): every SPS and PPS
    /// goes into `avcC`, the first SPS describes the track.
    pub fn from_sets(sets: &ParameterSets) -> Result<Self, Fmp4Error> {
        let first = sets
            .sps()
            .first()
            .ok_or(Fmp4Error::MissingParameterSet("SPS"))?;
        let info = sps::parse(first)?;
        if sets.pps().is_empty() {
            return Err(Fmp4Error::MissingParameterSet("PPS"));
        }
        if let Some(long) = sets
            .sps()
            .iter()
            .chain(sets.pps())
            .find(|s| s.len() > 0xffff)
        {
            return Err(Fmp4Error::ParameterSetTooLong(long.len()));
        }
        Ok(Self {
            avcc: sets.record()?,
            sets: sets.clone(),
            info,
        })
    }

    /// The (first) SPS NAL unit.
    pub fn sps(&self) -> &Bytes {
        &self.sets.sps()[0]
    }

    /// The (first) PPS NAL unit.
    pub fn pps(&self) -> &Bytes {
        &self.sets.pps()[0]
    }

    /// All the parameter sets.
    pub fn sets(&self) -> &ParameterSets {
        &self.sets
    }

    /// What the SPS says (picture size, profile, level).
    pub fn info(&self) -> &Sps {
        &self.info
    }

    /// The AVCDecoderConfigurationRecord the init segment's `avcC` box holds.
    pub fn avcc(&self) -> &Bytes {
        &self.avcc
    }

    /// The RFC 6381 codec string, e.g. `avc1.42c01e`.
    pub fn codec_string(&self) -> String {
        self.info.codec_string()
    }
}

/// Opus parameters for the `dOps` box (Encapsulation of Opus in ISO BMFF §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusParams {
    /// 1 or 2 (channel mapping family 0).
    pub channels: u8,
    /// Samples at 48 kHz the decoder discards at the start of the stream. A live stream joined
    /// mid-way has nothing to discard: 0 unless the stream is recorded from its first packet.
    pub pre_skip: u16,
}

/// The audio stream's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioParams {
    /// AAC (raw frames, as the transcoder outputs them).
    Aac(AacConfig),
    /// Opus packets (as WebRTC carries them).
    Opus(OpusParams),
}

impl AudioParams {
    /// Ticks per second of the track: the sample rate (Opus always counts at 48 kHz).
    pub fn timescale(&self) -> u32 {
        match self {
            AudioParams::Aac(config) => config.sample_rate(),
            AudioParams::Opus(_) => 48_000,
        }
    }

    /// The RFC 6381 codec string: `mp4a.40.2` or `opus`.
    pub fn codec_string(&self) -> String {
        match self {
            AudioParams::Aac(config) => config.codec_string(),
            AudioParams::Opus(_) => "opus".to_owned(),
        }
    }
}

/// The samples of one fragment, with where each track's last sample ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct FragmentSamples<'a> {
    /// Video access units in decode order.
    pub video: &'a [VideoUnit],
    /// Decode time at which the last video unit ends (the next unit's `dts`). `None` repeats the
    /// previous sample's duration, a guess that may leave a gap or overlap before the next
    /// fragment.
    pub video_end: Option<i64>,
    /// Audio frames in order.
    pub audio: &'a [AudioFrame],
    /// Time at which the last audio frame ends (the next frame's `pts`). `None` takes the frame's
    /// own `duration`.
    pub audio_end: Option<i64>,
}

/// One video sample's `trun` fields.
#[derive(Debug, Clone, Copy)]
struct VideoSample {
    duration: u32,
    size: u32,
    flags: u32,
    composition_offset: i32,
}

/// One audio sample's `trun` fields.
#[derive(Debug, Clone, Copy)]
struct AudioSample {
    duration: u32,
    size: u32,
}

/// `sample_flags` (ISO/IEC 14496-12 §8.8.3.1) of a sync sample: depends on no other.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: depends on others, `sample_is_non_sync_sample` set.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// `tfhd` flag: offsets count from the `moof` (required by CMAF, and what lets parts be served
/// and concatenated freely).
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `tfhd` flag: `default_sample_flags` present.
const TFHD_DEFAULT_SAMPLE_FLAGS: u32 = 0x00_0020;
/// `trun` flags.
const TRUN_DATA_OFFSET: u32 = 0x001;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x800;

/// Writes an fMP4 init segment and then fragments for one stream.
#[derive(Debug, Clone)]
pub struct Fmp4Muxer {
    video: Option<VideoParams>,
    audio: Option<AudioParams>,
    /// `mfhd` sequence number of the next fragment.
    sequence: u32,
    /// Duration (timeline ticks) of the last video sample written, for an open-ended fragment.
    video_duration: i64,
    /// Where the last video sample written ends: the earliest the next may start.
    video_end: Option<i64>,
    /// Where the last audio sample written ends.
    audio_end: Option<i64>,
    /// Samples whose time was raised to keep the track's times from going backwards.
    clamped: u64,
}

impl Fmp4Muxer {
    /// A muxer for the given tracks (at least one).
    pub fn new(video: Option<VideoParams>, audio: Option<AudioParams>) -> Result<Self, Fmp4Error> {
        if video.is_none() && audio.is_none() {
            return Err(Fmp4Error::NoTracks);
        }
        if let Some(AudioParams::Opus(opus)) = &audio
            && !(1..=2).contains(&opus.channels)
        {
            return Err(Fmp4Error::OpusChannels(opus.channels));
        }
        Ok(Self {
            video,
            audio,
            sequence: 1,
            video_duration: DEFAULT_VIDEO_DURATION,
            video_end: None,
            audio_end: None,
            clamped: 0,
        })
    }

    /// The video track's parameters.
    pub fn video_params(&self) -> Option<&VideoParams> {
        self.video.as_ref()
    }

    /// The audio track's parameters.
    pub fn audio_params(&self) -> Option<&AudioParams> {
        self.audio.as_ref()
    }

    /// The `CODECS` attribute of the stream (RFC 6381), e.g. `avc1.42c01e,mp4a.40.2`.
    pub fn codecs(&self) -> String {
        let video = self.video.as_ref().map(VideoParams::codec_string);
        let audio = self.audio.as_ref().map(AudioParams::codec_string);
        video.into_iter().chain(audio).collect::<Vec<_>>().join(",")
    }

    /// The `mfhd` sequence number the next fragment gets (1 for the first).
    pub fn next_sequence(&self) -> u32 {
        self.sequence
    }

    /// Samples written so far whose time was raised because it was before the previous sample's
    /// time (or end, across fragments), or before 0.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The init segment (`ftyp` + `moov`): what `EXT-X-MAP` points at.
    pub fn init(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(1024);
        write_box(&mut buf, b"ftyp", |b| {
            b.put_slice(b"iso6");
            b.put_u32(0);
            b.put_slice(b"iso6");
            b.put_slice(b"cmfc");
        });
        write_box(&mut buf, b"moov", |b| {
            write_full_box(b, b"mvhd", 0, 0, |b| {
                b.put_u32(0); // creation_time
                b.put_u32(0); // modification_time
                b.put_u32(1000); // timescale (of the movie's durations, all 0 here)
                b.put_u32(0); // duration: fragments say
                b.put_u32(0x0001_0000); // rate 1.0
                b.put_u16(0x0100); // volume 1.0
                b.put_bytes(0, 10); // reserved
                put_matrix(b);
                b.put_bytes(0, 24); // pre_defined
                b.put_u32(AUDIO_TRACK_ID + 1); // next_track_ID
            });
            if let Some(video) = &self.video {
                write_video_trak(b, video);
            }
            if let Some(audio) = &self.audio {
                write_audio_trak(b, audio);
            }
            write_box(b, b"mvex", |b| {
                let ids = [
                    self.video.as_ref().map(|_| VIDEO_TRACK_ID),
                    self.audio.as_ref().map(|_| AUDIO_TRACK_ID),
                ];
                for id in ids.into_iter().flatten() {
                    write_full_box(b, b"trex", 0, 0, |b| {
                        b.put_u32(id);
                        b.put_u32(1); // default_sample_description_index
                        b.put_u32(0); // default_sample_duration
                        b.put_u32(0); // default_sample_size
                        b.put_u32(0); // default_sample_flags
                    });
                }
            });
        });
        buf.freeze()
    }

    /// One movie fragment (`moof` + `mdat`) of the given samples, as chunks to write in order.
    ///
    /// MP4 times only move forward, one sample's duration after another: a time before the
    /// previous sample's (or before where the track's previous fragment ended, or before 0) is
    /// raised to it and counted in [`clamped`](Self::clamped), so the part is still written and
    /// the bitstream stays whole. A stream whose times restart needs a new muxer (and init
    /// segment, after a discontinuity).
    ///
    /// Nothing changes in the muxer when this fails, so the caller may drop the offending samples
    /// and try again.
    pub fn fragment(&mut self, samples: FragmentSamples<'_>) -> Result<Vec<Bytes>, Fmp4Error> {
        let FragmentSamples {
            video,
            video_end,
            audio,
            audio_end,
        } = samples;
        if video.is_empty() && audio.is_empty() {
            return Err(Fmp4Error::Empty);
        }
        let video_params = match (&self.video, video.is_empty()) {
            (None, false) => return Err(Fmp4Error::NoSuchTrack(Track::Video)),
            (params, _) => params.as_ref(),
        };
        let audio_scale = match (&self.audio, audio.is_empty()) {
            (None, false) => return Err(Fmp4Error::NoSuchTrack(Track::Audio)),
            (params, _) => params.as_ref().map_or(48_000, AudioParams::timescale),
        };

        let video_run = self.video_samples(video_params, video, video_end)?;
        let audio_run = self.audio_samples(audio_scale, audio, audio_end)?;
        let (video_samples, audio_samples) = (&video_run.samples, &audio_run.samples);

        let video_bytes: u64 = video_samples.iter().map(|s| u64::from(s.size)).sum();
        let audio_bytes: u64 = audio_samples.iter().map(|s| u64::from(s.size)).sum();
        // Generous for the moof: the largest per-sample record and a few hundred bytes of boxes.
        let moof_estimate = 256 + 16 * (video.len() + audio.len());
        let total = moof_estimate as u64 + 8 + video_bytes + audio_bytes;
        if total > i32::MAX as u64 {
            return Err(Fmp4Error::TooLarge(total));
        }

        let nal_count: usize = video.iter().map(|u| u.nalus.len()).sum();
        let mut out = ChunkWriter::new(moof_estimate + 8 + nal_count * 4 + 2 * COPY_BELOW);
        let buf = &mut out.head;
        let mut offset_fields = Vec::with_capacity(2);
        write_box(buf, b"moof", |b| {
            write_full_box(b, b"mfhd", 0, 0, |b| b.put_u32(self.sequence));
            if !video_samples.is_empty() {
                write_box(b, b"traf", |b| {
                    write_full_box(b, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |b| {
                        b.put_u32(VIDEO_TRACK_ID);
                    });
                    let base = video_run.base;
                    write_full_box(b, b"tfdt", 1, 0, |b| b.put_u64(base.unsigned_abs()));
                    let flags = TRUN_DATA_OFFSET
                        | TRUN_DURATION
                        | TRUN_SIZE
                        | TRUN_FLAGS
                        | TRUN_COMPOSITION_OFFSET;
                    write_full_box(b, b"trun", 1, flags, |b| {
                        b.put_u32(video_samples.len() as u32);
                        offset_fields.push((b.len(), 0));
                        b.put_i32(0); // data_offset, patched below
                        for s in video_samples {
                            b.put_u32(s.duration);
                            b.put_u32(s.size);
                            b.put_u32(s.flags);
                            b.put_i32(s.composition_offset);
                        }
                    });
                });
            }
            if !audio_samples.is_empty() {
                write_box(b, b"traf", |b| {
                    let flags = TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_SAMPLE_FLAGS;
                    write_full_box(b, b"tfhd", 0, flags, |b| {
                        b.put_u32(AUDIO_TRACK_ID);
                        b.put_u32(SYNC_SAMPLE);
                    });
                    let base = to_timescale(audio_run.base, audio_scale);
                    write_full_box(b, b"tfdt", 1, 0, |b| b.put_u64(base.unsigned_abs()));
                    let flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE;
                    write_full_box(b, b"trun", 0, flags, |b| {
                        b.put_u32(audio_samples.len() as u32);
                        offset_fields.push((b.len(), video_bytes));
                        b.put_i32(0);
                        for s in audio_samples {
                            b.put_u32(s.duration);
                            b.put_u32(s.size);
                        }
                    });
                });
            }
        });
        // The moof is complete: data offsets count from its first byte to the mdat payload.
        let moof_size = buf.len() as u64;
        for (at, track_offset) in offset_fields {
            let offset = (moof_size + 8 + track_offset) as i32;
            if let Some(field) = buf.get_mut(at..at + 4) {
                field.copy_from_slice(&offset.to_be_bytes());
            }
        }
        buf.put_u32((8 + video_bytes + audio_bytes) as u32);
        buf.put_slice(b"mdat");
        for unit in video {
            for nal in video_params.into_iter().flat_map(|p| kept_nalus(p, unit)) {
                out.head.put_u32(nal.len() as u32);
                out.payload(nal);
            }
        }
        for frame in audio {
            out.payload(&frame.data);
        }

        self.sequence = self.sequence.wrapping_add(1);
        self.clamped += video_run.clamped + audio_run.clamped;
        if !video_samples.is_empty() {
            self.video_duration = video_run.last_duration;
            self.video_end = Some(video_run.end);
        }
        if !audio_samples.is_empty() {
            self.audio_end = Some(audio_run.end);
        }
        Ok(out.finish())
    }

    /// The video `trun` records.
    fn video_samples(
        &self,
        params: Option<&VideoParams>,
        units: &[VideoUnit],
        end: Option<i64>,
    ) -> Result<Run<VideoSample>, Fmp4Error> {
        let track = Track::Video;
        let Some(params) = params else {
            return Ok(Run::empty(self.video_duration));
        };
        let mut clamped = 0;
        let floor = self.video_end.unwrap_or(0);
        let times = forward(units.iter().map(|u| u.dts), floor, &mut clamped);
        let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
            return Ok(Run::empty(self.video_duration));
        };
        // An open end repeats the last interval (not a zero one from clamped times).
        let interval = match times.as_slice() {
            [.., before, last] if last > before => last - before,
            _ => self.video_duration,
        };
        let end = end.map_or(last.saturating_add(interval), |end| end.max(last));
        let mut samples = Vec::with_capacity(units.len());
        for (i, (unit, &time)) in units.iter().zip(&times).enumerate() {
            let next = times.get(i + 1).copied().unwrap_or(end);
            let size: u64 = kept_nalus(params, unit).map(|n| 4 + n.len() as u64).sum();
            let offset = unit.pts.saturating_sub(time);
            samples.push(VideoSample {
                duration: fit(track, "duration", next - time)?,
                size: u32::try_from(size).map_err(|_| Fmp4Error::TooLarge(size))?,
                flags: if unit.keyframe {
                    SYNC_SAMPLE
                } else {
                    NON_SYNC_SAMPLE
                },
                composition_offset: i32::try_from(offset).map_err(|_| Fmp4Error::OutOfRange {
                    track,
                    what: "composition offset",
                    value: offset,
                })?,
            });
        }
        Ok(Run {
            samples,
            base: first,
            end,
            last_duration: if end > last { end - last } else { interval },
            clamped,
        })
    }

    /// The audio `trun` records, durations in the track's timescale.
    fn audio_samples(
        &self,
        scale: u32,
        frames: &[AudioFrame],
        end: Option<i64>,
    ) -> Result<Run<AudioSample>, Fmp4Error> {
        let mut clamped = 0;
        let floor = self.audio_end.unwrap_or(0);
        let times = forward(frames.iter().map(|f| f.pts), floor, &mut clamped);
        let (Some(&first), Some(&last), Some(last_frame)) =
            (times.first(), times.last(), frames.last())
        else {
            return Ok(Run::empty(0));
        };
        let own_end = last.saturating_add(last_frame.duration.max(0));
        let end = end.map_or(own_end, |end| end.max(last));
        let mut samples = Vec::with_capacity(frames.len());
        for (i, (frame, &time)) in frames.iter().zip(&times).enumerate() {
            let next = times.get(i + 1).copied().unwrap_or(end);
            let duration = to_timescale(next, scale) - to_timescale(time, scale);
            let size = frame.data.len();
            samples.push(AudioSample {
                duration: fit(Track::Audio, "duration", duration)?,
                size: u32::try_from(size).map_err(|_| Fmp4Error::TooLarge(size as u64))?,
            });
        }
        Ok(Run {
            samples,
            base: first,
            end,
            last_duration: end - last,
            clamped,
        })
    }
}

/// One track's samples in a fragment, with its times on the timeline.
#[derive(Debug)]
struct Run<S> {
    samples: Vec<S>,
    /// Time of the first sample (after clamping).
    base: i64,
    /// Where the last sample ends.
    end: i64,
    /// The last sample's duration.
    last_duration: i64,
    /// Samples whose time was raised.
    clamped: u64,
}

impl<S> Run<S> {
    fn empty(last_duration: i64) -> Self {
        Self {
            samples: Vec::new(),
            base: 0,
            end: 0,
            last_duration,
            clamped: 0,
        }
    }
}

/// Times raised where needed so none is before the one before it, nor the first before `floor`.
fn forward(times: impl Iterator<Item = i64>, mut floor: i64, clamped: &mut u64) -> Vec<i64> {
    times
        .map(|t| {
            if t < floor {
                *clamped += 1;
            } else {
                floor = t;
            }
            floor
        })
        .collect()
}

fn fit(track: Track, what: &'static str, value: i64) -> Result<u32, Fmp4Error> {
    u32::try_from(value).map_err(|_| Fmp4Error::OutOfRange { track, what, value })
}

/// A non-negative timeline time in another timescale, floored.
fn to_timescale(time: i64, scale: u32) -> i64 {
    let scaled = i128::from(time) * i128::from(scale) / i128::from(TIMELINE_HZ);
    i64::try_from(scaled).unwrap_or(i64::MAX)
}

/// The NAL units of a unit that go into its MP4 sample (see the module docs).
fn kept_nalus<'a>(params: &'a VideoParams, unit: &'a VideoUnit) -> impl Iterator<Item = &'a Bytes> {
    unit.nalus.iter().filter(move |nal| match nal_type(nal) {
        None => false,
        Some(t) if is_framing(t) => false,
        Some(NAL_SPS | NAL_PPS) => !params.sets.holds(nal),
        Some(_) => true,
    })
}

/// Headers and small payloads in one buffer; large payloads kept as the caller's `Bytes`, with
/// where in the buffer's byte stream they go.
struct ChunkWriter {
    head: BytesMut,
    cuts: Vec<(usize, Bytes)>,
}

impl ChunkWriter {
    fn new(capacity: usize) -> Self {
        Self {
            head: BytesMut::with_capacity(capacity),
            cuts: Vec::new(),
        }
    }

    fn payload(&mut self, data: &Bytes) {
        if data.len() < COPY_BELOW {
            self.head.put_slice(data);
        } else {
            self.cuts.push((self.head.len(), data.clone()));
        }
    }

    fn finish(self) -> Vec<Bytes> {
        let head = self.head.freeze();
        let mut out = Vec::with_capacity(2 * self.cuts.len() + 1);
        let mut start = 0;
        for (at, data) in self.cuts {
            if at > start {
                out.push(head.slice(start..at));
                start = at;
            }
            out.push(data);
        }
        if start < head.len() {
            out.push(head.slice(start..));
        }
        out
    }
}

/// Writes a box whose size is patched in once `body` has written its contents.
fn write_box(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_slice(kind);
    body(buf);
    // A box here holds headers and parameter sets, bounded far below 4 GiB by the callers;
    // `mdat`, the one that could be large, is written separately.
    let size = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    if let Some(field) = buf.get_mut(start..start + 4) {
        field.copy_from_slice(&size.to_be_bytes());
    }
}

/// A box that starts with a version byte and 24 bits of flags.
fn write_full_box(
    buf: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    write_box(buf, kind, |b| {
        b.put_u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        body(b);
    });
}

/// The identity transformation matrix of `mvhd` and `tkhd`.
fn put_matrix(b: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.put_u32(v);
    }
}

/// `tkhd`, `mdhd` and `hdlr` of a track; `minf` contents come from the caller.
fn write_trak(
    b: &mut BytesMut,
    id: u32,
    size: Option<(u16, u16)>,
    timescale: u32,
    minf: impl FnOnce(&mut BytesMut),
) {
    write_box(b, b"trak", |b| {
        // Flags: track_enabled | track_in_movie.
        write_full_box(b, b"tkhd", 0, 0x3, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(id);
            b.put_u32(0); // reserved
            b.put_u32(0); // duration
            b.put_bytes(0, 8); // reserved
            b.put_u16(0); // layer
            b.put_u16(0); // alternate_group
            b.put_u16(if size.is_some() { 0 } else { 0x0100 }); // volume: audio at 1.0
            b.put_u16(0); // reserved
            put_matrix(b);
            let (width, height) = size.unwrap_or((0, 0));
            b.put_u32(u32::from(width) << 16); // 16.16 fixed point
            b.put_u32(u32::from(height) << 16);
        });
        write_box(b, b"mdia", |b| {
            write_full_box(b, b"mdhd", 0, 0, |b| {
                b.put_u32(0); // creation_time
                b.put_u32(0); // modification_time
                b.put_u32(timescale);
                b.put_u32(0); // duration
                b.put_u16(0x55c4); // language "und", 5 bits a letter
                b.put_u16(0); // pre_defined
            });
            let (handler, name): (&[u8; 4], &[u8]) = if size.is_some() {
                (b"vide", b"VideoHandler\0")
            } else {
                (b"soun", b"SoundHandler\0")
            };
            write_full_box(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0); // pre_defined
                b.put_slice(handler);
                b.put_bytes(0, 12); // reserved
                b.put_slice(name);
            });
            write_box(b, b"minf", minf);
        });
    });
}

/// `dinf` (data in this file) and an `stbl` whose sample tables are empty: samples come in
/// fragments.
fn write_dinf_stbl(b: &mut BytesMut, sample_entry: impl FnOnce(&mut BytesMut)) {
    write_box(b, b"dinf", |b| {
        write_full_box(b, b"dref", 0, 0, |b| {
            b.put_u32(1); // entry_count
            write_full_box(b, b"url ", 0, 1, |_| {}); // flag 1: media in this file
        });
    });
    write_box(b, b"stbl", |b| {
        write_full_box(b, b"stsd", 0, 0, |b| {
            b.put_u32(1); // entry_count
            sample_entry(b);
        });
        write_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsz", 0, 0, |b| {
            b.put_u32(0); // sample_size
            b.put_u32(0); // sample_count
        });
        write_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
    });
}

fn write_video_trak(b: &mut BytesMut, video: &VideoParams) {
    let width = u16::try_from(video.info.width).unwrap_or(u16::MAX);
    let height = u16::try_from(video.info.height).unwrap_or(u16::MAX);
    write_trak(b, VIDEO_TRACK_ID, Some((width, height)), 90_000, |b| {
        write_full_box(b, b"vmhd", 0, 1, |b| {
            b.put_u16(0); // graphicsmode: copy
            b.put_bytes(0, 6); // opcolor
        });
        write_dinf_stbl(b, |b| {
            write_box(b, b"avc1", |b| {
                b.put_bytes(0, 6); // reserved
                b.put_u16(1); // data_reference_index
                b.put_bytes(0, 16); // pre_defined, reserved, pre_defined[3]
                b.put_u16(width);
                b.put_u16(height);
                b.put_u32(0x0048_0000); // horizresolution: 72 dpi
                b.put_u32(0x0048_0000); // vertresolution
                b.put_u32(0); // reserved
                b.put_u16(1); // frame_count
                b.put_bytes(0, 32); // compressorname: empty Pascal string
                b.put_u16(0x0018); // depth: colour, no alpha
                b.put_i16(-1); // pre_defined
                write_box(b, b"avcC", |b| b.put_slice(video.avcc()));
            });
        });
    });
}

fn write_audio_trak(b: &mut BytesMut, audio: &AudioParams) {
    write_trak(b, AUDIO_TRACK_ID, None, audio.timescale(), |b| {
        write_full_box(b, b"smhd", 0, 0, |b| {
            b.put_i16(0); // balance
            b.put_u16(0); // reserved
        });
        write_dinf_stbl(b, |b| {
            let (kind, channels) = match audio {
                AudioParams::Aac(config) => (b"mp4a", config.channels()),
                AudioParams::Opus(opus) => (b"Opus", opus.channels),
            };
            write_box(b, kind, |b| {
                b.put_bytes(0, 6); // reserved
                b.put_u16(1); // data_reference_index
                b.put_bytes(0, 8); // reserved
                b.put_u16(u16::from(channels));
                b.put_u16(16); // samplesize
                b.put_u32(0); // pre_defined, reserved
                // 16.16 fixed point; rates past 65535 Hz do not fit and the codec config says.
                let rate = u16::try_from(audio.timescale()).unwrap_or(0);
                b.put_u32(u32::from(rate) << 16);
                match audio {
                    AudioParams::Aac(config) => write_esds(b, config),
                    AudioParams::Opus(opus) => write_dops(b, opus),
                }
            });
        });
    });
}

/// The MPEG-4 elementary stream descriptor (ISO/IEC 14496-1 §7.2.6.5, as 14496-14 boxes it).
fn write_esds(b: &mut BytesMut, config: &AacConfig) {
    write_full_box(b, b"esds", 0, 0, |b| {
        write_descriptor(b, 0x03, |d| {
            // ES_Descriptor
            d.put_u16(AUDIO_TRACK_ID as u16); // ES_ID
            d.put_u8(0); // no dependency, URL or OCR stream
            write_descriptor(d, 0x04, |d| {
                // DecoderConfigDescriptor
                d.put_u8(0x40); // objectTypeIndication: MPEG-4 audio
                d.put_u8(0x05 << 2 | 1); // streamType audio, upStream 0, reserved 1
                d.put_bytes(0, 3); // bufferSizeDB: unknown
                d.put_u32(0); // maxBitrate: unknown
                d.put_u32(0); // avgBitrate: variable
                write_descriptor(d, 0x05, |d| d.put_slice(config.bytes()));
            });
            write_descriptor(d, 0x06, |d| d.put_u8(0x02)); // SLConfigDescriptor: predefined MP4
        });
    });
}

/// A descriptor: tag, expandable size, body. The size is always written in its 4-byte form
/// (7 bits a byte, high bit "more follows"), as ffmpeg does: parsers that read `esds` at fixed
/// offsets (mux.js's codec probe among them) expect it.
fn write_descriptor(b: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let mut inner = BytesMut::new();
    body(&mut inner);
    b.put_u8(tag);
    // Descriptor bodies here are tens of bytes, far below the 2^28 the form can say.
    let len = inner.len() as u32;
    b.put_u8(0x80 | (len >> 21 & 0x7f) as u8);
    b.put_u8(0x80 | (len >> 14 & 0x7f) as u8);
    b.put_u8(0x80 | (len >> 7 & 0x7f) as u8);
    b.put_u8((len & 0x7f) as u8);
    b.put_slice(&inner);
}

/// The Opus specific box (a plain box, big-endian, unlike the Ogg `OpusHead` it mirrors).
fn write_dops(b: &mut BytesMut, opus: &OpusParams) {
    write_box(b, b"dOps", |b| {
        b.put_u8(0); // Version
        b.put_u8(opus.channels); // OutputChannelCount
        b.put_u16(opus.pre_skip); // PreSkip
        b.put_u32(48_000); // InputSampleRate: unknown, so the rate Opus runs at
        b.put_i16(0); // OutputGain
        b.put_u8(0); // ChannelMappingFamily: mono or stereo
    });
}

#[cfg(test)]
mod tests {
    use loadgen::publish::fmp4 as reader;

    use super::*;
    use crate::testdata::{
        ADTS, ASC, H264, aac_frames, check_plays, temp_dir, tool, video_units, xorshift,
    };

    /// Boxes whose body is only boxes, and those with fixed fields before their child boxes.
    fn children_at(kind: &[u8; 4]) -> Option<usize> {
        match kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof"
            | b"traf" => Some(0),
            b"stsd" | b"dref" => Some(8),
            b"avc1" => Some(78),
            b"mp4a" | b"Opus" => Some(28),
            _ => None,
        }
    }

    /// The boxes at one level as `(type, body)`, read by loadgen's reader (an independent
    /// implementation), which refuses sizes that do not tile `data`.
    fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        reader::read_boxes(data).unwrap_or_else(|e| panic!("boxes do not tile: {e}"))
    }

    /// Walks every container: all sizes tile their parents. Returns the number of boxes.
    fn check_tree(data: &[u8]) -> usize {
        boxes(data)
            .into_iter()
            .map(|(kind, body)| match children_at(&kind) {
                Some(skip) => 1 + check_tree(&body[skip..]),
                None => 1,
            })
            .sum()
    }

    /// The body of the `n`th box of each type along a path, e.g. `["moov", "trak#1", "tkhd"]`.
    fn find<'a>(data: &'a [u8], path: &[&str]) -> &'a [u8] {
        let mut body = data;
        for step in path {
            let (name, n) = step
                .split_once('#')
                .map_or((*step, 0), |(a, n)| (a, n.parse().unwrap()));
            let level = boxes(body);
            body = level
                .into_iter()
                .filter(|(kind, _)| kind == name.as_bytes())
                .nth(n)
                .unwrap_or_else(|| panic!("no {step} in {path:?}"))
                .1;
            if let Some(skip) = children_at(name.as_bytes().try_into().unwrap())
                && path.last() != Some(step)
            {
                body = &body[skip..];
            }
        }
        body
    }

    fn u32_at(data: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn muxer() -> Fmp4Muxer {
        let units = video_units(0);
        let video = VideoParams::from_unit(&units[0]).unwrap();
        let audio = AudioParams::Aac(AacConfig::parse(&ASC).unwrap());
        Fmp4Muxer::new(Some(video), Some(audio)).unwrap()
    }

    /// The bytes of a video sample as it should be in `mdat`.
    fn avcc_sample(unit: &VideoUnit) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in &unit.nalus {
            if !matches!(nal[0] & 0x1f, 7..=9) {
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
        }
        out
    }

    /// Parsed `trun` samples: `(duration, size, flags, composition offset)`; absent fields 0.
    fn trun_samples(trun: &[u8]) -> (i32, Vec<(u32, u32, u32, i32)>) {
        let flags = u32_at(trun, 0) & 0xff_ffff;
        let count = u32_at(trun, 4) as usize;
        let offset = u32_at(trun, 8) as i32;
        assert_eq!(flags & 0x5, 0x1, "data offset, no first-sample flags");
        let mut at = 12;
        let mut next = |present: bool| {
            if present {
                at += 4;
                u32_at(trun, at - 4)
            } else {
                0
            }
        };
        let samples = (0..count)
            .map(|_| {
                (
                    next(flags & 0x100 != 0),
                    next(flags & 0x200 != 0),
                    next(flags & 0x400 != 0),
                    next(flags & 0x800 != 0) as i32,
                )
            })
            .collect();
        assert_eq!(at, trun.len(), "trun length");
        (offset, samples)
    }

    /// ISO/IEC 14496-12 and -15, field by field, for the real x264 SPS/PPS and AAC-LC config.
    #[test]
    fn init_segment_fields() {
        let muxer = muxer();
        let init = muxer.init();
        assert_eq!(check_tree(&init), 6 + 2 * 18);
        let top: Vec<_> = boxes(&init).iter().map(|(k, _)| *k).collect();
        assert_eq!(top, [*b"ftyp", *b"moov"]);
        assert_eq!(find(&init, &["ftyp"]), b"iso6\0\0\0\0iso6cmfc");

        let mvhd = find(&init, &["moov", "mvhd"]);
        assert_eq!(mvhd.len(), 100);
        assert_eq!(u32_at(mvhd, 0), 0, "version 0, flags 0");
        assert_eq!(u32_at(mvhd, 12), 1000, "timescale");
        assert_eq!(u32_at(mvhd, 20), 0x0001_0000, "rate");
        assert_eq!(u32_at(mvhd, 96), 3, "next_track_ID");

        // Video track.
        let tkhd = find(&init, &["moov", "trak#0", "tkhd"]);
        assert_eq!(tkhd.len(), 84);
        assert_eq!(u32_at(tkhd, 0), 3, "enabled, in movie");
        assert_eq!(&tkhd[32..36], [0, 0, 0, 0], "layer, alternate group");
        assert_eq!(&tkhd[36..38], [0, 0], "video volume 0");
        assert_eq!(u32_at(tkhd, 76), 640 << 16);
        assert_eq!(u32_at(tkhd, 80), 360 << 16);
        let mdhd = find(&init, &["moov", "trak#0", "mdia", "mdhd"]);
        assert_eq!(&mdhd[20..22], [0x55, 0xc4], "und");
        let hdlr = find(&init, &["moov", "trak#0", "mdia", "hdlr"]);
        assert_eq!(&hdlr[8..12], b"vide");
        assert_eq!(&hdlr[24..], b"VideoHandler\0");
        assert_eq!(
            find(&init, &["moov", "trak#0", "mdia", "minf", "vmhd"]),
            [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let dref = find(&init, &["moov", "trak#0", "mdia", "minf", "dinf", "dref"]);
        assert_eq!(
            dref,
            [
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12, b'u', b'r', b'l', b' ', 0, 0, 0, 1
            ]
        );
        let stbl = ["moov", "trak#0", "mdia", "minf", "stbl"];
        for (table, body) in [
            ("stts", &[0u8; 8][..]),
            ("stsc", &[0; 8]),
            ("stsz", &[0; 12]),
            ("stco", &[0; 8]),
        ] {
            assert_eq!(
                find(&init, &[&stbl[..], &[table]].concat()),
                body,
                "{table}"
            );
        }
        let stsd = find(&init, &[&stbl[..], &["stsd"]].concat());
        assert_eq!(u32_at(stsd, 4), 1, "entry_count");
        let avc1 = find(&init, &[&stbl[..], &["stsd", "avc1"]].concat());
        assert_eq!(
            &avc1[..8],
            [0, 0, 0, 0, 0, 0, 0, 1],
            "data_reference_index 1"
        );
        assert_eq!(&avc1[24..28], [0x02, 0x80, 0x01, 0x68], "640x360");
        assert_eq!(u32_at(avc1, 28), 0x0048_0000, "72 dpi");
        assert_eq!(&avc1[40..42], [0, 1], "frame_count");
        assert_eq!(
            &avc1[74..78],
            [0x00, 0x18, 0xff, 0xff],
            "depth, pre_defined -1"
        );
        let avcc = find(&init, &[&stbl[..], &["stsd", "avc1", "avcC"]].concat());
        let units = video_units(0);
        let (sps, pps) = (&units[0].nalus[0], &units[0].nalus[1]);
        let mut want = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        want.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        want.extend_from_slice(sps);
        want.push(1);
        want.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        want.extend_from_slice(pps);
        assert_eq!(avcc, want);

        // Audio track.
        let tkhd = find(&init, &["moov", "trak#1", "tkhd"]);
        assert_eq!(&tkhd[36..38], [1, 0], "volume 1.0");
        assert_eq!(u32_at(tkhd, 76), 0);
        let hdlr = find(&init, &["moov", "trak#1", "mdia", "hdlr"]);
        assert_eq!(&hdlr[8..12], b"soun");
        assert_eq!(
            find(&init, &["moov", "trak#1", "mdia", "minf", "smhd"]),
            [0; 8]
        );
        let entry = ["moov", "trak#1", "mdia", "minf", "stbl", "stsd", "mp4a"];
        let mp4a = find(&init, &entry);
        assert_eq!(&mp4a[6..8], [0, 1], "data_reference_index");
        assert_eq!(&mp4a[16..20], [0, 2, 0, 16], "2 channels, 16 bits");
        assert_eq!(u32_at(mp4a, 24), 48_000 << 16);
        let esds = find(&init, &[&entry[..], &["esds"]].concat());
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0, // version, flags
            0x03, 0x80, 0x80, 0x80, 34, 0, 2, 0, // ES_Descriptor: length, ES_ID, flags
            0x04, 0x80, 0x80, 0x80, 20, // DecoderConfigDescriptor
            0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // MPEG-4 audio stream, rates unknown
            0x05, 0x80, 0x80, 0x80, 2, 0x11, 0x90, // DecoderSpecificInfo: AudioSpecificConfig
            0x06, 0x80, 0x80, 0x80, 1, 0x02, // SLConfigDescriptor: predefined for MP4
        ];
        assert_eq!(esds, want);

        for (n, id) in [(0, 1), (1, 2)] {
            let trex = find(&init, &["moov", "mvex", &format!("trex#{n}")]);
            assert_eq!(
                trex,
                [
                    [0; 4],
                    (id as u32).to_be_bytes(),
                    [0, 0, 0, 1],
                    [0; 4],
                    [0; 4],
                    [0; 4]
                ]
                .concat()
            );
        }
        assert_eq!(muxer.codecs(), "avc1.42c01e,mp4a.40.2");

        // Track IDs, timescales and the NAL length size, as loadgen's reader sees them.
        let read = reader::Init::parse(&init).unwrap();
        let video = read.video.unwrap();
        assert_eq!(
            (
                video.track.track_id,
                video.track.timescale,
                video.nal_length_size
            ),
            (1, 90_000, 4)
        );
        let audio = read.audio.unwrap();
        assert_eq!((audio.track_id, audio.timescale), (2, 48_000));
    }

    /// One publisher, one decoder configuration: the FLV sequence header's record (RTMP) and the
    /// init segment's `avcC` (HLS) are the same bytes, for the Baseline test stream and for High
    /// and High 4:4:4 Predictive parameter sets (which carry the chroma and bit depth extension).
    #[test]
    fn avcc_matches_flv_sequence_header() {
        use crate::mux::flv;
        use crate::testdata::{HIGH_PPS, HIGH_SPS, HIGH444_PPS, HIGH444_SPS, hex};

        let units = video_units(0);
        let (sps, pps) = (units[0].nalus[0].clone(), units[0].nalus[1].clone());
        let cases = [
            (sps, pps, false),
            (hex(HIGH_SPS), hex(HIGH_PPS), true),
            (hex(HIGH444_SPS), hex(HIGH444_PPS), true),
        ];
        for (sps, pps, extension) in cases {
            let header =
                flv::avc_sequence_header(std::slice::from_ref(&sps), std::slice::from_ref(&pps))
                    .unwrap();
            let video = VideoParams::new(sps.clone(), pps.clone()).unwrap();
            let init = Fmp4Muxer::new(Some(video), None).unwrap().init();
            let entry = [
                "moov", "trak", "mdia", "minf", "stbl", "stsd", "avc1", "avcC",
            ];
            let avcc = find(&init, &entry);
            assert_eq!(avcc, &header[5..], "profile {}", sps[1]);
            let plain = 11 + sps.len() + pps.len();
            assert_eq!(avcc.len(), plain + if extension { 4 } else { 0 });
        }
    }

    #[test]
    fn init_opus_and_single_tracks() {
        let opus = OpusParams {
            channels: 2,
            pre_skip: 312,
        };
        let muxer = Fmp4Muxer::new(None, Some(AudioParams::Opus(opus))).unwrap();
        let init = muxer.init();
        check_tree(&init);
        let entry = ["moov", "trak", "mdia", "minf", "stbl", "stsd", "Opus"];
        assert_eq!(
            find(&init, &[&entry[..], &["dOps"]].concat()),
            [0, 2, 0x01, 0x38, 0, 0, 0xbb, 0x80, 0, 0, 0]
        );
        assert_eq!(u32_at(find(&init, &["moov", "trak", "tkhd"]), 12), 2);
        assert_eq!(boxes(find(&init, &["moov", "mvex"])).len(), 1);
        assert_eq!(muxer.codecs(), "opus");

        let video = VideoParams::from_unit(&video_units(0)[0]).unwrap();
        let muxer = Fmp4Muxer::new(Some(video), None).unwrap();
        let init = muxer.init();
        check_tree(&init);
        assert_eq!(boxes(find(&init, &["moov"])).len(), 3, "mvhd, trak, mvex");
        assert_eq!(muxer.codecs(), "avc1.42c01e");
    }

    /// ISO/IEC 14496-12 §8.8, field by field, on the first 200 ms of real video and audio.
    #[test]
    fn fragment_fields() {
        let mut muxer = muxer();
        let units = video_units(0);
        let frames = aac_frames();
        let (video, audio) = (&units[..6], &frames[..10]);
        let chunks = muxer
            .fragment(FragmentSamples {
                video,
                video_end: Some(18_000),
                audio,
                audio_end: Some(10 * 1920),
            })
            .unwrap();
        let data = concat(&chunks);
        check_tree(&data);
        let top = boxes(&data);
        assert_eq!(top.len(), 2);
        assert_eq!(&top[0].0, b"moof");
        assert_eq!(&top[1].0, b"mdat");
        let moof_size = top[0].1.len() + 8;
        let mdat_payload = moof_size + 8;

        assert_eq!(find(&data, &["moof", "mfhd"]), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(muxer.next_sequence(), 2);

        // Video.
        let tfhd = find(&data, &["moof", "traf#0", "tfhd"]);
        assert_eq!(
            tfhd,
            [0, 2, 0, 0, 0, 0, 0, 1],
            "default-base-is-moof, track 1"
        );
        let tfdt = find(&data, &["moof", "traf#0", "tfdt"]);
        assert_eq!(
            tfdt,
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "version 1, time 0"
        );
        let trun = find(&data, &["moof", "traf#0", "trun"]);
        assert_eq!(
            trun[..4],
            [1, 0, 0x0f, 0x01],
            "version 1, offset, all per-sample fields"
        );
        let (offset, samples) = trun_samples(trun);
        assert_eq!(offset as usize, mdat_payload);
        let mut at = mdat_payload;
        for (n, (unit, sample)) in video.iter().zip(&samples).enumerate() {
            let bytes = avcc_sample(unit);
            let flags = if n == 0 { 0x0200_0000 } else { 0x0101_0000 };
            assert_eq!(*sample, (3000, bytes.len() as u32, flags, 0), "sample {n}");
            assert_eq!(data[at..at + bytes.len()], bytes, "sample {n} bytes");
            at += bytes.len();
        }
        // The key frame's sample starts with the SEI: SPS and PPS are in avcC.
        assert_eq!(data[mdat_payload + 4] & 0x1f, 6);

        // Audio.
        let tfhd = find(&data, &["moof", "traf#1", "tfhd"]);
        assert_eq!(
            tfhd,
            [0, 2, 0, 0x20, 0, 0, 0, 2, 2, 0, 0, 0],
            "default flags: sync"
        );
        let tfdt = find(&data, &["moof", "traf#1", "tfdt"]);
        assert_eq!(u32_at(tfdt, 0), 0x0100_0000);
        let trun = find(&data, &["moof", "traf#1", "trun"]);
        assert_eq!(
            trun[..4],
            [0, 0, 0x03, 0x01],
            "version 0, offset, duration, size"
        );
        let (offset, samples) = trun_samples(trun);
        assert_eq!(offset as usize, at, "audio after video in mdat");
        for (frame, sample) in audio.iter().zip(&samples) {
            assert_eq!(*sample, (1024, frame.data.len() as u32, 0, 0));
            assert_eq!(data[at..at + frame.data.len()], frame.data[..]);
            at += frame.data.len();
        }
        assert_eq!(at, data.len(), "mdat ends with the last audio frame");

        // loadgen's reader: six video samples whose NAL lengths tile them, and the time each
        // track covers (tfdt plus the trun durations).
        let read =
            reader::Fragment::parse(&reader::Init::parse(&muxer.init()).unwrap(), &data).unwrap();
        assert_eq!(read.video_samples, 6);
        let span = |s: Option<reader::Span>| s.map(|s| (s.start, s.end, s.timescale));
        assert_eq!(span(read.video), Some((0, 18_000, 90_000)));
        assert_eq!(span(read.audio), Some((0, 10 * 1024, 48_000)));
    }

    /// Consecutive 200 ms parts: `tfdt` advances by exactly the durations written, in both
    /// timescales, also when audio times do not convert exactly and a part ends open.
    #[test]
    fn tfdt_advances_by_durations() {
        let mut muxer = muxer();
        let units = video_units(0);
        // Jittered audio times (not multiples of 15 ticks), as a clock mapping might produce.
        let frames: Vec<AudioFrame> = aac_frames()
            .into_iter()
            .enumerate()
            .map(|(n, f)| AudioFrame {
                pts: f.pts + (n as i64 * 7) % 11,
                ..f
            })
            .collect();
        let init = reader::Init::parse(&muxer.init()).unwrap();
        let mut expect: [Option<u64>; 2] = [None, None];
        let mut video_total = 0u64;
        for part in 0..10 {
            let window = |t: i64| t / 18_000 == part || (part == 9 && t >= 180_000);
            let video: Vec<_> = units.iter().filter(|u| window(u.dts)).cloned().collect();
            let audio: Vec<_> = frames.iter().filter(|f| window(f.pts)).cloned().collect();
            let next_video = units.iter().find(|u| u.dts > video.last().unwrap().dts);
            let next_audio = frames.iter().find(|f| f.pts > audio.last().unwrap().pts);
            let chunks = muxer
                .fragment(FragmentSamples {
                    video: &video,
                    // Every other part ends open: the guess is the previous duration.
                    video_end: next_video.filter(|_| part % 2 == 0).map(|u| u.dts),
                    audio: &audio,
                    audio_end: next_audio.map(|f| f.pts),
                })
                .unwrap();
            let data = concat(&chunks);
            check_tree(&data);
            let mfhd = find(&data, &["moof", "mfhd"]);
            assert_eq!(u32_at(mfhd, 4), part as u32 + 1);
            // Where each track starts (tfdt) and ends (plus its trun durations), read by
            // loadgen's reader.
            let read = reader::Fragment::parse(&init, &data).unwrap();
            let tracks = [
                (0, read.video, video[0].dts),
                (1, read.audio, audio[0].pts * 8 / 15),
            ];
            for (track, span, first_time) in tracks {
                let span = span.unwrap();
                assert_eq!(span.start, first_time as u64, "part {part} track {track}");
                if let Some(want) = expect[track] {
                    assert_eq!(span.start, want, "part {part} track {track} continues");
                }
                expect[track] = Some(span.end);
                if track == 0 {
                    video_total += span.end - span.start;
                }
            }
        }
        assert_eq!(video_total, 60 * 3000);
    }

    /// Slices big enough to be worth it are the input's own memory; the rest is copied.
    #[test]
    fn payloads_are_not_copied() {
        let mut muxer = muxer();
        let units = video_units(0);
        let frames = aac_frames();
        let chunks = muxer
            .fragment(FragmentSamples {
                video: &units[..6],
                audio: &frames[..10],
                ..Default::default()
            })
            .unwrap();
        let stream = H264.as_ptr_range();
        let audio = ADTS.as_ptr_range();
        let shared = chunks
            .iter()
            .filter(|c| stream.contains(&c.as_ptr()) || audio.contains(&c.as_ptr()))
            .count();
        let big_nals = units[..6]
            .iter()
            .flat_map(|u| &u.nalus)
            .filter(|n| n.len() >= COPY_BELOW)
            .count();
        let big_frames = frames[..10]
            .iter()
            .filter(|f| f.data.len() >= COPY_BELOW)
            .count();
        assert_eq!(shared, big_nals + big_frames);
        // Headers between payloads: one chunk for the moof and each run of prefixes.
        assert!(chunks.len() <= 2 * shared + 1);
    }

    #[test]
    fn parameter_sets_that_differ_stay_in_band() {
        let mut muxer = muxer();
        let mut unit = video_units(0)[0].clone();
        let mut pps = unit.nalus[1].to_vec();
        pps.push(0x80);
        unit.nalus[1] = Bytes::from(pps.clone());
        let data = concat(
            &muxer
                .fragment(FragmentSamples {
                    video: std::slice::from_ref(&unit),
                    ..Default::default()
                })
                .unwrap(),
        );
        let (offset, samples) = trun_samples(find(&data, &["moof", "traf", "trun"]));
        let sample = &data[offset as usize..][..samples[0].1 as usize];
        assert_eq!(u32_at(sample, 0) as usize, pps.len(), "the new PPS first");
        assert_eq!(&sample[4..4 + pps.len()], pps);
        assert_ne!(
            VideoParams::from_unit(&unit).ok().as_ref(),
            muxer.video_params()
        );
    }

    /// Times as the segmenter may pass them on (repeated, backwards, before the previous part's
    /// end): raised to keep decode times moving forward, counted, and the part still written.
    #[test]
    fn times_going_backwards_are_clamped() {
        let units = video_units(0);
        let frames = aac_frames();
        let mut muxer = muxer();
        let at = |n: usize, dts: i64| VideoUnit {
            dts,
            pts: dts,
            ..units[n].clone()
        };
        // 0, 3000, 2000 (back), 2000 (repeat), 9000 - and an end before the last.
        let video = [at(0, 0), at(1, 3000), at(2, 2000), at(3, 2000), at(4, 9000)];
        let mut audio = frames[..3].to_vec();
        audio[0].pts = -5; // before the timeline
        audio[2].pts = 1000; // before the frame before
        let data = concat(
            &muxer
                .fragment(FragmentSamples {
                    video: &video,
                    video_end: Some(8000),
                    audio: &audio,
                    audio_end: None,
                })
                .unwrap(),
        );
        check_tree(&data);
        assert_eq!(muxer.clamped(), 4);
        let (_, samples) = trun_samples(find(&data, &["moof", "traf#0", "trun"]));
        let timing: Vec<_> = samples.iter().map(|s| (s.0, s.3)).collect();
        assert_eq!(
            timing,
            [(3000, 0), (0, 0), (0, -1000), (6000, -1000), (0, 0)],
            "(duration, composition offset): pts stays, dts is raised"
        );
        let tfdt = find(&data, &["moof", "traf#1", "tfdt"]);
        assert_eq!(tfdt[4..], [0; 8], "audio from 0");
        let (_, samples) = trun_samples(find(&data, &["moof", "traf#1", "trun"]));
        let durations: Vec<_> = samples.iter().map(|s| s.0).collect();
        assert_eq!(durations, [1024, 0, 1024]);

        // The next part starts before where this one ended (9000 video, 3840 audio).
        let data = concat(
            &muxer
                .fragment(FragmentSamples {
                    video: &[at(5, 8000), at(6, 12_000)],
                    audio: &[AudioFrame {
                        pts: 3000,
                        ..frames[2].clone()
                    }],
                    ..Default::default()
                })
                .unwrap(),
        );
        assert_eq!(muxer.clamped(), 6);
        let tfdt = find(&data, &["moof", "traf#0", "tfdt"]);
        assert_eq!(u32_at(tfdt, 8), 9000);
        let tfdt = find(&data, &["moof", "traf#1", "tfdt"]);
        assert_eq!(u32_at(tfdt, 8), 3840 * 8 / 15);
    }

    #[test]
    fn errors_leave_the_muxer_unchanged() {
        let units = video_units(0);
        let mut muxer = muxer();
        let frag = |m: &mut Fmp4Muxer, v: &[VideoUnit], a: &[AudioFrame], ve, ae| {
            m.fragment(FragmentSamples {
                video: v,
                video_end: ve,
                audio: a,
                audio_end: ae,
            })
        };
        assert_eq!(
            frag(&mut muxer, &[], &[], None, None),
            Err(Fmp4Error::Empty)
        );
        let mut far = units[1].clone();
        far.dts = 1 << 40;
        far.pts = 1 << 40;
        assert!(matches!(
            frag(&mut muxer, &[units[0].clone(), far], &[], None, None),
            Err(Fmp4Error::OutOfRange {
                what: "duration",
                ..
            })
        ));
        assert_eq!(muxer.next_sequence(), 1, "nothing written yet");
        assert_eq!(muxer.clamped(), 0);

        let mut audio_only = Fmp4Muxer::new(
            None,
            Some(AudioParams::Aac(AacConfig::parse(&ASC).unwrap())),
        )
        .unwrap();
        assert_eq!(
            frag(&mut audio_only, &units[..1], &[], None, None),
            Err(Fmp4Error::NoSuchTrack(Track::Video))
        );
        assert_eq!(Fmp4Muxer::new(None, None).err(), Some(Fmp4Error::NoTracks));
        let opus = AudioParams::Opus(OpusParams {
            channels: 3,
            pre_skip: 0,
        });
        assert_eq!(
            Fmp4Muxer::new(None, Some(opus)).err(),
            Some(Fmp4Error::OpusChannels(3))
        );
        assert_eq!(
            VideoParams::from_unit(&units[1]),
            Err(Fmp4Error::MissingParameterSet("SPS"))
        );
        let sps = units[0].nalus[0].clone();
        assert_eq!(
            VideoParams::new(sps.clone(), sps),
            Err(Fmp4Error::MissingParameterSet("PPS"))
        );
    }

    /// Random NAL units, times and sizes: errors, never panics, and what is written tiles.
    #[test]
    fn random_input_never_panics() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let init = reader::Init::parse(&muxer().init()).unwrap();
        let mut ok = 0;
        for _ in 0..300 {
            let mut muxer = muxer();
            for _ in 0..4 {
                let mut time = (rand() % 1000) as i64 - 100;
                let video: Vec<VideoUnit> = (0..rand() % 4)
                    .map(|_| {
                        time += (rand() % 5000) as i64 - 200;
                        VideoUnit {
                            pts: time + (rand() % 3) as i64 - 1,
                            dts: time,
                            keyframe: rand().is_multiple_of(2),
                            nalus: (0..rand() % 4)
                                .map(|_| {
                                    let len = (rand() % 300) as usize;
                                    Bytes::from((0..len).map(|_| rand() as u8).collect::<Vec<_>>())
                                })
                                .collect(),
                        }
                    })
                    .collect();
                let audio: Vec<AudioFrame> = (0..rand() % 4)
                    .map(|_| AudioFrame {
                        pts: (rand() % 100_000) as i64 - 10,
                        duration: (rand() % 4000) as i64 - 100,
                        data: Bytes::from(vec![0x21; (rand() % 400) as usize]),
                    })
                    .collect();
                let end = |r: u64| r.is_multiple_of(3).then_some((r % 200_000) as i64);
                if let Ok(chunks) = muxer.fragment(FragmentSamples {
                    video: &video,
                    video_end: end(rand()),
                    audio: &audio,
                    audio_end: end(rand()),
                }) {
                    let data = concat(&chunks);
                    check_tree(&data);
                    // Every sample where its trun says, NAL lengths tiling it.
                    reader::Fragment::parse(&init, &data).unwrap();
                    ok += 1;
                }
            }
        }
        assert!(ok > 50, "{ok} fragments written");
    }

    /// An init segment and two 1 s segments of five 200 ms parts each, behind a hand-written
    /// playlist: Debian's ffprobe sees H.264 and AAC with every packet where it belongs, and
    /// ffmpeg decodes the lot without a word.
    #[test]
    fn ffmpeg_plays_hls_fmp4() {
        let (Some(ffprobe), Some(ffmpeg)) = (tool("ffprobe"), tool("ffmpeg")) else {
            return;
        };
        let dir = temp_dir("fmp4");
        let mut muxer = muxer();
        let units = video_units(0);
        let frames = aac_frames();
        let init = muxer.init();
        std::fs::write(dir.join("init.mp4"), &init).unwrap();
        let mut all = init.to_vec();
        for segment in 0..2 {
            let mut bytes = Vec::new();
            for part in segment * 5..segment * 5 + 5 {
                let window = |t: i64| t / 18_000 == part || (part == 9 && t >= 180_000);
                let video: Vec<_> = units.iter().filter(|u| window(u.dts)).cloned().collect();
                let audio: Vec<_> = frames.iter().filter(|f| window(f.pts)).cloned().collect();
                let chunks = muxer
                    .fragment(FragmentSamples {
                        video: &video,
                        video_end: units.get(6 * part as usize + 6).map(|u| u.dts),
                        audio: &audio,
                        audio_end: frames
                            .iter()
                            .find(|f| f.pts > audio.last().unwrap().pts)
                            .map(|f| f.pts),
                    })
                    .unwrap();
                bytes.extend(concat(&chunks));
            }
            std::fs::write(dir.join(format!("seg{segment}.m4s")), &bytes).unwrap();
            all.extend(bytes);
        }
        let playlist = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n\
                        #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
                        #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1.000,\nseg0.m4s\n\
                        #EXTINF:1.000,\nseg1.m4s\n#EXT-X-ENDLIST\n";
        std::fs::write(dir.join("index.m3u8"), playlist).unwrap();
        std::fs::write(dir.join("all.mp4"), &all).unwrap();

        for file in ["index.m3u8", "all.mp4"] {
            check_plays(&ffprobe, &ffmpeg, &dir.join(file), 0.0, frames.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
