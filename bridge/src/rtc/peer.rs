//! Building and renegotiating the sans-IO `rtc` peer connection of one WHIP session.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};

use crate::whip::offer::Offer;
use crate::whip::sdpfrag::{Candidate, IceCredentials, SdpFrag};

/// A peer-connection failure, with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct PeerError {
    step: &'static str,
    source: rtc::shared::error::Error,
}

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

/// Creates the answering peer for an accepted offer, with host candidates only on `ips` at the
/// shared UDP port, and returns it with its answer.
pub fn answer(
    offer: &Offer,
    ips: &[IpAddr],
    udp: SocketAddr,
    now: Instant,
) -> Result<(RTCPeerConnection, Answer), PeerError> {
    let mut engine = media_engine()?;
    // Just application-ward of the receiver-report interceptor, which reads SRs for its DLSR.
    let registry = register_default_interceptors(Registry::new(), &mut engine)
        .step("register interceptors")?
        .with(
            Slot::Custom(10_500),
            super::sr_tap::SenderReportTap::default(),
        );
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
        .with_configuration(RTCConfigurationBuilder::new().build())
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
    let description = RTCSessionDescription::offer(offer.sdp.clone()).step("read offer")?;
    pc.set_remote_description(now, description)
        .step("set remote description")?;
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
    let answer = pc.create_answer(None).step("create answer")?;
    pc.set_local_description(now, answer)
        .step("set local description")?;
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
pub fn add_remote_candidates(
    pc: &mut RTCPeerConnection,
    first_mid: &str,
    candidates: &[Candidate],
) {
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
pub fn restart(
    pc: &mut RTCPeerConnection,
    offer: &Offer,
    remote: &IceCredentials,
    now: Instant,
) -> Result<Answer, PeerError> {
    let description =
        RTCSessionDescription::offer(offer.with_credentials(remote)).step("read restart offer")?;
    pc.set_remote_description(now, description)
        .step("set restart offer")?;
    negotiate(pc, now)
}
