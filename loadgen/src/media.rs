//! Synthetic media: H.264 Annex B access units with valid SPS/PPS and slice headers (the slice
//! data is filler, so this is not decodable video, but every parser that looks at NAL headers,
//! the SPS or the slice header sees a well-formed stream), and Opus silence frames.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Video frame rate of the synthetic stream.
pub const VIDEO_FPS: u32 = 30;
/// One IDR (with SPS and PPS in front) every this many frames: one per second.
pub const GOP_FRAMES: u32 = 30;
/// Width the SPS announces.
pub const VIDEO_WIDTH: u32 = 640;
/// Height the SPS announces.
pub const VIDEO_HEIGHT: u32 = 480;
/// RTP clock rate of H.264.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// Opus frame duration in milliseconds.
pub const AUDIO_FRAME_MS: u32 = 20;

/// A 20 ms Opus frame of silence (TOC 0xF8: CELT-only, fullband, 20 ms, mono, one frame).
pub const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// log2(max_frame_num) the SPS announces.
const LOG2_MAX_FRAME_NUM: u32 = 4;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// UUID of loadgen's frame-stamp SEI (user data unregistered), random and ours alone, so a
/// receiver never mistakes an encoder's own SEI for a stamp.
pub const STAMP_SEI_UUID: [u8; 16] = [
    0x6c, 0x6f, 0x61, 0x64, 0x67, 0x65, 0x6e, 0x2d, 0x9b, 0x3e, 0x41, 0xd2, 0x87, 0x5a, 0x0c, 0xf1,
];
/// SEI payload type `user_data_unregistered`.
const SEI_USER_DATA_UNREGISTERED: u8 = 5;
/// `nal_unit_type` of SEI.
const NAL_SEI: u8 = 6;

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

/// MSB-first bit writer with Exp-Golomb codes, for RBSPs.
#[derive(Debug, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: u32,
    acc: u8,
}

impl BitWriter {
    fn bit(&mut self, b: bool) {
        self.acc = (self.acc << 1) | u8::from(b);
        self.bits += 1;
        if self.bits == 8 {
            self.bytes.push(self.acc);
            self.acc = 0;
            self.bits = 0;
        }
    }

    fn bits(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// ue(v)
    fn ue(&mut self, value: u32) {
        let v = u64::from(value) + 1;
        let len = 64 - v.leading_zeros();
        for _ in 0..len - 1 {
            self.bit(false);
        }
        for i in (0..len).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }

    /// se(v)
    fn se(&mut self, value: i32) {
        let mapped = if value > 0 {
            value.unsigned_abs() * 2 - 1
        } else {
            value.unsigned_abs() * 2
        };
        self.ue(mapped);
    }

    /// rbsp_trailing_bits and the bytes.
    fn finish(mut self) -> Vec<u8> {
        self.bit(true);
        while self.bits != 0 {
            self.bit(false);
        }
        self.bytes
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

/// The SPS NAL unit (with header byte 0x67): Constrained Baseline, level 3.1 (`42e01f`),
/// 640x480, POC type 2, one reference frame.
pub fn sps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(66, 8); // profile_idc: Baseline
    w.bits(0xE0, 8); // constraint_set0..2
    w.bits(31, 8); // level_idc 3.1
    w.ue(0); // seq_parameter_set_id
    w.ue(LOG2_MAX_FRAME_NUM - 4); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(VIDEO_WIDTH / 16 - 1); // pic_width_in_mbs_minus1
    w.ue(VIDEO_HEIGHT / 16 - 1); // pic_height_in_map_units_minus1
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    w.bit(false); // frame_cropping_flag
    w.bit(false); // vui_parameters_present_flag
    let mut nal = vec![0x67];
    nal.extend(escape_rbsp(&w.finish()));
    nal
}

/// The PPS NAL unit (with header byte 0x68), CAVLC.
pub fn pps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bit(false); // entropy_coding_mode_flag: CAVLC
    w.bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bit(false); // weighted_pred_flag
    w.bits(0, 2); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bit(true); // deblocking_filter_control_present_flag
    w.bit(false); // constrained_intra_pred_flag
    w.bit(false); // redundant_pic_cnt_present_flag
    let mut nal = vec![0x68];
    nal.extend(escape_rbsp(&w.finish()));
    nal
}

/// A slice NAL unit: an IDR slice (`nal_unit_type` 5) or a P slice (`nal_unit_type` 1), with a
/// correct slice header and `size` bytes in total, the rest being filler that contains no zero
/// byte (so no start code or emulation prevention can appear in it).
fn slice(idr: bool, frame_num: u32, idr_pic_id: u32, size: usize, seed: u32) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(if idr { 7 } else { 5 }); // slice_type: I or P (all slices of the picture)
    w.ue(0); // pic_parameter_set_id
    w.bits(frame_num % (1 << LOG2_MAX_FRAME_NUM), LOG2_MAX_FRAME_NUM); // frame_num
    if idr {
        w.ue(idr_pic_id % 65536); // idr_pic_id
    } else {
        w.bit(false); // num_ref_idx_active_override_flag
        w.bit(false); // ref_pic_list_modification_flag_l0
    }
    // dec_ref_pic_marking (nal_ref_idc != 0)
    if idr {
        w.bit(false); // no_output_of_prior_pics_flag
        w.bit(false); // long_term_reference_flag
    } else {
        w.bit(false); // adaptive_ref_pic_marking_mode_flag
    }
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc
    // The filler that follows stands in for slice_data.
    let header = w.finish();
    let mut nal = Vec::with_capacity(size.max(header.len() + 2));
    nal.push(if idr { 0x65 } else { 0x41 });
    nal.extend(escape_rbsp(&header));
    // Filler: a xorshift stream with zero bytes replaced, so no 00 00 sequence exists.
    let mut x = seed | 1;
    while nal.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = (x >> 24) as u8;
        nal.push(if b == 0 { 0x5A } else { b });
    }
    nal
}

/// One synthetic video access unit in Annex B form.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Annex B bytes (start code before every NAL unit).
    pub data: Bytes,
    /// Whether this is an IDR access unit (SPS + PPS + IDR slice).
    pub keyframe: bool,
}

/// Produces the synthetic H.264 stream frame by frame: frame 0 of every GOP is SPS + PPS + IDR
/// (3 to 10 KB, so FU-A is exercised), the others are P slices of about 0.8 to 2 KB.
#[derive(Debug, Default)]
pub struct H264Source {
    frame: u32,
    idr_count: u32,
    /// Frame number of the next stamp, when frames are stamped.
    stamps: Option<u64>,
}

impl H264Source {
    /// A source whose next frame is an IDR.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source like [`H264Source::new`] that puts a [`FrameStamp`] SEI (the wall-clock time
    /// and the frame number) in front of the slice of every frame, so a receiver downstream can
    /// time each frame and tell lost, reordered and duplicated ones.
    pub fn stamped() -> Self {
        Self {
            stamps: Some(0),
            ..Self::default()
        }
    }

    /// The next access unit.
    pub fn next_frame(&mut self) -> VideoFrame {
        let in_gop = self.frame % GOP_FRAMES;
        let keyframe = in_gop == 0;
        let mut data = Vec::with_capacity(12 * 1024);
        let seed = self.frame.wrapping_mul(2_654_435_761).wrapping_add(7);
        if keyframe {
            for nal in [sps(), pps()] {
                data.extend_from_slice(&START_CODE);
                data.extend(nal);
            }
            let size = 3_000 + (self.idr_count as usize * 1_237) % 7_000;
            self.push_stamp(&mut data);
            data.extend_from_slice(&START_CODE);
            data.extend(slice(true, 0, self.idr_count, size, seed));
            self.idr_count = self.idr_count.wrapping_add(1);
        } else {
            let size = 800 + (self.frame as usize * 397) % 1_200;
            self.push_stamp(&mut data);
            data.extend_from_slice(&START_CODE);
            data.extend(slice(false, in_gop, 0, size, seed));
        }
        self.frame = self.frame.wrapping_add(1);
        VideoFrame {
            data: Bytes::from(data),
            keyframe,
        }
    }

    /// Appends the next stamp SEI (SEI goes after the parameter sets, before the slice).
    fn push_stamp(&mut self, data: &mut Vec<u8>) {
        let Some(frame) = self.stamps else {
            return;
        };
        let sent_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        data.extend_from_slice(&START_CODE);
        data.extend(FrameStamp { sent_us, frame }.to_sei());
        self.stamps = Some(frame + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits Annex B into NAL units.
    fn nals(data: &[u8]) -> Vec<&[u8]> {
        let mut starts = vec![];
        let mut i = 0;
        while i + 3 <= data.len() {
            if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut out = vec![];
        for (k, &s) in starts.iter().enumerate() {
            let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            while end > s && data[end - 1] == 0 {
                end -= 1;
            }
            out.push(&data[s..end]);
        }
        out
    }

    #[test]
    fn exp_golomb() {
        let mut w = BitWriter::default();
        w.ue(0); // 1
        w.ue(1); // 010
        w.ue(2); // 011
        w.ue(3); // 00100
        assert_eq!(w.finish(), vec![0b1010_0110, 0b0100_1000]);
        let mut w = BitWriter::default();
        w.se(1); // ue(1) = 010
        w.se(-1); // ue(2) = 011
        assert_eq!(w.finish(), vec![0b0100_1110]);
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            escape_rbsp(&[0, 0, 1, 0, 0, 0, 5]),
            vec![0, 0, 3, 1, 0, 0, 3, 0, 5]
        );
    }

    #[test]
    fn sps_is_42e01f() {
        let sps = sps();
        assert_eq!(&sps[..4], &[0x67, 0x42, 0xE0, 0x1F]);
        let pps = pps();
        assert_eq!(pps[0], 0x68);
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

    #[test]
    fn stamped_frames_carry_numbered_sei() {
        let mut src = H264Source::stamped();
        for i in 0..(GOP_FRAMES + 2) {
            let f = src.next_frame();
            let units = nals(&f.data);
            let types: Vec<u8> = units.iter().map(|n| n[0] & 0x1F).collect();
            let expected: &[u8] = if f.keyframe { &[7, 8, 6, 5] } else { &[6, 1] };
            assert_eq!(types, expected);
            let sei = units.iter().find(|n| n[0] == 0x06).unwrap();
            let stamp = FrameStamp::from_sei(sei).unwrap();
            assert_eq!(stamp.frame, u64::from(i));
            assert!(stamp.sent_us > 0);
        }
    }

    #[test]
    fn gop_structure_and_sizes() {
        let mut src = H264Source::new();
        for i in 0..(2 * GOP_FRAMES) {
            let f = src.next_frame();
            let units = nals(&f.data);
            assert_eq!(f.keyframe, i % GOP_FRAMES == 0);
            if f.keyframe {
                let types: Vec<u8> = units.iter().map(|n| n[0] & 0x1F).collect();
                assert_eq!(types, vec![7, 8, 5]);
                assert!((3_000..=10_000).contains(&units[2].len()));
            } else {
                assert_eq!(units.len(), 1);
                assert_eq!(units[0][0], 0x41);
                assert!(units[0].len() >= 800);
            }
        }
    }
}
