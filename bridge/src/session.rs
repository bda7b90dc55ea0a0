//! One task per WHIP session (an actor): it owns the WHIP resource state and the peer connection;
//! HTTP handlers talk to it by message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::app::App;
use crate::media::ingest::{Ingest, Kind};
use crate::media::reorder::RtpPacket;
use crate::metrics::KindLabel;
use crate::rtc::peer;
use crate::rtc::udp::Datagram;
use crate::sink::queue::OutputQueue;
use crate::whip::offer::Offer;
use crate::whip::resource::{ETag, PatchDecision, PatchRefusal, WhipResource};
use crate::whip::sdpfrag::{SdpFrag, write_restart_answer};

/// DTLS record content type `alert` (RFC 6347 §4.1). After the handshake a peer only sends
/// alerts to close (close_notify) or to fail, and `rtc` 0.21 does not surface a peer's
/// close_notify as a state change (W3C maps "ICE connected + DTLS closed" to "connected").
const DTLS_ALERT: u8 = 21;

/// After an alert, this much silence from the peer means it has really gone. A spoofed alert
/// cannot end a session: the real publisher's next packet (media or consent check) cancels it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Keyframe requests (PLI) are sent at most this often, however many reasons there are.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

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
        reason: &'static str,
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

/// Everything a new session starts with.
pub(crate) struct SessionInit {
    pub(crate) app: Arc<App>,
    pub(crate) id: String,
    pub(crate) route: u64,
    pub(crate) pc: RTCPeerConnection,
    pub(crate) offer: Offer,
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
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) keyframe_wanted: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) wallclock: tokio::sync::watch::Sender<Option<std::time::SystemTime>>,
}

struct Session {
    app: Arc<App>,
    id: String,
    route: u64,
    pc: RTCPeerConnection,
    offer: Offer,
    resource: WhipResource,
    state: &'static str,
    kinds: HashMap<String, Kind>,
    /// RTP packet and byte counters for audio and video, looked up once rather than per packet.
    counters: [(Counter, Counter); 2],
    video_receiver: Option<RTCRtpReceiverId>,
    ingest: Ingest,
    outputs: Outputs,
    last_pli: Option<Instant>,
    /// RFC 5104 FIR command sequence number, one per request.
    fir_sequence: u8,
    /// `--rtp-dump` files, per kind, opened on the first packet.
    /// `None` once writing failed: the dump is off for that kind from then on.
    dumps: HashMap<&'static str, Option<crate::rtc::dump::RtpDump>>,
    connect_deadline: Option<Instant>,
    last_rx: Instant,
    /// When the peer sent a DTLS alert with nothing after it.
    alert_at: Option<Instant>,
    ended: Option<&'static str>,
}

/// Runs a session to its end.
pub(crate) async fn run(init: SessionInit) {
    let SessionInit {
        app,
        id,
        route,
        pc,
        offer,
        resource,
        mut commands,
        mut datagrams,
        ingest,
        outputs,
    } = init;
    let now = Instant::now();
    let counters = [Kind::Audio, Kind::Video].map(|kind| {
        let label = KindLabel {
            kind: kind.as_str(),
        };
        (
            app.metrics.rtp_packets.get_or_create(&label).clone(),
            app.metrics.rtp_bytes.get_or_create(&label).clone(),
        )
    });
    let mut s = Session {
        connect_deadline: Some(now + app.config.connect_timeout()),
        app,
        id,
        route,
        pc,
        offer,
        resource,
        state: "connecting",
        counters,
        kinds: HashMap::new(),
        video_receiver: None,
        ingest,
        outputs,
        last_pli: None,
        fir_sequence: 0,
        dumps: HashMap::new(),
        last_rx: now,
        alert_at: None,
        ended: None,
    };
    tracing::info!("session started");
    let mut done_waiters = Vec::new();
    loop {
        s.drain().await;
        if s.ended.is_some() {
            break;
        }
        let deadline = s.next_deadline();
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(d) => s.handle_datagram(d),
                None => s.end("shutdown"),
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
                None => s.end("shutdown"),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                s.handle_timeout(Instant::now());
            }
        }
    }
    s.close().await;
    for done in done_waiters {
        let _ = done.send(());
    }
}

impl Session {
    fn next_deadline(&mut self) -> Instant {
        // Consent applies once connected; before that, the connect timeout decides.
        let consent =
            (self.state == "connected").then(|| self.last_rx + self.app.config.consent_timeout());
        let closing = self.alert_at.map(|t| t + CLOSE_GRACE);
        [
            self.pc.poll_timeout(),
            self.connect_deadline,
            closing,
            self.ingest.deadline(),
            consent,
        ]
        .into_iter()
        .flatten()
        .min()
        // Nothing pending at all: wake up now and then anyway; cheap, and never a busy loop.
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(60))
    }

    fn end(&mut self, reason: &'static str) {
        if self.ended.is_none() {
            tracing::info!(reason, "session ending");
            self.ended = Some(reason);
        }
    }

    fn set_state(&mut self, state: &'static str) {
        if self.state != state {
            self.app
                .metrics
                .session_state(Some(self.state), Some(state));
            self.state = state;
        }
    }

    fn handle_datagram(&mut self, d: Datagram) {
        self.last_rx = d.now;
        self.alert_at =
            (self.state == "connected" && d.data.first() == Some(&DTLS_ALERT)).then_some(d.now);
        let tagged = TaggedBytesMut {
            now: d.now,
            transport: TransportContext {
                local_addr: self.app.local_candidate,
                peer_addr: d.from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d.data,
        };
        if let Err(err) = self.pc.handle_read(tagged) {
            // One bad datagram (a stray, a replay) must not end the session.
            tracing::debug!(from = %d.from, %err, "datagram rejected");
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|d| now >= d) {
            self.end("connect_timeout");
            return;
        }
        if self.alert_at.is_some_and(|t| now >= t + CLOSE_GRACE) {
            self.end("dtls_closed");
            return;
        }
        if self.state == "connected" && now >= self.last_rx + self.app.config.consent_timeout() {
            self.end("consent_timeout");
            return;
        }
        if let Err(err) = self.pc.handle_timeout(now) {
            tracing::debug!(%err, "timeout handling failed");
        }
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
                peer::add_remote_candidates(&mut self.pc, &self.offer.first_mid, &new_candidates);
                Ok(PatchReply::Trickled)
            }
            PatchDecision::Restart {
                remote,
                candidates,
                end_of_candidates,
            } => {
                let answer = peer::restart(&mut self.pc, &self.offer, &remote, Instant::now())
                    .map_err(|e| PatchError::RestartFailed(e.to_string()))?;
                peer::add_remote_candidates(&mut self.pc, &self.offer.first_mid, &candidates);
                self.app
                    .udp
                    .add_ufrag(self.route, &answer.credentials.ufrag);
                let etag = ETag::new(crate::app::random_hex());
                let header = etag.header_value();
                self.resource
                    .commit_restart(remote, &candidates, end_of_candidates, etag);
                self.connect_deadline = Some(Instant::now() + self.app.config.connect_timeout());
                tracing::info!(etag = %header, "ICE restarted");
                Ok(PatchReply::Restarted {
                    etag: header,
                    body: write_restart_answer(
                        &self.offer.first_mid,
                        &answer.credentials,
                        &answer.candidates,
                    ),
                })
            }
        }
    }

    /// Flushes everything the peer produced: datagrams out, events, received media.
    async fn drain(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            self.app
                .udp
                .send(out.transport.peer_addr, &out.message)
                .await;
        }
        while let Some(event) = self.pc.poll_event() {
            self.handle_event(event);
        }
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let Some(&kind) = self.kinds.get(&track_id) else {
                        continue;
                    };
                    let (packets, bytes) = match kind {
                        Kind::Audio => &self.counters[0],
                        Kind::Video => &self.counters[1],
                    };
                    packets.inc();
                    bytes.inc_by(packet.payload.len() as u64);
                    self.dump(kind, &packet.header, &packet.payload);
                    let h = &packet.header;
                    let rtp = RtpPacket::new(
                        h.ssrc,
                        h.sequence_number,
                        h.timestamp,
                        h.marker,
                        packet.payload,
                    );
                    self.ingest.push(kind, rtp, now);
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for sr in packets
                        .iter()
                        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                    {
                        tracing::trace!(ssrc = sr.ssrc, rtp = sr.rtp_time, "sender report");
                        self.ingest
                            .sender_report(sr.ssrc, sr.ntp_time, sr.rtp_time, now);
                    }
                    let origin = self.ingest.wallclock_origin();
                    self.outputs.wallclock.send_if_modified(|known| {
                        let changed = *known != origin;
                        *known = origin;
                        changed
                    });
                }
                _ => {}
            }
        }
        self.fan_out();
        self.request_keyframe(Instant::now()).await;
    }

    /// `--rtp-dump`: a failure to write turns the dump off for this kind, never the session.
    fn dump(&mut self, kind: Kind, header: &rtc::rtp::header::Header, payload: &[u8]) {
        let Some(dir) = self.app.config.rtp_dump.as_deref() else {
            return;
        };
        let name = kind.as_str();
        let id = &self.id;
        let dump = self.dumps.entry(name).or_insert_with(|| {
            crate::rtc::dump::RtpDump::create(dir, &format!("{id}-{name}"))
                .inspect_err(|err| tracing::warn!(%err, "rtp dump disabled"))
                .ok()
        });
        if let Some(d) = dump
            && let Err(err) = d.write(header, payload)
        {
            tracing::warn!(%err, "rtp dump write failed; dump disabled");
            *dump = None;
        }
    }

    /// Hands every new unit to every output (cheap clones: payloads are shared `Bytes`).
    fn fan_out(&mut self) {
        while let Some(unit) = self.ingest.poll() {
            if let crate::media::unit::Unit::Video(v) = &unit
                && v.keyframe
            {
                self.app.metrics.keyframes.inc();
            }
            for queue in &mut self.outputs.queues {
                queue.push(&unit);
            }
        }
    }

    /// Sends a PLI when video waits for a keyframe (start, loss), an output asked for one, or
    /// `--keyframe-interval-secs` has passed; at most once per [`PLI_INTERVAL`].
    async fn request_keyframe(&mut self, now: Instant) {
        use std::sync::atomic::Ordering;
        let asked = self.outputs.keyframe_wanted.load(Ordering::Relaxed);
        let periodic = self
            .app
            .config
            .keyframe_interval()
            .is_some_and(|every| self.last_pli.is_none_or(|t| now >= t + every));
        if !(asked || periodic || self.ingest.wants_keyframe())
            || self.last_pli.is_some_and(|t| now < t + PLI_INTERVAL)
        {
            return;
        }
        let (Some(receiver), Some(media_ssrc)) = (self.video_receiver, self.ingest.video_ssrc())
        else {
            return;
        };
        self.outputs.keyframe_wanted.store(false, Ordering::Relaxed);
        self.last_pli = Some(now);
        let mut requests: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })];
        // Where FIR was negotiated, send it too: some encoders honour only one of the two.
        if self.offer.video_fir {
            self.fir_sequence = self.fir_sequence.wrapping_add(1);
            requests.push(Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc,
                fir: vec![FirEntry {
                    ssrc: media_ssrc,
                    sequence_number: self.fir_sequence,
                }],
            }));
        }
        let sent = self
            .pc
            .rtp_receiver(receiver)
            .map(|mut r| r.write_rtcp(now, requests));
        if let Some(Ok(())) = sent {
            self.app.metrics.keyframe_requests.inc();
            while let Some(out) = self.pc.poll_write() {
                self.app
                    .udp
                    .send(out.transport.peer_addr, &out.message)
                    .await;
            }
        }
    }

    fn handle_event(&mut self, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                tracing::info!(%state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        self.connect_deadline = None;
                        self.set_state("connected");
                    }
                    RTCPeerConnectionState::Failed => self.end("ice_failed"),
                    RTCPeerConnectionState::Closed => self.end("closed"),
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let kind = self
                    .pc
                    .rtp_receiver(init.receiver_id)
                    .map(|r| r.track().kind());
                let kind = match kind {
                    Some(RtpCodecKind::Audio) => Kind::Audio,
                    Some(RtpCodecKind::Video) => {
                        self.video_receiver = Some(init.receiver_id);
                        Kind::Video
                    }
                    _ => return,
                };
                tracing::info!(kind = kind.as_str(), ssrc = init.ssrc, "track open");
                self.kinds.insert(init.track_id, kind);
            }
            _ => {}
        }
    }

    /// Releases everything: DTLS close to the publisher, routes, registry entry, metrics.
    async fn close(mut self) {
        let reason = self.ended.unwrap_or("closed");
        if let Err(err) = self.pc.close() {
            tracing::debug!(%err, "peer close");
        }
        while let Some(out) = self.pc.poll_write() {
            self.app
                .udp
                .send(out.transport.peer_addr, &out.message)
                .await;
        }
        self.app.udp.unregister(self.route);
        // Closing the queues tells each output to finish cleanly (RTMP: FCUnpublish,
        // deleteStream; HLS: the last segment and ENDLIST); wait for them, bounded.
        self.outputs.queues.clear();
        for task in self.outputs.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.app.metrics.session_state(Some(self.state), None);
        self.app
            .metrics
            .sessions_ended
            .get_or_create(&crate::metrics::ReasonLabel { reason })
            .inc();
        // Last, so that a session gone from the registry has released everything.
        self.app.forget_session(&self.id);
        tracing::info!(reason, "session ended");
    }
}
