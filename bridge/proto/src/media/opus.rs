//! Opus packet framing (RFC 6716 §3): how many frames a packet holds and how long it plays,
//! checked against the rules a decoder would apply (§3.4, R1-R7), so a bad packet is refused here
//! rather than inside a transcoder.
//!
//! Durations are in 48 kHz samples, the rate Opus always uses for timing (RFC 7587 §4.1).

use bytes::Bytes;
use thiserror::Error;

use super::unit::{AudioFrame, TIMELINE_HZ};

/// Opus timing rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Longest duration a packet may have: 120 ms (R5).
pub const MAX_PACKET_SAMPLES: u32 = 5760;
/// Longest a frame may be in bytes (R2).
pub const MAX_FRAME_BYTES: usize = 1275;

/// Why a packet is malformed (the rule of RFC 6716 §3.4 it breaks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpusError {
    /// R1: a packet has at least the TOC byte.
    #[error("empty Opus packet")]
    Empty,
    /// The frame lengths or counts run past the end of the packet.
    #[error("Opus packet (code {code}) truncated")]
    Truncated {
        /// The TOC's frame count code.
        code: u8,
    },
    /// R2: a frame is longer than 1275 bytes.
    #[error("Opus frame of {0} bytes (at most 1275)")]
    FrameTooLong(usize),
    /// R3: code 1 splits an odd number of bytes in two.
    #[error("Opus code 1 packet with an odd payload of {0} bytes")]
    OddCbr(usize),
    /// R5: a code 3 packet has no frames or plays longer than 120 ms.
    #[error("Opus code 3 packet of {frames} frames of {frame_samples} samples")]
    BadFrameCount {
        /// The frame count field.
        frames: u8,
        /// Samples per frame at 48 kHz.
        frame_samples: u32,
    },
    /// R6: a CBR code 3 packet's bytes do not divide among its frames.
    #[error("Opus code 3 CBR packet: {len} bytes do not divide into {frames} frames")]
    UnevenCbr {
        /// Bytes left for frames.
        len: usize,
        /// The frame count.
        frames: u8,
    },
}

/// Audio bandwidth coded by the TOC's configuration number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    /// 4 kHz.
    Narrow,
    /// 6 kHz.
    Medium,
    /// 8 kHz.
    Wide,
    /// 12 kHz.
    SuperWide,
    /// 20 kHz.
    Full,
}

/// Coding mode coded by the TOC's configuration number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Speech (SILK).
    Silk,
    /// SILK and CELT together.
    Hybrid,
    /// Music (CELT).
    Celt,
}

/// The TOC byte (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc {
    /// Configuration number, 0..=31 (mode, bandwidth, frame size).
    pub config: u8,
    /// Stereo flag.
    pub stereo: bool,
    /// Frame count code, 0..=3.
    pub code: u8,
}

impl Toc {
    /// Reads a TOC byte.
    pub fn new(byte: u8) -> Self {
        Self {
            config: byte >> 3,
            stereo: byte & 0x04 != 0,
            code: byte & 0x03,
        }
    }

    /// Samples per frame at 48 kHz (Table 2).
    pub fn frame_samples(self) -> u32 {
        match self.config {
            0..=11 => [480, 960, 1920, 2880][usize::from(self.config % 4)],
            12..=15 => [480, 960][usize::from(self.config % 2)],
            _ => [120, 240, 480, 960][usize::from(self.config % 4)],
        }
    }

    /// Coding mode.
    pub fn mode(self) -> Mode {
        match self.config {
            0..=11 => Mode::Silk,
            12..=15 => Mode::Hybrid,
            _ => Mode::Celt,
        }
    }

    /// Audio bandwidth.
    pub fn bandwidth(self) -> Bandwidth {
        match self.config {
            0..=3 => Bandwidth::Narrow,
            4..=7 => Bandwidth::Medium,
            8..=11 | 20..=23 => Bandwidth::Wide,
            12 | 13 | 24..=27 => Bandwidth::SuperWide,
            16..=19 => Bandwidth::Narrow,
            _ => Bandwidth::Full,
        }
    }
}

/// A checked Opus packet's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusPacket {
    /// The TOC byte.
    pub toc: Toc,
    /// Frames in the packet (1..=48).
    pub frames: u8,
}

impl OpusPacket {
    /// Reads and checks a packet's framing (the frames themselves are not decoded).
    pub fn parse(packet: &[u8]) -> Result<Self, OpusError> {
        let (&toc_byte, rest) = packet.split_first().ok_or(OpusError::Empty)?;
        let toc = Toc::new(toc_byte);
        let code = toc.code;
        let frames = match code {
            0 => {
                check_frame(rest.len())?;
                1
            }
            1 => {
                if !rest.len().is_multiple_of(2) {
                    return Err(OpusError::OddCbr(rest.len()));
                }
                check_frame(rest.len() / 2)?;
                2
            }
            2 => {
                let (first, used) = frame_length(rest).ok_or(OpusError::Truncated { code })?;
                let second = rest
                    .len()
                    .checked_sub(used + first)
                    .ok_or(OpusError::Truncated { code })?;
                check_frame(first)?;
                check_frame(second)?;
                2
            }
            _ => {
                let (&count_byte, mut rest) =
                    rest.split_first().ok_or(OpusError::Truncated { code })?;
                let vbr = count_byte & 0x80 != 0;
                let padded = count_byte & 0x40 != 0;
                let frames = count_byte & 0x3f;
                let frame_samples = toc.frame_samples();
                if frames == 0 || u32::from(frames) * frame_samples > MAX_PACKET_SAMPLES {
                    return Err(OpusError::BadFrameCount {
                        frames,
                        frame_samples,
                    });
                }
                if padded {
                    // Each 255 adds 254 bytes of padding and means another length byte follows.
                    let mut padding = 0usize;
                    loop {
                        let (&b, tail) = rest.split_first().ok_or(OpusError::Truncated { code })?;
                        rest = tail;
                        padding += usize::from(if b == 255 { 254 } else { b });
                        if b != 255 {
                            break;
                        }
                    }
                    let len = rest
                        .len()
                        .checked_sub(padding)
                        .ok_or(OpusError::Truncated { code })?;
                    rest = rest.get(..len).unwrap_or_default();
                }
                if vbr {
                    let mut total = 0usize;
                    for _ in 1..frames {
                        let (len, used) =
                            frame_length(rest).ok_or(OpusError::Truncated { code })?;
                        check_frame(len)?;
                        rest = rest.get(used..).unwrap_or_default();
                        total += len;
                    }
                    let last = rest
                        .len()
                        .checked_sub(total)
                        .ok_or(OpusError::Truncated { code })?;
                    check_frame(last)?;
                } else {
                    let count = usize::from(frames);
                    if !rest.len().is_multiple_of(count) {
                        return Err(OpusError::UnevenCbr {
                            len: rest.len(),
                            frames,
                        });
                    }
                    check_frame(rest.len() / count)?;
                }
                frames
            }
        };
        Ok(Self { toc, frames })
    }

    /// Duration in 48 kHz samples.
    pub fn samples(&self) -> u32 {
        u32::from(self.frames) * self.toc.frame_samples()
    }

    /// Duration in session timeline ticks (exact: every Opus duration is a multiple of 2.5 ms).
    pub fn timeline_duration(&self) -> i64 {
        i64::from(self.samples()) * TIMELINE_HZ / i64::from(SAMPLE_RATE)
    }
}

/// Checks an Opus packet and makes the [`AudioFrame`] outputs take, at `pts` on the session
/// timeline.
pub fn audio_frame(data: Bytes, pts: i64) -> Result<AudioFrame, OpusError> {
    let packet = OpusPacket::parse(&data)?;
    Ok(AudioFrame {
        pts,
        duration: packet.timeline_duration(),
        data,
    })
}

fn check_frame(len: usize) -> Result<(), OpusError> {
    if len > MAX_FRAME_BYTES {
        return Err(OpusError::FrameTooLong(len));
    }
    Ok(())
}

/// A frame length (§3.2.1): one byte below 252, else two (`first + 4 * second`). Returns the
/// length and the bytes it took.
fn frame_length(data: &[u8]) -> Option<(usize, usize)> {
    let first = usize::from(*data.first()?);
    if first < 252 {
        return Some((first, 1));
    }
    let second = usize::from(*data.get(1)?);
    Some((first + 4 * second, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_durations_for_every_config() {
        let want: [u32; 32] = [
            480, 960, 1920, 2880, 480, 960, 1920, 2880, 480, 960, 1920, 2880, // SILK
            480, 960, 480, 960, // Hybrid
            120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480,
            960, // CELT
        ];
        for (config, want) in want.into_iter().enumerate() {
            let toc = Toc::new((config as u8) << 3);
            assert_eq!(toc.frame_samples(), want, "config {config}");
        }
        let toc = Toc::new(0xfc | 0x03);
        assert_eq!((toc.config, toc.stereo, toc.code), (31, true, 3));
        assert_eq!((toc.mode(), toc.bandwidth()), (Mode::Celt, Bandwidth::Full));
        assert_eq!(Toc::new(15 << 3).bandwidth(), Bandwidth::Full);
        assert_eq!(Toc::new(13 << 3).mode(), Mode::Hybrid);
    }

    #[test]
    fn packets_table() {
        // Browsers send 20 ms packets, hybrid fullband (config 15) or SILK wideband (config 9).
        let hybrid_20ms = 15 << 3;
        let celt_2_5ms = 16 << 3;
        let silk_60ms = 3 << 3;
        type Case = (Vec<u8>, Result<(u8, u32), OpusError>);
        let cases: Vec<Case> = vec![
            (vec![], Err(OpusError::Empty)),
            (vec![hybrid_20ms], Ok((1, 960))), // DTX: TOC only
            (vec![hybrid_20ms, 1, 2, 3], Ok((1, 960))),
            (
                [vec![hybrid_20ms], vec![0; 1276]].concat(),
                Err(OpusError::FrameTooLong(1276)),
            ),
            (vec![hybrid_20ms | 1, 1, 2], Ok((2, 1920))),
            (vec![hybrid_20ms | 1, 1, 2, 3], Err(OpusError::OddCbr(3))),
            (vec![hybrid_20ms | 2, 1, 9, 8, 7], Ok((2, 1920))),
            (
                vec![hybrid_20ms | 2, 5, 9],
                Err(OpusError::Truncated { code: 2 }),
            ),
            (vec![hybrid_20ms | 2], Err(OpusError::Truncated { code: 2 })),
            (
                vec![hybrid_20ms | 2, 252],
                Err(OpusError::Truncated { code: 2 }),
            ),
            // Two-byte length: 252 + 4 * 1 = 256.
            (
                [vec![hybrid_20ms | 2, 252, 1], vec![0; 256]].concat(),
                Ok((2, 1920)),
            ),
            // Code 3 CBR, 3 frames of 2 bytes.
            (vec![hybrid_20ms | 3, 3, 1, 1, 2, 2, 3, 3], Ok((3, 2880))),
            (
                vec![hybrid_20ms | 3, 3, 1, 1, 2, 2],
                Err(OpusError::UnevenCbr { len: 4, frames: 3 }),
            ),
            (vec![hybrid_20ms | 3], Err(OpusError::Truncated { code: 3 })),
            (
                vec![hybrid_20ms | 3, 0],
                Err(OpusError::BadFrameCount {
                    frames: 0,
                    frame_samples: 960,
                }),
            ),
            // 48 frames of 2.5 ms is exactly 120 ms; 3 of 60 ms is not.
            (vec![celt_2_5ms | 3, 48], Ok((48, 5760))),
            (
                vec![silk_60ms | 3, 3],
                Err(OpusError::BadFrameCount {
                    frames: 3,
                    frame_samples: 2880,
                }),
            ),
            // Code 3 VBR: lengths 1 and 2, last frame 3 bytes.
            (
                vec![hybrid_20ms | 3, 0x83, 1, 2, 9, 8, 8, 7, 7, 7],
                Ok((3, 2880)),
            ),
            (
                vec![hybrid_20ms | 3, 0x83, 1, 5, 9],
                Err(OpusError::Truncated { code: 3 }),
            ),
            // Padding: 2 bytes of it (length byte 2), one CBR frame of 1 byte.
            (vec![hybrid_20ms | 3, 0x41, 2, 9, 0, 0], Ok((1, 960))),
            // Padding length 255 = 254 + next byte.
            (
                [vec![hybrid_20ms | 3, 0x41, 255, 1], vec![0; 255]].concat(),
                Ok((1, 960)),
            ),
            (
                vec![hybrid_20ms | 3, 0x41, 255],
                Err(OpusError::Truncated { code: 3 }),
            ),
            (
                vec![hybrid_20ms | 3, 0x41, 9, 1],
                Err(OpusError::Truncated { code: 3 }),
            ),
        ];
        for (packet, want) in cases {
            let got = OpusPacket::parse(&packet).map(|p| (p.frames, p.samples()));
            assert_eq!(got, want, "{:02x?}", &packet[..packet.len().min(12)]);
        }
    }

    #[test]
    fn audio_frames_get_timeline_durations() {
        let frame = audio_frame(Bytes::from_static(&[15 << 3, 1, 2]), 1800).unwrap();
        assert_eq!((frame.pts, frame.duration), (1800, 1800)); // 20 ms
        let frame = audio_frame(Bytes::from_static(&[16 << 3]), 0).unwrap();
        assert_eq!(frame.duration, 225); // 2.5 ms
        assert_eq!(audio_frame(Bytes::new(), 0), Err(OpusError::Empty));
    }

    #[test]
    fn random_packets_never_panic() {
        let mut x = 0x51a7_e5c0_ffee_0001_u64;
        let mut ok = 0;
        for i in 0..20_000usize {
            let mut packet = Vec::with_capacity(i % 64);
            for _ in 0..i % 64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                packet.push(x as u8);
            }
            if let Ok(p) = OpusPacket::parse(&packet) {
                assert!(p.samples() <= MAX_PACKET_SAMPLES);
                assert!(p.frames >= 1);
                ok += 1;
            }
        }
        assert!(ok > 1000);
    }
}
