//! The live progress line of `signal` and `publish` on stderr: an indicatif bar on a terminal, or
//! (when asked) a plain line every 2 s where stderr is a file or a CI log.
//!
//! A run exposes its counters through [`ProgressSource`]; this module draws them, turning the
//! cumulative ones into rates.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Refresh period on a terminal.
const PERIOD_TTY: Duration = Duration::from_millis(250);
/// Print period elsewhere.
const PERIOD_LOG: Duration = Duration::from_secs(2);

/// One value on the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A cumulative count shown as its rate since the previous draw: `name 12/s`.
    Rate(&'static str, u64),
    /// A count shown as is: `name 12`.
    Count(&'static str, u64),
}

/// What the line shows at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// The bar's position (of [`Line::total`]).
    pub position: u64,
    /// The values after the bar, in order.
    pub fields: Vec<Field>,
}

/// Counters a run exposes to the progress line.
pub trait ProgressSource: Send + Sync + 'static {
    /// The current values.
    fn sample(&self) -> Sample;
}

/// How the line looks.
#[derive(Debug, Clone)]
pub struct Line {
    /// The bar's length.
    pub total: u64,
    /// What the position counts, e.g. `started`.
    pub label: &'static str,
    /// Also print (every 2 s) when stderr is not a terminal.
    pub force: bool,
    /// The run's start, for elapsed times and the first rates.
    pub t0: Instant,
}

/// The line being drawn.
#[derive(Debug)]
pub struct Display {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Display {
    /// Draws the final values at once and stops.
    pub async fn finish(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Starts drawing `source` on stderr until [`Display::finish`], or returns `None` when stderr
/// is not a terminal and `force` is off.
pub fn spawn(line: Line, source: Arc<dyn ProgressSource>) -> Option<Display> {
    let tty = std::io::stderr().is_terminal();
    if !tty && !line.force {
        return None;
    }
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let bar = tty.then(|| {
            let bar = indicatif::ProgressBar::new(line.total);
            let template = format!(
                "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {}  {{msg}}",
                line.label
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let period = if tty { PERIOD_TTY } else { PERIOD_LOG };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut rates = Rates::new(line.t0);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = stopped.notified() => true,
            };
            let sample = source.sample();
            let msg = rates.render(&sample.fields, Instant::now());
            match &bar {
                Some(bar) => {
                    bar.set_position(sample.position);
                    bar.set_message(msg);
                }
                None => eprintln!(
                    "[{:6.1}s] {} {}/{}  {msg}",
                    line.t0.elapsed().as_secs_f64(),
                    line.label,
                    sample.position,
                    line.total
                ),
            }
            if last {
                if let Some(bar) = &bar {
                    bar.finish();
                }
                break;
            }
        }
    });
    Some(Display { stop, task })
}

/// The previous draw's cumulative values, for rates.
#[derive(Debug)]
struct Rates {
    last: Vec<u64>,
    at: Instant,
}

impl Rates {
    fn new(t0: Instant) -> Self {
        Self {
            last: Vec::new(),
            at: t0,
        }
    }

    /// The message for `fields` at `now`.
    fn render(&mut self, fields: &[Field], now: Instant) -> String {
        let secs = now
            .saturating_duration_since(self.at)
            .as_secs_f64()
            .max(1e-3);
        let mut msg = String::new();
        let mut values = Vec::with_capacity(fields.len());
        for (i, field) in fields.iter().enumerate() {
            if !msg.is_empty() {
                msg.push_str("  ");
            }
            match *field {
                Field::Rate(name, total) => {
                    let before = self.last.get(i).copied().unwrap_or(0);
                    let rate = total.saturating_sub(before) as f64 / secs;
                    let _ = write!(msg, "{name} {rate:.0}/s");
                    values.push(total);
                }
                Field::Count(name, n) => {
                    let _ = write!(msg, "{name} {n}");
                    values.push(n);
                }
            }
        }
        self.last = values;
        self.at = now;
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_since_the_previous_draw() {
        let t0 = Instant::now();
        let mut r = Rates::new(t0);
        let fields = [Field::Rate("rate", 50), Field::Count("active", 7)];
        assert_eq!(
            r.render(&fields, t0 + Duration::from_millis(500)),
            "rate 100/s  active 7"
        );
        let fields = [Field::Rate("rate", 80), Field::Count("active", 3)];
        assert_eq!(
            r.render(&fields, t0 + Duration::from_millis(1500)),
            "rate 30/s  active 3"
        );
    }
}
