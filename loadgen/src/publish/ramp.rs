//! `publish --ramp STEP`: the decisions of a ramp, as plain functions over what each step
//! measured. The IO (starting publishers, scraping the server, waiting) lives in the parent
//! module; this one only says how many publishers each step has, whether a step held its limits,
//! whether to go on, and where the knee is.
//!
//! A step's measurements come as a [`Report`] (the same shape as a whole run's, restricted to
//! the step's window), so its limits are the ordinary `--slo` expressions, read the way they
//! are read for a whole run.

use std::time::Duration;

use crate::report::{RampStep, Report, Slo};

/// The publisher count of each step: `step`, `2 × step`, ... up to `ceiling`, the last step
/// cut to it. Empty when either is 0.
pub fn plan(step: u64, ceiling: u64) -> Vec<u64> {
    if step == 0 {
        return Vec::new();
    }
    let mut out: Vec<u64> = (1..=ceiling / step).map(|k| k * step).collect();
    if !ceiling.is_multiple_of(step) {
        out.push(ceiling);
    }
    out
}

/// The longest a ramp of `steps` steps can last: each step waits up to `connect` for its
/// publishers, holds `hold`, then waits up to `drain` for the window's last frames. Publishers
/// are told to stop when the ramp ends; this bounds their sending should that never come.
pub fn longest(steps: usize, connect: Duration, hold: Duration, drain: Duration) -> Duration {
    (connect + hold + drain).saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX))
}

/// A step's outcome: its values from `step` (the step's window as a report, with
/// `sessions.planned` the step's publishers and `sessions.failed` the publishers that failed
/// so far), and every limit it broke: each of `limits` not met, and any publisher failed.
pub fn judge(step: &Report, limits: &[Slo]) -> RampStep {
    let mut broken = Vec::new();
    if step.sessions.failed > 0 {
        broken.push(format!(
            "{} of {} publishers failed (to connect, or while sending)",
            step.sessions.failed, step.sessions.planned
        ));
    }
    broken.extend(limits.iter().filter_map(|slo| slo.check(step)));
    let lost = |output: &str| step.outputs.get(output).map(|o| o.frames.lost);
    let p99 = |metric: &str| {
        step.latency
            .get(metric)
            .filter(|l| l.raw.count > 0)
            .map(|l| l.raw.p99_ms)
    };
    let server = step.server.as_ref();
    RampStep {
        publishers: step.sessions.planned,
        cpu_ms_per_s_per_publisher: server.and_then(|s| s.cpu_ms_per_s_per_publisher),
        us_per_packet: server.and_then(|s| s.us_per_packet),
        frames_lost_rtmp: lost("rtmp"),
        frames_lost_hls: lost("hls"),
        frame_rtmp_p99_ms: p99("frame_rtmp"),
        frame_hls_p99_ms: p99("frame_hls"),
        ok: broken.is_empty(),
        broken,
    }
}

/// Whether to add the next step after `step`: only if it held and the ceiling is not reached.
pub fn go_on(step: &RampStep, ceiling: u64) -> bool {
    step.ok && step.publishers < ceiling
}

/// The knee: the largest publisher count of a step where every limit held.
pub fn knee(steps: &[RampStep]) -> Option<u64> {
    steps.iter().filter(|s| s.ok).map(|s| s.publishers).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Frames, Latency, OutputReport, Summary};
    use crate::server::ServerReport;

    #[test]
    fn plans() {
        for (step, ceiling, want) in [
            (8, 64, vec![8, 16, 24, 32, 40, 48, 56, 64]),
            (10, 25, vec![10, 20, 25]),
            (4, 4, vec![4]),
            (8, 3, vec![3]),
            (1, 3, vec![1, 2, 3]),
            (0, 10, vec![]),
            (5, 0, vec![]),
        ] {
            assert_eq!(
                plan(step, ceiling),
                want,
                "--ramp {step} --publishers {ceiling}"
            );
        }
    }

    #[test]
    fn longest_bounds_every_step() {
        let s = Duration::from_secs;
        assert_eq!(longest(3, s(10), s(5), s(3)), s(54));
        assert_eq!(longest(0, s(10), s(5), s(3)), s(0));
    }

    fn summary(p99_ms: f64, count: u64) -> Summary {
        Summary {
            count,
            mean_ms: p99_ms,
            p50_ms: p99_ms,
            p90_ms: p99_ms,
            p99_ms,
            p999_ms: p99_ms,
            max_ms: p99_ms,
            histogram: String::new(),
        }
    }

    /// A step of `publishers` (`failed` of them failed), losing `lost` RTMP frames at a
    /// `frame_rtmp` p99 of `p99_ms`, the server at `cpu` ms/s per publisher (`None`: its
    /// scrape failed).
    fn step(publishers: u64, failed: u64, lost: u64, p99_ms: f64, cpu: Option<f64>) -> Report {
        let mut r = Report::default();
        r.sessions.planned = publishers;
        r.sessions.ok = publishers - failed;
        r.sessions.failed = failed;
        r.outputs.insert(
            "rtmp".into(),
            OutputReport {
                frames: Frames {
                    sent: 300 * publishers,
                    received: 300 * publishers - lost,
                    lost,
                    ..Frames::default()
                },
                ..OutputReport::default()
            },
        );
        r.latency.insert(
            "frame_rtmp".into(),
            Latency {
                raw: summary(p99_ms, 300),
                corrected: summary(p99_ms, 300),
            },
        );
        r.latency.insert(
            "frame_hls".into(),
            Latency {
                raw: summary(0.0, 0),
                corrected: summary(0.0, 0),
            },
        );
        r.server = Some(match cpu {
            Some(cpu) => ServerReport {
                cpu_ms_per_s_per_publisher: Some(cpu),
                us_per_packet: Some(cpu * 3.0),
                ..ServerReport::default()
            },
            None => ServerReport::failed("http://h/metrics", "HTTP 500".into()),
        });
        r
    }

    #[test]
    fn judging_steps() {
        let limits: Vec<Slo> = [
            "frames.lost==0",
            "frame_rtmp.p99<50ms",
            "server.cpu_per_publisher<12ms",
        ]
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
        // (step, limits broken, the start of each reason)
        let cases: [(Report, &[&str]); 6] = [
            (step(8, 0, 0, 3.0, Some(10.0)), &[]),
            (step(16, 0, 2, 3.0, Some(10.0)), &["SLO frames.lost==0"]),
            (
                step(16, 0, 0, 80.0, Some(10.0)),
                &["SLO frame_rtmp.p99<50ms"],
            ),
            (
                step(24, 0, 0, 3.0, Some(12.5)),
                &["SLO server.cpu_per_publisher<12ms"],
            ),
            // A server that could not be read breaks a server limit rather than passing it.
            (
                step(24, 0, 0, 3.0, None),
                &["SLO server.cpu_per_publisher<12ms not met: the server was not measured"],
            ),
            (
                step(32, 1, 0, 3.0, Some(10.0)),
                &["1 of 32 publishers failed"],
            ),
        ];
        for (report, want) in &cases {
            let s = judge(report, &limits);
            assert_eq!(s.publishers, report.sessions.planned);
            assert_eq!(s.ok, want.is_empty(), "{s:?}");
            assert_eq!(s.broken.len(), want.len(), "{s:?}");
            for (got, want) in s.broken.iter().zip(want.iter()) {
                assert!(got.starts_with(want), "{got:?} is not {want:?}");
            }
        }
        let s = judge(&cases[0].0, &limits);
        assert_eq!(s.frames_lost_rtmp, Some(0));
        assert_eq!(s.frames_lost_hls, None);
        assert_eq!(s.frame_rtmp_p99_ms, Some(3.0));
        // Measured, but no frame of the window came out: no p99 rather than 0.
        assert_eq!(s.frame_hls_p99_ms, None);
        assert_eq!(s.cpu_ms_per_s_per_publisher, Some(10.0));
        assert_eq!(s.us_per_packet, Some(30.0));
        // No limits: only failed publishers break a step.
        assert!(judge(&cases[1].0, &[]).ok);
        assert!(!judge(&cases[5].0, &[]).ok);
    }

    #[test]
    fn going_on_and_the_knee() {
        let held = |publishers| RampStep {
            publishers,
            ok: true,
            ..RampStep::default()
        };
        let broke = |publishers| RampStep {
            publishers,
            ok: false,
            broken: vec!["x".into()],
            ..RampStep::default()
        };
        // (steps run, ceiling, go on after the last, knee)
        let cases = [
            (vec![held(8)], 64, true, Some(8)),
            (vec![held(8), held(16)], 16, false, Some(16)),
            (vec![held(8), broke(16)], 64, false, Some(8)),
            (vec![broke(8)], 64, false, None),
            (vec![], 64, false, None),
        ];
        for (steps, ceiling, more, want) in cases {
            let last_goes_on = steps.last().is_some_and(|s| go_on(s, ceiling));
            assert_eq!(last_goes_on, more, "{steps:?}");
            assert_eq!(knee(&steps), want, "{steps:?}");
        }
    }
}
