//! The bridge in-process against the loadgen publisher (webrtc-rs as offerer, its own UDP socket)
//! over loopback: trickle, ICE, media counted, ICE restart, stale tags, every way a session ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bridge::{Bridge, Config};
use common::inproc::endpoint;
use common::metrics::Metrics;
use loadgen::{Publisher, PublisherConfig};

const CONNECT: Duration = Duration::from_secs(10);

async fn start(tweak: impl FnOnce(&mut Config)) -> Bridge {
    common::inproc::start_in_process(tweak).await
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_connect_media_delete() {
    let bridge = start(|_| {}).await;
    let publisher = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    wait_until("connected gauge", || {
        Metrics::of(&bridge).sum("bridge_sessions", &[("state", "connected")]) == 1.0
    })
    .await;
    let sent = publisher.send_media(Duration::from_secs(2)).await.unwrap();
    assert!(
        sent.video_packets > 60 && sent.audio_packets > 80,
        "{sent:?}"
    );
    wait_until("all packets counted", || {
        Metrics::of(&bridge).sum("bridge_rtp_packets_total", &[("kind", "video")]) as u64
            == sent.video_packets
            && Metrics::of(&bridge).sum("bridge_rtp_packets_total", &[("kind", "audio")]) as u64
                == sent.audio_packets
    })
    .await;
    assert_eq!(
        Metrics::of(&bridge).sum("bridge_keyframes_total", &[]) as u64,
        sent.keyframes
    );
    assert!(Metrics::of(&bridge).sum("bridge_rtp_bytes_total", &[("kind", "video")]) > 0.0);

    assert_eq!(publisher.delete().await.unwrap(), 200);
    assert_eq!(bridge.app().session_count(), 0);
    assert!(bridge.app().udp.is_empty(), "routes released");
    assert_eq!(
        Metrics::of(&bridge).sum("bridge_sessions", &[("state", "connected")]),
        0.0
    );
    assert_eq!(
        Metrics::of(&bridge).sum("bridge_sessions_ended_total", &[("reason", "delete")]),
        1.0
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_reconnects_and_late_patches_are_refused() {
    let bridge = start(|_| {}).await;
    let mut publisher = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    publisher
        .send_media(Duration::from_millis(500))
        .await
        .unwrap();
    let old_etag = publisher.etag().to_owned();
    let old_frag = publisher.local_sdpfrag();

    publisher.restart_ice().await.unwrap();
    assert_ne!(publisher.etag(), old_etag);
    publisher.wait_connected(CONNECT).await.unwrap();
    let before = Metrics::of(&bridge).sum("bridge_rtp_packets_total", &[("kind", "video")]);
    let sent = publisher.send_media(Duration::from_secs(1)).await.unwrap();
    wait_until("media after the restart", || {
        Metrics::of(&bridge).sum("bridge_rtp_packets_total", &[("kind", "video")])
            >= before + sent.video_packets as f64
    })
    .await;

    // A PATCH from before the restart (old tag, old credentials) arrives late: 412, no change.
    let (status, headers, _) = publisher
        .patch_raw(Some(&old_etag), old_frag)
        .await
        .unwrap();
    assert_eq!(status, 412);
    assert!(headers.get("etag").is_none());
    let (status, _, _) = publisher
        .patch_raw(Some(publisher.etag()), publisher.local_sdpfrag())
        .await
        .unwrap();
    assert_eq!(status, 204, "the new ICE session is intact");
    let sent = publisher
        .send_media(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(sent.write_errors == 0 && sent.video_packets > 0);
    assert_eq!(publisher.delete().await.unwrap(), 200);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_in_the_offer_without_trickle() {
    let bridge = start(|_| {}).await;
    let config = PublisherConfig {
        trickle: false,
        ..endpoint(&bridge, "cam")
    };
    let publisher = Publisher::connect(config).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    publisher
        .send_media(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        Metrics::of(&bridge).sum(
            "bridge_http_requests_total",
            &[("method", "PATCH"), ("status", "204")]
        ),
        0.0
    );
    assert_eq!(publisher.delete().await.unwrap(), 200);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_on_dtls_close_takeover_and_timeout() {
    // Connect timeout longer than consent: an unconnected session must last the former.
    let bridge = start(|c| {
        c.connect_timeout_secs = 3;
        c.consent_timeout_secs = 2;
    })
    .await;

    // The publisher goes away without DELETE: its DTLS close ends the session.
    let publisher = Publisher::connect(endpoint(&bridge, "a")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    drop(publisher);
    wait_until("session closed by the peer", || {
        bridge.app().session_count() == 0
    })
    .await;

    // The publisher vanishes (crash, dead network): consent freshness ends the session.
    let publisher = Publisher::connect(endpoint(&bridge, "v")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    publisher.vanish().await;
    wait_until("consent timeout", || bridge.app().session_count() == 0).await;
    let ended = Metrics::of(&bridge).sum(
        "bridge_sessions_ended_total",
        &[("reason", "consent_timeout")],
    ) + Metrics::of(&bridge)
        .sum("bridge_sessions_ended_total", &[("reason", "ice_failed")]);
    assert_eq!(ended, 1.0, "{}", bridge.app().metrics.render());

    // A second publisher on the same stream takes over; the first one's URL is gone.
    let first = Publisher::connect(endpoint(&bridge, "b")).await.unwrap();
    first.wait_connected(CONNECT).await.unwrap();
    let second = Publisher::connect(endpoint(&bridge, "b")).await.unwrap();
    second.wait_connected(CONNECT).await.unwrap();
    assert_eq!(first.delete().await.unwrap(), 404);
    assert_eq!(
        Metrics::of(&bridge).sum("bridge_sessions_ended_total", &[("reason", "takeover")]),
        1.0
    );
    assert_eq!(second.delete().await.unwrap(), 200);

    // An offer whose publisher never shows up ends after the connect timeout.
    let offer = include_str!("data/ffmpeg9-whip-offer.sdp");
    let client = std::net::TcpStream::connect(bridge.http_addr()).unwrap();
    drop(client);
    let app = bridge.app().clone();
    app.create_session("c", "127.0.0.1".parse().unwrap(), offer.as_bytes())
        .unwrap();
    assert_eq!(app.session_count(), 1);
    wait_until("connect timeout", || app.session_count() == 0).await;
    assert_eq!(
        Metrics::of(&bridge).sum(
            "bridge_sessions_ended_total",
            &[("reason", "connect_timeout")]
        ),
        1.0
    );
    assert!(bridge.app().udp.is_empty());
    bridge.shutdown().await;
}

/// `loadgen publish` measures the bridge through its standard process metrics (`/metrics` at
/// the WHIP URL's origin, the default). In process, the CPU is the bridge's and the
/// publisher's together: this checks the plumbing, not the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_publish_reports_the_server_cpu_per_packet() {
    let bridge = start(|_| {}).await;
    let url = format!("http://{}/whip/srv", bridge.http_addr());
    let args = loadgen::publish::PublishArgs::new(url, 1, Duration::from_secs(3));
    let report = loadgen::publish::run(&args).await.unwrap();
    assert_eq!(report.sessions.ok, 1, "{}", report.table());
    let server = report.server.clone().expect("server measured");
    assert_eq!(server.error, None, "{}", report.table());
    assert_eq!(server.url, format!("http://{}/metrics", bridge.http_addr()));
    assert_eq!(server.publishers, 1);
    assert!(server.window_s > 0.5, "{server:?}");
    assert!(server.rss_bytes > 0.0, "{server:?}");
    assert!(server.rtp_packets.is_some_and(|p| p > 0.0), "{server:?}");
    assert!(server.cpu_ms_per_s_per_publisher.is_some(), "{server:?}");
    assert!(server.us_per_packet.is_some(), "{server:?}");
    assert!(server.rss_bytes_per_session.is_some(), "{server:?}");
    assert!(
        report.table().contains("CPU per publisher"),
        "{}",
        report.table()
    );
    bridge.shutdown().await;
}

/// Graceful drain: new publishers are refused (503 with Retry-After, `/readyz` 503, `/healthz`
/// still 200) while a live one goes on; the drain returns as soon as the last session ended, or
/// at its timeout with the rest left for `shutdown` to end cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_sessions_and_waits_for_live_ones() {
    let bridge = start(|_| {}).await;
    let live = Publisher::connect(endpoint(&bridge, "live")).await.unwrap();
    live.wait_connected(CONNECT).await.unwrap();

    // A drain that times out: the session is still there after it.
    let started = tokio::time::Instant::now();
    bridge.drain(Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(bridge.app().session_count(), 1);
    assert!(bridge.app().is_draining());
    match Publisher::connect(endpoint(&bridge, "late")).await {
        Err(err) => assert_eq!(err.status(), Some(503), "{err}"),
        Ok(_) => panic!("a publisher admitted while draining"),
    }
    let http = bridge.http_addr();
    let status = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .unwrap()
    };
    assert_eq!(status("/readyz").await, 503);
    assert_eq!(status("/healthz").await, 200);

    // A drain that ends with the last session.
    let draining = {
        let started = tokio::time::Instant::now();
        let delete = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(live.delete().await.unwrap(), 200);
        };
        let ((), ()) = tokio::join!(bridge.drain(Duration::from_secs(20)), delete);
        started.elapsed()
    };
    assert!(draining < Duration::from_secs(5), "{draining:?}");
    assert_eq!(bridge.app().session_count(), 0);
    bridge.shutdown().await;
}
