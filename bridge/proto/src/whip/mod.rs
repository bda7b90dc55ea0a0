//! WHIP protocol state (RFC 9725): pure code, no IO, no clock.

pub mod admission;
pub mod liveness;
pub mod resource;
pub mod sdpfrag;
