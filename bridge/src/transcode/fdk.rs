//! The AAC-LC encoder: Fraunhofer FDK AAC through the `fdk-aac` crate, which compiles the
//! library's C++ source in its build script (no system package needed). Its licence is not an
//! OSI one, hence the cargo feature: `--no-default-features` builds the bridge without it
//! (`no_aac.rs`), with Opus for HLS and Enhanced RTMP.

use bytes::Bytes;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

use super::TranscodeError;
use crate::media::aac::{FRAME_SAMPLES, SAMPLE_RATE, audio_specific_config};

/// Lowest bit rate accepted, per channel (FDK refuses less at 48 kHz).
const MIN_BITRATE_PER_CHANNEL: u32 = 8_000;
/// Highest bit rate AAC-LC can carry per channel at 48 kHz: 6144 bits per 1024-sample frame.
const MAX_BITRATE_PER_CHANNEL: u32 = 288_000;

/// An AAC-LC encoder taking interleaved 16-bit PCM one 1024-sample frame at a time.
pub(super) struct AacEncoder {
    encoder: Encoder,
    channels: u8,
    asc: Bytes,
    /// Samples per channel between input and decoded output, as the library reports it.
    delay: u32,
    out: Vec<u8>,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("channels", &self.channels)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl AacEncoder {
    pub(super) fn new(channels: u8, bitrate: u32) -> Result<Self, TranscodeError> {
        let mode = match channels {
            1 => ChannelMode::Mono,
            2 => ChannelMode::Stereo,
            _ => return Err(TranscodeError::Channels(channels)),
        };
        let per_channel = MIN_BITRATE_PER_CHANNEL..=MAX_BITRATE_PER_CHANNEL;
        if !per_channel.contains(&(bitrate / u32::from(channels))) {
            return Err(TranscodeError::Bitrate { bitrate, channels });
        }
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate),
            sample_rate: SAMPLE_RATE,
            transport: Transport::Raw,
            channels: mode,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| TranscodeError::Encoder {
            during: "setup",
            message: e.to_string(),
        })?;
        let info = encoder.info().map_err(|e| TranscodeError::Encoder {
            during: "info",
            message: e.to_string(),
        })?;
        let expected = audio_specific_config(channels);
        // The library writes its own config; it must be the plain 2-byte one FLV players expect.
        let conf = info
            .confBuf
            .get(..info.confSize as usize)
            .unwrap_or_default();
        if conf != expected || info.frameLength as usize != FRAME_SAMPLES {
            return Err(TranscodeError::Encoder {
                during: "setup",
                message: format!(
                    "unexpected config {conf:02x?} / frame length {}",
                    info.frameLength
                ),
            });
        }
        Ok(Self {
            encoder,
            channels,
            asc: Bytes::copy_from_slice(&expected),
            delay: info.nDelay,
            out: vec![0; (info.maxOutBufBytes as usize).max(768 * usize::from(channels))],
        })
    }

    pub(super) fn channels(&self) -> u8 {
        self.channels
    }

    pub(super) fn audio_specific_config(&self) -> Bytes {
        self.asc.clone()
    }

    pub(super) fn delay(&self) -> u32 {
        self.delay
    }

    /// Encodes exactly one frame (`FRAME_SAMPLES * channels` interleaved samples) into one raw
    /// AAC frame. FDK outputs a frame for every full frame in from the first call (its delay is
    /// inside the stream, not withheld), which is what keeps the output timing simple.
    pub(super) fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, TranscodeError> {
        let want = FRAME_SAMPLES * usize::from(self.channels);
        if pcm.len() != want {
            return Err(TranscodeError::Encoder {
                during: "encode",
                message: format!("{} samples in, want {want}", pcm.len()),
            });
        }
        let info =
            self.encoder
                .encode(pcm, &mut self.out)
                .map_err(|e| TranscodeError::Encoder {
                    during: "encode",
                    message: e.to_string(),
                })?;
        if info.input_consumed != want || info.output_size == 0 {
            return Err(TranscodeError::Encoder {
                during: "encode",
                message: format!(
                    "consumed {} of {want} samples, wrote {} bytes",
                    info.input_consumed, info.output_size
                ),
            });
        }
        let frame = self
            .out
            .get(..info.output_size)
            .ok_or(TranscodeError::Encoder {
                during: "encode",
                message: format!("output size {} past the buffer", info.output_size),
            })?;
        Ok(Bytes::copy_from_slice(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::DEFAULT_BITRATE;

    #[test]
    fn refuses_bad_settings() {
        assert!(matches!(
            AacEncoder::new(3, 128_000),
            Err(TranscodeError::Channels(3))
        ));
        assert!(matches!(
            AacEncoder::new(1, 4_000),
            Err(TranscodeError::Bitrate { .. })
        ));
        assert!(matches!(
            AacEncoder::new(1, 400_000),
            Err(TranscodeError::Bitrate { .. })
        ));
    }

    #[test]
    fn one_frame_out_per_frame_in() {
        let mut enc = AacEncoder::new(2, DEFAULT_BITRATE).unwrap();
        assert_eq!(enc.delay(), 2048);
        assert_eq!(&enc.audio_specific_config()[..], &[0x11, 0x90]);
        let pcm = vec![0i16; FRAME_SAMPLES * 2];
        for _ in 0..4 {
            assert!(!enc.encode(&pcm).unwrap().is_empty());
        }
        assert!(enc.encode(&pcm[..100]).is_err());
    }
}
