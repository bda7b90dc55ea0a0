//! The bridge's shared state and the operations HTTP handlers call: create, patch, end sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::config::{AudioMode, ConfigError, HlsAudio, OnConflict, Settings};
use crate::hooks::{Event, Hooks, SessionHooks};
use crate::ids::random_hex;
use crate::media::ingest::Ingest;
use crate::media::simulcast::MAX_LAYERS;
use crate::metrics::{Metrics, TargetLabel};
use crate::mux::hls::names::LadderRendition;
use crate::ratelimit::RateLimiter;
use crate::rtc::peer::{self, Peer};
use crate::rtc::udp::UdpMux;
use crate::session::{
    self, Command, Outputs, PatchError, PatchReply, SessionEnv, SessionHandle, SessionInit,
    SessionSettings,
};
use crate::sink::aac::{AacFormat, AacStage};
use crate::sink::hls::{HlsStreams, LadderRole};
use crate::sink::queue::OutputQueue;
use crate::sink::rtmp::RtmpOutput;
use crate::sink::rtmp_conn::tls_config;
use crate::sink::s3::ObjectSink;
use crate::whip::liveness::{EndReason, SessionState};
use crate::whip::offer::{Offer, OfferError};
use crate::whip::resource::{ETag, WhipResource};
use crate::whip::sdpfrag::SdpFrag;
use rtc::peer_connection::certificate::RTCCertificate;

/// Why a POST failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The offer is refused (400/422).
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// Too many POSTs from this address (429).
    #[error("too many requests from this address")]
    RateLimited(Duration),
    /// `max_sessions` reached (503).
    #[error("the bridge is at its session limit")]
    Full,
    /// The stream is live and takeover is off (409).
    #[error("stream {0:?} is already being published")]
    Conflict(String),
    /// The WebRTC stack refused to take or answer the offer (422): what the offer checks do
    /// not model.
    #[error("the offer cannot be negotiated: {0}")]
    Unanswerable(peer::PeerError),
    /// The peer connection could not be set up for a reason of the bridge's own (500).
    #[error("could not set up the peer connection: {0}")]
    Peer(peer::PeerError),
}

impl From<peer::PeerError> for CreateError {
    fn from(err: peer::PeerError) -> Self {
        if err.is_offer_fault() {
            Self::Unanswerable(err)
        } else {
            Self::Peer(err)
        }
    }
}

/// A created session, for the 201.
#[derive(Debug)]
pub struct Created {
    /// Session id (last path segment of Location).
    pub id: String,
    /// Entity tag (header value).
    pub etag: String,
    /// SDP answer.
    pub answer: String,
}

/// The TLS client settings for rtmps:// targets: Mozilla's roots plus the configured CA file.
fn rtmp_tls(
    ca: Option<&std::path::Path>,
) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, ConfigError> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let extra = match ca {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ConfigError::Invalid(format!("--rtmp-ca {}: {e}", path.display())))?,
        None => Vec::new(),
    };
    tls_config(extra).map_err(|e| ConfigError::Invalid(format!("RTMP TLS: {e}")))
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, SessionHandle>,
    by_stream: HashMap<String, String>,
}

/// Shared state of a running bridge.
#[derive(Debug)]
pub struct App {
    /// The configuration it runs with, parsed.
    pub settings: Settings,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The shared UDP socket.
    pub udp: Arc<UdpMux>,
    /// Every stream's HLS output state (written by sessions, read by the /hls/ handlers).
    pub hls: HlsStreams,
    /// Who may publish and read.
    pub auth: crate::auth::Auth,
    /// The event webhooks (a no-op without `--hook-url`).
    pub hooks: Hooks,
    /// The cluster this node is part of (`--cluster-redis`), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    sessions: Mutex<Registry>,
    rate: Mutex<RateLimiter>,
    /// Slots for session set-ups running at once (`--setup-concurrency`).
    setups: Arc<tokio::sync::Semaphore>,
    /// POSTs waiting for a slot, and how long a set-up takes (microseconds, a moving average):
    /// what a new POST would wait.
    setups_waiting: std::sync::atomic::AtomicUsize,
    setup_micros: AtomicU64,
    /// The `Retry-After` of a POST refused a set-up slot, paced by refusals per set-up.
    retry_pacer: Mutex<bridge_proto::whip::admission::RetryPacer>,
    /// New sessions are refused: the bridge is draining (see [`App::start_draining`]).
    draining: std::sync::atomic::AtomicBool,
    /// How late the event loop ran at its last measure, in microseconds.
    loop_lag_micros: AtomicU64,
    rtmp_tls: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The DTLS certificate every peer presents: one per process, made at startup.
    dtls_certificate: RTCCertificate,
    /// The address datagrams are told to have arrived on: the first advertised host candidate.
    /// rtc matches it against its local candidates, so with `--advertise-ip` (NAT 1:1, a bind
    /// on a wildcard) the socket's own address would match none.
    local_candidate: std::net::SocketAddr,
    /// What every session reads of the configuration, taken from it once.
    session_settings: SessionSettings,
    next_route: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations that leave the map consistent, so a
    // poisoned lock is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    /// Builds the state around an already bound UDP mux.
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        udp: Arc<UdpMux>,
    ) -> Result<Arc<Self>, ConfigError> {
        // reqwest (S3) and redis (rediss://) build their TLS on the process's default provider,
        // and are built without one of their own (reqwest's is aws-lc-rs, a C build): the one
        // the bridge links. An error only says one is installed already.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        // One pool for every request the bridge makes of the platform (auth hook, JWKS, webhooks).
        let client = crate::outbound::HttpClient::default();
        let rtmp_tls = rtmp_tls(settings.rtmp.ca.as_deref())?;
        let dtls_certificate = peer::dtls_certificate()
            .map_err(|e| ConfigError::Invalid(format!("DTLS certificate: {e}")))?;
        let local_candidate = std::net::SocketAddr::new(
            settings
                .udp
                .candidate_ips
                .first()
                .copied()
                .unwrap_or(udp.local_addr().ip()),
            udp.local_addr().port(),
        );
        let cluster = settings
            .cluster
            .clone()
            .map(crate::cluster::Cluster::new)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("--cluster-redis: {e}")))?
            .map(Arc::new);
        // Clustered, the node set says whose a stream's storage folder is.
        let owners = cluster
            .clone()
            .map(|cluster| cluster as Arc<dyn crate::sink::s3::Owners>);
        let uploader = match &settings.hls_s3 {
            Some(s3) => ObjectSink::s3(s3, metrics.hls_s3(), owners)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            None => ObjectSink::default(),
        };
        let session_settings = SessionSettings {
            liveness: settings.liveness,
            rtp_dump: settings.rtp_dump.clone(),
        };
        Ok(Arc::new(Self {
            local_candidate,
            session_settings,
            rtmp_tls,
            dtls_certificate,
            hls: HlsStreams::new(settings.hls.clone(), metrics.hls()).with_uploader(uploader),
            auth: crate::auth::Auth::new(&settings.auth, settings.whip.token.clone(), &client),
            hooks: Hooks::new(
                &settings.hooks,
                settings.http.to_string(),
                metrics.hooks(),
                &client,
            ),
            cluster,
            rate: Mutex::new(RateLimiter::new(settings.whip.post_rate_per_ip)),
            setups: Arc::new(tokio::sync::Semaphore::new(settings.whip.setup_concurrency)),
            setups_waiting: std::sync::atomic::AtomicUsize::new(0),
            setup_micros: AtomicU64::new(0),
            retry_pacer: Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            loop_lag_micros: AtomicU64::new(0),
            settings,
            metrics,
            udp,
            sessions: Mutex::default(),
            next_route: AtomicU64::new(1),
        }))
    }

    /// Stops admitting sessions (POST answers 503 with Retry-After, `/readyz` 503) while the
    /// live ones go on: the first step of a graceful shutdown, or of moving load off this node.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(
                sessions = self.session_count(),
                "draining: new sessions refused"
            );
        }
    }

    /// The bridge is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// How late the event loop runs (see [`App::watch_loop_lag`]).
    pub fn set_loop_lag(&self, lag: Duration) {
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.loop_lag_micros.store(micros, Ordering::Relaxed);
        self.metrics.loop_lag.set(lag.as_secs_f64());
    }

    /// The event loop runs later than `--max-loop-lag-ms`: the process is saturated.
    pub fn is_saturated(&self) -> bool {
        self.settings.whip.max_loop_lag.is_some_and(|max| {
            Duration::from_micros(self.loop_lag_micros.load(Ordering::Relaxed)) > max
        })
    }

    /// Measures, until the bridge stops, how late a 50 ms timer fires on the event loop: the
    /// queueing every task of the process sees, whatever keeps the loop busy. Smoothed (a
    /// quarter of each new measure), so that one late tick does not refuse sessions but a loop
    /// that stays late does, within a few ticks.
    pub async fn watch_loop_lag(self: Arc<Self>) {
        const TICK: Duration = Duration::from_millis(50);
        let mut smoothed = Duration::ZERO;
        loop {
            let asked = tokio::time::Instant::now();
            tokio::time::sleep(TICK).await;
            let late = asked.elapsed().saturating_sub(TICK);
            smoothed = smoothed - smoothed / 4 + late / 4;
            self.set_loop_lag(smoothed);
        }
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).by_id.len()
    }

    /// The streams published here.
    pub fn stream_names(&self) -> Vec<String> {
        lock(&self.sessions).by_stream.keys().cloned().collect()
    }

    /// Ends the session publishing `stream` here, if any (another node owns the stream now).
    pub fn end_stream(&self, stream: &str, reason: EndReason) {
        let id = lock(&self.sessions).by_stream.get(stream).cloned();
        if let Some(id) = id {
            self.end_session(&id, reason);
        }
    }

    /// The session with this id on this stream, if live.
    pub fn session(&self, stream: &str, id: &str) -> Option<SessionHandle> {
        lock(&self.sessions)
            .by_id
            .get(id)
            .filter(|h| h.stream == stream)
            .cloned()
    }

    /// A slot to set a session up in, if one comes free within `--setup-queue-ms`; else
    /// (counted) the `Retry-After` seconds to refuse the POST with at once, rather than queue it
    /// behind more work than it can wait for (see `RetryPacer`).
    ///
    /// A POST that would wait longer than that, by the set-ups queued ahead of it and how long
    /// they take, is refused without waiting: under overload refusals come at once, and the
    /// client's retry is not delayed by a wait that could not end in a slot.
    pub async fn admit_setup(&self) -> Result<tokio::sync::OwnedSemaphorePermit, u64> {
        if let Ok(permit) = self.setups.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let budget = self.settings.whip.setup_queue;
        let ahead = self.setups_waiting.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let slots = self.settings.whip.setup_concurrency.max(1) as u64;
        let expected = Duration::from_micros(
            self.setup_micros
                .load(Ordering::Relaxed)
                .saturating_mul(ahead)
                / slots,
        );
        let slot = self.setups.clone().acquire_owned();
        let admitted = if expected > budget {
            None
        } else {
            // Elapsed, or (never: the semaphore is not closed) closed: refused.
            tokio::time::timeout(budget, slot)
                .await
                .ok()
                .and_then(Result::ok)
        };
        self.setups_waiting.fetch_sub(1, Ordering::Relaxed);
        admitted.ok_or_else(|| {
            self.metrics.setups_refused.inc();
            lock(&self.retry_pacer).refused(Instant::now())
        })
    }

    /// A set-up held its slot for `took`: the moving average [`Self::admit_setup`] estimates
    /// waits by.
    pub fn setup_took(&self, took: Duration) {
        lock(&self.retry_pacer).set_up(Instant::now());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // One eighth of each new sample; racing updates lose one sample, which an estimate
        // can spare.
        let old = self.setup_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            micros
        } else {
            old - old / 8 + micros / 8
        };
        self.setup_micros.store(new, Ordering::Relaxed);
    }

    /// Handles a POST: checks, builds the peer, starts the session actor.
    pub fn create_session(
        self: &Arc<Self>,
        stream: &str,
        client: IpAddr,
        body: &[u8],
    ) -> Result<Created, CreateError> {
        let now = Instant::now();
        lock(&self.rate)
            .check(client, now)
            .map_err(CreateError::RateLimited)?;
        let offer = Offer::parse(body)?;
        let replaced = {
            let registry = lock(&self.sessions);
            if registry.by_id.len() >= self.settings.whip.max_sessions {
                return Err(CreateError::Full);
            }
            match registry.by_stream.get(stream) {
                Some(_) if self.settings.whip.on_conflict == OnConflict::Refuse => {
                    return Err(CreateError::Conflict(stream.to_owned()));
                }
                other => other.cloned(),
            }
        };
        let video_fmtp = offer.video_fmtp.clone();
        let video_layers = offer.video_layers;
        let has_audio = offer.audio_mid.is_some();
        let has_video = offer.video_mid.is_some();
        let (peer, answer) = Peer::answer(
            offer,
            &self.settings.udp.candidate_ips,
            self.udp.local_addr(),
            self.local_candidate,
            &self.dtls_certificate,
            now,
        )?;
        let id = random_hex();
        let etag = ETag::new(random_hex());
        let header = etag.header_value();
        let route = self.next_route.fetch_add(1, Ordering::Relaxed);
        let datagrams = self.udp.register(route, &answer.credentials.ufrag);
        let (tx, commands) = mpsc::channel(16);
        let resource = WhipResource::new(
            etag,
            self.settings.whip.etag,
            peer.offer().credentials.clone(),
            &peer.offer().candidates,
        );
        {
            let mut registry = lock(&self.sessions);
            registry.by_id.insert(
                id.clone(),
                SessionHandle {
                    stream: stream.to_owned(),
                    tx,
                },
            );
            registry.by_stream.insert(stream.to_owned(), id.clone());
        }
        let hooks = self.hooks.for_session(stream, &id);
        // Before the outputs start, whose own events follow it.
        hooks.emit(Event::PublishStart);
        // Before the old session ends: its HLS output must see it has a successor, and hand
        // the playlist on rather than end it.
        // The bridge's clock at the session timeline's 0 (`now`), which dates HLS.
        let timeline_origin = std::time::SystemTime::now()
            .checked_sub(now.elapsed())
            .unwrap_or(std::time::UNIX_EPOCH);
        let outputs = self.outputs_for(
            stream,
            &hooks,
            has_audio,
            has_video,
            video_layers,
            timeline_origin,
        );
        if let Some(old) = replaced {
            tracing::info!(stream, old_session = %old, new_session = %id, "stream taken over");
            self.end_session(&old, EndReason::Takeover);
        }
        let metrics = self.metrics.session();
        metrics.state(None, Some(SessionState::Connecting));
        let init = Box::new(SessionInit {
            env: SessionEnv {
                udp: self.udp.clone(),
                metrics,
                settings: self.session_settings.clone(),
                hooks,
            },
            id: id.clone(),
            route,
            answered: now,
            peer,
            resource,
            commands,
            datagrams,
            ingest: {
                let ingest = Ingest::new(now, self.settings.reorder, video_fmtp)
                    .with_video_layers(video_layers);
                if outputs.layer_queues.is_empty() {
                    ingest
                } else {
                    ingest.with_layer_output()
                }
            },
            outputs,
        });
        let app = Arc::clone(self);
        let span = tracing::info_span!("session", %stream, session = %id);
        tokio::spawn(
            async move {
                let id = init.id.clone();
                session::run(init).await;
                // Last, so that a session gone from the registry has released everything.
                app.forget_session(&id);
            }
            .instrument(span),
        );
        Ok(Created {
            id,
            etag: header,
            answer: answer.sdp,
        })
    }

    /// Starts the outputs a new session on `stream` feeds: one task per RTMP target and one for
    /// HLS, each behind its own bounded queue. Outputs that want AAC are fed by the session's
    /// one transcoder ([`AacStage`], a task behind its own queue), the others by the session.
    fn outputs_for(
        &self,
        stream: &str,
        hooks: &SessionHooks,
        has_audio: bool,
        has_video: bool,
        video_layers: usize,
        timeline_origin: std::time::SystemTime,
    ) -> Outputs {
        let mut outputs = Outputs::default();
        let aac = AacFormat::default();
        // The queues of the outputs that want AAC: they go to the transcoder, not the session.
        let mut aac_queues = Vec::new();
        let hls_audio = has_audio && self.settings.hls.audio != HlsAudio::None;
        if self.settings.hls_enabled && (has_video || hls_audio) {
            // A simulcast publisher's HLS ladder: a video-only rendition per layer and the audio
            // in one rendition of its own, listed by the stream's `main.m3u8`; the stream's
            // own output (`index.m3u8`, the layer RTMP gets) goes on beside them.
            let ladder =
                (has_video && video_layers > 1).then(|| watch::channel(self.settings.hls.ladder()));
            let (ladder_tx, ladder_rx) = match ladder {
                Some((tx, rx)) => (Some(Arc::new(tx)), Some(rx)),
                None => (None, None),
            };
            let mut hls_output = |key: String, has_audio: bool, has_video: bool, role| {
                let (queue, rx) =
                    OutputQueue::new(self.settings.output_queue, self.hls.metrics().drops.clone());
                let mut output = self
                    .hls
                    .output(
                        &key,
                        has_audio,
                        has_video,
                        outputs.keyframe_wanted.clone(),
                        outputs.wallclock.subscribe(),
                        aac.clone(),
                    )
                    .dated_from(timeline_origin)
                    .with_hooks(hooks.clone());
                if let Some(role) = role {
                    output = output.in_ladder(role);
                }
                let span = tracing::info_span!("hls", stream = %key);
                outputs
                    .tasks
                    .push(tokio::spawn(output.run(rx).instrument(span)));
                queue
            };
            let wants_aac = self.settings.hls.audio == HlsAudio::Aac;
            let queue = hls_output(
                stream.to_owned(),
                has_audio,
                has_video,
                ladder_rx.map(LadderRole::Main),
            );
            if hls_audio && wants_aac {
                aac_queues.push(queue);
            } else {
                outputs.queues.push(queue);
            }
            if let Some(ladder) = ladder_tx {
                for layer in 0..video_layers.min(MAX_LAYERS) {
                    let rendition = LadderRendition::Video(layer);
                    let queue = hls_output(
                        format!("{stream}/{rendition}"),
                        false,
                        true,
                        Some(LadderRole::Rendition(rendition, ladder.clone())),
                    );
                    outputs.layer_queues.push(queue);
                }
                if hls_audio {
                    let rendition = LadderRendition::Audio;
                    let queue = hls_output(
                        format!("{stream}/{rendition}"),
                        true,
                        false,
                        Some(LadderRole::Rendition(rendition, ladder)),
                    );
                    if wants_aac {
                        aac_queues.push(queue);
                    } else {
                        outputs.queues.push(queue);
                    }
                }
            }
        }
        for (url, audio) in self.settings.rtmp.targets_for(stream) {
            let label = TargetLabel {
                stream: stream.to_owned(),
                target: url.redacted(),
            };
            let target_metrics = self.metrics.rtmp_target(&label);
            let (queue, rx) =
                OutputQueue::new(self.settings.output_queue, target_metrics.drops.clone());
            let output = RtmpOutput {
                url,
                audio,
                aac: aac.clone(),
                has_audio,
                has_video,
                tls: self.rtmp_tls.clone(),
                metrics: target_metrics,
                keyframe_wanted: outputs.keyframe_wanted.clone(),
                hooks: hooks.clone(),
            };
            let metrics = self.metrics.clone();
            let span = tracing::info_span!("rtmp", %stream, target = %label.target);
            outputs.tasks.push(tokio::spawn(
                async move {
                    output.run(rx).await;
                    metrics.forget_rtmp_target(&label);
                }
                .instrument(span),
            ));
            if has_audio && audio == AudioMode::Aac {
                aac_queues.push(queue);
            } else {
                outputs.queues.push(queue);
            }
        }
        if !aac_queues.is_empty() {
            let transcode = self.metrics.transcode();
            let (queue, rx) = OutputQueue::new(self.settings.output_queue, transcode.drops.clone());
            let stage = AacStage {
                bitrate: self.settings.aac_bitrate,
                format: aac,
                outputs: aac_queues,
                metrics: transcode,
            };
            let span = tracing::info_span!("aac", %stream);
            // First in the list: at the end, its flushed tail reaches the outputs it feeds
            // before they are waited for.
            outputs
                .tasks
                .insert(0, tokio::spawn(stage.run(rx).instrument(span)));
            outputs.queues.push(queue);
        }
        outputs
    }

    /// Removes a session from the registry (so its URL 404s at once) and tells it to end.
    /// Returns a receiver that fires once it has released everything.
    pub fn end_session(&self, id: &str, reason: EndReason) -> Option<oneshot::Receiver<()>> {
        let handle = self.forget_session(id)?;
        let (done, wait) = oneshot::channel();
        let command = Command::End {
            reason,
            done: Some(done),
        };
        if handle.tx.try_send(command).is_err() {
            // The mailbox is full or the actor is gone; dropping the sender ends it either way.
            tracing::debug!(session = %id, "end command not queued");
        }
        Some(wait)
    }

    /// Drops a session from the registry; also done when its task returns.
    fn forget_session(&self, id: &str) -> Option<SessionHandle> {
        let mut registry = lock(&self.sessions);
        let handle = registry.by_id.remove(id)?;
        if registry.by_stream.get(&handle.stream).map(String::as_str) == Some(id) {
            registry.by_stream.remove(&handle.stream);
            // The stream's last session here: another node may take it now.
            if let Some(cluster) = &self.cluster {
                cluster.release(&handle.stream);
            }
        }
        Some(handle)
    }

    /// Sends a PATCH to its session and waits for the answer.
    pub async fn patch(
        &self,
        handle: &SessionHandle,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> Option<Result<PatchReply, PatchError>> {
        let (reply, answer) = oneshot::channel();
        handle
            .tx
            .send(Command::Patch {
                if_match,
                frag,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Ends every session and waits (bounded) until they have released everything.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = lock(&self.sessions).by_id.keys().cloned().collect();
        let waits: Vec<_> = ids
            .iter()
            .filter_map(|id| self.end_session(id, EndReason::Shutdown))
            .collect();
        for wait in waits {
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
        // The sessions' last events (publish_stop) and HLS files are queued by now.
        self.hooks.flush(Duration::from_secs(5)).await;
        self.hls.uploader().flush(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RtmpTarget};
    use crate::media::unit::{AudioFrame, Unit};
    use bytes::Bytes;

    /// Two RTMP targets and HLS, all wanting AAC, plus one wanting Opus: the session runs one
    /// transcoder, and the Opus target is fed by the session directly.
    #[tokio::test]
    async fn one_session_makes_one_transcoder_whatever_its_aac_outputs() {
        if !crate::transcode::AAC_ENCODER {
            return;
        }
        let dir = bridge_proto::testdata::temp_dir("app-one-transcoder");
        let target = |port: u16, audio| RtmpTarget {
            // Nothing listens there: the targets keep redialling, which is fine here.
            url: format!("rtmp://127.0.0.1:{port}/live/{{stream}}"),
            audio,
            streams: Vec::new(),
        };
        let config = Config {
            udp: "127.0.0.1:0".parse().unwrap(),
            hls_dir: dir.clone(),
            hls_audio: HlsAudio::Aac,
            rtmp_target: vec![
                target(9, AudioMode::Aac),
                target(9, AudioMode::Aac),
                target(9, AudioMode::Opus),
            ],
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::default());
        let udp = UdpMux::bind(config.udp, config.udp_recv_buffer, metrics.clone())
            .await
            .unwrap();
        let app = App::new(config.into_settings().unwrap(), metrics.clone(), udp).unwrap();
        let mut outputs = app.outputs_for(
            "s",
            &SessionHooks::default(),
            true,
            true,
            1,
            std::time::SystemTime::now(),
        );
        assert_eq!(outputs.tasks.len(), 5, "HLS, three targets, the transcoder");
        assert_eq!(
            outputs.queues.len(),
            2,
            "the session feeds the Opus target and the transcoder"
        );
        for i in 0..25 {
            let frame = Unit::Audio(AudioFrame {
                pts: i * 1800,
                duration: 1800,
                data: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
            });
            for queue in &mut outputs.queues {
                queue.push(&frame);
            }
        }
        let transcode = metrics.transcode();
        for _ in 0..200 {
            if transcode.frames.get() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(transcode.active.get(), 1, "one transcoder");
        assert!(transcode.frames.get() > 0);
        outputs.queues.clear();
        for task in outputs.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        assert_eq!(transcode.active.get(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
