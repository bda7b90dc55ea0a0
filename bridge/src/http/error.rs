//! The one place errors become HTTP answers: RFC 9457 problem bodies, detail logged not leaked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
    www_authenticate: bool,
}

impl ApiError {
    /// An answer with this status and a short detail safe to show the client.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail: detail.into(),
            retry_after: None,
            www_authenticate: false,
        }
    }

    /// Adds `Retry-After` (seconds, at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized() -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(401, "a valid bearer token is required")
        }
    }

    /// An auth refusal: 401 (with `WWW-Authenticate: Bearer`) or 403.
    pub fn denied(denied: &crate::auth::Denied) -> Self {
        Self {
            www_authenticate: denied.status() == 401,
            ..Self::new(denied.status(), denied.to_string())
        }
    }

    /// 404 for an unknown or ended session.
    pub fn no_session() -> Self {
        Self::new(404, "no such session")
    }

    /// 500: the detail is logged here and not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(500, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
