//! The bridge as Prometheus sees it: the exposition passes `promtool check metrics` after a
//! publish (so that every labelled family has series), and Prometheus itself, run with the
//! shipped `deploy/prometheus.yml` and `deploy/bridge-rules.yml`, scrapes the bridge (`up == 1`)
//! and evaluates every recording rule. Missing `prometheus`/`promtool` (Debian's `prometheus`):
//! `SKIPPED`, unless `BRIDGE_REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::inproc::{endpoint, start_in_process};
use common::proc::{Proc, Scratch, skip};
use loadgen::Publisher;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn tools() -> bool {
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    found("prometheus") && found("promtool")
}

/// `promtool check metrics` on `exposition`: its complaints, if any.
fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The value of an instant query, once it has one (Prometheus's HTTP API).
async fn query(prometheus: &str, expr: &str, deadline: Instant) -> serde_json::Value {
    let url = format!(
        "http://{prometheus}/api/v1/query?query={}",
        expr.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    loop {
        // Nothing listens until Prometheus has started.
        let (status, _, body) =
            common::http::try_get(&url, &[])
                .await
                .unwrap_or((0, String::new(), String::new()));
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(first) = answer["data"]["result"].as_array().and_then(|r| r.first()) {
            return first["value"][1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{expr}: no value: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_bridge_and_evaluates_the_shipped_rules() {
    if !tools() {
        skip("prometheus/promtool not found (Debian: prometheus)");
        return;
    }
    let dir = Scratch::new();
    // An RTMP target nobody listens on: it stays down, which a rule counts.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bridge = start_in_process(|c| {
        c.hls_dir = dir.file("hls");
        c.rtmp = vec![format!("rtmp://{closed}/live/{{stream}}")];
    })
    .await;
    let http = bridge.http_addr();

    // A publish, so that the labelled families (sessions by state, RTP by kind, HLS) have series.
    let publisher = Publisher::connect(endpoint(&bridge, "prom")).await.unwrap();
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    publisher.send_media(Duration::from_secs(2)).await.unwrap();

    let (status, content_type, text) =
        common::http::get(&format!("http://{http}/metrics"), &[]).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        text.contains("bridge_rtp_packets_total{kind=\"video\"}"),
        "{text}"
    );
    promtool_check(&text).unwrap_or_else(|lint| panic!("promtool check metrics:\n{lint}"));
    let (_, content_type, openmetrics) = common::http::get(
        &format!("http://{http}/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));

    // Prometheus with the shipped files, pointed at this bridge.
    let config = std::fs::read_to_string(deploy("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:8080", &http.to_string());
    assert!(
        config.contains(&http.to_string()),
        "the shipped target moved"
    );
    std::fs::write(dir.file("prometheus.yml"), config).unwrap();
    std::fs::copy(deploy("bridge-rules.yml"), dir.file("bridge-rules.yml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.file("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.file("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}")),
        dir.file("prometheus.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(query(&listen, "up{job=\"bridge\"}", deadline).await, "1");
    // Every recording rule evaluates to a series (the publisher is still connected).
    let rules = std::fs::read_to_string(deploy("bridge-rules.yml")).unwrap();
    let records: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    assert!(records.len() >= 6, "{rules}");
    for record in records {
        query(&listen, record, deadline).await;
    }
    for (record, want) in [
        ("instance:bridge_publishers:sum", "1"),
        ("instance:bridge_rtmp_targets_down:count", "1"),
    ] {
        assert_eq!(query(&listen, record, deadline).await, want, "{record}");
    }
    publisher.delete().await.unwrap();
    bridge.shutdown().await;
}
