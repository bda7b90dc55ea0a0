//! RTMP output against a real ingest: nginx with the RTMP module recording what the bridge
//! pushes (`record all`), a real WHIP publisher (FFmpeg 9) feeding the bridge, and Debian's
//! ffprobe/ffmpeg judging the recordings. Also rtmps:// through nginx's TLS stream proxy, and two
//! targets with one killed and restarted mid-stream. Missing tools: `SKIPPED`, unless
//! `BRIDGE_REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::*;
use common::netns::*;
use common::nginx::*;
use common::peers::*;
use common::proc::*;

fn tools() -> Option<PathBuf> {
    if !Path::new(NGINX).exists() || !Path::new(RTMP_MODULE).exists() {
        skip("nginx with the RTMP module not found (apt-get install nginx libnginx-mod-rtmp)");
        return None;
    }
    if !Path::new("/usr/bin/ffprobe").exists() {
        skip("ffprobe not found (apt-get install ffmpeg)");
        return None;
    }
    let ffmpeg = ffmpeg_whip();
    if ffmpeg.is_none() {
        skip("ffmpeg with the WHIP muxer not found (pip install imageio-ffmpeg)");
    }
    ffmpeg
}

fn publish(ffmpeg: &Path, scratch: &Scratch, http: SocketAddr, stream: &str, secs: u32) -> Proc {
    Proc::spawn(
        "ffmpeg",
        &mut ffmpeg_publish(ffmpeg, &format!("http://{http}/whip/{stream}"), secs),
        scratch.file("ffmpeg.log"),
    )
}

fn wait_exit(p: &mut Proc, bridge: &Bridge<'_>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while p.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "{} still running\n{}\n{}",
            p.name,
            p.log_tail(30),
            bridge.proc.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ffmpeg_whip_to_nginx_rtmp_records_h264_and_aac() {
    let _serial = serial();
    let Some(ffmpeg) = tools() else { return };
    let scratch = Scratch::new();
    let nginx = Nginx::start(&scratch, "nginx", free_port(), None);
    let (http, udp) = free_loopback_ports();
    let target = format!("rtmp://127.0.0.1:{}/live/{{stream}}", nginx.port);
    let bridge = Bridge::start_with(&scratch, None, http, udp, None, &["--rtmp".into(), target]);
    let mut publisher = publish(&ffmpeg, &scratch, http, "cam", 10);
    wait_exit(&mut publisher, &bridge, Duration::from_secs(60));
    let files = wait_recordings(&nginx, 1);
    assert_eq!(files.len(), 1, "{files:?}");
    check_recording(&files[0], 10.0, 0.05);
}

#[test]
fn rtmps_through_a_tls_terminator() {
    let _serial = serial();
    let Some(ffmpeg) = tools() else { return };
    if !Path::new(STREAM_MODULE).exists() {
        return skip("nginx stream module not found (apt-get install libnginx-mod-stream)");
    }
    let scratch = Scratch::new();
    let pki = scratch.file("pki");
    std::fs::create_dir_all(&pki).unwrap();
    // A CA and a server certificate it signs (webpki refuses a CA certificate as end entity).
    std::fs::write(
        pki.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for args in [
        format!("req -x509 {ec} -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem"),
        format!("req {ec} -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr"),
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext \
         -out cert.pem"
            .to_owned(),
    ] {
        let made = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&pki)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let tls_port = free_port();
    let nginx = Nginx::start(&scratch, "nginx", free_port(), Some((tls_port, &pki)));
    let (http, udp) = free_loopback_ports();
    let target = format!("rtmps://127.0.0.1:{tls_port}/live/{{stream}}");
    let ca = pki.join("ca.pem").display().to_string();
    let bridge = Bridge::start_with(
        &scratch,
        None,
        http,
        udp,
        None,
        &["--rtmp".into(), target, "--rtmp-ca".into(), ca],
    );
    let mut publisher = publish(&ffmpeg, &scratch, http, "secure", 6);
    wait_exit(&mut publisher, &bridge, Duration::from_secs(60));
    let files = wait_recordings(&nginx, 1);
    assert_eq!(
        files.len(),
        1,
        "nothing came through TLS\n{}",
        bridge.proc.log_tail(30)
    );
    check_recording(&files[0], 6.0, 0.05);
}

#[test]
fn a_killed_target_does_not_disturb_the_other_and_resumes() {
    let _serial = serial();
    let Some(ffmpeg) = tools() else { return };
    let scratch = Scratch::new();
    let steady = Nginx::start(&scratch, "steady", free_port(), None);
    let flaky_port = free_port();
    let mut flaky = Nginx::start(&scratch, "flaky", flaky_port, None);
    let (http, udp) = free_loopback_ports();
    let args = [
        "--rtmp".to_owned(),
        format!("rtmp://127.0.0.1:{}/live/{{stream}}", steady.port),
        "--rtmp".to_owned(),
        format!("rtmp://127.0.0.1:{flaky_port}/live/{{stream}}"),
    ];
    let bridge = Bridge::start_with(&scratch, None, http, udp, None, &args);
    let mut publisher = publish(&ffmpeg, &scratch, http, "two", 16);
    std::thread::sleep(Duration::from_secs(5));
    flaky.proc.kill();
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Nginx::start(&scratch, "flaky2", flaky_port, None);
    // The bridge redials with backoff (0.5 s, 1 s, 2 s...) and resumes at a keyframe.
    let mut reconnects = 0.0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while reconnects < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        reconnects = bridge.metrics().sum("bridge_rtmp_reconnects_total", &[]);
    }
    assert!(
        reconnects >= 1.0,
        "no reconnect\n{}",
        bridge.proc.log_tail(40)
    );
    wait_exit(&mut publisher, &bridge, Duration::from_secs(60));
    let files = wait_recordings(&steady, 1);
    check_recording(&files[0], 16.0, 0.05);
    let resumed = wait_recordings(&restarted, 1);
    let p = probe(&resumed[0]);
    assert!(p.duration > 4.0, "resumed for {} s only", p.duration);
    check_recording(&resumed[0], p.duration, 0.01);
}

/// aiortc (H.264 via PyAV + Opus, candidates in the offer, actpass), bridge and nginx together
/// in a network namespace of the test's own.
#[test]
fn aiortc_to_nginx_rtmp_records_h264_and_aac() {
    let _serial = serial();
    if tools().is_none() {
        return;
    }
    if !aiortc_available() {
        return skip("aiortc not found (pip install aiortc)");
    }
    let Some(ns) = Netns::create_or_skip() else {
        return;
    };
    let scratch = Scratch::new();
    let nginx = Nginx::start_in(&scratch, Some(&ns), "nginx", 19350, None);
    let bridge = Bridge::start_in(
        &scratch,
        &ns,
        &[
            "--rtmp".into(),
            "rtmp://127.0.0.1:19350/live/{stream}".into(),
        ],
    );
    let mut publisher = Proc::spawn(
        "aiortc",
        ns.command("python3")
            .arg(interop_dir().join("aiortc_publish.py"))
            .arg(bridge.whip_url("aiortc"))
            .args(["--seconds", "10", "--token", TOKEN]),
        scratch.file("aiortc.log"),
    );
    wait_exit(&mut publisher, &bridge, Duration::from_secs(60));
    assert!(
        publisher.exited().is_some_and(|s| s.success()),
        "{}",
        publisher.log_tail(30)
    );
    let files = wait_recordings(&nginx, 1);
    assert_eq!(files.len(), 1, "{files:?}");
    check_recording(&files[0], 10.0, 0.05);
}

/// A UDP relay between publisher and bridge that loses 5 % of the video RTP packets and swaps
/// some neighbours, both ways transparent to ICE (the bridge learns the relay as a
/// peer-reflexive address). Runs until `stop`.
fn lossy_relay(
    front: std::net::UdpSocket,
    bridge: SocketAddr,
    video_pt: u8,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        use std::sync::atomic::Ordering;
        let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let (mut publisher, mut held): (Option<SocketAddr>, Option<Vec<u8>>) = (None, None);
        let (mut dropped, mut swapped, mut n) = (0u64, 0u64, 0u64);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, from)) = front.recv_from(&mut buf) {
                publisher = Some(from);
                let packet = &buf[..len];
                // RTP/SRTP (first byte 128..=191) of the video payload type; STUN and DTLS pass.
                let video =
                    len > 12 && (128..=191).contains(&packet[0]) && packet[1] & 0x7f == video_pt;
                if video {
                    n += 1;
                    if n % 20 == 7 {
                        dropped += 1;
                        continue;
                    }
                    if n % 25 == 3 && held.is_none() {
                        held = Some(packet.to_vec());
                        swapped += 1;
                        continue;
                    }
                }
                let _ = back.send_to(packet, bridge);
                if let Some(late) = held.take() {
                    let _ = back.send_to(&late, bridge);
                }
            }
            if let (Ok((len, _)), Some(to)) = (back.recv_from(&mut buf), publisher) {
                let _ = front.send_to(&buf[..len], to);
            }
        }
        (dropped, swapped)
    })
}

/// 5 % of the video lost and some reordered on the way in: the RTMP recording still decodes
/// without one error (frames with holes are dropped whole, output resumes at a keyframe the
/// bridge asks for by PLI).
#[test]
fn video_loss_and_reordering_still_record_cleanly() {
    let _serial = serial();
    let Some(ffmpeg) = tools() else { return };
    let scratch = Scratch::new();
    let nginx = Nginx::start(&scratch, "nginx", free_port(), None);
    // The bridge listens on 127.0.0.2 and advertises 127.0.0.1, where the relay sits on the
    // same port: the publisher's packets all go through the relay.
    let front = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    let udp: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let (http, _) = free_loopback_ports();
    let target = format!("rtmp://127.0.0.1:{}/live/{{stream}}", nginx.port);
    let bridge = Bridge::start_with(
        &scratch,
        None,
        http,
        udp,
        Some("127.0.0.1".parse().unwrap()),
        &["--rtmp".into(), target],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // ffmpeg's WHIP muxer sends H.264 as payload type 106 (see tests/data/ffmpeg9-whip-offer.sdp).
    let relay = lossy_relay(front, udp, 106, stop.clone());
    let mut publisher = publish(&ffmpeg, &scratch, http, "lossy", 10);
    let mut plis = 0.0;
    while publisher.exited().is_none() {
        plis = bridge.metrics().sum("bridge_keyframe_requests_total", &[]);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (dropped, swapped) = relay.join().unwrap();
    eprintln!("relay dropped {dropped} and swapped {swapped} video packets; {plis} PLIs sent");
    assert!(dropped >= 8 && swapped >= 5, "the relay did not interfere");
    assert!(plis >= 2.0, "keyframe requests after loss: {plis}");
    let files = wait_recordings(&nginx, 1);
    let p = probe(&files[0]);
    eprintln!("{p:?}");
    assert_eq!(p.codecs, ["h264", "aac"]);
    assert!(p.monotonic);
    let errors = decode_errors(&files[0]);
    assert!(errors.trim().is_empty(), "decode errors:\n{errors}");
}
