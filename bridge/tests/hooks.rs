//! Event webhooks against real HTTP servers on loopback: the bridge in this process, the loadgen
//! publisher sending real media, loadgen's RTMP ingest taking the push, and three hooks at once:
//! one that answers 200 (it must see every event in order with the right fields), one that
//! accepts connections and never answers, and one that answers 500. Neither bad hook may delay
//! the publish, its media or the good hook.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bridge::config::{AudioMode, RtmpTarget};
use common::inproc::{endpoint, start_in_process};
use common::metrics::Metrics;
use loadgen::Publisher;
use loadgen::publish::ingest::{IngestEvent, RtmpIngest};
use serde_json::Value;

/// What the hanging hook makes the bridge wait per try.
const HOOK_TIMEOUT: Duration = Duration::from_secs(2);

type Received = Arc<Mutex<Vec<Value>>>;

/// A hook that records every JSON body it gets, in arrival order, and answers `status`.
async fn hook(status: StatusCode) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let record = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let event = serde_json::from_slice(&body).expect("a JSON body");
            record.lock().unwrap().push(event);
            status
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

/// A hook that accepts every connection and never reads or answers; how many it accepted.
async fn hanging_hook() -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            held.push(conn);
        }
    });
    (format!("http://{addr}/hook"), accepted)
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits (bounded) until `done` holds.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_arrive_in_order_and_bad_hooks_delay_nothing() {
    let (hanging_url, hanging_accepted) = hanging_hook().await;
    let (failing_url, failing) = hook(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (good_url, good) = hook(StatusCode::NO_CONTENT).await;
    let mut ingest = RtmpIngest::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let rtmp = ingest.local_addr();
    let bridge = start_in_process(|c| {
        // The bad hooks first: each URL has its own queue, whatever its place.
        c.hook_url = vec![hanging_url, failing_url, good_url];
        c.hook_timeout_ms = HOOK_TIMEOUT.as_millis() as u64;
        c.rtmp_target = vec![RtmpTarget {
            url: format!("rtmp://{rtmp}/live/{{stream}}"),
            audio: AudioMode::None,
            streams: Vec::new(),
        }];
    })
    .await;
    let http = bridge.http_addr();

    // The POST is answered without waiting for any hook: the hanging one would hold it for
    // HOOK_TIMEOUT at least.
    let posted = Instant::now();
    let publisher = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    let post_took = posted.elapsed();
    assert!(post_took < HOOK_TIMEOUT, "POST to 201 took {post_took:?}");
    let session = publisher
        .session_url()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let sending = tokio::spawn(async move {
        let sent = publisher.send_media(Duration::from_secs(4)).await.unwrap();
        (publisher, sent)
    });

    // The good hook hears of the outputs while the bad ones are still on their first event,
    // and the playlist it is told of is servable then.
    let has =
        |events: &Received, name: &str| names(&events.lock().unwrap()).iter().any(|n| n == name);
    wait_until("hls_ready and rtmp_up", Duration::from_secs(15), || {
        has(&good, "hls_ready") && has(&good, "rtmp_up")
    })
    .await;
    let ready = good
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "hls_ready")
        .cloned()
        .unwrap();
    let playlist = ready["playlist"].as_str().unwrap();
    assert_eq!(playlist, "/hls/cam/index.m3u8");
    let client = bridge::outbound::HttpClient::default();
    let url = bridge::outbound::parse_url(&format!("http://{http}{playlist}")).unwrap();
    let answer = client.get(&url, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.status, 200, "the playlist hls_ready names");
    assert!(
        *hanging_accepted.lock().unwrap() >= 1,
        "the hanging hook was tried"
    );

    // The media went through: RTMP tags at the ingest.
    let media = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ingest.recv().await {
                Some(IngestEvent::Media { stream, .. }) => break stream,
                Some(_) => {}
                None => panic!("ingest gone"),
            }
        }
    })
    .await
    .expect("RTMP media within 10 s");
    assert_eq!(media, "cam");

    let (publisher, sent) = sending.await.unwrap();
    assert!(sent.payload_bytes > 0);
    assert_eq!(publisher.delete().await.unwrap(), 200);
    wait_until("publish_stop", Duration::from_secs(10), || {
        has(&good, "publish_stop")
    })
    .await;

    // In order, each once, with the right fields.
    let events = good.lock().unwrap().clone();
    assert_eq!(
        names(&events).first().map(String::as_str),
        Some("publish_start")
    );
    assert_eq!(
        names(&events).last().map(String::as_str),
        Some("publish_stop")
    );
    let position = |name: &str| {
        let at: Vec<usize> = names(&events)
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == name)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{name} once: {:?}", names(&events));
        at[0]
    };
    assert!(position("rtmp_up") < position("rtmp_down"));
    assert!(position("hls_ready") < position("publish_stop"));
    for event in &events {
        assert_eq!(event["stream"], "cam", "{event}");
        assert_eq!(event["session"], session.as_str(), "{event}");
        assert_eq!(event["node"], http.to_string(), "{event}");
        let time = event["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{event}");
    }
    let up = &events[position("rtmp_up")];
    assert_eq!(
        up["target"],
        format!("rtmp://{rtmp}/live/***"),
        "key hidden"
    );
    let down = &events[position("rtmp_down")];
    assert_eq!(
        (&down["target"], &down["reason"]),
        (&up["target"], &"ended".into())
    );
    let stop = &events[position("publish_stop")];
    assert_eq!(stop["reason"], "delete");
    let duration = stop["duration_ms"].as_u64().unwrap();
    assert!(duration >= 4_000, "{stop}");
    let bytes = stop["bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes <= sent.payload_bytes,
        "{stop}; sent {sent:?}"
    );

    // The failing hook got publish_start four times (three retries), then the next event; the
    // hanging one gives publish_start up after four timeouts. Both counted failed.
    let metrics = || Metrics(bridge.app().metrics.render());
    let failed = |event: &str| {
        metrics().sum(
            "bridge_hook_events_total",
            &[("event", event), ("result", "failed")],
        )
    };
    wait_until(
        "both bad hooks give publish_start up",
        Duration::from_secs(20),
        || failed("publish_start") >= 2.0,
    )
    .await;
    let tried = names(&failing.lock().unwrap());
    assert_eq!(tried[..4], ["publish_start"; 4], "{tried:?}");
    assert!(tried.len() == 4 || tried[4] != "publish_start", "{tried:?}");
    let m = metrics();
    let delivered = |event| {
        m.sum(
            "bridge_hook_events_total",
            &[("event", event), ("result", "delivered")],
        )
    };
    for event in [
        "publish_start",
        "rtmp_up",
        "hls_ready",
        "rtmp_down",
        "publish_stop",
    ] {
        assert_eq!(delivered(event), 1.0, "{event}: only the good hook");
    }
    assert!(m.sum("bridge_hook_retries_total", &[]) >= 6.0);
    assert_eq!(
        m.sum("bridge_hook_events_total", &[("result", "dropped")]),
        0.0
    );

    // Shutdown waits for the bad hooks' queues, bounded.
    let stopping = Instant::now();
    bridge.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(8));
}

/// A takeover: the new session's `publish_start` comes before the old one's `publish_stop`
/// (reason `takeover`). A hook that answers 404 is asked once per event, never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_is_told_and_a_refusing_hook_is_not_retried() {
    let (good_url, good) = hook(StatusCode::OK).await;
    let (refusing_url, refusing) = hook(StatusCode::NOT_FOUND).await;
    let bridge = start_in_process(|c| {
        c.hook_url = vec![refusing_url, good_url];
        c.hls = false;
    })
    .await;
    let id = |p: &Publisher| p.session_url().rsplit('/').next().unwrap().to_owned();
    let first = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    let second = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    let (old, new) = (id(&first), id(&second));
    assert_eq!(second.delete().await.unwrap(), 200);
    wait_until("four events", Duration::from_secs(10), || {
        good.lock().unwrap().len() == 4
    })
    .await;
    let events = good.lock().unwrap().clone();
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["session"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("publish_start", old.as_str(), ""),
            ("publish_start", new.as_str(), ""),
            ("publish_stop", old.as_str(), "takeover"),
            ("publish_stop", new.as_str(), "delete"),
        ]
    );
    drop(first);
    let failed = || {
        Metrics(bridge.app().metrics.render())
            .sum("bridge_hook_events_total", &[("result", "failed")])
    };
    wait_until("the four 404s", Duration::from_secs(10), || failed() >= 4.0).await;
    let m = Metrics(bridge.app().metrics.render());
    assert_eq!(failed(), 4.0);
    assert_eq!(m.sum("bridge_hook_retries_total", &[]), 0.0);
    assert_eq!(names(&refusing.lock().unwrap()), names(&events));
    bridge.shutdown().await;
}
