//! Sequence parameter set parsing (H.264 §7.3.2.1.1): just what outputs need to describe the
//! stream (picture size for HLS and metrics, profile and level for the `avc1` codec string and the
//! FLV sequence header).
//!
//! Everything up to the frame cropping rectangle is read; the VUI is not, since nothing downstream
//! uses it and it is where encoders put their oddities.

use thiserror::Error;

pub use super::nal::NAL_SPS;

/// What went wrong reading an SPS.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpsError {
    /// The NAL header says this is not an SPS (or there is no header).
    #[error("not an SPS NAL unit (header {0:#04x})")]
    NotSps(u8),
    /// The bits ran out while reading the named field.
    #[error("SPS truncated at {0}")]
    Truncated(&'static str),
    /// A field holds a value the standard does not allow.
    #[error("SPS field {field} out of range: {value}")]
    OutOfRange {
        /// The syntax element, as the standard names it.
        field: &'static str,
        /// The value read.
        value: u32,
    },
}

/// The parts of an SPS the bridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile_idc: u8,
    /// The byte after `profile_idc`: `constraint_set0_flag` in the top bit down to
    /// `constraint_set5_flag`, then two reserved zero bits.
    pub constraint_flags: u8,
    /// `level_idc`: ten times the level number (31 for level 3.1).
    pub level_idc: u8,
    /// `seq_parameter_set_id` (0..=31).
    pub id: u8,
    /// `chroma_format_idc`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    /// Luma bit depth (8..=14).
    pub bit_depth_luma: u8,
    /// Chroma bit depth (8..=14).
    pub bit_depth_chroma: u8,
    /// False for interlaced coding (field or MBAFF pictures): the height is then of a frame.
    pub frame_mbs_only: bool,
    /// Displayed width in pixels, after cropping.
    pub width: u32,
    /// Displayed height in pixels, after cropping.
    pub height: u32,
}

impl Sps {
    /// The RFC 6381 codec string HLS playlists carry, e.g. `avc1.42c01e`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists (§7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Parses an SPS NAL unit (header byte included, no start code).
pub fn parse(nal: &[u8]) -> Result<Sps, SpsError> {
    let header = nal
        .first()
        .copied()
        .ok_or(SpsError::Truncated("nal header"))?;
    if header & 0x1f != NAL_SPS || header & 0x80 != 0 {
        return Err(SpsError::NotSps(header));
    }
    let rbsp = unescape(nal.get(1..).unwrap_or_default());
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.u8("profile_idc")?;
    let constraint_flags = r.u8("constraint_set_flags")?;
    let level_idc = r.u8("level_idc")?;
    let id = r.ue_max("seq_parameter_set_id", 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8;
    let mut bit_depth_chroma = 8;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag("separate_colour_plane_flag")?;
        }
        bit_depth_luma = 8 + r.ue_max("bit_depth_luma_minus8", 6)?;
        bit_depth_chroma = 8 + r.ue_max("bit_depth_chroma_minus8", 6)?;
        r.flag("qpprime_y_zero_transform_bypass_flag")?;
        if r.flag("seq_scaling_matrix_present_flag")? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag("seq_scaling_list_present_flag")? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    r.ue_max("log2_max_frame_num_minus4", 12)?;
    match r.ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            r.flag("delta_pic_order_always_zero_flag")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
            for _ in 0..cycle {
                r.se("offset_for_ref_frame")?;
            }
        }
        _ => {}
    }
    r.ue("max_num_ref_frames")?;
    r.flag("gaps_in_frame_num_value_allowed_flag")?;
    let width_mbs = r.ue("pic_width_in_mbs_minus1")?.saturating_add(1);
    let height_map_units = r.ue("pic_height_in_map_units_minus1")?.saturating_add(1);
    let frame_mbs_only = r.flag("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.flag("mb_adaptive_frame_field_flag")?;
    }
    r.flag("direct_8x8_inference_flag")?;
    let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0, 0, 0, 0);
    if r.flag("frame_cropping_flag")? {
        crop_left = r.ue("frame_crop_left_offset")?;
        crop_right = r.ue("frame_crop_right_offset")?;
        crop_top = r.ue("frame_crop_top_offset")?;
        crop_bottom = r.ue("frame_crop_bottom_offset")?;
    }

    // §7.4.2.1.1: crop offsets count in chroma sample units, and in frame pairs of field rows.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (crop_unit_x, crop_unit_y) = if separate_colour_plane || chroma_format_idc == 0 {
        (1, field_factor)
    } else {
        let sub_width = if chroma_format_idc == 3 { 1 } else { 2 };
        let sub_height = if chroma_format_idc == 1 { 2 } else { 1 };
        (sub_width, sub_height * field_factor)
    };
    let coded_width = width_mbs.checked_mul(16);
    let coded_height = height_map_units
        .checked_mul(16)
        .and_then(|h| h.checked_mul(field_factor));
    let crop_x = crop_left
        .checked_add(crop_right)
        .and_then(|c| c.checked_mul(crop_unit_x));
    let crop_y = crop_top
        .checked_add(crop_bottom)
        .and_then(|c| c.checked_mul(crop_unit_y));
    let width = coded_width
        .zip(crop_x)
        .and_then(|(w, c)| w.checked_sub(c))
        .filter(|&w| w > 0)
        .ok_or(SpsError::OutOfRange {
            field: "frame_crop_left_offset + frame_crop_right_offset",
            value: crop_left.saturating_add(crop_right),
        })?;
    let height = coded_height
        .zip(crop_y)
        .and_then(|(h, c)| h.checked_sub(c))
        .filter(|&h| h > 0)
        .ok_or(SpsError::OutOfRange {
            field: "frame_crop_top_offset + frame_crop_bottom_offset",
            value: crop_top.saturating_add(crop_bottom),
        })?;

    Ok(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        id,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        frame_mbs_only,
        width,
        height,
    })
}

/// §7.3.2.1.1.1: the values only matter to the decoder, but their count depends on them (a delta
/// that makes the next scale zero ends the list early).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), SpsError> {
    let mut last: i64 = 8;
    let mut next: i64 = 8;
    for _ in 0..size {
        if next != 0 {
            let delta = i64::from(r.se("delta_scale")?);
            if !(-128..=127).contains(&delta) {
                return Err(SpsError::OutOfRange {
                    field: "delta_scale",
                    value: delta.unsigned_abs().try_into().unwrap_or(u32::MAX),
                });
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Removes emulation prevention bytes (the `03` in `00 00 03`), turning the NAL payload into the
/// RBSP the syntax is defined over. SPSs are tens of bytes, so the copy is cheap.
pub(crate) fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// An MSB-first bit reader over an RBSP; every read names its field so a truncation says where.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, SpsError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(SpsError::Truncated(field))?;
        let bit = byte >> (7 - self.pos % 8) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    fn bits(&mut self, n: u32, field: &'static str) -> Result<u32, SpsError> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            v = v << 1 | u32::from(self.flag(field)?);
        }
        Ok(v)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SpsError> {
        // Eight bits always fit.
        Ok(self.bits(8, field)? as u8)
    }

    /// Exp-Golomb `ue(v)`; values past `u32` are rejected rather than wrapped.
    pub(crate) fn ue(&mut self, field: &'static str) -> Result<u32, SpsError> {
        let mut zeros = 0u32;
        while !self.flag(field)? {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::OutOfRange {
                    field,
                    value: u32::MAX,
                });
            }
        }
        let rest = u64::from(self.bits(zeros, field)?);
        let value = (1u64 << zeros) - 1 + rest;
        u32::try_from(value).map_err(|_| SpsError::OutOfRange {
            field,
            value: u32::MAX,
        })
    }

    fn ue_max(&mut self, field: &'static str, max: u8) -> Result<u8, SpsError> {
        let value = self.ue(field)?;
        u8::try_from(value)
            .ok()
            .filter(|&v| v <= max)
            .ok_or(SpsError::OutOfRange { field, value })
    }

    /// Exp-Golomb `se(v)`: 1, 2, 3, 4 ... read as 1, -1, 2, -2 ...
    fn se(&mut self, field: &'static str) -> Result<i32, SpsError> {
        let k = i64::from(self.ue(field)?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).map_err(|_| SpsError::OutOfRange {
            field,
            value: u32::MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPSs written by x264 (ffmpeg 9.0.2, imageio-ffmpeg wheel) from `testsrc2` at each size,
    /// with what ffmpeg's own parser reports for them.
    #[test]
    fn real_x264_sps_table() {
        struct Case {
            name: &'static str,
            sps: &'static str,
            profile: u8,
            constraints: u8,
            level: u8,
            chroma: u8,
            width: u32,
            height: u32,
            codec: &'static str,
        }
        let cases = [
            Case {
                name: "baseline 640x360 (crops 368 -> 360)",
                sps: "6742c01eda0280bfe5c044000003000400000300f23c58ba80",
                profile: 66,
                constraints: 0xc0,
                level: 30,
                chroma: 1,
                width: 640,
                height: 360,
                codec: "avc1.42c01e",
            },
            Case {
                name: "high 1280x720",
                sps: "6764001facd9405005bb0110000003001000000303c0f1831960",
                profile: 100,
                constraints: 0,
                level: 31,
                chroma: 1,
                width: 1280,
                height: 720,
                codec: "avc1.64001f",
            },
            Case {
                name: "high 1920x1080 (crops 1088 -> 1080)",
                sps: "67640028acd940780227e5c044000003000400000300f03c60c658",
                profile: 100,
                constraints: 0,
                level: 40,
                chroma: 1,
                width: 1920,
                height: 1080,
                codec: "avc1.640028",
            },
            Case {
                name: "high 4:4:4 1918x1078 (crops in luma units)",
                sps: "67f40028919b280f0044f7178088000003000800000301e078c18cb0",
                profile: 244,
                constraints: 0,
                level: 40,
                chroma: 3,
                width: 1918,
                height: 1078,
                codec: "avc1.f40028",
            },
            Case {
                name: "high 720x480 interlaced (MBAFF: map units are field pairs)",
                sps: "6764001eacd940b47b6022000003000200000300783e28532c",
                profile: 100,
                constraints: 0,
                level: 30,
                chroma: 1,
                width: 720,
                height: 480,
                codec: "avc1.64001e",
            },
        ];
        for c in cases {
            let sps = parse(&hex(c.sps)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(sps.profile_idc, c.profile, "{}", c.name);
            assert_eq!(sps.constraint_flags, c.constraints, "{}", c.name);
            assert_eq!(sps.level_idc, c.level, "{}", c.name);
            assert_eq!(sps.chroma_format_idc, c.chroma, "{}", c.name);
            assert_eq!((sps.width, sps.height), (c.width, c.height), "{}", c.name);
            assert_eq!(sps.codec_string(), c.codec, "{}", c.name);
            assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (8, 8));
        }
    }

    /// A bit writer to build SPSs with the branches x264 never takes.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn bit(&mut self, b: bool) {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if b {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.bit(v >> i & 1 == 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let v = u64::from(v) + 1;
            let len = 64 - v.leading_zeros();
            self.bits(0, len - 1);
            for i in (0..len).rev() {
                self.bit(v >> i & 1 == 1);
            }
        }
        fn se(&mut self, v: i32) {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                2 * v.unsigned_abs()
            });
        }
        /// Adds emulation prevention as an encoder would, behind an SPS header.
        fn nal(mut self) -> Vec<u8> {
            self.bit(true); // rbsp_stop_one_bit
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// High 4:2:2 10-bit with scaling lists (one ending early through a zero scale), POC type 1 and
    /// field coding: every branch between the header and the cropping window. ffmpeg 9's
    /// `trace_headers` reads the three SPSs the tests build with the same field values.
    fn synthetic_sps(poc_type: u32, chroma: u32, crop: [u32; 4]) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(122, 8); // High 4:2:2
        w.bits(0, 8);
        w.bits(41, 8);
        w.ue(3); // sps id
        w.ue(chroma);
        if chroma == 3 {
            w.bit(false);
        }
        w.ue(2); // 10-bit luma
        w.ue(2); // 10-bit chroma
        w.bit(false);
        w.bit(true); // seq_scaling_matrix_present_flag
        let lists = if chroma == 3 { 12 } else { 8 };
        for i in 0..lists {
            match i {
                0 => {
                    w.bit(true);
                    for _ in 0..16 {
                        w.se(1);
                    }
                }
                1 => {
                    // delta -8 from 8 makes next scale 0: the list ends after one entry.
                    w.bit(true);
                    w.se(-8);
                }
                6 => {
                    w.bit(true);
                    for k in 0..64 {
                        w.se(if k % 2 == 0 { 3 } else { -2 });
                    }
                }
                _ => w.bit(false),
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(poc_type);
        match poc_type {
            0 => w.ue(2),
            1 => {
                w.bit(false);
                w.se(-1);
                w.se(2);
                w.ue(3);
                w.se(5);
                w.se(-5);
                w.se(0);
            }
            _ => {}
        }
        w.ue(4); // max_num_ref_frames
        w.bit(false);
        w.ue(119); // 1920 wide
        w.ue(33); // 34 map units = 68 MB rows of frame = 1088
        w.bit(false); // frame_mbs_only_flag
        w.bit(true); // mb_adaptive_frame_field_flag
        w.bit(true);
        w.bit(crop != [0; 4]);
        if crop != [0; 4] {
            for c in crop {
                w.ue(c);
            }
        }
        w.bit(false); // vui
        w.nal()
    }

    #[test]
    fn synthetic_high_422_branches() {
        // 4:2:2 crop units: x 2, y 1 * 2 (fields): bottom 4 -> 8 rows.
        let sps = parse(&synthetic_sps(1, 2, [0, 0, 0, 4])).unwrap();
        assert_eq!(sps.profile_idc, 122);
        assert_eq!(sps.id, 3);
        assert_eq!((sps.chroma_format_idc, sps.bit_depth_luma), (2, 10));
        assert!(!sps.frame_mbs_only);
        assert_eq!((sps.width, sps.height), (1920, 1080));

        let sps = parse(&synthetic_sps(0, 3, [1, 1, 2, 2])).unwrap();
        assert_eq!((sps.width, sps.height), (1918, 1080));

        let sps = parse(&synthetic_sps(2, 0, [0, 0, 0, 0])).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1088));
    }

    #[test]
    fn errors_name_the_field() {
        let real = hex("6764001facd9405005bb0110000003001000000303c0f1831960");
        assert_eq!(parse(&[]), Err(SpsError::Truncated("nal header")));
        assert_eq!(parse(&[0x68, 0xee]), Err(SpsError::NotSps(0x68)));
        assert_eq!(
            parse(&real[..2]),
            Err(SpsError::Truncated("constraint_set_flags"))
        );
        assert!(matches!(parse(&real[..8]), Err(SpsError::Truncated(_))));
        // Cropping more than the picture.
        let over = synthetic_sps(0, 1, [0, 0, 600, 0]);
        assert!(matches!(
            parse(&over),
            Err(SpsError::OutOfRange { field, .. }) if field.contains("top")
        ));
        // chroma_format_idc 4.
        let mut w = BitWriter::default();
        w.bits(100, 8);
        w.bits(0, 16);
        w.ue(0);
        w.ue(4);
        assert_eq!(
            parse(&w.nal()),
            Err(SpsError::OutOfRange {
                field: "chroma_format_idc",
                value: 4
            })
        );
        // 40 leading zeros: an Exp-Golomb code past u32.
        assert!(matches!(
            parse(&[0x67, 0x42, 0, 0x1e, 0, 0, 0, 0, 0, 0x80]),
            Err(SpsError::OutOfRange { .. })
        ));
    }

    #[test]
    fn unescape_drops_only_emulation_bytes() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            [0, 0, 1, 0, 0, 0, 3]
        );
        assert_eq!(unescape(&[0, 3, 0, 0, 3]), [0, 3, 0, 0]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut ok = 0;
        for i in 0..20_000 {
            let len = (i % 40) + 1;
            let mut nal = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                nal.push(x as u8);
            }
            nal[0] = 0x67;
            if i % 3 == 0 && len > 1 {
                nal[1] = 100;
            }
            ok += usize::from(parse(&nal).is_ok());
        }
        assert!(ok > 0, "some random SPSs parse");
    }
}
