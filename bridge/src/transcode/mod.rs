//! Audio transcoding for outputs that cannot carry Opus: legacy RTMP/FLV platforms take AAC only.
//!
//! The one place that links codec libraries, all built from crates (no system packages):
//! `opus-pure` decodes Opus in pure Rust; `fdk-aac` compiles Fraunhofer's FDK AAC encoder from the
//! C++ source it bundles (a C++ compiler is needed at build time, nothing at run time). The
//! encoder is the default cargo feature `fdk-aac`: FDK's licence is not OSI-approved, and a build
//! without it ([`AAC_ENCODER`] false) still bridges Opus (HLS fMP4, Enhanced RTMP).
//!
//! Sans-IO like the muxers: [`OpusToAac::push`] takes a frame and returns frames.

#[cfg(feature = "fdk-aac")]
#[path = "fdk.rs"]
mod encoder;
#[cfg(not(feature = "fdk-aac"))]
#[path = "no_aac.rs"]
mod encoder;
#[cfg(test)]
mod flv_playback;
mod opus_to_aac;

/// AAC bit rate when none is configured.
pub const DEFAULT_BITRATE: u32 = 128_000;

/// This build has the AAC encoder (cargo feature `fdk-aac`, on by default).
pub const AAC_ENCODER: bool = cfg!(feature = "fdk-aac");

pub use crate::media::aac::{adts_header, audio_specific_config, split_adts};
pub use opus_to_aac::{MAX_FILL_SAMPLES, OpusToAac, TranscodeStats, channels_for};

/// Why a transcoder could not be made or could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// Only mono and stereo are supported.
    #[error("{0} audio channels (AAC output supports 1 or 2)")]
    Channels(u8),
    /// The bit rate is outside what AAC-LC carries at 48 kHz (8 to 288 kb/s per channel).
    #[error("AAC bit rate {bitrate} b/s out of range for {channels} channel(s)")]
    Bitrate {
        /// The rate asked for.
        bitrate: u32,
        /// Channels.
        channels: u8,
    },
    /// The Opus decoder could not be set up.
    #[error("Opus decoder: {0}")]
    Decoder(String),
    /// This build has no AAC encoder.
    #[error("AAC: this bridge was built without the encoder (cargo feature fdk-aac)")]
    NoEncoder,
    /// The AAC encoder failed (FDK's message; its error type does not implement `Error`).
    #[error("AAC encoder ({during}): {message}")]
    Encoder {
        /// What was being done.
        during: &'static str,
        /// The library's description.
        message: String,
    },
}
