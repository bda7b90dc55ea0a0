//! The picture size an H.264 sequence parameter set says (ITU-T H.264 §7.3.2.1.1), for the
//! outputs' checks that the bridge forwards the layer it should. A checker, so loadgen's own
//! reading of the specification (see the crate docs); it never panics on what a server sent.

use crate::media::unescape_rbsp;

/// `profile_idc` values whose SPS carries `chroma_format_idc` and the bit depths.
const HIGH_PROFILES: [u8; 12] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134];

/// Width and height in luma samples, after cropping, of the SPS NAL unit `nal` (header byte
/// included); `None` if it is not an SPS or cannot be read (truncated, or with scaling
/// matrices, which loadgen's clips never have).
pub fn picture_size(nal: &[u8]) -> Option<(u32, u32)> {
    let (&header, escaped) = nal.split_first()?;
    if header & 0x1F != 7 {
        return None;
    }
    let rbsp = unescape_rbsp(escaped);
    let mut r = Bits { data: &rbsp, at: 0 };
    let profile_idc = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            return None; // seq_scaling_matrix_present_flag
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.ue()?; // offset_for_non_ref_pic
            r.ue()?; // offset_for_top_to_bottom_field
            for _ in 0..r.ue()? {
                r.ue()?; // offset_for_ref_frame
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let [mut left, mut right, mut top, mut bottom] = [0; 4];
    if r.bit()? == 1 {
        [left, right, top, bottom] = [r.ue()?, r.ue()?, r.ue()?, r.ue()?];
    }
    // §7.4.2.1.1: crop units by chroma format (4:2:0 subsamples both ways, 4:2:2 across only).
    let field_factor = 2 - frame_mbs_only;
    let (crop_x, crop_y) = match (chroma_format_idc, separate_colour_plane) {
        (0, _) | (3, true) => (1, field_factor),
        (1, _) => (2, 2 * field_factor),
        (2, _) => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = width_mbs
        .checked_mul(16)?
        .checked_sub(crop_x * left.checked_add(right)?)?;
    let height = height_map_units
        .checked_mul(16 * field_factor)?
        .checked_sub(crop_y * top.checked_add(bottom)?)?;
    Some((width, height))
}

/// MSB-first reader of an RBSP.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some((v << 1) | self.bit()?))
    }

    /// Exp-Golomb `ue(v)`; `se(v)` read the same way when only skipped.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Clip, H264Source, layer_size};

    /// The SPS of a clip's first frame.
    fn first_sps(clip: &Clip) -> Vec<u8> {
        let frame = H264Source::new(clip).next().unwrap();
        let data = &frame.data[..];
        // The first NAL unit after the 4-byte start code, up to the next start code.
        let rest = &data[4..];
        let end = rest.windows(4).position(|w| w == [0, 0, 0, 1]).unwrap();
        rest[..end].to_vec()
    }

    #[test]
    fn reads_the_size_of_every_layer_clip() {
        for layers in 1..=3 {
            for layer in 0..layers {
                let sps = first_sps(Clip::embedded_layer(layer, layers).unwrap());
                assert_eq!(picture_size(&sps), layer_size(layer, layers));
            }
        }
    }

    #[test]
    fn never_panics_on_cut_or_foreign_nal_units() {
        let sps = first_sps(Clip::embedded().unwrap());
        assert_eq!(picture_size(&sps), Some((640, 360)));
        // Cut anywhere, it reads nothing until the cropping fields are in, and the right size
        // from there on (what follows them, the VUI, is not read): never a wrong size.
        let sizes: Vec<Option<(u32, u32)>> = (0..sps.len())
            .map(|len| picture_size(&sps[..len]))
            .collect();
        let first = sizes.iter().position(Option::is_some).unwrap();
        assert!(first > 4, "{first}");
        assert!(sizes[..first].iter().all(Option::is_none));
        assert!(sizes[first..].iter().all(|s| *s == Some((640, 360))));
        assert_eq!(picture_size(&[0x68, 0xce, 0x3c, 0x80]), None, "a PPS");
        assert_eq!(picture_size(&[0x67, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
