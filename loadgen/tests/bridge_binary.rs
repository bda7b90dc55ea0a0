//! The publisher against the real bridge binary. Ignored by default because `loadgen` does not
//! build the bridge: run with
//!
//! ```text
//! cargo build -p bridge && cargo test -p loadgen --test bridge_binary -- --ignored
//! ```
//!
//! `BRIDGE_BIN` overrides the binary path (default: `target/debug/bridge` of this workspace).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loadgen::{Publisher, PublisherConfig};

const CONNECT: Duration = Duration::from_secs(10);

/// The bridge process; killed on drop.
struct Bridge {
    child: Child,
    http: SocketAddr,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_bridge(extra: &[&str]) -> Bridge {
    let bin = std::env::var_os("BRIDGE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/bridge"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} missing: cargo build -p bridge",
        bin.display()
    );
    let (http, udp) = (free_tcp(), free_udp());
    let child = Command::new(bin)
        .args(["--http", &http.to_string(), "--udp", &udp.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let bridge = Bridge { child, http };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(http).await.is_ok() {
            return bridge;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bridge did not listen on {http}");
}

async fn publish_restart_delete(trickle: bool) {
    let bridge = start_bridge(&["--token", "t0k"]).await;
    let endpoint = format!("http://{}/whip/demo", bridge.http);

    // Without the token: 401.
    let err = Publisher::connect(PublisherConfig::new(endpoint.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");

    let mut p = Publisher::connect(PublisherConfig {
        token: Some("t0k".into()),
        trickle,
        ..PublisherConfig::new(endpoint)
    })
    .await
    .unwrap();
    assert!(!p.etag().is_empty());
    p.wait_connected(CONNECT).await.unwrap();
    let sent = p.send_media(Duration::from_millis(1500)).await.unwrap();
    assert_eq!(sent.write_errors, 0, "{sent:?}");
    assert_eq!(sent.keyframes, 2, "{sent:?}");

    let old_etag = p.etag().to_owned();
    let old_frag = p.local_sdpfrag();
    p.restart_ice().await.unwrap();
    assert_ne!(p.etag(), old_etag);
    p.wait_connected(CONNECT).await.unwrap();
    let sent = p.send_media(Duration::from_millis(1000)).await.unwrap();
    assert_eq!(sent.write_errors, 0, "{sent:?}");

    // A late PATCH from before the restart: its credentials are not current, so it looks like a
    // restart, and its tag is not "*": 412, and the session survives.
    let (status, _, body) = p.patch_raw(Some(&old_etag), old_frag).await.unwrap();
    assert_eq!(status, 412, "{body:?}");
    // Trickle with the current tag: 204. Without If-Match: 428.
    let (status, _, body) = p
        .patch_raw(Some(p.etag()), p.local_sdpfrag())
        .await
        .unwrap();
    assert_eq!(status, 204, "{body:?}");
    let (status, _, _) = p.patch_raw(None, p.local_sdpfrag()).await.unwrap();
    assert_eq!(status, 428);
    p.wait_connected(CONNECT).await.unwrap();
    // The bridge sends receiver reports.
    assert!(p.rx_stats().rtcp_datagrams > 0, "{:?}", p.rx_stats());

    let url = p.session_url().to_owned();
    assert_eq!(p.delete().await.unwrap(), 200);
    let gone = Publisher::connect(PublisherConfig {
        token: Some("t0k".into()),
        ..PublisherConfig::new(url)
    })
    .await;
    // POST on a deleted session URL is not a WHIP endpoint any more.
    assert!(gone.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the bridge binary: cargo build -p bridge"]
async fn bridge_candidates_in_offer() {
    publish_restart_delete(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the bridge binary: cargo build -p bridge"]
async fn bridge_trickle() {
    publish_restart_delete(true).await;
}
