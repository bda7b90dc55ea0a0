//! `loadgen`: load generator for WHIP servers.
//!
//! * `loadgen signal --url URL ...`: WHIP signalling at scale, checked by an RFC 9725 oracle.
//! * `loadgen publish --url URL --rtmp-listen ADDR --hls URL ...`: H.264 + Opus through a WHIP
//!   bridge, each frame timed from its send to its FLV tag at a built-in RTMP ingest and to the
//!   LL-HLS part holding it at a built-in HLS client.
//! * `loadgen merge A.json B.json ...`: combines the JSON reports of several runs.
//!
//! Exit status: 0 when every gate (`--slo`, `--baseline`) holds, 1 when one does not (the
//! reasons are printed), 2 when the run could not be made. With `publish --ramp`, the `--slo`s
//! are each step's limits instead, and finding the knee is the point: the status is 0 when at
//! least one step held (`--baseline` still applies to the whole run), 1 when none did.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadgen::publish::{self, PublishArgs};
use loadgen::report::{self, Gate, Report, Slo};
use loadgen::signal::{self, SignalArgs};
use tracing_subscriber::EnvFilter;

/// Load generator for WHIP (RFC 9725) servers.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// WHIP signalling at scale: sessions started open loop, shaped like real clients, faults
    /// injected on demand, every answer checked against RFC 9725.
    Signal {
        #[command(flatten)]
        args: Box<SignalArgs>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Media through a WHIP bridge: N publishers send H.264 + Opus with a timestamp SEI in every
    /// frame; with --rtmp-listen, a built-in RTMP server receives what the bridge pushes
    /// (`frame_rtmp`), with --hls, a built-in LL-HLS client follows each stream's playlist
    /// (`frame_hls`); each counts lost, reordered and duplicated frames and the audio/video
    /// drift.
    Publish {
        #[command(flatten)]
        args: Box<PublishArgs>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Combine the --json reports of several runs (histograms are merged, not averaged).
    Merge {
        /// Reports written by --json.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        out: OutputArgs,
    },
}

/// What to do with the results.
#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// Write the report as JSON here (`merge` reads these).
    #[arg(long, help_heading = "Output")]
    json: Option<PathBuf>,
    /// Draw latency percentile curves into this PNG.
    #[arg(long, help_heading = "Output")]
    plot: Option<PathBuf>,
    /// TrueType font for --plot (default: DejaVu Sans or Liberation Sans from the system).
    #[arg(long, help_heading = "Output")]
    plot_font: Option<PathBuf>,
    /// Exit 1 unless this holds, e.g. 'post.p99<50ms', 'post.corrected.p99<80ms',
    /// 'violations==0', 'sessions.failed==0', 'frame_rtmp.p99<200ms', 'frame_hls.p99<1s',
    /// 'frames.lost==0', 'hls.frames.lost==0', 'av_drift<100ms',
    /// 'server.cpu_per_publisher<12ms', 'server.rss_per_session<200KiB' (repeatable).
    #[arg(long = "slo", value_name = "EXPR", help_heading = "CI gate")]
    slos: Vec<Slo>,
    /// Exit 1 on a regression against this earlier --json report.
    #[arg(long, value_name = "FILE", help_heading = "CI gate")]
    baseline: Option<PathBuf>,
    /// Largest allowed growth of each metric's corrected p50 and p99 over the baseline.
    #[arg(long, default_value = "25%", value_parser = report::parse_fraction, help_heading = "CI gate")]
    max_regression: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,rtc=error")),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text for journald, files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let (report, out) = match cli.command {
        Command::Signal { args, out } => match signal::run(&args).await {
            Ok(run) => {
                if let (Some(path), Some(hlog)) = (&args.hlog, &run.hlog)
                    && let Err(e) = std::fs::write(path, hlog)
                {
                    eprintln!("loadgen: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
                (run.report, out)
            }
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Publish { args, out } => match publish::run_with_limits(&args, &out.slos).await {
            Ok(report) => (report, out),
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Merge { files, out } => {
            let reports: Result<Vec<Report>, _> = files
                .iter()
                .map(|f| Report::load(&f.to_string_lossy()))
                .collect();
            match reports.and_then(|r| Report::merge(&r)) {
                Ok(report) => (report, out),
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    finish(&report, &out)
}

/// Prints the table, writes the outputs and applies the gates.
fn finish(report: &Report, out: &OutputArgs) -> ExitCode {
    print!("{}", report.table());
    if let Some(path) = &out.json
        && let Err(e) = report.save(&path.to_string_lossy())
    {
        eprintln!("loadgen: {e}");
        return ExitCode::from(2);
    }
    if let Some(path) = &out.plot {
        let font = out.plot_font.as_ref().map(|p| p.to_string_lossy());
        if let Err(e) = report::plot(report, &path.to_string_lossy(), font.as_deref()) {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    }
    let baseline = match &out.baseline {
        Some(path) => match Report::load(&path.to_string_lossy()) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("loadgen: baseline: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let gate = Gate {
        // A ramp has read them per step already: a broken limit ends the ramp, not the run.
        slos: if report.ramp.is_some() {
            Vec::new()
        } else {
            out.slos.clone()
        },
        baseline,
        max_regression: out.max_regression,
    };
    let mut reasons = gate.check(report);
    if let Some(ramp) = &report.ramp
        && ramp.knee.is_none()
    {
        let why = ramp
            .steps
            .first()
            .map(|s| s.broken.join("; "))
            .unwrap_or_default();
        reasons.push(format!("--ramp: not even the first step held: {why}"));
    }
    if reasons.is_empty() {
        return ExitCode::SUCCESS;
    }
    for r in &reasons {
        eprintln!("loadgen: FAIL: {r}");
    }
    ExitCode::from(1)
}
