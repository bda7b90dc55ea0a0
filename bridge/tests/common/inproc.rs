//! The bridge in this process, and the loadgen publisher pointed at it.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use super::proc::unique;

/// The bridge in this process on free loopback ports, its HLS files in a temp folder; `tweak`
/// adjusts the configuration. `RUST_LOG=bridge=debug` shows the bridge's side of a failing test.
pub(crate) async fn start_in_process(tweak: impl FnOnce(&mut bridge::Config)) -> bridge::Bridge {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut config = bridge::Config {
        http: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        // HLS is on by default: keep its files out of the source tree.
        hls_dir: std::env::temp_dir().join(unique()),
        ..bridge::Config::default()
    };
    tweak(&mut config);
    bridge::Bridge::start(config).await.unwrap()
}

/// The publisher's configuration for `stream` on `bridge`, trickling its candidates.
pub(crate) fn endpoint(bridge: &bridge::Bridge, stream: &str) -> loadgen::PublisherConfig {
    loadgen::PublisherConfig {
        trickle: true,
        ..loadgen::PublisherConfig::new(format!("http://{}/whip/{stream}", bridge.http_addr()))
    }
}
