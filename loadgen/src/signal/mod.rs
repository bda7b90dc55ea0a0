//! `loadgen signal`: WHIP signalling at scale.
//!
//! Sessions start open loop, on a schedule fixed in advance (constant rate or Poisson), each in
//! its own task, so a slow server cannot slow the test down. Each session follows a plan
//! ([`scenario`]) shaped like a real client ([`profile`]), with faults injected on demand; every
//! exchange goes to the oracle ([`oracle`]) when the session ends, and every answer's latency to
//! the histograms as it arrives, timed both from the request's actual start (raw) and from its
//! intended start (corrected for coordinated omission).
//!
//! A single collector task owns the histograms and the oracle; sessions talk to it by message.

mod connect;
pub mod oracle;
pub mod profile;
pub mod scenario;
mod session;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser as _;
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::parse_duration;
use crate::report::Report;
use crate::report::progress::{self, Field, ProgressSource};
use crate::server::ServerReport;
use crate::stats::{Metric, Recorder};
use crate::whip_client::{Exchange, WhipHttp};
use oracle::{EtagMode, Failure, Oracle, Tally};
use profile::{Identity, Profile, ProfileChoice};
use scenario::{FaultRatios, Faults, PlanConfig};

/// Sessions are spawned this long before their start, so that drawing the plan and building the
/// offer do not make the POST late.
const PREPARE_AHEAD: Duration = Duration::from_millis(10);
/// The first session's intended start, after setting up: the generator's own start-up must not
/// count as the server's latency.
const START_DELAY: Duration = Duration::from_millis(50);
/// Failures shown at the end (the rest are only counted).
const FAILURE_EXAMPLES: usize = 10;

/// Options of `loadgen signal`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignalArgs {
    /// WHIP endpoint URL; `{i}` is replaced by the session number, giving each session its own
    /// stream (without it all sessions publish one stream, which a server may hand over).
    #[arg(long)]
    pub url: String,
    /// Bearer token sent on every request.
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sessions in all.
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// New sessions per second, open loop.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Poisson arrivals (exponential gaps averaging 1/rate) instead of a constant rate.
    #[arg(long)]
    pub poisson: bool,
    /// Client behaviour.
    #[arg(long, value_enum, default_value = "chromium")]
    pub profile: ProfileChoice,
    /// How long each session stays up once its candidates are sent (e.g. 30s, 500ms).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Trickle PATCHes per ICE session (chromium): N or MIN..MAX.
    #[arg(long, default_value = "2..3", value_parser = parse_count_range)]
    pub trickle_patches: CountRange,
    /// Gap before each trickle PATCH: D or MIN..MAX.
    #[arg(long, default_value = "20ms..50ms", value_parser = parse_duration_range)]
    pub trickle_gap: DurationRange,
    /// Fraction of the sessions (of profiles that PATCH) that restart ICE during their hold.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub restart_ratio: f64,

    /// Fraction of sessions sending their trickle PATCHes out of order on separate connections.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub reorder: f64,
    /// Fraction of sessions sending every PATCH twice at once.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub duplicate: f64,
    /// Fraction of sessions sending a pre-restart PATCH (old tag, old ufrag) after a restart.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub stale_after_restart: f64,
    /// Fraction of sessions sending one trickle PATCH without If-Match.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub no_if_match: f64,
    /// Fraction of sessions restarting ICE while a trickle PATCH is in flight.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub restart_race: f64,
    /// Fraction of sessions sending their DELETE 4 times at once, then a PATCH and a DELETE.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub delete_storm: f64,
    /// Fraction of sessions also POSTing 8 offers at once (to `{i}-flood{k}`).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio, help_heading = "Faults")]
    pub post_flood: f64,

    /// Also complete ICE + DTLS with a real WebRTC peer per session, timing connection and
    /// reconnection after a restart.
    #[arg(long)]
    pub connect: bool,
    /// With --connect: how long ICE + DTLS may take.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ice_timeout: Duration,
    /// The only address candidates name.
    #[arg(long, default_value = "127.0.0.1")]
    pub candidate_ip: IpAddr,
    /// The entity-tag mode the server runs in (what the oracle expects of trickle PATCHes).
    #[arg(long, value_enum, default_value = "strict")]
    pub server_etag: EtagMode,
    /// Limit for one HTTP exchange.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// POST retries on 429/503 (after Retry-After).
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Seed of every random choice (default: random; printed in the report's command).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write an HdrHistogram interval log (.hlog) per metric here.
    #[arg(long, help_heading = "Output")]
    pub hlog: Option<PathBuf>,
    /// Interval of the --hlog log.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Output")]
    pub hlog_interval: Duration,
    /// Show progress even when stderr is not a terminal (one line every 2 s).
    #[arg(long, help_heading = "Output")]
    pub progress: bool,
    /// Examples logged per violation kind.
    #[arg(long, default_value_t = 5, help_heading = "Output")]
    pub examples: usize,
    /// The server's Prometheus metrics, scraped before the first session and after the last one
    /// ended, to report the server's CPU and RSS growth per session set up (`off`: do not;
    /// default: the --url's origin, or what comes before its `/whip/`, + `/metrics`). Any server with the standard process metrics.
    #[arg(long, value_name = "URL|off", help_heading = "Output")]
    pub server_metrics: Option<String>,
}

/// Parses `SignalArgs` from arguments (without the program name or subcommand), for tests and
/// embedders.
pub fn parse_args<I, T>(args: I) -> Result<SignalArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SignalArgs,
    }
    let argv =
        std::iter::once(std::ffi::OsString::from("signal")).chain(args.into_iter().map(Into::into));
    Wrapper::try_parse_from(argv).map(|w| w.args)
}

/// An inclusive count range (`2..3`, or `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange(pub u32, pub u32);

/// An inclusive duration range (`20ms..50ms`, or `30ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange(pub Duration, pub Duration);

fn parse_count_range(text: &str) -> Result<CountRange, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not N or MIN..MAX"))
    };
    let (lo, hi) = match text.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b.trim_start_matches('='))?),
        None => (parse(text)?, parse(text)?),
    };
    if lo > hi {
        return Err(format!("{text:?}: MIN is above MAX"));
    }
    Ok(CountRange(lo, hi))
}

fn parse_duration_range(text: &str) -> Result<DurationRange, String> {
    let (lo, hi) = match text.split_once("..") {
        Some((a, b)) => (
            parse_duration(a)?,
            parse_duration(b.trim_start_matches('='))?,
        ),
        None => (parse_duration(text)?, parse_duration(text)?),
    };
    if lo > hi {
        return Err(format!("{text:?}: MIN is above MAX"));
    }
    Ok(DurationRange(lo, hi))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    crate::report::parse_fraction(text)
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{text:?} is not a ratio between 0 and 1 (or 0% to 100%)"))
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Contradictory or impossible options.
    #[error("{0}")]
    Usage(String),
    /// Setting up the offers' identity failed.
    #[error(transparent)]
    Identity(#[from] profile::IdentityError),
    /// The histograms could not be summarised or logged.
    #[error(transparent)]
    Histogram(#[from] crate::stats::HistogramError),
    /// The collector task died.
    #[error("the collector task failed: {0}")]
    Collector(String),
}

/// What a run produced.
#[derive(Debug)]
pub struct SignalRun {
    /// The results.
    pub report: Report,
    /// The `.hlog` text, with `--hlog`.
    pub hlog: Option<Vec<u8>>,
}

/// Counters the progress display reads.
#[derive(Debug, Default)]
struct Progress {
    started: AtomicU64,
    active: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    violations: AtomicU64,
    errors: AtomicU64,
}

/// A session's outcome, sent to the collector when it ends.
#[derive(Debug)]
struct SessionResult {
    index: u64,
    profile: Profile,
    faults: Faults,
    exchanges: Vec<Exchange>,
    /// What the runner saw go wrong beyond HTTP (ICE, the publisher refusing an answer).
    failure: Option<(Failure, String)>,
}

#[derive(Debug)]
enum Event {
    Latency {
        metric: Metric,
        raw: Duration,
        corrected: Duration,
    },
    Session(Box<SessionResult>),
    /// One flood POST and the DELETE of what it created, judged as a session of its own.
    Flood {
        label: String,
        exchanges: Vec<Exchange>,
    },
}

/// A request to make.
#[derive(Debug, Clone)]
struct Req {
    method: hyper::Method,
    url: String,
    content_type: Option<&'static str>,
    if_match: Option<String>,
    body: bytes::Bytes,
}

/// What every session task shares.
#[derive(Debug)]
struct Ctx {
    args: SignalArgs,
    plan: PlanConfig,
    identity: Identity,
    http: WhipHttp,
    events: mpsc::UnboundedSender<Event>,
    progress: Arc<Progress>,
    shutdown: watch::Receiver<bool>,
}

impl Ctx {
    fn endpoint(&self, index: u64) -> String {
        self.args.url.replace("{i}", &index.to_string())
    }

    fn flood_endpoint(&self, index: u64, k: usize) -> String {
        self.args.url.replace("{i}", &format!("{index}-flood{k}"))
    }

    fn record(&self, metric: Metric, e: &Exchange, intended: Instant) {
        if e.outcome.is_ok() {
            let _ = self.events.send(Event::Latency {
                metric,
                raw: e.elapsed(),
                corrected: e.received.saturating_duration_since(intended),
            });
        }
    }

    fn record_span(&self, metric: Metric, from_actual: Instant, from_intended: Instant) {
        let now = Instant::now();
        let _ = self.events.send(Event::Latency {
            metric,
            raw: now.saturating_duration_since(from_actual),
            corrected: now.saturating_duration_since(from_intended),
        });
    }

    /// Waits until `at`; false if the run is being stopped.
    async fn sleep_until(&self, at: Instant) -> bool {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Sends `req` no earlier than `not_before`; with `timing`, records its latency under that
    /// metric from that intended start.
    async fn send(
        &self,
        req: Req,
        not_before: Instant,
        timing: Option<(Metric, Instant)>,
    ) -> Exchange {
        tokio::time::sleep_until(not_before.into()).await;
        self.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        let e = self
            .http
            .exchange(
                req.method,
                &req.url,
                req.content_type,
                req.if_match.as_deref(),
                req.body,
            )
            .await;
        self.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
        if e.outcome.is_err() {
            self.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((metric, intended)) = timing {
            self.record(metric, &e, intended);
        }
        e
    }
}

impl SignalArgs {
    fn validate(&self) -> Result<(), SignalError> {
        let usage = |m: &str| Err(SignalError::Usage(m.to_owned()));
        if !self.url.starts_with("http://") {
            return usage("--url must be an http:// URL");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return usage("--rate must be above 0");
        }
        if self.sessions == 0 {
            return usage("--sessions must be at least 1");
        }
        if self.hlog_interval.is_zero() {
            return usage("--hlog-interval must be above 0");
        }
        if self.connect && (self.reorder > 0.0 || self.duplicate > 0.0 || self.restart_race > 0.0) {
            return usage(
                "--connect sessions signal like the real publisher: --reorder, --duplicate and --restart-race need signalling-only sessions",
            );
        }
        Ok(())
    }

    fn plan_config(&self, seed: u64) -> PlanConfig {
        PlanConfig {
            seed,
            profile: self.profile,
            trickle_patches: (self.trickle_patches.0, self.trickle_patches.1),
            trickle_gap: (self.trickle_gap.0, self.trickle_gap.1),
            restart_ratio: self.restart_ratio,
            hold: self.hold,
            faults: FaultRatios {
                reorder: self.reorder,
                duplicate: self.duplicate,
                stale_after_restart: self.stale_after_restart,
                no_if_match: self.no_if_match,
                restart_race: self.restart_race,
                delete_storm: self.delete_storm,
                post_flood: self.post_flood,
            },
        }
    }
}

/// Runs `loadgen signal` to the end (or until Ctrl-C, after which holds are cut short and every
/// session still DELETEs).
pub async fn run(args: &SignalArgs) -> Result<SignalRun, SignalError> {
    args.validate()?;
    if !args.url.contains("{i}") && args.sessions > 1 {
        eprintln!(
            "loadgen: --url has no {{i}}: all sessions publish one stream; a server that hands a stream over to a new publisher ends the previous session"
        );
    }
    let seed = args
        .seed
        .unwrap_or_else(|| getrandom::u64().unwrap_or(0x5EED));
    let stray = Arc::new(AtomicU64::new(0));
    let identity = Identity::new(args.candidate_ip, stray.clone()).await?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress::default());
    let (stop, shutdown) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        plan: args.plan_config(seed),
        identity,
        http: WhipHttp::new(args.token.clone()).with_timeout(args.timeout),
        events,
        progress: progress.clone(),
        shutdown: shutdown.clone(),
    });
    // Scraped before the schedule is set, so a slow endpoint does not make sessions late.
    let server_url = crate::server::metrics_url(args.server_metrics.as_deref(), &args.url);
    let server_start = match &server_url {
        Some(url) => Some(crate::server::scrape(url).await),
        None => None,
    };
    let started_wall = SystemTime::now() + START_DELAY;
    // The schedule starts a little later than now, so the first sessions are ready on time.
    let t0 = Instant::now() + START_DELAY;
    let collector = tokio::spawn(collect(
        events_rx,
        Collector::new(args, progress.clone()),
        args.hlog_interval,
        t0,
    ));
    let display = spawn_progress(args, progress.clone());
    let ctrl_c = tokio::spawn(async move {
        interrupted().await;
        eprintln!("loadgen: stopping: no new sessions, holds cut short");
        let _ = stop.send(true);
    });

    let mut tasks = JoinSet::new();
    let mut arrivals = SmallRng::seed_from_u64(seed.rotate_left(17));
    let mut offset = Duration::ZERO;
    let mut planned = 0;
    for index in 0..args.sessions {
        if index > 0 {
            offset += if args.poisson {
                // Inverse transform of an exponential: -ln(1 - U) / rate.
                let u: f64 = arrivals.random();
                Duration::from_secs_f64(-(1.0 - u).ln() / args.rate)
            } else {
                Duration::from_secs_f64(1.0 / args.rate)
            };
        }
        let start = t0 + offset;
        if !ctx
            .sleep_until(start.checked_sub(PREPARE_AHEAD).unwrap_or(start))
            .await
        {
            break;
        }
        planned += 1;
        progress.started.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(session_task(ctx.clone(), index, start));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let duration = t0.elapsed();
    let server = match (&server_url, server_start) {
        (Some(url), Some(Ok(start))) => Some(match crate::server::scrape(url).await {
            Ok(end) => ServerReport::of(url, &start, &end, 0, planned),
            Err(e) => ServerReport::failed(url, e),
        }),
        (Some(url), Some(Err(e))) => Some(ServerReport::failed(url, e)),
        _ => None,
    };
    ctrl_c.abort();
    drop(ctx);
    let mut collector = collector
        .await
        .map_err(|e| SignalError::Collector(e.to_string()))??;
    if let Some(display) = display {
        display.finish().await;
    }
    let mut report = std::mem::take(&mut collector.report);
    report.commands = vec![command_line(seed)];
    report.duration_s = duration.as_secs_f64();
    report.sessions.planned = planned;
    report.stray_datagrams = stray.load(Ordering::Relaxed);
    report.server = server;
    report.set_latency(&collector.recorder)?;
    for (kind, n) in &collector.tally.counts {
        report.violations.by_kind.insert(kind.name().to_owned(), *n);
    }
    report.violations.total = collector.tally.total();
    for (kind, examples) in &collector.tally.examples {
        report
            .violation_examples
            .insert(kind.name().to_owned(), examples.clone());
    }
    Ok(SignalRun {
        report,
        hlog: collector.recorder.interval_log(started_wall),
    })
}

/// Waits for Ctrl-C or SIGTERM (a signal that cannot be listened for, e.g. SIGINT ignored in a
/// background job, just never comes).
async fn interrupted() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                () = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    ctrl_c.await;
}

/// The command line, with the seed made explicit so the run can be repeated.
fn command_line(seed: u64) -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args
        .iter()
        .any(|a| a == "--seed" || a.starts_with("--seed="))
    {
        args.push(format!("--seed={seed}"));
    }
    args.join(" ")
}

async fn session_task(ctx: Arc<Ctx>, index: u64, start: Instant) {
    ctx.progress.active.fetch_add(1, Ordering::Relaxed);
    let plan = scenario::plan(&ctx.plan, &ctx.identity, index);
    let result = if ctx.args.connect {
        connect::run(&ctx, plan, start).await
    } else {
        session::run(&ctx, plan, start).await
    };
    ctx.progress.active.fetch_sub(1, Ordering::Relaxed);
    let _ = ctx.events.send(Event::Session(Box::new(result)));
}

/// The collector's state: histograms, oracle, counts.
#[derive(Debug)]
struct Collector {
    recorder: Recorder,
    oracle: Oracle,
    tally: Tally,
    report: Report,
    progress: Arc<Progress>,
}

impl Collector {
    fn new(args: &SignalArgs, progress: Arc<Progress>) -> Self {
        Self {
            recorder: Recorder::new(args.hlog.is_some()),
            oracle: Oracle::new(args.server_etag),
            tally: Tally::new(args.examples),
            report: Report::default(),
            progress,
        }
    }

    fn count_statuses(&mut self, prefix: &str, exchanges: &[Exchange]) {
        for e in exchanges {
            if let Ok(answer) = &e.outcome
                && e.method == hyper::Method::POST
                && matches!(answer.status, 429 | 503)
            {
                let refusals = &mut self.report.refusals;
                refusals.count += 1;
                refusals.with_retry_after += u64::from(answer.header("retry-after").is_some());
            }
            let status = e
                .status()
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
            *self
                .report
                .statuses
                .entry(format!("{prefix}{}", e.method))
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Latency {
                metric,
                raw,
                corrected,
            } => self.recorder.record(metric, raw, corrected),
            Event::Session(result) => self.session(*result),
            Event::Flood { label, exchanges } => {
                self.count_statuses("flood ", &exchanges);
                let verdict = self.oracle.check(&label, &exchanges);
                let n = self.tally.add(&verdict);
                self.progress.violations.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn session(&mut self, result: SessionResult) {
        let SessionResult {
            index,
            profile,
            faults,
            exchanges,
            failure,
        } = result;
        self.count_statuses("", &exchanges);
        let label = format!("{index} ({})", profile.name());
        let mut verdict = self.oracle.check(&label, &exchanges);
        if verdict.failure.is_none() {
            verdict.failure = failure;
        }
        let n = self.tally.add(&verdict);
        self.progress.violations.fetch_add(n, Ordering::Relaxed);
        let report = &mut self.report;
        *report
            .profiles
            .entry(profile.name().to_owned())
            .or_default() += 1;
        for fault in faults.names() {
            *report.faults.entry(fault.to_owned()).or_default() += 1;
        }
        let created = exchanges
            .iter()
            .rfind(|e| e.method == hyper::Method::POST && e.status() == Some(201));
        if let Some(node) = created.and_then(|e| crate::sdp::node_base(&e.url)) {
            *report.nodes.entry(node.to_owned()).or_default() += 1;
        }
        report.sessions.unchecked_patches += verdict.unchecked;
        if verdict.ok() {
            report.sessions.ok += 1;
        } else {
            report.sessions.failed += 1;
            self.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((failure, reason)) = verdict.failure {
            *report
                .sessions
                .failures
                .entry(failure.name().to_owned())
                .or_default() += 1;
            if report.failure_examples.len() < FAILURE_EXAMPLES {
                report
                    .failure_examples
                    .push(format!("{}: {reason}", failure.name()));
            }
        }
        self.progress.done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn collect(
    mut events: mpsc::UnboundedReceiver<Event>,
    mut state: Collector,
    interval: Duration,
    t0: Instant,
) -> Result<Collector, SignalError> {
    let mut tick = tokio::time::interval_at((t0 + interval).into(), interval);
    let mut closed = Duration::ZERO;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(e) => state.handle(e),
                None => break,
            },
            _ = tick.tick() => {
                let now = t0.elapsed();
                state.recorder.close_interval(closed, now - closed)?;
                closed = now;
            }
        }
    }
    let now = t0.elapsed();
    state
        .recorder
        .close_interval(closed, now.saturating_sub(closed))?;
    Ok(state)
}

impl ProgressSource for Progress {
    fn sample(&self) -> progress::Sample {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = count(&self.started);
        progress::Sample {
            position: started,
            fields: vec![
                Field::Rate("rate", started),
                Field::Count("active", count(&self.active)),
                Field::Count("in flight", count(&self.in_flight)),
                Field::Count("done", count(&self.done)),
                Field::Count("failed", count(&self.failed)),
                Field::Count("violations", count(&self.violations)),
                Field::Count("errors", count(&self.errors)),
            ],
        }
    }
}

/// The live progress line on stderr: a bar on a terminal, or a line every 2 s with --progress.
fn spawn_progress(args: &SignalArgs, progress: Arc<Progress>) -> Option<progress::Display> {
    let line = progress::Line {
        total: args.sessions,
        label: "started",
        force: args.progress,
        // The schedule starts a little later than now, so the first sessions are ready on time.
        t0: Instant::now() + START_DELAY,
    };
    progress::spawn(line, progress)
}
