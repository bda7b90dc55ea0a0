//! The sans-IO `rtc` peer connection of one WHIP session, behind a [`Peer`] that speaks the
//! bridge's types: datagrams in, datagrams out, connection state changes, RTP packets and sender
//! reports, keyframe requests. The session drives it; nothing else here does IO or reads the
//! clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::restart_hold::RestartHold;
use super::udp::Datagram;
use crate::media::ingest::Kind;
use crate::media::reorder::RtpPacket;
use crate::whip::offer::Offer;
use crate::whip::sdpfrag::{Candidate, IceCredentials, SdpFrag};

/// DTLS record content type `alert` (RFC 6347 §4.1). `rtc` 0.21 does not surface a peer's
/// close_notify as a state change (W3C maps "ICE connected + DTLS closed" to "connected"), so the
/// session watches for alerts itself (see [`crate::whip::liveness`]).
const DTLS_ALERT: u8 = 21;

/// Whether a datagram is a DTLS alert record.
pub fn is_dtls_alert(datagram: &[u8]) -> bool {
    datagram.first() == Some(&DTLS_ALERT)
}

/// A connection state change the session acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// ICE and DTLS are up (first time, or again after an ICE restart).
    Connected,
    /// ICE failed.
    Failed,
    /// The connection closed.
    Closed,
}

/// Media and timing the peer received.
#[derive(Debug)]
pub enum Received {
    /// An RTP packet of an open track, after SRTP.
    Rtp {
        /// Its track's kind.
        kind: Kind,
        /// Its simulcast layer: the order its rid was first seen in (0 without simulcast).
        layer: usize,
        /// Its payload type (only `--rtp-dump` records it; the track says the codec).
        payload_type: u8,
        /// The packet.
        packet: RtpPacket,
    },
    /// An RTCP sender report: the publisher's wallclock (NTP) for an RTP timestamp.
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// NTP timestamp (64-bit fixed point).
        ntp: u64,
        /// The RTP timestamp of the same instant.
        rtp: u32,
    },
}

/// One datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// Its bytes.
    pub data: BytesMut,
}

/// One WHIP session's peer connection, and what the session needs to remember about it.
pub struct Peer {
    pc: RTCPeerConnection,
    offer: Offer,
    /// The address datagrams are told to have arrived on (see `App::local_candidate`).
    local_candidate: SocketAddr,
    /// Open tracks by track id.
    kinds: HashMap<String, Kind>,
    /// Simulcast: the rids seen, in the order their first packet came (their layer numbers),
    /// and each layer's SSRC. Empty without simulcast.
    rids: Vec<String>,
    layers: HashMap<u32, usize>,
    video_receiver: Option<RTCRtpReceiverId>,
    /// RFC 5104 FIR command sequence number, one per request.
    fir_sequence: u8,
    /// Sender reports of a compound RTCP packet not handed on yet.
    reports: VecDeque<(Instant, Received)>,
    /// Media sent on the old pair while an ICE restart completes.
    restart_hold: RestartHold,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("local_candidate", &self.local_candidate)
            .field("kinds", &self.kinds)
            .field("fir_sequence", &self.fir_sequence)
            .finish_non_exhaustive()
    }
}

/// A peer-connection failure, with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct PeerError {
    step: &'static str,
    source: rtc::shared::error::Error,
}

impl PeerError {
    /// The failure came from what the offer says, not from the bridge: the WebRTC stack
    /// refused to take the offer (conflicting or malformed fingerprints, a payload type its
    /// attributes name but its m-line does not, an unknown candidate type, a number that is not
    /// one) or to answer it. The offer checks let through what they do not model; the publisher
    /// is told why with a 4xx, and nothing of the server is at fault.
    pub fn is_offer_fault(&self) -> bool {
        matches!(
            self.step,
            STEP_READ_OFFER
                | STEP_REMOTE
                | STEP_CREATE_ANSWER
                | STEP_LOCAL
                | STEP_READ_RESTART
                | STEP_RESTART
        )
    }
}

const STEP_READ_OFFER: &str = "read offer";
const STEP_REMOTE: &str = "set remote description";
const STEP_CREATE_ANSWER: &str = "create answer";
const STEP_LOCAL: &str = "set local description";
const STEP_READ_RESTART: &str = "read restart offer";
const STEP_RESTART: &str = "set restart offer";

trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, PeerError>;
}

impl<T> Step<T> for Result<T, rtc::shared::error::Error> {
    fn step(self, step: &'static str) -> Result<T, PeerError> {
        self.map_err(|source| PeerError { step, source })
    }
}

/// The answer side of one negotiation.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Full SDP answer.
    pub sdp: String,
    /// Our ICE credentials in it.
    pub credentials: IceCredentials,
    /// Our candidates in it (`candidate:...`).
    pub candidates: Vec<String>,
}

/// H.264 (packetization modes 1 and 0, the profiles real publishers offer) and Opus only: the
/// answer must never accept a codec the outputs cannot carry.
fn media_engine() -> Result<MediaEngine, PeerError> {
    let mut engine = MediaEngine::default();
    let opus = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    };
    engine
        .register_codec(opus, RtpCodecKind::Audio)
        .step("register opus")?;
    let feedback = vec![
        rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
            typ: "nack".into(),
            parameter: String::new(),
        },
        rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
            typ: "nack".into(),
            parameter: "pli".into(),
        },
        rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        },
    ];
    let profiles = ["42e01f", "42001f", "4d001f", "640032", "64001f", "4d0032"];
    let mut payload_type = 102u8;
    for mode in [1, 0] {
        for profile in profiles {
            let codec = RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!(
                        "level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile}"
                    ),
                    rtcp_feedback: feedback.clone(),
                },
                payload_type,
            };
            engine
                .register_codec(codec, RtpCodecKind::Video)
                .step("register h264")?;
            payload_type += 1;
        }
    }
    Ok(engine)
}

/// The interceptors a receive-only peer needs, and no more: every one is a stage each inbound
/// packet walks through (a move of the packet and a dispatch), so rtc's default set, built for
/// peers that also send, cost the ingest a fifth of its CPU. A WHIP ingest never sends RTP, so
/// the NACK responder (a send history) and the sender-report generator go; what stays is loss
/// recovery (NACK generator), the publisher's bandwidth estimate (TWCC feedback), receiver
/// reports, and our sender-report tap.
fn receive_interceptors(engine: &mut MediaEngine) -> Result<Registry, PeerError> {
    use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder};
    use rtc::peer_connection::configuration::interceptor_registry::{
        configure_simulcast_extension_headers, configure_twcc_receiver_only,
    };
    // The NACK and PLI feedback the generator relies on is in every H.264 codec's parameters
    // (see `media_engine`).
    configure_simulcast_extension_headers(engine).step("register simulcast extensions")?;
    let registry = Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    Ok(configure_twcc_receiver_only(registry, engine)
        .step("register TWCC")?
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        // Just application-ward of the receiver-report interceptor, which reads SRs for its DLSR.
        .with(
            Slot::Custom(10_500),
            super::sr_tap::SenderReportTap::default(),
        ))
}

/// The DTLS certificate every peer of the process presents (as SRS, Janus and MediaMTX do):
/// made once at startup rather than per POST, where it was most of the cost of building a peer.
/// Self-signed ECDSA P-256, as rtc makes its own; peers authenticate it by the fingerprint in
/// the answer, which is therefore the same in every answer.
pub fn dtls_certificate() -> Result<RTCCertificate, PeerError> {
    use rtc::crypto::SignatureScheme;
    use rtc::peer_connection::certificate::CertificateParams;
    let other = |step: &'static str, e: String| PeerError {
        step,
        source: rtc::shared::error::Error::Other(e),
    };
    let provider =
        rtc::crypto::default_provider().map_err(|e| other("crypto provider", e.to_string()))?;
    let params = CertificateParams::new(vec![format!("whip-bridge-{}", crate::ids::random_hex())])
        .map_err(|e| other("certificate parameters", e.to_string()))?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .step("generate DTLS certificate")
}

/// Creates the answering peer connection for an accepted offer, with host candidates only on
/// `ips` at the shared UDP port, and the process's DTLS certificate, and returns it with its
/// answer.
fn answer(
    offer: &Offer,
    ips: &[IpAddr],
    udp: SocketAddr,
    certificate: &RTCCertificate,
    now: Instant,
) -> Result<(RTCPeerConnection, Answer), PeerError> {
    let mut engine = media_engine()?;
    let registry = receive_interceptors(&mut engine)?;
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(if offer.setup_passive {
            RTCDtlsRole::Client
        } else {
            RTCDtlsRole::Server
        })
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![certificate.clone()])
                .build(),
        )
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .step("build peer connection")?;
    for (mid, kind) in [
        (&offer.audio_mid, RtpCodecKind::Audio),
        (&offer.video_mid, RtpCodecKind::Video),
    ] {
        if mid.is_some() {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .step("add transceiver")?;
        }
    }
    let description = RTCSessionDescription::offer(offer.sdp.clone()).step(STEP_READ_OFFER)?;
    pc.set_remote_description(now, description)
        .step(STEP_REMOTE)?;
    for ip in ips {
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: ip.to_string(),
                port: udp.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .step("host candidate")?;
        let init = RTCIceCandidate::from(&host)
            .to_json()
            .step("host candidate")?;
        pc.add_local_candidate(init).step("add host candidate")?;
    }
    // An empty candidate ends gathering, so the answer says end-of-candidates (a WHIP server
    // never trickles, RFC 9725 §4.3.2).
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .step("end of candidates")?;
    let answer = negotiate(&mut pc, now)?;
    Ok((pc, answer))
}

fn negotiate(pc: &mut RTCPeerConnection, now: Instant) -> Result<Answer, PeerError> {
    let answer = pc.create_answer(None).step(STEP_CREATE_ANSWER)?;
    pc.set_local_description(now, answer).step(STEP_LOCAL)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp.clone())
        .ok_or(PeerError {
            step: "local description",
            source: rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil,
        })?;
    let frag = SdpFrag::parse(sdp.as_bytes());
    let (credentials, candidates) = match frag {
        Ok(SdpFrag {
            credentials: Some(creds),
            candidates,
            ..
        }) => (creds, own_candidates(candidates)),
        _ => {
            return Err(PeerError {
                step: "read own answer",
                source: rtc::shared::error::Error::ErrSessionDescriptionMissingIceUfrag,
            });
        }
    };
    Ok(Answer {
        sdp,
        credentials,
        candidates,
    })
}

/// Our candidates as a restart answer lists them: once each (the answer repeats them per media
/// section) and component 1 only. rtc writes a component-2 twin of every host candidate even with
/// rtcp-mux, and browser WHIP clients splice the lines into their SDP in a way a second component
/// breaks (seen with WHIPClient in Chromium).
fn own_candidates(candidates: Vec<Candidate>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    candidates
        .into_iter()
        .filter(|c| c.key.starts_with("1 ") && seen.insert(c.key.clone()))
        .map(|c| c.line)
        .collect()
}

/// Adds remote candidates; one the stack refuses is dropped (RFC 9725 §4.3.1), not fatal.
fn add_remote_candidates(pc: &mut RTCPeerConnection, first_mid: &str, candidates: &[Candidate]) {
    for candidate in candidates {
        let init = RTCIceCandidateInit {
            candidate: candidate.line.clone(),
            sdp_mid: Some(
                candidate
                    .mid
                    .clone()
                    .unwrap_or_else(|| first_mid.to_owned()),
            ),
            sdp_mline_index: None,
            username_fragment: None,
            ..Default::default()
        };
        if let Err(err) = pc.add_remote_candidate(init) {
            tracing::debug!(candidate = %candidate.line, %err, "remote candidate dropped");
        }
    }
}

/// ICE restart as the answerer: the original offer with the new remote credentials is applied as
/// a renegotiation, which makes the stack pick new local credentials.
fn restart(
    pc: &mut RTCPeerConnection,
    offer: &Offer,
    remote: &IceCredentials,
    now: Instant,
) -> Result<Answer, PeerError> {
    let description =
        RTCSessionDescription::offer(offer.with_credentials(remote)).step(STEP_READ_RESTART)?;
    pc.set_remote_description(now, description)
        .step(STEP_RESTART)?;
    negotiate(pc, now)
}

impl Peer {
    /// Answers an accepted offer, with host candidates only on `ips` at the shared UDP port
    /// `udp`, and adds the candidates the offer carried. `local_candidate` is the address
    /// received datagrams are told to have arrived on.
    pub fn answer(
        offer: Offer,
        ips: &[IpAddr],
        udp: SocketAddr,
        local_candidate: SocketAddr,
        certificate: &RTCCertificate,
        now: Instant,
    ) -> Result<(Self, Answer), PeerError> {
        let (mut pc, answer) = answer(&offer, ips, udp, certificate, now)?;
        add_remote_candidates(&mut pc, &offer.first_mid, &offer.candidates);
        let peer = Self {
            pc,
            offer,
            local_candidate,
            kinds: HashMap::new(),
            rids: Vec::new(),
            layers: HashMap::new(),
            video_receiver: None,
            fir_sequence: 0,
            reports: VecDeque::new(),
            restart_hold: RestartHold::default(),
        };
        Ok((peer, answer))
    }

    /// The offer it answered.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Whether the video track is open (keyframe requests have somewhere to go).
    pub fn has_video(&self) -> bool {
        self.video_receiver.is_some()
    }

    /// Trickled candidates (PATCH).
    pub fn add_remote_candidates(&mut self, candidates: &[Candidate]) {
        add_remote_candidates(&mut self.pc, &self.offer.first_mid, candidates);
    }

    /// ICE restart with the publisher's new credentials and candidates; the answer carries our
    /// new credentials. On failure the old ICE session goes on.
    pub fn restart(
        &mut self,
        remote: &IceCredentials,
        candidates: &[Candidate],
        now: Instant,
    ) -> Result<Answer, PeerError> {
        let answer = restart(&mut self.pc, &self.offer, remote, now)?;
        self.add_remote_candidates(candidates);
        self.restart_hold.begin();
        Ok(answer)
    }

    /// One datagram from the publisher.
    pub fn handle_datagram(&mut self, d: Datagram) {
        if let Some(d) = self.restart_hold.hold(d) {
            self.read(d);
        }
    }

    fn read(&mut self, d: Datagram) {
        let tagged = TaggedBytesMut {
            now: d.now,
            transport: TransportContext {
                local_addr: self.local_candidate,
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

    /// When the peer connection next wants [`Self::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Runs the peer connection's timers (ICE, DTLS retransmits, RTCP reports) at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(err) = self.pc.handle_timeout(now) {
            tracing::debug!(%err, "timeout handling failed");
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pc.poll_write().map(|out| Transmit {
            to: out.transport.peer_addr,
            data: out.message,
        })
    }

    /// The next connection state change the session acts on. Tracks that open are noted here.
    pub fn poll_state(&mut self) -> Option<PeerState> {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    tracing::info!(%state, "peer connection state");
                    let state = match state {
                        RTCPeerConnectionState::Connected => PeerState::Connected,
                        RTCPeerConnectionState::Failed => PeerState::Failed,
                        RTCPeerConnectionState::Closed => PeerState::Closed,
                        _ => continue,
                    };
                    let (held, overflow) = self.restart_hold.release();
                    if !held.is_empty() || overflow > 0 {
                        tracing::info!(
                            held = held.len(),
                            overflow,
                            "media sent during the ICE restart"
                        );
                    }
                    if state == PeerState::Connected {
                        for d in held {
                            self.read(d);
                        }
                    }
                    return Some(state);
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
                        _ => continue,
                    };
                    if let Some(rid) = init.rid {
                        let layer = match self.rids.iter().position(|r| *r == rid) {
                            Some(layer) => layer,
                            None => {
                                self.rids.push(rid);
                                self.rids.len() - 1
                            }
                        };
                        self.layers.insert(init.ssrc, layer);
                        tracing::info!(
                            kind = kind.as_str(),
                            ssrc = init.ssrc,
                            rid = self.rids[layer],
                            layer,
                            "track open"
                        );
                    } else {
                        tracing::info!(kind = kind.as_str(), ssrc = init.ssrc, "track open");
                    }
                    self.kinds.insert(init.track_id, kind);
                }
                _ => {}
            }
        }
        None
    }

    /// The next thing received, with when it arrived. Packets of tracks not (yet) open and RTCP
    /// other than sender reports stay inside the peer connection.
    pub fn poll_received(&mut self) -> Option<(Instant, Received)> {
        loop {
            if let Some(report) = self.reports.pop_front() {
                return Some(report);
            }
            let TaggedRTCMessage { now, message } = self.pc.poll_read()?;
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let Some(&kind) = self.kinds.get(&track_id) else {
                        continue;
                    };
                    let h = &packet.header;
                    let layer = if kind == Kind::Audio || self.layers.is_empty() {
                        0
                    } else {
                        // A layer whose open event is not read yet: its packets would be taken
                        // for another layer's.
                        let Some(&layer) = self.layers.get(&h.ssrc) else {
                            continue;
                        };
                        layer
                    };
                    let received = Received::Rtp {
                        kind,
                        layer,
                        payload_type: h.payload_type,
                        packet: RtpPacket::new(
                            h.ssrc,
                            h.sequence_number,
                            h.timestamp,
                            h.marker,
                            packet.payload,
                        ),
                    };
                    return Some((now, received));
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for sr in packets
                        .iter()
                        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                    {
                        tracing::trace!(ssrc = sr.ssrc, rtp = sr.rtp_time, "sender report");
                        self.reports.push_back((
                            now,
                            Received::SenderReport {
                                ssrc: sr.ssrc,
                                ntp: sr.ntp_time,
                                rtp: sr.rtp_time,
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// Asks the publisher for a keyframe of `media_ssrc`: a PLI, and a FIR too where FIR was
    /// negotiated (some encoders honour only one of the two). Returns whether it was queued for
    /// [`Self::poll_transmit`].
    pub fn request_keyframe(&mut self, now: Instant, media_ssrc: u32) -> bool {
        let Some(receiver) = self.video_receiver else {
            return false;
        };
        let mut requests: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })];
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
        matches!(sent, Some(Ok(())))
    }

    /// Closes the connection (DTLS close_notify to the publisher, via [`Self::poll_transmit`]).
    pub fn close(&mut self) {
        if let Err(err) = self.pc.close() {
            tracing::debug!(%err, "peer close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(now: Instant) -> (Peer, Answer) {
        let offer = Offer::parse(include_bytes!("../../tests/data/ffmpeg9-whip-offer.sdp"))
            .expect("the captured offer is accepted");
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("literal address");
        let certificate = dtls_certificate().expect("certificate");
        Peer::answer(offer, &[addr.ip()], addr, addr, &certificate, now).expect("answer")
    }

    fn fingerprint(sdp: &str) -> &str {
        sdp.lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .expect("a fingerprint")
    }

    /// Peers given one certificate answer with its fingerprint; a new certificate has another.
    #[test]
    fn peers_sharing_a_certificate_share_its_fingerprint() {
        let offer = || {
            Offer::parse(include_bytes!("../../tests/data/ffmpeg9-whip-offer.sdp"))
                .expect("the captured offer is accepted")
        };
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("literal address");
        let now = Instant::now();
        let certificate = dtls_certificate().expect("certificate");
        let (_, a) = Peer::answer(offer(), &[addr.ip()], addr, addr, &certificate, now).unwrap();
        let (_, b) = Peer::answer(offer(), &[addr.ip()], addr, addr, &certificate, now).unwrap();
        assert_eq!(fingerprint(&a.sdp), fingerprint(&b.sdp));
        let other = dtls_certificate().expect("certificate");
        let (_, c) = Peer::answer(offer(), &[addr.ip()], addr, addr, &other, now).unwrap();
        assert_ne!(fingerprint(&a.sdp), fingerprint(&c.sdp));
    }

    /// OBS aborts unless the answer accepts every layer it offers.
    #[test]
    fn an_obs_simulcast_offer_is_answered_with_every_layer() {
        let offer = Offer::parse(crate::whip::offer::tests::OBS_SIMULCAST.as_bytes())
            .expect("the OBS-shaped offer is accepted");
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("literal address");
        let certificate = dtls_certificate().expect("certificate");
        let (_, answer) = Peer::answer(
            offer,
            &[addr.ip()],
            addr,
            addr,
            &certificate,
            Instant::now(),
        )
        .expect("answer");
        let lines: Vec<&str> = answer.sdp.lines().collect();
        for rid in ["a=rid:0 recv", "a=rid:1 recv", "a=rid:2 recv"] {
            assert!(lines.contains(&rid), "{rid} missing from\n{}", answer.sdp);
        }
        assert!(lines.contains(&"a=simulcast:recv 0;1;2"), "{}", answer.sdp);
        for ext in ["sdes:mid", "sdes:rtp-stream-id"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("a=extmap:") && l.ends_with(ext)),
                "{ext} not accepted\n{}",
                answer.sdp
            );
        }
    }

    #[test]
    fn dtls_alerts_are_told_by_their_first_byte() {
        assert!(is_dtls_alert(&[21, 0xfe, 0xfd]));
        for other in [&[][..], &[22, 0xfe, 0xfd], &[23], &[0x80, 96], &[0, 1]] {
            assert!(!is_dtls_alert(other), "{other:?}");
        }
    }

    /// Without a socket: the peer answers, shrugs off junk, and asks for no keyframe before its
    /// video track is open.
    #[test]
    fn a_new_peer_answers_and_takes_junk_without_harm() {
        let now = Instant::now();
        let (mut peer, answer) = peer(now);
        assert!(!answer.credentials.ufrag.is_empty());
        assert_eq!(answer.candidates.len(), 1, "{:?}", answer.candidates);
        assert!(answer.candidates[0].contains("127.0.0.1 40000 typ host"));
        assert!(peer.offer().video_mid.is_some());
        for data in [&[21u8, 0xfe, 0xfd, 0, 0][..], &[0x80, 96, 0, 1], b"junk"] {
            peer.handle_datagram(Datagram {
                now,
                from: "127.0.0.1:5000".parse().expect("literal address"),
                data: BytesMut::from(data),
            });
        }
        peer.handle_timeout(now);
        assert_eq!(peer.poll_state(), None);
        assert!(peer.poll_received().is_none());
        assert!(!peer.has_video());
        assert!(!peer.request_keyframe(now, 1));
    }
}
