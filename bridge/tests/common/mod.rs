//! Harness shared by the integration tests, one module per concern; everything it starts is
//! cleaned up on drop. Each test binary compiles all of it and uses a part, so every module
//! allows dead code (rustfmt cannot follow `mod common { mod proc; }` declared inline in
//! `tests/interop.rs`, which would have let each test pick its modules).
//!
//! - [`proc`]: child processes, scratch folders, skipping or failing when a tool is missing;
//! - [`netns`]: a network namespace of the test's own (root and `ip`);
//! - [`peers`]: the real peers (FFmpeg 9, aiortc, Chromium, Node) and how FFmpeg publishes, and
//!   ffprobe/ffmpeg reading HLS back;
//! - [`binary`]: the `bridge` binary as a child process, and plain HTTP to it;
//! - [`http`]: a plain HTTP client (status, type, body) with request headers;
//! - [`metrics`]: reading `/metrics`;
//! - [`nginx`]: nginx-rtmp recording what the bridge pushes, and ffprobe/ffmpeg judging it; nginx
//!   as an HTTP proxy putting bridges behind one origin;
//! - [`inproc`]: the bridge in this process and the loadgen publisher pointed at it;
//! - [`tls`]: a test CA and the certificates it issues, for the bridge's HTTPS;
//! - [`redis`]: a Redis server of the test's own (Debian's `redis-server`, on loopback or inside
//!   a namespace), for clusters.

pub(crate) mod binary;
pub(crate) mod http;
pub(crate) mod inproc;
pub(crate) mod metrics;
pub(crate) mod netns;
pub(crate) mod nginx;
pub(crate) mod peers;
pub(crate) mod proc;
pub(crate) mod redis;
pub(crate) mod tls;
