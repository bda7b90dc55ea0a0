//! `loadgen signal` against fake WHIP servers of known behaviour: the instrument measures what
//! theory says, and the oracle catches a server that breaks the rules (and nothing else).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_whip;

use std::time::Duration;

use fake_whip::{Behaviour, FakeWhip};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use loadgen::report::Report;
use loadgen::signal::{self, SignalRun};

async fn run(server: &FakeWhip, extra: &[&str]) -> SignalRun {
    let mut args = vec![
        "--url".to_owned(),
        server.url(),
        "--seed".into(),
        "7".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args = signal::parse_args(args).unwrap();
    signal::run(&args).await.unwrap()
}

/// Every fault at once against a correct server: the oracle must find nothing, including in the
/// races it cannot order (reordered, duplicated and racing PATCHes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_shows_no_violation_under_every_fault() {
    let server = FakeWhip::start(Behaviour {
        patch_delay: Duration::from_millis(3),
        ..Behaviour::default()
    })
    .await;
    let run = run(
        &server,
        &[
            "--sessions",
            "300",
            "--rate",
            "300",
            "--profile",
            "mix",
            "--restart-ratio",
            "0.3",
            "--reorder",
            "0.3",
            "--duplicate",
            "0.3",
            "--stale-after-restart",
            "0.3",
            "--no-if-match",
            "0.3",
            "--restart-race",
            "0.3",
            "--delete-storm",
            "0.2",
            "--post-flood",
            "0.05",
            "--hold",
            "100ms",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(r.violations.total, 0, "{}", r.table());
    assert_eq!(
        (r.sessions.ok, r.sessions.failed),
        (300, 0),
        "{}",
        r.table()
    );
    for fault in [
        "reorder",
        "duplicate",
        "stale_after_restart",
        "no_if_match",
        "restart_race",
        "delete_storm",
        "post_flood",
    ] {
        assert!(
            r.faults.get(fault).is_some_and(|n| *n > 0),
            "{fault}: {:?}",
            r.faults
        );
    }
    let patch = &r.statuses["PATCH"];
    for status in ["200", "204", "404", "412", "428"] {
        assert!(patch.contains_key(status), "PATCH {status}: {patch:?}");
    }
    assert!(r.latency["patch_restart"].raw.count > 0);
    assert_eq!(server.open_sessions(), 0);
}

/// A server that never checks If-Match (so a late pre-restart PATCH restarts ICE again) and sends
/// no ETag with restarts: per session, the PATCH without If-Match is accepted, the stale PATCH is
/// accepted, and both restarts lack a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_server_is_caught() {
    let server = FakeWhip::start(Behaviour {
        ignore_if_match: true,
        no_restart_etag: true,
        ..Behaviour::default()
    })
    .await;
    let n = 20;
    let run = run(
        &server,
        &[
            "--sessions",
            &n.to_string(),
            "--rate",
            "200",
            "--restart-ratio",
            "1",
            "--stale-after-restart",
            "1",
            "--no-if-match",
            "1",
            "--examples",
            "2",
        ],
    )
    .await;
    let r = &run.report;
    let v = &r.violations.by_kind;
    assert_eq!(
        v.get("missing_if_match_accepted"),
        Some(&n),
        "{}",
        r.table()
    );
    assert_eq!(v.get("stale_tag_accepted"), Some(&n), "{}", r.table());
    assert_eq!(
        v.get("restart_without_etag"),
        Some(&(2 * n)),
        "{}",
        r.table()
    );
    assert_eq!(r.violations.total, 4 * n, "{}", r.table());
    assert_eq!(r.sessions.failed, n);
    assert_eq!(r.violation_examples["stale_tag_accepted"].len(), 2);
    assert!(
        r.violation_examples["stale_tag_accepted"][0].contains("expected [412]"),
        "{:?}",
        r.violation_examples
    );
}

/// A server that redirects every POST (307) and is busy once per stream (503, Retry-After): the
/// client follows and retries, and the sessions live on at the final endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_retry_after_are_followed() {
    let server = FakeWhip::start(Behaviour {
        redirect: true,
        busy_once: true,
        ..Behaviour::default()
    })
    .await;
    let run = run(&server, &["--sessions", "20", "--rate", "200"]).await;
    let r = &run.report;
    assert_eq!(
        (r.sessions.ok, r.violations.total),
        (20, 0),
        "{}",
        r.table()
    );
    let post = &r.statuses["POST"];
    assert_eq!(
        (post.get("307"), post.get("503"), post.get("201")),
        (Some(&20), Some(&20), Some(&20)),
        "{post:?}"
    );
    assert_eq!(
        r.latency["post"].raw.count, 20,
        "one POST latency per session"
    );
    assert_eq!(server.open_sessions(), 0);
}

/// The binary end to end: JSON and interval log written, runs merged, gates decide the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_outputs_merge_and_gates() {
    let server = FakeWhip::start(Behaviour {
        post_delay: Duration::from_millis(2),
        ..Behaviour::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (json, hlog) = (path("a.json"), path("a.hlog"));
    let url = server.url();
    let loadgen = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = loadgen(
        [
            "signal",
            "--url",
            &url,
            "--sessions",
            "30",
            "--rate",
            "200",
            "--json",
            &json,
            "--hlog",
            &hlog,
            "--hlog-interval",
            "100ms",
            "--slo",
            "violations==0",
            "--slo",
            "post.p99<5s",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("30 ok"), "{stdout}");

    let report = Report::load(&json).unwrap();
    assert_eq!(report.latency["post"].raw.count, 30);
    let log = std::fs::read(&hlog).unwrap();
    let mut tagged = 0u64;
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.unwrap()
            && h.tag().map(|t| t.as_str()) == Some("post")
        {
            let bytes = base64_decode(h.encoded_histogram());
            let hist: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            tagged += hist.len();
        }
    }
    assert_eq!(tagged, 30, "every POST is in exactly one interval");

    let merged = path("merged.json");
    let out = loadgen(
        [
            "merge",
            &json,
            &json,
            "--json",
            &merged,
            "--slo",
            "post.count==60",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(Report::load(&merged).unwrap().sessions.ok, 60);

    let out = loadgen(
        ["merge", &json, "--slo", "post.p99<1us", "--baseline", &json]
            .map(String::from)
            .to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAIL: SLO post.p99<1us"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A metrics endpoint whose counters advance by a known step on every scrape: scrape `n` (from
/// 0) reports 1 + 0.5 n CPU seconds, 10 MB + 2 MB n of RSS and 1000 + 5000 n RTP packets.
/// Without the process metrics (`process: false`) it reports only an unrelated series.
fn fake_metrics(process: bool) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            // Read the request head up to its blank line.
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let n = n as f64;
            let body = if process {
                format!(
                    "# TYPE process_cpu_seconds counter\n\
                     process_cpu_seconds_total {}\n\
                     process_resident_memory_bytes {}\n\
                     bridge_rtp_packets_total{{kind=\"audio\"}} {}\n\
                     bridge_rtp_packets_total{{kind=\"video\"}} {}\n",
                    1.0 + 0.5 * n,
                    10e6 + 2e6 * n,
                    400.0 + 2000.0 * n,
                    600.0 + 3000.0 * n,
                )
            } else {
                "up 1\n".to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// `--server-metrics`: the two scrapes' differences, per session set up; a server without the
/// process metrics is reported as not measured, and fails a server SLO instead of passing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_are_scraped_around_the_run() {
    use loadgen::report::{Gate, Slo};
    let server = FakeWhip::start(Behaviour::default()).await;
    let metrics = fake_metrics(true);
    let sessions = ["--sessions", "10", "--rate", "200"];
    let run1 = run(
        &server,
        &[&sessions[..], &["--server-metrics", &metrics]].concat(),
    )
    .await;
    let s = run1.report.server.clone().expect("server measured");
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(s.sessions, 10);
    assert_eq!(s.cpu_seconds, 0.5);
    assert_eq!(s.rss_delta_bytes, 2e6);
    assert_eq!(s.rtp_packets, Some(5000.0));
    assert_eq!(s.cpu_ms_per_session, Some(50.0));
    assert_eq!(s.us_per_packet, Some(100.0));
    assert_eq!(s.rss_bytes_per_session, Some(2e5));
    assert_eq!(
        s.cpu_ms_per_s_per_publisher, None,
        "signal has no publishers"
    );
    assert!(s.window_s > 0.0);
    let table = run1.report.table();
    assert!(
        table.contains("CPU per session set up: 50.000 ms"),
        "{table}"
    );
    let json = serde_json::to_value(&run1.report).unwrap();
    assert_eq!(json["server"]["cpu_ms_per_session"], 50.0);
    assert_eq!(json["server"]["us_per_packet"], 100.0);
    let gate = |slo: &str| Gate {
        slos: vec![slo.parse::<Slo>().unwrap()],
        ..Gate::default()
    };
    assert!(
        gate("server.cpu_per_session<51ms")
            .check(&run1.report)
            .is_empty()
    );
    assert!(
        !gate("server.cpu_per_session<49ms")
            .check(&run1.report)
            .is_empty()
    );
    assert!(
        gate("server.rss_per_session<=200kB")
            .check(&run1.report)
            .is_empty()
    );

    // The fake WHIP server has no /metrics (the default: the --url's origin + /metrics).
    let run2 = run(&server, &sessions).await;
    let s = run2.report.server.clone().expect("server report");
    assert!(s.url.ends_with("/metrics") && s.url.starts_with("http://127.0.0.1:"));
    assert!(s.error.is_some(), "{s:?}");
    assert!(run2.report.table().contains("server: not measured"));
    let json = serde_json::to_value(&run2.report).unwrap();
    assert!(json["server"]["error"].is_string(), "{json}");
    assert!(json["server"]["cpu_ms_per_session"].is_null());
    let reasons = gate("server.cpu_per_session<1s").check(&run2.report);
    assert!(
        reasons.len() == 1 && reasons[0].contains("not measured"),
        "{reasons:?}"
    );

    let bare = fake_metrics(false);
    let run3 = run(
        &server,
        &[&sessions[..], &["--server-metrics", &bare]].concat(),
    )
    .await;
    let error = run3.report.server.unwrap().error.unwrap();
    assert!(error.contains("no process metrics"), "{error}");

    let run4 = run(
        &server,
        &[&sessions[..], &["--server-metrics", "off"]].concat(),
    )
    .await;
    assert_eq!(run4.report.server, None);
    let json = serde_json::to_value(&run4.report).unwrap();
    assert!(json["server"].is_null());
    assert!(
        !gate("server.cpu_per_session<1s")
            .check(&run4.report)
            .is_empty()
    );
}
