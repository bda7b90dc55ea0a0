//! `publish --ramp`: the report's `ramp`, one entry per step, and the knee.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What a ramp measured: its steps in order, and the knee.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ramp {
    /// Every step run, in order; the ramp stops after the first one that broke a limit.
    pub steps: Vec<RampStep>,
    /// The largest step's publisher count where every limit held; `null` if none did.
    pub knee: Option<u64>,
}

/// One step: `publishers` sending, measured over the step's steady window (from all of them
/// connected to the end of the hold). A value is `null` when it was not measured (no such
/// output, `--server-metrics off`, nothing to divide by).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RampStep {
    /// Publishers started by the end of this step.
    pub publishers: u64,
    /// Server CPU ms per second per publisher sending.
    pub cpu_ms_per_s_per_publisher: Option<f64>,
    /// Server CPU µs per RTP packet received.
    pub us_per_packet: Option<f64>,
    /// Frames sent in the window that the RTMP output did not deliver.
    pub frames_lost_rtmp: Option<u64>,
    /// Frames sent in the window that the HLS output did not deliver.
    pub frames_lost_hls: Option<u64>,
    /// p99 of `frame_rtmp` over the frames sent in the window, ms.
    pub frame_rtmp_p99_ms: Option<f64>,
    /// p99 of `frame_hls` over the frames sent in the window, ms.
    pub frame_hls_p99_ms: Option<f64>,
    /// Every limit held.
    pub ok: bool,
    /// The limits that broke, each with why.
    pub broken: Vec<String>,
}

impl Ramp {
    /// The per-step table and the knee.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<6}{:>11}{:>14}{:>11}{:>11}{:>10}{:>16}{:>15}  limits",
            "ramp",
            "publishers",
            "cpu ms/s/pub",
            "us/packet",
            "lost rtmp",
            "lost hls",
            "frame_rtmp p99",
            "frame_hls p99",
        );
        let float = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for (i, s) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:<6}{:>11}{:>14}{:>11}{:>11}{:>10}{:>16}{:>15}  {}",
                format!("#{}", i + 1),
                s.publishers,
                float(s.cpu_ms_per_s_per_publisher),
                float(s.us_per_packet),
                count(s.frames_lost_rtmp),
                count(s.frames_lost_hls),
                float(s.frame_rtmp_p99_ms),
                float(s.frame_hls_p99_ms),
                if s.ok { "held" } else { "broken" },
            );
            for why in &s.broken {
                let _ = writeln!(out, "        {why}");
            }
        }
        let _ = match self.knee {
            Some(n) => writeln!(
                out,
                "knee: {n} publishers (the largest step where every limit held)"
            ),
            None => writeln!(out, "knee: none (the first step already broke a limit)"),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_table() {
        let ramp = Ramp {
            steps: vec![
                RampStep {
                    publishers: 8,
                    cpu_ms_per_s_per_publisher: Some(11.5),
                    us_per_packet: Some(40.25),
                    frames_lost_rtmp: Some(0),
                    frames_lost_hls: None,
                    frame_rtmp_p99_ms: Some(3.5),
                    frame_hls_p99_ms: None,
                    ok: true,
                    broken: Vec::new(),
                },
                RampStep {
                    publishers: 16,
                    ok: false,
                    broken: vec!["SLO frames.lost==0 not met: the value is 3".into()],
                    ..RampStep::default()
                },
            ],
            knee: Some(8),
        };
        let v = serde_json::to_value(&ramp).unwrap();
        assert_eq!(v["knee"], 8);
        assert_eq!(v["steps"][0]["cpu_ms_per_s_per_publisher"], 11.5);
        assert_eq!(v["steps"][0]["frames_lost_hls"], serde_json::Value::Null);
        assert_eq!(v["steps"][1]["ok"], false);
        assert!(
            v["steps"][1]["broken"][0]
                .as_str()
                .unwrap()
                .contains("frames.lost")
        );
        let table = ramp.table();
        assert!(
            table.contains("#1              8         11.50      40.25          0         -            3.50              -  held"),
            "{table}"
        );
        assert!(table.contains("        SLO frames.lost==0"), "{table}");
        assert!(table.contains("knee: 8 publishers"), "{table}");
    }
}
