//! `bridge` binary: parse the configuration, log, run until Ctrl-C or SIGTERM, then drain.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc with its background purge threads, rather than glibc's malloc. A WHIP session's
/// set-up allocates and frees in bursts across threads; glibc kept those pages in its per-thread
/// arenas, pinned by a few live blocks at their tops: 3,000 sessions held and ended left the
/// bridge at 335 MB (from 10 MB) for good. jemalloc gives them back within its decay time
/// (60 MB ten seconds later), needs 76 KB a live session instead of 108 KB, and set each one up
/// with about a fifth less CPU (measured with `loadgen signal`; README, "Capacity").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rtc_dtls=error")),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text for journald, files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Every setting is parsed before anything binds: a bad one exits with 2 and its reason.
    let settings = match bridge::Cli::parse()
        .into_config()
        .and_then(bridge::Config::into_settings)
    {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("bridge: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let running = match bridge::Bridge::start_with(settings).await {
        Ok(b) => b,
        Err(err) => {
            eprintln!("bridge: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    let drain_timeout = running.app().settings.whip.drain_timeout;
    tracing::info!(
        ?drain_timeout,
        "draining (a second signal ends the sessions at once)"
    );
    tokio::select! {
        () = running.drain(drain_timeout) => {}
        () = wait_for_signal() => tracing::info!("second signal"),
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
