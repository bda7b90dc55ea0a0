//! The error type of the crate.

use std::time::Duration;

/// Everything that can go wrong while publishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (bad endpoint URL, unspecified bind address, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The embedded test clip does not parse (only after regenerating it badly).
    #[error("the embedded test clip: {0}")]
    Clip(#[from] crate::media::ClipError),
    /// The HTTP request could not be built (bad URL or header value).
    #[error("{method} {url}: cannot build request: {source}")]
    Request {
        /// HTTP method.
        method: &'static str,
        /// Target URL.
        url: String,
        /// Cause.
        source: hyper::http::Error,
    },
    /// The HTTP exchange failed before a status arrived (connect, I/O).
    #[error("{method} {url}: {source}")]
    Http {
        /// HTTP method.
        method: &'static str,
        /// Target URL.
        url: String,
        /// Cause.
        source: hyper_util::client::legacy::Error,
    },
    /// Reading the response body failed.
    #[error("{method} {url}: reading body: {source}")]
    Body {
        /// HTTP method.
        method: &'static str,
        /// Target URL.
        url: String,
        /// Cause.
        source: hyper::Error,
    },
    /// The server answered with a status the protocol step does not allow.
    #[error("{method} {url}: unexpected status {status} (expected {expected}): {body}")]
    UnexpectedStatus {
        /// HTTP method.
        method: &'static str,
        /// Target URL.
        url: String,
        /// Status received.
        status: u16,
        /// What was expected, e.g. `201`.
        expected: &'static str,
        /// Response body (lossy UTF-8, truncated).
        body: String,
    },
    /// The server's answer breaks WHIP (missing `Location` or `ETag`, bad sdpfrag, ...).
    #[error("{context}: {reason}")]
    Protocol {
        /// Which step.
        context: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The WebRTC stack refused an operation.
    #[error("WebRTC ({context}): {source}")]
    Rtc {
        /// Which operation.
        context: &'static str,
        /// Cause.
        source: rtc::shared::error::Error,
    },
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The limit.
        after: Duration,
        /// What was awaited.
        what: &'static str,
    },
    /// The peer connection failed or was closed while it was needed.
    #[error("peer connection is {0}")]
    ConnectionLost(String),
    /// The driver task stopped (panicked or was shut down).
    #[error("the publisher's driver task has stopped")]
    DriverGone,
}

impl Error {
    /// The HTTP status of an [`Error::UnexpectedStatus`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn rtc(context: &'static str) -> impl FnOnce(rtc::shared::error::Error) -> Error {
        move |source| Error::Rtc { context, source }
    }

    pub(crate) fn protocol(context: &'static str, reason: impl Into<String>) -> Error {
        Error::Protocol {
            context,
            reason: reason.into(),
        }
    }
}
