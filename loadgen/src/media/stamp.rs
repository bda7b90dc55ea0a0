//! The frame stamp: loadgen's measurement protocol. [`H264Source::stamped`](super::H264Source::stamped)
//! puts a [`FrameStamp`] SEI in every video frame it sends; the receivers downstream (the RTMP
//! ingest, the LL-HLS client) read it back to time each frame and to tell lost, reordered and
//! duplicated ones. Its times are [`now_us`], the wall clock in µs since the UNIX epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use bridge_proto::media::h264::nal::NAL_SEI;

/// Microseconds since the UNIX epoch: the clock of [`FrameStamp::sent_us`] and of every arrival
/// time loadgen compares with it.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// UUID of loadgen's frame-stamp SEI (user data unregistered), random and ours alone, so a
/// receiver never mistakes an encoder's own SEI for a stamp.
pub const STAMP_SEI_UUID: [u8; 16] = [
    0x6c, 0x6f, 0x61, 0x64, 0x67, 0x65, 0x6e, 0x2d, 0x9b, 0x3e, 0x41, 0xd2, 0x87, 0x5a, 0x0c, 0xf1,
];
/// SEI payload type `user_data_unregistered`.
const SEI_USER_DATA_UNREGISTERED: u8 = 5;

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
pub(crate) fn unescape_rbsp(escaped: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            escape_rbsp(&[0, 0, 1, 0, 0, 0, 5]),
            vec![0, 0, 3, 1, 0, 0, 3, 0, 5]
        );
        assert_eq!(
            unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 5]),
            vec![0, 0, 1, 0, 0, 0, 5]
        );
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
}
