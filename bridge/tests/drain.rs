//! Graceful drain of the `bridge` binary (issue 12): SIGTERM while four publishers are live, with
//! HLS on and an RTMP target (nginx-rtmp recording). While it drains, new sessions get `503` +
//! `Retry-After` and `/readyz` `503`, `/healthz` `200`; once `--drain-timeout-secs` has passed
//! the sessions left end cleanly and the process exits 0: every media playlist ends with
//! `EXT-X-ENDLIST`, no temporary file remains, and every recording is whole (ffprobe/ffmpeg
//! find no error, its length is what was published). Missing tools: `SKIPPED`, unless
//! `BRIDGE_REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::*;
use common::nginx::*;
use common::proc::*;

const PUBLISHERS: usize = 4;
/// Short, so that the publishers are still sending when it ends the sessions.
const DRAIN_TIMEOUT_SECS: u64 = 3;
/// Beyond the drain timeout, for a busy machine: the sessions' outputs finishing and the exit.
const EXIT_MARGIN: Duration = Duration::from_secs(10);

fn stream(i: usize) -> String {
    format!("d{i}")
}

/// Each stream's HLS playlist lists a whole segment and its recording has grown past a few
/// keyframes' worth of bytes.
fn media_on_both_outputs(hls: &Path, nginx: &Nginx) -> bool {
    let recordings = nginx.recordings();
    (0..PUBLISHERS).all(|i| {
        let name = stream(i);
        let playlist = std::fs::read_to_string(hls.join(&name).join("index.m3u8"));
        let recorded = recordings.iter().any(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-")))
                && f.metadata().is_ok_and(|m| m.len() > 50_000)
        });
        playlist.is_ok_and(|p| p.contains("#EXTINF")) && recorded
    })
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn sigterm_during_four_live_publishes_ends_every_output_whole() {
    if !Path::new(NGINX).exists() || !Path::new(RTMP_MODULE).exists() {
        return skip(
            "nginx with the RTMP module not found (apt-get install nginx libnginx-mod-rtmp)",
        );
    }
    if !Path::new("/usr/bin/ffprobe").exists() {
        return skip("ffprobe not found (apt-get install ffmpeg)");
    }
    let scratch = Scratch::new();
    let nginx = Nginx::start(&scratch, "nginx", free_port(), None);
    let (http, udp) = free_loopback_ports();
    let target = format!("rtmp://127.0.0.1:{}/live/{{stream}}", nginx.port);
    let hls = scratch.file("hls");
    let mut bridge = Bridge::start_with(
        &scratch,
        None,
        http,
        udp,
        None,
        &[
            "--rtmp".into(),
            target,
            "--drain-timeout-secs".into(),
            DRAIN_TIMEOUT_SECS.to_string(),
        ],
    );

    // The publishers run on a runtime of their own and send far longer than the test lasts: the
    // bridge, not they, ends their sessions. Dropping the runtime stops them.
    let publishers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    for i in 0..PUBLISHERS {
        let config = loadgen::PublisherConfig {
            trickle: true,
            token: Some(TOKEN.to_owned()),
            ..loadgen::PublisherConfig::new(bridge.whip_url(&stream(i)))
        };
        let started_tx = started_tx.clone();
        publishers.spawn(async move {
            let publisher = loadgen::Publisher::connect(config).await.unwrap();
            publisher
                .wait_connected(Duration::from_secs(20))
                .await
                .unwrap();
            started_tx.send(Instant::now()).unwrap();
            // Ends with an error once the bridge has closed the session: expected.
            let _ = publisher.send_media(Duration::from_secs(120)).await;
        });
    }
    let mut first_sent = None;
    for _ in 0..PUBLISHERS {
        let at = started
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("publishers not connected\n{}", bridge.proc.log_tail(40)));
        first_sent.get_or_insert(at);
    }
    let first_sent = first_sent.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while !media_on_both_outputs(&hls, &nginx) {
        assert!(
            Instant::now() < deadline,
            "not every stream reached both outputs: {:?}\n{}",
            nginx.recordings(),
            bridge.proc.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let pid = bridge.proc.child.id().to_string();
    assert!(succeeds(Command::new("kill").args(["-TERM", &pid])));
    let signalled = Instant::now();

    // While it drains: refused with a reason to come back, not ready, alive. The signal is
    // handled asynchronously: wait for readiness to drop first.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (code, _, _) = http_request(http, "GET", "/readyz", None, "").unwrap();
        if code == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {code} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, head, _) = http_request(http, "GET", "/readyz", None, "").unwrap();
    assert_eq!(code, 503);
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    let offer = "v=0\r\n";
    let (code, head, body) =
        http_request(http, "POST", "/whip/late", Some("application/sdp"), offer).unwrap();
    assert_eq!(code, 503, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(DRAIN_TIMEOUT_SECS),
        "the checks while draining took the whole drain timeout: they proved nothing"
    );

    let limit = Duration::from_secs(DRAIN_TIMEOUT_SECS) + EXIT_MARGIN;
    let status = loop {
        if let Some(status) = bridge.proc.exited() {
            break status;
        }
        assert!(
            signalled.elapsed() < limit,
            "bridge still running {limit:?} after SIGTERM\n{}",
            bridge.proc.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "bridge exited {status}\n{}",
        bridge.proc.log_tail(40)
    );
    assert!(
        took >= Duration::from_secs(DRAIN_TIMEOUT_SECS),
        "exited {took:?} after SIGTERM, before the drain timeout, with publishers live"
    );
    drop(publishers);
    let log = bridge.proc.log_text();
    eprintln!("bridge exited 0, {took:?} after SIGTERM");

    // HLS: every media playlist ended, nothing half written left behind.
    let files = files_under(&hls);
    let temporary: Vec<_> = files
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
    for i in 0..PUBLISHERS {
        let playlist = hls.join(stream(i)).join("index.m3u8");
        assert!(
            playlist.exists(),
            "{} missing: {files:?}",
            playlist.display()
        );
    }
    for playlist in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "m3u8"))
    {
        let text = std::fs::read_to_string(playlist).unwrap();
        // A multivariant playlist (`main.m3u8` of a ladder) never ends: its renditions do.
        if text.contains("#EXT-X-STREAM-INF") {
            continue;
        }
        assert!(
            text.trim_end().ends_with("#EXT-X-ENDLIST"),
            "{} does not end with EXT-X-ENDLIST:\n{text}",
            playlist.display()
        );
    }

    // RTMP: one whole recording per stream, as long as what was published up to the end of the
    // drain (the publishers sent until the bridge ended their sessions).
    let recordings = wait_recordings(&nginx, PUBLISHERS);
    assert_eq!(recordings.len(), PUBLISHERS, "{recordings:?}");
    let sent_secs = (signalled.duration_since(first_sent)
        + Duration::from_secs(DRAIN_TIMEOUT_SECS))
    .as_secs_f64();
    for file in &recordings {
        // The output starts at the first keyframe and ends when the session does: generous.
        check_recording(file, sent_secs, 2.5 / sent_secs);
    }
    assert_eq!(
        log.matches("RTMP unpublished").count(),
        PUBLISHERS,
        "every target unpublished\n{log}"
    );
    // nginx logs (at info) the client's deleteStream, then the disconnect (after which it logs
    // a deleteStream of its own): each connection must have unpublished before it closed.
    let nginx_log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap();
    let publishes: Vec<&str> = nginx_log
        .lines()
        .filter(|l| l.contains(" publish: name="))
        .filter_map(connection)
        .collect();
    assert_eq!(publishes.len(), PUBLISHERS, "{nginx_log}");
    for id in publishes {
        let events: Vec<&str> = nginx_log
            .lines()
            .filter(|l| connection(l) == Some(id))
            .filter_map(|l| {
                ["deleteStream", "disconnect"]
                    .into_iter()
                    .find(|e| l.contains(e))
            })
            .collect();
        assert_eq!(
            events.first(),
            Some(&"deleteStream"),
            "nginx connection {id} closed without an unpublish\n{nginx_log}"
        );
    }
}

/// The connection number (`*3`) of an nginx log line.
fn connection(line: &str) -> Option<&str> {
    line.split_whitespace().find(|w| w.starts_with('*'))
}
