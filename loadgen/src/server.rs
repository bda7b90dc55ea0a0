//! What the server under test spent: its Prometheus process metrics (`--server-metrics`),
//! scraped at the start and end of a run's steady window.
//!
//! Any server that exposes the standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`) can be measured; the bridge's RTP packet counter
//! (`bridge_rtp_packets_total`, summed over its labels) adds the CPU per packet when present.
//! When the endpoint cannot be read or lacks the process metrics, the report says why
//! ([`ServerReport::error`]) instead of reporting nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// CPU time the server spent, counter (seconds).
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Resident memory, gauge (bytes).
pub const RSS_BYTES: &str = "process_resident_memory_bytes";
/// RTP packets the bridge received, counter (summed over its `kind` label).
pub const RTP_PACKETS: &str = "bridge_rtp_packets_total";

/// Limit for one scrape.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest exposition read.
const MAX_BODY: usize = 16 << 20;

/// `--server-metrics` as given: `off`, a URL, or (absent) the WHIP URL's node base
/// ([`crate::sdp::node_base`]: its origin, or the node's path behind a proxy) + `/metrics`.
/// `None`: measuring is off.
pub fn metrics_url(option: Option<&str>, whip_url: &str) -> Option<String> {
    match option {
        Some("off") => None,
        Some(url) => Some(url.to_owned()),
        None => Some(format!(
            "{}/metrics",
            crate::sdp::node_base(whip_url).unwrap_or(whip_url)
        )),
    }
}

/// The samples of a Prometheus text (or OpenMetrics) exposition: each series' name with the sum
/// of its values over all label sets. Comments, blank lines, and lines whose value is not a
/// number are skipped; a timestamp after the value is ignored.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ', '\t']) {
            Some(i) if line[i..].starts_with('{') => {
                // Label values may hold `}` and spaces when quoted: skip to the closing brace
                // outside quotes.
                let Some(end) = labels_end(&line[i..]) else {
                    continue;
                };
                (&line[..i], &line[i + end + 1..])
            }
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        *out.entry(name.to_owned()).or_insert(0.0) += value;
    }
    out
}

/// The index of the `}` closing a label set that starts at `s[0] == '{'`.
fn labels_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// One scrape: what the report needs of it.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// When it was answered.
    pub at: Instant,
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: f64,
    /// `bridge_rtp_packets_total`, all labels together, if the server has it.
    pub rtp_packets: Option<f64>,
}

impl Scrape {
    /// The values of an exposition, or why it lacks what is needed.
    pub fn from_exposition(text: &str, at: Instant) -> Result<Self, String> {
        let samples = parse_exposition(text);
        let get = |name: &str| samples.get(name).copied();
        let (Some(cpu_seconds), Some(rss_bytes)) = (get(CPU_SECONDS), get(RSS_BYTES)) else {
            let missing: Vec<&str> = [CPU_SECONDS, RSS_BYTES]
                .into_iter()
                .filter(|n| !samples.contains_key(*n))
                .collect();
            return Err(format!(
                "no process metrics ({} missing)",
                missing.join(", ")
            ));
        };
        Ok(Self {
            at,
            cpu_seconds,
            rss_bytes,
            rtp_packets: get(RTP_PACKETS),
        })
    }
}

/// GETs `url` and reads its process metrics.
pub async fn scrape(url: &str) -> Result<Scrape, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(url)
        .header("accept", "text/plain")
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        Scrape::from_exposition(&text, Instant::now()).map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{url}: no answer in {SCRAPE_TIMEOUT:?}"))?
}

/// What the server spent over a run's steady window (the report's `server`).
///
/// The raw deltas are kept, so merged runs add them and recompute the ratios. A ratio whose
/// denominator is zero or unknown is `null`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    /// The metrics endpoint scraped.
    pub url: String,
    /// Why nothing could be measured (endpoint unreachable, no process metrics, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Length of the window between the two scrapes, seconds.
    #[serde(default)]
    pub window_s: f64,
    /// CPU seconds the server spent in the window (user + system).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// RSS at the end minus at the start, bytes.
    #[serde(default)]
    pub rss_delta_bytes: f64,
    /// RSS at the end, bytes.
    #[serde(default)]
    pub rss_bytes: f64,
    /// RTP packets the server counted in the window, if it counts them.
    #[serde(default)]
    pub rtp_packets: Option<f64>,
    /// Publishers sending through the window (`publish`).
    #[serde(default)]
    pub publishers: u64,
    /// Sessions set up in the window (`signal`).
    #[serde(default)]
    pub sessions: u64,
    /// Server CPU ms per second per publisher.
    pub cpu_ms_per_s_per_publisher: Option<f64>,
    /// Server CPU µs per RTP packet received.
    pub us_per_packet: Option<f64>,
    /// Server CPU ms per session set up.
    pub cpu_ms_per_session: Option<f64>,
    /// RSS growth per session (`publish`: per publisher alive; `signal`: per session set up,
    /// measured after they ended, so what each left behind).
    pub rss_bytes_per_session: Option<f64>,
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite()).then(|| num / den)
}

impl ServerReport {
    /// Nothing measured, because of `error`.
    pub fn failed(url: &str, error: String) -> Self {
        Self {
            url: url.to_owned(),
            error: Some(error),
            ..Self::default()
        }
    }

    /// From the scrapes at the start and end of the window, with `publishers` sending through
    /// it (`publish`) or `sessions` set up in it (`signal`).
    pub fn of(url: &str, start: &Scrape, end: &Scrape, publishers: u64, sessions: u64) -> Self {
        let mut out = Self {
            url: url.to_owned(),
            error: None,
            window_s: end.at.saturating_duration_since(start.at).as_secs_f64(),
            cpu_seconds: end.cpu_seconds - start.cpu_seconds,
            rss_delta_bytes: end.rss_bytes - start.rss_bytes,
            rss_bytes: end.rss_bytes,
            rtp_packets: start.rtp_packets.zip(end.rtp_packets).map(|(a, b)| b - a),
            publishers,
            sessions,
            ..Self::default()
        };
        if out.cpu_seconds < 0.0 {
            out.error = Some("the server's CPU counter went backwards (did it restart?)".into());
        }
        out.derive();
        out
    }

    /// Recomputes the ratios from the raw deltas.
    fn derive(&mut self) {
        if self.error.is_some() {
            self.cpu_ms_per_s_per_publisher = None;
            self.us_per_packet = None;
            self.cpu_ms_per_session = None;
            self.rss_bytes_per_session = None;
            return;
        }
        let cpu_ms = self.cpu_seconds * 1000.0;
        self.cpu_ms_per_s_per_publisher = ratio(cpu_ms, self.window_s * self.publishers as f64);
        self.us_per_packet = self
            .rtp_packets
            .and_then(|p| ratio(self.cpu_seconds * 1e6, p));
        self.cpu_ms_per_session = ratio(cpu_ms, self.sessions as f64);
        let alive = if self.publishers > 0 {
            self.publishers
        } else {
            self.sessions
        };
        self.rss_bytes_per_session = ratio(self.rss_delta_bytes, alive as f64);
    }

    /// Adds another run's window (runs merged as if one after the other).
    pub fn add(&mut self, other: &ServerReport) {
        if self.error.is_none() {
            self.error = other.error.clone();
        }
        if self.url != other.url && !self.url.contains(&other.url) {
            self.url = format!("{}, {}", self.url, other.url);
        }
        // Publisher-seconds add up; keep `publishers` such that window × publishers does.
        let publisher_s =
            self.window_s * self.publishers as f64 + other.window_s * other.publishers as f64;
        self.window_s += other.window_s;
        self.publishers = if self.window_s > 0.0 {
            (publisher_s / self.window_s).round() as u64
        } else {
            self.publishers.max(other.publishers)
        };
        self.cpu_seconds += other.cpu_seconds;
        self.rss_delta_bytes += other.rss_delta_bytes;
        self.rss_bytes = self.rss_bytes.max(other.rss_bytes);
        self.rtp_packets = self.rtp_packets.zip(other.rtp_packets).map(|(a, b)| a + b);
        self.sessions += other.sessions;
        self.derive();
    }

    /// The report's table lines.
    pub fn table(&self) -> String {
        if let Some(error) = &self.error {
            return format!("server: not measured: {error}\n");
        }
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
        };
        let mut out = format!(
            "server ({}): {:.3} CPU s in a {:.1} s window; RSS {:.1} MiB ({:+.1} MiB)\n",
            self.url,
            self.cpu_seconds,
            self.window_s,
            self.rss_bytes / 1048576.0,
            self.rss_delta_bytes / 1048576.0,
        );
        if self.publishers > 0 {
            out += &format!(
                "  CPU per publisher: {} ms/s ({} publishers); per RTP packet: {} us ({} packets)\n",
                opt(self.cpu_ms_per_s_per_publisher, 2),
                self.publishers,
                opt(self.us_per_packet, 2),
                self.rtp_packets
                    .map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}")),
            );
        }
        if self.sessions > 0 {
            out += &format!(
                "  CPU per session set up: {} ms ({} sessions)\n",
                opt(self.cpu_ms_per_session, 3),
                self.sessions
            );
        }
        out += &format!(
            "  RSS per session: {} bytes\n",
            opt(self.rss_bytes_per_session, 0)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_metrics_urls() {
        assert_eq!(
            metrics_url(None, "http://h:8080/whip/a").as_deref(),
            Some("http://h:8080/metrics")
        );
        assert_eq!(
            metrics_url(None, "https://whip.example/b/whip/{i}").as_deref(),
            Some("https://whip.example/b/metrics")
        );
        assert_eq!(metrics_url(Some("off"), "http://h/whip"), None);
        assert_eq!(
            metrics_url(Some("http://m:9/x"), "http://h/whip").as_deref(),
            Some("http://m:9/x")
        );
    }

    #[test]
    fn expositions() {
        let text = "\
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e7
bridge_rtp_packets_total{kind=\"audio\"} 100
bridge_rtp_packets_total{kind=\"video\"} 250 1700000000000
odd{path=\"a } b\",x=\"q\\\"}\"} 3
up{} 1
nan_value NaN
inf_value +Inf
bad_value twelve

";
        let s = parse_exposition(text);
        assert_eq!(s.get("process_cpu_seconds_total"), Some(&12.5));
        assert_eq!(s.get("process_resident_memory_bytes"), Some(&10485760.0));
        assert_eq!(s.get("bridge_rtp_packets_total"), Some(&350.0));
        assert_eq!(s.get("odd"), Some(&3.0));
        assert_eq!(s.get("up"), Some(&1.0));
        assert!(s.get("nan_value").is_some_and(|v| v.is_nan()));
        assert_eq!(s.get("inf_value"), Some(&f64::INFINITY));
        assert_eq!(s.get("bad_value"), None);
        assert_eq!(s.get("process_cpu_seconds"), None);
        let at = Instant::now();
        let scrape = Scrape::from_exposition(text, at).unwrap();
        assert_eq!(scrape.rtp_packets, Some(350.0));
        let err = Scrape::from_exposition("up 1\n", at).unwrap_err();
        assert!(err.contains("process_cpu_seconds_total"), "{err}");
    }

    #[test]
    fn arithmetic() {
        let t0 = Instant::now();
        let at = |s| Scrape {
            at: t0 + Duration::from_secs(s),
            cpu_seconds: 0.0,
            rss_bytes: 0.0,
            rtp_packets: None,
        };
        let start = Scrape {
            cpu_seconds: 10.0,
            rss_bytes: 1e6,
            rtp_packets: Some(1000.0),
            ..at(0)
        };
        let end = Scrape {
            cpu_seconds: 10.8,
            rss_bytes: 5e6,
            rtp_packets: Some(9000.0),
            ..at(10)
        };
        let r = ServerReport::of("u", &start, &end, 4, 0);
        assert_eq!(r.window_s, 10.0);
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // 800 ms over 10 s and 4 publishers.
        assert!(near(r.cpu_ms_per_s_per_publisher, 20.0), "{r:?}");
        // 0.8 s over 8000 packets.
        assert!(near(r.us_per_packet, 100.0), "{r:?}");
        assert!(near(r.rss_bytes_per_session, 1e6), "{r:?}");
        assert_eq!(r.cpu_ms_per_session, None);
        let s = ServerReport::of("u", &start, &end, 0, 400);
        assert!(near(s.cpu_ms_per_session, 2.0), "{s:?}");
        assert_eq!(s.cpu_ms_per_s_per_publisher, None);
        assert!(near(s.rss_bytes_per_session, 1e4), "{s:?}");
        let mut merged = r.clone();
        merged.add(&r);
        assert_eq!(merged.window_s, 20.0);
        assert!(near(merged.cpu_ms_per_s_per_publisher, 20.0));
        let back = ServerReport::of("u", &end, &start, 4, 0);
        assert!(back.error.is_some() && back.cpu_ms_per_s_per_publisher.is_none());
        assert!(back.table().contains("not measured"));
        assert!(r.table().contains("20.00 ms/s"), "{}", r.table());
    }
}
