//! Who may publish a stream over WHIP and who may read it over HLS.
//!
//! Four ways to say yes, any of which is enough, tried cheapest first:
//! - the global `--token` (the operator's: every stream, and `/admin/drain`);
//! - a key of a `[[stream]]` entry whose name pattern matches the stream (config file);
//! - a JWT bearer token signed by a key of the `--jwks-url` set (RS256 or ES256), whose
//!   `publish` or `read` claim names the stream ([`jwt`]);
//! - the platform's HTTP hook (`--auth-url`), asked with a JSON POST and cached briefly
//!   ([`hook`]).
//!
//! With none of them configured, publishing is open (as a bridge on a laptop should be); with
//! any, it is closed to everything they do not allow. Reading is governed by `--hls-auth`.
//! Every refusal is a 401 (no or unknown credentials) or a 403 (known, but not for this
//! stream, or the hook could not be asked): never a 5xx, and a slow hook delays only the
//! requests that wait for it.

pub mod hook;
pub mod jwt;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{AuthSettings, HlsAuth};
use crate::metrics::Metrics;
use crate::outbound::HttpClient;

/// What a request wants to do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish over WHIP (the POST, and the session's PATCH, DELETE and GET).
    Publish,
    /// Read its HLS output.
    Read,
}

impl Action {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Read => "read",
        }
    }
}

/// One request to decide, as the hook receives it.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRequest<'a> {
    /// What it wants.
    pub action: Action,
    /// The stream name.
    pub stream: &'a str,
    /// The bearer token (or HLS `token` query parameter) given, if any.
    pub token: Option<&'a str>,
    /// The client's address.
    pub ip: IpAddr,
    /// Its `User-Agent`, if any.
    pub user_agent: Option<&'a str>,
    /// `whip` or `hls`.
    pub protocol: &'static str,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// No credentials, or none that any configured way knows: 401.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// Credentials known, but not for this stream or action: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The auth hook could not be asked (down, slow, answered 5xx): 403, and logged.
    #[error("the auth hook could not decide: {0}")]
    HookUnavailable(String),
}

impl Denied {
    /// The HTTP status to answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated => 401,
            Self::Forbidden(_) | Self::HookUnavailable(_) => 403,
        }
    }

    /// The metric label.
    fn label(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::HookUnavailable(_) => "hook_error",
        }
    }
}

/// A `[[stream]]` entry of the config file: keys for the streams its name pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamKeys {
    /// A stream name, or a pattern where `*` stands for any characters (`cam-*`, `*`).
    pub name: String,
    /// The key a publisher of these streams gives as its bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_key: Option<String>,
    /// The key a player gives to read them over HLS (`--hls-auth token`); the publish key
    /// reads too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_key: Option<String>,
}

/// `*`-patterns over stream names: `*` matches any run of characters, everything else itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    // split always yields a first piece (maybe empty).
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bridge's access policy (one per bridge, shared by the HTTP handlers).
#[derive(Debug)]
pub struct Auth {
    global: Option<String>,
    streams: Vec<StreamKeys>,
    jwt: Option<jwt::JwtVerifier>,
    hook: Option<hook::AuthHook>,
    hls: HlsAuth,
}

impl Auth {
    /// The policy the settings describe; the hook and the JWKS are asked through `client`.
    pub fn new(settings: &AuthSettings, global: Option<String>, client: &HttpClient) -> Self {
        Self {
            global,
            streams: settings.streams.clone(),
            jwt: (settings.jwks.clone()).map(|s| jwt::JwtVerifier::new(s, client.clone())),
            hook: (settings.hook.clone()).map(|s| hook::AuthHook::new(s, client.clone())),
            hls: settings.hls,
        }
    }

    /// Whether any way of publishing is configured (else publishing is open).
    fn publish_closed(&self) -> bool {
        self.global.is_some()
            || self.streams.iter().any(|s| s.publish_key.is_some())
            || self.jwt.is_some()
            || self.hook.is_some()
    }

    /// Whether `token` is the operator's global token.
    pub fn is_operator(&self, token: Option<&str>) -> bool {
        match (&self.global, token) {
            (Some(global), Some(token)) => constant_time_eq(global.as_bytes(), token.as_bytes()),
            _ => false,
        }
    }

    /// Whether operator-only endpoints (`/admin/drain`) need the global token.
    pub fn has_operator_token(&self) -> bool {
        self.global.is_some()
    }

    /// Decides a request, counting the decision.
    pub async fn check(
        &self,
        request: &AccessRequest<'_>,
        metrics: &Metrics,
    ) -> Result<(), Denied> {
        let decision = self.decide(request).await;
        let result = match &decision {
            Ok(via) => *via,
            Err(denied) => denied.label(),
        };
        metrics.auth_decision(request.action.label(), result);
        if let Err(Denied::HookUnavailable(reason)) = &decision {
            tracing::warn!(stream = request.stream, %reason, "auth hook could not decide");
        }
        decision.map(|_| ())
    }

    /// `Ok(how it was allowed)` or why not.
    async fn decide(&self, request: &AccessRequest<'_>) -> Result<&'static str, Denied> {
        let (closed, hook_asked, jwt_asked) = match request.action {
            Action::Publish => (self.publish_closed(), true, true),
            Action::Read => match self.hls {
                HlsAuth::None => (false, false, false),
                HlsAuth::Token => (true, false, false),
                HlsAuth::Hook => (true, true, false),
                HlsAuth::Jwt => (true, false, true),
            },
        };
        if !closed {
            return Ok("open");
        }
        let token = request.token.filter(|t| !t.is_empty());
        if self.is_operator(token) {
            return Ok("token");
        }
        if let Some(token) = token
            && self.stream_key_allows(request.action, request.stream, token)
        {
            return Ok("stream_key");
        }
        // The most telling refusal seen so far (a known token for another stream beats none).
        let mut denied = Denied::Unauthenticated;
        if jwt_asked
            && let Some(verifier) = &self.jwt
            && let Some(token) = token.filter(|t| jwt::looks_like_jwt(t))
        {
            match verifier.allows(token, request.action, request.stream).await {
                Ok(()) => return Ok("jwt"),
                Err(err @ Denied::Forbidden(_)) => denied = err,
                Err(_) => {}
            }
        }
        if hook_asked && let Some(hook) = &self.hook {
            match hook.ask(request).await {
                Ok(()) => return Ok("hook"),
                Err(Denied::Unauthenticated) if denied != Denied::Unauthenticated => {}
                Err(err) => denied = err,
            }
        }
        Err(denied)
    }

    fn stream_key_allows(&self, action: Action, stream: &str, token: &str) -> bool {
        self.streams
            .iter()
            .filter(|entry| pattern_matches(&entry.name, stream))
            .any(|entry| {
                let read_key = entry.read_key.as_deref().filter(|_| action == Action::Read);
                [entry.publish_key.as_deref(), read_key]
                    .into_iter()
                    .flatten()
                    .any(|key| constant_time_eq(key.as_bytes(), token.as_bytes()))
            })
    }
}

/// The token of an `Authorization` header: `Bearer <token>`, or the token bare, because some
/// clients send it so.
pub fn bearer(value: &str) -> &str {
    let value = value.trim();
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn patterns() {
        let table = [
            ("cam-1", "cam-1", true),
            ("cam-1", "cam-10", false),
            ("cam-*", "cam-10", true),
            ("cam-*", "cam-", true),
            ("cam-*", "cab-1", false),
            ("*", "anything", true),
            ("*-hd", "a-hd", true),
            ("*-hd", "a-hd-2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("a*a", "a", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, name, want) in table {
            assert_eq!(pattern_matches(pattern, name), want, "{pattern} ~ {name}");
        }
    }

    fn request<'a>(action: Action, stream: &'a str, token: Option<&'a str>) -> AccessRequest<'a> {
        AccessRequest {
            action,
            stream,
            token,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_agent: None,
            protocol: "whip",
        }
    }

    fn auth(global: Option<&str>, hls: HlsAuth) -> Auth {
        let settings = AuthSettings {
            streams: vec![
                StreamKeys {
                    name: "cam-*".into(),
                    publish_key: Some("cam-secret".into()),
                    read_key: Some("cam-view".into()),
                },
                StreamKeys {
                    name: "studio".into(),
                    publish_key: Some("studio-secret".into()),
                    read_key: None,
                },
            ],
            jwks: None,
            hook: None,
            hls,
        };
        Auth::new(&settings, global.map(str::to_owned), &HttpClient::default())
    }

    #[tokio::test]
    async fn static_keys_table() {
        let metrics = Metrics::default();
        let auth = auth(Some("operator"), HlsAuth::Token);
        use Action::{Publish, Read};
        let table = [
            (Publish, "cam-1", Some("cam-secret"), Ok::<(), u16>(())),
            (Publish, "cam-1", Some("operator"), Ok(())),
            (Publish, "cam-1", Some("studio-secret"), Err(401)),
            (Publish, "cam-1", Some("cam-view"), Err(401)),
            (Publish, "cam-1", None, Err(401)),
            (Publish, "cam-1", Some(""), Err(401)),
            (Publish, "studio", Some("studio-secret"), Ok(())),
            (Publish, "other", Some("cam-secret"), Err(401)),
            (Read, "cam-1", Some("cam-view"), Ok(())),
            (Read, "cam-1", Some("cam-secret"), Ok(())),
            (Read, "studio", Some("cam-view"), Err(401)),
            (Read, "studio", None, Err(401)),
        ];
        for (action, stream, token, want) in table {
            let got = auth
                .check(&request(action, stream, token), &metrics)
                .await
                .map_err(|d| d.status());
            assert_eq!(got, want, "{action:?} {stream} {token:?}");
        }
    }

    #[tokio::test]
    async fn open_until_something_is_configured() {
        let metrics = Metrics::default();
        let open = Auth::new(
            &AuthSettings {
                streams: Vec::new(),
                jwks: None,
                hook: None,
                hls: HlsAuth::None,
            },
            None,
            &HttpClient::default(),
        );
        for action in [Action::Publish, Action::Read] {
            assert_eq!(
                open.check(&request(action, "x", None), &metrics).await,
                Ok(())
            );
        }
        // Keys configured: publishing closes, reading stays as --hls-auth says (open).
        let keyed = auth(None, HlsAuth::None);
        assert_eq!(
            keyed
                .check(&request(Action::Publish, "x", None), &metrics)
                .await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keyed
                .check(&request(Action::Read, "x", None), &metrics)
                .await,
            Ok(())
        );
    }

    #[test]
    fn bearer_prefix_is_optional() {
        for (header, token) in [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("abc", "abc"),
            ("  Bearer  abc ", "abc"),
        ] {
            assert_eq!(bearer(header), token);
        }
    }
}
