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
//!
//! # What loadgen shares with the bridge, and what it does not
//!
//! loadgen checks the bridge, so its *checkers* are a second, independent implementation on
//! purpose: the RFC 9725 oracle ([`signal`]'s `oracle`), and the readers of what the bridge
//! outputs: FLV tags at the RTMP ingest, fMP4 boxes ([`publish::fmp4`]) and HLS playlists
//! ([`publish::playlist`]). They are written from the specifications, not from the bridge's
//! muxers and state machines, and must stay so: reading the bridge's output with the bridge's
//! own code would agree with its bugs instead of finding them.
//!
//! The *input plumbing*, which only turns files into what a publisher sends and checks nothing of
//! the bridge, comes from the pure protocol crate `bridge-proto` instead of being written twice:
//! the Annex B split and access units, the Ogg page and packet reader, the Opus TOC durations
//! (all in [`media`]), the H.264 NAL unit types, and the names of standard FLV codes (tag types,
//! codec and sound format numbers). A checker may name a standard code with the bridge's constant;
//! what it does with the code stays its own. `bridge-proto` is pure (no runtime, no IO) and adds
//! no crate loadgen does not already build.

pub mod cli;
pub mod driver;
mod error;
pub mod media;
pub mod publish;
mod publisher;
pub mod report;
pub mod sdp;
pub mod server;
pub mod signal;
pub mod stats;
pub mod whip_client;

pub use error::Error;
pub use publisher::{
    H264_FMTP, H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, Publisher, PublisherConfig, SentStats,
};

/// Re-exported so users can name the types in [`driver`] without depending on `rtc` directly.
pub use rtc;
