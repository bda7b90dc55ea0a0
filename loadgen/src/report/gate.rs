//! CI gates: service-level objectives (`--slo 'post.p99<50ms'`) and regressions against a
//! baseline report (`--baseline FILE --max-regression 25%`).
//!
//! An SLO names a value of the report the way its JSON does:
//!
//! * `violations` (total) or `violations.<kind>`;
//! * `sessions.ok`, `sessions.failed`, `sessions.planned`, `failures.<kind>`;
//! * `frames.sent`, `frames.received`, `frames.lost`, `frames.reordered`, `frames.duplicated`
//!   (`publish`: every output together, counts summed) or per output, `rtmp.frames.lost`,
//!   `hls.frames.lost`, ...; `rtmp.errors`, `hls.errors`;
//! * `av_drift` (the largest audio/video drift magnitude of any output, ms), `rtmp.av_drift`,
//!   `hls.av_drift` (`publish`);
//! * `<metric>.<stat>` (timed from the actual start, the JSON's top level) or
//!   `<metric>.corrected.<stat>`, with `stat` one of `count`, `mean`, `p50`, `p90`, `p99`,
//!   `p999` (or `p99.9`) and `max`.
//!
//! Operators: `<`, `<=`, `>`, `>=`, `==`, `!=`. Latencies and drifts are in ms unless suffixed
//! with `us`, `ms` or `s`. A value the report lacks reads as 0.

use std::fmt;
use std::str::FromStr;

use super::{Frames, OutputReport, Report};
use crate::stats::Metric;

/// Latencies both under this (ms) are never called a regression: noise at that scale is not one.
const REGRESSION_FLOOR_MS: f64 = 1.0;

/// A gate that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{expr:?}: {reason}")]
pub struct GateError {
    expr: String,
    reason: String,
}

impl GateError {
    fn new(expr: &str, reason: impl Into<String>) -> Self {
        Self {
            expr: expr.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Violations(Option<String>),
    Sessions(String),
    Failures(String),
    Frames(String),
    /// `<output>.frames.<count>`.
    OutputFrames {
        output: String,
        count: String,
    },
    /// `<output>.errors`.
    OutputErrors(String),
    /// `av_drift` (`None`: the worst output) or `<output>.av_drift`.
    Drift(Option<String>),
    Latency {
        metric: Metric,
        corrected: bool,
        stat: String,
    },
}

/// One `--slo` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    text: String,
    value: Value,
    op: Op,
    bound: f64,
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Slo {
    type Err = GateError;

    fn from_str(expr: &str) -> Result<Self, GateError> {
        let text: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (at, sym, op) = ops
            .iter()
            .filter_map(|(sym, op)| text.find(sym).map(|at| (at, *sym, *op)))
            .min_by_key(|(at, sym, _)| (*at, usize::MAX - sym.len()))
            .ok_or_else(|| GateError::new(expr, "no comparison (<, <=, >, >=, ==, !=)"))?;
        let (lhs, rhs) = (&text[..at], &text[at + sym.len()..]);
        let value = parse_value(lhs).map_err(|r| GateError::new(expr, r))?;
        let latency = value.is_time();
        let bound = parse_bound(rhs, latency).map_err(|r| GateError::new(expr, r))?;
        Ok(Slo {
            text,
            value,
            op,
            bound,
        })
    }
}

/// Output names `publish` reports under.
const OUTPUTS: [&str; 2] = ["rtmp", "hls"];

impl Value {
    /// Whether the value is a time (ms, or with a unit).
    fn is_time(&self) -> bool {
        match self {
            Value::Latency { stat, .. } => stat != "count",
            Value::Drift(_) => true,
            _ => false,
        }
    }
}

fn parse_value(lhs: &str) -> Result<Value, String> {
    if lhs == "av_drift" {
        return Ok(Value::Drift(None));
    }
    if let Some((output, rest)) = lhs.split_once('.')
        && OUTPUTS.contains(&output)
    {
        let output = output.to_owned();
        return match rest.split_once('.') {
            Some(("frames", k)) if Frames::default().count(k).is_some() => {
                Ok(Value::OutputFrames {
                    output,
                    count: k.to_owned(),
                })
            }
            None if rest == "av_drift" => Ok(Value::Drift(Some(output))),
            None if rest == "errors" => Ok(Value::OutputErrors(output)),
            _ => Err(format!(
                "unknown value {lhs:?}: use {output}.frames.sent|received|lost|reordered|duplicated, {output}.errors or {output}.av_drift"
            )),
        };
    }
    let mut parts = lhs.splitn(2, '.');
    let head = parts.next().unwrap_or_default();
    let tail = parts.next();
    Ok(match (head, tail) {
        ("violations", kind) => Value::Violations(kind.map(str::to_owned)),
        ("sessions", Some(k @ ("ok" | "failed" | "planned"))) => Value::Sessions(k.to_owned()),
        ("failures", Some(kind)) => Value::Failures(kind.to_owned()),
        ("frames", Some(k)) if Frames::default().count(k).is_some() => Value::Frames(k.to_owned()),
        (metric, Some(rest)) => {
            let metric = Metric::from_name(metric).ok_or_else(|| {
                format!(
                    "unknown value {lhs:?}: use violations, sessions.ok|failed|planned, failures.<kind>, [rtmp.|hls.]frames.sent|received|lost|reordered|duplicated, [rtmp.|hls.]av_drift, rtmp.errors, hls.errors or <metric>.[corrected.]<stat> with metric one of {}",
                    Metric::ALL.map(Metric::name).join(", ")
                )
            })?;
            let (corrected, stat) = match rest.split_once('.') {
                Some(("corrected", stat)) => (true, stat),
                Some(("raw", stat)) => (false, stat),
                _ => (false, rest),
            };
            if !["count", "mean", "p50", "p90", "p99", "p999", "p99.9", "max"].contains(&stat) {
                return Err(format!(
                    "unknown statistic {stat:?} (count, mean, p50, p90, p99, p999, max)"
                ));
            }
            Value::Latency {
                metric,
                corrected,
                stat: stat.to_owned(),
            }
        }
        _ => return Err(format!("unknown value {lhs:?}")),
    })
}

fn parse_bound(rhs: &str, latency: bool) -> Result<f64, String> {
    let (number, scale) = if !latency {
        (rhs, 1.0)
    } else if let Some(n) = rhs.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = rhs.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = rhs.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (rhs, 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| {
            format!(
                "{rhs:?} is not a number{}",
                if latency { " (with us, ms or s)" } else { "" }
            )
        })
}

impl Slo {
    /// The value this SLO reads, from `report` (latencies in ms).
    fn read(&self, report: &Report) -> f64 {
        match &self.value {
            Value::Violations(None) => report.violations.total as f64,
            Value::Violations(Some(kind)) => {
                report.violations.by_kind.get(kind).copied().unwrap_or(0) as f64
            }
            Value::Sessions(which) => match which.as_str() {
                "ok" => report.sessions.ok as f64,
                "failed" => report.sessions.failed as f64,
                _ => report.sessions.planned as f64,
            },
            Value::Failures(kind) => {
                report.sessions.failures.get(kind).copied().unwrap_or(0) as f64
            }
            Value::Frames(which) => report
                .frames_total()
                .and_then(|f| f.count(which))
                .unwrap_or(0) as f64,
            Value::OutputFrames { output, count } => report
                .outputs
                .get(output)
                .and_then(|o| o.frames.count(count))
                .unwrap_or(0) as f64,
            Value::OutputErrors(output) => {
                report.outputs.get(output).map_or(0, |o| o.errors) as f64
            }
            Value::Drift(output) => {
                let drift =
                    |o: &OutputReport| o.av_drift_ms.as_ref().map_or(0.0, |d| d.worst.abs());
                match output {
                    Some(name) => report.outputs.get(name).map_or(0.0, drift),
                    None => report.outputs.values().map(drift).fold(0.0, f64::max),
                }
            }
            Value::Latency {
                metric,
                corrected,
                stat,
            } => report
                .latency
                .get(metric.name())
                .map(|l| if *corrected { &l.corrected } else { &l.raw })
                .and_then(|s| s.stat(stat))
                .unwrap_or(0.0),
        }
    }

    /// `None` if the report meets the objective, else why not.
    pub fn check(&self, report: &Report) -> Option<String> {
        let value = self.read(report);
        let unit = if self.value.is_time() { " ms" } else { "" };
        (!self.op.holds(value, self.bound))
            .then(|| format!("SLO {} not met: the value is {value}{unit}", self.text))
    }
}

/// All gates of a run: SLOs and an optional baseline.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Objectives.
    pub slos: Vec<Slo>,
    /// A report to compare with.
    pub baseline: Option<Report>,
    /// Largest allowed increase over the baseline, as a fraction (0.25 = 25%).
    pub max_regression: f64,
}

impl Gate {
    /// Every reason the report fails the gates (empty: it passes).
    ///
    /// Against a baseline, the corrected p50 and p99 of every metric both runs measured may grow
    /// by at most `max_regression` (and 1 ms: below that it is noise), and violations may not.
    pub fn check(&self, report: &Report) -> Vec<String> {
        let mut reasons: Vec<String> = self.slos.iter().filter_map(|s| s.check(report)).collect();
        let Some(base) = &self.baseline else {
            return reasons;
        };
        for metric in Metric::ALL {
            let (Some(now), Some(then)) = (
                report.latency.get(metric.name()),
                base.latency.get(metric.name()),
            ) else {
                continue;
            };
            if now.corrected.count == 0 || then.corrected.count == 0 {
                continue;
            }
            for (stat, a, b) in [
                ("p50", now.corrected.p50_ms, then.corrected.p50_ms),
                ("p99", now.corrected.p99_ms, then.corrected.p99_ms),
            ] {
                if a - b > REGRESSION_FLOOR_MS && a > b * (1.0 + self.max_regression) {
                    reasons.push(format!(
                        "{metric}.corrected.{stat} regressed: {a:.2} ms against {b:.2} ms in the baseline (+{:.0}%, allowed {:.0}%)",
                        (a / b - 1.0) * 100.0,
                        self.max_regression * 100.0
                    ));
                }
            }
        }
        if report.violations.total > base.violations.total {
            reasons.push(format!(
                "violations rose from {} in the baseline to {}",
                base.violations.total, report.violations.total
            ));
        }
        reasons
    }
}

/// Parses `25%` or `0.25` into 0.25.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.trim().strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (text.trim(), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
        .ok_or_else(|| format!("{text:?} is not a percentage like 25% or a fraction like 0.25"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Summary};

    fn summary(p50: f64, p99: f64) -> Summary {
        Summary {
            count: 10,
            mean_ms: p50,
            p50_ms: p50,
            p90_ms: p99,
            p99_ms: p99,
            p999_ms: p99,
            max_ms: p99,
            histogram: String::new(),
        }
    }

    fn report(post_p99: f64, violations: u64) -> Report {
        let mut r = Report::default();
        r.latency.insert(
            "post".into(),
            Latency {
                raw: summary(1.0, post_p99),
                corrected: summary(2.0, post_p99 * 2.0),
            },
        );
        r.violations.total = violations;
        r.violations
            .by_kind
            .insert("etag_on_204".into(), violations);
        r.sessions.ok = 5;
        r
    }

    #[test]
    fn slo_expressions() {
        let r = report(40.0, 0);
        let ok = |e: &str| e.parse::<Slo>().unwrap().check(&r).is_none();
        assert!(ok("post.p99<50ms"));
        assert!(ok("post.p99 < 0.05s"));
        assert!(!ok("post.p99<40ms"));
        assert!(ok("post.p99<=40"));
        assert!(!ok("post.corrected.p99<50ms"));
        assert!(ok("post.p99.9<41000us"));
        assert!(ok("violations==0"));
        assert!(ok("violations.etag_on_204==0"));
        assert!(ok("sessions.ok>=5"));
        assert!(ok("sessions.failed==0"));
        assert!(ok("failures.gone==0"));
        assert!(ok("post.count>=10"));
        assert!(ok("frames.lost==0"));
        assert!("frames.bogus==0".parse::<Slo>().is_err());
        assert!("hls.frames.bogus==0".parse::<Slo>().is_err());
        assert!("hls.bogus==0".parse::<Slo>().is_err());
        let msg = "post.p99<30ms".parse::<Slo>().unwrap().check(&r).unwrap();
        assert!(msg.contains("40 ms"), "{msg}");
        for bad in [
            "post.p99",
            "nope.p99<1",
            "post.p42<1",
            "violations<x",
            "post.p99<1h",
        ] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
    }

    #[test]
    fn output_frames_and_drift() {
        use crate::report::{Drift, Frames};
        let mut r = report(40.0, 0);
        let output = |lost, drift: f64| OutputReport {
            frames: Frames {
                sent: 100,
                received: 100 - lost,
                lost,
                ..Frames::default()
            },
            errors: lost,
            av_drift_ms: Drift::of([("p0".to_owned(), drift)].into()),
        };
        r.outputs.insert("rtmp".into(), output(0, 12.0));
        r.outputs.insert("hls".into(), output(2, -150.0));
        let read = |e: &str| e.parse::<Slo>().unwrap().read(&r);
        assert_eq!(read("frames.lost==0"), 2.0);
        assert_eq!(read("frames.sent==0"), 100.0);
        assert_eq!(read("frames.received==0"), 198.0);
        assert_eq!(read("rtmp.frames.lost==0"), 0.0);
        assert_eq!(read("hls.frames.lost==0"), 2.0);
        assert_eq!(read("hls.errors==0"), 2.0);
        assert_eq!(read("rtmp.av_drift<1"), 12.0);
        assert_eq!(read("hls.av_drift<1"), 150.0);
        assert_eq!(read("av_drift<1"), 150.0);
        let ok = |e: &str| e.parse::<Slo>().unwrap().check(&r).is_none();
        assert!(ok("rtmp.av_drift<100ms"));
        assert!(!ok("av_drift<0.1s"));
        assert!(ok("av_drift<151000us"));
        let msg = "hls.av_drift<100"
            .parse::<Slo>()
            .unwrap()
            .check(&r)
            .unwrap();
        assert!(msg.contains("150 ms"), "{msg}");
        // Nothing measured reads as 0.
        assert_eq!(
            "av_drift<1"
                .parse::<Slo>()
                .unwrap()
                .read(&Report::default()),
            0.0
        );
    }

    #[test]
    fn baseline_regressions() {
        let gate = Gate {
            baseline: Some(report(40.0, 0)),
            max_regression: 0.25,
            ..Gate::default()
        };
        assert!(gate.check(&report(48.0, 0)).is_empty());
        let reasons = gate.check(&report(60.0, 1));
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("post.corrected.p99 regressed"));
        assert!(reasons[1].contains("violations rose"));
        assert_eq!(parse_fraction("25%"), Ok(0.25));
        assert_eq!(parse_fraction("0.1"), Ok(0.1));
        assert!(parse_fraction("x").is_err());
    }
}
