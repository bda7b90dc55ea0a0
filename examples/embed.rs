//! Runs the bridge inside another program through its library API: the configuration is built in
//! code, the bridge serves until Ctrl-C (or for `--seconds N`), then shuts down cleanly, ending
//! every session.
//!
//! ```text
//! cargo run --example embed -- --seconds 5
//! ```

use std::time::Duration;

use bridge::{Bridge, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,rtc_dtls=error")
        .init();
    let seconds: Option<u64> = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?;

    let config = Config {
        // Port 0: let the OS pick, so the example never collides with a running bridge.
        http: "127.0.0.1:0".parse()?,
        udp: "127.0.0.1:0".parse()?,
        max_sessions: 100,
        ..Config::default()
    };
    let bridge = Bridge::start(config).await?;
    println!("WHIP endpoint: http://{}/whip/<stream>", bridge.http_addr());
    println!("metrics:       http://{}/metrics", bridge.http_addr());

    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => tokio::signal::ctrl_c().await?,
    }
    println!(
        "{} session(s) live at shutdown",
        bridge.app().session_count()
    );
    bridge.shutdown().await;
    Ok(())
}
