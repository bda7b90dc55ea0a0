//! A Redis server of the test's own: Debian's `redis-server` on a free loopback port (or inside a
//! network namespace of the test's), with no persistence, killed on drop; and `redis-cli` to look
//! at it.
// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::proc::{Proc, Scratch, output, skip, succeeds};

pub(crate) struct Redis<'a> {
    pub(crate) proc: Proc,
    /// Plain TCP (what `redis-cli` here talks to).
    pub(crate) port: u16,
    /// TLS too, on this port, when started with [`Redis::start_tls`].
    pub(crate) tls_port: Option<u16>,
    /// Where it runs; `None`: on this host's loopback.
    pub(crate) ns: Option<&'a Netns>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis<'static> {
    /// A server on a free port; `None` (the test skips, or fails when interop is required)
    /// when `redis-server` is not installed.
    pub(crate) fn start(scratch: &Scratch) -> Option<Self> {
        if !installed() {
            return None;
        }
        Some(Self::start_on(scratch, free_port()))
    }

    /// A server on `port` (again, after [`Redis::stop`]).
    pub(crate) fn start_on(scratch: &Scratch, port: u16) -> Self {
        Self::spawn(scratch, None, port, None)
    }

    /// [`Redis::start`], also serving TLS with this certificate chain and key (PEM files) on a
    /// port of its own; clients need no certificate.
    pub(crate) fn start_tls(scratch: &Scratch, chain: &Path, key: &Path) -> Option<Self> {
        let tls = (free_port(), chain, key);
        installed().then(|| Self::spawn(scratch, None, free_port(), Some(tls)))
    }
}

impl<'a> Redis<'a> {
    /// A server inside `ns`, on its 127.0.0.1:6379 (the namespace is the test's own: the port is
    /// free); `None` as for [`Redis::start`].
    pub(crate) fn start_in(scratch: &Scratch, ns: &'a Netns) -> Option<Self> {
        installed().then(|| Self::spawn(scratch, Some(ns), 6379, None))
    }

    fn spawn(
        scratch: &Scratch,
        ns: Option<&'a Netns>,
        port: u16,
        tls: Option<(u16, &Path, &Path)>,
    ) -> Self {
        let mut cmd = match ns {
            Some(ns) => ns.command("redis-server"),
            None => Command::new("redis-server"),
        };
        if let Some((tls_port, chain, key)) = tls {
            cmd.args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-auth-clients", "no"])
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
            ns,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers() {
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
        while self.answers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        self.cli(&["PING"]).as_deref() == Ok("PONG")
    }

    /// The URL its clients give, from where it runs (this host, or inside its namespace).
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port's URL.
    pub(crate) fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port.unwrap())
    }

    /// `redis-cli` with these arguments (run where the server runs); its output trimmed.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = match self.ns {
            Some(ns) => ns.command("redis-cli"),
            None => Command::new("redis-cli"),
        };
        output(cmd.args(["-p", &self.port.to_string()]).args(args)).map(|s| s.trim().to_owned())
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

/// Whether `redis-server` is installed; false after [`skip`].
fn installed() -> bool {
    let found = succeeds(Command::new("redis-server").arg("--version"));
    if !found {
        skip("redis-server is not installed (apt-get install redis-server)");
    }
    found
}
