//! H.264 Annex B byte streams (ITU-T H.264 Annex B): NAL units behind start codes, as raw
//! `.h264` files and MPEG-TS carry them.
//!
//! [`split`] cuts a stream into NAL units without copying; [`access_units`] groups those into
//! pictures. Both take any input without panicking.

use bytes::Bytes;

/// The NAL units of an Annex B byte stream, in order, as slices of `data` (nothing is copied).
///
/// A NAL unit starts after a start code `00 00 01` and ends where the next start code or `data`
/// ends. The zero bytes before a start code are not part of it: they are `trailing_zero_8bits`
/// or the leading zero of a four-byte start code, since a NAL unit never ends in a zero byte
/// (its last byte holds the `rbsp_stop_one_bit`, and emulation prevention keeps `00 00 0x` out
/// of it). Bytes before the first start code are skipped; empty NAL units are dropped.
pub fn split(data: &Bytes) -> Vec<Bytes> {
    let mut nals = Vec::new();
    let mut push = |start: usize, mut end: usize| {
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(data.slice(start..end));
        }
    };
    let mut start = None;
    let mut at = 0;
    while let Some(found) = find_start_code(&data[at..]) {
        let code = at + found;
        if let Some(start) = start {
            push(start, code);
        }
        start = Some(code + 3);
        at = code + 3;
    }
    if let Some(start) = start {
        push(start, data.len());
    }
    nals
}

/// Where the first `00 00 01` in `data` begins.
fn find_start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1])
}

/// Groups NAL units (as [`split`] returns them) into access units, in order.
///
/// Once the current access unit has a slice (NAL types 1 to 5), a new one begins at an SEI, SPS,
/// PPS or access unit delimiter (types 6 to 9), or at a slice of type 1 or 5 whose
/// `first_mb_in_slice` is 0 (its Exp-Golomb code is the single bit `1`: the top bit of the
/// byte after the NAL header). That is H.264 §7.4.1.2.3 for streams whose pictures begin at
/// macroblock 0, which is every encoder's output but Baseline's arbitrary slice order.
///
/// Every NAL unit of `nals` ends up in exactly one access unit; no access unit is empty (none at
/// all for no NAL units). NAL units before the first slice go with it; empty ones are kept where
/// they stand and never begin an access unit.
pub fn access_units(nals: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut units = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut has_slice = false;
    for nal in nals {
        let nal_type = nal.first().map(|h| h & 0x1f);
        let first_slice =
            matches!(nal_type, Some(1 | 5)) && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (matches!(nal_type, Some(6..=9)) || first_slice) {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        has_slice |= matches!(nal_type, Some(1..=5));
        current.push(nal);
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn nals(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn splits_on_three_and_four_byte_start_codes() {
        let data = Bytes::from_static(&[
            0xaa, 0, // junk before the first start code
            0, 0, 0, 1, 0x67, 0x42, // SPS behind a four-byte start code
            0, 0, 1, 0x68, 0xce, 0, 0, // PPS, trailing_zero_8bits
            0, 0, 1, 0x65, 0x88, 0, 0, 3, 1, // IDR with an emulation prevention byte
        ]);
        let out = split(&data);
        assert_eq!(
            out,
            nals(&[&[0x67, 0x42], &[0x68, 0xce], &[0x65, 0x88, 0, 0, 3, 1]])
        );
        // Slices of the input, not copies.
        let range = data.as_ptr_range();
        assert!(out.iter().all(|n| range.contains(&n.as_ptr())));
    }

    #[test]
    fn split_edge_cases() {
        let split = |data: &'static [u8]| split(&Bytes::from_static(data));
        assert!(split(&[]).is_empty());
        assert!(split(&[0x65, 0x88, 0x84]).is_empty(), "no start code");
        assert!(split(&[0, 0, 1]).is_empty(), "a start code and nothing");
        assert!(split(&[0, 0, 1, 0, 0, 0, 1, 0, 0]).is_empty(), "only zeros");
        assert_eq!(
            split(&[0, 0, 1, 9, 0, 0, 1, 0, 0, 1, 1]),
            nals(&[&[9], &[1]])
        );
        assert_eq!(split(&[0, 0, 1, 0, 0, 2]), nals(&[&[0, 0, 2]]));
    }

    #[test]
    fn access_units_begin_at_non_vcl_nals_and_first_slices() {
        let aud: &[u8] = &[9, 0xf0];
        let sps: &[u8] = &[0x67, 0x42];
        let pps: &[u8] = &[0x68, 0xce];
        let sei: &[u8] = &[6, 5];
        let idr0: &[u8] = &[0x65, 0x88]; // first_mb_in_slice 0
        let idr1: &[u8] = &[0x65, 0x40]; // first_mb_in_slice 1
        let p0: &[u8] = &[0x41, 0x9a];
        let p1: &[u8] = &[0x41, 0x20];
        let input = [sps, pps, idr0, idr1, p0, p1, aud, p0, sei, p0, p1, p0];
        let want: Vec<Vec<Bytes>> = vec![
            nals(&[sps, pps, idr0, idr1]),
            nals(&[p0, p1]),
            nals(&[aud, p0]),
            nals(&[sei, p0, p1]),
            nals(&[p0]),
        ];
        assert_eq!(access_units(nals(&input)), want);
    }

    #[test]
    fn access_unit_edge_cases() {
        assert!(access_units(Vec::new()).is_empty());
        // Before any slice nothing begins a unit; an empty NAL and a header-only slice never do.
        let input = nals(&[&[9], &[], &[0x67], &[0x65], &[0x65, 0x80], &[], &[0x41]]);
        assert_eq!(
            access_units(input),
            vec![
                nals(&[&[9], &[], &[0x67], &[0x65]]),
                nals(&[&[0x65, 0x80], &[], &[0x41]])
            ]
        );
    }

    /// The checked-in x264 stream: 2 s at 30 fps, two slices a picture, an IDR a second behind
    /// its parameter sets (and x264's SEI in the first).
    #[test]
    fn real_stream() {
        let units = access_units(split(&Bytes::from_static(testdata::H264)));
        assert_eq!(units.len(), 60);
        let types = |unit: &[Bytes]| unit.iter().map(|n| n[0] & 0x1f).collect::<Vec<_>>();
        assert_eq!(types(&units[0]), [7, 8, 6, 5, 5]);
        assert_eq!(types(&units[1]), [1, 1]);
        assert_eq!(types(&units[30]), [7, 8, 5, 5]);
        let idrs: Vec<usize> = (0..60).filter(|&i| types(&units[i]).contains(&5)).collect();
        assert_eq!(idrs, [0, 30]);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rand = testdata::xorshift(0x9e37_79b9_7f4a_7c15_u64);
        for _ in 0..2_000 {
            let len = (rand() % 64) as usize;
            // Mostly zeros and ones, so that start codes and zero runs are common.
            let data: Bytes = (0..len)
                .map(|_| match rand() % 8 {
                    0..=3 => 0,
                    4 | 5 => 1,
                    _ => rand() as u8,
                })
                .collect();
            let out = split(&data);
            for nal in &out {
                assert!(!nal.is_empty() && nal.last() != Some(&0), "{data:?}");
                assert_eq!(find_start_code(nal), None, "{data:?}");
            }
            let units = access_units(out.clone());
            assert!(units.iter().all(|u| !u.is_empty()));
            assert_eq!(units.concat(), out);
            // Arbitrary NAL units too, empty ones included.
            let arbitrary: Vec<Bytes> = data.chunks(3).map(Bytes::copy_from_slice).collect();
            let units = access_units(arbitrary.clone());
            assert_eq!(units.concat(), arbitrary);
        }
    }
}
