//! RTMP push URLs: `rtmp[s]://host[:port]/app[/more]/stream-key`, as platforms give them, and
//! the `{stream}` template the bridge's targets are written in (parsed once, filled per stream).

use thiserror::Error;

/// A parsed RTMP push URL: `rtmp[s]://host[:port]/app[/more]/stream-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// TLS (`rtmps://`).
    pub tls: bool,
    /// Host name or IP.
    pub host: String,
    /// TCP port (1935 for rtmp, 443 for rtmps by default).
    pub port: u16,
    /// Application: every path segment but the last.
    pub app: String,
    /// Stream key: the last path segment (with any query string, which some platforms use).
    pub key: String,
}

/// Why a URL is refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtmpUrlError {
    /// Not rtmp:// or rtmps://.
    #[error("{0:?}: not an rtmp:// or rtmps:// URL")]
    Scheme(String),
    /// No host, app or key.
    #[error("{0:?}: expected rtmp[s]://host[:port]/app/stream-key")]
    Shape(String),
    /// Port not a number.
    #[error("{0:?}: bad port")]
    Port(String),
}

impl RtmpUrl {
    /// Parses a push URL.
    pub fn parse(url: &str) -> Result<Self, RtmpUrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("rtmps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("rtmp://") {
            (false, rest)
        } else {
            return Err(RtmpUrlError::Scheme(url.to_owned()));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| RtmpUrlError::Shape(url.to_owned()))?;
        let (app, key) = path
            .rsplit_once('/')
            .ok_or_else(|| RtmpUrlError::Shape(url.to_owned()))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| RtmpUrlError::Port(url.to_owned()))?,
            ),
            _ => (authority, if tls { 443 } else { 1935 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || app.is_empty() || key.is_empty() {
            return Err(RtmpUrlError::Shape(url.to_owned()));
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            key: key.to_owned(),
        })
    }

    /// This target for one stream: `{stream}` in the host, application and key replaced by the
    /// stream name. Stream names are `A-Z a-z 0-9 - _ .`, so filling the parsed parts is the same
    /// as parsing the filled URL.
    pub fn for_stream(&self, stream: &str) -> Self {
        let fill = |s: &str| s.replace("{stream}", stream);
        Self {
            tls: self.tls,
            host: fill(&self.host),
            port: self.port,
            app: fill(&self.app),
            key: fill(&self.key),
        }
    }

    /// The `tcUrl` servers expect: the URL without the stream key.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.app)
    }

    /// The URL with the stream key hidden, for logs and metrics labels (keys are secrets).
    pub fn redacted(&self) -> String {
        format!("{}/***", self.tc_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1936/live/demo").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.app.as_str(),
                u.key.as_str()
            ),
            (false, "127.0.0.1", 1936, "live", "demo")
        );
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1936/live");
        assert_eq!(u.redacted(), "rtmp://127.0.0.1:1936/live/***");
        let u = RtmpUrl::parse("rtmps://live.example.com/app/inst/key?token=1").unwrap();
        assert_eq!(
            (u.port, u.app.as_str(), u.key.as_str()),
            (443, "app/inst", "key?token=1")
        );
        let u = RtmpUrl::parse("rtmp://[::1]:1935/live/k").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1935));
        for bad in [
            "http://x/a/b",
            "rtmp://host",
            "rtmp://host/app",
            "rtmp://host:x/a/b",
            "rtmp:///a/b",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_fill_like_urls() {
        let template =
            RtmpUrl::parse("rtmp://{stream}.example:1936/live/{stream}?k={stream}").unwrap();
        for stream in ["a", "cam-1.main_2"] {
            let filled = format!("rtmp://{stream}.example:1936/live/{stream}?k={stream}");
            assert_eq!(
                template.for_stream(stream),
                RtmpUrl::parse(&filled).unwrap()
            );
        }
    }
}
