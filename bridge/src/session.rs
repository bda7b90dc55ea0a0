//! One task per WHIP session (an actor): it owns the WHIP resource state, the peer, the ingest
//! pipeline and the liveness rules, and feeds the outputs; HTTP handlers talk to it by message.
//! It is `Peer + Ingest + WhipResource + Liveness` and the IO between them: it receives only what
//! it needs (`SessionEnv`), and the app forgets it when its task returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use crate::hooks::{Event, SessionHooks};
use crate::ids::random_hex;
use crate::media::ingest::{Ingest, Kind, PerKind};
use crate::media::reorder::RtpPacket;
use crate::media::unit::Unit;
use crate::metrics::SessionMetrics;
use crate::rtc::dump::RtpDump;
use crate::rtc::peer::{self, Peer, PeerState, Received};
use crate::rtc::udp::{Datagram, FlowSocket, UdpMux};
use crate::sink::queue::OutputQueue;
use crate::whip::liveness::{EndReason, Liveness, LivenessConfig};
use crate::whip::resource::{ETag, PatchDecision, PatchRefusal, WhipResource};
use crate::whip::sdpfrag::{SdpFrag, write_restart_answer};

/// A message to a session.
#[derive(Debug)]
pub enum Command {
    /// A PATCH (trickle or ICE restart).
    Patch {
        /// The `If-Match` header, verbatim.
        if_match: Option<String>,
        /// The parsed fragment.
        frag: SdpFrag,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<PatchReply, PatchError>>,
    },
    /// End the session (DELETE, takeover, shutdown); the reply comes once everything is released.
    End {
        /// Why, for metrics and logs.
        reason: EndReason,
        /// Signalled when done.
        done: Option<oneshot::Sender<()>>,
    },
}

/// A successful PATCH.
#[derive(Debug)]
pub enum PatchReply {
    /// Trickle applied: 204.
    Trickled,
    /// ICE restarted: 200 with this fragment and tag.
    Restarted {
        /// The new entity tag (header value).
        etag: String,
        /// The answer fragment.
        body: String,
    },
}

/// A failed PATCH.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Refused by the entity-tag rules.
    #[error(transparent)]
    Refused(#[from] PatchRefusal),
    /// The peer could not restart ICE; the old ICE session goes on.
    #[error("ICE restart failed: {0}")]
    RestartFailed(String),
}

/// What the registry keeps of a running session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The stream it publishes.
    pub stream: String,
    /// Its mailbox.
    pub tx: mpsc::Sender<Command>,
}

/// What a session needs from the rest of the bridge.
#[derive(Debug)]
pub(crate) struct SessionEnv {
    /// The shared socket: datagrams out, and the route of a restarted ICE session's ufrag.
    pub(crate) udp: Arc<UdpMux>,
    /// The metrics it updates.
    pub(crate) metrics: SessionMetrics,
    /// What it reads of the configuration.
    pub(crate) settings: SessionSettings,
    /// Its event webhooks (`publish_stop` is the session's own).
    pub(crate) hooks: SessionHooks,
}

/// What a session reads of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    /// Connect and consent timeouts, keyframe interval.
    pub(crate) liveness: LivenessConfig,
    /// `--rtp-dump`: where received RTP is written.
    pub(crate) rtp_dump: Option<PathBuf>,
}

/// Everything a new session starts with.
#[derive(Debug)]
pub(crate) struct SessionInit {
    pub(crate) env: SessionEnv,
    pub(crate) id: String,
    pub(crate) route: u64,
    /// When the offer was answered: the connect timeout runs from here.
    pub(crate) answered: Instant,
    pub(crate) peer: Peer,
    pub(crate) resource: WhipResource,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) datagrams: mpsc::Receiver<Datagram>,
    pub(crate) ingest: Ingest,
    pub(crate) outputs: Outputs,
}

/// The session's outputs: their queues, their tasks, the flag by which an output that
/// (re)starts asks for a keyframe, and the publisher's wallclock of timeline 0 once a sender
/// report gave it (HLS dates its segments by it).
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) queues: Vec<OutputQueue>,
    /// A simulcast publisher's HLS ladder: the queue of each layer's rendition, by layer.
    pub(crate) layer_queues: Vec<OutputQueue>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) keyframe_wanted: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) wallclock: tokio::sync::watch::Sender<Option<std::time::SystemTime>>,
}

/// A `--rtp-dump` file of one kind, opened on the first packet.
#[derive(Debug, Default)]
enum Dump {
    #[default]
    Unopened,
    Open(RtpDump),
    /// Opening or writing failed: the dump is off for this kind from then on, the session goes on.
    Off,
}

struct Session {
    env: SessionEnv,
    id: String,
    route: u64,
    peer: Peer,
    resource: WhipResource,
    liveness: Liveness,
    ingest: Ingest,
    outputs: Outputs,
    dumps: PerKind<Dump>,
    ended: Option<EndReason>,
    /// When the offer was answered: `publish_stop`'s duration runs from here.
    answered: Instant,
    /// RTP payload bytes received, for `publish_stop`.
    bytes_received: u64,
    /// The publisher's media flow on a connected socket of its own, once its media flows.
    flow: Option<FlowSocket>,
    /// What `flow` reads into; datagrams are split off it, not copied.
    flow_buf: BytesMut,
    /// No new flow socket before this (a peer that alternates addresses must not make one per
    /// datagram).
    flow_retry_at: Instant,
}

/// Datagrams handled before the session drains what they produced.
const BATCH: usize = 64;
/// Room for any datagram a flow socket reads (the path MTU is far below).
const MAX_DATAGRAM: usize = 2048;
/// A flow socket reads into chunks of this size, split per datagram.
const FLOW_CHUNK: usize = 16 * 1024;
/// The least time between two flow sockets of one session.
const FLOW_RETRY: Duration = Duration::from_secs(1);

/// Waits until the flow socket has something to read; never, without one.
async fn readable(flow: Option<&FlowSocket>) -> std::io::Result<()> {
    match flow {
        Some(flow) => flow.socket.readable().await,
        None => std::future::pending().await,
    }
}

/// Runs a session to its end.
///
/// The session lives in a box and the task's future holds only the pointer: moved by value,
/// the session (11 KB, most of it the peer connection) sat in the future up to four times over
/// (the spawned block's capture, `run`'s argument, its locals, `close`'s), 54 KB of each
/// session's 150 KB.
pub(crate) async fn run(init: Box<SessionInit>) {
    let (mut s, mut commands, mut datagrams) = Session::start(init);
    tracing::info!("session started");
    let mut done_waiters = Vec::new();
    let reason = loop {
        s.drain().await;
        if let Some(reason) = s.ended {
            break reason;
        }
        let deadline = s.next_deadline();
        // A cheap clone (an `Arc`), so that waiting on the socket does not borrow the session.
        let flow = s.flow.clone();
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(d) => {
                    s.handle_shared_datagram(d);
                    // Whatever else is queued too, before the one drain for them all.
                    for _ in 1..BATCH {
                        let Ok(d) = datagrams.try_recv() else { break };
                        s.handle_shared_datagram(d);
                    }
                }
                None => s.end(EndReason::Shutdown),
            },
            ready = readable(flow.as_ref()) => match ready {
                Ok(()) => {
                    s.read_flow();
                }
                Err(err) => s.drop_flow(&err),
            },
            command = commands.recv() => match command {
                Some(Command::Patch { if_match, frag, reply }) => {
                    let result = s.handle_patch(if_match.as_deref(), frag);
                    // The handler may have given up waiting; nothing to do then.
                    let _ = reply.send(result);
                }
                Some(Command::End { reason, done }) => {
                    done_waiters.extend(done);
                    s.end(reason);
                }
                None => s.end(EndReason::Shutdown),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                s.handle_timeout(Instant::now());
            }
        }
    };
    s.close(reason).await;
    for done in done_waiters {
        // A waiter that gave up (its own timeout) is no longer listening.
        let _ = done.send(());
    }
}

impl Session {
    /// Moves the parts of `init` into a boxed session; returns it and its two mailboxes.
    fn start(
        init: Box<SessionInit>,
    ) -> (Box<Self>, mpsc::Receiver<Command>, mpsc::Receiver<Datagram>) {
        let SessionInit {
            env,
            id,
            route,
            answered,
            peer,
            resource,
            commands,
            datagrams,
            ingest,
            outputs,
        } = *init;
        let session = Box::new(Self {
            liveness: Liveness::new(env.settings.liveness, answered),
            env,
            id,
            route,
            peer,
            resource,
            ingest,
            outputs,
            dumps: PerKind::default(),
            ended: None,
            answered,
            bytes_received: 0,
            flow: None,
            flow_buf: BytesMut::new(),
            flow_retry_at: answered,
        });
        (session, commands, datagrams)
    }

    fn next_deadline(&mut self) -> Instant {
        [
            self.peer.poll_timeout(),
            self.liveness.poll_timeout(),
            self.ingest.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        // Nothing pending at all: wake up now and then anyway; cheap, and never a busy loop.
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(60))
    }

    fn end(&mut self, reason: EndReason) {
        if self.ended.is_none() {
            tracing::info!(%reason, "session ending");
            self.ended = Some(reason);
        }
    }

    fn handle_datagram(&mut self, d: Datagram) {
        self.liveness.received(d.now, peer::is_dtls_alert(&d.data));
        self.peer.handle_datagram(d);
    }

    /// A datagram the shared socket routed here. Once the publisher's SRTP flows (the first byte
    /// of RTP and RTCP is 128..=191, RFC 7983), its address gets a connected socket of its own,
    /// and again if the flow moves (an ICE restart, a new network).
    fn handle_shared_datagram(&mut self, d: Datagram) {
        let media = matches!(d.data.first(), Some(128..=191));
        if media
            && self.flow.as_ref().is_none_or(|f| f.peer != d.from)
            && d.now >= self.flow_retry_at
        {
            self.flow_retry_at = d.now + FLOW_RETRY;
            match self.env.udp.connect_flow(d.from) {
                Ok(flow) => {
                    // What the old flow socket still holds was sent before `d`, and is lost
                    // with the socket: read it first.
                    while self.read_flow() {}
                    tracing::debug!(peer = %d.from, "media flow on its own socket");
                    if self.flow.replace(flow).is_none() {
                        self.env.metrics.flow(true);
                    }
                }
                Err(err) => {
                    tracing::warn!(peer = %d.from, %err, "no socket of its own for a media flow; it stays on the shared one");
                    self.env.metrics.flow_failed();
                }
            }
        }
        self.handle_datagram(d);
    }

    /// Reads what the flow socket holds, up to a batch; whether it may hold more.
    fn read_flow(&mut self) -> bool {
        let Some(flow) = self.flow.clone() else {
            return false;
        };
        let now = Instant::now();
        for _ in 0..BATCH {
            if self.flow_buf.capacity() < MAX_DATAGRAM {
                self.flow_buf.reserve(FLOW_CHUNK);
            }
            match flow.try_recv(&mut self.flow_buf, now, &self.env.udp) {
                Ok(Some(datagram)) => self.handle_datagram(datagram),
                Ok(None) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
                // ICMP errors (the peer's port closed) surface here: the session's liveness
                // rules decide what they mean, not one failed read.
                Err(err) => {
                    tracing::debug!(%err, "flow socket read failed");
                    return false;
                }
            }
        }
        true
    }

    /// Gives the flow back to the shared socket (which still routes the peer's address).
    fn drop_flow(&mut self, err: &std::io::Error) {
        tracing::warn!(%err, "flow socket failed; back on the shared socket");
        self.drop_flow_quietly();
    }

    fn drop_flow_quietly(&mut self) {
        if self.flow.take().is_some() {
            self.env.metrics.flow(false);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(reason) = self.liveness.handle_timeout(now) {
            self.end(reason);
            return;
        }
        self.peer.handle_timeout(now);
        self.ingest.handle_timeout(now);
    }

    fn handle_patch(
        &mut self,
        if_match: Option<&str>,
        frag: SdpFrag,
    ) -> Result<PatchReply, PatchError> {
        let current = self.resource.etag().header_value();
        match self.resource.decide_patch(if_match, frag)? {
            PatchDecision::Trickle {
                new_candidates,
                lenient,
            } => {
                if lenient {
                    tracing::info!(etag = %current, ?if_match, "trickle accepted by --etag lenient");
                }
                tracing::debug!(count = new_candidates.len(), "trickle candidates");
                self.peer.add_remote_candidates(&new_candidates);
                Ok(PatchReply::Trickled)
            }
            PatchDecision::Restart {
                remote,
                candidates,
                end_of_candidates,
            } => {
                let answer = self
                    .peer
                    .restart(&remote, &candidates, Instant::now())
                    .map_err(|e| PatchError::RestartFailed(e.to_string()))?;
                self.env
                    .udp
                    .add_ufrag(self.route, &answer.credentials.ufrag);
                let etag = ETag::new(random_hex());
                let header = etag.header_value();
                self.resource
                    .commit_restart(remote, &candidates, end_of_candidates, etag);
                self.liveness.restarted(Instant::now());
                tracing::info!(etag = %header, "ICE restarted");
                Ok(PatchReply::Restarted {
                    etag: header,
                    body: write_restart_answer(
                        &self.peer.offer().first_mid,
                        &answer.credentials,
                        &answer.candidates,
                    ),
                })
            }
        }
    }

    /// Sends every datagram the peer has queued.
    async fn transmit(&mut self) {
        while let Some(out) = self.peer.poll_transmit() {
            match &self.flow {
                Some(flow) if flow.peer == out.to => flow.send(&out.data).await,
                _ => self.env.udp.send(out.to, &out.data).await,
            }
        }
    }

    /// Flushes everything the peer produced: datagrams out, state changes, received media.
    async fn drain(&mut self) {
        self.transmit().await;
        while let Some(state) = self.peer.poll_state() {
            match state {
                PeerState::Connected => {
                    if let Some(from) = self.liveness.connected() {
                        self.env
                            .metrics
                            .state(Some(from), Some(self.liveness.state()));
                    }
                }
                PeerState::Failed => self.end(EndReason::IceFailed),
                PeerState::Closed => self.end(EndReason::Closed),
            }
        }
        while let Some((now, received)) = self.peer.poll_received() {
            match received {
                Received::Rtp {
                    kind,
                    layer,
                    payload_type,
                    packet,
                } => {
                    self.env.metrics.rtp_received(kind, packet.payload.len());
                    self.bytes_received += packet.payload.len() as u64;
                    self.dump(kind, payload_type, &packet);
                    self.ingest.push(kind, layer, packet, now);
                }
                Received::SenderReport { ssrc, ntp, rtp } => {
                    self.ingest.sender_report(ssrc, ntp, rtp, now);
                    let origin = self.ingest.wallclock_origin();
                    self.outputs.wallclock.send_if_modified(|known| {
                        let changed = *known != origin;
                        *known = origin;
                        changed
                    });
                }
            }
        }
        while let Some(err) = self.ingest.poll_error() {
            tracing::debug!(%err, "ingest dropped media");
        }
        self.fan_out();
        self.request_keyframe(Instant::now()).await;
    }

    /// `--rtp-dump`: a failure to write turns the dump off for this kind, never the session.
    fn dump(&mut self, kind: Kind, payload_type: u8, packet: &RtpPacket) {
        let Some(dir) = self.env.settings.rtp_dump.as_deref() else {
            return;
        };
        let dump = self.dumps.get_mut(kind);
        if let Dump::Unopened = dump {
            let name = format!("{}-{}", self.id, kind.as_str());
            *dump = match RtpDump::create(dir, &name) {
                Ok(d) => Dump::Open(d),
                Err(err) => {
                    tracing::warn!(%err, "rtp dump disabled");
                    Dump::Off
                }
            };
        }
        if let Dump::Open(d) = dump
            && let Err(err) = d.write(payload_type, packet)
        {
            tracing::warn!(%err, "rtp dump write failed; dump disabled");
            *dump = Dump::Off;
        }
    }

    /// Hands every new unit to every output (cheap clones: payloads are shared `Bytes`).
    fn fan_out(&mut self) {
        while let Some((why, layer)) = self.ingest.poll_switch() {
            let stats = self.ingest.layers().layer_stats(layer).unwrap_or_default();
            let (width, height) = stats.size.unwrap_or_default();
            if self.ingest.layers().layers() > 1 {
                tracing::info!(?why, layer, width, height, "video layer for the outputs");
            }
            self.env.metrics.switched(why);
        }
        while let Some(unit) = self.ingest.poll() {
            for queue in &mut self.outputs.queues {
                queue.push(&unit);
            }
        }
        while let Some((layer, unit)) = self.ingest.poll_layer() {
            if let Some(queue) = self.outputs.layer_queues.get_mut(layer) {
                queue.push(&Unit::Video(unit));
            }
        }
        self.env.metrics.ingest(self.ingest.stats());
        self.env.metrics.layers(self.ingest.layers());
    }

    /// Sends a PLI when video waits for a keyframe (start, loss), an output asked for one, or
    /// `--keyframe-interval-secs` has passed; [`Liveness::keyframe_request`] paces them.
    async fn request_keyframe(&mut self, now: Instant) {
        if self.ingest.video_ssrcs().next().is_none() {
            return;
        }
        let asked = self.outputs.keyframe_wanted.load(Ordering::Relaxed);
        if !self.peer.has_video()
            || !self
                .liveness
                .keyframe_request(now, asked || self.ingest.wants_keyframe(now))
        {
            return;
        }
        self.outputs.keyframe_wanted.store(false, Ordering::Relaxed);
        let mut sent = false;
        // Collected: the requests borrow the peer mutably; at most `MAX_LAYERS`, and requests are paced.
        let ssrcs: Vec<u32> = self.ingest.video_ssrcs().collect();
        for media_ssrc in ssrcs {
            if self.peer.request_keyframe(now, media_ssrc) {
                self.env.metrics.keyframe_requested();
                sent = true;
            }
        }
        if sent {
            self.transmit().await;
        }
    }

    /// Releases everything: DTLS close to the publisher, routes, outputs, metrics. The app
    /// forgets the session once this task returns.
    async fn close(mut self: Box<Self>, reason: EndReason) {
        self.peer.close();
        self.transmit().await;
        self.drop_flow_quietly();
        self.env.udp.unregister(self.route);
        // Closing the queues tells each output to finish cleanly (RTMP: FCUnpublish,
        // deleteStream; HLS: the last segment and ENDLIST); wait for them, bounded.
        self.outputs.queues.clear();
        self.outputs.layer_queues.clear();
        for task in self.outputs.tasks.drain(..) {
            // A task still running after this is abandoned (detached), not awaited forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.env.metrics.state(Some(self.liveness.state()), None);
        self.env.metrics.ended(reason);
        self.env.hooks.emit(Event::PublishStop {
            reason: reason.label(),
            duration_ms: u64::try_from(self.answered.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes: self.bytes_received,
        });
        tracing::info!(%reason, "session ended");
    }
}
