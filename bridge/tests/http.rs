//! The HTTP mapping of every WHIP rule, through `oneshot` (no HTTP socket; the UDP mux is real
//! but nothing connects).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use bridge::app::App;
use bridge::config::EtagMode;
use bridge::config::{Config, IceServer, OnConflict};
use http_body_util::BodyExt;
use tower::ServiceExt;

const OFFER: &str = include_str!("data/ffmpeg9-whip-offer.sdp");
const OFFER_UFRAG: &str = "00ba2d04";
const OFFER_PWD: &str = "e0ec4f9d5d3147fee5fd4ed5c48c8664";

struct Harness {
    app: Arc<App>,
    router: Router,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    let (app, router) = common::inproc::router_in_process(tweak).await;
    Harness { app, router }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer = Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        };
        // Every answer, error or not, carries CORS.
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        let expose = answer.header("access-control-expose-headers").unwrap();
        for name in ["Location", "ETag", "Link"] {
            assert!(expose.contains(name), "{expose}");
        }
        if !status.is_success() {
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
            let problem: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(problem["status"], status.as_u16());
        }
        answer
    }

    async fn post(&self, stream: &str, content_type: &str, body: impl Into<Body>) -> Answer {
        self.send(
            Request::post(format!("/whip/{stream}"))
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    async fn publish(&self, stream: &str) -> (String, String) {
        let answer = self.post(stream, "application/sdp", OFFER).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        (
            answer.header("location").unwrap().to_owned(),
            answer.header("etag").unwrap().to_owned(),
        )
    }

    async fn patch(&self, url: &str, if_match: Option<&str>, body: String) -> Answer {
        let mut request =
            Request::patch(url).header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag");
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn simple(&self, method: &str, url: &str) -> Answer {
        self.send(
            Request::builder()
                .method(method)
                .uri(url)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

fn frag(ufrag: &str, pwd: &str, ports: &[u16]) -> String {
    let mut body = format!(
        "a=ice-options:trickle\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
    );
    for port in ports {
        body += &format!("a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host\r\n");
    }
    body
}

#[tokio::test]
async fn post_creates_a_session_with_everything_rfc9725_asks_for() {
    let h = harness(|c| {
        c.ice_server = vec![
            "stun:stun.example.net".parse().unwrap(),
            IceServer {
                url: "turn:turn.example.net".into(),
                username: Some("user".into()),
                credential: Some("pass".into()),
            },
        ];
    })
    .await;
    let answer = h.post("demo", "application/sdp", OFFER).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("content-type"), Some("application/sdp"));
    let location = answer.header("location").unwrap();
    let id = location.strip_prefix("/whip/demo/").unwrap();
    assert_eq!(id.len(), 32, "128 random bits in hex");
    let etag = answer.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
        "{etag}"
    );
    let links: Vec<_> = answer
        .headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0], "<stun:stun.example.net>; rel=\"ice-server\"");
    assert!(links[1].contains("username=\"user\"") && links[1].contains("credential=\"pass\""));
    let sdp = &answer.body;
    assert!(sdp.contains("a=recvonly"), "{sdp}");
    assert!(!sdp.contains("a=sendrecv"));
    // ffmpeg offers setup:passive, so the bridge must be the DTLS client.
    assert!(sdp.contains("a=setup:active"), "{sdp}");
    assert!(sdp.contains("a=end-of-candidates"));
    let candidates: Vec<_> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(!candidates.is_empty());
    let port = h.app.udp.local_addr().port().to_string();
    for c in &candidates {
        assert!(
            c.contains(&format!("127.0.0.1 {port} typ host")),
            "only the bind address: {c}"
        );
    }
    assert!(sdp.contains("H264") && sdp.contains("opus"));
    assert!(!sdp.contains("VP8"));
    assert_eq!(h.app.session_count(), 1);
}

#[tokio::test]
async fn actpass_offers_get_setup_passive() {
    let h = harness(|_| {}).await;
    let answer = h
        .post(
            "demo",
            "application/sdp",
            OFFER.replace("a=setup:passive", "a=setup:actpass"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert!(answer.body.contains("a=setup:passive"), "{}", answer.body);
}

#[tokio::test]
async fn bad_posts_are_refused_with_the_right_code() {
    let h = harness(|_| {}).await;
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("demo", "text/plain", OFFER.into(), 415),
        ("demo", "application/sdp", "v=0\r\nnonsense".into(), 400),
        (
            "demo",
            "application/sdp",
            OFFER.replace("a=sendonly", "a=recvonly"),
            422,
        ),
        (
            "demo",
            "application/sdp",
            OFFER.replace("H264/90000", "VP8/90000"),
            422,
        ),
        (
            "demo",
            "application/sdp",
            OFFER.replace("a=group:BUNDLE 0 1", "a=x-no-group"),
            422,
        ),
        ("demo", "application/sdp", "x".repeat(65 * 1024), 413),
        ("..", "application/sdp", OFFER.into(), 400),
    ];
    for (stream, content_type, body, status) in cases {
        let answer = h.post(stream, content_type, body).await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{stream} {content_type} {}",
            answer.body
        );
    }
    assert_eq!(h.app.session_count(), 0, "nothing half-created");
}

/// Offers that pass the bridge's own checks but that the WebRTC stack refuses to take or
/// answer (found by `tests/hostile.rs`, where they were 500s): each a 422 that says why.
#[tokio::test]
async fn offers_the_webrtc_stack_refuses_are_422_with_the_reason() {
    let h = harness(|_| {}).await;
    let fingerprint = "A2:62:B6:12:C0:FE:A2:45:4C:AB:26:C6:E8:08:12:00:7A:E8:F1:97:4A:2D:0F:95:DD:42:AC:BF:B5:9F:64:A9";
    let video_section = OFFER.find("m=video").unwrap();
    let (audio, video) = OFFER.split_at(video_section);
    let cases: [(&str, String, &str); 5] = [
        (
            "each section its own fingerprint",
            format!(
                "{audio}{}",
                video.replace(fingerprint, &fingerprint.replace("A2", "B3"))
            ),
            "conflicting fingerprint",
        ),
        (
            "an extmap without its URI",
            OFFER.replace(
                "a=sendonly\r\na=msid:FFmpeg video",
                "a=sendonly\r\na=extmap:4\r\na=msid:FFmpeg video",
            ),
            "extmap",
        ),
        (
            "an RTX format whose apt names no format",
            OFFER.replace("a=fmtp:105 apt=106", "a=fmtp:105 apt="),
            "parse int",
        ),
        (
            "a payload type listed with no rtpmap",
            OFFER.replace("SAVPF 111", "SAVPF 111 13"),
            "payload type",
        ),
        (
            "a candidate of no known type",
            OFFER.replace(
                "a=rtpmap:111 opus/48000/2",
                "a=rtpmap:111 opus/48000/2\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ hos",
            ),
            "CandidateType",
        ),
    ];
    for (what, offer, reason) in cases {
        let answer = h.post("demo", "application/sdp", offer).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            answer.body
        );
        assert!(answer.body.contains(reason), "{what}: {}", answer.body);
    }
    assert_eq!(h.app.session_count(), 0, "nothing half-created");
}

/// Admission control: with one set-up slot and no time to wait for it, POSTs that come while
/// one is being set up are refused at once with 503 and Retry-After (counted), never queued;
/// once the slot is free, a POST is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_beyond_the_setup_slots_get_503_with_retry_after() {
    let h = harness(|c| {
        c.setup_concurrency = 1;
        c.setup_queue_ms = 0;
    })
    .await;
    let h = Arc::new(h);
    let posts: Vec<_> = (0..16)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.post(&format!("s{i}"), "application/sdp", OFFER).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for post in posts {
        let answer = post.await.unwrap();
        match answer.status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                // 1 s, unless these POSTs spanned more than a second of refusing more than
                // was set up (a slow machine): then more (`RetryPacer`).
                let secs = answer
                    .header("retry-after")
                    .and_then(|s| s.parse::<u64>().ok());
                assert!(secs.is_some_and(|s| s >= 1), "{}", answer.body);
                refused += 1;
            }
            other => panic!("{other}: {}", answer.body),
        }
    }
    assert!(
        created >= 1 && refused >= 1,
        "{created} created, {refused} refused"
    );
    let metrics = h.app.metrics.render();
    assert!(
        metrics.contains(&format!("bridge_setups_refused_total {refused}")),
        "{metrics}"
    );
    assert_eq!(h.app.session_count(), created);
    h.publish("after").await;
}

/// `POST /admin/drain` is behind the token (or, without one, for this host only); once it is
/// in, POSTs get 503 with Retry-After and `/readyz` 503, while `/healthz` stays 200.
#[tokio::test]
async fn admin_drain_needs_the_token_and_stops_admitting() {
    let open = harness(|_| {}).await;
    let from_afar = bridge::http::router(open.app.clone())
        .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    let request = Request::post("/admin/drain").body(Body::empty()).unwrap();
    let refused = from_afar.oneshot(request).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "no token: this host only"
    );
    assert!(!open.app.is_draining());

    let h = harness(|c| c.token = Some("s3cret".into())).await;
    assert_eq!(h.simple("GET", "/readyz").await.status, StatusCode::OK);
    let without = h.simple("POST", "/admin/drain").await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let with = h
        .send(
            Request::post("/admin/drain")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(with.status, StatusCode::OK);
    assert!(h.app.is_draining());
    let post = h
        .send(
            Request::post("/whip/demo")
                .header(header::CONTENT_TYPE, "application/sdp")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::from(OFFER))
                .unwrap(),
        )
        .await;
    assert_eq!(
        post.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        post.body
    );
    assert_eq!(post.header("retry-after"), Some("5"));
    assert_eq!(
        h.simple("GET", "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.simple("GET", "/healthz").await.status, StatusCode::OK);
}

/// A saturated process (its event loop late beyond `--max-loop-lag-ms`) refuses new sessions
/// with 503 and Retry-After, counted; below it, or with the check off, it admits them.
#[tokio::test]
async fn a_saturated_bridge_refuses_new_sessions() {
    let h = harness(|c| c.max_loop_lag_ms = 200).await;
    h.app.set_loop_lag(std::time::Duration::from_millis(300));
    let refused = h.post("busy", "application/sdp", OFFER).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        h.app
            .metrics
            .render()
            .contains("bridge_saturated_refused_total 1")
    );
    h.app.set_loop_lag(std::time::Duration::from_millis(100));
    h.publish("calm").await;

    let off = harness(|c| c.max_loop_lag_ms = 0).await;
    off.app.set_loop_lag(std::time::Duration::from_secs(5));
    off.publish("anyway").await;
}

#[tokio::test]
async fn patch_trickle_restart_and_stale_tags() {
    let h = harness(|_| {}).await;
    let (url, etag) = h.publish("demo").await;

    // Trickle with the current tag: 204, no ETag. Duplicates are harmless.
    for _ in 0..2 {
        let a = h
            .patch(&url, Some(&etag), frag(OFFER_UFRAG, OFFER_PWD, &[50000]))
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert_eq!(a.header("etag"), None);
    }
    let a = h
        .patch(&url, None, frag(OFFER_UFRAG, OFFER_PWD, &[50001]))
        .await;
    assert_eq!(a.status.as_u16(), 428);
    let a = h
        .patch(
            &url,
            Some("\"nope\""),
            frag(OFFER_UFRAG, OFFER_PWD, &[50001]),
        )
        .await;
    assert_eq!(a.status.as_u16(), 412);
    let a = h.patch(&url, Some(&etag), "garbage line".into()).await;
    assert_eq!(a.status.as_u16(), 400);
    let a = h
        .send(
            Request::patch(&url)
                .header(header::CONTENT_TYPE, "application/sdp")
                .header(header::IF_MATCH, &etag)
                .body(Body::from(frag(OFFER_UFRAG, OFFER_PWD, &[])))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status.as_u16(), 415);

    // ICE restart: new credentials need If-Match: *.
    let restart = frag("newufrag", "newpassword0123456789012", &[50002]);
    let a = h.patch(&url, Some(&etag), restart.clone()).await;
    assert_eq!(a.status.as_u16(), 412, "a restart with a specific tag");
    let a = h.patch(&url, None, restart.clone()).await;
    assert_eq!(a.status.as_u16(), 428);
    let a = h.patch(&url, Some("*"), restart).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    let new_etag = a.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert!(a.body.contains("a=ice-ufrag:") && a.body.contains("a=ice-pwd:"));
    // One host candidate, once, component 1 only: WHIPClient breaks on a component-2 line.
    let candidates: Vec<_> = a
        .body
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert_eq!(candidates.len(), 1, "{}", a.body);
    assert_eq!(candidates[0].split(' ').nth(1), Some("1"), "{}", a.body);

    // A late PATCH from before the restart: 412, and it changes nothing.
    let a = h
        .patch(&url, Some(&etag), frag(OFFER_UFRAG, OFFER_PWD, &[50003]))
        .await;
    assert_eq!(a.status.as_u16(), 412);
    let a = h
        .patch(
            &url,
            Some(&new_etag),
            frag("newufrag", "newpassword0123456789012", &[50004]),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::NO_CONTENT,
        "the new ICE session is intact"
    );

    // DELETE ignores If-Match, then everything 404s.
    let a = h
        .send(
            Request::delete(&url)
                .header(header::IF_MATCH, "\"whatever\"")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    for method in ["GET", "DELETE", "OPTIONS"] {
        assert_eq!(
            h.simple(method, &url).await.status.as_u16(),
            404,
            "{method}"
        );
    }
    let a = h
        .patch(
            &url,
            Some(&new_etag),
            frag("newufrag", "newpassword0123456789012", &[]),
        )
        .await;
    assert_eq!(a.status.as_u16(), 404);
    assert_eq!(h.app.session_count(), 0);
    assert!(h.app.udp.is_empty(), "UDP routes released");
}

#[tokio::test]
async fn lenient_mode_accepts_trickle_without_if_match() {
    let h = harness(|c| c.etag = EtagMode::Lenient).await;
    let (url, _) = h.publish("demo").await;
    let a = h
        .patch(&url, None, frag(OFFER_UFRAG, OFFER_PWD, &[50000]))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .patch(&url, Some("*"), frag(OFFER_UFRAG, OFFER_PWD, &[50001]))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .patch(
            &url,
            Some("\"stale\""),
            frag(OFFER_UFRAG, OFFER_PWD, &[50001]),
        )
        .await;
    assert_eq!(a.status.as_u16(), 412, "a wrong tag is still wrong");
}

#[tokio::test]
async fn options_get_and_unknown_sessions() {
    let h = harness(|c| c.ice_server = vec!["stun:stun.example.net".parse().unwrap()]).await;
    let a = h.simple("OPTIONS", "/whip/demo").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.header("accept-post"), Some("application/sdp"));
    assert!(
        a.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        a.header("link").is_none(),
        "no ice-server Links on a preflight"
    );
    assert_eq!(
        h.simple("GET", "/whip/demo").await.status,
        StatusCode::NO_CONTENT
    );
    let (url, _) = h.publish("demo").await;
    assert_eq!(h.simple("GET", &url).await.status, StatusCode::NO_CONTENT);
    let a = h.simple("OPTIONS", &url).await;
    assert!(
        a.header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );
    let a = h
        .patch(
            "/whip/demo/00000000000000000000000000000000",
            Some("*"),
            String::new(),
        )
        .await;
    assert_eq!(a.status.as_u16(), 404);
    let wrong_stream = url.replace("/whip/demo/", "/whip/other/");
    assert_eq!(h.simple("DELETE", &wrong_stream).await.status.as_u16(), 404);
}

#[tokio::test]
async fn auth_takes_the_token_with_or_without_bearer() {
    let h = harness(|c| c.token = Some("s3cret".into())).await;
    let a = h.post("demo", "application/sdp", OFFER).await;
    assert_eq!(a.status.as_u16(), 401);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    for value in ["Bearer wrong", "s3cre", ""] {
        let a = h
            .send(
                Request::post("/whip/demo")
                    .header(header::CONTENT_TYPE, "application/sdp")
                    .header(header::AUTHORIZATION, value)
                    .body(Body::from(OFFER))
                    .unwrap(),
            )
            .await;
        assert_eq!(a.status.as_u16(), 401, "{value}");
    }
    for value in ["Bearer s3cret", "s3cret"] {
        let a = h
            .send(
                Request::post(format!("/whip/s{}", value.len()))
                    .header(header::CONTENT_TYPE, "application/sdp")
                    .header(header::AUTHORIZATION, value)
                    .body(Body::from(OFFER))
                    .unwrap(),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{value}");
    }
    // Preflights pass without a token.
    assert_eq!(
        h.simple("OPTIONS", "/whip/demo").await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn takeover_refuse_limits() {
    let h = harness(|_| {}).await;
    let (first, _) = h.publish("demo").await;
    let (second, _) = h.publish("demo").await;
    assert_eq!(
        h.simple("GET", &first).await.status.as_u16(),
        404,
        "taken over"
    );
    assert_eq!(
        h.simple("GET", &second).await.status,
        StatusCode::NO_CONTENT
    );

    let h = harness(|c| c.on_conflict = OnConflict::Refuse).await;
    h.publish("demo").await;
    assert_eq!(
        h.post("demo", "application/sdp", OFFER)
            .await
            .status
            .as_u16(),
        409
    );

    let h = harness(|c| c.max_sessions = 1).await;
    h.publish("a").await;
    let a = h.post("b", "application/sdp", OFFER).await;
    assert_eq!(a.status.as_u16(), 503);
    assert!(a.header("retry-after").is_some());

    let h = harness(|c| c.post_rate_per_ip = 2).await;
    h.publish("a").await;
    h.publish("b").await;
    let a = h.post("c", "application/sdp", OFFER).await;
    assert_eq!(a.status.as_u16(), 429);
    assert_eq!(a.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn metrics_and_health() {
    let h = harness(|_| {}).await;
    h.publish("demo").await;
    let a = h.simple("GET", "/healthz").await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.simple("GET", "/metrics").await;
    assert!(
        a.body.contains("bridge_sessions{state=\"connecting\"} 1"),
        "{}",
        a.body
    );
    assert!(
        a.body
            .contains("bridge_http_requests_total{method=\"POST\",status=\"201\"} 1")
    );
    assert!(
        a.body.contains("bridge_rtp_packets_total")
            || a.body.contains("# TYPE bridge_rtp_packets counter")
    );
}

/// One DTLS certificate per process: every answer carries the same fingerprint.
#[tokio::test]
async fn every_session_presents_the_process_certificate() {
    let h = harness(|_| {}).await;
    let fingerprint = |answer: &Answer| {
        answer
            .body
            .lines()
            .find(|l| l.starts_with("a=fingerprint:sha-256 "))
            .unwrap_or_else(|| panic!("no fingerprint in {}", answer.body))
            .to_owned()
    };
    let a = h.post("one", "application/sdp", OFFER).await;
    let b = h.post("two", "application/sdp", OFFER).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(fingerprint(&a), fingerprint(&b));
}
