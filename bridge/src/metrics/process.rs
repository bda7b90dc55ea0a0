//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), named and typed as the official client libraries'
//! process collectors export them, read from `/proc` at scrape time.
//!
//! Off Linux (no `/proc/self`), or when a file cannot be read, the metrics that need it are
//! left out of the scrape rather than reported as 0.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: `USER_HZ`, which Linux fixes at
/// 100 for userspace on every architecture (the kernel's own `HZ` may differ; `times(2)` and
/// `/proc` convert to `USER_HZ`). Reading `sysconf(_SC_CLK_TCK)` would need `unsafe`, which this
/// workspace forbids, and returns this same constant.
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/self/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// user-mode CPU time, clock ticks (field 14)
    pub utime: u64,
    /// kernel-mode CPU time, clock ticks (field 15)
    pub stime: u64,
    /// start time after boot, clock ticks (field 22)
    pub starttime: u64,
}

impl Stat {
    /// User plus system CPU time, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / USER_HZ
    }
}

/// Parses a `/proc/<pid>/stat` line. Field 2, `comm`, is in parentheses and may itself contain
/// spaces and parentheses, so the fields after it start after the line's last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// A `Key:   <n> kB` line of `/proc/<pid>/status` (`VmRSS`, `VmSize`), in bytes.
pub fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = value.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of `Max open files` from `/proc/<pid>/limits` (`None` if unlimited).
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    limits.lines().find_map(|line| {
        let rest = line.strip_prefix("Max open files")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Collects the process metrics of this process on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = read("/proc/self/stat").and_then(|line| parse_stat(&line));
        if let Some(stat) = stat {
            let cpu = ConstCounter::new(stat.cpu_seconds());
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            let btime = read("/proc/stat").and_then(|text| parse_btime(&text));
            if let Some(btime) = btime {
                let start = ConstGauge::new(btime as f64 + stat.starttime as f64 / USER_HZ);
                start.encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds.",
                    Some(&Unit::Seconds),
                    start.metric_type(),
                )?)?;
            }
        }
        if let Some(status) = read("/proc/self/status") {
            let memory = [
                (
                    "VmRSS",
                    "process_resident_memory",
                    "Resident memory size in bytes.",
                ),
                (
                    "VmSize",
                    "process_virtual_memory",
                    "Virtual memory size in bytes.",
                ),
            ];
            for (key, name, help) in memory {
                if let Some(bytes) = parse_status_bytes(&status, key) {
                    let gauge = ConstGauge::new(bytes as f64);
                    gauge.encode(encoder.encode_descriptor(
                        name,
                        help,
                        Some(&Unit::Bytes),
                        gauge.metric_type(),
                    )?)?;
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The count includes the directory handle `read_dir` itself holds open, as the
            // client libraries' collectors' counts do.
            let open = ConstGauge::new(dir.count() as f64);
            open.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                open.metric_type(),
            )?)?;
        }
        let max = read("/proc/self/limits").and_then(|text| parse_max_fds(&text));
        if let Some(max) = max {
            let gauge = ConstGauge::new(max as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_come_after_the_last_parenthesis() {
        // Captured from a live process, then its comm replaced by one with spaces and parens.
        let line = "12345 (tokio (rt) 1) S 1 12345 12345 0 -1 4194560 2319 0 0 0 \
                    250 75 0 0 20 0 9 0 987654 123457536 4321 18446744073709551615 1 1 0 0 0 0 \
                    0 4096 17638 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line);
        assert_eq!(
            stat,
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 987654
            })
        );
        assert_eq!(stat.map(|s| s.cpu_seconds()), Some(3.25));
        assert_eq!(parse_stat("12345 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parens"), None);
    }

    #[test]
    fn status_limits_and_btime() {
        let status =
            "Name:\tbridge\nVmPeak:\t  200000 kB\nVmSize:\t  123456 kB\nVmRSS:\t    4321 kB\n";
        assert_eq!(parse_status_bytes(status, "VmRSS"), Some(4321 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSize"), Some(123456 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1764700000\nprocesses 9\n"),
            Some(1_764_700_000)
        );
    }
}
