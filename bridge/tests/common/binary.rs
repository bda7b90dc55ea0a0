//! The `bridge` binary as a child process (on loopback or inside a namespace), and HTTP to it
//! (HTTPS when it serves the scratch folder's test certificate, [`super::tls::https_args`]).
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use super::netns::{NS_BRIDGE_IP, Netns};
use super::peers::interop_dir;
use super::proc::{Proc, Scratch, output};
use super::tls::{client_config_from, scratch_ca};

pub(crate) const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");
pub(crate) const TOKEN: &str = "interop-token-4f1c9a";

pub(crate) struct Bridge<'a> {
    pub(crate) proc: Proc,
    pub(crate) http: SocketAddr,
    pub(crate) ns: Option<&'a Netns>,
    /// The CA its HTTPS certificate comes from; `None`: it serves plain HTTP.
    pub(crate) ca: Option<PathBuf>,
}

impl<'a> Bridge<'a> {
    pub(crate) fn start(
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
    pub(crate) fn start_in(scratch: &Scratch, ns: &'a Netns, extra: &[String]) -> Self {
        Self::start_in_on(scratch, ns, (8080, 8189), extra)
    }

    /// [`Bridge::start_in`] on other ports (HTTP, UDP): a second bridge in the namespace.
    pub(crate) fn start_in_on(
        scratch: &Scratch,
        ns: &'a Netns,
        (http, udp): (u16, u16),
        extra: &[String],
    ) -> Self {
        let ip: IpAddr = NS_BRIDGE_IP.parse().unwrap();
        let (http, udp) = (SocketAddr::new(ip, http), SocketAddr::new(ip, udp));
        Self::start_with(scratch, Some(ns), http, udp, Some(ip), extra)
    }

    /// [`Bridge::start`] with extra command-line arguments (outputs, ...); HTTPS when they hold
    /// [`super::tls::https_args`].
    pub(crate) fn start_with(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        http: SocketAddr,
        udp: SocketAddr,
        advertise: Option<IpAddr>,
        extra: &[String],
    ) -> Self {
        Self::start_with_env(scratch, ns, http, udp, advertise, extra, &[])
    }

    /// [`Bridge::start_with`], with environment variables set for the bridge (credentials).
    pub(crate) fn start_with_env(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        http: SocketAddr,
        udp: SocketAddr,
        advertise: Option<IpAddr>,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = match ns {
            Some(ns) => ns.command(BRIDGE),
            None => Command::new(BRIDGE),
        };
        cmd.args(["--http", &http.to_string(), "--udp", &udp.to_string()])
            .args(["--token", TOKEN])
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        if let Some(ip) = advertise {
            cmd.args(["--advertise-ip", &ip.to_string()]);
        }
        // HLS is on by default: its files go to the scratch folder, not the source tree.
        if !extra.iter().any(|a| a == "--hls-dir") {
            cmd.arg("--hls-dir").arg(scratch.file("hls"));
        }
        cmd.args(extra);
        let proc = Proc::spawn("bridge", &mut cmd, scratch.file("bridge.log"));
        let ca = extra
            .iter()
            .any(|a| a == "--tls-cert")
            .then(|| scratch_ca(scratch));
        let mut bridge = Self { proc, http, ns, ca };
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
    pub(crate) fn whip_url(&self, stream: &str) -> String {
        self.url(&format!("/whip/{stream}"))
    }

    /// The URL of `path` on the bridge.
    pub(crate) fn url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http)
    }

    /// Makes a client trust the bridge's test CA, if it serves HTTPS: OpenSSL's clients (FFmpeg,
    /// Python) read `SSL_CERT_FILE`, and so does the Chromium driver (`interop/page.mjs`).
    pub(crate) fn trusted_by<'c>(&self, client: &'c mut Command) -> &'c mut Command {
        if let Some(ca) = &self.ca {
            client.env("SSL_CERT_FILE", ca);
        }
        client
    }

    /// `GET path` from where the bridge listens (inside its namespace if it has one).
    pub(crate) fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.request("GET", path)
    }

    /// `method path` with the bearer token and no body, from where the bridge listens: the
    /// status and the body.
    pub(crate) fn request(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        match (self.ns, &self.ca) {
            (None, None) => {
                http_request(self.http, method, path, None, "").map(|(code, _, body)| (code, body))
            }
            (None, Some(ca)) => https_request(self.http, method, path, ca),
            (Some(ns), _) => {
                let url = self.url(path);
                let out = output(
                    self.trusted_by(&mut ns.command("python3"))
                        .arg(interop_dir().join("http_request.py"))
                        .args([&url, TOKEN, method]),
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

    pub(crate) fn metrics(&self) -> Metrics {
        match self.get("/metrics") {
            Ok((200, text)) => Metrics(text),
            other => panic!("GET /metrics: {other:?}\n{}", self.proc.log_tail(40)),
        }
    }
}

/// HTTP/1.0 GET over a plain TCP connection (the body ends with the connection).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    request_over(connect(addr)?, addr, "GET", path, None, "").map(|(code, _, body)| (code, body))
}

/// An HTTP/1.0 request over a plain TCP connection with the bearer token and, when given, a
/// body of that content type: the status, the head (status line and headers) and the body.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<(u16, String, String), String> {
    request_over(connect(addr)?, addr, method, path, content_type, body)
}

/// [`http_get`] over TLS, trusting the CA in `ca`.
pub(crate) fn https_get(addr: SocketAddr, path: &str, ca: &Path) -> Result<(u16, String), String> {
    https_request(addr, "GET", path, ca)
}

/// `method path` with the bearer token and no body over TLS, trusting the CA in `ca`: the
/// status and the body.
pub(crate) fn https_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ca: &Path,
) -> Result<(u16, String), String> {
    use tokio_rustls::rustls::{ClientConnection, StreamOwned, pki_types::ServerName};
    let name = ServerName::from(addr.ip());
    let tls = ClientConnection::new(client_config_from(ca), name).map_err(|e| e.to_string())?;
    request_over(
        StreamOwned::new(tls, connect(addr)?),
        addr,
        method,
        path,
        None,
        "",
    )
    .map(|(code, _, body)| (code, body))
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn request_over(
    mut stream: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<(u16, String, String), String> {
    let content = content_type.map_or(String::new(), |t| {
        format!("Content-Type: {t}\r\nContent-Length: {}\r\n", body.len())
    });
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n{content}\r\n{body}"
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
    Ok((code, head.to_owned(), body.to_owned()))
}

/// A TCP port free on loopback (for a server told its ports on the command line: nginx,
/// SeaweedFS).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn free_loopback_ports() -> (SocketAddr, SocketAddr) {
    free_ports_on([127, 0, 0, 1].into())
}

/// A free TCP and a free UDP port on `ip` (any of 127/8 on Linux: all of it is loopback).
pub(crate) fn free_ports_on(ip: IpAddr) -> (SocketAddr, SocketAddr) {
    let tcp = TcpListener::bind((ip, 0)).unwrap();
    let udp = UdpSocket::bind((ip, 0)).unwrap();
    (tcp.local_addr().unwrap(), udp.local_addr().unwrap())
}
