//! The common currency between depacketizers, transcoders and muxers.
//!
//! Times are on one session timeline in 90 kHz ticks (`i64`): the unit MPEG-TS uses, and one in
//! which 20 ms Opus frames (1800) and 1024-sample AAC frames at 48 kHz (1920) are both exact.

use bytes::Bytes;

/// Ticks per second of the session timeline.
pub const TIMELINE_HZ: i64 = 90_000;

/// A frame's NAL units. Inline up to four (a P frame with its SEI, or SPS + PPS + SEI + IDR),
/// so that neither the depacketizer nor each output's copy of a unit allocates for them; a
/// frame with more spills to the heap.
pub type Nalus = smallvec::SmallVec<[Bytes; 4]>;

/// One H.264 access unit (a picture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoUnit {
    /// Presentation time on the session timeline.
    pub pts: i64,
    /// Decode time (equal to `pts` without B-frames, which WebRTC publishers do not send).
    pub dts: i64,
    /// Starts with an IDR picture (SPS and PPS are then among `nalus`, before the IDR).
    pub keyframe: bool,
    /// NAL units without start codes or length prefixes; slices of the RTP payloads where the
    /// packetization allows, one reassembled buffer per FU-A NAL otherwise.
    pub nalus: Nalus,
}

/// One encoded audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation time on the session timeline.
    pub pts: i64,
    /// Duration in timeline ticks.
    pub duration: i64,
    /// The frame (an Opus packet, or a raw AAC frame after transcoding).
    pub data: Bytes,
}

/// A unit of either kind, as fanned out to outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// Video.
    Video(VideoUnit),
    /// Audio.
    Audio(AudioFrame),
}
