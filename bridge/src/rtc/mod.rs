//! WebRTC edge: the only module that names webrtc-rs (`rtc`) types besides the session actor.

pub mod dump;
pub mod peer;
pub mod sr_tap;
pub mod udp;
