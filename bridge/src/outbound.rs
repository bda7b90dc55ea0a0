//! Outbound HTTP: the bridge's own requests to the platform around it (the auth hook, the JWKS
//! document, event webhooks). One pooled client for all of them, HTTP/1.1 over TCP or TLS
//! (webpki roots, as for RTMPS), every request bounded in time and in the size of its answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http::uri::Scheme;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read; the platform's answers are small JSON documents.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why an outbound request gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// No complete answer within the time given.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Transport(String),
    /// The answer body was larger than 1 MiB.
    #[error("answer body larger than {MAX_ANSWER} bytes")]
    TooLarge,
}

/// An answer: its status and (bounded) body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// The client (cheap to clone: the connection pool is shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(tls),
        }
    }
}

impl HttpClient {
    /// POSTs a JSON body and reads the answer, all within `timeout`.
    pub async fn post_json(
        &self,
        url: &Uri,
        json: Bytes,
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        self.send(Method::POST, url, Some(json), timeout).await
    }

    /// GETs `url` and reads the answer, all within `timeout`.
    pub async fn get(&self, url: &Uri, timeout: Duration) -> Result<Answer, OutboundError> {
        self.send(Method::GET, url, None, timeout).await
    }

    async fn send(
        &self,
        method: Method,
        url: &Uri,
        json: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        let mut request = Request::builder().method(method).uri(url.clone()).header(
            header::USER_AGENT,
            concat!("bridge/", env!("CARGO_PKG_VERSION")),
        );
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(json.unwrap_or_default()))
            .map_err(|err| OutboundError::Transport(err.to_string()))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|err| OutboundError::Transport(transport_reason(&err)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|err| {
                    if err.is::<http_body_util::LengthLimitError>() {
                        OutboundError::TooLarge
                    } else {
                        OutboundError::Transport(err.to_string())
                    }
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }
}

/// The client error's own message says only "client error (Connect)"; the cause says why.
fn transport_reason(err: &hyper_util::client::legacy::Error) -> String {
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    reason
}

/// Parses a URL the bridge will send requests to: absolute, `http` or `https`, with a host.
pub fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|err| format!("{text:?}: {err}"))?;
    let scheme_ok = uri
        .scheme()
        .is_some_and(|s| *s == Scheme::HTTP || *s == Scheme::HTTPS);
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?}: an http:// or https:// URL with a host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(parse_url("http://127.0.0.1:8080/auth").is_ok());
        assert!(parse_url("https://hooks.example/live?x=1").is_ok());
        for bad in [
            "",
            "/auth",
            "ftp://x/y",
            "http://",
            "not a url",
            "rtmp://a/b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_silent_server_are_errors_not_hangs() {
        let client = HttpClient::default();
        // A port nobody listens on: bind, learn the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            l.local_addr().expect("bound").port()
        };
        let url = parse_url(&format!("http://127.0.0.1:{port}/x")).expect("valid");
        let err = client
            .get(&url, Duration::from_secs(2))
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, OutboundError::Transport(_)), "{err:?}");

        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = silent.local_addr().expect("bound");
        let hold = tokio::spawn(async move {
            let conn = silent.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let url = parse_url(&format!("http://{addr}/x")).expect("valid");
        let err = client
            .post_json(&url, Bytes::from_static(b"{}"), Duration::from_millis(200))
            .await
            .expect_err("never answers");
        assert!(matches!(err, OutboundError::Timeout(_)), "{err:?}");
        hold.abort();
    }
}
