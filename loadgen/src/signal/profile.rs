//! Client profiles: SDP offers, ICE credentials and candidates shaped like the ones real WHIP
//! clients send.
//!
//! | profile | offer | PATCHes |
//! | --- | --- | --- |
//! | `chromium` (a browser WHIP client) | `a=ice-options:trickle`, no candidates, `actpass` | trickles its candidates in 2-3 PATCHes; restarts ICE |
//! | `obs` (libdatachannel) | no candidates at all, `actpass` | never (the server learns the address from STUN) |
//! | `obs-simulcast` (OBS 32.1 with simulcast) | as `obs`, the video in 3 layers: `sdes:mid` and `sdes:rtp-stream-id` extmaps, `a=rid:0..2 send`, `a=simulcast:send 0;1;2`, no video `a=ssrc` | never |
//! | `ffmpeg` (the WHIP muxer, shape of a captured ffmpeg 9 offer) | one host candidate, `passive` | never |
//! | `gstreamer` (webrtcbin) | all candidates and `a=end-of-candidates`, `actpass` | ICE restarts only, with all candidates in the fragment |
//!
//! Every candidate names the `--candidate-ip` address (127.0.0.1 by default) and a port of one of
//! the load generator's own sink sockets, so a server that checks connectivity sends its STUN
//! only back to us.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngExt as _;
use rand::rngs::SmallRng;
use tokio::net::UdpSocket;

use crate::sdp::IceCredentials;

/// Video layers of the `obs-simulcast` profile (OBS 32.1 offers up to this many).
pub const OBS_SIMULCAST_LAYERS: u8 = 3;
/// Characters allowed in ICE ufrag and pwd (RFC 8839 `ice-char`).
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Sink sockets bound for candidate ports.
const SINK_SOCKETS: usize = 4;

/// The `--profile` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileChoice {
    /// Browser: trickle ICE.
    Chromium,
    /// OBS: no candidates, never PATCHes.
    Obs,
    /// OBS with simulcast: as `obs`, the video in three rid layers without SSRC lines.
    ObsSimulcast,
    /// ffmpeg's WHIP muxer: one candidate in the offer.
    Ffmpeg,
    /// GStreamer webrtcbin: all candidates in the offer.
    Gstreamer,
    /// 40% chromium, 40% obs, 10% ffmpeg, 10% gstreamer.
    Mix,
}

impl ProfileChoice {
    /// The profile of one session.
    pub fn pick(self, rng: &mut SmallRng) -> Profile {
        match self {
            ProfileChoice::Chromium => Profile::Chromium,
            ProfileChoice::Obs => Profile::Obs,
            ProfileChoice::ObsSimulcast => Profile::ObsSimulcast,
            ProfileChoice::Ffmpeg => Profile::Ffmpeg,
            ProfileChoice::Gstreamer => Profile::Gstreamer,
            ProfileChoice::Mix => match rng.random_range(0..10u8) {
                0..4 => Profile::Chromium,
                4..8 => Profile::Obs,
                8 => Profile::Ffmpeg,
                _ => Profile::Gstreamer,
            },
        }
    }
}

/// How one session's client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Trickles candidates by PATCH, restarts ICE.
    Chromium,
    /// No candidates, no PATCH.
    Obs,
    /// As [`Profile::Obs`], with the video in [`OBS_SIMULCAST_LAYERS`] simulcast layers.
    ObsSimulcast,
    /// One candidate in the offer, no PATCH.
    Ffmpeg,
    /// All candidates in the offer; PATCHes only to restart ICE.
    Gstreamer,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Chromium,
        Profile::Obs,
        Profile::ObsSimulcast,
        Profile::Ffmpeg,
        Profile::Gstreamer,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Chromium => "chromium",
            Profile::Obs => "obs",
            Profile::ObsSimulcast => "obs-simulcast",
            Profile::Ffmpeg => "ffmpeg",
            Profile::Gstreamer => "gstreamer",
        }
    }

    /// Video layers it sends: 1, or [`OBS_SIMULCAST_LAYERS`] for `obs-simulcast`.
    pub fn simulcast_layers(self) -> u8 {
        match self {
            Profile::ObsSimulcast => OBS_SIMULCAST_LAYERS,
            _ => 1,
        }
    }

    /// Sends its candidates in trickle PATCHes.
    pub fn trickles(self) -> bool {
        self == Profile::Chromium
    }

    /// Ever PATCHes (so restarts and PATCH faults apply).
    pub fn patches(self) -> bool {
        matches!(self, Profile::Chromium | Profile::Gstreamer)
    }

    /// Fresh ICE credentials of the lengths this client uses.
    pub fn credentials(self, rng: &mut SmallRng) -> IceCredentials {
        let (ufrag, pwd) = match self {
            Profile::Chromium => (4, 24),
            Profile::Obs | Profile::ObsSimulcast => (4, 22),
            Profile::Ffmpeg => (8, 32),
            Profile::Gstreamer => (32, 32),
        };
        IceCredentials {
            ufrag: ice_string(rng, ufrag),
            pwd: ice_string(rng, pwd),
        }
    }
}

fn ice_string(rng: &mut SmallRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(ICE_CHARS[rng.random_range(0..ICE_CHARS.len())]))
        .collect()
}

/// What every offer of a run shares: the DTLS fingerprint of one real certificate, and where
/// candidates point.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sha-256 AB:CD:...`
    pub fingerprint: String,
    /// The address every candidate names.
    pub candidate_ip: IpAddr,
    /// Ports of the sink sockets.
    pub ports: Vec<u16>,
}

/// Errors setting up the identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Certificate generation failed.
    #[error("generating the DTLS certificate: {0}")]
    Certificate(String),
    /// A sink socket could not be bound.
    #[error("binding a candidate sink socket on {ip}: {source}")]
    Bind {
        /// The candidate address.
        ip: IpAddr,
        /// Cause.
        source: std::io::Error,
    },
}

impl Identity {
    /// Generates one ECDSA P-256 certificate for its fingerprint and binds the sink sockets on
    /// `candidate_ip`, drained by a task that counts what arrives in `stray`.
    pub async fn new(candidate_ip: IpAddr, stray: Arc<AtomicU64>) -> Result<Self, IdentityError> {
        let fingerprint = certificate_fingerprint().map_err(IdentityError::Certificate)?;
        let mut ports = Vec::with_capacity(SINK_SOCKETS);
        for _ in 0..SINK_SOCKETS {
            let socket =
                UdpSocket::bind((candidate_ip, 0))
                    .await
                    .map_err(|source| IdentityError::Bind {
                        ip: candidate_ip,
                        source,
                    })?;
            let port = socket
                .local_addr()
                .map_err(|source| IdentityError::Bind {
                    ip: candidate_ip,
                    source,
                })?
                .port();
            ports.push(port);
            let stray = stray.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while socket.recv_from(&mut buf).await.is_ok() {
                    stray.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Ok(Self {
            fingerprint,
            candidate_ip,
            ports,
        })
    }

    fn port(&self, rng: &mut SmallRng) -> u16 {
        self.ports
            .get(rng.random_range(0..self.ports.len().max(1)))
            .copied()
            .unwrap_or(9)
    }

    /// The offer `profile` would POST.
    pub fn offer(&self, profile: Profile, creds: &IceCredentials, rng: &mut SmallRng) -> String {
        match profile {
            Profile::Chromium => self.chromium_offer(creds, rng),
            Profile::Obs => self.obs_offer(creds, rng, 1),
            Profile::ObsSimulcast => self.obs_offer(creds, rng, OBS_SIMULCAST_LAYERS),
            Profile::Ffmpeg => self.ffmpeg_offer(creds, rng),
            Profile::Gstreamer => self.gstreamer_offer(creds, rng),
        }
    }

    /// Candidates a browser gathers, in the batches it trickles them: host UDP and host TCP
    /// first, then server-reflexive, then (with three batches) a second host address.
    pub fn trickle_batches(
        &self,
        creds: &IceCredentials,
        batches: usize,
        rng: &mut SmallRng,
    ) -> Vec<Vec<String>> {
        let ip = self.candidate_ip;
        let u = &creds.ufrag;
        let (p1, p2, p3) = (self.port(rng), self.port(rng), self.port(rng));
        let f = |rng: &mut SmallRng| rng.random_range(100_000_000u32..4_000_000_000);
        let host = format!(
            "candidate:{} 1 udp 2122260223 {ip} {p1} typ host generation 0 ufrag {u} network-id 1",
            f(rng)
        );
        let tcp = format!(
            "candidate:{} 1 tcp 1518280447 {ip} 9 typ host tcptype active generation 0 ufrag {u} network-id 1",
            f(rng)
        );
        let srflx = format!(
            "candidate:{} 1 udp 1686052607 {ip} {p2} typ srflx raddr {ip} rport {p1} generation 0 ufrag {u} network-id 1",
            f(rng)
        );
        let host2 = format!(
            "candidate:{} 1 udp 2122194687 {ip} {p3} typ host generation 0 ufrag {u} network-id 2",
            f(rng)
        );
        match batches {
            0 => Vec::new(),
            1 => vec![vec![host, tcp, srflx]],
            2 => vec![vec![host, tcp], vec![srflx]],
            _ => {
                let mut out = vec![vec![host, tcp], vec![srflx], vec![host2]];
                out.extend((3..batches).map(|_| Vec::new()));
                out
            }
        }
    }

    /// All of a non-trickling client's candidates (what goes in its offer or restart fragment).
    pub fn full_candidates(&self, profile: Profile, rng: &mut SmallRng) -> Vec<String> {
        let ip = self.candidate_ip;
        match profile {
            Profile::Chromium | Profile::Obs | Profile::ObsSimulcast => Vec::new(),
            Profile::Ffmpeg => vec![format!(
                "candidate:1 1 udp 2130706431 {ip} {} typ host",
                self.port(rng)
            )],
            Profile::Gstreamer => vec![
                format!(
                    "candidate:1 1 UDP 2015363327 {ip} {} typ host",
                    self.port(rng)
                ),
                format!("candidate:2 1 TCP 1015021823 {ip} 9 typ host tcptype active"),
                format!(
                    "candidate:3 1 UDP 1679819007 {ip} {} typ srflx raddr {ip} rport {}",
                    self.port(rng),
                    self.port(rng)
                ),
            ],
        }
    }

    fn chromium_offer(&self, c: &IceCredentials, rng: &mut SmallRng) -> String {
        let session: u64 = rng.random_range(1u64 << 60..1u64 << 62);
        let stream = uuid_like(rng);
        let (audio_track, video_track) = (uuid_like(rng), uuid_like(rng));
        let (a_ssrc, v_ssrc, rtx_ssrc): (u32, u32, u32) =
            (rng.random(), rng.random(), rng.random());
        let cname = ice_string(rng, 16);
        let fp = &self.fingerprint;
        let (u, p) = (&c.ufrag, &c.pwd);
        let mut s = String::with_capacity(3000);
        let _ = write!(
            s,
            "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS {stream}\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n\
             a=ice-options:trickle\r\na=fingerprint:{fp}\r\na=setup:actpass\r\na=mid:0\r\n\
             a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
             a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=sendonly\r\na=msid:{stream} {audio_track}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\n\
             a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\n\
             a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n\
             a=ssrc:{a_ssrc} cname:{cname}\r\na=ssrc:{a_ssrc} msid:{stream} {audio_track}\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127 104\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n\
             a=ice-options:trickle\r\na=fingerprint:{fp}\r\na=setup:actpass\r\na=mid:1\r\n\
             a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
             a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
             a=extmap:13 urn:3gpp:video-orientation\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=sendonly\r\na=msid:{stream} {video_track}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
             a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
             a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 goog-remb\r\na=rtcp-fb:102 transport-cc\r\n\
             a=rtcp-fb:102 ccm fir\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
             a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             a=rtpmap:127 H264/90000\r\na=rtcp-fb:127 goog-remb\r\na=rtcp-fb:127 transport-cc\r\n\
             a=rtcp-fb:127 ccm fir\r\na=rtcp-fb:127 nack\r\na=rtcp-fb:127 nack pli\r\n\
             a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=127\r\n\
             a=ssrc-group:FID {v_ssrc} {rtx_ssrc}\r\n\
             a=ssrc:{v_ssrc} cname:{cname}\r\na=ssrc:{v_ssrc} msid:{stream} {video_track}\r\n\
             a=ssrc:{rtx_ssrc} cname:{cname}\r\na=ssrc:{rtx_ssrc} msid:{stream} {video_track}\r\n"
        );
        s
    }

    /// OBS's offer; with `layers` > 1 its simulcast shape: the video's SSRCs (the audio's plus
    /// 1, 2, ...) are not signalled, and the layers are told apart by the mid and rid header
    /// extensions.
    fn obs_offer(&self, c: &IceCredentials, rng: &mut SmallRng, layers: u8) -> String {
        let session: u64 = rng.random_range(1u64 << 60..1u64 << 62);
        let (a_ssrc, v_ssrc): (u32, u32) = (rng.random(), rng.random());
        let cname = ice_string(rng, 16);
        let fp = &self.fingerprint;
        let (u, p) = (&c.ufrag, &c.pwd);
        let (video_extmaps, video_ssrcs, rids) = if layers > 1 {
            let rids: Vec<String> = (0..layers).map(|i| i.to_string()).collect();
            let mut lines: String = rids.iter().map(|r| format!("a=rid:{r} send\r\n")).collect();
            let _ = write!(lines, "a=simulcast:send {}\r\n", rids.join(";"));
            (
                "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                 a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
                String::new(),
                lines,
            )
        } else {
            (
                "",
                format!(
                    "a=ssrc:{v_ssrc} cname:{cname}\r\na=ssrc:{v_ssrc} msid:{cname} {cname}-video\r\n"
                ),
                String::new(),
            )
        };
        format!(
            "v=0\r\no=rtc {session} 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=group:BUNDLE 0 1\r\na=group:LS 0 1\r\na=msid-semantic:WMS *\r\n\
             a=ice-options:ice2,trickle\r\na=fingerprint:{fp}\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
             a=ssrc:{a_ssrc} cname:{cname}\r\na=ssrc:{a_ssrc} msid:{cname} {cname}-audio\r\n\
             a=msid:{cname} {cname}-audio\r\na=rtcp-mux\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
             a=setup:actpass\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             {video_extmaps}a=sendonly\r\n{video_ssrcs}\
             a=msid:{cname} {cname}-video\r\na=rtcp-mux\r\n\
             a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
             a=rtcp-fb:96 goog-remb\r\n\
             a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n\
             {rids}a=setup:actpass\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"
        )
    }

    fn ffmpeg_offer(&self, c: &IceCredentials, rng: &mut SmallRng) -> String {
        let session: u64 = rng.random_range(1u64 << 60..1u64 << 62);
        let a_ssrc: u32 = rng.random();
        let v_ssrc = a_ssrc.wrapping_add(1);
        let rtx_ssrc = a_ssrc.wrapping_add(2);
        let fp = &self.fingerprint;
        let (u, p) = (&c.ufrag, &c.pwd);
        let candidate = self
            .full_candidates(Profile::Ffmpeg, rng)
            .into_iter()
            .map(|c| format!("a={c}\r\n"))
            .collect::<String>();
        format!(
            "v=0\r\no=FFmpeg {session} 2 IN IP4 127.0.0.1\r\ns=FFmpegPublishSession\r\nt=0 0\r\n\
             a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\na=fingerprint:{fp}\r\na=setup:passive\r\n\
             a=mid:0\r\na=sendonly\r\na=msid:FFmpeg audio\r\na=rtcp-mux\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=ssrc:{a_ssrc} cname:FFmpeg\r\na=ssrc:{a_ssrc} msid:FFmpeg audio\r\n{candidate}\
             m=video 9 UDP/TLS/RTP/SAVPF 106 105\r\nc=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\na=fingerprint:{fp}\r\na=setup:passive\r\n\
             a=mid:1\r\na=sendonly\r\na=msid:FFmpeg video\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
             a=rtpmap:106 H264/90000\r\n\
             a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001e\r\n\
             a=rtcp-fb:106 nack\r\na=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=106\r\n\
             a=ssrc-group:FID {v_ssrc} {rtx_ssrc}\r\n\
             a=ssrc:{v_ssrc} cname:FFmpeg\r\na=ssrc:{v_ssrc} msid:FFmpeg video\r\n"
        )
    }

    fn gstreamer_offer(&self, c: &IceCredentials, rng: &mut SmallRng) -> String {
        let session: u64 = rng.random_range(1u64 << 60..1u64 << 62);
        let (v_ssrc, a_ssrc): (u32, u32) = (rng.random(), rng.random());
        let stream = ice_string(rng, 12);
        let fp = &self.fingerprint;
        let (u, p) = (&c.ufrag, &c.pwd);
        let candidates = self
            .full_candidates(Profile::Gstreamer, rng)
            .into_iter()
            .map(|c| format!("a={c}\r\n"))
            .collect::<String>();
        format!(
            "v=0\r\no=- {session} 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             a=ice-options:trickle\r\na=group:BUNDLE video0 audio1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
             a=setup:actpass\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\na=rtcp-mux\r\n\
             a=rtcp-rsize\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n\
             a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n\
             a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;level-asymmetry-allowed=1\r\n\
             a=ssrc:{v_ssrc} msid:{stream} video0\r\na=ssrc:{v_ssrc} cname:{stream}\r\n\
             a=mid:video0\r\na=fingerprint:{fp}\r\na=msid:{stream} video0\r\n\
             {candidates}a=end-of-candidates\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\n\
             a=setup:actpass\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\na=rtcp-mux\r\n\
             a=rtcp-rsize\r\na=sendonly\r\na=rtpmap:97 OPUS/48000/2\r\n\
             a=rtcp-fb:97 nack\r\na=rtcp-fb:97 nack pli\r\n\
             a=fmtp:97 sprop-maxcapturerate=48000;sprop-stereo=0\r\n\
             a=ssrc:{a_ssrc} msid:{stream} audio1\r\na=ssrc:{a_ssrc} cname:{stream}\r\n\
             a=mid:audio1\r\na=fingerprint:{fp}\r\na=msid:{stream} audio1\r\n"
        )
    }
}

fn uuid_like(rng: &mut SmallRng) -> String {
    let v: u128 = rng.random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The SHA-256 fingerprint of a freshly generated self-signed ECDSA P-256 certificate, in the
/// upper-case form browsers put in SDP.
fn certificate_fingerprint() -> Result<String, String> {
    use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
    let provider = rtc::crypto::default_provider().map_err(|e| e.to_string())?;
    let params = CertificateParams::new(vec!["loadgen".to_owned()]).map_err(|e| e.to_string())?;
    let cert = RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        params,
    )
    .map_err(|e| e.to_string())?;
    let fp = cert
        .get_fingerprints(provider.crypto())
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the certificate has no fingerprint")?;
    Ok(format!(
        "{} {}",
        fp.algorithm,
        fp.value.to_ascii_uppercase()
    ))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;
    use crate::sdp::SdpFrag;

    fn identity() -> Identity {
        Identity {
            fingerprint: "sha-256 AA:BB".into(),
            candidate_ip: IpAddr::from([127, 0, 0, 1]),
            ports: vec![5000, 5001],
        }
    }

    #[test]
    fn offers_carry_the_profile_credentials_and_only_our_address() {
        let id = identity();
        let mut rng = SmallRng::seed_from_u64(7);
        for profile in Profile::ALL {
            let creds = profile.credentials(&mut rng);
            assert!(creds.ufrag.len() >= 4 && creds.pwd.len() >= 22);
            let offer = id.offer(profile, &creds, &mut rng);
            let frag = SdpFrag::parse(&offer);
            assert_eq!(frag.credentials.as_ref(), Some(&creds), "{profile:?}");
            assert!(offer.contains("a=fingerprint:sha-256 AA:BB\r\n"));
            assert!(offer.contains("a=group:BUNDLE "));
            assert_eq!(offer.matches("a=rtcp-mux\r\n").count(), 2);
            assert_eq!(offer.matches("a=sendonly\r\n").count(), 2);
            let want = match profile {
                Profile::Chromium | Profile::Obs | Profile::ObsSimulcast => 0,
                Profile::Ffmpeg => 1,
                Profile::Gstreamer => 3,
            };
            assert_eq!(frag.candidates.len(), want, "{profile:?}");
            for c in &frag.candidates {
                assert_eq!(c.split(' ').nth(4), Some("127.0.0.1"), "{c}");
            }
        }
    }

    #[test]
    fn obs_simulcast_offer_has_three_rids_and_no_video_ssrc() {
        let id = identity();
        let mut rng = SmallRng::seed_from_u64(3);
        let creds = Profile::ObsSimulcast.credentials(&mut rng);
        let offer = id.offer(Profile::ObsSimulcast, &creds, &mut rng);
        let video = &offer[offer.find("m=video").unwrap()..];
        let lines = |prefix: &str| -> Vec<&str> {
            video.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        assert_eq!(
            lines("a=extmap:"),
            [
                "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
                "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
            ]
        );
        assert_eq!(
            lines("a=rid:"),
            ["a=rid:0 send", "a=rid:1 send", "a=rid:2 send"]
        );
        assert_eq!(lines("a=simulcast:"), ["a=simulcast:send 0;1;2"]);
        assert_eq!(lines("a=msid:").len(), 1);
        assert!(lines("a=ssrc").is_empty(), "{video}");
        assert!(
            !video.contains("rtx") && !video.contains("repaired"),
            "{video}"
        );
        // The audio keeps its SSRC, as OBS's does.
        assert_eq!(
            offer[..offer.find("m=video").unwrap()]
                .matches("a=ssrc:")
                .count(),
            2
        );
        // Plain OBS is unchanged: its video SSRC, no rids.
        let plain = id.offer(Profile::Obs, &creds, &mut rng);
        assert_eq!(plain.matches("a=ssrc:").count(), 4);
        assert!(!plain.contains("a=rid:") && !plain.contains("a=simulcast"));
        assert_eq!(Profile::ObsSimulcast.simulcast_layers(), 3);
        assert_eq!(Profile::Obs.simulcast_layers(), 1);
    }

    #[test]
    fn trickle_batches_name_only_sink_ports() {
        let id = identity();
        let mut rng = SmallRng::seed_from_u64(1);
        let creds = Profile::Chromium.credentials(&mut rng);
        for n in 1..=3 {
            let batches = id.trickle_batches(&creds, n, &mut rng);
            assert_eq!(batches.len(), n);
            for c in batches.iter().flatten() {
                let fields: Vec<&str> = c.split(' ').collect();
                assert_eq!(fields[4], "127.0.0.1");
                assert!(["5000", "5001", "9"].contains(&fields[5]), "{c}");
                assert!(c.contains(&format!("ufrag {}", creds.ufrag)));
            }
        }
    }

    #[tokio::test]
    async fn a_real_certificate_fingerprint() {
        let id = Identity::new(IpAddr::from([127, 0, 0, 1]), Arc::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let hex = id.fingerprint.strip_prefix("sha-256 ").unwrap_or_default();
        assert_eq!(hex.split(':').count(), 32, "{}", id.fingerprint);
        assert_eq!(id.ports.len(), SINK_SOCKETS);
    }
}
