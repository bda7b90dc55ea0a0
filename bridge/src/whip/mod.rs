//! WHIP (RFC 9725): the resource state machine and SDP fragments come from the protocol crate
//! ([`bridge_proto::whip`]); the offer checks live here because they read the offer with
//! webrtc-rs's SDP parser, which the protocol crate does not link.

pub use bridge_proto::whip::*;
pub mod offer;
