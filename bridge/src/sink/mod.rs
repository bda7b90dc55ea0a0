//! Output edges: RTMP pushes, HLS files and their upload to object storage.

pub mod aac;
pub mod hls;
pub mod queue;
pub mod rtmp;
pub mod rtmp_conn;
pub mod s3;
