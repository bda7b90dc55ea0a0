//! The signalling gate, run in CI: `loadgen signal` against this bridge with 2,000
//! trickle-ICE sessions, 20 % of them reordering their PATCHes, 10 % restarting ICE, stale tags
//! after restarts and duplicated PATCHes. The oracle (RFC 9725 as `../shared/WHIP.md` sets it
//! out) must find no violation, and every session must end released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use loadgen::signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sessions_under_every_fault_show_no_violation() {
    let bridge = common::inproc::start_in_process(|config| {
        config.max_sessions = 5_000;
    })
    .await;
    let url = format!("http://{}/whip/s{{i}}", bridge.http_addr());
    let args = [
        "--url",
        &url,
        "--sessions",
        "2000",
        "--rate",
        "200",
        "--profile",
        "chromium",
        "--reorder",
        "0.2",
        "--restart-ratio",
        "0.1",
        "--stale-after-restart",
        "0.1",
        "--duplicate",
        "0.1",
        "--hold",
        "1s",
        "--seed",
        "42",
    ];
    let args = signal::parse_args(args.iter().map(|s| (*s).to_owned())).unwrap();
    let run = signal::run(&args).await.unwrap();
    let report = &run.report;
    print!("{}", report.table());
    assert_eq!(report.sessions.ok, 2000, "{:?}", report.failure_examples);
    assert_eq!(report.sessions.failed, 0);
    assert_eq!(
        report.violations.total, 0,
        "{:?}",
        report.violation_examples
    );
    // The faults were really injected, and answered as the rules say.
    for fault in ["reorder", "duplicate", "stale_after_restart"] {
        assert!(
            report.faults.get(fault).copied().unwrap_or(0) > 50,
            "{:?}",
            report.faults
        );
    }
    let patches = &report.statuses["PATCH"];
    assert!(patches.get("412").copied().unwrap_or(0) > 0, "{patches:?}");
    assert!(report.latency["patch_restart"].raw.count > 0);
    // Every session was DELETEd and released.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bridge.app().session_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} sessions left",
            bridge.app().session_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
