//! Child processes and their logs, scratch folders, and the switch between skipping and failing
//! when a tool is missing: all cleaned up on drop.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Prefix of every name [`unique`] makes (network namespaces are found by it after a crash).
pub(crate) const NS_PREFIX: &str = "whipit-";

pub(crate) static SERIAL: Mutex<()> = Mutex::new(());
pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn required() -> bool {
    std::env::var("BRIDGE_REQUIRE_INTEROP").is_ok_and(|v| v.trim() == "1")
}

/// Ends a test whose tool is missing: a visible `SKIPPED` line and a pass, or a failure when
/// interop is required.
pub(crate) fn skip(what: &str) {
    assert!(!required(), "{what} (BRIDGE_REQUIRE_INTEROP=1)");
    // Straight to the process's stderr, so that it shows: libtest captures print!/eprint! only.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

pub(crate) fn unique() -> String {
    format!(
        "{NS_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn output(cmd: &mut Command) -> Result<String, String> {
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

/// A folder for logs; kept (and named) when the test fails or `BRIDGE_INTEROP_KEEP_LOGS` is set.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(unique());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
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
pub(crate) struct Proc {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
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

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "----- {} ({}), last {lines} lines -----\n{tail}\n-----",
            self.name,
            self.log.display()
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn kill(&mut self) {
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
