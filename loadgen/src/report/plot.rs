//! `--plot FILE.png`: latency by percentile, one colour per metric, solid from the intended start
//! (corrected), dashed from the actual start (raw). The x axis is logarithmic in `1 / (1 - q)`,
//! as HdrHistogram's own plots, so the tail gets the room.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::Report;
use crate::stats::{HistogramError, Metric};

/// TrueType fonts tried when `--plot-font` is not given.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
/// Plot size in pixels.
const SIZE: (u32, u32) = (1200, 700);
/// The curve stops at this many nines (99.999%).
const MAX_NINES: f64 = 5.0;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// No usable font.
    #[error("no TrueType font found (tried {0}); give one with --plot-font")]
    NoFont(String),
    /// The font file is unreadable or not a font.
    #[error("font {path}: {reason}")]
    BadFont {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A histogram in the report is unreadable.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// Drawing or writing the image failed.
    #[error("drawing {path}: {reason}")]
    Draw {
        /// The image file.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Registers the font once per process (plotters keeps it for the process's life).
fn register_font(path: Option<&str>) -> Result<(), PlotError> {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let path = match path {
        Some(p) => p.to_owned(),
        None => FONTS
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|p| (*p).to_owned())
            .ok_or_else(|| PlotError::NoFont(FONTS.join(", ")))?,
    };
    let bytes = std::fs::read(&path).map_err(|e| PlotError::BadFont {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    // plotters wants the font for the rest of the process: leak it, once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        PlotError::BadFont {
            path: path.clone(),
            reason: "not a TrueType font".into(),
        }
    })?;
    let _ = REGISTERED.set(());
    Ok(())
}

/// (nines, ms) points of a histogram's percentile curve.
fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for v in h.iter_quantiles(2) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        let nines = -(1.0 - q).log10();
        if nines > MAX_NINES {
            break;
        }
        points.push((nines, v.value_iterated_to() as f64 / 1000.0));
    }
    if !h.is_empty() {
        // The curve ends with the largest value, at the last percentile drawn.
        let last = points.last().map_or(0.0, |p| p.0);
        points.push((last, h.max() as f64 / 1000.0));
    }
    points
}

fn label(nines: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-nines));
    match nines.round() as u32 {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("{q:.*}%", (n - 2) as usize),
    }
}

/// Draws the report's latency percentile curves into `path` (PNG).
pub fn plot(report: &Report, path: &str, font: Option<&str>) -> Result<(), PlotError> {
    register_font(font)?;
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut series = Vec::new();
    for metric in Metric::ALL {
        let Some(lat) = report.latency.get(metric.name()) else {
            continue;
        };
        if lat.raw.count == 0 {
            continue;
        }
        series.push((
            metric,
            curve(&lat.corrected.histogram()?),
            curve(&lat.raw.histogram()?),
        ));
    }
    let max_ms = series
        .iter()
        .flat_map(|(_, c, r)| c.iter().chain(r))
        .map(|p| p.1)
        .fold(1.0_f64, f64::max);
    let max_nines = series
        .iter()
        .flat_map(|(_, c, r)| c.iter().chain(r))
        .map(|p| p.0)
        .fold(1.0_f64, f64::max)
        .ceil();

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("WHIP signalling latency by percentile", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_nines, 0.0..max_ms * 1.05)
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(max_nines as usize + 1)
        .x_label_formatter(&|x| label(*x))
        .y_label_formatter(&|y| {
            if max_ms >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| draw_err(&e))?;
    for (i, (metric, corrected, raw)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                corrected.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| draw_err(&e))?
            .label(format!("{metric} (corrected)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(
                raw.iter().copied(),
                6,
                4,
                colour.stroke_width(1),
            ))
            .map_err(|e| draw_err(&e))?
            .label(format!("{metric} (raw)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Recorder;

    #[test]
    fn percentile_labels() {
        assert_eq!(label(0.0), "0%");
        assert_eq!(label(1.0), "90%");
        assert_eq!(label(2.0), "99%");
        assert_eq!(label(3.0), "99.9%");
        assert_eq!(label(4.0), "99.99%");
    }

    #[test]
    fn draws_a_png() {
        if !FONTS.iter().any(|p| std::path::Path::new(p).exists()) {
            return; // no font on this machine: nothing to draw text with
        }
        let mut rec = Recorder::new(false);
        for i in 1..=1000u64 {
            let d = Duration::from_micros(i * 37);
            rec.record(Metric::Post, d, d * 3);
            rec.record(Metric::Delete, d / 2, d);
        }
        let mut report = Report::default();
        report.set_latency(&rec).unwrap();
        let path = std::env::temp_dir().join(format!("loadgen-plot-{}.png", std::process::id()));
        let path = path.to_string_lossy().into_owned();
        plot(&report, &path, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
