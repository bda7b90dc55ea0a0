//! Interop with real WHIP publishers nobody here wrote: FFmpeg 9's WHIP muxer, aiortc, headless
//! Chromium running a third-party browser WHIP client that trickles ICE by PATCH (also in three
//! simulcast layers, with nginx-rtmp recording what the bridge pushes), and GStreamer's webrtcbin
//! in Meetecho's simple-whip-client.
//!
//! Each test starts the real `bridge` binary, lets the publisher stream a few seconds and reads
//! the bridge's `/metrics`. A missing tool (or no root for network namespaces) prints
//! `SKIPPED: ...` and passes, unless `BRIDGE_REQUIRE_INTEROP=1`, which makes it a failure.
//! aiortc, Chromium and simple-whip-client run together with the bridge inside a network
//! namespace the test creates (Chromium and libnice gather no loopback candidates, aiortc offers
//! every interface's), so no packet leaves this host. The tests run one at a time: a 2-core
//! machine encoding H.264 in three publishers at once would make the packet counts a measure of
//! the machine.
//!
//! Some publish to a node of a two-node cluster (a Redis of the namespace's own) that drains, to
//! see what each client does with the `307` it answers: simple-whip-client follows it; Chromium
//! follows it too, but not across origins with its `Authorization` header (the Fetch standard),
//! so it publishes there only when the nodes are behind one origin (nginx, a path per node).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::binary::*;
use common::metrics::*;
use common::netns::*;
use common::nginx::*;
use common::peers::*;
use common::proc::*;
use common::redis::Redis;
use common::tls::https_args;

// ---------------------------------------------------------------------------------------------
// One publish: run the publisher, watch the bridge, check what it counted.

/// What the bridge's metrics must show after one publish.
struct Expect {
    video_packets: f64,
    audio_packets: f64,
    keyframes: f64,
    patches: f64,
}

impl Expect {
    /// [`PUBLISH_SECS`] of 30 fps video and 50 packets/s audio: at least 100 video and 150 audio
    /// packets (slack for a slow start), and `keyframes` and `patches` as given.
    fn publish(keyframes: f64, patches: f64) -> Self {
        Self {
            video_packets: 100.0,
            audio_packets: 150.0,
            keyframes,
            patches,
        }
    }
}

/// Waits for `publisher` to exit (bounded), scraping the bridge meanwhile: how it exited, and
/// the most sessions the bridge showed connected.
fn wait_publisher(
    bridge: &Bridge<'_>,
    publisher: &mut Proc,
    timeout: Duration,
) -> (ExitStatus, f64) {
    let deadline = Instant::now() + timeout;
    let mut max_connected: f64 = 0.0;
    loop {
        if let Some(status) = publisher.exited() {
            return (status, max_connected);
        }
        if let Ok((200, text)) = bridge.get("/metrics") {
            max_connected =
                max_connected.max(Metrics(text).sum("bridge_sessions", &[("state", "connected")]));
        }
        if Instant::now() > deadline {
            publisher.kill();
            panic!(
                "{} still running after {timeout:?}\n{}\n{}",
                publisher.name,
                publisher.log_tail(60),
                bridge.proc.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// Waits for `publisher` to exit (bounded), scraping the bridge meanwhile; then waits for the
/// session to end and checks the counters.
fn watch_publish(
    bridge: &Bridge<'_>,
    publisher: &mut Proc,
    timeout: Duration,
    expect: &Expect,
) -> Metrics {
    let (status, max_connected) = wait_publisher(bridge, publisher, timeout);
    assert!(
        status.success(),
        "{} failed: {status}\n{}\n{}",
        publisher.name,
        publisher.log_tail(80),
        bridge.proc.log_tail(60)
    );
    // The publisher DELETEd its session: it must leave the connected state soon.
    let end = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let m = bridge.metrics();
        if m.sum("bridge_sessions", &[("state", "connected")]) == 0.0 || Instant::now() > end {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let context = || {
        format!(
            "\n/metrics:\n{}\n{}\n{}",
            after.0,
            publisher.log_tail(60),
            bridge.proc.log_tail(60)
        )
    };
    let video = after.sum("bridge_rtp_packets_total", &[("kind", "video")]);
    let audio = after.sum("bridge_rtp_packets_total", &[("kind", "audio")]);
    let video_bytes = after.sum("bridge_rtp_bytes_total", &[("kind", "video")]);
    let audio_bytes = after.sum("bridge_rtp_bytes_total", &[("kind", "audio")]);
    let keyframes = after.sum("bridge_keyframes_total", &[]);
    let _ = writeln!(
        std::io::stderr(),
        "{}: bridge counted video {video} packets / {video_bytes} bytes, audio {audio} / \
         {audio_bytes}, {keyframes} keyframes, max {max_connected} connected",
        publisher.name
    );
    assert!(
        max_connected >= 1.0,
        "the bridge never showed the session connected{}",
        context()
    );
    let at_least = |what: &str, got: f64, want: f64| {
        assert!(got >= want, "{what} {got} < {want}{}", context());
    };
    at_least("video packets", video, expect.video_packets);
    at_least("audio packets", audio, expect.audio_packets);
    assert!(
        video_bytes > video && audio_bytes > audio,
        "byte counters{}",
        context()
    );
    at_least("keyframes", keyframes, expect.keyframes);
    let requests = |method: &str, status: &str| {
        after.sum(
            "bridge_http_requests_total",
            &[("method", method), ("status", status)],
        )
    };
    at_least("PATCH 204", requests("PATCH", "204"), expect.patches);
    at_least("POST 201", requests("POST", "201"), 1.0);
    at_least("DELETE 200", requests("DELETE", "200"), 1.0);
    assert_eq!(
        after.sum("bridge_sessions", &[("state", "connected")]),
        0.0,
        "session still connected 5 s after the DELETE{}",
        context()
    );
    after
}

/// What a publish in a namespace left: the bridge's metrics after it (the node the session was
/// sent to, in a cluster), the publisher's log, the stream's HLS playlist in the scratch folder,
/// nginx-rtmp's recordings of it when asked for, and that folder (held while the test checks
/// more, so that a failure keeps the logs).
struct Published {
    after: Metrics,
    log: String,
    playlist: PathBuf,
    recordings: Vec<PathBuf>,
    _scratch: Scratch,
}

/// Where the publisher is pointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Entry {
    /// At the bridge.
    #[default]
    Bridge,
    /// At a node of a two-node cluster (a Redis of the namespace's own) that drains: it answers
    /// the POST `307` to the other node, the bridge the session is for. The nodes are two
    /// origins (`http://10.213.0.1:8081` drains, `:8080` takes the session).
    DrainingNode,
    /// As [`Entry::DrainingNode`], with both nodes behind one origin: nginx on
    /// `http://10.213.0.1:8000` passes `/a/...` to the draining node and `/b/...` to the other,
    /// whose `--node-url`s are those paths, so the `307` and the `Location`s stay on that
    /// origin.
    OneOrigin,
}

/// How a test sets up around its publisher: the bridge's arguments besides its defaults, its
/// RTMP output to nginx-rtmp, HTTPS with a test CA the publisher trusts, and where the publisher
/// is pointed.
#[derive(Default)]
struct Setup<'a> {
    bridge_args: &'a [&'a str],
    rtmp: bool,
    https: bool,
    entry: Entry,
}

/// What runs in a test's namespace around its publisher.
struct Rig<'a> {
    ns: &'a Netns,
    scratch: &'a Scratch,
    /// The bridge the session is for.
    bridge: &'a Bridge<'a>,
    /// In a cluster, the node the publisher is pointed at, which drains.
    draining: Option<&'a Bridge<'a>>,
    /// Where the publisher's WHIP URLs start (`scheme://host:port[/path]`).
    entry: String,
    /// nginx-rtmp, recording what the bridge pushes.
    nginx: Option<&'a Nginx>,
}

impl Rig<'_> {
    /// The WHIP URL the publisher is given for `stream`.
    fn whip_url(&self, stream: &str) -> String {
        format!("{}/whip/{stream}", self.entry)
    }

    /// Starts the publisher `command` makes (run with `ns.command`) from the namespace and the
    /// WHIP URL of `stream`; its log goes to `<name>.log`.
    fn spawn(
        &self,
        name: &'static str,
        stream: &str,
        command: impl FnOnce(&Netns, &str) -> Command,
    ) -> Proc {
        Proc::spawn(
            name,
            self.bridge
                .trusted_by(&mut command(self.ns, &self.whip_url(stream))),
            self.scratch.file(&format!("{name}.log")),
        )
    }
}

/// HTTP and UDP ports in the namespace of the bridge the session is for, and of the draining
/// node of a cluster; and nginx's HTTP port when the nodes are behind one origin.
const NODE_PORTS: (u16, u16) = (8080, 8189);
const DRAINING_PORTS: (u16, u16) = (8081, 8190);
const PROXY_PORT: u16 = 8000;

/// Runs `run` in a network namespace of the test's own, with everything `setup` asks for there;
/// the logs go to `scratch`. `None` (the test is skipped) when namespaces cannot be made, or a
/// cluster is asked for and `redis-server` is missing.
fn in_namespace<T>(
    scratch: &Scratch,
    setup: &Setup<'_>,
    run: impl FnOnce(&Rig<'_>) -> T,
) -> Option<T> {
    let ns = Netns::create_or_skip()?;
    // The namespace is the test's own: the port is free.
    let nginx = setup
        .rtmp
        .then(|| Nginx::start_in(scratch, Some(&ns), "nginx", 19350, None));
    let mut args: Vec<String> = setup.bridge_args.iter().map(|&a| a.to_owned()).collect();
    if setup.https {
        args.extend(https_args(scratch));
    }
    if let Some(nginx) = &nginx {
        args.push("--rtmp".into());
        args.push(format!("rtmp://127.0.0.1:{}/live/{{stream}}", nginx.port));
    }
    if setup.entry == Entry::Bridge {
        let bridge = Bridge::start_in(scratch, &ns, &args);
        let rig = Rig {
            ns: &ns,
            scratch,
            bridge: &bridge,
            draining: None,
            entry: bridge.url(""),
            nginx: nginx.as_ref(),
        };
        return Some(run(&rig));
    }
    let redis = Redis::start_in(scratch, &ns)?;
    let proxy_url = format!("http://{NS_BRIDGE_IP}:{PROXY_PORT}");
    // Where clients reach a node: its own origin, or its path behind the proxy.
    let node = |scratch: &Scratch, ports: (u16, u16), path: &str| {
        let url = match setup.entry {
            Entry::OneOrigin => format!("{proxy_url}/{path}"),
            _ => format!("http://{NS_BRIDGE_IP}:{}", ports.0),
        };
        let mut args = args.clone();
        args.extend(
            [
                "--cluster-redis",
                &redis.url(),
                "--node-url",
                &url,
                "--cluster-ttl-ms",
                "3000",
            ]
            .map(str::to_owned),
        );
        Bridge::start_in_on(scratch, &ns, ports, &args)
    };
    let bridge = node(scratch, NODE_PORTS, "b");
    // Its own folder: its log and HLS apart from the other node's.
    let draining_scratch = Scratch::new();
    let draining = node(&draining_scratch, DRAINING_PORTS, "a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while draining.metrics().sum("bridge_cluster_nodes", &[]) < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the draining node never saw the other\n{}",
            draining.proc.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let drained = draining.request("POST", "/admin/drain");
    assert!(matches!(drained, Ok((200, _))), "{drained:?}");
    let proxy = (setup.entry == Entry::OneOrigin).then(|| {
        let listen = SocketAddr::new(draining.http.ip(), PROXY_PORT);
        let routes = [("a", draining.http), ("b", bridge.http)];
        Nginx::proxy_in(scratch, &ns, "proxy", listen, &routes)
    });
    let entry = if proxy.is_some() {
        format!("{proxy_url}/a")
    } else {
        draining.url("")
    };
    let rig = Rig {
        ns: &ns,
        scratch,
        bridge: &bridge,
        draining: Some(&draining),
        entry,
        nginx: nginx.as_ref(),
    };
    Some(run(&rig))
}

/// One publish inside a network namespace of the test's own, set up as `setup` says: `command`
/// makes the publisher's command (run with `ns.command`) from the namespace and the WHIP URL of
/// stream `<name>-interop`; [`watch_publish`] checks the counts on the bridge the session is
/// for. Sent there by a draining node, the publisher must have come through it once (one
/// `307`), and sent nothing else there: its PATCH and DELETE went to the `Location` it was
/// given. `None` when the test is skipped (see [`in_namespace`]).
fn publish_in_namespace(
    name: &'static str,
    timeout: Duration,
    expect: &Expect,
    setup: &Setup<'_>,
    command: impl FnOnce(&Netns, &str) -> Command,
) -> Option<Published> {
    let scratch = Scratch::new();
    let stream = format!("{name}-interop");
    let (after, log, recordings) = in_namespace(&scratch, setup, |rig| {
        let mut publisher = rig.spawn(name, &stream, command);
        let after = watch_publish(rig.bridge, &mut publisher, timeout, expect);
        if let Some(draining) = rig.draining {
            assert_sent_on_once(draining);
        }
        // Before the namespace goes, and nginx with it: the recording is complete once it stops
        // growing.
        let recordings = rig
            .nginx
            .map_or_else(Vec::new, |nginx| wait_recordings(nginx, 1));
        (after, publisher.log_text(), recordings)
    })?;
    Some(Published {
        after,
        log,
        playlist: scratch.file("hls").join(stream).join("index.m3u8"),
        recordings,
        _scratch: scratch,
    })
}

/// The draining node answered one POST, with `307` (counted as a draining redirect), and no
/// session request (its `Location` was the other node's).
fn assert_sent_on_once(draining: &Bridge<'_>) {
    let m = draining.metrics();
    let requests = |method: &str| m.sum("bridge_http_requests_total", &[("method", method)]);
    let redirects = m.sum("bridge_whip_redirects_total", &[("reason", "draining")]);
    assert_eq!(redirects, 1.0, "draining redirects\n{}", m.0);
    // One POST more than the 307: the test's own POST /admin/drain.
    let posts = (requests("POST"), requests("PATCH"), requests("DELETE"));
    assert_eq!(
        posts,
        (2.0, 0.0, 0.0),
        "POST, PATCH, DELETE on the draining node\n{}",
        m.0
    );
}

/// The `RESULT {json}` line the Chromium driver printed.
fn driver_result(log: &str) -> serde_json::Value {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from the driver\n{log}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("RESULT is not JSON ({e}): {line}"))
}

/// The bridge got everything the browser says it sent (summed over every RTP stream of the
/// kind, so every simulcast layer), to a few packets in flight at the end.
fn assert_received_what_was_sent(after: &Metrics, result: &serde_json::Value) {
    for kind in ["video", "audio"] {
        let sent = result["stats"][kind]["packetsSent"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {kind} packetsSent in {result}"));
        let got = after.sum("bridge_rtp_packets_total", &[("kind", kind)]);
        assert!(
            got >= 0.97 * sent,
            "bridge counted {got} {kind} packets, the browser sent {sent}\n{result}"
        );
    }
}

/// The stream's HLS playlist once the DELETE ended it (a moment after the session).
fn ended_playlist(playlist: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(playlist).unwrap_or_default();
        if text.contains("#EXT-X-ENDLIST") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        text.contains("#EXT-X-ENDLIST"),
        "no ended playlist at {}:\n{text}",
        playlist.display()
    );
    text
}

// ---------------------------------------------------------------------------------------------
// The tests

/// FFmpeg 9's WHIP muxer: libx264 baseline + libopus, no candidates in its offer, audio first,
/// `a=setup:passive`, Bearer token. On loopback: it needs no namespace.
#[test]
fn ffmpeg_whip_muxer_publishes_h264_and_opus() {
    ffmpeg_whip_publish(false);
}

/// As above, to `https://`: FFmpeg (OpenSSL) verifies the bridge's certificate against the test
/// CA. Its WHIP muxer does not hand `-ca_file` to its HTTPS request, so the CA comes by
/// `SSL_CERT_FILE`, OpenSSL's default store; without it the POST fails "certificate verify
/// failed" (seen with FFmpeg 9.0.2).
#[test]
fn ffmpeg_whip_muxer_publishes_over_https() {
    ffmpeg_whip_publish(true);
}

fn ffmpeg_whip_publish(https: bool) {
    let _serial = serial();
    let Some(ffmpeg) = ffmpeg_whip() else {
        return skip("ffmpeg with the WHIP muxer not found (pip install imageio-ffmpeg)");
    };
    let scratch = Scratch::new();
    let (http, udp) = free_loopback_ports();
    let args = if https {
        https_args(&scratch)
    } else {
        Vec::new()
    };
    let bridge = Bridge::start_with(&scratch, None, http, udp, None, &args);
    let url = bridge.whip_url("ffmpeg-interop");
    let mut publisher = Proc::spawn(
        "ffmpeg",
        bridge.trusted_by(&mut ffmpeg_publish(&ffmpeg, &url, PUBLISH_SECS)),
        scratch.file("ffmpeg.log"),
    );
    watch_publish(
        &bridge,
        &mut publisher,
        Duration::from_secs(60),
        // -g 30 at 30 fps: one IDR a second.
        &Expect::publish(2.0, 0.0),
    );
}

/// aiortc: H.264 (libx264 through PyAV) + Opus, every host candidate in the offer, no trickle,
/// `a=setup:actpass`, ECDSA certificate.
#[test]
fn aiortc_publishes_h264_and_opus() {
    let _serial = serial();
    if !aiortc_available() {
        return skip("aiortc not found (pip install aiortc)");
    }
    // aiortc's encoder sends one IDR unless asked for more (PLI).
    let expect = Expect::publish(1.0, 0.0);
    let timeout = Duration::from_secs(60);
    let Some(Published { log, _scratch, .. }) =
        publish_in_namespace("aiortc", timeout, &expect, &Setup::default(), |ns, url| {
            let mut cmd = ns.command("python3");
            cmd.arg(interop_dir().join("aiortc_publish.py"))
                .arg(url)
                .args(["--seconds", &PUBLISH_SECS.to_string(), "--token", TOKEN]);
            cmd
        })
    else {
        return;
    };
    assert!(
        log.contains(&format!("{NS_CLIENT_IP} ")) && log.contains("typ host"),
        "aiortc offered no candidate on the namespace's veth\n{log}"
    );
}

/// Headless Chromium with fake devices, publishing through `WHIPClient` from npm
/// (`@binbat/whip-whep`): the offer has no candidates, they come by PATCH (If-Match: the ETag)
/// after the 201; the page is on another origin than the endpoint, so CORS is exercised too.
#[test]
fn chromium_whip_client_publishes_with_trickle_ice() {
    chromium_publish(false, &Setup::default());
}

/// As above, to `https://`: the driver makes Chromium trust the test CA
/// (`--ignore-certificate-errors-spki-list` with the CA's key, which the bridge sends after
/// its leaf) and the page, on `http://127.0.0.1`, POSTs to the bridge's `https://` URL.
#[test]
fn chromium_whip_client_publishes_over_https() {
    let https = Setup {
        https: true,
        ..Setup::default()
    };
    chromium_publish(false, &https);
}

/// As above, and halfway the client restarts ICE (`client.restart()`: a PATCH with
/// `If-Match: *` and new credentials, answered 200 with the bridge's new ones, then trickle
/// with the new tag); the browser must select a pair of the new ICE session and media go on.
#[test]
fn chromium_whip_client_restarts_ice() {
    chromium_publish(true, &Setup::default());
}

/// The publish above to a draining node of a cluster whose two nodes are behind one origin
/// (nginx, a path each: [`Entry::OneOrigin`]). `fetch` follows the `307` with the same method,
/// body and headers, `Authorization` included, since the redirect does not leave the origin; the
/// session is set up, trickled and ended on the other node.
#[test]
fn chromium_whip_client_follows_a_307_within_one_origin() {
    if !Path::new(NGINX).exists() {
        return skip("nginx not found (apt-get install nginx)");
    }
    let one_origin = Setup {
        entry: Entry::OneOrigin,
        ..Setup::default()
    };
    let Some(Published { log, _scratch, .. }) = chromium_publish(false, &one_origin) else {
        return;
    };
    let base = format!("http://{NS_BRIDGE_IP}:{PROXY_PORT}");
    let page = "origin=http://127.0.0.1:";
    for line in [
        format!("request: POST {base}/a/whip/chromium-interop -> 307 authorization=sent {page}"),
        format!(
            "request: POST {base}/b/whip/chromium-interop?routed=1 -> 201 authorization=sent {page}"
        ),
    ] {
        assert!(
            log.contains(&line),
            "no {line:?} in the driver's log\n{log}"
        );
    }
}

/// Chromium sent (`307`) from one node's origin to another's: it follows, re-sending the offer,
/// but (by the Fetch standard, since the redirect leaves the origin) without its
/// `Authorization` header, and with `Origin: null`. The CORS preflight on the new origin
/// passes; the POST is refused `401`, and `WHIPClient` fails with it. A bridge that publishes
/// only with a token cannot take a browser redirected so; see "Running several nodes" in the
/// README.
#[test]
fn chromium_whip_client_loses_its_token_on_a_cross_origin_307() {
    let _serial = serial();
    let Some(chromium) = chromium_tools() else {
        return;
    };
    let scratch = Scratch::new();
    let cluster = Setup {
        entry: Entry::DrainingNode,
        ..Setup::default()
    };
    let stream = "chromium-interop";
    in_namespace(&scratch, &cluster, |rig| {
        let mut driver = rig.spawn("chromium", stream, |ns, url| {
            chromium_driver(&chromium, ns, url, PUBLISH_SECS, &[])
        });
        let (status, connected) = wait_publisher(rig.bridge, &mut driver, Duration::from_secs(60));
        let log = driver.log_text();
        let context = || format!("{log}\n{}", rig.bridge.proc.log_tail(20));
        assert!(!status.success(), "the driver published{}", context());
        assert_eq!(connected, 0.0, "a session connected{}", context());
        let result = driver_result(&log);
        assert_eq!(
            result["error"],
            "Error: Request rejected with status 401",
            "{}",
            context()
        );
        let (from, to) = (rig.whip_url(stream), rig.bridge.whip_url(stream));
        for line in [
            format!("request: POST {from} -> 307 authorization=sent origin=http://127.0.0.1:"),
            format!("request: POST {to}?routed=1 -> 401 authorization=none origin=null"),
        ] {
            assert!(log.contains(&line), "no {line:?}{}", context());
        }
        let draining = rig.draining.expect("a cluster");
        let redirects = draining
            .metrics()
            .sum("bridge_whip_redirects_total", &[("reason", "draining")]);
        assert_eq!(redirects, 1.0, "{}", context());
        let m = rig.bridge.metrics();
        let requests = |method: &str, status: &str| {
            m.sum(
                "bridge_http_requests_total",
                &[("method", method), ("status", status)],
            )
        };
        let refused = m.sum(
            "bridge_auth_decisions_total",
            &[("action", "publish"), ("result", "unauthenticated")],
        );
        let posts = (
            requests("POST", "401"),
            m.sum("bridge_http_requests_total", &[("method", "POST")]),
        );
        assert_eq!(
            (requests("OPTIONS", "204"), posts, refused),
            (1.0, (1.0, 1.0), 1.0),
            "the preflight passed, the one POST was refused for want of a token\n{}",
            m.0
        );
    });
}

/// Chromium's path when it and what drives it are installed; `None` after [`skip`] otherwise.
fn chromium_tools() -> Option<PathBuf> {
    let chromium = chromium_path();
    if !chromium.exists() {
        skip(&format!("chromium not found at {}", chromium.display()));
        return None;
    }
    if !succeeds(Command::new("node").arg("--version")) {
        skip("node not found");
        return None;
    }
    if !node_modules_available() {
        skip(
            "npm packages playwright-core and @binbat/whip-whep not found (npm ci in bridge/tests/interop)",
        );
        return None;
    }
    if !succeeds(Command::new("python3").arg("--version")) {
        skip("python3 not found");
        return None;
    }
    Some(chromium)
}

/// `interop/chromium_publish.mjs` in `ns` publishing to `url` for `secs` with the bridge's
/// token, with the driver's `options` (`restart`, `simulcast`, `size=WxH`).
fn chromium_driver(chromium: &Path, ns: &Netns, url: &str, secs: u32, options: &[&str]) -> Command {
    let mut driver = ns.command("node");
    driver
        .arg(interop_dir().join("chromium_publish.mjs"))
        .args([url, &secs.to_string(), TOKEN])
        .args(options)
        .env("CHROMIUM", chromium);
    driver
}

fn chromium_publish(restart: bool, setup: &Setup<'_>) -> Option<Published> {
    let _serial = serial();
    let chromium = chromium_tools()?;
    // WHIPClient sends its candidates (and end-of-candidates) by PATCH after the 201, and
    // again after a restart.
    let expect = Expect::publish(1.0, if restart { 2.0 } else { 1.0 });
    let timeout = Duration::from_secs(120);
    let options: &[&str] = if restart { &["restart"] } else { &[] };
    let published = publish_in_namespace("chromium", timeout, &expect, setup, |ns, url| {
        chromium_driver(&chromium, ns, url, PUBLISH_SECS, options)
    })?;
    if restart {
        let restarts = published.after.sum(
            "bridge_http_requests_total",
            &[("method", "PATCH"), ("status", "200")],
        );
        assert!(
            restarts >= 1.0,
            "no PATCH answered 200 (ICE restart)\n{}",
            published.after.0
        );
    }
    // With a restart too: what the browser sends on the old pair until the new one is selected
    // is held, not dropped (`rtc::restart_hold`).
    assert_received_what_was_sent(&published.after, &driver_result(&published.log));
    Some(published)
}

/// Chromium publishing 1280x720 H.264 in three simulcast layers (`sendEncodings` with rids h, m
/// at 1/2 and l at 1/4 of the size) plus Opus through `WHIPClient`, the bridge pushing the stream
/// to nginx-rtmp: every layer's packets are taken in, and the RTMP recording and the HLS
/// `index.m3u8` both carry the top layer, 1280x720, whole (no decode error), for as long as the
/// browser published. What the driver needs of Chromium for three layers from the start is
/// explained in `interop/chromium_publish.mjs`.
#[test]
fn chromium_whip_client_publishes_simulcast() {
    let _serial = serial();
    let Some(chromium) = chromium_tools() else {
        return;
    };
    if !Path::new(NGINX).exists() || !Path::new(RTMP_MODULE).exists() {
        return skip(
            "nginx with the RTMP module not found (apt-get install nginx libnginx-mod-rtmp)",
        );
    }
    for tool in ["/usr/bin/ffprobe", "/usr/bin/ffmpeg"] {
        if !Path::new(tool).exists() {
            return skip(&format!("{tool} not found (apt-get install ffmpeg)"));
        }
    }
    let secs = 8;
    // Keyframes: one at the start of each layer at least; candidates by PATCH as above.
    let expect = Expect::publish(1.0, 1.0);
    let timeout = Duration::from_secs(120);
    let Some(Published {
        after,
        log,
        playlist,
        recordings,
        _scratch,
    }) = publish_in_namespace(
        "chromium",
        timeout,
        &expect,
        &Setup {
            bridge_args: &["--hls-event"],
            rtmp: true,
            ..Setup::default()
        },
        |ns, url| chromium_driver(&chromium, ns, url, secs, &["simulcast", "size=1280x720"]),
    )
    else {
        return;
    };
    let result = driver_result(&log);
    let layers = &result["stats"]["layers"];
    let _ = writeln!(std::io::stderr(), "chromium's layers: {layers}");
    // The premise: Chromium did send three layers at their sizes, or this tests one stream.
    for (rid, width) in [("h", 1280), ("m", 640), ("l", 320)] {
        let layer = &layers[rid];
        assert!(
            layer["frameWidth"].as_u64() == Some(width)
                && layer["framesEncoded"].as_u64().is_some_and(|n| n > 0),
            "chromium sent no layer {rid} {width} wide\n{result}"
        );
    }
    assert_received_what_was_sent(&after, &result);
    let published = result["stats"]["publishedSecs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no publishedSecs in {result}"));

    // RTMP: one recording of the top layer, as long as the publish (from connected to DELETE).
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let recording = &recordings[0];
    assert_eq!(
        video_size(recording.to_str().unwrap()),
        (1280, 720),
        "{}",
        recording.display()
    );
    check_recording(recording, published, 0.10);

    // HLS: the media playlist everyone already plays is the top layer's, every segment of it
    // (`--hls-event`: a live window would hold the last 6 s).
    let text = ended_playlist(&playlist);
    let path = playlist.to_str().unwrap();
    assert_eq!(video_size(path), (1280, 720), "{text}");
    let (codecs, duration) = probe_playlist(path);
    assert_eq!(codecs, ["aac", "h264"], "{text}");
    assert!(
        (duration - published).abs() <= published * 0.10,
        "HLS lasts {duration} s for {published} s published\n{text}"
    );
    let errors = playlist_decode_errors(path);
    assert!(errors.trim().is_empty(), "decode errors:\n{errors}\n{text}");

    // The ladder: `main.m3u8` lists a video rendition per layer, each at its layer's size and
    // decoding clean on its own, with the audio rendition they share.
    let folder = playlist.parent().expect("the stream's folder");
    let main = std::fs::read(folder.join("main.m3u8")).expect("main.m3u8 written");
    let Ok(m3u8_rs::Playlist::MasterPlaylist(ladder)) = m3u8_rs::parse_playlist_res(&main) else {
        panic!(
            "main.m3u8 is no multivariant playlist\n{}",
            String::from_utf8_lossy(&main)
        );
    };
    let mut sizes = Vec::new();
    for variant in &ladder.variants {
        let rendition = folder.join(&variant.uri);
        let path = rendition.to_str().unwrap();
        let size = video_size(path);
        let listed = variant.resolution.map(|r| (r.width, r.height));
        assert_eq!(Some(size), listed, "{}", variant.uri);
        let errors = playlist_decode_errors(path);
        assert!(
            errors.trim().is_empty(),
            "{}: decode errors:\n{errors}",
            variant.uri
        );
        assert_eq!(variant.audio.as_deref(), Some("audio"), "{}", variant.uri);
        sizes.push(size);
    }
    assert_eq!(
        sizes,
        [(1280, 720), (640, 360), (320, 180)],
        "highest first"
    );
    let audio = ladder.alternatives.first().and_then(|a| a.uri.clone());
    let audio = folder.join(audio.expect("an audio rendition"));
    let (codecs, _) = probe_playlist(audio.to_str().unwrap());
    assert_eq!(codecs, ["aac"]);
    let errors = playlist_decode_errors(audio.to_str().unwrap());
    assert!(errors.trim().is_empty(), "audio: decode errors:\n{errors}");
    play_ladder_with_hls_js(&chromium, &folder.join("main.m3u8"));

    // Last, so that a bridge without per-layer metrics fails on what users see first.
    assert_every_layer_assembled(&after, &result);
}

/// hls.js plays the ladder `main` (the ended event playlist, from disk) for 6 s, going to the
/// next level every 3 s: it lists every layer, switches at least once and never stalls.
fn play_ladder_with_hls_js(chromium: &Path, main: &Path) {
    let out = Command::new("node")
        .arg(interop_dir().join("play.mjs"))
        .args(["hlsjs", main.to_str().unwrap(), "6", "switch"])
        .current_dir(interop_dir())
        .env("CHROMIUM", chromium)
        .output()
        .expect("node runs");
    let log = String::from_utf8_lossy(&out.stdout);
    let page = String::from_utf8_lossy(&out.stderr);
    let played = driver_result(&log);
    assert_eq!(
        played["ok"], true,
        "hls.js did not play the ladder: {played}\n{page}"
    );
    let levels = played["levels"].as_array().map_or(0, Vec::len);
    assert_eq!(levels, 3, "{played}");
    let mut heights: Vec<u64> = played["levelsPlayed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    heights.sort_unstable();
    heights.dedup();
    assert!(
        heights.len() >= 2,
        "hls.js did not switch levels: {played}\n{page}"
    );
    assert_eq!(played["stalls"], 0, "hls.js stalled: {played}\n{page}");
    let _ = writeln!(
        std::io::stderr(),
        "hls.js played the ladder: levels {heights:?}"
    );
}

/// The bridge assembled, layer by layer, the pictures the browser encoded (to 97 %). The
/// packet count over all layers cannot show it: most of the video packets are the padding
/// Chromium probes bandwidth with on the lowest layer (5,600 of 6,900 in 8 s), so the top layer
/// could lose half its packets and the sum still pass. The bridge numbers its layers by arrival,
/// not by rid: they pair up with the browser's by bytes, which differ several times between
/// layers.
fn assert_every_layer_assembled(after: &Metrics, result: &serde_json::Value) {
    let field = |layer: &serde_json::Value, name: &str| {
        layer[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in {layer}"))
    };
    let mut sent: Vec<(f64, f64)> = result["stats"]["layers"]
        .as_object()
        .unwrap_or_else(|| panic!("no layers in {result}"))
        .values()
        .map(|layer| (field(layer, "bytesSent"), field(layer, "framesEncoded")))
        .collect();
    let mut got: Vec<(f64, f64)> = ["0", "1", "2", "3"]
        .iter()
        .map(|&layer| {
            let labels = [("layer", layer)];
            (
                after.sum("bridge_video_layer_bytes_total", &labels),
                after.sum("bridge_video_layer_units_total", &labels),
            )
        })
        .filter(|&(bytes, _)| bytes > 0.0)
        .collect();
    sent.sort_by(|a, b| b.0.total_cmp(&a.0));
    got.sort_by(|a, b| b.0.total_cmp(&a.0));
    let context = || {
        format!(
            "browser (bytes, frames) {sent:?}, bridge {got:?}\n{}",
            after.0
        )
    };
    assert_eq!(got.len(), sent.len(), "layers{}", context());
    for ((_, encoded), (_, units)) in sent.iter().zip(&got) {
        assert!(
            *units >= 0.97 * encoded,
            "a layer of {encoded} pictures came out as {units}: {}",
            context()
        );
    }
}

/// GStreamer's webrtcbin through Meetecho's simple-whip-client (Debian's `whip-client`): x264 +
/// Opus from test sources, all its candidates trickled in one PATCH after the 201, an audio
/// m-line that is bundle-only (port 0), `OPUS` in upper case, an RSA certificate. libnice gathers
/// no loopback candidates: it runs in the namespace. The HLS the bridge made of it must decode.
#[test]
fn gstreamer_simple_whip_client_publishes_h264_and_opus() {
    let _serial = serial();
    for tool in ["/usr/bin/ffprobe", "/usr/bin/ffmpeg"] {
        if !Path::new(tool).exists() {
            return skip(&format!("{tool} not found (apt-get install ffmpeg)"));
        }
    }
    let Some(Published {
        playlist, _scratch, ..
    }) = gstreamer_publish(&Setup::default())
    else {
        return;
    };
    let text = ended_playlist(&playlist);
    let path = playlist.to_str().unwrap();
    let (codecs, _) = probe_playlist(path);
    assert_eq!(codecs, ["aac", "h264"], "{text}");
    let errors = playlist_decode_errors(path);
    assert!(errors.trim().is_empty(), "decode errors:\n{errors}\n{text}");
}

/// The publish above to a draining node of a cluster, sent (`307`) to the other node's origin:
/// simple-whip-client follows it itself (libsoup's own redirects are off), POSTing the offer
/// again with its `Authorization` header, then trickles and DELETEs at the absolute `Location`
/// the other node answered.
#[test]
fn gstreamer_simple_whip_client_follows_a_307() {
    let _serial = serial();
    let cluster = Setup {
        entry: Entry::DrainingNode,
        ..Setup::default()
    };
    let Some(Published { after, log, .. }) = gstreamer_publish(&cluster) else {
        return;
    };
    let node = format!(
        "http://{NS_BRIDGE_IP}:{}/whip/gstreamer-interop",
        NODE_PORTS.0
    );
    for line in [
        format!("Redirected to {node}?routed=1"),
        format!("Resource URL: {node}/"),
    ] {
        assert!(log.contains(&line), "no {line:?} in its log\n{log}");
    }
    let refused = after.sum("bridge_http_requests_total", &[("status", "401")]);
    assert_eq!(refused, 0.0, "{}", after.0);
}

/// simple-whip-client publishing for [`PUBLISH_SECS`] as `setup` says; `None` when skipped.
fn gstreamer_publish(setup: &Setup<'_>) -> Option<Published> {
    if !Path::new(WHIP_CLIENT).exists() {
        skip(&format!(
            "{WHIP_CLIENT} not found (apt-get install simple-whip-client)"
        ));
        return None;
    }
    let stub = Scratch::new();
    if !build_gupnp_igd_stub(&stub) {
        return None;
    }
    // One IDR a second (key-int-max=30 at 30 fps).
    let expect = Expect::publish(2.0, 1.0);
    let timeout = Duration::from_secs(60);
    publish_in_namespace("gstreamer", timeout, &expect, setup, |ns, url| {
        // The client streams until SIGINT, on which it DELETEs its session and exits 0:
        // `timeout` sends that after the publish (a second more for its set-up), and kills it
        // if it hangs.
        let mut cmd = ns.command("timeout");
        cmd.args(["--preserve-status", "--signal=INT", "--kill-after=10"])
            .arg((PUBLISH_SECS + 1).to_string())
            .arg(WHIP_CLIENT)
            .args(["--url", url, "--token", TOKEN, "--disable-colors"])
            .args([
                "--video",
                "videotestsrc is-live=true ! videoconvert ! x264enc tune=zerolatency \
                 speed-preset=ultrafast key-int-max=30 ! rtph264pay config-interval=-1 pt=96 \
                 ! queue ! application/x-rtp,media=video,encoding-name=H264,payload=96",
            ])
            .args([
                "--audio",
                "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc \
                 ! rtpopuspay pt=111 ! queue \
                 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111",
            ])
            .env("LD_LIBRARY_PATH", &stub.0);
        cmd
    })
}

const WHIP_CLIENT: &str = "/usr/bin/whip-client";

/// Builds `interop/gupnp-igd-stub.c` (see why there) into `dir` as `libgupnp-igd-1.0.so.4`, for
/// `LD_LIBRARY_PATH`. False after [`skip`] when gcc or GObject's development files are missing.
fn build_gupnp_igd_stub(dir: &Scratch) -> bool {
    let Ok(flags) = output(Command::new("pkg-config").args(["--cflags", "--libs", "gobject-2.0"]))
    else {
        skip("pkg-config with gobject-2.0 not found (apt-get install pkg-config libglib2.0-dev)");
        return false;
    };
    if !succeeds(Command::new("gcc").arg("--version")) {
        skip("gcc not found (apt-get install gcc)");
        return false;
    }
    let built = output(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wall", "-Werror"])
            .arg("-Wl,-soname,libgupnp-igd-1.0.so.4")
            .arg("-o")
            .arg(dir.file("libgupnp-igd-1.0.so.4"))
            .arg(interop_dir().join("gupnp-igd-stub.c"))
            .args(flags.split_whitespace()),
    );
    if let Err(e) = built {
        panic!("building the libgupnp-igd stub: {e}");
    }
    true
}

#[test]
fn metrics_parser_reads_prometheus_client_text() {
    let text = Metrics(
        "# HELP bridge_rtp_packets RTP packets\n\
         # TYPE bridge_rtp_packets counter\n\
         bridge_rtp_packets_total{kind=\"video\"} 189\n\
         bridge_rtp_packets_total{kind=\"audio\"} 249\n\
         bridge_http_requests_total{method=\"PATCH\",status=\"204\"} 2\n\
         bridge_http_requests_total{method=\"PATCH\",status=\"412\"} 1\n\
         bridge_http_requests_total{method=\"POST\",status=\"201\"} 1\n\
         bridge_keyframes_total 5\n\
         odd{a=\"x,}\\\"y\",b=\"2\"} 1.5e1\n\
         # EOF\n"
            .to_owned(),
    );
    assert_eq!(
        text.sum("bridge_rtp_packets_total", &[("kind", "video")]),
        189.0
    );
    assert_eq!(text.sum("bridge_rtp_packets_total", &[]), 438.0);
    assert_eq!(
        text.sum(
            "bridge_http_requests_total",
            &[("method", "PATCH"), ("status", "204")]
        ),
        2.0
    );
    assert_eq!(
        text.sum("bridge_http_requests_total", &[("method", "PATCH")]),
        3.0
    );
    assert_eq!(text.sum("bridge_keyframes_total", &[]), 5.0);
    assert_eq!(text.sum("odd", &[("a", "x,}\"y"), ("b", "2")]), 15.0);
    assert_eq!(text.sum("missing", &[]), 0.0);
}
