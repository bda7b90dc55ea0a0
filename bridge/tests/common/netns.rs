//! A network namespace of the test's own, for the WebRTC peers that must not see loopback (or
//! must not see the host's interfaces). Needs root and `ip`.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use super::proc::{NS_PREFIX, output, skip, succeeds, unique};

/// Addresses of the two veth ends inside a test's own namespace (never routed anywhere else).
pub(crate) const NS_BRIDGE_IP: &str = "10.213.0.1";
pub(crate) const NS_CLIENT_IP: &str = "10.213.0.2";

/// A network namespace of the test's own: `lo` up and a veth pair with both ends inside,
/// [`NS_BRIDGE_IP`] and [`NS_CLIENT_IP`], no default route, IPv6 off. Deleted on drop, after
/// killing whatever still runs in it.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create() -> Result<Self, String> {
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
    pub(crate) fn create_or_skip() -> Option<Self> {
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
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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

pub(crate) fn delete_namespace(name: &str) {
    if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids.split_whitespace() {
            let _ = succeeds(Command::new("sh").args(["-c", &format!("kill -KILL {pid}")]));
        }
    }
    let _ = succeeds(Command::new("ip").args(["netns", "del", name]));
}

/// Deletes namespaces left by an earlier run of these tests that was killed before its guards
/// ran (their name carries the pid of a process that is gone).
pub(crate) fn reap_stale_namespaces() {
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
