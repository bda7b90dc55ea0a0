//! Media: pure code over RTP payloads.

pub mod h264;
pub mod unit;
