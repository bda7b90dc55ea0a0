//! HTTP edge: the axum router and its middleware. No protocol decisions are made here.

mod error;
mod hls;
pub mod tls;
mod whip;

use std::sync::Arc;

use axum::Router;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ApiError;

use crate::app::App;
use crate::auth::{AccessRequest, Action, Denied};
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
        // Playback has its own policy (--hls-auth), checked by its handlers.
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

/// `/metrics`: OpenMetrics for scrapers that ask for it (Prometheus does), else the classic
/// text format, which `promtool check metrics` and older tools read; as the Go client does.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let openmetrics = header_text(&headers, header::ACCEPT)
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            app.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            app.metrics.render_text(),
        )
            .into_response()
    }
}

/// Bearer auth (RFC 9725 §4.7) on every WHIP request but CORS preflights: the POST and the
/// session's requests alike are publishing the stream in the path ([`crate::auth`] decides;
/// the hook's cache spares a round trip per trickle PATCH). Paths without a stream
/// (`/admin/drain`) take only the operator's token.
async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let params = axum::extract::Path::<Vec<(String, String)>>::from_request_parts(&mut parts, &())
        .await
        .map(|p| p.0)
        .unwrap_or_default();
    let stream = params.iter().find(|(k, _)| k == "stream").map(|(_, v)| v);
    let token = header_text(&parts.headers, header::AUTHORIZATION).map(crate::auth::bearer);
    let allowed = match stream {
        Some(stream) => {
            let access = AccessRequest {
                action: Action::Publish,
                stream,
                token,
                ip: client_ip(&parts.extensions),
                user_agent: header_text(&parts.headers, header::USER_AGENT),
                protocol: "whip",
            };
            app.auth.check(&access, &app.metrics).await
        }
        None if !app.auth.has_operator_token() || app.auth.is_operator(token) => Ok(()),
        None => Err(Denied::Unauthenticated),
    };
    match allowed {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(denied) => ApiError::denied(&denied).into_response(),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The client's address (unspecified when the server was not given it, as in tests that call
/// the router directly).
pub(crate) fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
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
