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
//! * the HLS ladder (`publish --simulcast N --hls`): `hls.renditions.count` (video renditions
//!   reported), `hls.renditions.lost` and `hls.renditions.errors` (summed over them),
//!   `hls.renditions.non_keyframe_starts` (segments not starting with a key frame, summed) and
//!   `hls.renditions.misalignment` (the largest segment boundary misalignment, ms);
//! * `<metric>.<stat>` (timed from the actual start, the JSON's top level) or
//!   `<metric>.corrected.<stat>`, with `stat` one of `count`, `mean`, `p50`, `p90`, `p99`,
//!   `p999` (or `p99.9`) and `max`.
//!
//! * `server.cpu_per_publisher` (server CPU ms per second per publisher),
//!   `server.us_per_packet` (server CPU µs per RTP packet), `server.cpu_per_session` (server
//!   CPU ms per session set up), `server.rss_per_session` (bytes): what `--server-metrics`
//!   measured. Unlike the others, a server value the report lacks fails the SLO, saying why.
//!
//! Operators: `<`, `<=`, `>`, `>=`, `==`, `!=`. Latencies, drifts and CPU times are in ms
//! (`server.us_per_packet`: µs) unless suffixed with `us`, `ms` or `s`; byte counts may carry
//! `k`, `M`, `G` (1000s) or `Ki`, `Mi`, `Gi` (1024s), optionally followed by `B`. Any other
//! value the report lacks reads as 0.

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
    /// `refusals.count|with_retry_after|without_retry_after`.
    Refusals(String),
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
    /// `<output>.renditions.<key>`.
    Renditions {
        output: String,
        key: RenditionKey,
    },
    Latency {
        metric: Metric,
        corrected: bool,
        stat: String,
    },
    /// `server.<key>`, from the report's `server`.
    Server(ServerKey),
}

/// What `<output>.renditions.<key>` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenditionKey {
    Count,
    Lost,
    Errors,
    NonKeyframeStarts,
    Misalignment,
}

impl RenditionKey {
    const ALL: [(&'static str, RenditionKey); 5] = [
        ("count", RenditionKey::Count),
        ("lost", RenditionKey::Lost),
        ("errors", RenditionKey::Errors),
        ("non_keyframe_starts", RenditionKey::NonKeyframeStarts),
        ("misalignment", RenditionKey::Misalignment),
    ];

    fn read(self, output: &OutputReport) -> f64 {
        let r = &output.renditions;
        match self {
            RenditionKey::Count => r.len() as f64,
            RenditionKey::Lost => r.iter().map(|r| r.frames.lost).sum::<u64>() as f64,
            RenditionKey::Errors => r.iter().map(|r| r.errors).sum::<u64>() as f64,
            RenditionKey::NonKeyframeStarts => {
                r.iter().map(|r| r.non_keyframe_starts()).sum::<u64>() as f64
            }
            RenditionKey::Misalignment => r
                .iter()
                .filter_map(|r| r.max_misalignment_ms)
                .fold(0.0, f64::max),
        }
    }
}

/// What `server.<key>` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKey {
    CpuPerPublisher,
    UsPerPacket,
    CpuPerSession,
    RssPerSession,
}

impl ServerKey {
    const ALL: [(&'static str, ServerKey); 4] = [
        ("cpu_per_publisher", ServerKey::CpuPerPublisher),
        ("us_per_packet", ServerKey::UsPerPacket),
        ("cpu_per_session", ServerKey::CpuPerSession),
        ("rss_per_session", ServerKey::RssPerSession),
    ];

    fn unit(self) -> Unit {
        match self {
            ServerKey::CpuPerPublisher | ServerKey::CpuPerSession => Unit::Ms,
            ServerKey::UsPerPacket => Unit::Us,
            ServerKey::RssPerSession => Unit::Bytes,
        }
    }
}

/// The unit of a value, and so of its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Count,
    /// Times in ms; a bound may say `us`, `ms` or `s`.
    Ms,
    /// Times in µs; a bound may say `us`, `ms` or `s`.
    Us,
    /// Bytes; a bound may say `k`, `M`, `G`, `Ki`, `Mi`, `Gi`, optionally with `B`.
    Bytes,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Ms => " ms",
            Unit::Us => " us",
            Unit::Bytes => " bytes",
        }
    }
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
        let bound = parse_bound(rhs, value.unit()).map_err(|r| GateError::new(expr, r))?;
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
    /// The unit of the value.
    fn unit(&self) -> Unit {
        match self {
            Value::Latency { stat, .. } if stat != "count" => Unit::Ms,
            Value::Drift(_) => Unit::Ms,
            Value::Renditions {
                key: RenditionKey::Misalignment,
                ..
            } => Unit::Ms,
            Value::Server(key) => key.unit(),
            _ => Unit::Count,
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
            Some(("renditions", k)) => RenditionKey::ALL
                .iter()
                .find(|(name, _)| *name == k)
                .map(|&(_, key)| Value::Renditions {
                    output: output.clone(),
                    key,
                })
                .ok_or_else(|| {
                    format!(
                        "unknown value {lhs:?}: use {output}.renditions.{}",
                        RenditionKey::ALL.map(|(name, _)| name).join("|")
                    )
                }),
            None if rest == "errors" => Ok(Value::OutputErrors(output)),
            _ => Err(format!(
                "unknown value {lhs:?}: use {output}.frames.sent|received|lost|reordered|duplicated, {output}.errors, {output}.av_drift or {output}.renditions.<key>"
            )),
        };
    }
    if let Some(key) = lhs.strip_prefix("server.") {
        return ServerKey::ALL
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, k)| Value::Server(*k))
            .ok_or_else(|| {
                format!(
                    "unknown value {lhs:?}: use server.{}",
                    ServerKey::ALL.map(|(name, _)| name).join("|")
                )
            });
    }
    let mut parts = lhs.splitn(2, '.');
    let head = parts.next().unwrap_or_default();
    let tail = parts.next();
    Ok(match (head, tail) {
        ("violations", kind) => Value::Violations(kind.map(str::to_owned)),
        ("sessions", Some(k @ ("ok" | "failed" | "planned"))) => Value::Sessions(k.to_owned()),
        ("failures", Some(kind)) => Value::Failures(kind.to_owned()),
        ("refusals", Some(k @ ("count" | "with_retry_after" | "without_retry_after"))) => {
            Value::Refusals(k.to_owned())
        }
        ("frames", Some(k)) if Frames::default().count(k).is_some() => Value::Frames(k.to_owned()),
        (metric, Some(rest)) => {
            let metric = Metric::from_name(metric).ok_or_else(|| {
                format!(
                    "unknown value {lhs:?}: use violations, sessions.ok|failed|planned, failures.<kind>, refusals.count|with_retry_after|without_retry_after, [rtmp.|hls.]frames.sent|received|lost|reordered|duplicated, [rtmp.|hls.]av_drift, rtmp.errors, hls.errors or <metric>.[corrected.]<stat> with metric one of {}",
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

fn parse_bound(rhs: &str, unit: Unit) -> Result<f64, String> {
    let time = |ms: f64| {
        if let Some(n) = rhs.strip_suffix("us") {
            (n, ms / 1000.0)
        } else if let Some(n) = rhs.strip_suffix("ms") {
            (n, ms)
        } else if let Some(n) = rhs.strip_suffix('s') {
            (n, ms * 1000.0)
        } else {
            (rhs, 1.0)
        }
    };
    let (number, scale) = match unit {
        Unit::Count => (rhs, 1.0),
        // The scale of one ms in the value's unit.
        Unit::Ms => time(1.0),
        Unit::Us => time(1000.0),
        Unit::Bytes => {
            let n = rhs.strip_suffix('B').unwrap_or(rhs);
            [
                ("Ki", 1024.0),
                ("Mi", 1048576.0),
                ("Gi", 1073741824.0),
                ("k", 1e3),
                ("M", 1e6),
                ("G", 1e9),
            ]
            .into_iter()
            .find_map(|(suffix, scale)| n.strip_suffix(suffix).map(|n| (n, scale)))
            .unwrap_or((n, 1.0))
        }
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| {
            format!(
                "{rhs:?} is not a number{}",
                match unit {
                    Unit::Count => "",
                    Unit::Ms | Unit::Us => " (with us, ms or s)",
                    Unit::Bytes => " (with k, M, G, Ki, Mi or Gi)",
                }
            )
        })
}

impl Slo {
    /// The value this SLO reads, from `report` (latencies in ms), or why the report lacks it
    /// (server values only: the others read as 0 when absent).
    fn read(&self, report: &Report) -> Result<f64, String> {
        if let Value::Server(key) = self.value {
            let Some(server) = &report.server else {
                return Err("the server was not measured (--server-metrics off)".to_owned());
            };
            if let Some(error) = &server.error {
                return Err(format!("the server was not measured: {error}"));
            }
            let (value, needs) = match key {
                ServerKey::CpuPerPublisher => {
                    (server.cpu_ms_per_s_per_publisher, "publishers sending")
                }
                ServerKey::UsPerPacket => (
                    server.us_per_packet,
                    "RTP packets counted by the server (bridge_rtp_packets_total)",
                ),
                ServerKey::CpuPerSession => (server.cpu_ms_per_session, "sessions set up"),
                ServerKey::RssPerSession => (server.rss_bytes_per_session, "sessions"),
            };
            return value.ok_or_else(|| format!("no value: the window had no {needs}"));
        }
        Ok(match &self.value {
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
            Value::Refusals(which) => match which.as_str() {
                "count" => report.refusals.count as f64,
                "with_retry_after" => report.refusals.with_retry_after as f64,
                _ => report.refusals.without_retry_after() as f64,
            },
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
            Value::Renditions { output, key } => {
                report.outputs.get(output).map_or(0.0, |o| key.read(o))
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
            // Handled above.
            Value::Server(_) => 0.0,
        })
    }

    /// `None` if the report meets the objective, else why not.
    pub fn check(&self, report: &Report) -> Option<String> {
        let value = match self.read(report) {
            Ok(value) => value,
            Err(why) => return Some(format!("SLO {} not met: {why}", self.text)),
        };
        let unit = self.value.unit().suffix();
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
    fn refusals() {
        let mut r = report(40.0, 0);
        r.refusals.count = 7;
        r.refusals.with_retry_after = 6;
        let ok = |r: &Report, e: &str| e.parse::<Slo>().unwrap().check(r).is_none();
        assert!(ok(&r, "refusals.count==7"));
        assert!(ok(&r, "refusals.with_retry_after==6"));
        assert!(!ok(&r, "refusals.without_retry_after==0"));
        r.refusals.with_retry_after = 7;
        assert!(ok(&r, "refusals.without_retry_after==0"));
        assert!("refusals.bogus==0".parse::<Slo>().is_err());
        assert!("post_refused.p99<20ms".parse::<Slo>().is_ok());
        assert!("post_admitted.p99<100ms".parse::<Slo>().is_ok());
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
            ..OutputReport::default()
        };
        r.outputs.insert("rtmp".into(), output(0, 12.0));
        r.outputs.insert("hls".into(), output(2, -150.0));
        let read = |e: &str| e.parse::<Slo>().unwrap().read(&r).unwrap();
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
            Ok(0.0)
        );
    }

    #[test]
    fn ladder_renditions() {
        use crate::report::{Frames, RenditionReport};
        let rendition = |uri: &str, lost, segments, keyframes, misaligned| RenditionReport {
            uri: uri.to_owned(),
            frames: Frames {
                sent: 300,
                received: 300 - lost,
                lost,
                ..Frames::default()
            },
            segments,
            keyframe_starts: keyframes,
            max_misalignment_ms: misaligned,
            ..RenditionReport::default()
        };
        let mut r = report(40.0, 0);
        let read = |r: &Report, e: &str| e.parse::<Slo>().unwrap().read(r).unwrap();
        // No ladder followed: no rendition, which a count gate catches.
        assert_eq!(read(&r, "hls.renditions.count==3"), 0.0);
        assert!(
            "hls.renditions.count==3"
                .parse::<Slo>()
                .unwrap()
                .check(&r)
                .is_some()
        );
        r.outputs.insert(
            "hls".into(),
            OutputReport {
                renditions: vec![
                    rendition("v0/index.m3u8", 0, 5, 5, Some(0.0)),
                    rendition("v1/index.m3u8", 2, 5, 4, Some(33.4)),
                    rendition("v2/index.m3u8", 1, 5, 5, None),
                ],
                ..OutputReport::default()
            },
        );
        assert_eq!(read(&r, "hls.renditions.count==3"), 3.0);
        assert_eq!(read(&r, "hls.renditions.lost==0"), 3.0);
        assert_eq!(read(&r, "hls.renditions.non_keyframe_starts==0"), 1.0);
        assert_eq!(read(&r, "hls.renditions.misalignment<1"), 33.4);
        assert_eq!(read(&r, "rtmp.renditions.lost==0"), 0.0);
        let ok = |e: &str| e.parse::<Slo>().unwrap().check(&r).is_none();
        assert!(ok("hls.renditions.misalignment<0.05s"));
        assert!(!ok("hls.renditions.misalignment<30ms"));
        assert!(!ok("hls.renditions.lost==0"));
        let err = "hls.renditions.bogus==0".parse::<Slo>().unwrap_err();
        assert!(err.to_string().contains("count|lost|errors"), "{err}");
    }

    #[test]
    fn server_values() {
        use crate::server::ServerReport;
        let slo = |e: &str| e.parse::<Slo>().unwrap();
        let mut r = report(40.0, 0);
        // Not measured: a server SLO fails, saying why.
        let msg = slo("server.cpu_per_publisher<12ms").check(&r).unwrap();
        assert!(msg.contains("--server-metrics off"), "{msg}");
        r.server = Some(ServerReport::failed("http://h/metrics", "HTTP 404".into()));
        let msg = slo("server.rss_per_session<1MiB").check(&r).unwrap();
        assert!(msg.contains("HTTP 404"), "{msg}");
        r.server = Some(ServerReport {
            url: "http://h/metrics".into(),
            cpu_ms_per_s_per_publisher: Some(10.0),
            us_per_packet: Some(40.0),
            cpu_ms_per_session: None,
            rss_bytes_per_session: Some(2_000_000.0),
            ..ServerReport::default()
        });
        let ok = |e: &str| slo(e).check(&r).is_none();
        assert!(ok("server.cpu_per_publisher<12ms"));
        assert!(ok("server.cpu_per_publisher<12"));
        assert!(!ok("server.cpu_per_publisher<9000us"));
        assert!(ok("server.cpu_per_publisher<0.011s"));
        assert!(ok("server.us_per_packet<50"));
        assert!(ok("server.us_per_packet<50us"));
        assert!(!ok("server.us_per_packet<0.03ms"));
        assert!(ok("server.rss_per_session<2MiB"));
        assert!(!ok("server.rss_per_session<2MB"));
        assert!(ok("server.rss_per_session<=2000kB"));
        assert!(ok("server.rss_per_session<2000001"));
        let msg = slo("server.cpu_per_session<1ms").check(&r).unwrap();
        assert!(msg.contains("no sessions set up"), "{msg}");
        let msg = slo("server.us_per_packet<10").check(&r).unwrap();
        assert!(msg.contains("40 us"), "{msg}");
        for bad in [
            "server.bogus<1",
            "server.rss_per_session<1TB",
            "server.us_per_packet<1h",
        ] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
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
