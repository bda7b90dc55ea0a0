//! What loadgen's publishers send: a short H.264 + Opus test clip, committed in `loadgen/data/`
//! (its README says how it was made) and compiled in, played in a loop by [`H264Source`] and
//! [`OpusSource`] with timestamps that keep counting across loops; and the [`FrameStamp`] SEI
//! that lets a receiver time every video frame.
//!
//! The clip is parsed and checked once, at first use ([`Clip::embedded`]): Annex B H.264 split
//! into access units, Ogg Opus into packets. The parsers never panic; anything unexpected is a
//! [`ClipError`].
//!
//! This is input plumbing, so the parsing is bridge-proto's (see the crate docs): `annexb` and
//! `ogg` hold the clip to stricter rules on top of its Annex B and Ogg readers, `clip` checks the
//! GOP structure and lengths and loops the clip, and `stamp` is the measurement protocol the
//! receivers in [`publish`](crate::publish) read back.

mod annexb;
mod clip;
mod ogg;
mod stamp;

pub use clip::{
    AudioPacket, Clip, ClipError, H264Source, OpusSource, VideoFrame, layer_scale, layer_size,
};
pub(crate) use stamp::unescape_rbsp;
pub use stamp::{FrameStamp, STAMP_SEI_UUID, now_us};

/// Video frame rate of the clip.
pub const VIDEO_FPS: u32 = 30;
/// One IDR (with SPS and PPS in front) every this many frames, from the first: one per second.
pub const GOP_FRAMES: u32 = 30;
/// Width of the clip's pictures.
pub const VIDEO_WIDTH: u32 = 640;
/// Height of the clip's pictures.
pub const VIDEO_HEIGHT: u32 = 360;
/// Most simulcast layers a publisher can send: clips are committed for the sizes layer `i` of
/// up to 3 layers needs, `(N - i) / N` of the full size (1/1, 2/3, 1/2 and 1/3).
pub const MAX_LAYERS: u8 = 3;
/// RTP clock rate of H.264.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// Opus frame duration in milliseconds (one frame a packet).
pub const AUDIO_FRAME_MS: u32 = 20;

/// How long a video frame lasts in the 90 kHz clock.
const VIDEO_FRAME_TICKS: u32 = VIDEO_CLOCK_RATE / VIDEO_FPS;
/// How long an Opus packet lasts in the 48 kHz clock.
const AUDIO_PACKET_SAMPLES: u32 = AUDIO_CLOCK_RATE / 1000 * AUDIO_FRAME_MS;
