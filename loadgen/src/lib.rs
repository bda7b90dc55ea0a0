//! WHIP (RFC 9725) test publisher and load generator.
//!
//! [`Publisher`] is an in-process WHIP client: it POSTs an SDP offer (sendonly Opus + H.264,
//! BUNDLE, rtcp-mux), trickles its candidate by PATCH if asked, runs the WebRTC peer connection
//! (webrtc-rs's sans-I/O `rtc` crate) on its own UDP socket in a tokio task, sends a looped
//! H.264 + Opus test clip (committed in `loadgen/data/` and compiled in, see [`media`]), restarts
//! ICE the WHIP way and DELETEs the session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loadgen::Error> {
//! use std::time::Duration;
//! let mut p = loadgen::Publisher::connect(loadgen::PublisherConfig {
//!     trickle: true,
//!     ..loadgen::PublisherConfig::new("http://127.0.0.1:8080/whip/demo")
//! })
//! .await?;
//! p.wait_connected(Duration::from_secs(10)).await?;
//! let sent = p.send_media(Duration::from_secs(2)).await?;
//! assert!(sent.keyframes >= 2);
//! p.restart_ice().await?;
//! p.wait_connected(Duration::from_secs(10)).await?;
//! p.delete().await?;
//! # Ok(()) }
//! ```
//!
//! The `loadgen` binary drives many of these at once: [`signal`] runs WHIP signalling at scale
//! with an RFC 9725 oracle, [`publish`] sends stamped media through a bridge and times it at
//! a built-in RTMP ingest, [`stats`] keeps the latency histograms and [`report`] turns them into
//! tables, JSON, plots and CI gates.

pub mod cli;
pub mod driver;
mod error;
pub mod media;
pub mod publish;
mod publisher;
pub mod report;
pub mod sdp;
pub mod signal;
pub mod stats;
pub mod whip_client;

pub use error::Error;
pub use publisher::{
    H264_FMTP, H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, Publisher, PublisherConfig, SentStats,
};

/// Re-exported so users can name the types in [`driver`] without depending on `rtc` directly.
pub use rtc;
