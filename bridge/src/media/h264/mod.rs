//! H.264 over RTP (RFC 6184).
//!
//! [`starts_idr`] tells what one packet starts; [`depacketizer`] turns ordered packets into access
//! units; [`sps`] reads the sequence parameter set fields outputs need.

pub mod depacketizer;
pub mod sps;

pub use depacketizer::{DepacketizeError, Depacketizer, DepacketizerStats, FmtpError, H264Frame};
pub use sps::{Sps, SpsError};

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// RFC 6184 aggregation packet (single-time).
const STAP_A: u8 = 24;
/// RFC 6184 fragmentation unit (non-interleaved).
const FU_A: u8 = 28;

/// True if this RTP payload starts (or is) an IDR slice: a single IDR NAL, a STAP-A holding one,
/// or the first FU-A fragment of one. SPS alone does not count: a keyframe is the picture.
pub fn starts_idr(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_IDR => true,
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if nal.first().is_some_and(|h| h & 0x1f == NAL_IDR) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == NAL_IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idr_detection_table() {
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (&[0x65, 0x88], true),        // single IDR
            (&[0x41, 0x9a], false),       // single non-IDR
            (&[0x67, 0x42], false),       // SPS alone
            (&[0x7c, 0x85, 0x88], true),  // FU-A start, IDR
            (&[0x7c, 0x05, 0x88], false), // FU-A middle of IDR
            (&[0x7c, 0x81, 0x9a], false), // FU-A start, non-IDR
            (&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68, 0, 1, 0x65], true), // STAP-A SPS PPS IDR
            (&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68], false), // STAP-A SPS PPS
            (&[0x78, 0, 9, 0x65], false), // STAP-A truncated
        ];
        for (payload, want) in cases {
            assert_eq!(starts_idr(payload), *want, "{payload:02x?}");
        }
    }
}
