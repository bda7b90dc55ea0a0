//! Muxers: pure functions of units to container bytes.

pub mod flv;
pub mod hls;
