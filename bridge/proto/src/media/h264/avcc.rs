//! The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): the H.264 decoder
//! configuration FLV carries in its AVC sequence header and MP4 in the `avcC` box. One writer
//! for both, so one publisher gets the same record on RTMP and on HLS.
//!
//! Samples are always framed with 4-byte NAL lengths (`lengthSizeMinusOne` 3). Profile,
//! compatibility flags and level are the first SPS's bytes after its header.
//!
//! The chroma format and bit depth extension is written for every profile but Baseline (66),
//! Main (77) and Extended (88): that is the condition of ISO/IEC 14496-15 since its 2010 edition
//! (`if( AVCProfileIndication != 66 && ... != 77 && ... != 88 )`), and what ffmpeg writes
//! (`ff_isom_write_avcc`). The 2004 edition listed profiles 100, 110, 122 and 144 instead; 144
//! (the old High 4:4:4) has since been removed from H.264 and replaced by 244 (High 4:4:4
//! Predictive), which that list misses, as it misses 44 (CAVLC 4:4:4 Intra) and the scalable
//! and multiview profiles. Readers that follow either edition find the fields where they look:
//! for 100, 110 and 122 both write them.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::sps::{self, SpsError};

/// Most SPSs a record can hold (`numOfSequenceParameterSets` is 5 bits).
pub const MAX_SPS: usize = 31;
/// Most PPSs a record can hold (`numOfPictureParameterSets` is 8 bits).
pub const MAX_PPS: usize = 255;

/// Why a record could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AvccError {
    /// An SPS too short to hold profile, constraint flags and level.
    #[error("SPS of {0} bytes (at least 4 needed)")]
    SpsTooShort(usize),
    /// The SPS does not parse (needed for the record's chroma format and bit depths).
    #[error("SPS: {0}")]
    Sps(#[from] SpsError),
    /// A parameter set longer than the record's 16-bit length field.
    #[error("{kind} of {len} bytes (at most 65535)")]
    ParameterSetTooLong {
        /// SPS or PPS.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// No parameter set of a kind, or more than the record can count.
    #[error("{count} {kind}s (1 to {max})")]
    TooManyParameterSets {
        /// SPS or PPS.
        kind: &'static str,
        /// How many there were.
        count: usize,
        /// The record's limit.
        max: usize,
    },
}

/// Whether a profile's record carries the chroma format and bit depth extension (see the module
/// docs for why this is every profile but 66, 77 and 88).
pub fn has_extension(profile_idc: u8) -> bool {
    !matches!(profile_idc, 66 | 77 | 88)
}

/// The record for these parameter sets (NAL units, header byte included, no start code or
/// length prefix), with 4-byte NAL lengths; see [`write()`].
pub fn record(sps_list: &[Bytes], pps_list: &[Bytes]) -> Result<Bytes, AvccError> {
    let sets_len: usize = sps_list.iter().chain(pps_list).map(|s| 2 + s.len()).sum();
    let mut out = BytesMut::with_capacity(7 + sets_len + 4);
    write(&mut out, sps_list, pps_list)?;
    Ok(out.freeze())
}

/// Appends the record for these parameter sets to `out`: profile, compatibility and level from
/// the first SPS, then every SPS and every PPS in the order given, then (for the profiles that
/// have it) chroma format and bit depths from the first SPS and no SPS extensions (type 13 NAL
/// units are not forwarded). Nothing is appended when this fails.
pub fn write(out: &mut BytesMut, sps_list: &[Bytes], pps_list: &[Bytes]) -> Result<(), AvccError> {
    let count_error = |kind, count, max| AvccError::TooManyParameterSets { kind, count, max };
    let first = sps_list.first().ok_or(count_error("SPS", 0, MAX_SPS))?;
    let [_, profile, compat, level, ..] = first[..] else {
        return Err(AvccError::SpsTooShort(first.len()));
    };
    if sps_list.len() > MAX_SPS {
        return Err(count_error("SPS", sps_list.len(), MAX_SPS));
    }
    if pps_list.is_empty() || pps_list.len() > MAX_PPS {
        return Err(count_error("PPS", pps_list.len(), MAX_PPS));
    }
    for (kind, set) in sps_list
        .iter()
        .map(|s| ("SPS", s))
        .chain(pps_list.iter().map(|p| ("PPS", p)))
    {
        if set.len() > usize::from(u16::MAX) {
            return Err(AvccError::ParameterSetTooLong {
                kind,
                len: set.len(),
            });
        }
    }
    let extension = if has_extension(profile) {
        Some(sps::parse(first)?)
    } else {
        None
    };
    out.put_slice(&[1, profile, compat, level]); // configurationVersion 1, then the SPS's bytes
    out.put_u8(0xfc | 3); // reserved '111111', lengthSizeMinusOne: 4-byte lengths
    // Counts and lengths are bounded by the checks above.
    out.put_u8(0xe0 | sps_list.len() as u8); // reserved '111', numOfSequenceParameterSets
    for set in sps_list {
        out.put_u16(set.len() as u16);
        out.put_slice(set);
    }
    out.put_u8(pps_list.len() as u8);
    for set in pps_list {
        out.put_u16(set.len() as u16);
        out.put_slice(set);
    }
    if let Some(s) = extension {
        out.put_u8(0xfc | (s.chroma_format_idc & 0x03));
        out.put_u8(0xf8 | (s.bit_depth_luma.saturating_sub(8) & 0x07));
        out.put_u8(0xf8 | (s.bit_depth_chroma.saturating_sub(8) & 0x07));
        out.put_u8(0); // numOfSequenceParameterSetExt
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{HIGH_PPS, HIGH_SPS, HIGH444_PPS, HIGH444_SPS, hex};

    /// The test stream's Baseline SPS and PPS.
    const SPS: &str = "6742c01eda0280bfe5c044000003000400000300f23c58ba80";

    #[test]
    fn record_fields() {
        let sps = hex(SPS);
        let pps = [hex("68ce3c80"), hex("68ce3c81")];
        let r = record(std::slice::from_ref(&sps), &pps).unwrap();
        assert_eq!(r[0], 1, "configurationVersion");
        assert_eq!(r[1], 0x42, "AVCProfileIndication");
        assert_eq!(r[2], 0xc0, "profile_compatibility");
        assert_eq!(r[3], 0x1e, "AVCLevelIndication");
        assert_eq!(r[4], 0xff, "reserved 111111 + lengthSizeMinusOne 3");
        assert_eq!(r[5], 0xe1, "reserved 111 + one SPS");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 25);
        assert_eq!(&r[8..33], &sps[..]);
        assert_eq!(r[33], 2, "two PPS");
        assert_eq!(&r[34..40], &[0, 4, 0x68, 0xce, 0x3c, 0x80]);
        assert_eq!(&r[40..46], &[0, 4, 0x68, 0xce, 0x3c, 0x81]);
        assert_eq!(r.len(), 46, "no High profile extension for Baseline");

        let mut out = BytesMut::from(&b"head"[..]);
        write(&mut out, std::slice::from_ref(&sps), &pps).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(out[4..], r[..], "write appends the same record");
    }

    #[test]
    fn extension_by_profile() {
        for profile in [66, 77, 88] {
            assert!(!has_extension(profile), "{profile}");
        }
        // The 2004 edition's list, and the profiles it misses.
        for profile in [100, 110, 122, 144, 244, 44, 83, 86, 118, 128] {
            assert!(has_extension(profile), "{profile}");
        }
        // x264 High and High 4:4:4 Predictive (the SPSs of the FLV ffmpeg comparison).
        let r = record(&[hex(HIGH_SPS)], &[hex(HIGH_PPS)]).unwrap();
        assert_eq!(r[r.len() - 4..], [0xfd, 0xf8, 0xf8, 0], "4:2:0, 8-bit");
        let r = record(&[hex(HIGH444_SPS)], &[hex(HIGH444_PPS)]).unwrap();
        assert_eq!(r[r.len() - 4..], [0xff, 0xf8, 0xf8, 0], "4:4:4, 8-bit");
    }

    #[test]
    fn errors() {
        let sps = hex(SPS);
        let pps = [hex("68ce3c80")];
        assert_eq!(
            record(&[hex("6742c0")], &pps),
            Err(AvccError::SpsTooShort(3))
        );
        assert!(matches!(
            record(&[], &pps),
            Err(AvccError::TooManyParameterSets {
                kind: "SPS",
                count: 0,
                ..
            })
        ));
        assert!(matches!(
            record(std::slice::from_ref(&sps), &[]),
            Err(AvccError::TooManyParameterSets { kind: "PPS", .. })
        ));
        assert!(matches!(
            record(&vec![sps.clone(); 32], &pps),
            Err(AvccError::TooManyParameterSets {
                kind: "SPS",
                count: 32,
                ..
            })
        ));
        let long = Bytes::from(vec![0x68; 70_000]);
        assert!(matches!(
            record(std::slice::from_ref(&sps), &[long]),
            Err(AvccError::ParameterSetTooLong {
                kind: "PPS",
                len: 70_000
            })
        ));
        // A High profile SPS that does not parse cannot give the extension fields.
        assert!(matches!(
            record(&[hex("6764000a")], &pps),
            Err(AvccError::Sps(_))
        ));
        let mut out = BytesMut::new();
        assert!(write(&mut out, &[hex("6764000a")], &pps).is_err());
        assert!(out.is_empty(), "nothing appended on error");
    }
}
