//! The HTTP side of WHIP: one small client that sends POST / PATCH / DELETE with the right
//! headers and returns status, headers and body.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, IF_MATCH};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::Error;

/// `Content-Type` of an SDP offer / answer.
pub const APPLICATION_SDP: &str = "application/sdp";
/// `Content-Type` of a PATCH body (RFC 8840).
pub const TRICKLE_ICE_SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Redirects (307, and 308 from servers that use it) followed for one POST, re-sending the
/// offer: a cluster of bridges sends a POST to the node that owns the stream or has room.
pub const MAX_REDIRECTS: u32 = 5;

/// Limit for one HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies quoted in errors are cut to this many bytes.
const ERROR_BODY_LIMIT: usize = 512;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Response {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as lossy UTF-8, truncated for error messages.
    pub fn body_excerpt(&self) -> String {
        let end = self.body.len().min(ERROR_BODY_LIMIT);
        let mut s = String::from_utf8_lossy(&self.body[..end]).into_owned();
        if self.body.len() > end {
            s.push_str("...");
        }
        s
    }

    /// `Err(UnexpectedStatus)` unless the status is one of `allowed`.
    pub(crate) fn require_status(
        self,
        method: &'static str,
        url: &str,
        allowed: &[u16],
        expected: &'static str,
    ) -> Result<Response, Error> {
        if allowed.contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::UnexpectedStatus {
                method,
                url: url.to_owned(),
                status: self.status,
                expected,
                body: self.body_excerpt(),
            })
        }
    }
}

/// One request and what came of it, timed: what the load generator's oracle and histograms are
/// fed.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP method.
    pub method: Method,
    /// Target URL.
    pub url: String,
    /// The `If-Match` sent, if any.
    pub if_match: Option<String>,
    /// The request body (offer or sdpfrag).
    pub body: Bytes,
    /// When the request was handed to the client.
    pub sent: Instant,
    /// When the answer was fully read, or the exchange failed.
    pub received: Instant,
    /// The answer, or why there is none (connect error, timeout, ...).
    pub outcome: Result<Response, String>,
}

impl Exchange {
    /// The answer's status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.outcome.as_ref().ok().map(|r| r.status)
    }

    /// `received - sent`.
    pub fn elapsed(&self) -> Duration {
        self.received.saturating_duration_since(self.sent)
    }
}

/// HTTP client for one WHIP publisher. Clones share one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct WhipHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
    timeout: Duration,
    /// Gets a copy of every exchange (the load generator watching a [`crate::Publisher`]).
    observer: Option<mpsc::UnboundedSender<Exchange>>,
}

impl WhipHttp {
    pub(crate) fn new(token: Option<String>) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            client,
            token,
            timeout: HTTP_TIMEOUT,
            observer: None,
        }
    }

    /// The same client (and pool) with another limit for one exchange.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client (and pool), reporting every exchange to `observer`.
    pub(crate) fn with_observer(mut self, observer: mpsc::UnboundedSender<Exchange>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sends one request and returns it with its outcome and timing; never fails.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: Bytes,
    ) -> Exchange {
        self.timed(method, url, content_type, if_match, body)
            .await
            .0
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: Bytes,
    ) -> Result<Response, Error> {
        self.timed(method, url, content_type, if_match, body)
            .await
            .1
    }

    async fn timed(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: Bytes,
    ) -> (Exchange, Result<Response, Error>) {
        let sent = Instant::now();
        let result = self
            .send_untimed(method.clone(), url, content_type, if_match, body.clone())
            .await;
        let exchange = Exchange {
            method,
            url: url.to_owned(),
            if_match: if_match.map(str::to_owned),
            body,
            sent,
            received: Instant::now(),
            outcome: result
                .as_ref()
                .map(Clone::clone)
                .map_err(ToString::to_string),
        };
        if let Some(observer) = &self.observer {
            // The observer may have stopped listening; the publisher does not care.
            let _ = observer.send(exchange.clone());
        }
        (exchange, result)
    }

    async fn send_untimed(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: Bytes,
    ) -> Result<Response, Error> {
        let name = method_name(&method);
        let build_err = |source| Error::Request {
            method: name,
            url: url.to_owned(),
            source,
        };
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(ct) = content_type {
            builder = builder.header(
                CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(|e| build_err(e.into()))?,
            );
        }
        if let Some(tag) = if_match {
            builder = builder.header(
                IF_MATCH,
                HeaderValue::from_str(tag).map_err(|e| build_err(e.into()))?,
            );
        }
        if let Some(token) = &self.token {
            builder = builder.header(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| build_err(e.into()))?,
            );
        }
        let request = builder.body(Full::new(body)).map_err(build_err)?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| Error::Http {
                    method: name,
                    url: url.to_owned(),
                    source,
                })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|source| Error::Body {
                    method: name,
                    url: url.to_owned(),
                    source,
                })?
                .to_bytes();
            Ok::<_, Error>(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                after: self.timeout,
                what: "an HTTP response",
            })??;
        tracing::debug!(
            method = name,
            url,
            status = response.status,
            "WHIP HTTP exchange"
        );
        Ok(response)
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::GET => "GET",
        Method::OPTIONS => "OPTIONS",
        _ => "request",
    }
}
