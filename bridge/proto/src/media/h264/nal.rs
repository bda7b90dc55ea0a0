//! The NAL unit vocabulary (ITU-T H.264 §7.4.1, Table 7-1): the type numbers the depacketizer and
//! the muxers act on, and [`nal_type`] to read one from a NAL unit's header byte.
//!
//! RTP's own packet types (STAP-A, FU-A, RFC 6184 §5.2) share the number space but are not NAL
//! units of the stream; they stay with the depacketizer.

/// Coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// Coded slice of an IDR picture.
pub const NAL_IDR: u8 = 5;
/// Supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// Picture parameter set.
pub const NAL_PPS: u8 = 8;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// Filler data.
pub const NAL_FILLER: u8 = 12;

/// The `nal_unit_type` of a NAL unit (header byte first, no start code or length prefix): the
/// header's low five bits. `None` for an empty unit.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|header| header & 0x1f)
}

/// Whether a NAL unit type is a coded slice (types 1 to 5, the VCL units that make a picture).
pub fn is_slice(nal_type: u8) -> bool {
    matches!(nal_type, 1..=5)
}

/// Whether a NAL unit type means nothing once a container frames the access unit: delimiters
/// and filler data (FLV and MP4 leave them out; MPEG-TS writes its own delimiter).
pub fn is_framing(nal_type: u8) -> bool {
    matches!(nal_type, NAL_AUD | NAL_FILLER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_header_bytes() {
        assert_eq!(nal_type(&[0x67, 0x42]), Some(NAL_SPS));
        assert_eq!(nal_type(&[0x68]), Some(NAL_PPS));
        assert_eq!(nal_type(&[0x65]), Some(NAL_IDR));
        assert_eq!(nal_type(&[0x41]), Some(NAL_SLICE));
        assert_eq!(nal_type(&[0x09, 0xf0]), Some(NAL_AUD));
        assert_eq!(nal_type(&[0x0c]), Some(NAL_FILLER));
        assert_eq!(nal_type(&[0x06]), Some(NAL_SEI));
        // forbidden_zero_bit and nal_ref_idc do not change the type.
        assert_eq!(nal_type(&[0xe5]), Some(NAL_IDR));
        assert_eq!(nal_type(&[]), None);
        assert!((1..=5).all(is_slice) && !is_slice(0) && !is_slice(NAL_SEI));
        assert!(is_framing(NAL_AUD) && is_framing(NAL_FILLER) && !is_framing(NAL_SPS));
    }
}
