//! WebRTC edge: the only module that names webrtc-rs (`rtc`) types. The session drives a
//! [`peer::Peer`] in the bridge's own types.

pub mod dump;
pub mod peer;
pub mod restart_hold;
pub mod sr_tap;
pub mod udp;
