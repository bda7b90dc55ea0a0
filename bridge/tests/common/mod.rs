//! Harness shared by the integration tests that run real programs: the bridge binary, real
//! publishers and servers, network namespaces; everything cleaned up on drop.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");
pub const TOKEN: &str = "interop-token-4f1c9a";
/// How long each publisher streams.
pub const PUBLISH_SECS: u32 = 6;
/// Addresses of the two veth ends inside a test's own namespace (never routed anywhere else).
pub const NS_BRIDGE_IP: &str = "10.213.0.1";
pub const NS_CLIENT_IP: &str = "10.213.0.2";
pub const NS_PREFIX: &str = "whipit-";

pub static SERIAL: Mutex<()> = Mutex::new(());
pub static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn required() -> bool {
    std::env::var("BRIDGE_REQUIRE_INTEROP").is_ok_and(|v| v.trim() == "1")
}

/// Ends a test whose tool is missing: a visible `SKIPPED` line and a pass, or a failure when
/// interop is required.
pub fn skip(what: &str) {
    assert!(!required(), "{what} (BRIDGE_REQUIRE_INTEROP=1)");
    // Straight to the process's stderr, so that it shows: libtest captures print!/eprint! only.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

pub fn unique() -> String {
    format!(
        "{NS_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn output(cmd: &mut Command) -> Result<String, String> {
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
pub fn ffmpeg_whip() -> Option<PathBuf> {
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

pub fn aiortc_available() -> bool {
    succeeds(Command::new("python3").args(["-c", "import aiortc, av"]))
}

pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Node with playwright-core, the WHIP client library and hls.js resolvable from the interop
/// folder (`npm ci` at the repository root installs them all).
pub fn node_modules_available() -> bool {
    succeeds(
        Command::new("node")
            .args([
                "-e",
                "require.resolve('playwright-core'); require.resolve('@binbat/whip-whep/whip.js'); \
                 require.resolve('hls.js/dist/hls.min.js')",
            ])
            .current_dir(interop_dir()),
    )
}

// ---------------------------------------------------------------------------------------------
// Scratch folder, child processes, network namespace: all cleaned up on drop.

/// A folder for logs; kept (and named) when the test fails or `BRIDGE_INTEROP_KEEP_LOGS` is set.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
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
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
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

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "----- {} ({}), last {lines} lines -----\n{tail}\n-----",
            self.name,
            self.log.display()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pgid = self.child.id();
        // The whole group (Chromium's helpers, ...), then the child itself for good measure.
        // procps kill(1), not the shell builtin: dash's cannot signal a process group.
        let _ = succeeds(Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]));
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
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create() -> Result<Self, String> {
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

    /// [`Netns::create`], or `None` after [`skip`] when namespaces cannot be made (no root, or
    /// no `ip`).
    pub fn create_or_skip() -> Option<Self> {
        match Self::create() {
            Ok(ns) => Some(ns),
            Err(e) => {
                skip(&format!(
                    "network namespaces not available (needs root and ip): {e}"
                ));
                None
            }
        }
    }

    /// `ip netns exec NAME program`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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

pub fn delete_namespace(name: &str) {
    if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids.split_whitespace() {
            let _ = succeeds(Command::new("sh").args(["-c", &format!("kill -KILL {pid}")]));
        }
    }
    let _ = succeeds(Command::new("ip").args(["netns", "del", name]));
}

/// Deletes namespaces left by an earlier run of these tests that was killed before its guards
/// ran (their name carries the pid of a process that is gone).
pub fn reap_stale_namespaces() {
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

pub struct Bridge<'a> {
    pub proc: Proc,
    pub http: SocketAddr,
    pub ns: Option<&'a Netns>,
}

impl<'a> Bridge<'a> {
    pub fn start(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        http: SocketAddr,
        udp: SocketAddr,
        advertise: Option<IpAddr>,
    ) -> Self {
        Self::start_with(scratch, ns, http, udp, advertise, &[])
    }

    /// The bridge inside `ns` on [`NS_BRIDGE_IP`] (HTTP port 8080, UDP port 8189, that address
    /// advertised), with extra command-line arguments.
    pub fn start_in(scratch: &Scratch, ns: &'a Netns, extra: &[String]) -> Self {
        let ip: IpAddr = NS_BRIDGE_IP.parse().unwrap();
        let (http, udp) = (SocketAddr::new(ip, 8080), SocketAddr::new(ip, 8189));
        Self::start_with(scratch, Some(ns), http, udp, Some(ip), extra)
    }

    /// [`Bridge::start`] with extra command-line arguments (outputs, ...).
    pub fn start_with(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        http: SocketAddr,
        udp: SocketAddr,
        advertise: Option<IpAddr>,
        extra: &[String],
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
        // HLS is on by default: its files go to the scratch folder, not the source tree.
        if !extra.iter().any(|a| a == "--hls-dir") {
            cmd.arg("--hls-dir").arg(scratch.file("hls"));
        }
        cmd.args(extra);
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

    /// The WHIP endpoint URL of a stream.
    pub fn whip_url(&self, stream: &str) -> String {
        format!("http://{}/whip/{stream}", self.http)
    }

    /// `GET path` from where the bridge listens (inside its namespace if it has one).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
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

    pub fn metrics(&self) -> Metrics {
        match self.get("/metrics") {
            Ok((200, text)) => Metrics(text),
            other => panic!("GET /metrics: {other:?}\n{}", self.proc.log_tail(40)),
        }
    }
}

/// HTTP/1.0 GET over a plain TCP connection (the body ends with the connection).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
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
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
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
pub type Sample = (String, Vec<(String, String)>, f64);

/// `name{k="v",...} value [timestamp]` into its parts (label values unescaped).
pub fn parse_sample(line: &str) -> Option<Sample> {
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

pub fn free_loopback_ports() -> (SocketAddr, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (tcp.local_addr().unwrap(), udp.local_addr().unwrap())
}

/// FFmpeg 9 publishing `secs` of test pattern + tone over WHIP: libx264 baseline with a keyframe a
/// second, libopus, Bearer token. Paced like a camera: no initial burst, and no catching up
/// faster than real time after the encoder's slow start (`-re` alone sends 5 % fast for a
/// while, which a player at the live edge sees as latency growing).
pub fn ffmpeg_publish(ffmpeg: &Path, url: &str, secs: u32) -> Command {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "verbose", "-re"])
        .args(["-readrate_initial_burst", "0", "-readrate_catchup", "1"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
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
        .args(["-f", "whip", url]);
    cmd
}

/// The bridge in this process on free loopback ports, its HLS files in a temp folder; `tweak`
/// adjusts the configuration. `RUST_LOG=bridge=debug` shows the bridge's side of a failing test.
pub async fn start_in_process(tweak: impl FnOnce(&mut bridge::Config)) -> bridge::Bridge {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut config = bridge::Config {
        http: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        // HLS is on by default: keep its files out of the source tree.
        hls_dir: std::env::temp_dir().join(unique()),
        ..bridge::Config::default()
    };
    tweak(&mut config);
    bridge::Bridge::start(config).await.unwrap()
}
