//! H.264: the codec layer the depacketizer and every muxer share, and RTP in (RFC 6184).
//!
//! [`nal`] names the NAL unit types; [`sps`] reads the sequence parameter set fields outputs
//! need; [`avcc`] writes the AVCDecoderConfigurationRecord FLV and MP4 both carry; [`params`]
//! tracks the parameter sets in force and says when they change; [`depacketizer`] turns ordered
//! packets into access units; [`annexb`] reads Annex B byte streams (raw `.h264` files).

pub mod annexb;
pub mod avcc;
pub mod depacketizer;
pub mod nal;
pub mod params;
pub mod sps;

pub use depacketizer::{DepacketizeError, Depacketizer, DepacketizerStats, FmtpError, H264Frame};
pub use nal::{
    NAL_AUD, NAL_FILLER, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS, is_slice, nal_type,
};
pub use sps::{Sps, SpsError};

/// RFC 6184 aggregation packet (single-time).
const STAP_A: u8 = 24;
/// RFC 6184 fragmentation unit (non-interleaved).
const FU_A: u8 = 28;
