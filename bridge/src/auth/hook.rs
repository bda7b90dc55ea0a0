//! The platform's auth hook (`--auth-url`): the bridge POSTs each request it must decide as
//! JSON (`{action, stream, token, ip, user_agent, protocol}`) and a 2xx answer allows it.
//!
//! Decisions are cached for `--auth-cache-secs`, so a publisher's trickle PATCHes and a
//! player's part requests do not each cost a round trip; failures (no answer in time, a 5xx)
//! are not cached, so the next request asks again. No lock is held while the hook is asked:
//! a hook slow for one stream delays only the requests that wait for its answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;

use super::{AccessRequest, Action, Denied};
use crate::outbound::HttpClient;

/// Cached decisions at most; beyond it the expired go, then (if still full) all.
const MAX_CACHED: usize = 10_000;

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// The hook's URL.
    pub url: Uri,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long a decision is reused.
    pub cache: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    action: Action,
    stream: String,
    token: Option<String>,
    ip: IpAddr,
}

/// A decision and when the hook made it.
type Cached = (Instant, Result<(), Denied>);

/// The hook and its cache.
#[derive(Debug)]
pub struct AuthHook {
    settings: HookSettings,
    client: HttpClient,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl AuthHook {
    /// A hook with an empty cache, asked through `client`.
    pub fn new(settings: HookSettings, client: HttpClient) -> Self {
        Self {
            settings,
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The hook's decision on `request`, cached or asked.
    pub async fn ask(&self, request: &AccessRequest<'_>) -> Result<(), Denied> {
        let key = Key {
            action: request.action,
            stream: request.stream.to_owned(),
            token: request.token.map(str::to_owned),
            ip: request.ip,
        };
        let now = Instant::now();
        if let Some(decision) = self.cached(&key, now) {
            return decision;
        }
        let decision = self.ask_hook(request).await;
        if !matches!(decision, Err(Denied::HookUnavailable(_))) && !self.settings.cache.is_zero() {
            self.remember(key, now, decision.clone());
        }
        decision
    }

    fn cached(&self, key: &Key, now: Instant) -> Option<Result<(), Denied>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| now.duration_since(*at) < self.settings.cache)
            .map(|(_, decision)| decision.clone())
    }

    fn remember(&self, key: Key, now: Instant, decision: Result<(), Denied>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let ttl = self.settings.cache;
            cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (now, decision));
    }

    async fn ask_hook(&self, request: &AccessRequest<'_>) -> Result<(), Denied> {
        let body = serde_json::to_vec(request)
            .map_err(|err| Denied::HookUnavailable(format!("encoding the request: {err}")))?;
        let answer = self
            .client
            .post_json(&self.settings.url, Bytes::from(body), self.settings.timeout)
            .await
            .map_err(|err| Denied::HookUnavailable(err.to_string()))?;
        decision_of(answer.status.as_u16())
    }
}

/// What the hook's status says.
fn decision_of(status: u16) -> Result<(), Denied> {
    match status {
        200..=299 => Ok(()),
        401 => Err(Denied::Unauthenticated),
        400..=499 => Err(Denied::Forbidden(format!(
            "the auth hook refused ({status})"
        ))),
        _ => Err(Denied::HookUnavailable(format!("it answered {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(decision_of(200), Ok(()));
        assert_eq!(decision_of(204), Ok(()));
        assert_eq!(decision_of(401), Err(Denied::Unauthenticated));
        assert_eq!(decision_of(403).map_err(|d| d.status()), Err(403));
        assert_eq!(decision_of(404).map_err(|d| d.status()), Err(403));
        for status in [300, 302, 500, 503] {
            assert!(
                matches!(decision_of(status), Err(Denied::HookUnavailable(_))),
                "{status}"
            );
        }
    }
}
