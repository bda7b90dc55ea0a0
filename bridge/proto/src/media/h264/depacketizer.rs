//! RFC 6184 depacketization: ordered RTP packets in, whole access units out.
//!
//! [`Depacketizer::push`] takes packets in sequence order (from
//! [`ReorderBuffer`](crate::media::reorder::ReorderBuffer), whose `loss` mark it relies on);
//! [`Depacketizer::pull`] hands out finished access units. Pull until `None` after every push.
//!
//! Single NAL unit packets (packetization mode 0) and STAP-A and FU-A (mode 1) are handled; the
//! interleaved mode's STAP-B, MTAP and FU-B are refused. An access unit ends at the marker bit, or
//! when a packet with a new timestamp arrives (some senders forget the marker).
//!
//! An access unit with a packet missing is dropped whole, never emitted in part, and so is every
//! access unit after it until the next IDR picture, since they may reference what was lost; output
//! also starts at the first IDR. Every emitted IDR carries SPS and PPS before its slices: in-band
//! ones are kept, and the latest seen (in-band or from `sprop-parameter-sets`) are added when it
//! has none, so a muxer can start any output at any keyframe.
//!
//! Times stay in RTP units: an [`H264Frame`] carries its RTP timestamp and the caller maps it to
//! the session timeline (see [`crate::media::clock`]) with [`H264Frame::into_unit`]. That keeps
//! this module free of clock state and lets one session clock serve audio and video.
//!
//! NAL units are `Bytes` slices of the RTP payloads (zero copy) except FU-A fragments, which are
//! joined once into a buffer sized exactly from the fragments held.

use std::collections::VecDeque;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::nal::{NAL_AUD, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS, is_slice, nal_type};
use super::sps::{self, Sps};
use super::{FU_A, STAP_A};
use crate::media::rtp::RtpPacket;
use crate::media::unit::{Nalus, VideoUnit};

/// Largest access unit taken, in payload bytes: far above any real picture (a 4K IDR at a high
/// bitrate is a few MB), low enough that a sender that never ends a unit cannot grow one forever.
pub const MAX_UNIT_BYTES: usize = 8 << 20;
/// Most packets one access unit may span (1-byte packets would otherwise cost more in bookkeeping
/// than [`MAX_UNIT_BYTES`] suggests).
pub const MAX_UNIT_PACKETS: usize = 16_384;

/// What went wrong with a packet. The access unit it belonged to is dropped; the depacketizer
/// goes on with the next packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DepacketizeError {
    /// The payload breaks RFC 6184 or H.264 framing.
    #[error("ssrc {ssrc:08x} seq {seq}: {reason}")]
    Malformed {
        /// The packet's SSRC.
        ssrc: u32,
        /// The packet's sequence number.
        seq: u16,
        /// What is wrong, in a few words.
        reason: &'static str,
    },
    /// STAP-B, MTAP16, MTAP24 or FU-B: packetization mode 2, which the bridge does not offer.
    #[error("ssrc {ssrc:08x} seq {seq}: unsupported RTP H.264 payload type {nal_type}")]
    Unsupported {
        /// The packet's SSRC.
        ssrc: u32,
        /// The packet's sequence number.
        seq: u16,
        /// The NAL unit type field of the payload header.
        nal_type: u8,
    },
}

/// What is wrong with an fmtp line's `sprop-parameter-sets`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FmtpError {
    /// A parameter set is not valid base64.
    #[error("sprop-parameter-sets: invalid base64 {0:?}")]
    Base64(String),
    /// A parameter set decodes to something other than an SPS or a PPS.
    #[error("sprop-parameter-sets: NAL unit type {0} is neither SPS nor PPS")]
    NotParameterSet(u8),
    /// The SPS does not parse.
    #[error("sprop-parameter-sets: {0}")]
    Sps(#[from] sps::SpsError),
}

/// One access unit, with its time still in RTP units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Frame {
    /// RTP timestamp (90 kHz) of the access unit's packets.
    pub timestamp: u32,
    /// Holds an IDR picture (and then SPS and PPS before it).
    pub keyframe: bool,
    /// NAL units without start codes, in decoding order.
    pub nalus: Nalus,
}

impl H264Frame {
    /// The unit outputs take, at `pts` on the session timeline (`dts` equal: WebRTC H.264 has no
    /// B-frames).
    pub fn into_unit(self, pts: i64) -> VideoUnit {
        VideoUnit {
            pts,
            dts: pts,
            keyframe: self.keyframe,
            nalus: self.nalus,
        }
    }
}

/// Counters since the depacketizer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Access units emitted.
    pub frames: u64,
    /// Of those, IDR pictures.
    pub keyframes: u64,
    /// Access units dropped because a packet of theirs was lost (or a fragment was missing).
    pub dropped_loss: u64,
    /// Whole access units dropped while waiting for an IDR (at the start, after a loss).
    pub dropped_waiting_for_idr: u64,
    /// Access units dropped because a packet was malformed.
    pub dropped_malformed: u64,
    /// IDR pictures dropped because no SPS or PPS was known for them.
    pub dropped_no_parameters: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between access units: the next packet starts one.
    Idle,
    /// Collecting the NAL units of the access unit with this timestamp.
    Collecting { timestamp: u32 },
    /// Inside an FU-A within the access unit; `header` is the reassembled NAL header.
    Fragment { timestamp: u32, header: u8 },
    /// Skipping the rest of a dropped access unit.
    Dropping { timestamp: u32 },
}

/// Why an access unit is dropped, for the counters.
#[derive(Debug, Clone, Copy)]
enum Drop {
    Loss,
    Malformed,
    Joining,
}

/// An H.264 RTP depacketizer for one stream. See the module docs.
#[derive(Debug)]
pub struct Depacketizer {
    state: State,
    /// NAL units of the access unit being collected.
    nalus: Nalus,
    /// The FU-A fragments (payloads after the two header bytes) of the NAL being reassembled.
    fragments: Vec<Bytes>,
    fragments_len: usize,
    /// Payload bytes and packets taken into the current access unit, against the limits.
    unit_bytes: usize,
    unit_packets: usize,
    /// Nothing but an IDR is emitted until one is (true at the start and after any drop).
    need_idr: bool,
    sps: Option<Bytes>,
    sps_info: Option<Sps>,
    pps: Option<Bytes>,
    ready: VecDeque<H264Frame>,
    stats: DepacketizerStats,
}

impl Default for Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Depacketizer {
    /// A depacketizer waiting for its first IDR.
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            nalus: Nalus::new(),
            fragments: Vec::with_capacity(64),
            fragments_len: 0,
            unit_bytes: 0,
            unit_packets: 0,
            need_idr: true,
            sps: None,
            sps_info: None,
            pps: None,
            ready: VecDeque::with_capacity(2),
            stats: DepacketizerStats::default(),
        }
    }

    /// A depacketizer primed with the SDP fmtp line's `sprop-parameter-sets` (if it has one).
    pub fn with_fmtp(fmtp: &str) -> Result<Self, FmtpError> {
        let mut d = Self::new();
        d.set_fmtp(fmtp)?;
        Ok(d)
    }

    /// Takes SPS and PPS from an fmtp line's `sprop-parameter-sets` (comma-separated base64 NAL
    /// units), as in `packetization-mode=1;sprop-parameter-sets=Z0LAHtoCgL/lwEQ=,aM48gA==`. A line
    /// without the parameter changes nothing. In-band parameter sets replace these later.
    pub fn set_fmtp(&mut self, fmtp: &str) -> Result<(), FmtpError> {
        let Some(sets) = fmtp.split(';').find_map(|param| {
            let (key, value) = param.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("sprop-parameter-sets")
                .then_some(value.trim())
        }) else {
            return Ok(());
        };
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        for set in sets.split(',').filter(|s| !s.is_empty()) {
            let nal = engine
                .decode(set)
                .map_err(|_| FmtpError::Base64(set.to_owned()))?;
            match nal_type(&nal).unwrap_or(0) {
                NAL_SPS => {
                    self.sps_info = Some(sps::parse(&nal)?);
                    self.sps = Some(Bytes::from(nal));
                }
                NAL_PPS if nal.len() >= 2 => self.pps = Some(Bytes::from(nal)),
                other => return Err(FmtpError::NotParameterSet(other)),
            }
        }
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    /// The latest SPS seen, parsed (if it parsed).
    pub fn sps(&self) -> Option<&Sps> {
        self.sps_info.as_ref()
    }

    /// The latest SPS and PPS NAL units seen, in-band or from the fmtp line.
    pub fn parameter_sets(&self) -> Option<(&Bytes, &Bytes)> {
        self.sps.as_ref().zip(self.pps.as_ref())
    }

    /// True while only an IDR picture will be emitted: the moment to ask the sender for one (PLI).
    pub fn waiting_for_idr(&self) -> bool {
        self.need_idr
    }

    /// The next finished access unit, if any.
    pub fn pull(&mut self) -> Option<H264Frame> {
        self.ready.pop_front()
    }

    /// Takes the next packet in sequence order. An error drops the access unit the packet belongs
    /// to (counted); the stream goes on.
    pub fn push(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        let timestamp = packet.timestamp;
        let loss = packet.loss > 0;

        // Close what the previous packets left open.
        match self.state {
            State::Collecting { timestamp: open }
            | State::Fragment {
                timestamp: open, ..
            } if open != timestamp => {
                // No marker on the last packet: complete unless its tail may be what was lost or
                // it stops mid-fragment.
                if loss || matches!(self.state, State::Fragment { .. }) {
                    self.drop_unit(Drop::Loss);
                } else {
                    self.finish_unit(open);
                }
                self.state = State::Idle;
            }
            State::Collecting { .. } | State::Fragment { .. } if loss => {
                self.drop_unit(Drop::Loss);
                self.state = State::Dropping { timestamp };
            }
            State::Dropping { timestamp: open } if open != timestamp => self.state = State::Idle,
            _ => {}
        }

        if self.state == State::Idle {
            if loss {
                // Whatever was lost, something between the last emitted unit and this one is.
                self.need_idr = true;
            }
            if self.need_idr && !starts_picture(&packet.payload) {
                // Joined (or resumed) mid-unit: this one cannot be complete. Unless the sender
                // uses interleaved mode, which must be said, or nothing would ever be emitted.
                let unsupported = unsupported(packet);
                let why = match (&unsupported, loss) {
                    (Some(_), _) => Drop::Malformed,
                    (None, true) => Drop::Loss,
                    (None, false) => Drop::Joining,
                };
                self.drop_unit(why);
                self.state = if packet.marker {
                    State::Idle
                } else {
                    State::Dropping { timestamp }
                };
                return unsupported.map_or(Ok(()), Err);
            }
            self.state = State::Collecting { timestamp };
        }

        if let State::Dropping { .. } = self.state {
            if packet.marker {
                self.state = State::Idle;
            }
            return Ok(());
        }

        if let Err(e) = self.take_payload(packet) {
            self.drop_unit(Drop::Malformed);
            self.state = if packet.marker {
                State::Idle
            } else {
                State::Dropping { timestamp }
            };
            return Err(e);
        }

        if packet.marker {
            if let State::Fragment { .. } = self.state {
                self.drop_unit(Drop::Malformed);
                self.state = State::Idle;
                return Err(malformed(packet, "marker bit inside an FU-A"));
            }
            self.finish_unit(timestamp);
            self.state = State::Idle;
        }
        Ok(())
    }

    /// Splits one payload into NAL units (or fragments) of the current access unit.
    fn take_payload(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        let payload = &packet.payload;
        let Some(&header) = payload.first() else {
            return Ok(());
        };
        if header & 0x80 != 0 {
            return Err(malformed(packet, "forbidden_zero_bit set"));
        }
        self.unit_bytes += payload.len();
        self.unit_packets += 1;
        if self.unit_bytes > MAX_UNIT_BYTES || self.unit_packets > MAX_UNIT_PACKETS {
            return Err(malformed(packet, "access unit too large"));
        }
        let nal_type = header & 0x1f;
        if nal_type != FU_A && matches!(self.state, State::Fragment { .. }) {
            return Err(malformed(packet, "FU-A interrupted before its end"));
        }
        match nal_type {
            1..=23 => self.add_nal(payload.clone()),
            STAP_A => {
                let mut rest = payload.slice(1..);
                if rest.is_empty() {
                    return Err(malformed(packet, "empty STAP-A"));
                }
                while !rest.is_empty() {
                    let (Some(&hi), Some(&lo)) = (rest.first(), rest.get(1)) else {
                        return Err(malformed(packet, "STAP-A size field truncated"));
                    };
                    let size = usize::from(u16::from_be_bytes([hi, lo]));
                    if size == 0 || rest.len() < 2 + size {
                        return Err(malformed(packet, "STAP-A NAL unit size past the packet"));
                    }
                    let _ = rest.split_to(2);
                    let nal = rest.split_to(size);
                    if nal
                        .first()
                        .is_none_or(|h| h & 0x80 != 0 || h & 0x1f >= STAP_A)
                    {
                        return Err(malformed(packet, "STAP-A holds an invalid NAL unit"));
                    }
                    self.add_nal(nal);
                }
            }
            FU_A => self.take_fragment(packet)?,
            25..=27 | 29 => return unsupported(packet).map_or(Ok(()), Err),
            // 0, 30, 31: reserved, to be ignored (RFC 6184 §5.2).
            _ => {}
        }
        Ok(())
    }

    fn take_fragment(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        let payload = &packet.payload;
        let (Some(&indicator), Some(&fu)) = (payload.first(), payload.get(1)) else {
            return Err(malformed(packet, "FU-A without its header"));
        };
        let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
        let header = indicator & 0xe0 | fu & 0x1f;
        let timestamp = packet.timestamp;
        match (self.state, start) {
            (State::Fragment { .. }, true) => {
                return Err(malformed(packet, "FU-A start inside an FU-A"));
            }
            (State::Fragment { header: open, .. }, false) if open & 0x1f != header & 0x1f => {
                return Err(malformed(packet, "FU-A NAL unit type changed mid-unit"));
            }
            (State::Fragment { .. }, false) => {}
            (_, true) => {
                if fu & 0x1f >= STAP_A || fu & 0x1f == 0 {
                    return Err(malformed(packet, "FU-A of an invalid NAL unit type"));
                }
                self.fragments.clear();
                self.fragments_len = 0;
                self.state = State::Fragment { timestamp, header };
            }
            (_, false) => return Err(malformed(packet, "FU-A continuation without a start")),
        }
        let part = payload.slice(2..);
        self.fragments_len += part.len();
        self.fragments.push(part);
        if end {
            let mut nal = BytesMut::with_capacity(1 + self.fragments_len);
            nal.put_u8(header);
            for part in self.fragments.drain(..) {
                nal.extend_from_slice(&part);
            }
            self.fragments_len = 0;
            self.state = State::Collecting { timestamp };
            self.add_nal(nal.freeze());
        }
        Ok(())
    }

    fn add_nal(&mut self, nal: Bytes) {
        match nal_type(&nal) {
            Some(NAL_SPS) if self.sps.as_ref() != Some(&nal) => {
                if let Ok(info) = sps::parse(&nal) {
                    self.sps_info = Some(info);
                    self.sps = Some(nal.clone());
                }
            }
            Some(NAL_PPS) if nal.len() >= 2 => self.pps = Some(nal.clone()),
            _ => {}
        }
        self.nalus.push(nal);
    }

    fn drop_unit(&mut self, why: Drop) {
        self.nalus.clear();
        self.fragments.clear();
        self.fragments_len = 0;
        self.unit_bytes = 0;
        self.unit_packets = 0;
        self.need_idr = true;
        let counter = match why {
            Drop::Loss => &mut self.stats.dropped_loss,
            Drop::Malformed => &mut self.stats.dropped_malformed,
            Drop::Joining => &mut self.stats.dropped_waiting_for_idr,
        };
        *counter += 1;
    }

    fn finish_unit(&mut self, timestamp: u32) {
        let mut nalus = std::mem::take(&mut self.nalus);
        self.unit_bytes = 0;
        self.unit_packets = 0;
        if !nalus.iter().any(|n| nal_type(n).is_some_and(is_slice)) {
            // Parameter sets or SEI on their own: not a picture (parameter sets are cached).
            return;
        }
        let keyframe = nalus.iter().any(|n| nal_type(n) == Some(NAL_IDR));
        if !keyframe {
            if self.need_idr {
                self.stats.dropped_waiting_for_idr += 1;
                return;
            }
        } else if !self.complete_parameters(&mut nalus) {
            self.stats.dropped_no_parameters += 1;
            self.need_idr = true;
            return;
        }
        self.need_idr = false;
        self.stats.frames += 1;
        self.stats.keyframes += u64::from(keyframe);
        self.ready.push_back(H264Frame {
            timestamp,
            keyframe,
            nalus,
        });
    }

    /// Puts the cached SPS and PPS before the slices of an IDR unit that lacks them; false if one
    /// is needed and none is known.
    fn complete_parameters(&self, nalus: &mut Nalus) -> bool {
        let has = |t: u8| nalus.iter().any(|n| nal_type(n) == Some(t));
        let (has_sps, has_pps) = (has(NAL_SPS), has(NAL_PPS));
        if !has_pps {
            let Some(pps) = &self.pps else {
                return false;
            };
            let at = nalus
                .iter()
                .position(|n| nal_type(n).is_some_and(is_slice))
                .unwrap_or(0);
            nalus.insert(at, pps.clone());
        }
        if !has_sps {
            let Some(sps) = &self.sps else {
                return false;
            };
            let at = nalus
                .iter()
                .position(|n| nal_type(n).is_some_and(|t| is_slice(t) || t == NAL_PPS))
                .unwrap_or(0);
            nalus.insert(at, sps.clone());
        }
        true
    }
}

/// The error for STAP-B, MTAP16, MTAP24 and FU-B payloads (interleaved mode).
fn unsupported(packet: &RtpPacket) -> Option<DepacketizeError> {
    let nal_type = packet.payload.first()? & 0x1f;
    matches!(nal_type, 25..=27 | 29).then_some(DepacketizeError::Unsupported {
        ssrc: packet.ssrc,
        seq: packet.sequence_number,
        nal_type,
    })
}

fn malformed(packet: &RtpPacket, reason: &'static str) -> DepacketizeError {
    DepacketizeError::Malformed {
        ssrc: packet.ssrc,
        seq: packet.sequence_number,
        reason,
    }
}

/// True if the payload begins an access unit: with an AUD, SEI or parameter set, or with the
/// first slice of a picture (`first_mb_in_slice` 0, which Exp-Golomb codes as a leading 1 bit).
/// After a loss this tells a fresh unit from the remains of one whose start was lost.
fn starts_picture(payload: &[u8]) -> bool {
    let (nal_type, body) = match payload.first().map(|h| h & 0x1f) {
        Some(STAP_A) => (payload.get(3).map(|h| h & 0x1f), payload.get(4)),
        Some(FU_A) => match payload.get(1) {
            Some(fu) if fu & 0x80 != 0 => (Some(fu & 0x1f), payload.get(2)),
            _ => (None, None),
        },
        t => (t, payload.get(1)),
    };
    match nal_type {
        Some(NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD) => true,
        Some(NAL_SLICE | NAL_IDR) => body.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::annexb;

    const SSRC: u32 = 0xabcd;
    /// x264 baseline 640x360 SPS and its PPS.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00,
        0x04, 0x00, 0x00, 0x03, 0x00, 0xf2, 0x3c, 0x58, 0xba, 0x80,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    struct Stream {
        seq: u16,
        d: Depacketizer,
        out: Vec<H264Frame>,
        errors: usize,
    }

    impl Stream {
        fn new() -> Self {
            Self {
                seq: 0,
                d: Depacketizer::new(),
                out: Vec::new(),
                errors: 0,
            }
        }
        fn send(&mut self, ts: u32, marker: bool, payload: &[u8]) {
            self.send_lossy(ts, marker, payload, 0);
        }
        fn send_lossy(&mut self, ts: u32, marker: bool, payload: &[u8], loss: u16) {
            let mut p = RtpPacket::new(SSRC, self.seq, ts, marker, Bytes::copy_from_slice(payload));
            p.loss = loss;
            self.seq = self.seq.wrapping_add(1 + loss);
            if self.d.push(&p).is_err() {
                self.errors += 1;
            }
            while let Some(f) = self.d.pull() {
                self.out.push(f);
            }
        }
        fn timestamps(&self) -> Vec<(u32, bool)> {
            self.out.iter().map(|f| (f.timestamp, f.keyframe)).collect()
        }
    }

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x78];
        for n in nals {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    /// FU-A packets of `nal` in `n` pieces.
    fn fu(nal: &[u8], n: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let chunk = body.len().div_ceil(n);
        let parts: Vec<_> = body.chunks(chunk).collect();
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let mut fu = nal[0] & 0x1f;
                if i == 0 {
                    fu |= 0x80;
                }
                if i == parts.len() - 1 {
                    fu |= 0x40;
                }
                let mut v = vec![nal[0] & 0xe0 | FU_A, fu];
                v.extend_from_slice(part);
                v
            })
            .collect()
    }

    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x03];

    fn big_idr() -> Vec<u8> {
        let mut v = vec![0x65, 0x88];
        v.extend((0..3000u32).map(|i| (i * 7) as u8 | 1));
        v
    }

    #[test]
    fn stap_a_then_fu_a_idr_then_single_p() {
        let mut s = Stream::new();
        let idr = big_idr();
        s.send(1000, false, &stap(&[SPS, PPS]));
        let parts = fu(&idr, 3);
        for (i, part) in parts.iter().enumerate() {
            s.send(1000, i == parts.len() - 1, part);
        }
        s.send(4000, true, P);
        assert_eq!(s.timestamps(), [(1000, true), (4000, false)]);
        assert_eq!(s.out[0].nalus[..], [SPS, PPS, &idr[..]]);
        assert_eq!(s.out[1].nalus[..], [P]);
        let stats = s.d.stats();
        assert_eq!((stats.frames, stats.keyframes), (2, 1));
        assert_eq!(s.d.sps().map(|s| (s.width, s.height)), Some((640, 360)));
    }

    #[test]
    fn nal_units_are_slices_of_the_payload() {
        let mut d = Depacketizer::new();
        let payload = Bytes::from(stap(&[SPS, PPS, IDR]));
        d.push(&RtpPacket::new(SSRC, 1, 0, true, payload.clone()))
            .unwrap();
        let frame = d.pull().unwrap();
        let range = payload.as_ptr_range();
        for nal in &frame.nalus {
            assert!(range.contains(&nal.as_ptr()), "copied instead of sliced");
        }
    }

    #[test]
    fn parameter_sets_are_added_to_idrs_without_them() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        s.send(3000, true, &[0x09, 0xf0]); // AUD alone: not a picture
        s.send(6000, false, &[0x09, 0xf0]);
        s.send(6000, true, IDR);
        assert_eq!(s.timestamps(), [(0, true), (6000, true)]);
        assert_eq!(s.out[1].nalus[..], [&[0x09, 0xf0][..], SPS, PPS, IDR]);
    }

    #[test]
    fn sprop_parameter_sets_prime_the_cache() {
        let fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c01e;\
                    sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDyPFi6gA==,aM48gA==";
        let mut d = Depacketizer::with_fmtp(fmtp).unwrap();
        assert_eq!(
            d.parameter_sets(),
            Some((&Bytes::from(SPS), &Bytes::from(PPS)))
        );
        d.push(&RtpPacket::new(SSRC, 1, 0, true, Bytes::from_static(IDR)))
            .unwrap();
        assert_eq!(d.pull().unwrap().nalus[..], [SPS, PPS, IDR]);

        assert_eq!(
            Depacketizer::with_fmtp("sprop-parameter-sets=Z0L!").unwrap_err(),
            FmtpError::Base64("Z0L!".into())
        );
        assert_eq!(
            Depacketizer::with_fmtp("sprop-parameter-sets=ZYg=").unwrap_err(),
            FmtpError::NotParameterSet(5)
        );
        assert!(Depacketizer::with_fmtp("packetization-mode=1").is_ok());
        // Unpadded base64, as some senders write it.
        assert!(Depacketizer::with_fmtp("sprop-parameter-sets=aM48gA").is_ok());
    }

    #[test]
    fn idr_without_any_parameter_sets_is_not_emitted() {
        let mut s = Stream::new();
        s.send(0, true, IDR);
        s.send(3000, true, P);
        assert!(s.out.is_empty());
        let stats = s.d.stats();
        assert_eq!(stats.dropped_no_parameters, 1);
        assert_eq!(stats.dropped_waiting_for_idr, 1);
        assert!(s.d.waiting_for_idr());
    }

    #[test]
    fn output_starts_at_the_first_idr() {
        let mut s = Stream::new();
        s.send(0, true, P);
        s.send(3000, false, &fu(&big_idr(), 2)[1]); // joined mid-unit
        s.send(6000, true, &stap(&[SPS, PPS, IDR]));
        s.send(9000, true, P);
        assert_eq!(s.timestamps(), [(6000, true), (9000, false)]);
        assert_eq!(s.d.stats().dropped_waiting_for_idr, 2);
        assert_eq!(s.errors, 0);
    }

    #[test]
    fn a_lost_fragment_drops_the_unit_and_output_resumes_at_the_next_idr() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        let p_big: Vec<u8> = [0x41, 0x9a].iter().copied().chain(0..200).collect();
        let parts = fu(&p_big, 4);
        s.send(3000, false, &parts[0]);
        s.send_lossy(3000, false, &parts[2], 1); // parts[1] lost
        s.send(3000, true, &parts[3]);
        s.send(6000, true, P); // references the lost picture
        s.send_lossy(9000, true, P, 0);
        s.send(12000, false, &stap(&[SPS, PPS]));
        s.send(12000, true, IDR);
        s.send(15000, true, P);
        assert_eq!(s.timestamps(), [(0, true), (12000, true), (15000, false)]);
        let stats = s.d.stats();
        assert_eq!(stats.dropped_loss, 1);
        assert_eq!(stats.dropped_waiting_for_idr, 2);
        assert_eq!(s.errors, 0);
    }

    #[test]
    fn loss_of_the_marker_packet_drops_the_unit() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        s.send(3000, false, &[0x41, 0x9a, 1]); // slice 1 of 2
        // slice 2 (with the marker) lost; the next unit is an IDR starting cleanly.
        s.send_lossy(6000, true, &stap(&[SPS, PPS, IDR]), 1);
        assert_eq!(s.timestamps(), [(0, true), (6000, true)]);
        assert_eq!(s.d.stats().dropped_loss, 1);
    }

    #[test]
    fn after_loss_a_unit_whose_start_is_missing_is_dropped() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        // The first slice of this IDR was lost: the second slice has first_mb_in_slice != 0.
        s.send_lossy(3000, true, &[0x65, 0x40, 0x11], 1);
        assert_eq!(s.timestamps(), [(0, true)]);
        assert_eq!(s.d.stats().dropped_loss, 1);
    }

    #[test]
    fn missing_marker_ends_a_unit_on_the_next_timestamp() {
        let mut s = Stream::new();
        s.send(0, false, &stap(&[SPS, PPS, IDR]));
        s.send(3000, false, P);
        s.send(6000, true, P);
        assert_eq!(s.timestamps(), [(0, true), (3000, false), (6000, false)]);
    }

    #[test]
    fn malformed_packets_are_errors_with_context_and_drop_their_unit() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x78, 0x00], "STAP-A size field truncated"),
            (
                &[0x78, 0x00, 0x09, 0x65],
                "STAP-A NAL unit size past the packet",
            ),
            (&[0x78, 0x00, 0x00], "STAP-A NAL unit size past the packet"),
            (
                &[0x78, 0x00, 0x01, 0x78],
                "STAP-A holds an invalid NAL unit",
            ),
            (&[0x78], "empty STAP-A"),
            (&[0x7c], "FU-A without its header"),
            (&[0x7c, 0x05, 0x11], "FU-A continuation without a start"),
            (&[0x7c, 0x98, 0x11], "FU-A of an invalid NAL unit type"),
            (&[0xe5, 0x88], "forbidden_zero_bit set"),
        ];
        for &(payload, reason) in cases {
            let mut s = Stream::new();
            s.send(0, true, &stap(&[SPS, PPS, IDR]));
            // Start a unit so the bad packet lands inside one.
            s.send(3000, false, P);
            let mut p = RtpPacket::new(SSRC, 77, 3000, true, Bytes::copy_from_slice(payload));
            p.loss = 0;
            assert_eq!(
                s.d.push(&p),
                Err(DepacketizeError::Malformed {
                    ssrc: SSRC,
                    seq: 77,
                    reason
                }),
                "{payload:02x?}"
            );
            assert!(s.d.pull().is_none());
            assert!(s.d.waiting_for_idr());
            assert_eq!(s.d.stats().dropped_malformed, 1);
        }
        let mut d = Depacketizer::new();
        let err = d
            .push(&RtpPacket::new(
                SSRC,
                9,
                0,
                true,
                Bytes::from_static(&[0x7d, 0x85]),
            ))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ssrc 0000abcd seq 9: unsupported RTP H.264 payload type 29"
        );
    }

    #[test]
    fn a_unit_that_never_ends_is_cut_off() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        let parts = fu(&big_idr(), 3);
        s.send(3000, false, &parts[0]);
        let middle = &parts[1];
        for _ in 0..MAX_UNIT_BYTES / middle.len() + 1 {
            s.send(3000, false, middle);
        }
        assert_eq!(s.errors, 1);
        assert_eq!(s.d.stats().dropped_malformed, 1);
        assert!(s.d.fragments.is_empty());
        s.send(6000, true, &stap(&[SPS, PPS, IDR]));
        assert_eq!(s.timestamps(), [(0, true), (6000, true)]);
    }

    #[test]
    fn fu_a_interrupted_by_a_single_nal_is_malformed() {
        let mut s = Stream::new();
        s.send(0, true, &stap(&[SPS, PPS, IDR]));
        let parts = fu(&big_idr(), 3);
        s.send(3000, false, &parts[0]);
        s.send(3000, true, P);
        assert_eq!(s.errors, 1);
        assert_eq!(s.out.len(), 1);
    }

    /// The whole receive path on a jittery network: packets delayed by up to 60 ms at random
    /// (so reordered), through the reorder buffer into the depacketizer, lose nothing.
    #[test]
    fn real_stream_through_a_jittery_network() {
        use crate::media::reorder::{ReorderBuffer, ReorderConfig};
        use std::time::{Duration, Instant};

        let units = real_units();
        let packets = packetize(&units, 1200);
        let start = Instant::now();
        let mut x = 0x7777_1234_abcd_0001_u64;
        let mut arrivals: Vec<(Duration, &RtpPacket)> = packets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let sent = Duration::from_millis(10 * i as u64);
                // The first packet is on time: it sets where the stream starts.
                let jitter = if i == 0 { 0 } else { x % 60 };
                (sent + Duration::from_millis(jitter), p)
            })
            .collect();
        arrivals.sort_by_key(|(at, _)| *at);
        let mut reorder = ReorderBuffer::new(ReorderConfig::default());
        let mut d = Depacketizer::new();
        let mut frames = Vec::new();
        for (at, p) in arrivals {
            let now = start + at;
            reorder.push(p.clone(), now).unwrap();
            while let Some(p) = reorder.pop(now) {
                d.push(&p).unwrap();
                frames.extend(std::iter::from_fn(|| d.pull()));
            }
        }
        assert!(reorder.stats().reordered > 50);
        assert_eq!(reorder.stats().lost, 0);
        assert_eq!(frames.len(), 60);
        for (frame, unit) in frames.iter().zip(&units) {
            assert_eq!(frame.nalus[..], unit[..]);
        }
    }

    /// Packetizes NAL units the way browsers do: small ones aggregated in STAP-A, big ones cut
    /// into FU-A, the rest single; marker on the last packet of each unit.
    fn packetize(units: &[Vec<Bytes>], mtu: usize) -> Vec<RtpPacket> {
        let mut out = Vec::new();
        let mut seq = 0u16;
        for (i, nalus) in units.iter().enumerate() {
            let ts = (i as u32) * 3000;
            let mut payloads: Vec<Vec<u8>> = Vec::new();
            let mut stap_acc: Vec<&Bytes> = Vec::new();
            let flush = |acc: &mut Vec<&Bytes>, payloads: &mut Vec<Vec<u8>>| {
                match acc.len() {
                    0 => {}
                    1 => payloads.push(acc[0].to_vec()),
                    _ => payloads.push(stap(&acc.iter().map(|n| &n[..]).collect::<Vec<_>>())),
                }
                acc.clear();
            };
            for nal in nalus {
                if nal.len() > mtu {
                    flush(&mut stap_acc, &mut payloads);
                    payloads.extend(fu(nal, nal.len().div_ceil(mtu - 2)));
                } else {
                    let size: usize = stap_acc.iter().map(|n| n.len() + 2).sum();
                    if size + nal.len() + 3 > mtu {
                        flush(&mut stap_acc, &mut payloads);
                    }
                    stap_acc.push(nal);
                }
            }
            flush(&mut stap_acc, &mut payloads);
            let n = payloads.len();
            for (k, payload) in payloads.into_iter().enumerate() {
                out.push(RtpPacket::new(
                    SSRC,
                    seq,
                    ts,
                    k == n - 1,
                    Bytes::from(payload),
                ));
                seq = seq.wrapping_add(1);
            }
        }
        out
    }

    /// Access units of the checked-in x264 stream.
    fn real_units() -> Vec<Vec<Bytes>> {
        let stream = Bytes::from_static(crate::testdata::H264);
        annexb::access_units(annexb::split(&stream))
    }

    #[test]
    fn real_x264_stream_round_trips() {
        let units = real_units();
        assert_eq!(units.len(), 60, "2 s at 30 fps");
        let packets = packetize(&units, 1200);
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        for p in &packets {
            d.push(p).unwrap();
            out.extend(std::iter::from_fn(|| d.pull()));
        }
        assert_eq!(out.len(), 60);
        for (i, (frame, unit)) in out.iter().zip(&units).enumerate() {
            assert_eq!(frame.nalus[..], unit[..], "unit {i}");
            assert_eq!(frame.timestamp, i as u32 * 3000);
        }
        let stats = d.stats();
        assert_eq!((stats.frames, stats.keyframes), (60, 2));
        assert!(packets.iter().any(|p| p.payload[0] & 0x1f == FU_A));
        assert!(packets.iter().any(|p| p.payload[0] & 0x1f == STAP_A));
    }

    #[test]
    fn real_stream_with_random_loss_never_emits_a_partial_unit() {
        let units = real_units();
        let packets = packetize(&units, 1200);
        let mut x = 0x1234_5678_9abc_def1_u64;
        for _round in 0..20 {
            let mut d = Depacketizer::new();
            let mut loss = 0u16;
            for p in &packets {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(50) {
                    loss += 1;
                    continue;
                }
                let mut p = p.clone();
                p.loss = std::mem::take(&mut loss);
                d.push(&p).unwrap();
                while let Some(frame) = d.pull() {
                    let i = (frame.timestamp / 3000) as usize;
                    let mut want = units[i].clone();
                    if frame.keyframe && want[0][0] & 0x1f != 7 {
                        want.splice(0..0, [Bytes::from_static(SPS), Bytes::from_static(PPS)]);
                    }
                    assert_eq!(frame.nalus.len(), want.len(), "unit {i}");
                }
            }
        }
    }

    #[test]
    fn random_packets_never_panic() {
        let mut rand = crate::testdata::xorshift(0x0bad_cafe_dead_beef_u64);
        let mut d = Depacketizer::new();
        let _ = d.set_fmtp("sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDyPFi6gA==,aM48gA==");
        let mut emitted = 0;
        for seq in 0..50_000u32 {
            let r = rand();
            let len = (r % 40) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            if let Some(h) = payload.first_mut() {
                // Mostly well-formed headers, to get past the first checks.
                *h = match r >> 8 & 7 {
                    0 => 0x78,
                    1 | 2 => 0x7c,
                    3 => 0x65,
                    4 => 0x41,
                    _ => *h,
                };
            }
            let mut p = RtpPacket::new(
                SSRC,
                seq as u16,
                (seq / 4) * 3000,
                r >> 20 & 3 == 0,
                Bytes::from(payload),
            );
            p.loss = u16::from(r >> 24 & 31 == 0);
            let _ = d.push(&p);
            while let Some(f) = d.pull() {
                assert!(!f.nalus.is_empty());
                emitted += 1;
            }
        }
        assert!(emitted > 0);
    }
}
