//! Interop with real WHIP publishers nobody here wrote: FFmpeg 9's WHIP muxer, aiortc, and
//! headless Chromium running a third-party browser WHIP client that trickles ICE by PATCH.
//!
//! Each test starts the real `bridge` binary, lets the publisher stream a few seconds and reads
//! the bridge's `/metrics`. A missing tool (or no root for network namespaces) prints
//! `SKIPPED: ...` and passes, unless `BRIDGE_REQUIRE_INTEROP=1`, which makes it a failure.
//! aiortc and Chromium run together with the bridge inside a network namespace the test creates
//! (Chromium gathers no loopback candidates, aiortc offers every interface's), so no packet
//! leaves this host. The tests run one at a time: a 2-core machine encoding H.264 in three
//! publishers at once would make the packet counts a measure of the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");
const TOKEN: &str = "interop-token-4f1c9a";
/// How long each publisher streams.
const PUBLISH_SECS: u32 = 6;
/// Addresses of the two veth ends inside a test's own namespace (never routed anywhere else).
const NS_BRIDGE_IP: &str = "10.213.0.1";
const NS_CLIENT_IP: &str = "10.213.0.2";
const NS_PREFIX: &str = "whipit-";

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn required() -> bool {
    std::env::var("BRIDGE_REQUIRE_INTEROP").is_ok_and(|v| v.trim() == "1")
}

/// Ends a test whose tool is missing: a visible `SKIPPED` line and a pass, or a failure when
/// interop is required.
fn skip(what: &str) {
    assert!(!required(), "{what} (BRIDGE_REQUIRE_INTEROP=1)");
    // Straight to the process's stderr, so that it shows: libtest captures print!/eprint! only.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn unique() -> String {
    format!(
        "{NS_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// FFmpeg 9 from the imageio-ffmpeg wheel, if it has the WHIP muxer.
fn ffmpeg_whip() -> Option<PathBuf> {
    let path = output(Command::new("python3").args([
        "-c",
        "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
    ]))
    .ok()?;
    let path = PathBuf::from(path.trim());
    let muxers = output(Command::new(&path).args(["-hide_banner", "-muxers"])).ok()?;
    muxers
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("whip"))
        .then_some(path)
}

fn aiortc_available() -> bool {
    succeeds(Command::new("python3").args(["-c", "import aiortc, av"]))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Node with playwright-core and the WHIP client library resolvable from the interop folder.
fn node_modules_available() -> bool {
    succeeds(
        Command::new("node")
            .args([
                "-e",
                "require.resolve('playwright-core'); require.resolve('@binbat/whip-whep/whip.js')",
            ])
            .current_dir(interop_dir()),
    )
}

// ---------------------------------------------------------------------------------------------
// Scratch folder, child processes, network namespace: all cleaned up on drop.

/// A folder for logs; kept (and named) when the test fails or `BRIDGE_INTEROP_KEEP_LOGS` is set.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("BRIDGE_INTEROP_KEEP_LOGS").is_some() {
            let _ = writeln!(std::io::stderr(), "logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process (in its own process group) with its output in a log file; killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let file = File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name, child, log }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log.
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "----- {} ({}), last {lines} lines -----\n{tail}\n-----",
            self.name,
            self.log.display()
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pgid = self.child.id();
        // The whole group (Chromium's helpers, ...), then the child itself for good measure.
        let _ = succeeds(Command::new("sh").args(["-c", &format!("kill -KILL -- -{pgid}")]));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network namespace of the test's own: `lo` up and a veth pair with both ends inside,
/// [`NS_BRIDGE_IP`] and [`NS_CLIENT_IP`], no default route, IPv6 off. Deleted on drop, after
/// killing whatever still runs in it.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Self, String> {
        reap_stale_namespaces();
        let name = unique();
        output(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        let n = ns.name.as_str();
        let (bridge_net, client_net) = (format!("{NS_BRIDGE_IP}/24"), format!("{NS_CLIENT_IP}/24"));
        for args in [
            vec!["-n", n, "link", "set", "lo", "up"],
            vec![
                "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
            vec!["-n", n, "addr", "add", &bridge_net, "dev", "v0"],
            vec!["-n", n, "addr", "add", &client_net, "dev", "v1"],
            vec!["-n", n, "link", "set", "v0", "up"],
            vec!["-n", n, "link", "set", "v1", "up"],
        ] {
            output(Command::new("ip").args(&args))?;
        }
        // Fewer candidates, all IPv4 (the link-local IPv6 ones would be tentative anyway).
        let _ = succeeds(Command::new("ip").args([
            "netns",
            "exec",
            n,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]));
        Ok(ns)
    }

    /// `ip netns exec NAME program`.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_namespace(&self.name);
    }
}

fn delete_namespace(name: &str) {
    if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids.split_whitespace() {
            let _ = succeeds(Command::new("sh").args(["-c", &format!("kill -KILL {pid}")]));
        }
    }
    let _ = succeeds(Command::new("ip").args(["netns", "del", name]));
}

/// Deletes namespaces left by an earlier run of these tests that was killed before its guards
/// ran (their name carries the pid of a process that is gone).
fn reap_stale_namespaces() {
    let Ok(list) = output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge and its metrics

struct Bridge<'a> {
    proc: Proc,
    http: SocketAddr,
    ns: Option<&'a Netns>,
}

impl<'a> Bridge<'a> {
    fn start(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        http: SocketAddr,
        udp: SocketAddr,
        advertise: Option<IpAddr>,
    ) -> Self {
        let mut cmd = match ns {
            Some(ns) => ns.command(BRIDGE),
            None => Command::new(BRIDGE),
        };
        cmd.args(["--http", &http.to_string(), "--udp", &udp.to_string()])
            .args(["--token", TOKEN])
            .env_remove("RUST_LOG");
        if let Some(ip) = advertise {
            cmd.args(["--advertise-ip", &ip.to_string()]);
        }
        let proc = Proc::spawn("bridge", &mut cmd, scratch.file("bridge.log"));
        let mut bridge = Self { proc, http, ns };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = bridge.proc.exited() {
                panic!("bridge exited {status}\n{}", bridge.proc.log_tail(40));
            }
            if matches!(bridge.get("/healthz"), Ok((200, _))) {
                return bridge;
            }
            assert!(
                Instant::now() < deadline,
                "bridge not healthy after 20 s\n{}",
                bridge.proc.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` from where the bridge listens (inside its namespace if it has one).
    fn get(&self, path: &str) -> Result<(u16, String), String> {
        match self.ns {
            None => http_get(self.http, path),
            Some(ns) => {
                let url = format!("http://{}{path}", self.http);
                let out = output(
                    ns.command("python3")
                        .arg(interop_dir().join("http_get.py"))
                        .args([&url, TOKEN]),
                )?;
                let (code, body) = out.split_once('\n').unwrap_or((out.as_str(), ""));
                let code = code
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad status {code:?}"))?;
                Ok((code, body.to_owned()))
            }
        }
    }

    fn metrics(&self) -> Metrics {
        match self.get("/metrics") {
            Ok((200, text)) => Metrics(text),
            other => panic!("GET /metrics: {other:?}\n{}", self.proc.log_tail(40)),
        }
    }
}

/// HTTP/1.0 GET over a plain TCP connection (the body ends with the connection).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
struct Metrics(String);

impl Metrics {
    /// Sum of every sample of `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }
}

/// A sample's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// `name{k="v",...} value [timestamp]` into its parts (label values unescaped).
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1);
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => continue,
                _ => {}
            }
            let mut key = String::from(c);
            loop {
                match chars.next()?.1 {
                    '=' => break,
                    c => key.push(c),
                }
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        };
        rest = &rest[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

// ---------------------------------------------------------------------------------------------
// One publish: run the publisher, watch the bridge, check what it counted.

/// What the bridge's metrics must show after one publish.
struct Expect {
    video_packets: f64,
    audio_packets: f64,
    keyframes: f64,
    patches: f64,
}

/// Waits for `publisher` to exit (bounded), scraping the bridge meanwhile; then waits for the
/// session to end and checks the counters.
fn watch_publish(
    bridge: &Bridge<'_>,
    publisher: &mut Proc,
    timeout: Duration,
    expect: &Expect,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    let mut max_connected: f64 = 0.0;
    let status = loop {
        if let Some(status) = publisher.exited() {
            break status;
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
    };
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
    assert!(
        video >= expect.video_packets,
        "video packets {video} < {}{}",
        expect.video_packets,
        context()
    );
    assert!(
        audio >= expect.audio_packets,
        "audio packets {audio} < {}{}",
        expect.audio_packets,
        context()
    );
    assert!(
        video_bytes > video && audio_bytes > audio,
        "byte counters{}",
        context()
    );
    assert!(
        keyframes >= expect.keyframes,
        "keyframes {keyframes} < {}{}",
        expect.keyframes,
        context()
    );
    let patches = after.sum(
        "bridge_http_requests_total",
        &[("method", "PATCH"), ("status", "204")],
    );
    assert!(
        patches >= expect.patches,
        "PATCH 204 {patches} < {}{}",
        expect.patches,
        context()
    );
    assert!(
        after.sum(
            "bridge_http_requests_total",
            &[("method", "POST"), ("status", "201")]
        ) >= 1.0,
        "no POST 201{}",
        context()
    );
    assert!(
        after.sum(
            "bridge_http_requests_total",
            &[("method", "DELETE"), ("status", "200")]
        ) >= 1.0,
        "no DELETE 200{}",
        context()
    );
    assert_eq!(
        after.sum("bridge_sessions", &[("state", "connected")]),
        0.0,
        "session still connected 5 s after the DELETE{}",
        context()
    );
    after
}

fn free_loopback_ports() -> (SocketAddr, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (tcp.local_addr().unwrap(), udp.local_addr().unwrap())
}

// ---------------------------------------------------------------------------------------------
// The tests

/// FFmpeg 9's WHIP muxer: libx264 baseline + libopus, no candidates in its offer, audio first,
/// `a=setup:passive`, Bearer token. On loopback: it needs no namespace.
#[test]
fn ffmpeg_whip_muxer_publishes_h264_and_opus() {
    let _serial = serial();
    let Some(ffmpeg) = ffmpeg_whip() else {
        return skip("ffmpeg with the WHIP muxer not found (pip install imageio-ffmpeg)");
    };
    let scratch = Scratch::new();
    let (http, udp) = free_loopback_ports();
    let bridge = Bridge::start(&scratch, None, http, udp, None);
    let url = format!("http://{http}/whip/ffmpeg-interop");
    let secs = PUBLISH_SECS.to_string();
    let mut publisher = Proc::spawn(
        "ffmpeg",
        Command::new(&ffmpeg)
            .args(["-hide_banner", "-nostdin", "-loglevel", "verbose", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &secs])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-profile:v",
                "baseline",
                "-g",
                "30",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "libopus", "-ar", "48000", "-ac", "2"])
            .args(["-authorization", TOKEN])
            .args(["-f", "whip", &url]),
        scratch.file("ffmpeg.log"),
    );
    watch_publish(
        &bridge,
        &mut publisher,
        Duration::from_secs(60),
        &Expect {
            video_packets: 100.0,
            audio_packets: 150.0,
            // -g 30 at 30 fps: one IDR a second.
            keyframes: 2.0,
            patches: 0.0,
        },
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
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            return skip(&format!(
                "network namespaces not available (needs root and ip): {e}"
            ));
        }
    };
    let scratch = Scratch::new();
    let ip: IpAddr = NS_BRIDGE_IP.parse().unwrap();
    let http = SocketAddr::new(ip, 8080);
    let bridge = Bridge::start(
        &scratch,
        Some(&ns),
        http,
        SocketAddr::new(ip, 8189),
        Some(ip),
    );
    let url = format!("http://{http}/whip/aiortc-interop");
    let mut publisher = Proc::spawn(
        "aiortc",
        ns.command("python3")
            .arg(interop_dir().join("aiortc_publish.py"))
            .arg(&url)
            .args(["--seconds", &PUBLISH_SECS.to_string(), "--token", TOKEN]),
        scratch.file("aiortc.log"),
    );
    watch_publish(
        &bridge,
        &mut publisher,
        Duration::from_secs(60),
        &Expect {
            video_packets: 100.0,
            audio_packets: 150.0,
            // aiortc's encoder sends one IDR unless asked for more (PLI).
            keyframes: 1.0,
            patches: 0.0,
        },
    );
    let log = publisher.log_text();
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
    chromium_publish(false);
}

/// As above, and halfway the client restarts ICE (`client.restart()`: a PATCH with
/// `If-Match: *` and new credentials, answered 200 with the bridge's new ones, then trickle
/// with the new tag); the browser must select a pair of the new ICE session and media go on.
#[test]
fn chromium_whip_client_restarts_ice() {
    chromium_publish(true);
}

fn chromium_publish(restart: bool) {
    let _serial = serial();
    let chromium = chromium_path();
    if !chromium.exists() {
        return skip(&format!("chromium not found at {}", chromium.display()));
    }
    if !succeeds(Command::new("node").arg("--version")) {
        return skip("node not found");
    }
    if !node_modules_available() {
        return skip("npm packages playwright-core and @binbat/whip-whep not found (npm ci)");
    }
    if !succeeds(Command::new("python3").arg("--version")) {
        return skip("python3 not found");
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            return skip(&format!(
                "network namespaces not available (needs root and ip): {e}"
            ));
        }
    };
    let scratch = Scratch::new();
    let ip: IpAddr = NS_BRIDGE_IP.parse().unwrap();
    let http = SocketAddr::new(ip, 8080);
    let bridge = Bridge::start(
        &scratch,
        Some(&ns),
        http,
        SocketAddr::new(ip, 8189),
        Some(ip),
    );
    let url = format!("http://{http}/whip/chromium-interop");
    let mut driver = ns.command("node");
    driver
        .arg(interop_dir().join("chromium_publish.mjs"))
        .args([url.as_str(), &PUBLISH_SECS.to_string(), TOKEN])
        .env("CHROMIUM", &chromium);
    if restart {
        driver.arg("restart");
    }
    let mut publisher = Proc::spawn("chromium", &mut driver, scratch.file("chromium.log"));
    let after = watch_publish(
        &bridge,
        &mut publisher,
        Duration::from_secs(120),
        &Expect {
            video_packets: 100.0,
            audio_packets: 150.0,
            keyframes: 1.0,
            // WHIPClient sends its candidates (and end-of-candidates) by PATCH after the 201,
            // and again after a restart.
            patches: if restart { 2.0 } else { 1.0 },
        },
    );
    let log = publisher.log_text();
    if restart {
        let restarts = after.sum(
            "bridge_http_requests_total",
            &[("method", "PATCH"), ("status", "200")],
        );
        assert!(
            restarts >= 1.0,
            "no PATCH answered 200 (ICE restart)\n{}",
            after.0
        );
    }
    // The bridge got (about) everything the browser says it sent.
    let result = log
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from the driver\n{log}"));
    let sent = |kind: &str| -> f64 {
        let key = format!("\"{kind}\":{{\"packetsSent\":");
        result
            .split_once(&key)
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} packetsSent in {result}"))
    };
    for kind in ["video", "audio"] {
        let got = after.sum("bridge_rtp_packets_total", &[("kind", kind)]);
        assert!(
            got >= 0.9 * sent(kind),
            "bridge counted {got} {kind} packets, the browser sent {}\n{result}",
            sent(kind)
        );
    }
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
