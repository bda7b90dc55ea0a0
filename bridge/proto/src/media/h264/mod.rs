//! H.264 over RTP (RFC 6184).
//!
//! [`depacketizer`] turns ordered packets into access units; [`sps`] reads the sequence parameter
//! set fields outputs need; [`annexb`] reads Annex B byte streams (raw `.h264` files).

pub mod annexb;
pub mod depacketizer;
pub mod sps;

pub use depacketizer::{DepacketizeError, Depacketizer, DepacketizerStats, FmtpError, H264Frame};
pub use sps::{Sps, SpsError};

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// RFC 6184 aggregation packet (single-time).
const STAP_A: u8 = 24;
/// RFC 6184 fragmentation unit (non-interleaved).
const FU_A: u8 = 28;
