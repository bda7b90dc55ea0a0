//! `GET /hls/{stream}/{file}` and `GET /hls/{stream}/{rendition}/{file}` (a simulcast
//! ladder's renditions): playlists (with LL-HLS blocking reload), init sections, parts and
//! segments of the bridge's HLS output. Who may read is `--hls-auth`'s to say (public by
//! default).
//!
//! Playlists and parts come from memory ([`crate::hls::store::StreamState`]); segments, and
//! anything memory no longer holds, from the stream's folder. Only names the HLS output itself
//! makes are served (parsed strictly by [`HlsFile::parse`]), inside a folder named by a valid
//! stream name, so no request reaches outside it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::app::App;
use crate::auth::{AccessRequest, Action};
use crate::cluster::RedirectReason;
use crate::hls::store::{HlsFile, PartAnswer, PlaylistAnswer, StreamState};
use crate::metrics::HlsRequestLabel;
use crate::mux::hls::names::LadderRendition;
use crate::mux::hls::playlist::{DeliveryDirectives, with_query};

/// Segments, parts and init sections never change under their name (the output never reuses
/// one), so caches may keep them.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn not_found() -> ApiError {
    ApiError::new(404, "no such HLS stream or file")
}

fn playlist(bytes: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            // Revalidated on every request: a playlist changes with every part.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response()
}

fn media(kind: HlsFile, bytes: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind.content_type()),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        bytes,
    )
        .into_response()
}

/// What a request is answered with.
enum Served {
    Playlist(Bytes),
    Media(HlsFile, Bytes),
}

impl IntoResponse for Served {
    fn into_response(self) -> Response {
        match self {
            Self::Playlist(bytes) => playlist(bytes),
            Self::Media(kind, bytes) => media(kind, bytes),
        }
    }
}

/// `token=<value>`, the value percent-encoded but for RFC 3986's unreserved characters.
fn token_query(token: &str) -> String {
    let mut query = String::from("token=");
    for byte in token.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            query.push(char::from(byte));
        } else {
            query.push_str(&format!("%{byte:02X}"));
        }
    }
    query
}

/// Asks `poll` until it answers, waking on each change to the stream, for at most `timeout`.
async fn wait_for<T>(
    state: &StreamState,
    timeout: Duration,
    mut poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = state.changes();
    loop {
        if let Some(answer) = poll() {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            // Timed out (or the stream state is gone, which holding it rules out).
            _ => return poll(),
        }
    }
}

/// `GET /hls/{stream}/{file}`, counted by file kind and status.
pub(super) async fn get(
    State(app): State<Arc<App>>,
    Path((stream, file)): Path<(String, String)>,
    request: Parts,
) -> Response {
    let key = super::whip::valid_stream_name(&stream).then(|| stream.clone());
    respond(&app, &stream, key, file, request).await
}

/// `GET /hls/{stream}/{rendition}/{file}`: a rendition of a simulcast publisher's ladder
/// (`v0`, ..., `audio`), served as a stream of its own.
pub(super) async fn get_rendition(
    State(app): State<Arc<App>>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    request: Parts,
) -> Response {
    let key = (super::whip::valid_stream_name(&stream))
        .then(|| LadderRendition::parse(&rendition))
        .flatten()
        .map(|rendition| format!("{stream}/{rendition}"));
    respond(&app, &stream, key, file, request).await
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Whether `stream` may be read (`--hls-auth`); `Ok(Some(token))` when the token came in the
/// query, which the playlists then carry on to every URI.
async fn authorize(app: &App, stream: &str, request: &Parts) -> Result<Option<String>, ApiError> {
    let from_query = Query::<TokenQuery>::try_from_uri(&request.uri)
        .map(|q| q.0.token)
        .unwrap_or_default();
    let headers = &request.headers;
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(crate::auth::bearer);
    let access = AccessRequest {
        action: Action::Read,
        stream,
        token: header.or(from_query.as_deref()),
        ip: super::client_ip(&request.extensions),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        protocol: "hls",
    };
    app.auth
        .check(&access, &app.metrics)
        .await
        .map_err(|denied| ApiError::denied(&denied))?;
    Ok(from_query.filter(|_| header.is_none()))
}

/// Answers for the stream state named `key` (`None`: no such name can exist) of `stream`.
async fn respond(
    app: &App,
    stream: &str,
    key: Option<String>,
    file: String,
    request: Parts,
) -> Response {
    let kind = HlsFile::parse(&file);
    let label = match kind {
        Some(HlsFile::MediaPlaylist | HlsFile::MultivariantPlaylist) => "playlist",
        Some(HlsFile::Init { .. }) => "init",
        Some(HlsFile::Segment { .. }) => "segment",
        Some(HlsFile::Part { .. }) => "part",
        None => "other",
    };
    let response = match key {
        Some(key) => match authorize(app, stream, &request).await {
            Ok(_) if app.hls.get(&key).is_none() => elsewhere(app, stream, &request).await,
            Ok(token) => {
                let query = request.uri.query().map(str::to_owned);
                let answer = serve(app, &key, file, kind, query).await;
                match (answer, token) {
                    (Ok(Served::Playlist(bytes)), Some(token)) => playlist(Bytes::from(
                        with_query(&String::from_utf8_lossy(&bytes), &token_query(&token)),
                    )),
                    (Ok(served), _) => served.into_response(),
                    (Err(err), _) => err.into_response(),
                }
            }
            Err(err) => err.into_response(),
        },
        None => not_found().into_response(),
    };
    app.metrics
        .hls_requests
        .get_or_create(&HlsRequestLabel {
            file: label,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A stream this node has no HLS output of: in a cluster, `307` to the node that owns it (the
/// same path and query there: LL-HLS blocking reload needs the node that makes the playlist),
/// else 404.
async fn elsewhere(app: &App, stream: &str, request: &Parts) -> Response {
    let Some(owner) = super::whip::owner_elsewhere(app, stream).await else {
        return not_found().into_response();
    };
    let path = request
        .uri
        .path_and_query()
        .map_or(request.uri.path(), |p| p.as_str());
    super::whip::redirect(app, &format!("{owner}{path}"), RedirectReason::HlsOwner)
        .unwrap_or_else(IntoResponse::into_response)
}

/// `key`: a valid stream name, or one and a ladder rendition's folder.
async fn serve(
    app: &App,
    key: &str,
    file: String,
    kind: Option<HlsFile>,
    query: Option<String>,
) -> Result<Served, ApiError> {
    let kind = kind.ok_or_else(not_found)?;
    let state = app.hls.get(key).ok_or_else(not_found)?;
    let first_wait = app.hls.settings().first_playlist_wait();
    match kind {
        HlsFile::MediaPlaylist => {
            let directives = DeliveryDirectives::parse(query.as_deref().unwrap_or(""))
                .map_err(|err| ApiError::new(400, err.to_string()))?;
            let timeout = state.blocking_timeout().unwrap_or(first_wait);
            let answer = wait_for(&state, timeout, || {
                match state.media_playlist(&directives) {
                    PlaylistAnswer::Wait => None,
                    other => Some(other),
                }
            })
            .await;
            match answer {
                Some(PlaylistAnswer::Ready(bytes)) => Ok(Served::Playlist(bytes)),
                Some(PlaylistAnswer::BadRequest) => Err(ApiError::new(
                    400,
                    "_HLS_msn/_HLS_part too far beyond the live edge",
                )),
                // RFC 8216bis §6.2.5.2: a blocking request not satisfied in time gets 503.
                _ if directives.msn.is_some() => Err(ApiError::new(
                    503,
                    "the requested segment or part did not arrive in time",
                )
                .retry_after(1)),
                // A stream that never produced media.
                _ => Err(not_found()),
            }
        }
        HlsFile::MultivariantPlaylist => {
            wait_for(&state, first_wait, || state.multivariant_playlist())
                .await
                .map(Served::Playlist)
                .ok_or_else(not_found)
        }
        HlsFile::Part { number, .. } => {
            let timeout = state.blocking_timeout().unwrap_or(first_wait);
            let answer = wait_for(&state, timeout, || match state.part(number) {
                PartAnswer::Wait => None,
                other => Some(other),
            })
            .await;
            match answer {
                Some(PartAnswer::Ready(bytes)) => Ok(Served::Media(kind, bytes)),
                Some(PartAnswer::NotHere) => from_disk(&state, kind, file).await,
                _ => Err(ApiError::new(503, "the part did not arrive in time").retry_after(1)),
            }
        }
        HlsFile::Init { .. } => match state.init(&file) {
            Some(bytes) => Ok(Served::Media(kind, bytes)),
            None => from_disk(&state, kind, file).await,
        },
        HlsFile::Segment { .. } => from_disk(&state, kind, file).await,
    }
}

async fn from_disk(state: &StreamState, kind: HlsFile, name: String) -> Result<Served, ApiError> {
    let path = state.dir().join(&name);
    let read = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(ApiError::internal)?;
    match read {
        Ok(bytes) => Ok(Served::Media(kind, Bytes::from(bytes))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(not_found()),
        Err(err) => Err(ApiError::internal(err)),
    }
}
