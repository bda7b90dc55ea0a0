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

/// Waits (30 s at most) until `bridge` holds no session: every one was DELETEd and released.
pub(crate) async fn wait_released(bridge: &bridge::Bridge, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bridge.app().session_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} sessions left",
            bridge.app().session_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The bridge's state and router in this process, with no HTTP socket (tests call the router
/// with `oneshot`; requests come from 127.0.0.1:40000) and a real UDP mux on a free loopback
/// port that nothing connects to; `tweak` adjusts the configuration.
pub(crate) async fn router_in_process(
    tweak: impl FnOnce(&mut bridge::Config),
) -> (std::sync::Arc<bridge::app::App>, axum::Router) {
    let mut config = bridge::Config {
        udp: "127.0.0.1:0".parse().unwrap(),
        ..bridge::Config::default()
    };
    tweak(&mut config);
    let metrics = std::sync::Arc::new(bridge::metrics::Metrics::default());
    let udp = bridge::rtc::udp::UdpMux::bind(config.udp, config.udp_recv_buffer, metrics.clone())
        .await
        .unwrap();
    let app = bridge::app::App::new(config.into_settings().unwrap(), metrics, udp).unwrap();
    let router =
        bridge::http::router(app.clone()).layer(axum::extract::connect_info::MockConnectInfo(
            std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        ));
    (app, router)
}

/// The publisher's configuration for `stream` on `bridge`, trickling its candidates.
pub(crate) fn endpoint(bridge: &bridge::Bridge, stream: &str) -> loadgen::PublisherConfig {
    loadgen::PublisherConfig {
        trickle: true,
        ..loadgen::PublisherConfig::new(format!("http://{}/whip/{stream}", bridge.http_addr()))
    }
}

/// `loadgen signal` with these arguments, its table printed; the report, once it is known to
/// hold no violation of the WHIP rules.
pub(crate) async fn signal_without_violations(args: &[&str]) -> loadgen::report::Report {
    let args = loadgen::signal::parse_args(args.iter().map(|s| (*s).to_owned())).unwrap();
    let report = loadgen::signal::run(&args).await.unwrap().report;
    print!("{}", report.table());
    assert_eq!(
        report.violations.total, 0,
        "{:?}",
        report.violation_examples
    );
    report
}
