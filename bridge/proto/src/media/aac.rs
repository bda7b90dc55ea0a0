//! AAC as the containers carry it: the AudioSpecificConfig FLV and MP4 carry ([`AacConfig`]
//! reads one, [`audio_specific_config`] writes the bridge's own AAC-LC at 48 kHz), and the ADTS
//! header MPEG-TS and `.aac` files need ([`Adts`], [`adts_header`]; [`split_adts`] takes it off
//! again). The encoder itself is in the bridge's `transcode` module, which links the codec
//! library.

use bytes::Bytes;
use thiserror::Error;

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
    Adts::from_fields(AOT_AAC_LC, FREQ_INDEX_48K, channels & 0x07)?.header(payload_len)
}

/// ADTS headers (ISO/IEC 14496-3 §1.A.2.2: MPEG-4, no CRC, one raw data block a frame) for one
/// stream: the fields that do not change from frame to frame, worked out once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adts {
    /// The first four bytes; the frame length goes into the last two bits of the fourth and the
    /// two bytes after it.
    prefix: [u8; 4],
}

impl Adts {
    /// Bytes of a header without CRC.
    pub const HEADER_LEN: usize = 7;
    /// The largest raw frame a header can frame: `aac_frame_length` is 13 bits and counts the
    /// header.
    pub const MAX_PAYLOAD: usize = (1 << 13) - 1 - Self::HEADER_LEN;

    /// Headers for the stream `config` describes; `None` unless its object type fits ADTS's
    /// 2-bit profile (1 to 4) and its rate is a tabled one (index 0 to 12: ADTS has no explicit
    /// rate).
    pub fn new(config: &AacConfig) -> Option<Self> {
        Self::from_fields(
            config.object_type(),
            config.frequency_index(),
            config.channel_config(),
        )
    }

    fn from_fields(object_type: u8, frequency_index: u8, channel_config: u8) -> Option<Self> {
        if !(1..=4).contains(&object_type) || frequency_index > 12 {
            return None;
        }
        Some(Self {
            prefix: [
                0xff,
                0xf1, // syncword (low 4 bits), ID 0 (MPEG-4), layer 0, protection_absent
                (object_type - 1) << 6 | frequency_index << 2 | (channel_config >> 2 & 1),
                (channel_config & 3) << 6,
            ],
        })
    }

    /// The header of one raw frame of `payload_len` bytes; `None` past [`Self::MAX_PAYLOAD`].
    pub fn header(&self, payload_len: usize) -> Option<[u8; 7]> {
        if payload_len > Self::MAX_PAYLOAD {
            return None;
        }
        // Bounded by the check above, so the casts below keep every bit.
        let len = (payload_len + Self::HEADER_LEN) as u16;
        let p = self.prefix;
        Some([
            p[0],
            p[1],
            p[2],
            p[3] | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            // buffer fullness 0x7ff (variable rate): high 5 bits here, low 6 in the next byte,
            (((len & 0x07) as u8) << 5) | 0x1f,
            // ... then number_of_raw_data_blocks_in_frame 0: one raw data block
            0xfc,
        ])
    }
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

/// What went wrong reading an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AacConfigError {
    /// Fewer bits than the fields need.
    #[error("AudioSpecificConfig truncated")]
    Truncated,
    /// Object type 0 (null).
    #[error("audio object type 0")]
    NullObjectType,
    /// A reserved sampling frequency index (13 or 14), or an explicit rate of 0.
    #[error("sampling frequency index {0} unusable")]
    Frequency(u8),
    /// Channel configurations other than 1..=7 (0 means a program config element, which the
    /// muxers would have to parse for a channel count).
    #[error("channel configuration {0} unsupported")]
    Channels(u8),
}

/// Sampling frequencies by index (ISO/IEC 14496-3 Table 1.18).
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// A parsed AudioSpecificConfig, with the bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    raw: Bytes,
    object_type: u8,
    frequency_index: u8,
    sample_rate: u32,
    channel_config: u8,
}

impl AacConfig {
    /// Parses the leading fields of an AudioSpecificConfig (AAC-LC at 48 kHz stereo is
    /// `[0x11, 0x90]`); the rest is kept opaque and copied into `esds` as is.
    pub fn parse(asc: &[u8]) -> Result<Self, AacConfigError> {
        let mut bits = Bits::new(asc);
        let mut object_type = bits.take(5)?;
        if object_type == 31 {
            object_type = 32 + bits.take(6)?;
        }
        if object_type == 0 {
            return Err(AacConfigError::NullObjectType);
        }
        let frequency_index = bits.take(4)? as u8;
        let sample_rate = match frequency_index {
            15 => bits.take(24)?,
            i => AAC_RATES
                .get(usize::from(i))
                .copied()
                .ok_or(AacConfigError::Frequency(i))?,
        };
        if sample_rate == 0 {
            return Err(AacConfigError::Frequency(frequency_index));
        }
        let channel_config = bits.take(4)? as u8;
        if !(1..=7).contains(&channel_config) {
            return Err(AacConfigError::Channels(channel_config));
        }
        Ok(Self {
            raw: Bytes::copy_from_slice(asc),
            // At most 32 + 63.
            object_type: object_type as u8,
            frequency_index,
            sample_rate,
            channel_config,
        })
    }

    /// The AudioSpecificConfig bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Audio object type (2 for AAC-LC).
    pub fn object_type(&self) -> u8 {
        self.object_type
    }

    /// The sampling frequency index, 15 when the rate is explicit.
    pub fn frequency_index(&self) -> u8 {
        self.frequency_index
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The channel configuration (1..=7; 7 is 7.1).
    pub fn channel_config(&self) -> u8 {
        self.channel_config
    }

    /// Output channels.
    pub fn channels(&self) -> u8 {
        if self.channel_config == 7 {
            8
        } else {
            self.channel_config
        }
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// An MSB-first reader over at most 64 bits, enough for the head of an AudioSpecificConfig.
struct Bits {
    value: u64,
    left: u32,
}

impl Bits {
    fn new(data: &[u8]) -> Self {
        let mut value = 0u64;
        let mut left = 0;
        for &b in data.iter().take(8) {
            value |= u64::from(b) << (56 - left);
            left += 8;
        }
        Self { value, left }
    }

    fn take(&mut self, n: u32) -> Result<u32, AacConfigError> {
        if n > self.left || n == 0 || n > 32 {
            return Err(AacConfigError::Truncated);
        }
        let v = (self.value >> (64 - n)) as u32;
        self.value <<= n;
        self.left -= n;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::ASC;

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
    fn adts_for_configs() {
        let lc = Adts::new(&AacConfig::parse(&ASC).unwrap()).unwrap();
        assert_eq!(lc.header(371), adts_header(2, 371));
        assert_eq!(lc.header(Adts::MAX_PAYLOAD), adts_header(2, 8184));
        assert_eq!(lc.header(Adts::MAX_PAYLOAD + 1), None);
        // 7.1 (channel configuration 7 spans the two bytes).
        let surround = Adts::new(&AacConfig::parse(&[0x11, 0xb8]).unwrap()).unwrap();
        let h = surround.header(0).unwrap();
        assert_eq!(((h[2] & 1) << 2) | (h[3] >> 6), 7);
        // HE-AAC (object type 5) and explicit rates have no ADTS header.
        assert_eq!(
            Adts::new(&AacConfig::parse(&[0x2b, 0x08, 0x80]).unwrap()),
            None
        );
        let usac = AacConfig::parse(&[0xf9, 0x5e, 0x01, 0x77, 0x00, 0xe0]).unwrap();
        assert_eq!(Adts::new(&usac), None);
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

    #[test]
    fn audio_specific_configs() {
        let lc = AacConfig::parse(&ASC).unwrap();
        assert_eq!(
            (
                lc.object_type(),
                lc.frequency_index(),
                lc.sample_rate(),
                lc.channels()
            ),
            (2, 3, 48_000, 2)
        );
        assert_eq!(lc.codec_string(), "mp4a.40.2");
        // HE-AAC at 24 kHz mono (its SBR extension after the fields is kept opaque).
        let he = AacConfig::parse(&[0x2b, 0x08, 0x80]).unwrap();
        assert_eq!(
            (he.object_type(), he.sample_rate(), he.channels()),
            (5, 24_000, 1)
        );
        // Escape object type 31 + 10 = 42 (USAC), explicit rate 0x00bb80 = 48 kHz, 7.1.
        // 11111 001010 1111 000000001011101110000000 0111 -> bits in bytes:
        let escaped = [0xf9, 0x5e, 0x01, 0x77, 0x00, 0xe0];
        let usac = AacConfig::parse(&escaped).unwrap();
        assert_eq!(
            (
                usac.object_type(),
                usac.frequency_index(),
                usac.sample_rate(),
                usac.channels()
            ),
            (42, 15, 48_000, 8)
        );
        assert_eq!(AacConfig::parse(&[]), Err(AacConfigError::Truncated));
        assert_eq!(AacConfig::parse(&[0x11]), Err(AacConfigError::Truncated));
        assert_eq!(
            AacConfig::parse(&[0x01, 0x90]),
            Err(AacConfigError::NullObjectType)
        );
        assert_eq!(
            AacConfig::parse(&[0x16, 0x90]),
            Err(AacConfigError::Frequency(13))
        );
        assert_eq!(
            AacConfig::parse(&[0x11, 0x80]),
            Err(AacConfigError::Channels(0))
        );
    }
}
