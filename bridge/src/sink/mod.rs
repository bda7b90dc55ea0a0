//! Output edges: RTMP pushes and HLS files.

pub mod aac;
pub mod hls;
pub mod queue;
pub mod rtmp;
pub mod rtmp_conn;
