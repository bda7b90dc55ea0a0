//! HTTP edge: the axum router and its middleware. No protocol decisions are made here.

mod error;
mod hls;
pub mod tls;
mod whip;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ApiError;

use crate::app::App;
use crate::metrics::RequestLabel;

/// The bridge's HTTP API; tests call it with `oneshot`, no socket needed.
pub fn router(app: Arc<App>) -> Router {
    let whip = Router::new()
        .route(
            "/whip/{stream}",
            get(whip::get_endpoint)
                .post(whip::post)
                .options(whip::options_endpoint),
        )
        .route(
            "/whip/{stream}/{session}",
            get(whip::get_session)
                .patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options_session),
        )
        .route("/admin/drain", post(whip::drain))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .merge(whip)
        // Playback is public: outside the bearer-auth layer.
        .route("/hls/{stream}/{file}", get(hls::get))
        .route("/hls/{stream}/{rendition}/{file}", get(hls::get_rendition))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// `/readyz`: 200 while the bridge takes new sessions, 503 once it drains (`/healthz` says it
/// is alive either way), for load balancers to move new publishers elsewhere.
async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.is_draining() {
        ApiError::new(503, "draining: this bridge takes no new sessions")
            .retry_after(5)
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Bearer auth (RFC 9725 §4.7) on every WHIP request but CORS preflights. The token is accepted
/// with or without the `Bearer ` prefix, because some clients send it bare.
async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(token) = app.settings.whip.token.as_deref() else {
        return next.run(request).await;
    };
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
        });
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// CORS on every answer. Browser clients cannot read Location or ETag without the expose list
/// (seen with a real browser WHIP client).
async fn cors(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Retry-After"),
    );
    response
}

async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    app.metrics
        .requests
        .get_or_create(&RequestLabel {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
