//! The instrument's self-test: against a server whose delays are known, the latencies the load
//! generator reports, timed from each request's actual start (raw) and from its intended start
//! (corrected), come out as queueing theory says. In a test binary of its own, so that no other
//! test shares the CPU while it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_whip;

use std::time::Duration;

use fake_whip::{Behaviour, FakeWhip, Stall};
use loadgen::report::Report;
use loadgen::signal;

fn ms(report: &Report, metric: &str, corrected: bool, q: f64) -> f64 {
    let lat = &report.latency[metric];
    let summary = if corrected { &lat.corrected } else { &lat.raw };
    let h = summary.histogram().unwrap();
    h.value_at_quantile(q) as f64 / 1000.0
}

/// How near a percentile must come to theory. The fake server's 5 ms service times are timer
/// sleeps, each of which a busy machine can stretch by a fraction of a millisecond, and p99 sits
/// five services into the drain: 1 ms was too tight (CI on a clean clone measured 1.24 ms off).
/// The effect under test is 1,000 ms.
const TOLERANCE_MS: f64 = 3.0;

fn assert_near(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOLERANCE_MS,
        "{what}: measured {got:.3} ms, theory {want:.3} ms"
    );
}

/// A server that serves POSTs one at a time in 5 ms and freezes once for 1 s, while the load
/// generator starts 100 sessions/s for 5 s, each POSTing and trickling one PATCH 30 ms after its
/// start: the textbook coordinated-omission setting, with WHIP's dependent step.
///
/// The freeze begins when session 100's POST arrives. Sessions `100 + k` arrive 10 ms apart and
/// queue; once it ends they are served 5 ms apart, so session `100 + k` waits `1000 - 5k` ms
/// more than usual until the queue drains (k = 200). Of 500 values, p99 is the 495th, i.e. the
/// 6th largest, k = 5. So:
///
/// * POST, corrected: max = base + 1000 ms (k = 0) and p99 = max - 25 ms.
/// * POST, raw: the same, less only the generator's own lateness in sending (a timer tick plus
///   scheduling, a few ms at most): open loop, it sends on time whatever the server does.
/// * PATCH, raw: each is answered in the usual time once sent, so p99 stays at the base (up to
///   the machine's scheduling noise): timing requests from their send hides the freeze.
/// * PATCH, corrected: the PATCH of session `100 + k` was due 30 ms after the session started but
///   could only go when the 201 came, so p99 = POST corrected p99 - 30 ms + the PATCH's own time.
///
/// Bases are measured on the sessions the freeze did not touch. The corrected percentiles and the
/// max must match within [`TOLERANCE_MS`]; raw POST within the generator's lateness of corrected;
/// raw PATCH within 10 ms of its median.
///
/// One thread runs the load generator and one the server (`FakeWhip` has its own), so neither
/// waits for the other's CPU on a two-core machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn raw_and_corrected_percentiles_match_theory_around_a_stall() {
    let server = FakeWhip::start(Behaviour {
        post_delay: Duration::from_millis(5),
        stall: Some(Stall {
            at: 100,
            length: Duration::from_secs(1),
        }),
        ..Behaviour::default()
    })
    .await;
    let args = signal::parse_args([
        "--url",
        &server.url(),
        "--seed",
        "7",
        "--sessions",
        "500",
        "--rate",
        "100",
        "--trickle-patches",
        "1",
        "--trickle-gap",
        "30ms",
    ])
    .unwrap();
    let run = signal::run(&args).await.unwrap();
    let r = &run.report;
    assert_eq!(r.sessions.ok, 500, "{}", r.table());
    assert_eq!(r.violations.total, 0, "{}", r.table());
    assert_eq!(server.open_sessions(), 0);

    // 300 of 500 sessions are not delayed: the 10th percentile is one of theirs.
    let base = ms(r, "post", true, 0.1);
    let patch_raw_base = ms(r, "patch_trickle", false, 0.5);
    assert!(base >= 5.0, "{base}");
    let max = ms(r, "post", true, 1.0);
    let p99 = ms(r, "post", true, 0.99);
    assert_near("post corrected p99", p99, max - 25.0);
    assert!(
        (max - base - 1000.0).abs() <= TOLERANCE_MS,
        "post corrected max {max}, base {base}"
    );
    // Raw misses only the generator's own lateness in sending: a timer tick plus scheduling.
    let raw_p99 = ms(r, "post", false, 0.99);
    assert!(
        (0.0..=5.0).contains(&(p99 - raw_p99)),
        "post raw p99 {raw_p99}, corrected {p99}"
    );
    // Its tail is the machine's scheduling noise (a few ms on a busy two-core box), not the
    // freeze: a tool timing from the send would report a calm server.
    let patch_raw_p99 = ms(r, "patch_trickle", false, 0.99);
    assert!(
        patch_raw_p99 < patch_raw_base + 10.0,
        "patch raw p99 {patch_raw_p99}, median {patch_raw_base}"
    );
    assert_near(
        "patch corrected p99",
        ms(r, "patch_trickle", true, 0.99),
        ms(r, "post", true, 0.99) - 30.0 + patch_raw_base,
    );
}
