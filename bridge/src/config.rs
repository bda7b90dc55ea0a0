//! The bridge's one configuration. Every setting is declared once, as a field of [`Config`]: its
//! flag, its `BRIDGE_*` environment variable, its default (clap attributes) and its documentation
//! (the doc comment, which is also the `--help` text); the TOML file given by `--config` uses the
//! field names. [`Config::default`] is what the command line gives with no flags, and
//! `tests::every_flag_is_in_the_readme` keeps the README's table in step.
//!
//! Sources, strongest first: command-line flags, `BRIDGE_*` environment variables, the TOML file,
//! then the defaults.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

pub use crate::auth::StreamKeys;
use crate::auth::hook::HookSettings;
use crate::auth::jwt::JwksSettings;
pub use crate::cluster::RedisDown;
use crate::http::tls::Certificates;
use crate::media::reorder::ReorderConfig;
use crate::mux::hls::playlist::{Container, PlaylistKind};
use crate::rtmp_url::RtmpUrl;
use crate::whip::liveness::LivenessConfig;
use crate::whip::resource;

/// How strictly `If-Match` is enforced on trickle PATCHes (the user-facing side of
/// [`resource::EtagMode`], which the protocol crate keeps free of clap and serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// The new publisher takes the stream over; the old session ends (its URL then 404s).
    #[default]
    Takeover,
    /// The new publisher is refused with 409.
    Refuse,
}

/// The HLS segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HlsContainer {
    /// Fragmented MP4 (CMAF): LL-HLS parts, AAC or Opus.
    #[default]
    Fmp4,
    /// MPEG-2 transport stream: the oldest players' format; AAC only, no parts.
    Ts,
}

/// What HLS carries for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HlsAudio {
    /// Opus transcoded to AAC-LC: plays everywhere (the default, in builds with the encoder).
    #[cfg_attr(feature = "fdk-aac", default)]
    Aac,
    /// Opus as is, in fMP4 (no transcoding; Safari and hls.js on Chromium/Firefox play it).
    #[cfg_attr(not(feature = "fdk-aac"), default)]
    Opus,
    /// No audio.
    None,
}

/// What an RTMP target gets for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioMode {
    /// Opus transcoded to AAC-LC: what every legacy platform takes.
    #[default]
    Aac,
    /// Opus as is, in Enhanced RTMP audio tags (only for servers that accept it).
    Opus,
    /// No audio.
    None,
}

/// An ICE server advertised to clients in `Link` headers (RFC 9725 §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URL.
    pub url: String,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpTarget {
    /// URL template, `{stream}` replaced by the WHIP stream name.
    pub url: String,
    /// aac (default), opus (Enhanced RTMP) or none.
    #[serde(default)]
    pub audio: AudioMode,
    /// Only these streams (empty: every stream).
    #[serde(default)]
    pub streams: Vec<String>,
}

/// Who may read a stream's HLS output (see [`crate::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HlsAuth {
    /// Anyone: playback is public.
    #[default]
    None,
    /// A `[[stream]]` read or publish key, or the global `--token`, as a bearer token or a
    /// `token` query parameter (players cannot set headers; the playlists then carry it on).
    Token,
    /// The `--auth-url` hook, asked with `action: "read"`.
    Hook,
    /// A JWT of the `--jwks-url` set whose `read` claim names the stream.
    Jwt,
}

/// The bridge's configuration: one field per setting, each the single declaration of its flag,
/// environment variable, TOML key, default and help.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (WHIP, HLS, metrics).
    #[arg(long, env = "BRIDGE_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, leaf first; give
    /// `tls_key` too. Both files are read again when either changes (checked every 2 s), so a
    /// renewed certificate is served without a restart. None: plain HTTP.
    #[arg(long, env = "BRIDGE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BRIDGE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The one UDP address every WebRTC session shares.
    #[arg(long, env = "BRIDGE_UDP", default_value = "127.0.0.1:8189")]
    pub udp: SocketAddr,
    /// Addresses put in host candidates (repeatable). Empty: the `udp` bind address (which must
    /// then not be a wildcard). Candidates are never gathered from the machine's interfaces.
    #[arg(long, env = "BRIDGE_ADVERTISE_IP", value_delimiter = ',')]
    pub advertise_ip: Vec<IpAddr>,
    /// The operator's bearer token: publishes any stream, reads any (with `--hls-auth token`)
    /// and may drain. With no way of auth configured (this, `[[stream]]` keys, `--auth-url`,
    /// `--jwks-url`), anyone may publish.
    #[arg(long, env = "BRIDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Per-stream keys (config file only): `[[stream]]` with `name` (a stream name or a
    /// `*`-pattern), `publish_key` and `read_key`.
    #[arg(skip)]
    pub stream: Vec<StreamKeys>,
    /// The platform's auth hook: the bridge POSTs `{action, stream, token, ip, user_agent,
    /// protocol}` as JSON and a 2xx answer allows (401/403 and failures refuse).
    #[arg(long, env = "BRIDGE_AUTH_URL")]
    pub auth_url: Option<String>,
    /// How long the auth hook may take to answer (ms); beyond it the request gets 403.
    #[arg(long, env = "BRIDGE_AUTH_TIMEOUT_MS", default_value_t = 2_000)]
    pub auth_timeout_ms: u64,
    /// How long the auth hook's answers are reused for the same request (seconds; 0: never).
    #[arg(long, env = "BRIDGE_AUTH_CACHE_SECS", default_value_t = 5)]
    pub auth_cache_secs: u64,
    /// JWKS URL: JWT bearer tokens (RS256, ES256) signed by one of its keys are accepted for
    /// the streams their `publish` and `read` claims name.
    #[arg(long, env = "BRIDGE_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// How often the JWKS document is fetched again (seconds; also at once for an unknown key
    /// id, at most every 2 s).
    #[arg(long, env = "BRIDGE_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
    /// The `iss` JWTs must carry, if any.
    #[arg(long, env = "BRIDGE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` JWTs must carry, if any.
    #[arg(long, env = "BRIDGE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Who may read HLS: none (anyone), token, hook or jwt.
    #[arg(long, env = "BRIDGE_HLS_AUTH", value_enum, default_value_t)]
    pub hls_auth: HlsAuth,
    /// ICE servers advertised in `Link` headers: `URL` or `"URL USERNAME CREDENTIAL"`
    /// (repeatable).
    #[arg(long, env = "BRIDGE_ICE_SERVER", value_delimiter = ',')]
    pub ice_server: Vec<IceServer>,
    /// Most concurrent sessions; beyond it POST answers 503 with Retry-After.
    #[arg(long, env = "BRIDGE_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// Entity-tag checking on trickle PATCHes.
    #[arg(long, env = "BRIDGE_ETAG", value_enum, default_value_t)]
    pub etag: EtagMode,
    /// What a second publisher on a live stream name gets: takeover, or refuse (409).
    #[arg(long, env = "BRIDGE_ON_CONFLICT", value_enum, default_value_t)]
    pub on_conflict: OnConflict,
    /// POSTs per second allowed from one client address; beyond it 429.
    #[arg(long, env = "BRIDGE_POST_RATE_PER_IP", default_value_t = 2_000)]
    pub post_rate_per_ip: u32,
    /// Session set-ups (offer in, answer out: the WebRTC stack's costly part) run at once, off
    /// the threads that answer HTTP; further POSTs wait for a slot. 0: one per CPU core.
    #[arg(long, env = "BRIDGE_SETUP_CONCURRENCY", default_value_t = 0)]
    pub setup_concurrency: usize,
    /// How long a POST may wait for a set-up slot before it gets 503 with Retry-After: a bridge
    /// that cannot keep up says so at once, and the POSTs it admits keep their latency.
    #[arg(long, env = "BRIDGE_SETUP_QUEUE_MS", default_value_t = 100)]
    pub setup_queue_ms: u64,
    /// New sessions get 503 with Retry-After while the event loop runs this many milliseconds
    /// late (measured every 50 ms, smoothed): the process is saturated, and one more session
    /// would slow every live one. 0: off.
    #[arg(long, env = "BRIDGE_MAX_LOOP_LAG_MS", default_value_t = 500)]
    pub max_loop_lag_ms: u64,
    /// On SIGTERM or Ctrl-C (and after `POST /admin/drain`), new sessions are refused (503 with
    /// Retry-After, `/readyz` 503) while live ones go on for up to this many seconds; then the
    /// rest are ended cleanly (HLS ENDLIST, RTMP FCUnpublish). A second signal ends them at once.
    #[arg(long, env = "BRIDGE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// A session that has not connected ICE within this many seconds ends.
    #[arg(long, env = "BRIDGE_CONNECT_TIMEOUT_SECS", default_value_t = 30)]
    pub connect_timeout_secs: u64,
    /// A connected session whose publisher sends nothing (media or consent checks) for this many
    /// seconds ends (RFC 7675 consent freshness: 30).
    #[arg(long, env = "BRIDGE_CONSENT_TIMEOUT_SECS", default_value_t = 30)]
    pub consent_timeout_secs: u64,
    /// Also ask publishers for a keyframe this often (seconds), for outputs that want regular
    /// GOPs from encoders that send one IDR per session (aiortc, browsers). None: only when
    /// needed (output start, loss).
    #[arg(long, env = "BRIDGE_KEYFRAME_INTERVAL_SECS")]
    pub keyframe_interval_secs: Option<u64>,
    /// Write every received RTP packet (after SRTP) to files in this folder, for bug reports
    /// and test vectors. None: off.
    #[arg(long, env = "BRIDGE_RTP_DUMP")]
    pub rtp_dump: Option<PathBuf>,
    /// How long a packet may wait for a missing one before the gap is declared lost (ms).
    #[arg(long, env = "BRIDGE_REORDER_MS", default_value_t = 100)]
    pub reorder_ms: u64,
    /// Where HLS output is written (served at /hls/).
    #[arg(long, env = "BRIDGE_HLS_DIR", default_value = "hls")]
    pub hls_dir: PathBuf,
    /// Every stream is also available as HLS (from /hls/ and `hls_dir`): on or off.
    #[arg(long, env = "BRIDGE_HLS", action = clap::ArgAction::Set, default_value = "on",
          value_parser = BoolishValueParser::new())]
    pub hls: bool,
    /// HLS segment container.
    #[arg(long, env = "BRIDGE_HLS_CONTAINER", value_enum, default_value_t)]
    pub hls_container: HlsContainer,
    /// LL-HLS (parts, blocking reload, preload hints); fMP4 only.
    #[arg(long, env = "BRIDGE_HLS_LOW_LATENCY", action = clap::ArgAction::Set,
          default_value = "true", value_parser = BoolishValueParser::new())]
    pub hls_low_latency: bool,
    /// Segments a live HLS playlist keeps.
    #[arg(long, env = "BRIDGE_HLS_WINDOW", default_value_t = 6)]
    pub hls_window: usize,
    /// HLS playlists keep every segment (`EXT-X-PLAYLIST-TYPE:EVENT`) instead of a window.
    #[arg(long, env = "BRIDGE_HLS_EVENT", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub hls_event: bool,
    /// HLS audio: AAC, Opus (fMP4 only) or none (Opus by default in a build without the AAC
    /// encoder).
    #[arg(long, env = "BRIDGE_HLS_AUDIO", value_enum, default_value_t)]
    pub hls_audio: HlsAudio,
    /// Also upload every stream's HLS files to S3-compatible storage at `s3://bucket/prefix`
    /// (`{prefix}/{stream}/index.m3u8`...), for a CDN to serve; region and credentials from
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`. None: local files only.
    #[arg(long, env = "BRIDGE_HLS_S3")]
    pub hls_s3: Option<String>,
    /// The S3 endpoint for `hls_s3` (MinIO, SeaweedFS...; `AWS_ENDPOINT_URL` too). None: AWS.
    #[arg(long, env = "BRIDGE_HLS_S3_ENDPOINT")]
    pub hls_s3_endpoint: Option<String>,
    /// Allow a plain `http://` S3 endpoint (a local test store).
    #[arg(long, env = "BRIDGE_HLS_S3_ALLOW_HTTP", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub hls_s3_allow_http: bool,
    /// Batches of HLS files waiting for upload per upload worker before new ones are dropped.
    #[arg(long, env = "BRIDGE_HLS_S3_QUEUE", default_value_t = 256)]
    pub hls_s3_queue: usize,
    /// RTMP push targets, `{stream}` replaced by the WHIP stream name, audio as AAC
    /// (repeatable).
    #[arg(long, env = "BRIDGE_RTMP", value_delimiter = ',')]
    pub rtmp: Vec<String>,
    /// RTMP targets with their own audio mode and stream filter (config file only).
    #[arg(skip)]
    pub rtmp_target: Vec<RtmpTarget>,
    /// PEM file of extra root certificates trusted for `rtmps://` (a private CA).
    #[arg(long, env = "BRIDGE_RTMP_CA")]
    pub rtmp_ca: Option<PathBuf>,
    /// AAC bitrate for RTMP targets and HLS, bits per second.
    #[arg(long, env = "BRIDGE_AAC_BITRATE", default_value_t = 128_000)]
    pub aac_bitrate: u32,
    /// Units queued per output before it starts dropping to the next keyframe.
    #[arg(long, env = "BRIDGE_OUTPUT_QUEUE", default_value_t = 512)]
    pub output_queue: usize,
    /// Receive buffer asked for the UDP socket, bytes. All sessions share the one socket, and
    /// publishers' keyframes arrive in bursts: the kernel's default (~200 KB) overflows at a
    /// few dozen publishers. Linux caps it at `net.core.rmem_max`; the bridge logs what it got.
    #[arg(long, env = "BRIDGE_UDP_RECV_BUFFER", default_value_t = 4 << 20)]
    pub udp_recv_buffer: usize,
    /// Event webhooks: `publish_start`, `publish_stop`, `rtmp_up`, `rtmp_down` and `hls_ready`
    /// are POSTed as JSON to each URL (repeatable), in order, with retries; a slow hook never
    /// slows media.
    #[arg(long, env = "BRIDGE_HOOK_URL", value_delimiter = ',')]
    pub hook_url: Vec<String>,
    /// How long one webhook POST may take before it counts as failed (and is retried), ms.
    #[arg(long, env = "BRIDGE_HOOK_TIMEOUT_MS", default_value_t = 5_000)]
    pub hook_timeout_ms: u64,
    /// Run as one node of a cluster whose node set and stream owners live in this Redis
    /// (`redis://host:port/db`): a POST for a stream live on another node, or a new stream on a
    /// node busier than the least-loaded one, is answered 307 to that node. Needs `node_url`.
    #[arg(long, env = "BRIDGE_CLUSTER_REDIS")]
    pub cluster_redis: Option<String>,
    /// This node's base URL as other nodes' clients reach it (`https://node-a.example:8443`):
    /// where 307s to it point, and the base of its `Location` headers.
    #[arg(long, env = "BRIDGE_NODE_URL")]
    pub node_url: Option<String>,
    /// How long this node's registration and stream keys outlive it in Redis, ms; refreshed
    /// every third of it. A node killed loses its streams to others within this time.
    #[arg(long, env = "BRIDGE_CLUSTER_TTL_MS", default_value_t = 10_000)]
    pub cluster_ttl_ms: u64,
    /// New sessions while Redis cannot be reached: local (admitted here, as a lone bridge) or
    /// refuse (503 with Retry-After). Live sessions go on either way.
    #[arg(long, env = "BRIDGE_CLUSTER_REDIS_DOWN", value_enum, default_value_t)]
    pub cluster_redis_down: RedisDown,
}

impl Default for Config {
    /// What the command line gives with no flags and no environment.
    fn default() -> Self {
        let command = Cli::command().mut_args(|arg| arg.env(None));
        // Every field has a default or is optional (a flag, a list, an Option), so parsing no
        // arguments cannot fail: `tests::defaults` checks it and pins the values.
        #[allow(clippy::expect_used)]
        command
            .try_get_matches_from(["bridge"])
            .and_then(|matches| Config::from_arg_matches(&matches))
            .expect("defaults parse")
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
    /// Checks what types cannot (RTMP URLs are checked by [`Config::into_settings`], which
    /// parses them).
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
        if self.output_queue == 0 || self.aac_bitrate < 8_000 {
            return Err(ConfigError::Invalid(
                "output-queue must be positive and aac-bitrate at least 8000".into(),
            ));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid("--token is empty".into()));
        }
        self.validate_auth()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "--tls-cert and --tls-key go together: give both, or neither for plain HTTP".into(),
            ));
        }
        if self.hook_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "hook-timeout-ms must be positive".into(),
            ));
        }
        self.validate_cluster()?;
        if self.hls_window == 0 {
            return Err(ConfigError::Invalid("hls-window must be positive".into()));
        }
        self.hls_s3_settings()?;
        let wants_aac = (self.hls && self.hls_audio == HlsAudio::Aac)
            || !self.rtmp.is_empty()
            || self.rtmp_target.iter().any(|t| t.audio == AudioMode::Aac);
        if wants_aac && !crate::transcode::AAC_ENCODER {
            return Err(ConfigError::Invalid(
                "AAC asked for, but this bridge was built without the AAC encoder (cargo \
                 feature fdk-aac): use --hls-audio opus|none, and [[rtmp_target]] with audio = \
                 \"opus\" or \"none\" instead of --rtmp"
                    .into(),
            ));
        }
        if self.hls_audio == HlsAudio::Opus && self.hls_container == HlsContainer::Ts {
            return Err(ConfigError::Invalid(
                "--hls-audio opus needs --hls-container fmp4 (MPEG-TS here carries AAC)".into(),
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.into()));
        match (&self.cluster_redis, &self.node_url) {
            (None, None) => return Ok(()),
            (None, Some(_)) => return invalid("--node-url is for --cluster-redis"),
            (Some(_), None) => {
                return invalid(
                    "--cluster-redis needs --node-url: where other nodes' clients reach this one",
                );
            }
            (Some(_), Some(url)) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| ConfigError::Invalid(format!("--node-url {url}: {e}")))?;
                // A path is the node's prefix behind a proxy that gives every node one origin
                // (browsers drop their token on a redirect to another origin).
                if !matches!(uri.scheme_str(), Some("http" | "https"))
                    || uri.host().is_none()
                    || uri.query().is_some()
                    || url.contains('#')
                {
                    return invalid(
                        "--node-url must be http(s)://host[:port][/path], with no query",
                    );
                }
            }
        }
        if self.cluster_ttl_ms < 300 {
            return invalid("--cluster-ttl-ms must be at least 300");
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(what));
        for entry in &self.stream {
            let empty_key = [&entry.publish_key, &entry.read_key]
                .into_iter()
                .any(|k| k.as_deref().is_some_and(str::is_empty));
            if entry.name.is_empty() || empty_key {
                return invalid(format!("[[stream]] {:?}: empty name or key", entry.name));
            }
            if entry.publish_key.is_none() && entry.read_key.is_none() {
                return invalid(format!(
                    "[[stream]] {:?}: give publish_key, read_key or both",
                    entry.name
                ));
            }
        }
        let has_key = self.token.is_some() || !self.stream.is_empty();
        match self.hls_auth {
            HlsAuth::Token if !has_key => {
                invalid("--hls-auth token needs --token or [[stream]] keys".into())
            }
            HlsAuth::Hook if self.auth_url.is_none() => {
                invalid("--hls-auth hook needs --auth-url".into())
            }
            HlsAuth::Jwt if self.jwks_url.is_none() => {
                invalid("--hls-auth jwt needs --jwks-url".into())
            }
            _ if self.auth_url.is_some() && self.auth_timeout_ms == 0 => {
                invalid("--auth-timeout-ms must be positive".into())
            }
            _ if self.jwks_url.is_some() && self.jwks_refresh_secs == 0 => {
                invalid("--jwks-refresh-secs must be positive".into())
            }
            _ => Ok(()),
        }
    }

    fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        let url = |flag: &str, text: &str| {
            crate::outbound::parse_url(text)
                .map_err(|e| ConfigError::Invalid(format!("{flag}: {e}")))
        };
        let hook = match &self.auth_url {
            Some(text) => Some(HookSettings {
                url: url("--auth-url", text)?,
                timeout: Duration::from_millis(self.auth_timeout_ms),
                cache: Duration::from_secs(self.auth_cache_secs),
            }),
            None => None,
        };
        let jwks = match &self.jwks_url {
            Some(text) => Some(JwksSettings {
                url: url("--jwks-url", text)?,
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
                refresh: Duration::from_secs(self.jwks_refresh_secs),
            }),
            None => None,
        };
        Ok(AuthSettings {
            streams: self.stream.clone(),
            jwks,
            hook,
            hls: self.hls_auth,
        })
    }

    /// Checks the configuration and parses it once into what each part of the bridge runs on:
    /// durations, parsed RTMP URLs, the HLS output's shape. Nothing downstream re-parses a
    /// setting or skips one it cannot read.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        self.validate()?;
        let auth = self.auth_settings()?;
        let hls_s3 = self.hls_s3_settings()?;
        let simple = self.rtmp.iter().map(|url| RtmpTarget {
            url: url.clone(),
            audio: AudioMode::Aac,
            streams: Vec::new(),
        });
        let targets = simple
            .chain(self.rtmp_target.iter().cloned())
            .map(|t| {
                let url = RtmpUrl::parse(&t.url)
                    .map_err(|e| ConfigError::Invalid(format!("RTMP target: {e}")))?;
                Ok(RtmpTargetSettings {
                    url,
                    audio: t.audio,
                    streams: t.streams,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        let hooks = WebhookSettings {
            urls: self
                .hook_url
                .iter()
                .map(|url| {
                    crate::outbound::parse_url(url)
                        .map_err(|e| ConfigError::Invalid(format!("--hook-url {e}")))
                })
                .collect::<Result<_, _>>()?,
            timeout: Duration::from_millis(self.hook_timeout_ms),
        };
        let container = match self.hls_container {
            HlsContainer::Fmp4 => Container::Fmp4,
            HlsContainer::Ts => Container::MpegTs,
        };
        let candidate_ips = if self.advertise_ip.is_empty() {
            vec![self.udp.ip()]
        } else {
            self.advertise_ip
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(Arc::new(Certificates::load(cert, key).map_err(|e| {
                    ConfigError::Invalid(format!("HTTPS certificate: {e}"))
                })?))
            }
            _ => None,
        };
        let cluster = match (self.cluster_redis, self.node_url) {
            (Some(redis_url), Some(node_url)) => {
                redis::Client::open(redis_url.as_str())
                    .map_err(|e| ConfigError::Invalid(format!("--cluster-redis: {e}")))?;
                Some(ClusterSettings {
                    redis_url,
                    node_url: node_url.trim_end_matches('/').to_owned(),
                    ttl: Duration::from_millis(self.cluster_ttl_ms),
                    redis_down: self.cluster_redis_down,
                })
            }
            _ => None,
        };
        Ok(Settings {
            cluster,
            http: self.http,
            tls,
            udp: UdpSettings {
                bind: self.udp,
                recv_buffer: self.udp_recv_buffer,
                candidate_ips,
            },
            whip: WhipSettings {
                token: self.token,
                ice_servers: self.ice_server,
                max_sessions: self.max_sessions,
                etag: self.etag.into(),
                on_conflict: self.on_conflict,
                post_rate_per_ip: self.post_rate_per_ip,
                setup_concurrency: match self.setup_concurrency {
                    0 => std::thread::available_parallelism().map_or(1, usize::from),
                    n => n,
                },
                setup_queue: Duration::from_millis(self.setup_queue_ms),
                drain_timeout: Duration::from_secs(self.drain_timeout_secs),
                max_loop_lag: (self.max_loop_lag_ms > 0)
                    .then(|| Duration::from_millis(self.max_loop_lag_ms)),
            },
            liveness: LivenessConfig {
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                consent_timeout: Duration::from_secs(self.consent_timeout_secs),
                keyframe_interval: self.keyframe_interval_secs.map(Duration::from_secs),
            },
            auth,
            rtp_dump: self.rtp_dump,
            reorder: ReorderConfig {
                max_delay: Duration::from_millis(self.reorder_ms),
                ..Default::default()
            },
            hls_enabled: self.hls,
            hls: HlsSettings {
                dir: self.hls_dir,
                container,
                // Parts in TS would each need their own PAT/PMT and players rarely take them.
                low_latency: self.hls_low_latency && container == Container::Fmp4,
                kind: if self.hls_event {
                    PlaylistKind::Event
                } else {
                    PlaylistKind::Live {
                        window: self.hls_window,
                    }
                },
                audio: self.hls_audio,
            },
            rtmp: RtmpSettings {
                targets,
                ca: self.rtmp_ca,
            },
            aac_bitrate: self.aac_bitrate,
            output_queue: self.output_queue,
            hooks,
            hls_s3,
        })
    }
}

/// The configuration parsed once ([`Config::into_settings`]): each part of the bridge gets its
/// own piece.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// The HTTPS certificate, if the bridge serves HTTPS rather than plain HTTP.
    pub tls: Option<Arc<Certificates>>,
    /// The shared UDP socket.
    pub udp: UdpSettings,
    /// The WHIP endpoint.
    pub whip: WhipSettings,
    /// Who may publish and read, beyond the global token.
    pub auth: AuthSettings,
    /// Session deadlines and keyframe request pacing.
    pub liveness: LivenessConfig,
    /// Where to dump received RTP, if anywhere.
    pub rtp_dump: Option<PathBuf>,
    /// The per-SSRC reorder buffer.
    pub reorder: ReorderConfig,
    /// Streams are also served as HLS.
    pub hls_enabled: bool,
    /// The HLS output's shape (also used to serve nothing when HLS is off).
    pub hls: HlsSettings,
    /// RTMP push targets.
    pub rtmp: RtmpSettings,
    /// AAC bit rate of the one Opus -> AAC transcode a session runs for all its AAC outputs.
    pub aac_bitrate: u32,
    /// Units queued per output before it drops to the next keyframe.
    pub output_queue: usize,
    /// Event webhooks.
    pub hooks: WebhookSettings,
    /// Where HLS files are also uploaded, if anywhere.
    pub hls_s3: Option<S3Settings>,
    /// The cluster this node is part of, if any.
    pub cluster: Option<ClusterSettings>,
}

/// HLS to S3-compatible storage (`--hls-s3`, see [`crate::sink::s3`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without slashes at either end (may be empty).
    pub prefix: String,
    /// The endpoint, if not AWS's (else `AWS_ENDPOINT_URL`, if set).
    pub endpoint: Option<String>,
    /// A plain `http://` endpoint is allowed.
    pub allow_http: bool,
    /// Batches queued per upload worker.
    pub queue: usize,
}

impl Config {
    fn hls_s3_settings(&self) -> Result<Option<S3Settings>, ConfigError> {
        let Some(url) = &self.hls_s3 else {
            return Ok(None);
        };
        let (bucket, prefix) = url
            .strip_prefix("s3://")
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            .filter(|(bucket, _)| !bucket.is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid(format!("--hls-s3 {url}: not s3://bucket[/prefix]"))
            })?;
        if self.hls_s3_queue == 0 {
            return Err(ConfigError::Invalid("hls-s3-queue must be positive".into()));
        }
        if !self.hls {
            return Err(ConfigError::Invalid(
                "--hls-s3 uploads the HLS output, which --hls off turns off".into(),
            ));
        }
        Ok(Some(S3Settings {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: self.hls_s3_endpoint.clone(),
            allow_http: self.hls_s3_allow_http,
            queue: self.hls_s3_queue,
        }))
    }
}

/// A node of a cluster ([`crate::cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The Redis holding the node set and the stream owners (checked, not yet connected).
    pub redis_url: String,
    /// This node's base URL, without a trailing slash.
    pub node_url: String,
    /// TTL of the node's keys; they are refreshed every third of it.
    pub ttl: Duration,
    /// New sessions while Redis is down.
    pub redis_down: RedisDown,
}

/// Event webhooks ([`crate::hooks`]).
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    /// Where every event is POSTed (none: webhooks off).
    pub urls: Vec<hyper::Uri>,
    /// How long one POST may take.
    pub timeout: Duration,
}

/// Per-stream keys, the auth hook, JWTs, and HLS's policy (see [`crate::auth`]).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `[[stream]]` keys.
    pub streams: Vec<StreamKeys>,
    /// JWT checking, if configured.
    pub jwks: Option<JwksSettings>,
    /// The auth hook, if configured.
    pub hook: Option<HookSettings>,
    /// Who may read HLS.
    pub hls: HlsAuth,
}

/// The shared UDP socket.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    /// Bind address.
    pub bind: SocketAddr,
    /// Receive buffer asked of the kernel, bytes.
    pub recv_buffer: usize,
    /// IPs put in host candidates (never empty, never a wildcard).
    pub candidate_ips: Vec<IpAddr>,
}

/// The WHIP endpoint.
#[derive(Debug, Clone)]
pub struct WhipSettings {
    /// Bearer token required, if any (never empty).
    pub token: Option<String>,
    /// ICE servers for `Link` headers.
    pub ice_servers: Vec<IceServer>,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// If-Match strictness on trickle PATCHes.
    pub etag: resource::EtagMode,
    /// A second publisher on a live stream.
    pub on_conflict: OnConflict,
    /// POSTs per second per client address.
    pub post_rate_per_ip: u32,
    /// Session set-ups run at once.
    pub setup_concurrency: usize,
    /// How long a POST waits for a set-up slot before 503.
    pub setup_queue: Duration,
    /// How long live sessions may go on once the bridge drains.
    pub drain_timeout: Duration,
    /// Event-loop lag beyond which new sessions are refused; `None`: never.
    pub max_loop_lag: Option<Duration>,
}

/// The HLS settings every stream shares.
#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// The folder holding one subfolder per stream.
    pub dir: PathBuf,
    /// Segment container.
    pub container: Container,
    /// LL-HLS parts (fMP4 only).
    pub low_latency: bool,
    /// Sliding window or event playlist.
    pub kind: PlaylistKind,
    /// Audio handling (never Opus with MPEG-TS: refused when parsed).
    pub audio: HlsAudio,
}

/// RTMP push targets and what they share.
#[derive(Debug, Clone)]
pub struct RtmpSettings {
    /// `--rtmp` templates (AAC), then the config file's targets.
    pub targets: Vec<RtmpTargetSettings>,
    /// Extra root certificates for `rtmps://`.
    pub ca: Option<PathBuf>,
}

impl RtmpSettings {
    /// The targets `stream` is pushed to, with their URLs filled in.
    pub fn targets_for<'a>(
        &'a self,
        stream: &'a str,
    ) -> impl Iterator<Item = (RtmpUrl, AudioMode)> + 'a {
        self.targets
            .iter()
            .filter(move |t| t.streams.is_empty() || t.streams.iter().any(|s| s == stream))
            .map(move |t| (t.url.for_stream(stream), t.audio))
    }
}

/// One RTMP target, parsed.
#[derive(Debug, Clone)]
pub struct RtmpTargetSettings {
    /// The URL template, `{stream}` not yet filled.
    pub url: RtmpUrl,
    /// What it gets for audio.
    pub audio: AudioMode,
    /// Only these streams (empty: every stream).
    pub streams: Vec<String>,
}

/// Command line: the [`Config`] flags, plus where to read a file from.
#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "WHIP (RFC 9725) ingest: WebRTC in, RTMP and HLS out"
)]
struct CliArgs {
    /// TOML file with any of the settings (flags and environment override it).
    #[arg(long, env = "BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Same as `--hls-low-latency false`.
    #[arg(long, conflicts_with = "hls_low_latency")]
    no_hls_low_latency: bool,
    #[command(flatten)]
    settings: Config,
}

/// The parsed command line and environment, with which settings they gave (the rest come from
/// the file, then the defaults).
#[derive(Debug)]
pub struct Cli {
    args: CliArgs,
    /// Settings given by a flag or an environment variable.
    given: BTreeSet<String>,
}

impl FromArgMatches for Cli {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = matches
            .ids()
            .filter(|id| {
                matches!(
                    matches.value_source(id.as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(Self {
            args: CliArgs::from_arg_matches(matches)?,
            given,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl CommandFactory for Cli {
    fn command() -> clap::Command {
        CliArgs::command()
    }

    fn command_for_update() -> clap::Command {
        CliArgs::command_for_update()
    }
}

impl Parser for Cli {}

impl Cli {
    /// The settings the command line and environment give (defaults for the rest), before the
    /// file is merged.
    pub fn settings(&self) -> &Config {
        &self.args.settings
    }

    /// Merges file, environment and flags into one validated [`Config`]: a setting comes from a
    /// flag or the environment if given there, else from the file, else its default.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut config = self.args.settings;
        if let Some(path) = &self.args.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source,
            })?;
            let mut merged = toml::Table::try_from(&config)
                .map_err(|e| ConfigError::Invalid(format!("settings as TOML (a bug): {e}")))?;
            for (key, value) in file {
                if !self.given.contains(&key) {
                    merged.insert(key, value);
                }
            }
            config = Config::deserialize(merged).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source,
            })?;
        }
        if self.args.no_hls_low_latency {
            config.hls_low_latency = false;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_needs_a_build_with_the_encoder() {
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
        assert_eq!(config.hls_container, HlsContainer::Ts);
        assert_eq!(config.hls_audio, HlsAudio::None);
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
    fn defaults() {
        let d = Config::default();
        assert_eq!(d.http, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(d.udp, SocketAddr::from(([127, 0, 0, 1], 8189)));
        assert!(d.advertise_ip.is_empty() && d.ice_server.is_empty() && d.rtmp.is_empty());
        assert_eq!((d.token, d.rtp_dump, d.rtmp_ca), (None, None, None));
        assert_eq!((d.tls_cert, d.tls_key), (None, None));
        assert_eq!(d.keyframe_interval_secs, None);
        assert_eq!((d.max_sessions, d.post_rate_per_ip), (10_000, 2_000));
        assert_eq!(
            (d.etag, d.on_conflict),
            (EtagMode::Strict, OnConflict::Takeover)
        );
        assert_eq!((d.connect_timeout_secs, d.consent_timeout_secs), (30, 30));
        assert_eq!(d.reorder_ms, 100);
        assert_eq!(d.hls_dir, PathBuf::from("hls"));
        assert!(d.hls && d.hls_low_latency && !d.hls_event);
        assert_eq!((d.hls_container, d.hls_window), (HlsContainer::Fmp4, 6));
        assert_eq!(d.hls_audio, HlsAudio::default());
        assert!(d.rtmp_target.is_empty());
        assert_eq!((d.aac_bitrate, d.output_queue), (128_000, 512));
        assert_eq!(d.udp_recv_buffer, 4 << 20);
        assert!(d.hook_url.is_empty());
        assert_eq!(d.hook_timeout_ms, 5_000);
        // A file that says nothing changes nothing.
        let empty = Config::deserialize(toml::Table::new()).unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn every_flag_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("\n## Flags\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Flags section in the README");
        let mut documented = BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `--")) {
            let first = row.split(" | ").next().unwrap_or_default();
            for word in first.split('`').filter(|w| w.starts_with("--")) {
                let name = word.split([' ', '=']).next().unwrap_or_default();
                documented.insert(name.trim_start_matches('-').to_owned());
            }
        }
        let flags: BTreeSet<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|f| f != "help" && f != "version")
            .collect();
        let missing: Vec<_> = flags.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&flags).collect();
        assert!(
            missing.is_empty(),
            "flags missing from the README: {missing:?}"
        );
        assert!(stale.is_empty(), "README rows for no flag: {stale:?}");
    }

    #[test]
    fn the_file_is_checked_and_merged_by_name() {
        let dir = std::env::temp_dir().join(format!("bridge-config-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.toml");
        let load = |text: &str, args: &[&str]| {
            std::fs::write(&path, text).unwrap();
            let mut argv = vec!["bridge", "--config", path.to_str().unwrap()];
            argv.extend(args);
            Cli::try_parse_from(argv).unwrap().into_config()
        };
        let config = load(
            "hls = false\nadvertise_ip = [\"127.0.0.2\"]\n\
             [[rtmp_target]]\nurl = \"rtmp://b/live/{stream}\"\naudio = \"opus\"\nstreams = [\"x\"]\n",
            &["--advertise-ip", "127.0.0.3"],
        )
        .unwrap();
        assert!(!config.hls, "from the file");
        assert_eq!(
            config.advertise_ip,
            [IpAddr::from([127, 0, 0, 3])],
            "the flag wins"
        );
        assert_eq!(config.rtmp_target[0].audio, AudioMode::Opus);
        let err = load("max_sesions = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("max_sesions"), "a typo is named: {err}");
        let err = load("max_sessions = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_sessions"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn settings_are_parsed_once() {
        let cli = Cli::try_parse_from([
            "bridge",
            "--connect-timeout-secs",
            "7",
            "--reorder-ms",
            "40",
            "--advertise-ip",
            "127.0.0.9",
            "--hls-container",
            "ts",
            "--hls-audio",
            "none",
            "--hls-event",
        ])
        .unwrap();
        let mut config = cli.into_config().unwrap();
        config.rtmp_target = vec![
            RtmpTarget {
                url: "rtmp://a.example/live/{stream}".into(),
                audio: AudioMode::Opus,
                streams: vec!["x".into()],
            },
            RtmpTarget {
                url: "rtmps://b.example/app/{stream}?k=1".into(),
                audio: AudioMode::None,
                streams: Vec::new(),
            },
        ];
        let settings = config.clone().into_settings().unwrap();
        assert_eq!(settings.liveness.connect_timeout, Duration::from_secs(7));
        assert_eq!(settings.reorder.max_delay, Duration::from_millis(40));
        assert_eq!(settings.udp.candidate_ips, [IpAddr::from([127, 0, 0, 9])]);
        assert_eq!(settings.hls.container, Container::MpegTs);
        assert!(!settings.hls.low_latency, "no parts in TS");
        assert_eq!(settings.hls.kind, PlaylistKind::Event);
        let for_x: Vec<_> = settings.rtmp.targets_for("x").collect();
        assert_eq!(for_x.len(), 2);
        assert_eq!(for_x[0].0.key, "x");
        assert_eq!(for_x[1].0.key, "x?k=1");
        assert_eq!(settings.rtmp.targets_for("y").count(), 1, "the filter");
        config.rtmp_target[0].url = "rtmp://nohost".into();
        let err = config.into_settings().unwrap_err().to_string();
        assert!(
            err.contains("RTMP target") && err.contains("nohost"),
            "{err}"
        );
    }

    #[test]
    fn cluster_flags_go_together_and_are_checked() {
        let settings = |args: &[&str]| {
            let argv = ["bridge"].iter().chain(args);
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|cli| cli.into_config().map_err(|e| e.to_string()))
                .and_then(|c| c.into_settings().map_err(|e| e.to_string()))
        };
        let redis = ["--cluster-redis", "redis://127.0.0.1:6390"];
        let ok = settings(&[&redis[..], &["--node-url", "https://node-a.example:8443/"]].concat())
            .unwrap();
        let cluster = ok.cluster.unwrap();
        assert_eq!(cluster.node_url, "https://node-a.example:8443");
        assert_eq!(cluster.ttl, Duration::from_secs(10));
        assert_eq!(cluster.redis_down, RedisDown::Local);
        assert!(settings(&[]).unwrap().cluster.is_none());
        // Behind a proxy that gives every node one origin, a node's URL has a path of its own.
        let behind =
            settings(&[&redis[..], &["--node-url", "https://whip.example/b/"]].concat()).unwrap();
        assert_eq!(behind.cluster.unwrap().node_url, "https://whip.example/b");
        for (args, why) in [
            (&redis[..], "needs --node-url"),
            (&["--node-url", "http://a:1"][..], "is for --cluster-redis"),
            (
                &[&redis[..], &["--node-url", "a:1"]].concat()[..],
                "http(s)://host",
            ),
            (
                &[&redis[..], &["--node-url", "http://a/b?c=1"]].concat()[..],
                "no query",
            ),
            (
                &[
                    &redis[..],
                    &["--node-url", "http://a", "--cluster-ttl-ms", "10"],
                ]
                .concat()[..],
                "300",
            ),
            (
                &["--cluster-redis", "mysql://x", "--node-url", "http://a"][..],
                "--cluster-redis",
            ),
        ] {
            let err = settings(args).unwrap_err();
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }

    #[test]
    fn hook_urls_are_parsed_once() {
        let cli = Cli::try_parse_from([
            "bridge",
            "--hook-url",
            "http://127.0.0.1:9000/hooks",
            "--hook-url",
            "https://platform.example/live?key=1",
            "--hook-timeout-ms",
            "750",
        ])
        .unwrap();
        let settings = cli.into_config().unwrap().into_settings().unwrap();
        assert_eq!(settings.hooks.urls.len(), 2);
        assert_eq!(settings.hooks.urls[1].host(), Some("platform.example"));
        assert_eq!(settings.hooks.timeout, Duration::from_millis(750));
        let config = Config {
            hook_url: vec!["platform.example/live".into()],
            ..Config::default()
        };
        let err = config.into_settings().unwrap_err().to_string();
        assert!(
            err.contains("--hook-url") && err.contains("platform.example/live"),
            "{err}"
        );
        let cli = Cli::try_parse_from(["bridge", "--hook-timeout-ms", "0"]).unwrap();
        assert!(cli.into_config().is_err());
    }

    #[test]
    fn hls_s3_names_a_bucket_and_a_prefix() {
        let settings = |args: &[&str]| {
            let args = ["bridge"].iter().chain(args);
            Cli::try_parse_from(args)
                .unwrap()
                .into_config()
                .and_then(Config::into_settings)
                .map(|s| s.hls_s3)
        };
        assert_eq!(settings(&[]).unwrap(), None);
        let s3 = settings(&["--hls-s3", "s3://media/live/hls/", "--hls-s3-allow-http"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("media", "live/hls")
        );
        assert!(s3.allow_http && s3.endpoint.is_none());
        assert_eq!(s3.queue, 256);
        let s3 = settings(&["--hls-s3", "s3://media"]).unwrap().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("media", ""));
        for bad in ["media/live", "s3:///live", "https://media"] {
            let err = settings(&["--hls-s3", bad]).unwrap_err().to_string();
            assert!(err.contains("--hls-s3"), "{err}");
        }
        assert!(settings(&["--hls-s3", "s3://m", "--hls-s3-queue", "0"]).is_err());
        let err = settings(&["--hls-s3", "s3://m", "--hls", "off"]).unwrap_err();
        assert!(err.to_string().contains("--hls off"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let cli = Cli::try_parse_from(["bridge", "--udp", "0.0.0.0:8189"]).unwrap();
        let err = cli.into_config().unwrap_err().to_string();
        assert!(err.contains("--advertise-ip"), "{err}");
        assert!(Cli::try_parse_from(["bridge", "--ice-server", "http://x"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "--etag", "loose"]).is_err());
        let cli = Cli::try_parse_from(["bridge", "--tls-cert", "cert.pem"]).unwrap();
        let err = cli.into_config().unwrap_err().to_string();
        assert!(err.contains("--tls-key"), "{err}");
        let cli = Cli::try_parse_from([
            "bridge",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ]);
        let err = cli.unwrap().into_config().unwrap().into_settings();
        let err = err.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let cli = Cli::try_parse_from(["bridge", "--ice-server", "turn:t.example u c"]).unwrap();
        assert_eq!(
            cli.settings().ice_server[0].credential.as_deref(),
            Some("c")
        );
    }
}
