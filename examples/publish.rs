//! One WHIP publisher, as a small example of the `loadgen` library: POST an offer with no
//! candidates, trickle them by PATCH with the entity tag, stream the test clip, restart ICE the
//! WHIP way, DELETE. Works against any WHIP server.
//!
//! The clip is 2 s of H.264 (640x360, 30 fps, `testsrc2`) and Opus (a sine with a beep every
//! second), committed in `loadgen/data/` (its README says how it was made), compiled into the
//! library and looped; a player of the bridge's HLS output shows it moving.
//!
//! ```text
//! cargo run -p bridge &                      # or any WHIP endpoint
//! cargo run --example publish -- http://127.0.0.1:8080/whip/demo 10
//! ffplay http://127.0.0.1:8080/hls/demo/index.m3u8
//! ```

use std::time::Duration;

use loadgen::{Publisher, PublisherConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/whip/demo".to_owned());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);

    let mut publisher = Publisher::connect(PublisherConfig {
        // Offer without candidates; send them in one PATCH once the 201 gave us the ETag.
        trickle: true,
        token: std::env::var("WHIP_TOKEN").ok(),
        ..PublisherConfig::new(endpoint)
    })
    .await?;
    println!(
        "session {} (ETag {})",
        publisher.session_url(),
        publisher.etag()
    );
    publisher.wait_connected(Duration::from_secs(10)).await?;

    // The test clip in real time, looped, for half the time.
    let first = publisher
        .send_media(Duration::from_secs(seconds / 2))
        .await?;
    println!("sent {first:?}");

    // A network change: new ICE credentials, PATCH with If-Match: "*", new ETag.
    publisher.restart_ice().await?;
    publisher.wait_connected(Duration::from_secs(10)).await?;
    println!("ICE restarted, ETag now {}", publisher.etag());

    let second = publisher
        .send_media(Duration::from_secs(seconds - seconds / 2))
        .await?;
    println!("sent {second:?}");
    println!("DELETE -> {}", publisher.delete().await?);
    Ok(())
}
