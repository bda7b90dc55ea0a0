//! The bridge's protocol core, as quinn-proto is to quinn: everything here is plain code over
//! [`bytes::Bytes`] and explicit time. It reads no clock, opens no socket or file and needs no
//! async runtime; the `bridge` crate drives it from tokio, axum and webrtc-rs. That split is
//! checked by the compiler: this crate's dependencies have none of them.
//!
//! - [`whip`]: the WHIP resource (entity tags, trickle, ICE restart) and SDP fragments.
//! - [`media`]: RTP in: reorder buffer, H.264 and Opus depacketizing, AAC framing, the session
//!   clock, the per-session ingest, the gate outputs start behind.
//! - [`mux`]: containers out: FLV for RTMP, fMP4/CMAF and MPEG-TS segments, HLS playlists, and
//!   the HLS output that decides what to write, list and delete.
//! - [`rtmp_url`]: RTMP push URLs and the `{stream}` templates they are configured as.

pub mod media;
pub mod mux;
pub mod rtmp_url;
#[cfg(any(test, feature = "test-support"))]
pub mod testdata;
pub mod whip;
