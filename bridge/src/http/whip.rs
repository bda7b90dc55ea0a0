//! WHIP handlers (RFC 9725): they read HTTP, call the app, and map outcomes to status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, client_ip};
use crate::app::{App, CreateError};
use crate::cluster::{RedirectReason, RefuseReason, Route};
use crate::session::{PatchError, PatchReply};
use crate::whip::liveness::EndReason;
use crate::whip::sdpfrag::SdpFrag;

/// Largest accepted SDP or fragment body.
const MAX_BODY: usize = 64 * 1024;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(413, format!("body larger than {MAX_BODY} bytes")))
}

/// The query a node adds to the POSTs it redirects: the next node does not balance them again
/// (see [`crate::cluster::PostView::routed`]).
const ROUTED: &str = "routed=1";

fn draining() -> ApiError {
    ApiError::new(503, "this bridge is draining: it takes no new sessions").retry_after(5)
}

/// `307` to `location` (RFC 9725 §4.5: the client repeats the request there, body and all).
pub(super) fn redirect(
    app: &App,
    location: &str,
    reason: RedirectReason,
) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    app.metrics
        .whip_redirects
        .get_or_create(&reason.into())
        .inc();
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response.headers_mut().insert(header::LOCATION, value);
    Ok(response)
}

/// A request for a session that is not on this node: `307` to the node that owns its stream,
/// if that is another (a client that kept this node's URL, or a load balancer that sent it
/// here), else 404.
async fn elsewhere(app: &App, stream: &str, id: &str) -> Result<Response, ApiError> {
    match owner_elsewhere(app, stream).await {
        Some(owner) => redirect(
            app,
            &format!("{owner}/whip/{stream}/{id}"),
            RedirectReason::Owner,
        ),
        None => Err(ApiError::no_session()),
    }
}

/// The base URL of the node that owns `stream`, when a cluster is configured and that node is
/// another one.
pub(super) async fn owner_elsewhere(app: &App, stream: &str) -> Option<String> {
    let cluster = app.cluster.as_ref()?;
    let owner = cluster.owner(stream).await.ok().flatten()?;
    (cluster.url() != owner.url).then_some(owner.url)
}

/// `POST /admin/drain`: the bridge stops admitting sessions (see [`App::start_draining`]).
/// Behind the bearer token; without one configured, only from this host.
pub(super) async fn drain(
    State(app): State<Arc<App>>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    if !app.auth.has_operator_token() && !client_ip(request.extensions()).is_loopback() {
        return Err(ApiError::new(
            403,
            "without --token, only this host may drain the bridge",
        ));
    }
    app.start_draining();
    Ok(StatusCode::OK)
}

pub(super) fn valid_stream_name(stream: &str) -> bool {
    !stream.is_empty()
        && stream.len() <= 128
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !stream.starts_with('.')
}

fn link_header(server: &crate::config::IceServer) -> String {
    let mut link = format!("<{}>; rel=\"ice-server\"", server.url);
    if let (Some(user), Some(cred)) = (&server.username, &server.credential) {
        link +=
            &format!("; username=\"{user}\"; credential=\"{cred}\"; credential-type=\"password\"");
    }
    link
}

/// `POST /whip/{stream}`: offer in, 201 + answer out.
pub(super) async fn post(
    State(app): State<Arc<App>>,
    Path(stream): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    if !valid_stream_name(&stream) {
        return Err(ApiError::new(
            400,
            "stream names are 1-128 characters of A-Z a-z 0-9 - _ . (not starting with .)",
        ));
    }
    if !content_type_is(request.headers(), SDP) {
        return Err(ApiError::new(415, "the offer must be application/sdp"));
    }
    // Held until the session is set up: this node's load counts it meanwhile.
    let mut _admission = None;
    if let Some(cluster) = &app.cluster {
        let query = request.uri().query().unwrap_or_default();
        let routed = query.split('&').any(|pair| pair == ROUTED);
        let (route, admission) = cluster.route_post(&app, &stream, routed).await;
        _admission = admission;
        match route {
            Route::Here => {}
            Route::Redirect { url, reason } => {
                return redirect(&app, &format!("{url}/whip/{stream}?{ROUTED}"), reason);
            }
            Route::Refuse(RefuseReason::Draining) => return Err(draining()),
            Route::Refuse(RefuseReason::RedisDown) => {
                return Err(ApiError::new(
                    503,
                    "the cluster's Redis cannot be reached and this node admits nothing then; \
                     retry",
                )
                .retry_after(5));
            }
        }
    } else if app.is_draining() {
        return Err(draining());
    }
    if app.is_saturated() {
        app.metrics.saturated_refused.inc();
        return Err(ApiError::new(
            503,
            "the bridge is saturated (its event loop runs late); retry",
        )
        .retry_after(1));
    }
    let ip = client_ip(request.extensions());
    let body = read_body(request.into_body()).await?;
    let permit = app.admit_setup().await.map_err(|retry_after| {
        ApiError::new(
            503,
            "the bridge is setting up as many sessions as it can; retry",
        )
        .retry_after(retry_after)
    })?;
    // Off the threads that answer HTTP: under load they keep answering at once (refusals,
    // PATCHes, HLS) while set-ups take their turns.
    // Timed from the slot's grant, not the set-up's start: the hand-over to a blocking thread
    // holds the slot too, and under load it took long enough that waits estimated from the
    // set-up alone were too short (refusals came after the whole queue budget, not at once).
    let started = std::time::Instant::now();
    let setup = {
        let (app, stream) = (app.clone(), stream.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let created = app.create_session(&stream, ip, &body);
            app.setup_took(started.elapsed());
            created
        })
    };
    let created = setup
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| match err {
            CreateError::Offer(e) => ApiError::new(e.status(), e.to_string()),
            CreateError::RateLimited(wait) => {
                ApiError::new(429, err.to_string()).retry_after(wait.as_secs().max(1))
            }
            CreateError::Full => ApiError::new(503, err.to_string()).retry_after(5),
            CreateError::Conflict(_) => ApiError::new(409, err.to_string()),
            CreateError::Unanswerable(_) => {
                tracing::debug!(%stream, %err, "offer refused by the WebRTC stack");
                ApiError::new(422, err.to_string())
            }
            other => ApiError::internal(other),
        })?;
    // In a cluster, absolute: PATCH and DELETE then come straight here, whichever node the
    // POST was first sent to.
    let location = match &app.cluster {
        Some(cluster) => {
            cluster.claim(&stream);
            format!("{}/whip/{stream}/{}", cluster.url(), created.id)
        }
        None => format!("/whip/{stream}/{}", created.id),
    };
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_owned()),
            (header::LOCATION, location),
            (header::ETAG, created.etag),
        ],
        created.answer,
    )
        .into_response();
    for server in &app.settings.whip.ice_servers {
        if let Ok(value) = HeaderValue::from_str(&link_header(server)) {
            response.headers_mut().append(header::LINK, value);
        }
    }
    Ok(response)
}

/// `PATCH /whip/{stream}/{session}`: trickle or ICE restart.
pub(super) async fn patch(
    State(app): State<Arc<App>>,
    Path((stream, id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(handle) = app.session(&stream, &id) else {
        return elsewhere(&app, &stream, &id).await;
    };
    if !content_type_is(request.headers(), SDPFRAG) {
        return Err(ApiError::new(
            415,
            "PATCH bodies must be application/trickle-ice-sdpfrag",
        ));
    }
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(request.into_body()).await?;
    let frag = SdpFrag::parse(&body).map_err(|e| ApiError::new(400, e.to_string()))?;
    let outcome = tokio::time::timeout(Duration::from_secs(10), app.patch(&handle, if_match, frag))
        .await
        .map_err(|_| ApiError::new(503, "session did not answer in time").retry_after(1))?
        // The session ended while the PATCH was queued.
        .ok_or_else(ApiError::no_session)?;
    match outcome {
        Ok(PatchReply::Trickled) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(PatchReply::Restarted { etag, body }) => Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, SDPFRAG.to_owned()),
                (header::ETAG, etag),
            ],
            body,
        )
            .into_response()),
        Err(PatchError::Refused(refusal)) => {
            Err(ApiError::new(refusal.status(), refusal.to_string()))
        }
        Err(err @ PatchError::RestartFailed(_)) => {
            tracing::warn!(session = %id, %err, "restart failed, old ICE session kept");
            Err(ApiError::new(422, err.to_string()))
        }
    }
}

/// `DELETE /whip/{stream}/{session}`: ends the session (If-Match is ignored, §4.3.1).
pub(super) async fn delete(
    State(app): State<Arc<App>>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if app.session(&stream, &id).is_none() {
        return elsewhere(&app, &stream, &id).await;
    }
    let wait = app
        .end_session(&id, EndReason::Delete)
        .ok_or_else(ApiError::no_session)?;
    // Answer once the outputs are closed, but never hang a client on a stuck session.
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    Ok(StatusCode::OK.into_response())
}

fn options_response(methods: &'static str, accept_post: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(methods));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    if accept_post {
        headers.insert("accept-post", HeaderValue::from_static(SDP));
    }
    response
}

/// `OPTIONS /whip/{stream}`.
pub(super) async fn options_endpoint() -> Response {
    options_response("OPTIONS, GET, POST", true)
}

/// `OPTIONS /whip/{stream}/{session}`.
pub(super) async fn options_session(
    State(app): State<Arc<App>>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    // Never redirected: browsers fail a CORS preflight that is answered 3xx.
    app.session(&stream, &id).ok_or_else(ApiError::no_session)?;
    Ok(options_response("OPTIONS, GET, PATCH, DELETE", false))
}

/// `GET /whip/{stream}` (§4.1: 2xx, no content).
pub(super) async fn get_endpoint() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /whip/{stream}/{session}`.
pub(super) async fn get_session(
    State(app): State<Arc<App>>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if app.session(&stream, &id).is_none() {
        return elsewhere(&app, &stream, &id).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
