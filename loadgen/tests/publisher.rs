//! The publisher against an in-process WHIP server built on the same rtc crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mock_whip;

use std::time::Duration;

use loadgen::{Publisher, PublisherConfig};
use mock_whip::MockWhip;

const CONNECT: Duration = Duration::from_secs(10);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Waits until the server has seen `want` RTP packets (or gives up after 2 s).
async fn server_rtp(server: &MockWhip, url: &str, want: u64) -> u64 {
    let mut got = 0;
    for _ in 0..40 {
        got = server.rx(url).map_or(0, |rx| rx.rtp_packets);
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_in_offer_connect_send_delete() {
    init_tracing();
    let server = MockWhip::start().await;
    let p = Publisher::connect(PublisherConfig {
        token: Some("secret".into()),
        ..PublisherConfig::new(server.endpoint("demo"))
    })
    .await
    .unwrap();
    assert!(
        p.session_url()
            .starts_with(&format!("http://{}/whip/session/", server.addr))
    );
    assert!(p.etag().starts_with('"'));
    assert!(p.post_headers().contains_key("link"));
    p.wait_connected(CONNECT).await.unwrap();

    let sent = p.send_media(Duration::from_millis(2100)).await.unwrap();
    assert_eq!(sent.write_errors, 0, "{sent:?}");
    assert!((100..=110).contains(&sent.audio_packets), "{sent:?}");
    assert!((63..=64).contains(&sent.video_frames), "{sent:?}");
    assert_eq!(sent.keyframes, 3, "{sent:?}");
    // IDRs of >= 3 KB need FU-A: more packets than frames.
    assert!(sent.video_packets > sent.video_frames + 3 * 2, "{sent:?}");

    let total = sent.audio_packets + sent.video_packets;
    let got = server_rtp(&server, p.session_url(), total).await;
    assert_eq!(got, total, "server received {got} of {total} RTP packets");
    let rx = server.rx(p.session_url()).unwrap();
    assert_eq!(
        rx.rtp_by_payload_type.get(&111).copied(),
        Some(sent.audio_packets)
    );
    assert_eq!(
        rx.rtp_by_payload_type.get(&102).copied(),
        Some(sent.video_packets)
    );
    // The server's receiver reports come back.
    assert!(p.rx_stats().rtcp_datagrams > 0, "{:?}", p.rx_stats());
    assert!(rx.rtcp_datagrams > 0, "no sender reports: {rx:?}");

    let log = server.log();
    let post = &log[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.content_type.as_deref(), Some("application/sdp"));
    assert_eq!(post.authorization.as_deref(), Some("Bearer secret"));
    assert!(post.body.contains("a=candidate:"), "{}", post.body);
    assert!(post.body.contains("a=sendonly"), "{}", post.body);
    assert!(post.body.contains("a=group:BUNDLE 0 1"), "{}", post.body);
    assert!(post.body.contains("a=rtcp-mux"), "{}", post.body);
    assert!(post.body.contains("packetization-mode=1"), "{}", post.body);
    assert!(!post.body.contains(".local"), "{}", post.body);
    // Only the bound address is advertised.
    let addr = p.local_addr();
    for line in post.body.lines().filter(|l| l.starts_with("a=candidate:")) {
        assert!(
            line.contains(&format!(" {} {} typ host", addr.ip(), addr.port())),
            "{line}"
        );
    }
    assert!(log.iter().all(|l| l.method != "PATCH"));

    let url = p.session_url().to_owned();
    assert_eq!(p.delete().await.unwrap(), 200);
    assert!(server.rx(&url).is_none());
    assert_eq!(
        server.log().last().unwrap().authorization.as_deref(),
        Some("Bearer secret")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_patches_candidates_with_etag() {
    init_tracing();
    let server = MockWhip::start().await;
    let p = Publisher::connect(PublisherConfig {
        trickle: true,
        ..PublisherConfig::new(server.endpoint("demo"))
    })
    .await
    .unwrap();
    let log = server.log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(!log[0].body.contains("a=candidate:"), "{}", log[0].body);
    assert!(log[0].authorization.is_none());
    let patch = &log[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.status, 204);
    assert_eq!(patch.if_match.as_deref(), Some(p.etag()));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/trickle-ice-sdpfrag")
    );
    assert_eq!(patch.body, p.local_sdpfrag());
    assert!(patch.body.starts_with("a=ice-options:trickle\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:"), "{}", patch.body);
    assert!(
        patch.body.ends_with("typ host\r\na=end-of-candidates\r\n"),
        "{}",
        patch.body
    );

    p.wait_connected(CONNECT).await.unwrap();
    let sent = p.send_media(Duration::from_millis(500)).await.unwrap();
    assert!(sent.keyframes >= 1);
    let total = sent.audio_packets + sent.video_packets;
    assert_eq!(server_rtp(&server, p.session_url(), total).await, total);

    // A stale or missing tag is refused by a strict server; patch_raw reports it.
    let (status, _, _) = p
        .patch_raw(Some("\"stale\""), p.local_sdpfrag())
        .await
        .unwrap();
    assert_eq!(status, 412);
    let (status, _, _) = p.patch_raw(None, p.local_sdpfrag()).await.unwrap();
    assert_eq!(status, 428);
    assert_eq!(p.delete().await.unwrap(), 200);
}

async fn restart_roundtrip(trickle: bool) {
    init_tracing();
    let server = MockWhip::start().await;
    let mut p = Publisher::connect(PublisherConfig {
        trickle,
        ..PublisherConfig::new(server.endpoint("demo"))
    })
    .await
    .unwrap();
    p.wait_connected(CONNECT).await.unwrap();
    let first = p.send_media(Duration::from_millis(500)).await.unwrap();
    let first_total = first.audio_packets + first.video_packets;
    assert_eq!(
        server_rtp(&server, p.session_url(), first_total).await,
        first_total
    );

    let old_etag = p.etag().to_owned();
    let old_frag = p.local_sdpfrag();
    let old_creds = p.local_credentials().cloned().unwrap();
    let before = server.log().len();
    p.restart_ice().await.unwrap();
    assert_ne!(p.etag(), old_etag);
    assert_ne!(p.local_credentials().cloned().unwrap(), old_creds);

    let log = server.log();
    let restart = &log[before];
    assert_eq!(restart.method, "PATCH");
    assert_eq!(restart.if_match.as_deref(), Some("*"));
    assert_eq!(restart.status, 200);
    assert_eq!(
        restart.body.contains("a=candidate:"),
        !trickle,
        "{}",
        restart.body
    );
    if trickle {
        let again = &log[before + 1];
        assert_eq!(again.if_match.as_deref(), Some(p.etag()));
        assert_eq!(again.status, 204);
        assert!(again.body.contains("a=candidate:"));
    } else {
        assert_eq!(log.len(), before + 1);
    }

    p.wait_connected(CONNECT).await.unwrap();
    let second = p.send_media(Duration::from_millis(700)).await.unwrap();
    assert_eq!(second.write_errors, 0, "{second:?}");
    let total = first_total + second.audio_packets + second.video_packets;
    let got = server_rtp(&server, p.session_url(), total).await;
    assert_eq!(got, total, "after restart: {got} of {total}");

    // A PATCH carrying the pre-restart credentials now looks like another restart with a stale
    // tag to a strict server: refused, and the session keeps working.
    let (status, _, _) = p.patch_raw(Some(&old_etag), old_frag).await.unwrap();
    assert_eq!(status, 412);
    p.wait_connected(CONNECT).await.unwrap();

    // And a second restart works as well.
    p.restart_ice().await.unwrap();
    p.wait_connected(CONNECT).await.unwrap();
    let third = p.send_media(Duration::from_millis(300)).await.unwrap();
    let total = total + third.audio_packets + third.video_packets;
    assert_eq!(server_rtp(&server, p.session_url(), total).await, total);
    assert_eq!(p.delete().await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_candidates_in_offer() {
    restart_roundtrip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_trickle() {
    restart_roundtrip(true).await;
}

#[tokio::test]
async fn http_errors_carry_status_and_body() {
    let server = MockWhip::start().await;
    let err = Publisher::connect(PublisherConfig::new(format!("http://{}/nope", server.addr)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    let err = Publisher::connect(PublisherConfig {
        bind_ip: "0.0.0.0".parse().unwrap(),
        ..PublisherConfig::new(server.endpoint("x"))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, loadgen::Error::Config(_)), "{err}");
}

/// Three layers the OBS way into an rtc answerer: rtc binds each layer's unsignalled SSRC by
/// the mid and rid header extensions, and drops packets it cannot bind, so every video packet
/// arriving means every layer was bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_are_bound_by_rid() {
    init_tracing();
    let server = MockWhip::start().await;
    let p = Publisher::connect(PublisherConfig {
        simulcast: 3,
        ..PublisherConfig::new(server.endpoint("demo"))
    })
    .await
    .unwrap();
    p.wait_connected(CONNECT).await.unwrap();
    let sent = p.send_media(Duration::from_millis(1100)).await.unwrap();
    assert_eq!(sent.write_errors, 0, "{sent:?}");
    assert!((33..=34).contains(&sent.video_frames), "{sent:?}");
    assert_eq!(sent.keyframes, 2, "{sent:?}");
    // Every layer sent, the full size most.
    let [top, mid, low] = sent.layer_packets;
    assert!(top > mid && mid > low && low > 0, "{sent:?}");
    assert_eq!(top + mid + low, sent.video_packets);

    let total = sent.audio_packets + sent.video_packets;
    let got = server_rtp(&server, p.session_url(), total).await;
    assert_eq!(got, total, "server received {got} of {total} RTP packets");
    let offer = &server.log()[0].body;
    assert!(offer.contains("a=simulcast:send 0;1;2"), "{offer}");
    p.delete().await.unwrap();
}
