//! A Redis server of the test's own: Debian's `redis-server` on a free loopback port, with no
//! persistence, killed on drop; and `redis-cli` to look at it.
// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::proc::{Proc, Scratch, output, skip, succeeds};

pub(crate) struct Redis {
    pub(crate) proc: Proc,
    /// Plain TCP (what `redis-cli` here talks to).
    pub(crate) port: u16,
    /// TLS too, on this port, when started with [`Redis::start_tls`].
    pub(crate) tls_port: Option<u16>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// A server on a free port; `None` (the test skips, or fails when interop is required)
    /// when `redis-server` is not installed.
    pub(crate) fn start(scratch: &Scratch) -> Option<Self> {
        if !succeeds(Command::new("redis-server").arg("--version")) {
            skip("redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        Some(Self::start_on(scratch, free_port()))
    }

    /// A server on `port` (again, after [`Redis::stop`]).
    pub(crate) fn start_on(scratch: &Scratch, port: u16) -> Self {
        Self::spawn(scratch, port, None)
    }

    /// [`Redis::start`], also serving TLS with this certificate chain and key (PEM files) on a
    /// port of its own; clients need no certificate.
    pub(crate) fn start_tls(scratch: &Scratch, chain: &Path, key: &Path) -> Option<Self> {
        if !succeeds(Command::new("redis-server").arg("--version")) {
            skip("redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        Some(Self::spawn(
            scratch,
            free_port(),
            Some((free_port(), chain, key)),
        ))
    }

    fn spawn(scratch: &Scratch, port: u16, tls: Option<(u16, &Path, &Path)>) -> Self {
        let mut cmd = Command::new("redis-server");
        if let Some((tls_port, chain, key)) = tls {
            cmd.args([
                "--tls-port",
                &tls_port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(chain)
            .arg("--tls-key-file")
            .arg(key);
        }
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(scratch.file(""));
        let proc = Proc::spawn("redis-server", &mut cmd, scratch.file("redis.log"));
        let redis = Self {
            proc,
            port,
            tls_port: tls.map(|(tls_port, ..)| tls_port),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).as_deref() != Ok("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer\n{}",
                redis.proc.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// Kills the server (SIGKILL: nothing saved, nothing said to the clients).
    pub(crate) fn stop(&mut self) {
        self.proc.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port's URL.
    pub(crate) fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port.unwrap())
    }

    /// `redis-cli` with these arguments; its output trimmed.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<String, String> {
        output(
            Command::new("redis-cli")
                .args(["-p", &self.port.to_string()])
                .args(args),
        )
        .map(|s| s.trim().to_owned())
    }

    /// The keys matching `pattern`.
    pub(crate) fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
