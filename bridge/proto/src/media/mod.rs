//! Media: pure code over RTP payloads.

pub mod aac;
pub mod clock;
pub mod h264;
pub mod ingest;
pub mod ogg;
pub mod opus;
pub mod reorder;
pub mod rtp;
pub mod simulcast;
pub mod start;
pub mod unit;
