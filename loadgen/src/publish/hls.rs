//! `publish`'s LL-HLS client: follows one stream's media playlist at the live edge and reports
//! every frame stamp in what it fetches, timed when the part holding it was fully received.
//!
//! It behaves like a low-latency player (RFC 8216bis §6.3): it polls until the playlist exists,
//! fetches the init section (`EXT-X-MAP`), then every part once, in order, from the first one
//! listed; with `CAN-BLOCK-RELOAD=YES` it asks for the next playlist with `_HLS_msn`/`_HLS_part`
//! (the server answers when that part exists) and meanwhile requests the preload-hinted part,
//! which the server holds until it is complete: that answer is the moment the part became
//! available. Segments listed without parts (plain HLS, or parts already gone) are fetched
//! whole; a playlist that cannot block is reloaded every half target duration. The client ends
//! at `EXT-X-ENDLIST`.
//!
//! Only fMP4 (CMAF) is read: a segment without `EXT-X-MAP` (MPEG-TS) is an error.
//!
//! [`HlsClient::follow_ladder`] follows a simulcast publisher's ladder the same way: it polls
//! the multivariant playlist until it lists the variants expected, then follows every video
//! rendition's media playlist and the audio rendition's, each like the stream's own, each
//! event naming its rendition.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::header::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fmp4::{FirstSample, Fmp4Error, Fragment, Init};
use super::playlist::{MediaPlaylist, MultivariantPlaylist, PlaylistError, Variant};
use crate::media::{FrameStamp, now_us};
use crate::sdp::resolve_location;

/// Largest body read (a playlist, init section, part or segment).
const MAX_BODY: usize = 64 << 20;
/// Poll period while the stream has no playlist yet (`404`), or only a finished one from
/// before this run.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// Pause after a failed request before the next try.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Failures in a row after which the client gives up.
const MAX_FAILURES: u32 = 10;
/// Least time one request may take; blocking requests may wait three target durations.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Least pause between reloads of a playlist that cannot block (or did not).
const MIN_RELOAD: Duration = Duration::from_millis(100);
/// How long a ladder whose variants are all listed may go on listing no audio rendition: the
/// server lists each rendition once it has measured itself, audio too, so the variants may
/// come first; a publisher without audio gets none.
const LADDER_AUDIO_WAIT: Duration = Duration::from_secs(3);

/// What the client saw.
#[derive(Debug)]
pub enum HlsEvent {
    /// A part (or a whole segment) was fetched and read.
    Part {
        /// The stream it belongs to.
        stream: String,
        /// The ladder rendition it belongs to (its URI in the multivariant playlist); `None`
        /// for the stream's own media playlist.
        rendition: Option<String>,
        /// Its URL.
        url: String,
        /// The media sequence number of its segment.
        msn: u64,
        /// It starts its segment: the segment's first part, or the whole segment.
        segment_start: bool,
        /// It was listed in the first playlist the client read: fetched as a backlog, not as
        /// it came out.
        backlog: bool,
        /// Arrival of its body's first byte, µs since the UNIX epoch.
        first_byte_us: u64,
        /// Arrival of its body's last byte.
        received_us: u64,
        /// The frame stamps in its video samples.
        stamps: Vec<FrameStamp>,
        /// Its first video sample, if it has video.
        first_video_sample: Option<FirstSample>,
        /// The picture size the SPS of its init section says.
        video_size: Option<(u32, u32)>,
        /// Audio samples (coded frames) in it.
        audio_samples: u64,
        /// Where its video track starts, µs on the stream's timeline.
        video_start_us: Option<i64>,
        /// Where its video track ends, µs on the stream's timeline.
        video_end_us: Option<i64>,
        /// Where its audio track ends.
        audio_end_us: Option<i64>,
    },
    /// The multivariant playlist listed the ladder; its renditions are followed from now on.
    Ladder {
        /// The stream.
        stream: String,
        /// The video renditions, in the playlist's order.
        variants: Vec<Variant>,
        /// The audio rendition's URI, if the variants have one.
        audio: Option<String>,
    },
    /// The playlist ended (`EXT-X-ENDLIST`) and everything in it was fetched.
    Ended {
        /// The stream.
        stream: String,
        /// The rendition (`None`: the stream's own playlist).
        rendition: Option<String>,
    },
    /// A request or a body failed; the client goes on (until too many fail in a row).
    Error {
        /// The stream.
        stream: String,
        /// The rendition (`None`: the stream's own playlist, or its multivariant playlist).
        rendition: Option<String>,
        /// What happened.
        error: HlsError,
    },
}

/// What a media playlist carries, and so which track its init section must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// Video and audio muxed (the stream's own `index.m3u8`): video is measured.
    Muxed,
    /// A video-only rendition.
    Video,
    /// An audio-only rendition.
    Audio,
}

/// Why a request or body failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HlsError {
    /// A URI in the playlist cannot be resolved against the playlist's URL.
    #[error("{base}: cannot resolve {uri:?}")]
    Url {
        /// The playlist URL.
        base: String,
        /// The URI.
        uri: String,
    },
    /// The request could not be built.
    #[error("GET {url}: {source}")]
    Request {
        /// Target.
        url: String,
        /// Cause.
        source: hyper::http::Error,
    },
    /// No answer (connect, I/O).
    #[error("GET {url}: {source}")]
    Http {
        /// Target.
        url: String,
        /// Cause.
        source: hyper_util::client::legacy::Error,
    },
    /// The body broke off.
    #[error("GET {url}: reading body: {source}")]
    Body {
        /// Target.
        url: String,
        /// Cause.
        source: hyper::Error,
    },
    /// No complete answer in time.
    #[error("GET {url}: no answer within {after:?}")]
    Timeout {
        /// Target.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// A status other than 200.
    #[error("GET {url}: status {status}")]
    Status {
        /// Target.
        url: String,
        /// The status.
        status: u16,
    },
    /// A body larger than the client reads.
    #[error("GET {url}: body over {limit} bytes")]
    TooLarge {
        /// Target.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The playlist cannot be read.
    #[error("{url}: {source}")]
    Playlist {
        /// The playlist URL.
        url: String,
        /// Cause.
        source: PlaylistError,
    },
    /// An init section, part or segment cannot be read.
    #[error("{url}: {source}")]
    Fmp4 {
        /// Its URL.
        url: String,
        /// Cause.
        source: Fmp4Error,
    },
    /// A segment has no `EXT-X-MAP`: not fMP4 (MPEG-TS is not read).
    #[error("{url}: no EXT-X-MAP: only fMP4 (CMAF) HLS is measured")]
    NoInit {
        /// The segment's URL.
        url: String,
    },
    /// Too many requests failed in a row.
    #[error("{stream}: giving up after {failures} failures in a row; the last: {last}")]
    GaveUp {
        /// The stream.
        stream: String,
        /// How many.
        failures: u32,
        /// The last one.
        last: String,
    },
}

impl HlsError {
    /// Whether trying the same request again may work.
    fn transient(&self) -> bool {
        matches!(
            self,
            HlsError::Http { .. } | HlsError::Body { .. } | HlsError::Timeout { .. }
        )
    }
}

/// A body, with when its bytes arrived.
#[derive(Debug, Clone)]
struct Fetched {
    status: u16,
    bytes: Bytes,
    /// First byte (the answer's arrival for an empty body), µs since the UNIX epoch.
    first_byte_us: u64,
    /// Last byte.
    done_us: u64,
}

/// An HTTP/1.1 client for HLS. Clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HlsClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    /// `Authorization` sent with every request, if any.
    authorization: Option<HeaderValue>,
}

impl Default for HlsClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HlsClient {
    /// A client with its own pool.
    pub fn new() -> Self {
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            authorization: None,
        }
    }

    /// A client with its own pool that sends `token` as a bearer token, if given.
    pub fn with_token(token: Option<&str>) -> Result<Self, String> {
        let authorization = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "--hls-token is not a valid header value".to_owned())?;
        Ok(Self {
            authorization,
            ..Self::new()
        })
    }

    /// GETs a playlist and reads it with `parse` (a status other than 200 is an error).
    async fn get_playlist<T>(
        &self,
        url: &str,
        timeout: Duration,
        parse: fn(&[u8]) -> Result<T, PlaylistError>,
    ) -> Result<T, HlsError> {
        let fetched = self.get(url, timeout).await?;
        if fetched.status != 200 {
            return Err(HlsError::Status {
                url: url.to_owned(),
                status: fetched.status,
            });
        }
        parse(&fetched.bytes).map_err(|source| HlsError::Playlist {
            url: url.to_owned(),
            source,
        })
    }

    /// GETs `url` and reads the whole body, timing its first and last bytes.
    async fn get(&self, url: &str, timeout: Duration) -> Result<Fetched, HlsError> {
        let mut request = Request::get(url);
        if let Some(value) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, value.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|source| HlsError::Request {
                url: url.to_owned(),
                source,
            })?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|source| HlsError::Http {
                    url: url.to_owned(),
                    source,
                })?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = BytesMut::new();
            let mut first_byte_us = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|source| HlsError::Body {
                    url: url.to_owned(),
                    source,
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if !data.is_empty() {
                    first_byte_us.get_or_insert_with(now_us);
                }
                if bytes.len() + data.len() > MAX_BODY {
                    return Err(HlsError::TooLarge {
                        url: url.to_owned(),
                        limit: MAX_BODY,
                    });
                }
                bytes.extend_from_slice(&data);
            }
            let done_us = now_us();
            Ok(Fetched {
                status,
                bytes: bytes.freeze(),
                first_byte_us: first_byte_us.unwrap_or(done_us),
                done_us,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HlsError::Timeout {
                url: url.to_owned(),
                after: timeout,
            })?
    }

    /// Follows the media playlist at `url` for `stream` until it ends, reporting to `events`.
    ///
    /// Frames stamped before `started_us` (µs since the UNIX epoch) belong to an earlier
    /// presentation of the same stream name: a playlist that ends with none of this run's
    /// frames is not taken as this run's end, and is polled again. So is a playlist that
    /// answers `404` (the stream has not started): without end, so bound the call with a
    /// timeout. Returns an error only when ten requests failed in a row (each
    /// failure is also reported as an event).
    pub async fn follow(
        &self,
        url: String,
        stream: String,
        started_us: u64,
        events: mpsc::UnboundedSender<HlsEvent>,
    ) -> Result<(), HlsError> {
        self.follow_as(url, stream, None, Carries::Muxed, started_us, events)
            .await
    }

    /// [`follow`](Self::follow) for a playlist that carries `carries`, its events naming
    /// `rendition`.
    ///
    /// An audio-only playlist has no stamps to tell this run's media from an earlier one's, so
    /// any part fetched counts as this run's.
    pub async fn follow_as(
        &self,
        url: String,
        stream: String,
        rendition: Option<String>,
        carries: Carries,
        started_us: u64,
        events: mpsc::UnboundedSender<HlsEvent>,
    ) -> Result<(), HlsError> {
        let mut follower = Follower {
            client: self.clone(),
            url,
            stream,
            rendition,
            carries,
            started_us,
            events,
            init: None,
            backlog: true,
            consumed: None,
            fetched: HashSet::new(),
            current_frames: 0,
            hint: None,
            timeout: MIN_REQUEST_TIMEOUT,
            failures: 0,
        };
        follower.run().await
    }

    /// Follows a simulcast publisher's ladder: polls the multivariant playlist at `url` until
    /// it lists `layers` variants (it lists each rendition once that rendition has a segment),
    /// reports them ([`HlsEvent::Ladder`]), then follows every variant's media playlist and
    /// the audio rendition's until they all end. A rendition whose client gives up is reported
    /// as an error and the others go on. Returns an error when the multivariant playlist
    /// failed ten times in a row; it never lists fewer variants for good without failing, so
    /// bound the call with a timeout (or abort it) as [`follow`](Self::follow).
    pub async fn follow_ladder(
        &self,
        url: String,
        stream: String,
        layers: usize,
        started_us: u64,
        events: mpsc::UnboundedSender<HlsEvent>,
    ) -> Result<(), HlsError> {
        let ladder = self.ladder(&url, &stream, layers).await?;
        let resolve = |uri: &str| {
            resolve_location(&url, uri).ok_or_else(|| HlsError::Url {
                base: url.clone(),
                uri: uri.to_owned(),
            })
        };
        let audio = ladder
            .variants
            .first()
            .and_then(|v| ladder.audio_of(v))
            .map(|a| a.uri.clone());
        let mut playlists = Vec::new();
        for v in &ladder.variants {
            playlists.push((resolve(&v.uri)?, v.uri.clone(), Carries::Video));
        }
        if let Some(uri) = &audio {
            playlists.push((resolve(uri)?, uri.clone(), Carries::Audio));
        }
        let _ = events.send(HlsEvent::Ladder {
            stream: stream.clone(),
            variants: ladder.variants,
            audio,
        });
        // Dropped with this future (the run aborts it at its end), which aborts them all.
        let mut followers = tokio::task::JoinSet::new();
        for (playlist, uri, carries) in playlists {
            let (client, events, stream) = (self.clone(), events.clone(), stream.clone());
            followers.spawn(async move {
                let rendition = Some(uri);
                let followed = client.follow_as(
                    playlist,
                    stream.clone(),
                    rendition.clone(),
                    carries,
                    started_us,
                    events.clone(),
                );
                if let Err(error) = followed.await {
                    let _ = events.send(HlsEvent::Error {
                        stream,
                        rendition,
                        error,
                    });
                }
            });
        }
        while followers.join_next().await.is_some() {}
        Ok(())
    }

    /// The multivariant playlist at `url` once it lists `layers` variants and their audio
    /// rendition (or [`LADDER_AUDIO_WAIT`] after the variants, without).
    async fn ladder(
        &self,
        url: &str,
        stream: &str,
        layers: usize,
    ) -> Result<MultivariantPlaylist, HlsError> {
        let mut failures = 0;
        let mut variants_listed = None;
        loop {
            let got = self
                .get_playlist(url, MIN_REQUEST_TIMEOUT, MultivariantPlaylist::parse)
                .await;
            match got {
                Ok(ladder) if ladder.variants.len() >= layers => {
                    let with_audio = ladder
                        .variants
                        .first()
                        .is_some_and(|v| ladder.audio_of(v).is_some());
                    let since = *variants_listed.get_or_insert_with(tokio::time::Instant::now);
                    if with_audio || since.elapsed() >= LADDER_AUDIO_WAIT {
                        return Ok(ladder);
                    }
                }
                // Not yet every rendition (or not yet the stream): wait.
                Ok(_) | Err(HlsError::Status { status: 404, .. }) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(HlsError::GaveUp {
                            stream: stream.to_owned(),
                            failures,
                            last: e.to_string(),
                        });
                    }
                    tracing::debug!(stream, "HLS: {e}");
                }
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// The multivariant playlist beside the media playlist at `url`: its last path segment
/// replaced by `main.m3u8` (the query, if any, kept).
pub fn multivariant_url(url: &str) -> String {
    let (path, query) = match url.find(['?', '#']) {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let dir = path.rfind('/').map_or("", |at| &path[..=at]);
    format!("{dir}main.m3u8{query}")
}

/// Position of what has been consumed: media sequence number and part index, [`WHOLE`] for a
/// complete segment.
type Consumed = (u64, u32);
/// The part index of a whole segment: after all of its parts.
const WHOLE: u32 = u32::MAX;

/// The preload-hinted part being fetched ahead.
#[derive(Debug)]
struct Hint {
    url: String,
    task: JoinHandle<Result<Fetched, HlsError>>,
}

/// One stream's client state.
#[derive(Debug)]
struct Follower {
    client: HlsClient,
    url: String,
    stream: String,
    rendition: Option<String>,
    carries: Carries,
    started_us: u64,
    events: mpsc::UnboundedSender<HlsEvent>,
    /// The init section in use: its URL and what it says.
    init: Option<(String, Init)>,
    /// What is being consumed was listed in the first playlist read.
    backlog: bool,
    consumed: Option<Consumed>,
    /// URLs of the parts and segments fetched, so none is fetched twice.
    fetched: HashSet<String>,
    /// Frames stamped during this run seen so far (audio-only: parts with audio).
    current_frames: u64,
    hint: Option<Hint>,
    timeout: Duration,
    failures: u32,
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(hint) = self.hint.take() {
            hint.task.abort();
        }
    }
}

impl Follower {
    async fn run(&mut self) -> Result<(), HlsError> {
        let mut playlist = self.first_playlist().await?;
        loop {
            self.consume(&playlist).await?;
            self.backlog = false;
            if playlist.end_list {
                if let Some(hint) = self.hint.take() {
                    hint.task.abort();
                }
                if self.current_frames > 0 {
                    let _ = self.events.send(HlsEvent::Ended {
                        stream: self.stream.clone(),
                        rendition: self.rendition.clone(),
                    });
                    return Ok(());
                }
                // An earlier presentation of this stream name: wait for this run's.
                tokio::time::sleep(WAIT_POLL).await;
                playlist = self.first_playlist().await?;
                continue;
            }
            let waited_for = playlist.next_position();
            playlist = self.next_playlist(&playlist).await?;
            // A server that says it blocks but answers at once with nothing new must not make
            // this a busy loop.
            if playlist.can_block_reload
                && !playlist.end_list
                && playlist.next_position() == waited_for
            {
                tokio::time::sleep(MIN_RELOAD).await;
            }
        }
    }

    /// Reports a failure; gives up after too many in a row.
    async fn failed(&mut self, error: HlsError) -> Result<(), HlsError> {
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            return Err(HlsError::GaveUp {
                stream: self.stream.clone(),
                failures: self.failures,
                last: error.to_string(),
            });
        }
        tracing::debug!(stream = self.stream, "HLS: {error}");
        let _ = self.events.send(HlsEvent::Error {
            stream: self.stream.clone(),
            rendition: self.rendition.clone(),
            error,
        });
        tokio::time::sleep(RETRY_DELAY).await;
        Ok(())
    }

    /// GETs a playlist and reads it (a status other than 200 is an error).
    async fn playlist(&self, url: &str) -> Result<MediaPlaylist, HlsError> {
        self.client
            .get_playlist(url, self.timeout, MediaPlaylist::parse)
            .await
    }

    /// The playlist once it exists: `404` means the stream has not started yet.
    async fn first_playlist(&mut self) -> Result<MediaPlaylist, HlsError> {
        let url = self.url.clone();
        self.playlist_retrying(&url, true).await
    }

    /// `url`'s playlist, retried while failures are tolerated (and while it is `404`, with
    /// `wait_for_start`).
    async fn playlist_retrying(
        &mut self,
        url: &str,
        wait_for_start: bool,
    ) -> Result<MediaPlaylist, HlsError> {
        loop {
            match self.playlist(url).await {
                Ok(p) => {
                    self.failures = 0;
                    self.adopt_timeout(&p);
                    return Ok(p);
                }
                Err(HlsError::Status { status: 404, .. }) if wait_for_start => {
                    tokio::time::sleep(WAIT_POLL).await;
                }
                Err(e) => self.failed(e).await?,
            }
        }
    }

    /// Requests may take as long as the server may block them (three target durations).
    fn adopt_timeout(&mut self, playlist: &MediaPlaylist) {
        self.timeout = MIN_REQUEST_TIMEOUT.max(playlist.target_duration * 4);
    }

    /// The next playlist: a blocking reload for the next part (fetching the hinted part
    /// meanwhile), or a plain reload after half a target duration.
    async fn next_playlist(&mut self, current: &MediaPlaylist) -> Result<MediaPlaylist, HlsError> {
        let url = if current.can_block_reload {
            self.start_hint(current);
            let sep = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}{}", self.url, current.next_position().query())
        } else {
            tokio::time::sleep((current.target_duration / 2).max(MIN_RELOAD)).await;
            self.url.clone()
        };
        self.playlist_retrying(&url, false).await
    }

    fn resolve(&self, uri: &str) -> Result<String, HlsError> {
        resolve_location(&self.url, uri).ok_or_else(|| HlsError::Url {
            base: self.url.clone(),
            uri: uri.to_owned(),
        })
    }

    /// Starts fetching the playlist's preload-hinted part, unless it is being fetched already.
    fn start_hint(&mut self, playlist: &MediaPlaylist) {
        let url = playlist
            .preload_hint
            .as_ref()
            // A byte range of a larger resource would need a Range request: not worth it here.
            .filter(|h| h.byterange_start.is_none())
            .and_then(|h| self.resolve(&h.uri).ok())
            .filter(|url| !self.fetched.contains(url));
        if let Some(hint) = &self.hint {
            if Some(&hint.url) == url.as_ref() {
                return;
            }
            hint.task.abort();
        }
        self.hint = url.map(|url| {
            let (client, timeout, target) = (self.client.clone(), self.timeout, url.clone());
            Hint {
                url,
                task: tokio::spawn(async move { client.get(&target, timeout).await }),
            }
        });
    }

    /// Fetches everything in `playlist` not consumed yet, in order.
    async fn consume(&mut self, playlist: &MediaPlaylist) -> Result<(), HlsError> {
        // A playlist that restarted its numbering (a new presentation): start over.
        if let (Some((msn, _)), Some(last)) = (self.consumed, playlist.segments.last())
            && last.msn < msn
        {
            self.consumed = None;
        }
        for segment in &playlist.segments {
            let whole = (segment.msn, WHOLE);
            if self.consumed >= Some(whole) {
                continue;
            }
            let map = segment.map.as_deref();
            if segment.parts.is_empty() {
                let Some(uri) = &segment.uri else { continue };
                self.media(uri, map, (segment.msn, true)).await?;
                self.consumed = Some(whole);
                continue;
            }
            for (index, part) in segment.parts.iter().enumerate() {
                let at = (segment.msn, u32::try_from(index).unwrap_or(WHOLE - 1));
                if self.consumed >= Some(at) {
                    continue;
                }
                self.media(&part.uri, map, (segment.msn, index == 0))
                    .await?;
                self.consumed = Some(at);
            }
            if segment.uri.is_some() {
                self.consumed = Some(whole);
            }
        }
        Ok(())
    }

    /// Fetches and reads one part or segment (and its init section first if needed); `at` is
    /// its segment's sequence number and whether it starts that segment. A failure is reported
    /// and skipped: the frames it held count as lost.
    async fn media(
        &mut self,
        uri: &str,
        map: Option<&str>,
        (msn, segment_start): (u64, bool),
    ) -> Result<(), HlsError> {
        let url = self.resolve(uri)?;
        if self.fetched.contains(&url) {
            return Ok(());
        }
        let Some(map) = map else {
            return self.failed(HlsError::NoInit { url }).await;
        };
        if let Err(e) = self.ensure_init(map).await {
            return self.failed(e).await;
        }
        let fetched = match self.fetch_media(&url).await {
            Ok(f) => f,
            Err(e) => return self.failed(e).await,
        };
        self.fetched.insert(url.clone());
        let Some((_, init)) = &self.init else {
            return Ok(());
        };
        let fragment = match Fragment::parse(init, &fetched.bytes) {
            Ok(f) => f,
            Err(source) => return self.failed(HlsError::Fmp4 { url, source }).await,
        };
        self.failures = 0;
        self.current_frames += match self.carries {
            Carries::Audio => u64::from(fragment.audio_samples > 0),
            Carries::Muxed | Carries::Video => fragment
                .stamps
                .iter()
                .filter(|s| s.sent_us >= self.started_us)
                .count() as u64,
        };
        let _ = self.events.send(HlsEvent::Part {
            stream: self.stream.clone(),
            rendition: self.rendition.clone(),
            url,
            msn,
            segment_start,
            backlog: self.backlog,
            first_byte_us: fetched.first_byte_us,
            received_us: fetched.done_us,
            stamps: fragment.stamps,
            first_video_sample: fragment.first_video_sample,
            video_size: init.video.and_then(|v| v.size),
            audio_samples: fragment.audio_samples,
            video_start_us: fragment.video.map(|s| s.start_us()),
            video_end_us: fragment.video.map(|s| s.end_us()),
            audio_end_us: fragment.audio.map(|s| s.end_us()),
        });
        Ok(())
    }

    /// A part or segment: the hinted fetch if it was this one, else a new GET (tried twice).
    async fn fetch_media(&mut self, url: &str) -> Result<Fetched, HlsError> {
        if self.hint.as_ref().is_some_and(|h| h.url == url)
            && let Some(hint) = self.hint.take()
        {
            // The server lists the part now, so it answers the held request at once.
            match tokio::time::timeout(self.timeout, hint.task).await {
                Ok(Ok(Ok(f))) if f.status == 200 => return Ok(f),
                _ => tracing::debug!(url, "HLS: the hinted fetch failed; fetching again"),
            }
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.client.get(url, self.timeout).await {
                Ok(f) if f.status == 200 => return Ok(f),
                Ok(f) => {
                    return Err(HlsError::Status {
                        url: url.to_owned(),
                        status: f.status,
                    });
                }
                Err(e) if e.transient() && tries < 2 => {
                    tracing::debug!(url, "HLS: {e}; trying again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Loads the init section at `map` unless it is the one in use.
    async fn ensure_init(&mut self, map: &str) -> Result<(), HlsError> {
        let url = self.resolve(map)?;
        if self.init.as_ref().is_some_and(|(u, _)| *u == url) {
            return Ok(());
        }
        let fetched = self.fetch_media(&url).await?;
        let checked = Init::parse(&fetched.bytes).and_then(|init| {
            match self.carries {
                Carries::Muxed | Carries::Video => init.require_video().map(drop)?,
                Carries::Audio => init.require_audio().map(drop)?,
            }
            Ok(init)
        });
        let init = checked.map_err(|source| HlsError::Fmp4 {
            url: url.clone(),
            source,
        })?;
        self.init = Some((url, init));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multivariant_playlist_is_beside_the_media_playlist() {
        assert_eq!(
            multivariant_url("http://h:8080/hls/s0/index.m3u8"),
            "http://h:8080/hls/s0/main.m3u8"
        );
        assert_eq!(
            multivariant_url("http://h/hls/s0/index.m3u8?token=x/y"),
            "http://h/hls/s0/main.m3u8?token=x/y"
        );
    }
}
