//! Checks an SDP offer against WHIP's rules (RFC 9725 §4.2, §4.4) before any peer is built, so a
//! bad offer is refused whole with a reason, never half answered.

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

use super::sdpfrag::{Candidate, IceCredentials, SdpFrag};

/// Why an offer is refused. `BadSdp` is 400, the rest 422.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    /// Not parsable as SDP.
    #[error("offer is not valid SDP: {0}")]
    BadSdp(String),
    /// Neither audio nor video, or more than one of either, or something else.
    #[error(
        "offer must have at most one audio and at most one video section, and at least one of them ({0})"
    )]
    Sections(String),
    /// Media sections not bundled.
    #[error("offer must bundle its media sections (a=group:BUNDLE)")]
    NoBundle,
    /// A section without rtcp-mux.
    #[error("media section {0} lacks a=rtcp-mux")]
    NoRtcpMux(String),
    /// A section that does not send.
    #[error("media section {mid} is {direction}: a WHIP offer must send")]
    NotSending {
        /// The section's mid.
        mid: String,
        /// The direction it has.
        direction: &'static str,
    },
    /// No codec the bridge can handle.
    #[error(
        "{kind} section {mid} offers no codec the bridge can bridge ({wanted}); offered: {offered}"
    )]
    NoCodec {
        /// audio / video
        kind: String,
        /// The section's mid.
        mid: String,
        /// What would be accepted.
        wanted: &'static str,
        /// What was offered.
        offered: String,
    },
    /// No ICE credentials.
    #[error("offer has no ice-ufrag/ice-pwd")]
    NoIceCredentials,
    /// No DTLS fingerprint.
    #[error("offer has no DTLS fingerprint")]
    NoFingerprint,
    /// A candidate is malformed.
    #[error("offer has a malformed candidate: {0}")]
    BadCandidate(String),
}

impl OfferError {
    /// The HTTP status this maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadSdp(_) => 400,
            _ => 422,
        }
    }
}

/// What the bridge needs to know about an accepted offer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The raw offer, for the peer connection (and for rewriting on ICE restart).
    pub sdp: String,
    /// The publisher's ICE credentials.
    pub credentials: IceCredentials,
    /// Candidates the offer carried.
    pub candidates: Vec<Candidate>,
    /// mid of the first bundled section (the one ICE runs on).
    pub first_mid: String,
    /// The audio section's mid, if any.
    pub audio_mid: Option<String>,
    /// The video section's mid, if any.
    pub video_mid: Option<String>,
    /// The fmtp line of the first H.264 format the bridge takes (it may carry
    /// `sprop-parameter-sets`).
    pub video_fmtp: Option<String>,
    /// The video section offers `a=rtcp-fb:... ccm fir` (RFC 5104): keyframe requests may use
    /// FIR as well as PLI.
    pub video_fir: bool,
    /// Simulcast: how many video layers the offer announces (`a=rid:<id> send` lines); 1
    /// without simulcast.
    pub video_layers: usize,
    /// The offer said `a=setup:passive` (ffmpeg does): the bridge must then be the DTLS client.
    /// For `actpass` or `active` it is the DTLS server (RFC 9725 §4.4.4).
    pub setup_passive: bool,
}

fn direction(m: &MediaDescription, session: &SessionDescription) -> &'static str {
    const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
    DIRECTIONS
        .into_iter()
        .find(|d| m.has_attribute(d))
        .or_else(|| DIRECTIONS.into_iter().find(|d| session.has_attribute(d)))
        .unwrap_or("sendrecv")
}

fn h264_mode_ok(fmtp: &str) -> bool {
    let mode = fmtp
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("packetization-mode"))
        .map_or("0", |(_, v)| v.trim());
    matches!(mode, "0" | "1")
}

impl Offer {
    /// Parses and checks an offer.
    pub fn parse(body: &[u8]) -> Result<Self, OfferError> {
        let sdp = std::str::from_utf8(body)
            .map_err(|_| OfferError::BadSdp("not UTF-8".into()))?
            .to_owned();
        let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .map_err(|e| OfferError::BadSdp(e.to_string()))?;
        let (mut audio, mut video) = (None, None);
        let mut video_fmtp = None;
        let mut video_fir = false;
        let mut video_layers = 1;
        for m in &parsed.media_descriptions {
            let kind = m.media_name.media.as_str();
            let mid = m
                .attribute("mid")
                .flatten()
                .ok_or_else(|| OfferError::Sections(format!("{kind} section without a=mid")))?
                .to_owned();
            let slot = match kind {
                "audio" => &mut audio,
                "video" => &mut video,
                other => {
                    return Err(OfferError::Sections(format!("unexpected {other} section")));
                }
            };
            if slot.is_some() {
                return Err(OfferError::Sections(format!("two {kind} sections")));
            }
            let dir = direction(m, &parsed);
            if matches!(dir, "recvonly" | "inactive") {
                return Err(OfferError::NotSending {
                    mid,
                    direction: dir,
                });
            }
            // bundle-only sections (port 0) inherit the transport of the first one (RFC 9143).
            if !m.has_attribute("rtcp-mux") && !m.has_attribute("bundle-only") {
                return Err(OfferError::NoRtcpMux(mid));
            }
            let codecs = m.codecs();
            let (wanted, ok) = if kind == "audio" {
                (
                    "opus/48000",
                    codecs.values().any(|c| c.name.eq_ignore_ascii_case("opus")),
                )
            } else {
                let mut h264: Vec<_> = codecs
                    .values()
                    .filter(|c| c.name.eq_ignore_ascii_case("h264") && h264_mode_ok(&c.fmtp))
                    .collect();
                h264.sort_by_key(|c| c.payload_type);
                video_fmtp = h264.first().map(|c| c.fmtp.clone());
                let rids = m
                    .attributes
                    .iter()
                    .filter(|a| a.key == "rid")
                    .filter_map(|a| a.value.as_deref())
                    .filter(|v| v.split_ascii_whitespace().nth(1) == Some("send"))
                    .count();
                video_layers = rids.max(1);
                video_fir = h264.iter().any(|c| {
                    c.rtcp_feedback
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case("ccm fir"))
                });
                ("H264 packetization-mode 0 or 1", !h264.is_empty())
            };
            if !ok {
                let mut offered: Vec<String> = codecs.values().map(|c| c.name.clone()).collect();
                offered.sort();
                offered.dedup();
                return Err(OfferError::NoCodec {
                    kind: kind.to_owned(),
                    mid,
                    wanted,
                    offered: offered.join(","),
                });
            }
            *slot = Some(mid);
        }
        if audio.is_none() && video.is_none() {
            return Err(OfferError::Sections("no media".into()));
        }
        let bundle = parsed
            .attribute("group")
            .is_some_and(|g| g.split_ascii_whitespace().next() == Some("BUNDLE"));
        if parsed.media_descriptions.len() > 1 && !bundle {
            return Err(OfferError::NoBundle);
        }
        let has_fingerprint = parsed.has_attribute("fingerprint")
            || parsed
                .media_descriptions
                .iter()
                .any(|m| m.has_attribute("fingerprint"));
        if !has_fingerprint {
            return Err(OfferError::NoFingerprint);
        }
        // Credentials and candidates: reuse the fragment parser on the offer's text; it reads the
        // same attributes with the same precedence.
        let frag = SdpFrag::parse(sdp.as_bytes()).map_err(|e| match e {
            super::sdpfrag::SdpFragError::HalfCredentials => OfferError::NoIceCredentials,
            bad @ super::sdpfrag::SdpFragError::BadCredentials { .. } => {
                OfferError::BadSdp(bad.to_string())
            }
            other => OfferError::BadCandidate(other.to_string()),
        })?;
        let credentials = frag.credentials.ok_or(OfferError::NoIceCredentials)?;
        let first_mid = parsed
            .attribute("group")
            .and_then(|g| g.split_ascii_whitespace().nth(1).map(str::to_owned))
            .or_else(|| audio.clone())
            .or_else(|| video.clone())
            .ok_or_else(|| OfferError::Sections("no media".into()))?;
        let setup_passive = parsed
            .media_descriptions
            .iter()
            .find_map(|m| m.attribute("setup").flatten())
            .or_else(|| parsed.attribute("setup").map(String::as_str))
            == Some("passive");
        Ok(Offer {
            video_fir,
            video_layers,
            setup_passive,
            video_fmtp,
            sdp,
            credentials,
            candidates: frag.candidates,
            first_mid,
            audio_mid: audio,
            video_mid: video,
        })
    }

    /// The offer with new ICE credentials and no candidates: what the peer connection is given as
    /// a renegotiation when a PATCH restarts ICE (the candidates follow separately).
    pub fn with_credentials(&self, creds: &IceCredentials) -> String {
        let mut out = String::with_capacity(self.sdp.len());
        for line in self.sdp.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with("a=ice-ufrag:") {
                out.push_str("a=ice-ufrag:");
                out.push_str(&creds.ufrag);
            } else if line.starts_with("a=ice-pwd:") {
                out.push_str("a=ice-pwd:");
                out.push_str(&creds.pwd);
            } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
                continue;
            } else {
                out.push_str(line);
            }
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shape of ffmpeg 9's WHIP offer: audio first, setup passive, one candidate, no
    /// rtcp-mux-only.
    pub(crate) const FFMPEG_LIKE: &str = "v=0\r\n\
o=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\n\
s=FFmpegPublishSession\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:1b2c3d4e\r\n\
a=ice-pwd:0123456789abcdef01234567\r\n\
a=fingerprint:sha-256 7A:43:39:22:A6:8C:6F:2B:9E:55:2A:1B:33:F1:EE:88:02:0C:42:51:3B:99:10:5E:D4:8E:21:3A:7F:26:C5:11\r\n\
a=setup:passive\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=msid:FFmpeg audio\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=ssrc:1 cname:FFmpeg\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 106\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:1b2c3d4e\r\n\
a=ice-pwd:0123456789abcdef01234567\r\n\
a=fingerprint:sha-256 7A:43:39:22:A6:8C:6F:2B:9E:55:2A:1B:33:F1:EE:88:02:0C:42:51:3B:99:10:5E:D4:8E:21:3A:7F:26:C5:11\r\n\
a=setup:passive\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=msid:FFmpeg video\r\n\
a=rtcp-mux\r\n\
a=rtpmap:106 H264/90000\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:2 cname:FFmpeg\r\n";

    /// The shape of OBS Studio 32.1's simulcast WHIP offer (libdatachannel), as its source
    /// writes it: video with the mid and rtp-stream-id extensions, three rids to send, no SSRC
    /// lines for video, no RTX.
    pub(crate) const OBS_SIMULCAST: &str =
        include_str!("../../tests/data/obs32-simulcast-offer.sdp");

    #[test]
    fn an_obs_simulcast_offer_announces_its_layers() {
        let offer = Offer::parse(OBS_SIMULCAST.as_bytes()).unwrap();
        assert_eq!(offer.video_layers, 3);
        assert_eq!(offer.video_mid.as_deref(), Some("1"));
        assert_eq!(
            Offer::parse(FFMPEG_LIKE.as_bytes()).unwrap().video_layers,
            1
        );
        // A rid the publisher would receive is not a layer it sends.
        let recv = OBS_SIMULCAST.replace("a=rid:2 send", "a=rid:2 recv");
        assert_eq!(Offer::parse(recv.as_bytes()).unwrap().video_layers, 2);
    }

    fn tweak(from: &str, to: &str) -> String {
        assert!(FFMPEG_LIKE.contains(from), "{from}");
        FFMPEG_LIKE.replace(from, to)
    }

    #[test]
    fn accepts_a_real_client_shape() {
        let offer = Offer::parse(FFMPEG_LIKE.as_bytes()).unwrap();
        assert_eq!(offer.credentials.ufrag, "1b2c3d4e");
        assert_eq!(offer.first_mid, "0");
        assert_eq!(offer.audio_mid.as_deref(), Some("0"));
        assert_eq!(offer.video_mid.as_deref(), Some("1"));
        assert_eq!(offer.candidates.len(), 1);
        assert!(offer.setup_passive);
        assert!(!offer.video_fir, "ffmpeg offers nack only");
        let fir = tweak("a=ssrc:2 cname", "a=rtcp-fb:106 ccm fir\r\na=ssrc:2 cname");
        assert!(Offer::parse(fir.as_bytes()).unwrap().video_fir);
        let actpass = tweak("a=setup:passive", "a=setup:actpass");
        assert!(!Offer::parse(actpass.as_bytes()).unwrap().setup_passive);
    }

    #[test]
    fn upper_case_codec_names_and_mode_zero_are_fine() {
        let sdp = tweak("opus/48000/2", "OPUS/48000/2")
            .replace("packetization-mode=1", "packetization-mode=0");
        Offer::parse(sdp.as_bytes()).unwrap();
    }

    #[test]
    fn refusals() {
        let cases: Vec<(String, u16, &str)> = vec![
            ("garbage".into(), 400, "not valid SDP"),
            (tweak("a=group:BUNDLE 0 1\r\n", ""), 422, "bundle"),
            (
                tweak(
                    "a=sendonly\r\na=msid:FFmpeg video",
                    "a=recvonly\r\na=msid:FFmpeg video",
                ),
                422,
                "recvonly",
            ),
            (
                tweak(
                    "a=sendonly\r\na=msid:FFmpeg audio",
                    "a=inactive\r\na=msid:FFmpeg audio",
                ),
                422,
                "inactive",
            ),
            (tweak("opus/48000/2", "PCMU/8000"), 422, "no codec"),
            (tweak("H264/90000", "VP8/90000"), 422, "offered: VP8"),
            (
                tweak("packetization-mode=1", "packetization-mode=2"),
                422,
                "no codec",
            ),
            (
                tweak("a=rtcp-mux\r\na=rtpmap:106", "a=rtpmap:106"),
                422,
                "rtcp-mux",
            ),
            (
                tweak(
                    "m=video 9 UDP/TLS/RTP/SAVPF 106",
                    "m=audio 9 UDP/TLS/RTP/SAVPF 106",
                ),
                422,
                "two audio",
            ),
            (
                FFMPEG_LIKE.replace("a=fingerprint", "a=x-fingerprint"),
                422,
                "fingerprint",
            ),
            (
                FFMPEG_LIKE.replace("a=ice-pwd", "a=x-ice-pwd"),
                422,
                "ice-ufrag",
            ),
        ];
        for (sdp, status, needle) in cases {
            let err = Offer::parse(sdp.as_bytes()).unwrap_err();
            assert_eq!(err.status(), status, "{err}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn restart_rewrite_replaces_credentials_and_drops_candidates() {
        let offer = Offer::parse(FFMPEG_LIKE.as_bytes()).unwrap();
        let creds = IceCredentials {
            ufrag: "newu".into(),
            pwd: "newpassword0123456789012".into(),
        };
        let sdp = offer.with_credentials(&creds);
        let again = Offer::parse(sdp.as_bytes()).unwrap();
        assert_eq!(again.credentials, creds);
        assert!(again.candidates.is_empty());
    }
}
