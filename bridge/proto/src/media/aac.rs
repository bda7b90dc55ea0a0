//! AAC-LC at 48 kHz as the containers carry it: the AudioSpecificConfig FLV and MP4 carry, and
//! the ADTS header MPEG-TS and `.aac` files need (and [`split_adts`], which takes it off again).
//! The encoder itself is in the bridge's `transcode` module, which links the codec library.

use bytes::Bytes;

/// The only rate the bridge encodes at: Opus decodes to 48 kHz, so no resampling is needed.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one AAC-LC frame.
pub const FRAME_SAMPLES: usize = 1024;

/// MPEG-4 audio object type of AAC-LC.
const AOT_AAC_LC: u8 = 2;
/// Sampling frequency index of 48 kHz (ISO/IEC 14496-3 Table 1.18).
const FREQ_INDEX_48K: u8 = 3;

/// The 2-byte AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) of AAC-LC at 48 kHz:
/// audioObjectType (5 bits), samplingFrequencyIndex (4), channelConfiguration (4), then the
/// GASpecificConfig's three zero flags (frameLengthFlag, dependsOnCoreCoder, extensionFlag).
pub fn audio_specific_config(channels: u8) -> [u8; 2] {
    let config = (u16::from(AOT_AAC_LC) << 11)
        | (u16::from(FREQ_INDEX_48K) << 7)
        | (u16::from(channels & 0x0f) << 3);
    config.to_be_bytes()
}

/// The 7-byte ADTS header (ISO/IEC 14496-3 §1.A.2, no CRC) for one raw AAC-LC 48 kHz frame of
/// `payload_len` bytes. `None` if the frame is too long for the 13-bit length field.
pub fn adts_header(channels: u8, payload_len: usize) -> Option<[u8; 7]> {
    let frame_len = payload_len.checked_add(7)?;
    if frame_len >= 1 << 13 {
        return None;
    }
    // Bounded by the check above, so the casts below keep every bit.
    let len = frame_len as u16;
    let profile = AOT_AAC_LC - 1;
    let channels = channels & 0x07;
    Some([
        0xff,
        // sync (low 4 bits), MPEG-4, layer 0, protection_absent
        0xf1,
        (profile << 6) | (FREQ_INDEX_48K << 2) | (channels >> 2),
        ((channels & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        (((len & 0x07) as u8) << 5) | 0x1f,
        // buffer fullness 0x7ff (VBR) low 6 bits, one raw data block
        0xfc,
    ])
}

/// The raw AAC frames of an ADTS stream (ISO/IEC 14496-3 §1.A.2), headers stripped, as slices
/// of `data` (nothing is copied): what [`adts_header`] undoes, for any profile, rate and layout.
///
/// `None` unless `data` is whole ADTS frames from end to end, each with the sync word, layer 0, a
/// length that covers its header (7 bytes, 9 with a CRC, which is not checked) and one raw data
/// block.
pub fn split_adts(data: &Bytes) -> Option<Vec<Bytes>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let header = data.get(at..at + 7)?;
        // syncword (12 bits), ID, layer (2 bits, 0), protection_absent; ...
        // number_of_raw_data_blocks_in_frame (the last 2 bits, 0 for one).
        if header[0] != 0xff || header[1] & 0xf6 != 0xf0 || header[6] & 0x03 != 0 {
            return None;
        }
        let header_len = if header[1] & 0x01 == 1 { 7 } else { 9 };
        let frame_len = (usize::from(header[3] & 0x03) << 11)
            | (usize::from(header[4]) << 3)
            | usize::from(header[5] >> 5);
        if frame_len <= header_len || frame_len > data.len() - at {
            return None;
        }
        frames.push(data.slice(at + header_len..at + frame_len));
        at += frame_len;
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_specific_config_bits() {
        // 00010 0011 0010 000: AAC-LC, 48 kHz, 2 channels.
        assert_eq!(audio_specific_config(2), [0x11, 0x90]);
        assert_eq!(audio_specific_config(1), [0x11, 0x88]);
    }

    #[test]
    fn adts_header_fields() {
        let h = adts_header(2, 371).unwrap();
        assert_eq!(h[0], 0xff);
        assert_eq!(h[1] & 0xf0, 0xf0, "sync word");
        assert_eq!(h[1] & 0x01, 1, "no CRC");
        assert_eq!(h[2] >> 6, 1, "profile = AAC-LC - 1");
        assert_eq!((h[2] >> 2) & 0x0f, 3, "48 kHz");
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        assert_eq!(channels, 2);
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert_eq!(len, 378);
        assert_eq!(h[6] & 0x03, 0, "one raw data block");
        assert!(adts_header(2, 8184).is_some());
        assert!(adts_header(2, 8185).is_none());
    }

    #[test]
    fn split_adts_undoes_adts_header() {
        let payloads = [vec![0x21; 371], vec![0x42; 1], vec![0x63; 8184]];
        let mut data = Vec::new();
        for p in &payloads {
            data.extend_from_slice(&adts_header(2, p.len()).unwrap());
            data.extend_from_slice(p);
        }
        let data = Bytes::from(data);
        let frames = split_adts(&data).unwrap();
        assert_eq!(frames, payloads);
        // Slices of the input, not copies.
        let range = data.as_ptr_range();
        assert!(frames.iter().all(|f| range.contains(&f.as_ptr())));
        assert_eq!(split_adts(&Bytes::new()), Some(Vec::new()));

        // With a CRC (protection_absent 0): a 9-byte header.
        let mut crc = adts_header(1, 3).unwrap().to_vec();
        crc[1] &= !0x01;
        crc[4] = 12 >> 3;
        crc[5] = ((12 & 0x07) << 5) as u8 | 0x1f;
        crc.extend_from_slice(&[0xc0, 0xc1, 1, 2, 3]);
        assert_eq!(split_adts(&Bytes::from(crc)).unwrap(), [vec![1, 2, 3]]);
    }

    #[test]
    fn split_adts_refuses_what_is_not_whole_frames() {
        let frame = [&adts_header(2, 4).unwrap()[..], &[1, 2, 3, 4]].concat();
        let refuses = |data: Vec<u8>| split_adts(&Bytes::from(data)).is_none();
        assert!(!refuses(frame.clone()));
        assert!(refuses(frame[..10].to_vec()), "truncated");
        assert!(
            refuses([&frame[..], &frame[..5]].concat()),
            "a partial header at the end"
        );
        assert!(refuses([&frame[..], &[0]].concat()), "a stray byte");
        let mut bad = frame.clone();
        bad[1] = 0xe1;
        assert!(refuses(bad), "no sync word");
        let mut bad = frame.clone();
        bad[1] |= 0x02;
        assert!(refuses(bad), "layer 1");
        let mut bad = frame.clone();
        bad[6] |= 0x01;
        assert!(refuses(bad), "two raw data blocks");
        let mut bad = frame;
        bad[4] = 0;
        bad[5] = 0xe0 | 0x1f;
        assert!(refuses(bad), "a length of just the header");
    }

    #[test]
    fn split_adts_never_panics() {
        let mut rand = crate::testdata::xorshift(0x2545_f491_4f6c_dd1d_u64);
        for _ in 0..5_000 {
            let len = (rand() % 40) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // Often a plausible header, so that the length checks are reached.
            if len >= 2 && rand().is_multiple_of(2) {
                data[..2].copy_from_slice(&[0xff, 0xf1]);
            }
            let data = Bytes::from(data);
            if let Some(frames) = split_adts(&data) {
                let payload: usize = frames.iter().map(Bytes::len).sum();
                assert!(payload + 7 * frames.len() <= data.len());
            }
        }
    }
}
