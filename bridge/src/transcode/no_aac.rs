//! A build without the AAC encoder (`--no-default-features`, see `fdk.rs`): no [`AacEncoder`]
//! can be made, so configurations asking for AAC are refused when the bridge starts.

use bytes::Bytes;

use super::TranscodeError;

/// Never made: [`AacEncoder::new`] always fails in this build.
#[derive(Debug)]
pub(super) struct AacEncoder {
    never: std::convert::Infallible,
}

impl AacEncoder {
    pub(super) fn new(_channels: u8, _bitrate: u32) -> Result<Self, TranscodeError> {
        Err(TranscodeError::NoEncoder)
    }

    pub(super) fn channels(&self) -> u8 {
        match self.never {}
    }

    pub(super) fn audio_specific_config(&self) -> Bytes {
        match self.never {}
    }

    pub(super) fn delay(&self) -> u32 {
        match self.never {}
    }

    pub(super) fn encode(&mut self, _pcm: &[i16]) -> Result<Bytes, TranscodeError> {
        match self.never {}
    }
}
