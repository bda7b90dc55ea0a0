//! Output edges: RTMP pushes (and HLS files).

pub mod rtmp_conn;
pub mod queue;
