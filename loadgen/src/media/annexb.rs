//! The clip's H.264 as bridge-proto's Annex B reader
//! ([`bridge_proto::media::h264::annexb`]) splits it into NAL units and groups those into access
//! units, held to what a clip must be: that reader takes any input and skips what it cannot use,
//! while a clip with junk before its first start code, an empty NAL unit, a
//! `forbidden_zero_bit` or a slice cut after its header is refused with the byte offset.

use bridge_proto::media::h264::annexb;
use bridge_proto::media::h264::nal::{NAL_IDR, NAL_SLICE};
use bytes::Bytes;

use super::ClipError;

/// The 4-byte start code the clip's frames are written with.
pub(super) const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The NAL units of an Annex B stream, each with its offset in `data` (after its start code),
/// without the trailing zero bytes that belong to the next start code. Only zero bytes may come
/// before the first start code, and no NAL unit may be empty or have `forbidden_zero_bit` set.
pub(super) fn nal_units(data: &Bytes) -> Result<Vec<(usize, Bytes)>, ClipError> {
    let nals = annexb::split(data);
    let base = data.as_ptr().addr();
    let mut units = Vec::with_capacity(nals.len());
    // Where the bytes that are no NAL unit (zeros and start codes) begin.
    let mut gap = 0;
    for nal in nals {
        // `split` returns slices of `data`, so the pointers say where each one is.
        let start = nal.as_ptr().addr() - base;
        check_gap(data, gap, start, true)?;
        if nal.first().is_some_and(|header| header & 0x80 != 0) {
            return Err(ClipError::ForbiddenBit { offset: start });
        }
        gap = start + nal.len();
        units.push((start, nal));
    }
    check_gap(data, gap, data.len(), false)?;
    Ok(units)
}

/// Checks the bytes of `data` from `from` to `to`, which `split` found no NAL unit in: they must
/// be zeros and start codes, and every start code but one ending at `to` when a NAL unit
/// follows there begins a NAL unit that `split` dropped as empty.
fn check_gap(data: &[u8], from: usize, to: usize, nal_follows: bool) -> Result<(), ClipError> {
    let mut i = from;
    while i < to {
        if data.get(i..i + 3) == Some(&[0, 0, 1]) {
            i += 3;
            if !(nal_follows && i == to) {
                return Err(ClipError::TruncatedNal { offset: i });
            }
        } else if data.get(i).is_some_and(|&b| b != 0) {
            return Err(ClipError::NoStartCode { offset: i });
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// One access unit of an Annex B stream.
#[derive(Debug, Default)]
pub(super) struct AccessUnit {
    pub(super) nals: Vec<Bytes>,
    /// Index in `nals` of the first slice.
    pub(super) first_slice: Option<usize>,
    /// Whether it has an IDR slice.
    pub(super) keyframe: bool,
}

/// The access units of an Annex B stream, as bridge-proto's
/// [`access_units`](annexb::access_units) groups them (H.264 7.4.1.2.3 for streams without
/// redundant pictures: a new one begins at a slice whose `first_mb_in_slice` is 0, or at an SEI,
/// SPS, PPS or access unit delimiter, once the current one has a slice). A slice must have a
/// byte after its header, which says whether it begins a picture.
pub(super) fn access_units(h264: &Bytes) -> Result<Vec<AccessUnit>, ClipError> {
    let nals = nal_units(h264)?;
    let is_slice = |nal: &[u8]| {
        nal.first()
            .is_some_and(|h| matches!(h & 0x1F, NAL_SLICE | NAL_IDR))
    };
    if let Some((offset, _)) = nals.iter().find(|(_, nal)| is_slice(nal) && nal.len() < 2) {
        return Err(ClipError::TruncatedNal { offset: *offset });
    }
    let nals = nals.into_iter().map(|(_, nal)| nal).collect();
    Ok(annexb::access_units(nals)
        .into_iter()
        .map(|nals| AccessUnit {
            first_slice: nals.iter().position(|n| is_slice(n)),
            keyframe: nals
                .iter()
                .any(|n| n.first().is_some_and(|h| h & 0x1F == NAL_IDR)),
            nals,
        })
        .collect())
}

/// NAL units in Annex B form, a 4-byte start code before each.
pub(super) fn annexb<N: AsRef<[u8]>>(nals: &[N]) -> Vec<u8> {
    let len = nals.iter().map(|n| n.as_ref().len() + START_CODE.len());
    let mut out = Vec::with_capacity(len.sum());
    for nal in nals {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, ClipError> {
        let units = nal_units(&Bytes::copy_from_slice(data))?;
        Ok(units
            .into_iter()
            .map(|(at, nal)| (at, nal.to_vec()))
            .collect())
    }

    #[test]
    fn annexb_splits_on_both_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 0, 1, 0x65, 0x88,
        ];
        assert_eq!(
            split(&data).unwrap(),
            vec![
                (4, vec![0x67, 0x42]),
                (9, vec![0x68, 0xCE]),
                (16, vec![0x65, 0x88])
            ]
        );
        assert_eq!(split(&[0, 0]).unwrap(), vec![]);
        assert_eq!(
            split(&[0, 7, 0, 0, 1, 0x65]),
            Err(ClipError::NoStartCode { offset: 1 })
        );
        assert_eq!(
            split(&[0, 0, 1, 0, 0, 1, 0x65]),
            Err(ClipError::TruncatedNal { offset: 3 })
        );
        assert_eq!(
            split(&[0, 0, 1, 0xE5]),
            Err(ClipError::ForbiddenBit { offset: 3 })
        );
    }

    /// What the checks over bridge-proto's split add: the errors, at the same offsets as a
    /// scan of the bytes would find them.
    #[test]
    fn strict_split_edge_cases() {
        let truncated = |offset| Err(ClipError::TruncatedNal { offset });
        assert_eq!(split(&[]), Ok(vec![]));
        assert_eq!(split(&[0, 0, 1]), truncated(3));
        assert_eq!(split(&[0, 0, 1, 0, 0]), truncated(3));
        assert_eq!(split(&[0, 0, 1, 0, 0, 0, 0, 1, 0x65]), truncated(3));
        assert_eq!(split(&[0, 0, 1, 0x65, 0, 0, 1]), truncated(7));
        assert_eq!(
            split(&[0, 0, 1, 0x65, 0, 0, 0, 1, 0, 0, 1, 9]),
            truncated(8)
        );
        assert_eq!(
            split(&[5, 0, 0, 1, 0xE5]),
            Err(ClipError::NoStartCode { offset: 0 })
        );
        assert_eq!(
            split(&[0, 0, 1, 0x65, 0, 0, 1, 0xE5]),
            Err(ClipError::ForbiddenBit { offset: 7 })
        );
        // Trailing zeros and emulation prevention stay where they belong.
        assert_eq!(
            split(&[0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0]),
            Ok(vec![(4, vec![0x65, 0, 0, 3, 1])])
        );
    }

    #[test]
    fn access_units_start_at_first_mb_zero() {
        // Two pictures of two slices each (first_mb_in_slice 0 then 1: 0x88 is ue 0 then
        // slice_type, 0x40 is ue 1), and an SEI that begins the second picture.
        let nals: [&[u8]; 7] = [
            &[0x67, 0x42],
            &[0x68, 0xCE],
            &[0x65, 0x88],
            &[0x65, 0x40],
            &[0x06, 0x05],
            &[0x41, 0x9A],
            &[0x41, 0x40],
        ];
        let data = Bytes::from(annexb(&nals));
        let units = access_units(&data).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].nals, nals[..4]);
        assert_eq!((units[0].first_slice, units[0].keyframe), (Some(2), true));
        assert_eq!(units[1].nals, nals[4..]);
        assert_eq!((units[1].first_slice, units[1].keyframe), (Some(1), false));
        assert_eq!(
            access_units(&Bytes::from(annexb(&[&[0x41]]))).unwrap_err(),
            ClipError::TruncatedNal { offset: 4 }
        );
    }
}
