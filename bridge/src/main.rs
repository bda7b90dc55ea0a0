//! `bridge` binary: parse the configuration, log, run until Ctrl-C or SIGTERM.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rtc_dtls=error")),
        )
        .with_writer(std::io::stderr)
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
