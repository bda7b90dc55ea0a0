//! The bridge's one configuration: every knob, its default and its documentation live here.
//!
//! Sources, strongest first: command-line flags, `BRIDGE_*` environment variables (clap reads
//! both), the TOML file given by `--config`, then the defaults below.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::whip::resource;

/// How strictly `If-Match` is enforced on trickle PATCHes (the user-facing side of
/// [`resource::EtagMode`], which the protocol crate keeps free of clap and serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EtagMode {
    /// RFC 9725 as written: a trickle PATCH must carry the current tag.
    #[default]
    Strict,
    /// Also accept a trickle PATCH with no `If-Match`, or with `*` and unchanged credentials.
    Lenient,
}

impl From<EtagMode> for resource::EtagMode {
    fn from(mode: EtagMode) -> Self {
        match mode {
            EtagMode::Strict => Self::Strict,
            EtagMode::Lenient => Self::Lenient,
        }
    }
}

/// What to do when a publisher POSTs to a stream name that is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// The new publisher takes the stream over; the old session ends (its URL then 404s).
    #[default]
    Takeover,
    /// The new publisher is refused with 409.
    Refuse,
}

/// An ICE server advertised to clients in `Link` headers (RFC 9725 §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URL.
    pub url: String,
    /// TURN username.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default)]
    pub credential: Option<String>,
}

impl std::str::FromStr for IceServer {
    type Err = String;

    /// `URL` or `URL username credential` (space separated, for TURN).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_ascii_whitespace();
        let url = parts.next().ok_or("empty ICE server")?.to_owned();
        if !["stun:", "turn:", "turns:"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(format!(
                "ICE server {url:?} is not a stun:, turn: or turns: URL"
            ));
        }
        let username = parts.next().map(str::to_owned);
        let credential = parts.next().map(str::to_owned);
        if username.is_some() != credential.is_some() {
            return Err(format!(
                "ICE server {url:?}: give both username and credential"
            ));
        }
        Ok(Self {
            url,
            username,
            credential,
        })
    }
}

/// An RTMP push target with its own settings (config file only; `--rtmp` gives the common case).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpTarget {
    /// URL template, `{stream}` replaced by the WHIP stream name.
    pub url: String,
    /// aac (default), opus (Enhanced RTMP) or none.
    #[serde(default)]
    pub audio: crate::sink::rtmp::AudioMode,
    /// Only these streams (empty: every stream).
    #[serde(default)]
    pub streams: Vec<String>,
}

/// The bridge's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (WHIP, HLS, metrics).
    pub http: SocketAddr,
    /// The one UDP address every WebRTC session shares.
    pub udp: SocketAddr,
    /// Addresses put in host candidates. Empty: the `udp` bind address (which must then not be a
    /// wildcard). Candidates are never gathered from the machine's interfaces.
    pub advertise_ip: Vec<IpAddr>,
    /// Bearer token every request but CORS preflights must carry. None: no auth.
    pub token: Option<String>,
    /// ICE servers advertised in `Link` headers.
    pub ice_server: Vec<IceServer>,
    /// Most concurrent sessions; beyond it POST answers 503 with Retry-After.
    pub max_sessions: usize,
    /// Entity-tag checking on trickle PATCHes.
    pub etag: EtagMode,
    /// What a second publisher on a live stream name gets.
    pub on_conflict: OnConflict,
    /// POSTs per second allowed from one client address; beyond it 429.
    pub post_rate_per_ip: u32,
    /// A session that has not connected ICE within this many seconds ends.
    pub connect_timeout_secs: u64,
    /// A connected session whose publisher sends nothing (media or consent checks) for this many
    /// seconds ends (RFC 7675 consent freshness: 30).
    pub consent_timeout_secs: u64,
    /// Also ask publishers for a keyframe this often (seconds), for outputs that want regular
    /// GOPs from encoders that send one IDR per session (aiortc, browsers). None: only when
    /// needed (output start, loss).
    pub keyframe_interval_secs: Option<u64>,
    /// Write every received RTP packet (after SRTP) to files in this folder, for bug reports
    /// and test vectors. None: off.
    pub rtp_dump: Option<PathBuf>,
    /// How long a packet may wait for a missing one before the gap is declared lost.
    pub reorder_ms: u64,
    /// Where HLS output is written (served at /hls/).
    pub hls_dir: PathBuf,
    /// Every stream is also available as HLS (from /hls/ and `hls_dir`).
    pub hls: bool,
    /// HLS segment container.
    pub hls_container: crate::sink::hls::HlsContainer,
    /// LL-HLS (parts, blocking reload, preload hints); fMP4 only.
    pub hls_low_latency: bool,
    /// Segments a live HLS playlist keeps.
    pub hls_window: usize,
    /// HLS playlists keep every segment (`EXT-X-PLAYLIST-TYPE:EVENT`) instead of a window.
    pub hls_event: bool,
    /// HLS audio: AAC, Opus (fMP4 only) or none.
    pub hls_audio: crate::sink::hls::HlsAudio,
    /// RTMP push targets, `{stream}` replaced by the WHIP stream name (audio as AAC).
    pub rtmp: Vec<String>,
    /// RTMP targets with their own audio mode and stream filter.
    pub rtmp_target: Vec<RtmpTarget>,
    /// PEM file of extra root certificates trusted for `rtmps://` (a private CA).
    pub rtmp_ca: Option<PathBuf>,
    /// AAC bitrate for RTMP targets and HLS, bits per second.
    pub aac_bitrate: u32,
    /// Units queued per output before it starts dropping to the next keyframe.
    pub output_queue: usize,
    /// Receive buffer asked for the UDP socket, bytes. All sessions share the one socket, and
    /// publishers' keyframes arrive in bursts: the kernel's default (~200 KB) overflows at a
    /// few dozen publishers. Linux caps it at `net.core.rmem_max`; the bridge logs what it got.
    pub udp_recv_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            udp: SocketAddr::from(([127, 0, 0, 1], 8189)),
            advertise_ip: Vec::new(),
            token: None,
            ice_server: Vec::new(),
            max_sessions: 10_000,
            etag: EtagMode::Strict,
            on_conflict: OnConflict::Takeover,
            post_rate_per_ip: 2_000,
            connect_timeout_secs: 30,
            consent_timeout_secs: 30,
            keyframe_interval_secs: None,
            rtp_dump: None,
            reorder_ms: 100,
            hls_dir: PathBuf::from("hls"),
            hls: true,
            hls_container: Default::default(),
            hls_low_latency: true,
            hls_window: 6,
            hls_event: false,
            hls_audio: Default::default(),
            rtmp: Vec::new(),
            rtmp_target: Vec::new(),
            rtmp_ca: None,
            aac_bitrate: 128_000,
            output_queue: 512,
            udp_recv_buffer: 4 << 20,
        }
    }
}

/// Configuration errors, reported before anything binds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The addresses to advertise in host candidates.
    pub fn candidate_ips(&self) -> Vec<IpAddr> {
        if self.advertise_ip.is_empty() {
            vec![self.udp.ip()]
        } else {
            self.advertise_ip.clone()
        }
    }

    /// The ICE connection deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Every RTMP target a stream is pushed to: `--rtmp` templates (AAC), then the config
    /// file's targets whose stream filter admits it.
    pub fn rtmp_targets_for(&self, stream: &str) -> Vec<RtmpTarget> {
        let simple = self.rtmp.iter().map(|url| RtmpTarget {
            url: url.clone(),
            audio: Default::default(),
            streams: Vec::new(),
        });
        simple
            .chain(self.rtmp_target.iter().cloned())
            .filter(|t| t.streams.is_empty() || t.streams.iter().any(|s| s == stream))
            .map(|t| RtmpTarget {
                url: t.url.replace("{stream}", stream),
                ..t
            })
            .collect()
    }

    /// The periodic keyframe request interval, if any.
    pub fn keyframe_interval(&self) -> Option<Duration> {
        self.keyframe_interval_secs.map(Duration::from_secs)
    }

    /// How long a silent publisher keeps its session.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_secs(self.consent_timeout_secs)
    }

    /// The reorder buffer settings.
    pub fn reorder(&self) -> crate::media::reorder::ReorderConfig {
        crate::media::reorder::ReorderConfig {
            max_delay: Duration::from_millis(self.reorder_ms),
            ..Default::default()
        }
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.advertise_ip.is_empty() && self.udp.ip().is_unspecified() {
            return Err(ConfigError::Invalid(format!(
                "--udp {} is a wildcard address: give --advertise-ip for the host candidates",
                self.udp
            )));
        }
        if let Some(ip) = self.advertise_ip.iter().find(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid(format!(
                "--advertise-ip {ip} is a wildcard"
            )));
        }
        if self.max_sessions == 0
            || self.post_rate_per_ip == 0
            || self.connect_timeout_secs == 0
            || self.consent_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "max-sessions, post-rate-per-ip, connect-timeout-secs and consent-timeout-secs \
                 must be positive"
                    .into(),
            ));
        }
        for target in self.rtmp_targets_for("stream") {
            crate::sink::rtmp_conn::RtmpUrl::parse(&target.url)
                .map_err(|e| ConfigError::Invalid(format!("RTMP target: {e}")))?;
        }
        if self.output_queue == 0 || self.aac_bitrate < 8_000 {
            return Err(ConfigError::Invalid(
                "output-queue must be positive and aac-bitrate at least 8000".into(),
            ));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid("--token is empty".into()));
        }
        if self.hls_window == 0 {
            return Err(ConfigError::Invalid("hls-window must be positive".into()));
        }
        let wants_aac = (self.hls && self.hls_audio == crate::sink::hls::HlsAudio::Aac)
            || !self.rtmp.is_empty()
            || self
                .rtmp_target
                .iter()
                .any(|t| t.audio == crate::sink::rtmp::AudioMode::Aac);
        if wants_aac && !crate::transcode::AAC_ENCODER {
            return Err(ConfigError::Invalid(
                "AAC asked for, but this bridge was built without the AAC encoder (cargo \
                 feature fdk-aac): use --hls-audio opus|none, and [[rtmp_target]] with audio = \
                 \"opus\" or \"none\" instead of --rtmp"
                    .into(),
            ));
        }
        if self.hls_audio == crate::sink::hls::HlsAudio::Opus
            && self.hls_container == crate::sink::hls::HlsContainer::Ts
        {
            return Err(ConfigError::Invalid(
                "--hls-audio opus needs --hls-container fmp4 (MPEG-TS here carries AAC)".into(),
            ));
        }
        Ok(())
    }
}

/// Command line; every flag also reads `BRIDGE_<NAME>` from the environment.
#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "WHIP (RFC 9725) ingest: WebRTC in, RTMP and HLS out"
)]
pub struct Cli {
    /// TOML file with any of the settings below (flags and environment override it).
    #[arg(long, env = "BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "BRIDGE_HTTP")]
    pub http: Option<SocketAddr>,
    /// UDP address shared by all WebRTC sessions [default: 127.0.0.1:8189].
    #[arg(long, env = "BRIDGE_UDP")]
    pub udp: Option<SocketAddr>,
    /// IP to advertise in host candidates (repeatable) [default: the --udp address].
    #[arg(
        long = "advertise-ip",
        env = "BRIDGE_ADVERTISE_IP",
        value_delimiter = ','
    )]
    pub advertise_ip: Vec<IpAddr>,
    /// Bearer token required on every request but preflights.
    #[arg(long, env = "BRIDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// ICE server for Link headers: `URL` or `"URL USERNAME CREDENTIAL"` (repeatable).
    #[arg(long = "ice-server", env = "BRIDGE_ICE_SERVER", value_delimiter = ',')]
    pub ice_server: Vec<IceServer>,
    /// Most concurrent sessions [default: 10000].
    #[arg(long, env = "BRIDGE_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// If-Match checking on trickle PATCH [default: strict].
    #[arg(long, env = "BRIDGE_ETAG", value_enum)]
    pub etag: Option<EtagMode>,
    /// A second publisher on a live stream: takeover or refuse (409) [default: takeover].
    #[arg(long, env = "BRIDGE_ON_CONFLICT", value_enum)]
    pub on_conflict: Option<OnConflict>,
    /// POSTs per second per client address before 429 [default: 2000].
    #[arg(long, env = "BRIDGE_POST_RATE_PER_IP")]
    pub post_rate_per_ip: Option<u32>,
    /// Seconds a session may take to connect ICE [default: 30].
    #[arg(long, env = "BRIDGE_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<u64>,
    /// Seconds of silence from a connected publisher before its session ends [default: 30].
    #[arg(long, env = "BRIDGE_CONSENT_TIMEOUT_SECS")]
    pub consent_timeout_secs: Option<u64>,
    /// Dump every received RTP packet into files in DIR (debugging, test vectors).
    #[arg(long, env = "BRIDGE_RTP_DUMP")]
    pub rtp_dump: Option<PathBuf>,
    /// Ask publishers for a keyframe every N seconds (default: only when needed).
    #[arg(long, env = "BRIDGE_KEYFRAME_INTERVAL_SECS")]
    pub keyframe_interval_secs: Option<u64>,
    /// Milliseconds a packet waits for a missing one before it is declared lost [default: 100].
    #[arg(long, env = "BRIDGE_REORDER_MS")]
    pub reorder_ms: Option<u64>,
    /// HLS output folder [default: ./hls].
    #[arg(long, env = "BRIDGE_HLS_DIR")]
    pub hls_dir: Option<PathBuf>,
    /// HLS output on or off [default: on].
    #[arg(long, env = "BRIDGE_HLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub hls: Option<bool>,
    /// HLS segment container: fmp4 or ts [default: fmp4].
    #[arg(long, env = "BRIDGE_HLS_CONTAINER", value_enum)]
    pub hls_container: Option<crate::sink::hls::HlsContainer>,
    /// LL-HLS parts and blocking reload, fMP4 only [default: true].
    #[arg(long, env = "BRIDGE_HLS_LOW_LATENCY", value_parser = clap::builder::BoolishValueParser::new())]
    pub hls_low_latency: Option<bool>,
    /// Same as `--hls-low-latency false`.
    #[arg(long, conflicts_with = "hls_low_latency")]
    pub no_hls_low_latency: bool,
    /// Segments a live HLS playlist keeps [default: 6].
    #[arg(long, env = "BRIDGE_HLS_WINDOW")]
    pub hls_window: Option<usize>,
    /// Keep every segment in the playlist (EVENT) instead of a sliding window.
    #[arg(
        long,
        env = "BRIDGE_HLS_EVENT",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub hls_event: Option<bool>,
    /// HLS audio: aac, opus (fMP4 only) or none [default: aac; opus in a build without the AAC
    /// encoder].
    #[arg(long, env = "BRIDGE_HLS_AUDIO", value_enum)]
    pub hls_audio: Option<crate::sink::hls::HlsAudio>,
    /// RTMP push target, `{stream}` is replaced by the stream name (repeatable).
    #[arg(long, env = "BRIDGE_RTMP", value_delimiter = ',')]
    pub rtmp: Vec<String>,
    /// PEM file with extra root certificates to trust for rtmps:// targets.
    #[arg(long, env = "BRIDGE_RTMP_CA")]
    pub rtmp_ca: Option<PathBuf>,
    /// AAC bitrate for RTMP targets and HLS in bits/s [default: 128000].
    #[arg(long, env = "BRIDGE_AAC_BITRATE")]
    pub aac_bitrate: Option<u32>,
    /// Units queued per output before it drops to the next keyframe [default: 512].
    #[arg(long, env = "BRIDGE_OUTPUT_QUEUE")]
    pub output_queue: Option<usize>,
    /// Receive buffer for the UDP socket in bytes, capped by the kernel's net.core.rmem_max
    /// [default: 4194304].
    #[arg(long, env = "BRIDGE_UDP_RECV_BUFFER")]
    pub udp_recv_buffer: Option<usize>,
}

impl Cli {
    /// Merges file, environment and flags into one validated [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default(),
        };
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        fn set_list<T>(slot: &mut Vec<T>, value: Vec<T>) {
            if !value.is_empty() {
                *slot = value;
            }
        }
        set(&mut config.http, self.http);
        set(&mut config.udp, self.udp);
        set_list(&mut config.advertise_ip, self.advertise_ip);
        config.token = self.token.or(config.token);
        set_list(&mut config.ice_server, self.ice_server);
        set(&mut config.max_sessions, self.max_sessions);
        set(&mut config.etag, self.etag);
        set(&mut config.on_conflict, self.on_conflict);
        set(&mut config.post_rate_per_ip, self.post_rate_per_ip);
        set(&mut config.connect_timeout_secs, self.connect_timeout_secs);
        set(&mut config.consent_timeout_secs, self.consent_timeout_secs);
        config.rtp_dump = self.rtp_dump.or(config.rtp_dump);
        config.keyframe_interval_secs = self
            .keyframe_interval_secs
            .or(config.keyframe_interval_secs);
        set(&mut config.reorder_ms, self.reorder_ms);
        set(&mut config.hls_dir, self.hls_dir);
        set(&mut config.hls, self.hls);
        set(&mut config.hls_container, self.hls_container);
        set(&mut config.hls_low_latency, self.hls_low_latency);
        if self.no_hls_low_latency {
            config.hls_low_latency = false;
        }
        set(&mut config.hls_window, self.hls_window);
        set(&mut config.hls_event, self.hls_event);
        set(&mut config.hls_audio, self.hls_audio);
        set_list(&mut config.rtmp, self.rtmp);
        config.rtmp_ca = self.rtmp_ca.or(config.rtmp_ca);
        set(&mut config.aac_bitrate, self.aac_bitrate);
        set(&mut config.output_queue, self.output_queue);
        set(&mut config.udp_recv_buffer, self.udp_recv_buffer);
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_needs_a_build_with_the_encoder() {
        use crate::sink::hls::HlsAudio;
        let rtmp = Config {
            rtmp: vec!["rtmp://127.0.0.1/live/{stream}".into()],
            ..Config::default()
        };
        assert_eq!(rtmp.validate().is_ok(), crate::transcode::AAC_ENCODER);
        let hls = Config {
            hls_audio: HlsAudio::Aac,
            ..Config::default()
        };
        assert_eq!(hls.validate().is_ok(), crate::transcode::AAC_ENCODER);
        // The defaults always start: without the encoder, HLS carries Opus.
        assert!(Config::default().validate().is_ok());
        assert_eq!(
            Config::default().hls_audio == HlsAudio::Aac,
            crate::transcode::AAC_ENCODER
        );
        let opus = Config {
            hls_audio: HlsAudio::Opus,
            ..Config::default()
        };
        assert!(opus.validate().is_ok());
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("bridge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\nmax_sessions = 5\netag = \"lenient\"\n\
             [[ice_server]]\nurl = \"turn:turn.example.net\"\nusername = \"u\"\ncredential = \"c\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "bridge",
            "--config",
            path.to_str().unwrap(),
            "--max-sessions",
            "7",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.http, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(config.max_sessions, 7);
        assert_eq!(config.etag, EtagMode::Lenient);
        assert_eq!(config.ice_server[0].username.as_deref(), Some("u"));
        assert_eq!(config.udp, Config::default().udp);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hls_flags() {
        let config = Cli::try_parse_from([
            "bridge",
            "--hls",
            "off",
            "--hls-container",
            "ts",
            "--no-hls-low-latency",
            "--hls-window",
            "3",
            "--hls-event",
            "--hls-audio",
            "none",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert!(!config.hls && !config.hls_low_latency && config.hls_event);
        assert_eq!(config.hls_container, crate::sink::hls::HlsContainer::Ts);
        assert_eq!(config.hls_audio, crate::sink::hls::HlsAudio::None);
        assert_eq!(config.hls_window, 3);
        let defaults = Cli::try_parse_from(["bridge"])
            .unwrap()
            .into_config()
            .unwrap();
        assert!(defaults.hls && defaults.hls_low_latency && !defaults.hls_event);
        let cli = Cli::try_parse_from(["bridge", "--hls-container", "ts", "--hls-audio", "opus"]);
        let err = cli.unwrap().into_config().unwrap_err().to_string();
        assert!(err.contains("opus"), "{err}");
        let cli = Cli::try_parse_from(["bridge", "--hls-low-latency", "false"]).unwrap();
        assert!(!cli.into_config().unwrap().hls_low_latency);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let cli = Cli::try_parse_from(["bridge", "--udp", "0.0.0.0:8189"]).unwrap();
        let err = cli.into_config().unwrap_err().to_string();
        assert!(err.contains("--advertise-ip"), "{err}");
        assert!(Cli::try_parse_from(["bridge", "--ice-server", "http://x"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "--etag", "loose"]).is_err());
        let cli = Cli::try_parse_from(["bridge", "--ice-server", "turn:t.example u c"]).unwrap();
        assert_eq!(cli.ice_server[0].credential.as_deref(), Some("c"));
    }
}
