//! JWT bearer tokens checked against the platform's key set (`--jwks-url`).
//!
//! A token is accepted when its signature is good under a key of the set (RS256 with an RSA
//! key, ES256 with a P-256 key; the algorithm is taken from the key, never from the token, so
//! a token cannot pick a weaker check), it has not expired, its issuer and audience are the
//! configured ones (if any), and its `publish` or `read` claim (stream names or `*`-patterns)
//! covers the stream:
//!
//! ```json
//! {"sub": "user-42", "exp": 1893456000, "publish": ["cam-42"], "read": ["cam-*"]}
//! ```
//!
//! The set is fetched on first use, again every `--jwks-refresh-secs`, and at once when a token
//! names a key id the set lacks (the platform rotated keys); never more often than
//! [`REFETCH_GAP`].

use std::time::{Duration, Instant};

use hyper::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::{Action, Denied, pattern_matches};
use crate::outbound::HttpClient;

/// The set is fetched at most this often, whatever requests ask: a stream of forged key ids
/// must not turn into a stream of requests to the platform.
pub const REFETCH_GAP: Duration = Duration::from_secs(2);

/// How long fetching the set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the keys are and what tokens must say.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// The JWKS document's URL.
    pub url: Uri,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// How often the set is fetched again.
    pub refresh: Duration,
}

/// Whether a bearer token has a JWT's shape (three base64url parts); other tokens are not
/// sent through signature checks.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Default, Deserialize)]
struct Claims {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

/// The verifier and its key set.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwksSettings,
    client: HttpClient,
    keys: RwLock<KeySet>,
    /// Held while fetching (one fetch at a time); the time of the last attempt.
    fetching: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    /// A verifier that fetches its keys on first use.
    pub fn new(settings: JwksSettings, client: HttpClient) -> Self {
        Self {
            settings,
            client,
            keys: RwLock::new(KeySet::default()),
            fetching: Mutex::new(None),
        }
    }

    /// `Ok` when `token` is good and allows `action` on `stream`.
    pub async fn allows(&self, token: &str, action: Action, stream: &str) -> Result<(), Denied> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Unauthenticated)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Denied::Unauthenticated);
        }
        let stale = self
            .keys
            .read()
            .await
            .fetched
            .is_none_or(|at| at.elapsed() >= self.settings.refresh);
        if stale {
            self.fetch().await;
        }
        let mut claims = self.verify(token, &header).await;
        if claims.is_none() && header.kid.is_some() && !self.knows(header.kid.as_deref()).await {
            self.fetch().await;
            claims = self.verify(token, &header).await;
        }
        let claims = claims.ok_or(Denied::Unauthenticated)?;
        let allowed = match action {
            Action::Publish => &claims.publish,
            Action::Read => &claims.read,
        };
        if allowed.iter().any(|p| pattern_matches(p, stream)) {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "the token does not allow {} {stream:?}",
                match action {
                    Action::Publish => "publishing",
                    Action::Read => "reading",
                }
            )))
        }
    }

    async fn knows(&self, kid: Option<&str>) -> bool {
        self.keys
            .read()
            .await
            .keys
            .iter()
            .any(|k| k.id.as_deref() == kid)
    }

    /// The claims, if a key of the set (of the token's key id, if it names one) verifies it.
    async fn verify(&self, token: &str, header: &jsonwebtoken::Header) -> Option<Claims> {
        let keys = self.keys.read().await;
        keys.keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| header.kid.is_none() || k.id == header.kid)
            .find_map(|k| {
                jsonwebtoken::decode::<Claims>(token, &k.key, &self.validation(k.algorithm))
                    .ok()
                    .map(|data| data.claims)
            })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.validate_aud = self.settings.audience.is_some();
        if let Some(audience) = &self.settings.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation
    }

    /// Fetches the set, unless it was tried within [`REFETCH_GAP`]: requests that waited for
    /// another's fetch use its keys, and a platform that is down is not asked by every request.
    /// A failed fetch keeps the keys there were.
    async fn fetch(&self) {
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFETCH_GAP) {
            return;
        }
        let started = Instant::now();
        *last = Some(started);
        match self.download().await {
            Ok(keys) => {
                tracing::info!(url = %self.settings.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().await = KeySet {
                    keys,
                    fetched: Some(started),
                };
            }
            Err(reason) => tracing::warn!(url = %self.settings.url, %reason, "JWKS fetch failed"),
        }
    }

    async fn download(&self) -> Result<Vec<Key>, String> {
        let answer = self
            .client
            .get(&self.settings.url, FETCH_TIMEOUT)
            .await
            .map_err(|err| err.to_string())?;
        if !answer.status.is_success() {
            return Err(format!("answered {}", answer.status));
        }
        parse_key_set(&answer.body)
    }
}

/// The RS256 and ES256 keys of a JWKS document; keys of other kinds are skipped, so one
/// unusual key does not lose the set.
fn parse_key_set(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|err| format!("not a JWKS document: {err}"))?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(Key {
                id: jwk.common.key_id.clone(),
                algorithm,
                key,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("plain-secret"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }

    #[test]
    fn key_sets_keep_what_they_can_use() {
        let body = br#"{"keys": [
            {"kty": "RSA", "kid": "r1", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"something": "else"}
        ]}"#;
        let keys = parse_key_set(body).expect("a JWKS document");
        let kinds: Vec<_> = keys
            .iter()
            .map(|k| (k.id.as_deref(), k.algorithm))
            .collect();
        assert_eq!(
            kinds,
            [
                (Some("r1"), Algorithm::RS256),
                (Some("e1"), Algorithm::ES256)
            ]
        );
        assert!(parse_key_set(b"not json").is_err());
        assert!(parse_key_set(b"{}").is_err());
    }
}
