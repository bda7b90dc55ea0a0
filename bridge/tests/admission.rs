//! Admission control under overload (issue 12), beside the signalling gate but in a binary of
//! its own: cargo runs test binaries one after the other, and this test's overload, run at the
//! same time as the gate, would slow the gate's bridge down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// Limit for one HTTP exchange: an answer this late is the machine's doing, not the protocol's.
const TIMEOUT: &str = "30s";

/// Admission control (issue 12): sessions arrive far faster than one set-up slot serves them.
/// The bridge refuses what it cannot set up in time with `503` + `Retry-After`, and a client
/// that honours it gets every session set up in the end: no violation, no failure, no exchange
/// without an answer, every refusal saying when to come back. How many are refused depends on
/// the machine's speed, so only that some were (the path was taken) is asserted, never how many
/// or how fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_retry_after_and_every_session_set_up_in_the_end() {
    const OVERLOAD_SESSIONS: u64 = 400;
    let bridge = common::inproc::start_in_process(|config| {
        config.max_sessions = 5_000;
        config.connect_timeout_secs = 120;
        // One slot: a debug build's set-up takes milliseconds, the sessions come 1 ms apart.
        config.setup_concurrency = 1;
    })
    .await;
    let url = format!("http://{}/whip/o{{i}}", bridge.http_addr());
    let sessions = OVERLOAD_SESSIONS.to_string();
    let args = [
        "--url",
        &url,
        "--sessions",
        &sessions,
        "--rate",
        "1000",
        "--profile",
        "chromium",
        "--hold",
        "1s",
        "--timeout",
        TIMEOUT,
        // Retry-After is 1 s: enough retries for a machine that sets up a few sessions a second.
        "--max-retries",
        "100",
        "--seed",
        "7",
    ];
    let report = common::inproc::signal_without_violations(&args).await;
    assert!(
        report.refusals.count > 0,
        "no POST refused: the overload did not happen ({:?})",
        report.statuses
    );
    assert_eq!(
        report.refusals.without_retry_after(),
        0,
        "refusals without Retry-After: {:?}",
        report.refusals
    );
    assert_eq!(
        report.statuses["POST"].get("no answer"),
        None,
        "{:?}",
        report.statuses
    );
    assert_eq!(
        (report.sessions.ok, report.sessions.failed),
        (OVERLOAD_SESSIONS, 0),
        "{:?}: {:?}",
        report.sessions.failures,
        report.failure_examples
    );
    // Each session was set up once: as many 201s as sessions, and every one released.
    assert_eq!(
        report.statuses["POST"].get("201").copied(),
        Some(OVERLOAD_SESSIONS),
        "{:?}",
        report.statuses
    );
    assert_eq!(report.latency["post_admitted"].raw.count, OVERLOAD_SESSIONS);
    assert_eq!(
        report.latency["post_refused"].raw.count,
        report.refusals.count
    );
    common::inproc::wait_released(&bridge, "after the overload").await;
}
