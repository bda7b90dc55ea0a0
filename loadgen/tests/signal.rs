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
