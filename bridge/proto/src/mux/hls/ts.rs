//! MPEG-2 transport stream for HLS (ISO/IEC 13818-1): one program with H.264 on PID 0x100 and
//! ADTS AAC on PID 0x101, the layout Apple's tools and ffmpeg write.
//!
//! Decisions a playlist writer should know:
//!
//! - Timestamps are the session timeline's plus [`TIMESTAMP_OFFSET`] (1 s), modulo 2^33. The
//!   timeline starts at 0, and the program clock reference runs [`PCR_LEAD`] ahead of the decode
//!   times it is sent with, so without the offset the first PCRs would be negative. Players start
//!   from the first segment's timestamps, so the offset is invisible; it only means TS and fMP4
//!   renditions of one session do not share timestamps.
//! - The PCR rides on the video PID (the audio PID when there is no video), in the adaptation field
//!   of the first packet of every PES on it: at 30 fps that is every 33 ms, inside the 100 ms the
//!   standard asks for. It never steps back, even when a decode time does.
//! - Each video PES is one access unit: an access unit delimiter, then the unit's NAL units with
//!   4-byte start codes. A key frame that arrives without SPS and PPS gets the last ones seen, so
//!   every segment starting on a key frame decodes alone. Key frames set `random_access_indicator`,
//!   and so does every audio PES (every AAC frame is a random access point).
//! - Audio: one PES per [`TsMuxer::audio`] call, carrying every frame given (split only where a PES
//!   would pass 64 KiB), each frame behind its own ADTS header. Grouping a few frames per PES (say
//!   those of one video frame interval or one part) saves the ~150 bytes of stuffing a lone
//!   300-byte frame costs in two packets.
//! - Continuity counters run on across segments, as in one long stream cut in pieces.
//! - Output is contiguous: TS packets interleave a header every 184 bytes, so handing NAL units on
//!   uncopied would mean two iovecs per 188 bytes. One copy into pre-sized packets is cheaper.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::fmp4::Track;
use crate::media::aac::{AacConfig, Adts};
use crate::media::h264::nal::{NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS, nal_type};
use crate::media::h264::params::ParameterSets;
use crate::media::unit::{AudioFrame, TIMELINE_HZ, VideoUnit};

/// Size of a transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// Stream type of H.264 video (ISO/IEC 13818-1 Table 2-34).
pub const STREAM_TYPE_H264: u8 = 0x1b;
/// Stream type of AAC in ADTS.
pub const STREAM_TYPE_ADTS: u8 = 0x0f;
/// Added to every timeline time to make PTS, DTS and PCR (see the module docs).
pub const TIMESTAMP_OFFSET: i64 = TIMELINE_HZ;
/// How far the PCR sent with a PES is before its decode time: the decoder's buffering delay.
pub const PCR_LEAD: i64 = TIMELINE_HZ / 10;

const PAYLOAD_SIZE: usize = PACKET_SIZE - 4;
/// PES stream ids: the first video and the first audio stream.
const STREAM_ID_VIDEO: u8 = 0xe0;
const STREAM_ID_AUDIO: u8 = 0xc0;
/// An access unit delimiter saying any slice type may follow (`primary_pic_type` 7).
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];
const START_CODE: [u8; 4] = [0, 0, 0, 1];
const ADTS_HEADER: usize = Adts::HEADER_LEN;
/// PES header with PTS only: start code, stream id, length, two flag bytes, header length, PTS.
const PES_HEADER_PTS: usize = 14;
/// `PES_packet_length` counts the bytes after itself.
const PES_MAX_LENGTH: usize = u16::MAX as usize;

/// What went wrong describing or muxing a stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TsError {
    /// A muxer was asked for with neither track.
    #[error("a TS muxer needs at least one track")]
    NoTracks,
    /// Samples were given for a track the muxer was not made with.
    #[error("{0} samples for a muxer without a {0} track")]
    NoSuchTrack(Track),
    /// ADTS carries object types 1 to 4 and the tabled sampling frequencies only.
    #[error(
        "AAC object type {object_type} at frequency index {frequency_index} has no ADTS header"
    )]
    NotAdts {
        /// Audio object type.
        object_type: u8,
        /// Sampling frequency index (15 for an explicit rate).
        frequency_index: u8,
    },
    /// An AAC frame too large for ADTS's 13-bit length.
    #[error("AAC frame of {0} bytes (ADTS allows {max})", max = Adts::MAX_PAYLOAD)]
    FrameTooLarge(usize),
}

/// Writes MPEG-TS for one stream: [`segment_start`](Self::segment_start) at each segment, then
/// [`video`](Self::video) and [`audio`](Self::audio) in decode order.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    video: bool,
    /// The ADTS headers of the audio track.
    adts: Option<Adts>,
    pat_cc: u8,
    pmt_cc: u8,
    video_cc: u8,
    audio_cc: u8,
    /// The latest parameter sets seen, for key frames that come without them.
    params: ParameterSets,
    /// The last PCR sent, on the timeline: the clock never steps back, even if a decode time does.
    last_pcr: Option<i64>,
}

impl TsMuxer {
    /// A muxer for H.264 (if `video`) and AAC described by `audio` (at least one).
    pub fn new(video: bool, audio: Option<&AacConfig>) -> Result<Self, TsError> {
        if !video && audio.is_none() {
            return Err(TsError::NoTracks);
        }
        let adts = audio
            .map(|config| {
                Adts::new(config).ok_or(TsError::NotAdts {
                    object_type: config.object_type(),
                    frequency_index: config.frequency_index(),
                })
            })
            .transpose()?;
        Ok(Self {
            video,
            adts,
            pat_cc: 0,
            pmt_cc: 0,
            video_cc: 0,
            audio_cc: 0,
            params: ParameterSets::new(),
            last_pcr: None,
        })
    }

    /// The PID carrying the PCR.
    pub fn pcr_pid(&self) -> u16 {
        if self.video { VIDEO_PID } else { AUDIO_PID }
    }

    /// PAT and PMT: the two packets every segment starts with.
    pub fn segment_start(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 * PACKET_SIZE);

        let mut pat = Vec::with_capacity(16);
        pat.extend_from_slice(&[0x00, 0xb0, 0x0d]); // table_id, syntax flag, section_length 13
        pat.extend_from_slice(&[0x00, 0x01, 0xc1, 0x00, 0x00]); // ts id 1, version 0, current
        pat.extend_from_slice(&[0x00, 0x01]); // program_number 1
        pat.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        write_section(&mut out, 0, &mut self.pat_cc, &pat);

        let mut streams = Vec::with_capacity(10);
        if self.video {
            streams.push((STREAM_TYPE_H264, VIDEO_PID));
        }
        if self.adts.is_some() {
            streams.push((STREAM_TYPE_ADTS, AUDIO_PID));
        }
        // After section_length: 9 bytes of header, 5 a stream, 4 of CRC.
        let section_length = (9 + 5 * streams.len() + 4) as u16;
        let mut pmt = Vec::with_capacity(32);
        pmt.push(0x02); // table_id
        pmt.extend_from_slice(&(0xb000 | section_length).to_be_bytes());
        pmt.extend_from_slice(&[0x00, 0x01, 0xc1, 0x00, 0x00]); // program 1, version 0, current
        pmt.extend_from_slice(&(0xe000 | self.pcr_pid()).to_be_bytes());
        pmt.extend_from_slice(&[0xf0, 0x00]); // program_info_length 0
        for (stream_type, pid) in streams {
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            pmt.extend_from_slice(&[0xf0, 0x00]); // ES_info_length 0
        }
        write_section(&mut out, PMT_PID, &mut self.pmt_cc, &pmt);
        out.freeze()
    }

    /// The PCR base to send with a PES decoded at `dts`.
    fn pcr(&mut self, dts: i64) -> u64 {
        let time = dts
            .saturating_sub(PCR_LEAD)
            .max(self.last_pcr.unwrap_or(i64::MIN));
        self.last_pcr = Some(time);
        timestamp(time)
    }

    /// One access unit as a PES on the video PID. A unit without NAL units writes nothing.
    pub fn video(&mut self, unit: &VideoUnit) -> Result<Bytes, TsError> {
        if !self.video {
            return Err(TsError::NoSuchTrack(Track::Video));
        }
        let nalus: Vec<&Bytes> = unit
            .nalus
            .iter()
            .filter(|n| nal_type(n).is_some_and(|t| t != NAL_AUD))
            .collect();
        if nalus.is_empty() {
            return Ok(Bytes::new());
        }
        let has = |kind: u8| nalus.iter().any(|n| nal_type(n) == Some(kind));
        let (has_sps, has_pps) = (has(NAL_SPS), has(NAL_PPS));
        let mut inserted: Vec<Bytes> = Vec::new();
        if has(NAL_IDR) {
            if !has_sps {
                inserted.extend(self.params.sps().iter().cloned());
            }
            if !has_pps {
                inserted.extend(self.params.pps().iter().cloned());
            }
        }
        if let Some(next) = self.params.changed_by(&unit.nalus) {
            self.params = next;
        }

        let mut body: Vec<&[u8]> = Vec::with_capacity(1 + 2 * (nalus.len() + inserted.len()));
        body.push(&AUD);
        for nal in inserted.iter().chain(nalus.iter().copied()) {
            body.push(&START_CODE);
            body.push(nal);
        }
        let header = pes_header(
            STREAM_ID_VIDEO,
            timestamp(unit.pts),
            (unit.dts != unit.pts).then(|| timestamp(unit.dts)),
            body.iter().map(|p| p.len()).sum(),
        );
        let pcr = self.pcr(unit.dts);
        let mut out = BytesMut::with_capacity(packets_for(header.len(), &body) * PACKET_SIZE);
        write_pes(
            &mut out,
            VIDEO_PID,
            &mut self.video_cc,
            &header,
            &body,
            Adaptation {
                pcr: Some(pcr),
                random_access: unit.keyframe,
            },
        );
        Ok(out.freeze())
    }

    /// AAC frames (raw, without ADTS headers) as one PES on the audio PID, each frame behind an
    /// ADTS header; more than one PES only if they would pass 64 KiB.
    pub fn audio(&mut self, frames: &[AudioFrame]) -> Result<Bytes, TsError> {
        let Some(adts) = self.adts else {
            return Err(TsError::NoSuchTrack(Track::Audio));
        };
        if let Some(big) = frames.iter().find(|f| f.data.len() > Adts::MAX_PAYLOAD) {
            return Err(TsError::FrameTooLarge(big.data.len()));
        }
        let total_in: usize = frames.iter().map(|f| ADTS_HEADER + f.data.len()).sum();
        let pes_count = total_in / (PES_MAX_LENGTH / 2) + 1;
        let packets = total_in.div_ceil(PAYLOAD_SIZE) + 2 * pes_count;
        let mut out = BytesMut::with_capacity(packets * PACKET_SIZE);
        let pcr_here = !self.video;
        let mut rest = frames;
        while let Some(first) = rest.first() {
            // As many frames as fit one PES (each fits alone: checked above).
            let mut len = PES_HEADER_PTS - 6;
            let count = rest
                .iter()
                .take_while(|f| {
                    len += ADTS_HEADER + f.data.len();
                    len <= PES_MAX_LENGTH
                })
                .count()
                .max(1);
            let (batch, next) = rest.split_at(count.min(rest.len()));
            rest = next;

            let headers = batch
                .iter()
                .map(|f| adts.header(f.data.len()))
                .collect::<Option<Vec<_>>>()
                .ok_or(TsError::FrameTooLarge(Adts::MAX_PAYLOAD + 1))?; // checked above
            let mut body: Vec<&[u8]> = Vec::with_capacity(2 * batch.len());
            for (frame, adts) in batch.iter().zip(&headers) {
                body.push(adts);
                body.push(&frame.data);
            }
            let payload = body.iter().map(|p| p.len()).sum();
            let header = pes_header(STREAM_ID_AUDIO, timestamp(first.pts), None, payload);
            let pcr = pcr_here.then(|| self.pcr(first.pts));
            write_pes(
                &mut out,
                AUDIO_PID,
                &mut self.audio_cc,
                &header,
                &body,
                Adaptation {
                    pcr,
                    random_access: true,
                },
            );
        }
        Ok(out.freeze())
    }
}

/// A timeline time as a 33-bit PES timestamp.
fn timestamp(time: i64) -> u64 {
    time.saturating_add(TIMESTAMP_OFFSET).rem_euclid(1 << 33) as u64
}

/// Packets a PES takes at most (the first may give 8 bytes to its adaptation field).
fn packets_for(header: usize, body: &[&[u8]]) -> usize {
    let bytes = header + body.iter().map(|p| p.len()).sum::<usize>();
    bytes.div_ceil(PAYLOAD_SIZE) + 1
}

/// A PES header for `payload` bytes. Its length is 0 (unbounded) when it does not fit 16 bits,
/// which only video PESs may do; audio ones are kept under the limit by the caller.
fn pes_header(stream_id: u8, pts: u64, dts: Option<u64>, payload: usize) -> Vec<u8> {
    let optional = if dts.is_some() { 13 } else { 8 };
    let length = u16::try_from(optional + payload).unwrap_or(0);
    let mut h = Vec::with_capacity(6 + optional);
    h.extend_from_slice(&[0, 0, 1, stream_id]);
    h.extend_from_slice(&length.to_be_bytes());
    h.push(0x84); // marker '10', data_alignment_indicator: the payload starts an access unit
    match dts {
        None => {
            h.push(0x80);
            h.push(5);
            put_timestamp(&mut h, 0x2, pts);
        }
        Some(dts) => {
            h.push(0xc0);
            h.push(10);
            put_timestamp(&mut h, 0x3, pts);
            put_timestamp(&mut h, 0x1, dts);
        }
    }
    h
}

/// 33 bits in 5 bytes, with a 4-bit prefix and marker bits (ISO/IEC 13818-1 §2.4.3.7).
fn put_timestamp(h: &mut Vec<u8>, prefix: u8, ts: u64) {
    h.push(prefix << 4 | ((ts >> 29) & 0x0e) as u8 | 1);
    h.push((ts >> 22) as u8);
    h.push(((ts >> 14) & 0xfe) as u8 | 1);
    h.push((ts >> 7) as u8);
    h.push(((ts << 1) & 0xfe) as u8 | 1);
}

/// Adaptation field contents for the first packet of a PES.
#[derive(Debug, Clone, Copy)]
struct Adaptation {
    pcr: Option<u64>,
    random_access: bool,
}

/// Cuts a PES (a header and body pieces to concatenate) into packets; the last is padded with
/// adaptation field stuffing, as PES payloads may not be padded otherwise.
fn write_pes(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    header: &[u8],
    body: &[&[u8]],
    first: Adaptation,
) {
    let mut remaining = header.len() + body.iter().map(|p| p.len()).sum::<usize>();
    let mut cursor = Cursor {
        current: header,
        rest: body.iter(),
    };
    let mut adaptation = Some(first).filter(|a| a.pcr.is_some() || a.random_access);
    let mut start = true;
    while remaining > 0 {
        // Adaptation field bytes this packet needs anyway: length, flags, PCR.
        let fields = adaptation.map_or(0, |a| 2 + if a.pcr.is_some() { 6 } else { 0 });
        let payload = remaining.min(PAYLOAD_SIZE - fields);
        let af_len = PAYLOAD_SIZE - payload; // including its length byte; 0 for none

        out.put_u8(0x47);
        out.put_u16(u16::from(start) << 14 | (pid & 0x1fff));
        out.put_u8(if af_len > 0 { 0x30 } else { 0x10 } | *cc);
        *cc = (*cc + 1) & 0x0f;
        if af_len > 0 {
            out.put_u8((af_len - 1) as u8);
            if af_len > 1 {
                let mut flags = 0u8;
                if let Some(a) = adaptation {
                    if a.random_access {
                        flags |= 0x40;
                    }
                    if a.pcr.is_some() {
                        flags |= 0x10;
                    }
                }
                out.put_u8(flags);
                let mut written = 2;
                if let Some(base) = adaptation.and_then(|a| a.pcr) {
                    // 33-bit base, 6 reserved bits, 9-bit extension 0.
                    out.put_u32((base >> 1) as u32);
                    out.put_u8(((base & 1) as u8) << 7 | 0x7e);
                    out.put_u8(0);
                    written += 6;
                }
                out.put_bytes(0xff, af_len - written);
            }
        }
        cursor.copy_to(out, payload);
        remaining -= payload;
        start = false;
        adaptation = None;
    }
}

/// Reads consecutive bytes from a header and a list of slices.
struct Cursor<'a, I> {
    current: &'a [u8],
    rest: I,
}

impl<'a, I: Iterator<Item = &'a &'a [u8]>> Cursor<'a, I> {
    fn copy_to(&mut self, out: &mut BytesMut, mut n: usize) {
        while n > 0 {
            if self.current.is_empty() {
                match self.rest.next() {
                    Some(piece) => self.current = piece,
                    None => return,
                }
                continue;
            }
            let (now, later) = self.current.split_at(self.current.len().min(n));
            out.put_slice(now);
            n -= now.len();
            self.current = later;
        }
    }
}

/// A PSI section in one packet: pointer field 0, the section, its CRC, then 0xff stuffing.
fn write_section(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    let start = out.len();
    out.put_u8(0x47);
    out.put_u16(0x4000 | pid); // payload_unit_start_indicator
    out.put_u8(0x10 | *cc);
    *cc = (*cc + 1) & 0x0f;
    out.put_u8(0); // pointer_field
    out.put_slice(section);
    out.put_u32(crc32_mpeg2(section));
    let used = out.len() - start;
    out.put_bytes(0xff, PACKET_SIZE.saturating_sub(used));
}

/// CRC-32/MPEG-2 (polynomial 0x04c11db7, MSB first, initial all ones, no final xor).
fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{
        ADTS, ASC, aac_frames, check_plays, temp_dir, tool, video_units, xorshift,
    };

    /// One parsed TS packet.
    #[derive(Debug)]
    struct Packet<'a> {
        pid: u16,
        start: bool,
        cc: u8,
        /// Adaptation field after its length byte (`None` without one).
        adaptation: Option<&'a [u8]>,
        payload: &'a [u8],
    }

    impl Packet<'_> {
        fn random_access(&self) -> bool {
            self.adaptation
                .is_some_and(|a| a.first().is_some_and(|f| f & 0x40 != 0))
        }

        fn pcr(&self) -> Option<u64> {
            let a = self.adaptation?;
            (a.first()? & 0x10 != 0).then(|| {
                let base = u64::from(u32::from_be_bytes(a[1..5].try_into().unwrap())) << 1
                    | u64::from(a[5] >> 7);
                assert_eq!(a[5] & 0x7e, 0x7e, "reserved bits");
                assert_eq!((a[5] & 1, a[6]), (0, 0), "extension 0");
                base
            })
        }
    }

    /// Splits into packets, checking ISO/IEC 13818-1 §2.4.3.2 structure on the way.
    fn packets(data: &[u8]) -> Vec<Packet<'_>> {
        assert_eq!(data.len() % PACKET_SIZE, 0);
        data.chunks(PACKET_SIZE)
            .map(|p| {
                assert_eq!(p[0], 0x47, "sync byte");
                assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
                assert_eq!(p[3] & 0xc0, 0, "not scrambled");
                let control = p[3] >> 4 & 3;
                assert!(control == 1 || control == 3, "payload present");
                let (adaptation, payload) = if control == 3 {
                    let len = usize::from(p[4]);
                    assert!(len <= 183);
                    let field = &p[5..5 + len];
                    if len > 0 {
                        // After the flags and the PCR, only stuffing.
                        let used = 1 + if field[0] & 0x10 != 0 { 6 } else { 0 };
                        assert_eq!(field[0] & 0x2f, 0, "no other fields");
                        assert!(field[used..].iter().all(|&b| b == 0xff), "stuffing");
                    }
                    (Some(field), &p[5 + len..])
                } else {
                    (None, &p[4..])
                };
                Packet {
                    pid: u16::from_be_bytes([p[1], p[2]]) & 0x1fff,
                    start: p[1] & 0x40 != 0,
                    cc: p[3] & 0x0f,
                    adaptation,
                    payload,
                }
            })
            .collect()
    }

    /// PES packets of one PID: `(first packet, bytes)`, continuity checked.
    fn pes_of<'a>(packets: &'a [Packet<'a>], pid: u16) -> Vec<(&'a Packet<'a>, Vec<u8>)> {
        let mut out: Vec<(&Packet, Vec<u8>)> = Vec::new();
        let mut cc = None;
        for p in packets.iter().filter(|p| p.pid == pid) {
            if let Some(prev) = cc {
                assert_eq!(p.cc, (prev + 1) & 0x0f, "continuity on {pid:#x}");
            }
            cc = Some(p.cc);
            if p.start {
                out.push((p, Vec::new()));
            }
            out.last_mut()
                .expect("PES starts with PUSI")
                .1
                .extend_from_slice(p.payload);
        }
        out
    }

    fn read_timestamp(b: &[u8], prefix: u8) -> u64 {
        assert_eq!(b[0] >> 4, prefix);
        assert_eq!((b[0] & 1, b[2] & 1, b[4] & 1), (1, 1, 1), "marker bits");
        u64::from(b[0] >> 1 & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    }

    /// Parses a PES (§2.4.3.6): `(stream_id, pts, dts, payload)`, checking the length field.
    fn parse_pes(pes: &[u8]) -> (u8, u64, Option<u64>, &[u8]) {
        assert_eq!(pes[..3], [0, 0, 1]);
        let length = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
        if length != 0 {
            assert_eq!(length, pes.len() - 6, "PES_packet_length");
        }
        assert_eq!(pes[6], 0x84, "marker, data alignment");
        let header_len = usize::from(pes[8]);
        let (pts, dts) = match pes[7] {
            0x80 => (read_timestamp(&pes[9..], 2), None),
            0xc0 => (
                read_timestamp(&pes[9..], 3),
                Some(read_timestamp(&pes[14..], 1)),
            ),
            flags => panic!("PES flags {flags:#x}"),
        };
        (pes[3], pts, dts, &pes[9 + header_len..])
    }

    fn section_crc_ok(section: &[u8]) -> bool {
        crc32_mpeg2(section) == 0
    }

    #[test]
    fn crc_check_value() {
        // The catalogue check value of CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    /// §2.4.4.3 and §2.4.4.8, field by field.
    #[test]
    fn pat_and_pmt() {
        let config = AacConfig::parse(&ASC).unwrap();
        let mut muxer = TsMuxer::new(true, Some(&config)).unwrap();
        let start = muxer.segment_start();
        let ps = packets(&start);
        assert_eq!(ps.len(), 2);
        let (pat, pmt) = (&ps[0], &ps[1]);
        assert_eq!((pat.pid, pat.start, pat.cc), (0, true, 0));
        assert_eq!(pat.payload[0], 0, "pointer_field");
        let section = &pat.payload[1..1 + 3 + 13];
        #[rustfmt::skip]
        assert_eq!(section[..12], [
            0x00, 0xb0, 13, // table_id, section_syntax_indicator, section_length
            0x00, 0x01, 0xc1, 0x00, 0x00, // transport_stream_id 1, version 0, current, sections 0/0
            0x00, 0x01, 0xf0, 0x00, // program 1 -> PMT PID 0x1000
        ]);
        assert!(section_crc_ok(section));
        assert!(pat.payload[17..].iter().all(|&b| b == 0xff));

        assert_eq!((pmt.pid, pmt.start, pmt.cc), (0x1000, true, 0));
        let section = &pmt.payload[1..1 + 3 + 23];
        #[rustfmt::skip]
        assert_eq!(section[..22], [
            0x02, 0xb0, 23, // table_id 2, section_length
            0x00, 0x01, 0xc1, 0x00, 0x00, // program 1, version 0, current, sections 0/0
            0xe1, 0x00, // PCR_PID 0x100
            0xf0, 0x00, // program_info_length 0
            0x1b, 0xe1, 0x00, 0xf0, 0x00, // H.264 on 0x100
            0x0f, 0xe1, 0x01, 0xf0, 0x00, // ADTS AAC on 0x101
        ]);
        assert!(section_crc_ok(section));
        assert!(pmt.payload[27..].iter().all(|&b| b == 0xff));

        // Counters continue in the next segment.
        let again = muxer.segment_start();
        assert!(packets(&again).iter().all(|p| p.cc == 1));

        // Audio only: the PCR moves to the audio PID.
        let mut muxer = TsMuxer::new(false, Some(&config)).unwrap();
        let start = muxer.segment_start();
        let pmt = &packets(&start)[1];
        assert_eq!(pmt.payload[1..1 + 3 + 18][8..12], [0xe1, 0x01, 0xf0, 0x00]);
        assert_eq!(pmt.payload[13..18], [0x0f, 0xe1, 0x01, 0xf0, 0x00]);
        assert!(section_crc_ok(&pmt.payload[1..1 + 3 + 18]));
    }

    /// Every unit of the real stream: one PES each with the AUD, start codes and NAL units,
    /// PTS = time + 1 s, PCR 100 ms before, random access on key frames, stuffing only in
    /// adaptation fields, counters continuous.
    #[test]
    fn video_pes() {
        let mut muxer = TsMuxer::new(true, None).unwrap();
        let units = video_units(0);
        let mut data = muxer.segment_start().to_vec();
        for unit in &units {
            data.extend_from_slice(&muxer.video(unit).unwrap());
        }
        let ps = packets(&data);
        let pes = pes_of(&ps, VIDEO_PID);
        assert_eq!(pes.len(), units.len());
        for (unit, (first, bytes)) in units.iter().zip(&pes) {
            let (stream_id, pts, dts, payload) = parse_pes(bytes);
            assert_eq!(stream_id, 0xe0);
            assert_eq!(pts, (unit.pts + 90_000) as u64);
            assert_eq!(dts, None, "DTS only when it differs");
            assert_eq!(first.pcr(), Some((unit.dts + 90_000 - 9_000) as u64));
            assert_eq!(first.random_access(), unit.keyframe);
            let mut want = vec![0, 0, 0, 1, 9, 0xf0];
            for nal in &unit.nalus {
                want.extend_from_slice(&[0, 0, 0, 1]);
                want.extend_from_slice(nal);
            }
            assert_eq!(payload, want);
        }
        // Only the last packet of each PES is padded (and the first carries the PCR).
        let non_last_padded = ps
            .iter()
            .zip(ps.iter().skip(1))
            .filter(|(p, next)| p.pid == VIDEO_PID && !next.start && !p.start)
            .filter(|(p, _)| p.adaptation.is_some())
            .count();
        assert_eq!(non_last_padded, 0);
    }

    #[test]
    fn key_frames_without_parameter_sets_get_the_last_ones() {
        let mut muxer = TsMuxer::new(true, None).unwrap();
        let units = video_units(0);
        muxer.video(&units[0]).unwrap();
        let mut bare = units[30].clone();
        assert!(bare.keyframe);
        let (sps, pps) = (bare.nalus[0].clone(), bare.nalus[1].clone());
        bare.nalus.retain(|n| !matches!(n[0] & 0x1f, 7 | 8));
        bare.nalus.insert(0, Bytes::from_static(&[0x09, 0x10])); // an AUD of its own: dropped
        let data = muxer.video(&bare).unwrap();
        let ps = packets(&data);
        let pes = pes_of(&ps, VIDEO_PID);
        let (_, _, _, payload) = parse_pes(&pes[0].1);
        let mut want = vec![0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1];
        want.extend_from_slice(&sps);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&pps);
        assert!(payload.starts_with(&want));
        assert_eq!(
            payload.len(),
            want.len()
                + units[30].nalus[2..]
                    .iter()
                    .map(|n| n.len() + 4)
                    .sum::<usize>()
        );
    }

    #[test]
    fn dts_and_wrap() {
        let mut muxer = TsMuxer::new(true, None).unwrap();
        let mut unit = video_units(0)[1].clone();
        unit.dts = (1 << 33) - 90_000 - 10; // wraps with the offset
        unit.pts = unit.dts + 6000;
        let data = muxer.video(&unit).unwrap();
        let ps = packets(&data);
        let (_, pts, dts, _) = parse_pes(&pes_of(&ps, VIDEO_PID)[0].1);
        assert_eq!(dts, Some((1 << 33) - 10));
        assert_eq!(pts, 5990);
        assert_eq!(ps[0].pcr(), Some((1 << 33) - 10 - 9000));
    }

    #[test]
    fn pcr_never_steps_back() {
        let mut muxer = TsMuxer::new(true, None).unwrap();
        let units = video_units(0);
        let mut pcrs = Vec::new();
        for (unit, dts) in units.iter().zip([3000, 6000, 4000, 9000]) {
            let unit = VideoUnit {
                dts,
                pts: dts,
                ..unit.clone()
            };
            let data = muxer.video(&unit).unwrap();
            pcrs.push(packets(&data)[0].pcr().unwrap());
        }
        assert_eq!(pcrs, [84_000, 87_000, 87_000, 90_000]);
    }

    /// ADTS headers (ISO/IEC 14496-3 §1.A.2.2) around each frame; frames grouped into one PES.
    #[test]
    fn audio_pes() {
        let config = AacConfig::parse(&ASC).unwrap();
        let mut muxer = TsMuxer::new(true, Some(&config)).unwrap();
        let frames = aac_frames();
        let mut data = Vec::new();
        for group in frames.chunks(5) {
            data.extend_from_slice(&muxer.audio(group).unwrap());
        }
        let ps = packets(&data);
        let pes = pes_of(&ps, AUDIO_PID);
        assert_eq!(pes.len(), frames.len().div_ceil(5));
        // The file the frames came from is ADTS: the PES payloads rebuild it byte for byte.
        let mut rebuilt = Vec::new();
        for ((first, bytes), group) in pes.iter().zip(frames.chunks(5)) {
            let (stream_id, pts, dts, payload) = parse_pes(bytes);
            assert_eq!((stream_id, dts), (0xc0, None));
            assert_eq!(pts, (group[0].pts + 90_000) as u64);
            assert!(first.random_access());
            assert_eq!(first.pcr(), None, "PCR on video");
            rebuilt.extend_from_slice(payload);
        }
        assert_eq!(rebuilt, ADTS);

        // Audio only: PCR on audio.
        let mut muxer = TsMuxer::new(false, Some(&config)).unwrap();
        let data = muxer.audio(&frames[..1]).unwrap();
        assert_eq!(packets(&data)[0].pcr(), Some(90_000 - 9_000));
        // Nothing to write.
        assert!(muxer.audio(&[]).unwrap().is_empty());
    }

    #[test]
    fn large_audio_batches_split_under_64k() {
        let config = AacConfig::parse(&ASC).unwrap();
        let mut muxer = TsMuxer::new(false, Some(&config)).unwrap();
        let frames: Vec<AudioFrame> = (0..20)
            .map(|n| AudioFrame {
                pts: n * 1920,
                duration: 1920,
                data: Bytes::from(vec![n as u8; 8000]),
            })
            .collect();
        let data = muxer.audio(&frames).unwrap();
        let ps = packets(&data);
        let pes = pes_of(&ps, AUDIO_PID);
        assert_eq!(pes.len(), 3, "8 frames of 8007 bytes per PES");
        let mut first_frame = 0;
        for (_, bytes) in &pes {
            let (_, pts, _, payload) = parse_pes(bytes);
            assert!(bytes.len() - 6 <= 65_535);
            assert_eq!(pts, (first_frame * 1920 + 90_000) as u64);
            first_frame += payload.len() / 8007;
        }
        assert_eq!(first_frame, 20);
    }

    #[test]
    fn errors() {
        let config = AacConfig::parse(&ASC).unwrap();
        assert_eq!(TsMuxer::new(false, None).err(), Some(TsError::NoTracks));
        let mut video_only = TsMuxer::new(true, None).unwrap();
        assert_eq!(
            video_only.audio(&aac_frames()[..1]),
            Err(TsError::NoSuchTrack(Track::Audio))
        );
        let mut audio_only = TsMuxer::new(false, Some(&config)).unwrap();
        assert_eq!(
            audio_only.video(&video_units(0)[0]),
            Err(TsError::NoSuchTrack(Track::Video))
        );
        let big = AudioFrame {
            pts: 0,
            duration: 1920,
            data: Bytes::from(vec![0; 8185]),
        };
        assert_eq!(audio_only.audio(&[big]), Err(TsError::FrameTooLarge(8185)));
        let usac = AacConfig::parse(&[0xf9, 0x5e, 0x01, 0x77, 0x00, 0xe0]).unwrap();
        assert_eq!(
            TsMuxer::new(false, Some(&usac)).err(),
            Some(TsError::NotAdts {
                object_type: 42,
                frequency_index: 15
            })
        );
        let empty = VideoUnit {
            pts: 0,
            dts: 0,
            keyframe: false,
            nalus: [Bytes::new(), Bytes::from_static(&[0x09, 0xf0])]
                .into_iter()
                .collect(),
        };
        assert!(video_only.video(&empty).unwrap().is_empty());
    }

    /// Random units: always whole packets with continuous counters, never a panic.
    #[test]
    fn random_input_never_panics() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let config = AacConfig::parse(&ASC).unwrap();
        let mut muxer = TsMuxer::new(true, Some(&config)).unwrap();
        let mut data = Vec::new();
        for _ in 0..2000 {
            let time = rand() as i64;
            if rand().is_multiple_of(2) {
                let unit = VideoUnit {
                    pts: time,
                    dts: time.wrapping_sub((rand() % 3) as i64),
                    keyframe: rand().is_multiple_of(2),
                    nalus: (0..rand() % 4)
                        .map(|_| {
                            let len = (rand() % 700) as usize;
                            Bytes::from((0..len).map(|_| rand() as u8).collect::<Vec<_>>())
                        })
                        .collect(),
                };
                data.extend_from_slice(&muxer.video(&unit).unwrap());
            } else {
                let frames: Vec<_> = (0..rand() % 3)
                    .map(|_| AudioFrame {
                        pts: time,
                        duration: 1920,
                        data: Bytes::from(vec![1; (rand() % 9000) as usize]),
                    })
                    .collect();
                if let Ok(out) = muxer.audio(&frames) {
                    data.extend_from_slice(&out);
                }
            }
        }
        let ps = packets(&data);
        pes_of(&ps, VIDEO_PID);
        pes_of(&ps, AUDIO_PID);
    }

    /// Two 1 s segments and a playlist: ffprobe sees H.264 and AAC with every packet where it
    /// belongs (timestamps 1 s on), ffmpeg decodes both without a word.
    #[test]
    fn ffmpeg_plays_hls_ts() {
        let (Some(ffprobe), Some(ffmpeg)) = (tool("ffprobe"), tool("ffmpeg")) else {
            return;
        };
        let dir = temp_dir("ts");
        let config = AacConfig::parse(&ASC).unwrap();
        let mut muxer = TsMuxer::new(true, Some(&config)).unwrap();
        let units = video_units(0);
        let frames = aac_frames();
        let mut all = Vec::new();
        let mut next_audio = 0;
        for segment in 0..2 {
            let mut bytes = muxer.segment_start().to_vec();
            for unit in &units[segment * 30..segment * 30 + 30] {
                // The audio up to this picture, in one PES: decode order across the PIDs.
                let until = frames[next_audio..]
                    .iter()
                    .take_while(|f| f.pts <= unit.dts)
                    .count();
                let batch = &frames[next_audio..next_audio + until];
                next_audio += until;
                bytes.extend_from_slice(&muxer.audio(batch).unwrap());
                bytes.extend_from_slice(&muxer.video(unit).unwrap());
            }
            if segment == 1 {
                bytes.extend_from_slice(&muxer.audio(&frames[next_audio..]).unwrap());
            }
            std::fs::write(dir.join(format!("seg{segment}.ts")), &bytes).unwrap();
            all.extend(bytes);
        }
        let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n\
                        #EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.000,\nseg0.ts\n\
                        #EXTINF:1.000,\nseg1.ts\n#EXT-X-ENDLIST\n";
        std::fs::write(dir.join("index.m3u8"), playlist).unwrap();
        std::fs::write(dir.join("all.ts"), &all).unwrap();

        for file in ["index.m3u8", "all.ts"] {
            check_plays(&ffprobe, &ffmpeg, &dir.join(file), 1.0, frames.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
