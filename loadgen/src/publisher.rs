//! The WHIP publisher: signalling over HTTP (RFC 9725) plus a driven rtc peer connection.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use hyper::header::{CONTENT_TYPE, ETAG, HeaderMap, LOCATION};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp::packetizer::{Packetizer, new_packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

use crate::Error;
use crate::driver::{ConnState, PeerDriver, RxStats};
use crate::media::{
    AUDIO_CLOCK_RATE, AUDIO_FRAME_MS, Clip, H264Source, MAX_LAYERS, OpusSource, VIDEO_CLOCK_RATE,
    VIDEO_FPS,
};
use crate::sdp::{IceCredentials, SdpFrag, resolve_location, rewrite_ice};
use crate::whip_client::{APPLICATION_SDP, MAX_REDIRECTS, Response, TRICKLE_ICE_SDPFRAG, WhipHttp};

/// Payload type offered for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type offered for H.264.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// `a=fmtp` of the offered H.264 codec.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// RTP packets are sized to fit this (payload plus RTP header, before SRTP).
const RTP_MTU: usize = 1200;

/// How to reach the WHIP endpoint and how to signal ICE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// WHIP endpoint URL, e.g. `http://127.0.0.1:8080/whip/demo` (plain HTTP only).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>` on every request when set.
    pub token: Option<String>,
    /// `true`: the offer carries no candidates; they are sent in one PATCH after the `201`, with
    /// `If-Match: <etag>`. `false`: the candidate is inside the offer.
    pub trickle: bool,
    /// Local address the UDP socket is bound to (port chosen by the OS). It is also the only
    /// host candidate advertised, so it must be a concrete address, not `0.0.0.0`.
    pub bind_ip: IpAddr,
    /// H.264 simulcast layers, 1 to [`MAX_LAYERS`]. 1 is a plain video track. More send the
    /// way OBS Studio does: rids `0`, `1`, ... (`0` the full size, layer `i` of `N` at
    /// `(N - i) / N` of it, see [`Clip::embedded_layer`]) in `a=rid`/`a=simulcast:send`, no
    /// `a=ssrc` for video, every packet carrying the `sdes:mid` and `sdes:rtp-stream-id`
    /// header extensions, layer SSRCs the audio's plus 1, 2, ... (never signalled).
    pub simulcast: u8,
}

impl PublisherConfig {
    /// Config for `endpoint` with no token, candidates in the offer and `bind_ip` 127.0.0.1.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            token: None,
            trickle: false,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            simulcast: 1,
        }
    }
}

/// What [`Publisher::send_media`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentStats {
    /// Opus RTP packets written (one per 20 ms frame).
    pub audio_packets: u64,
    /// H.264 RTP packets written.
    pub video_packets: u64,
    /// Of which per simulcast layer (index 0 the full size; one layer without simulcast).
    pub layer_packets: [u64; MAX_LAYERS as usize],
    /// H.264 access units sent (a frame counts once, however many layers carry it).
    pub video_frames: u64,
    /// Of which IDR (with SPS and PPS).
    pub keyframes: u64,
    /// RTP payload bytes, both kinds.
    pub payload_bytes: u64,
    /// `write_rtp` calls the connection refused (not counted above).
    pub write_errors: u64,
}

/// Sending state of one RTP stream: the audio, or one video layer.
#[derive(Debug)]
struct Track {
    sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    packetizer: Box<dyn Packetizer>,
    /// Header extensions (id, value) put on every packet: a simulcast layer's mid and rid.
    extensions: Vec<(u8, Bytes)>,
}

#[derive(Debug)]
struct MediaState {
    audio: Track,
    /// One per simulcast layer, the full size first.
    video: Vec<Track>,
    /// When the previous `send_media` ended: the gap is skipped in RTP time so timestamps keep
    /// following the wall clock.
    last_end: Option<Instant>,
}

/// A WHIP publisher: one session on a WHIP endpoint, with its own UDP socket and peer connection.
///
/// Dropping it closes the peer connection without telling the server; call
/// [`Publisher::delete`] to end the session properly.
#[derive(Debug)]
pub struct Publisher {
    trickle: bool,
    /// Video layers sent (see [`PublisherConfig::simulcast`]).
    simulcast: u8,
    http: WhipHttp,
    session_url: String,
    etag: String,
    post_headers: HeaderMap,
    /// The server's answer, with the ICE parts of the latest restart applied.
    remote_sdp: String,
    /// Local ICE state: bundle group, first m-line and mid, credentials, candidates.
    local: SdpFrag,
    driver: PeerDriver,
    media: Mutex<MediaState>,
    /// Video frames sent so far, over every `send_media*` call; shared with watchers.
    frames_sent: Arc<AtomicU64>,
}

impl Publisher {
    /// POSTs an SDP offer (sendonly Opus + H.264 packetization-mode=1, BUNDLE, rtcp-mux), expects
    /// `201` with `Location` (resolved against the endpoint), `ETag` and an SDP answer, applies
    /// the answer and starts the driver task. With `trickle`, the local candidate is then PATCHed
    /// as an sdpfrag with `If-Match: <etag>`, expecting `204`.
    pub async fn connect(cfg: PublisherConfig) -> Result<Publisher, Error> {
        let http = WhipHttp::new(cfg.token.clone());
        Self::connect_with(cfg, http, true).await
    }

    /// [`Publisher::connect`] over a given HTTP client (shared pool, observer). With `trickle`
    /// and not `trickle_patch`, the offer has no candidates and none are sent at all, as OBS
    /// does: the server learns the address from the connectivity checks (peer-reflexive).
    pub(crate) async fn connect_with(
        cfg: PublisherConfig,
        http: WhipHttp,
        trickle_patch: bool,
    ) -> Result<Publisher, Error> {
        if cfg.bind_ip.is_unspecified() {
            return Err(Error::Config(format!(
                "bind_ip {} is unspecified; the host candidate needs a concrete address",
                cfg.bind_ip
            )));
        }
        if !(1..=MAX_LAYERS).contains(&cfg.simulcast) {
            return Err(Error::Config(format!(
                "simulcast {}: 1 to {MAX_LAYERS} layers",
                cfg.simulcast
            )));
        }
        if !cfg.endpoint.starts_with("http://") {
            return Err(Error::Config(format!(
                "endpoint {:?} is not an http:// URL",
                cfg.endpoint
            )));
        }
        let socket = tokio::net::UdpSocket::bind((cfg.bind_ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let mut pc = build_peer_connection(cfg.simulcast)?;
        let (audio, video) = add_tracks(&mut pc, cfg.simulcast)?;

        let candidate = host_candidate(local_addr)?;
        if !cfg.trickle {
            add_candidate_and_finish(&mut pc, &candidate)?;
        }
        let offer = pc.create_offer(None).map_err(Error::rtc("create_offer"))?;
        pc.set_local_description(Instant::now(), offer.clone())
            .map_err(Error::rtc("set_local_description(offer)"))?;
        if cfg.trickle {
            add_candidate_and_finish(&mut pc, &candidate)?;
        }
        let mut local = SdpFrag::parse(&offer.sdp);
        local.ice_options_trickle = true;
        local.candidates = vec![candidate.candidate.clone()];
        local.end_of_candidates = true;
        if local.credentials.is_none() {
            return Err(Error::protocol(
                "create_offer",
                "the local offer has no ICE credentials",
            ));
        }

        // The same offer to each node a redirect names (RFC 9725 §4.5), up to MAX_REDIRECTS.
        let mut endpoint = cfg.endpoint.clone();
        let mut hops = 0;
        let response = loop {
            let response = http
                .send(
                    Method::POST,
                    &endpoint,
                    Some(APPLICATION_SDP),
                    None,
                    Bytes::from(offer.sdp.clone()),
                )
                .await?;
            let next = matches!(response.status, 307 | 308)
                .then(|| response.header(LOCATION.as_str()))
                .flatten()
                .and_then(|l| resolve_location(&endpoint, l));
            match next {
                Some(next) if hops < MAX_REDIRECTS => {
                    endpoint = next;
                    hops += 1;
                }
                _ => break response.require_status("POST", &endpoint, &[201], "201")?,
            }
        };
        let location = response
            .header(LOCATION.as_str())
            .ok_or_else(|| Error::protocol("POST answer", "201 without Location"))?;
        let session_url = resolve_location(&endpoint, location).ok_or_else(|| {
            Error::protocol("POST answer", format!("unusable Location {location:?}"))
        })?;
        let prepared = Prepared {
            trickle: cfg.trickle,
            simulcast: cfg.simulcast,
            trickle_patch,
            pc,
            socket,
            local,
            audio,
            video,
        };
        match prepared
            .establish(http.clone(), session_url.clone(), response)
            .await
        {
            Ok(publisher) => Ok(publisher),
            Err(err) => {
                // Do not leave the session behind on the server.
                let _ = http
                    .send(Method::DELETE, &session_url, None, None, Bytes::new())
                    .await;
                Err(err)
            }
        }
    }

    /// The session URL (the resolved `Location` of the `201`).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// The current entity tag, as the server sent it (quotes included); empty if it sent none.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Headers of the `201 Created` (for checking `Link`, CORS, ...).
    pub fn post_headers(&self) -> &HeaderMap {
        &self.post_headers
    }

    /// Disappears without DELETE or DTLS close, like a crashed client (see
    /// [`PeerDriver::vanish`]).
    pub async fn vanish(self) {
        self.driver.vanish().await;
    }

    /// Video frames sent so far, counted as they go out (the counter can be read while
    /// `send_media*` runs, e.g. for live progress).
    pub fn frames_sent(&self) -> Arc<AtomicU64> {
        self.frames_sent.clone()
    }

    /// The local UDP address (the advertised host candidate).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.driver.local_addr()
    }

    /// The latest peer connection / ICE state.
    pub fn state(&self) -> ConnState {
        self.driver.state()
    }

    /// What the server sent back so far (RTCP reports, NACKs, PLIs).
    pub fn rx_stats(&self) -> RxStats {
        self.driver.rx_stats()
    }

    /// Waits until the peer connection is connected (and ICE connected); fails early if it
    /// fails or closes.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        self.driver.wait_connected(timeout).await
    }

    /// Sends the test clip ([`Clip::embedded`], looped) in real time for `duration`: H.264
    /// 640x360 at 30 fps (SPS + PPS + IDR every 30 frames, starting with one; IDRs of about
    /// 9 KB, so FU-A is used) and stereo Opus in 20 ms packets. Each call starts the clip from
    /// its beginning; RTP timestamps go on from the previous call, the gap between included.
    /// With [`PublisherConfig::simulcast`] layers, each layer sends the same frames from the
    /// clip of its size. PLI and FIR are ignored, as OBS does: IDRs come when the clip has them.
    /// Requires a connected peer connection.
    pub async fn send_media(&self, duration: Duration) -> Result<SentStats, Error> {
        self.send_frames(duration, false).await
    }

    /// [`Publisher::send_media`] with a [`FrameStamp`](crate::media::FrameStamp) SEI in every
    /// video frame (send time and frame number, from 0), for end-to-end latency and loss
    /// measurement downstream.
    pub async fn send_media_stamped(&self, duration: Duration) -> Result<SentStats, Error> {
        self.send_frames(duration, true).await
    }

    async fn send_frames(&self, duration: Duration, stamped: bool) -> Result<SentStats, Error> {
        let state = self.driver.state();
        if !state.is_connected() {
            return Err(Error::ConnectionLost(format!(
                "{} (ICE {}), not connected",
                state.peer, state.ice
            )));
        }
        let clip = Clip::embedded()?;
        let layers = self.simulcast;
        // One source per layer, all from frame 0: the clips have the same frames and GOP, so
        // the layers carry the same picture (and stamp number) at the same RTP time.
        let mut h264 = (0..layers)
            .map(|layer| {
                let clip = Clip::embedded_layer(layer, layers)?;
                Ok(if stamped {
                    H264Source::stamped(clip)
                } else {
                    H264Source::new(clip)
                })
            })
            .collect::<Result<Vec<_>, crate::media::ClipError>>()?;
        let mut opus = OpusSource::new(clip);
        let audio_period = Duration::from_millis(u64::from(AUDIO_FRAME_MS));
        let video_period = Duration::from_nanos(1_000_000_000 / u64::from(VIDEO_FPS));

        let start = tokio::time::Instant::now();
        let end = start + duration;
        {
            let mut media = self.lock_media();
            if let Some(last) = media.last_end {
                let gap = last.elapsed();
                media.audio.skip(gap, AUDIO_CLOCK_RATE);
                for video in &mut media.video {
                    video.skip(gap, VIDEO_CLOCK_RATE);
                }
            }
        }
        let mut stats = SentStats::default();
        let mut next_audio = start;
        let mut next_video = start;
        loop {
            let next = next_audio.min(next_video);
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next).await;
            if !self.driver.is_running() {
                return Err(Error::DriverGone);
            }
            let state = self.driver.state();
            if state.is_dead() {
                return Err(Error::ConnectionLost(format!(
                    "{} (ICE {})",
                    state.peer, state.ice
                )));
            }
            let now = tokio::time::Instant::now();
            let std_now = Instant::now();
            // Each packet with its sender and its video layer (`None`: audio).
            let mut batch: Vec<(RTCRtpSenderId, rtp::Packet, Option<usize>)> = Vec::new();
            {
                let mut media = self.lock_media();
                // The sources loop forever (a parsed clip is never empty): `None` never comes.
                while next_audio <= now && next_audio < end {
                    next_audio += audio_period;
                    let Some(packet) = opus.next() else { break };
                    for p in media
                        .audio
                        .packetize(std_now, &packet.data, packet.duration)?
                    {
                        batch.push((media.audio.sender, p, None));
                    }
                }
                while next_video <= now && next_video < end {
                    next_video += video_period;
                    for (layer, (track, source)) in
                        media.video.iter_mut().zip(&mut h264).enumerate()
                    {
                        let Some(frame) = source.next() else { break };
                        if layer == 0 {
                            stats.video_frames += 1;
                            self.frames_sent.fetch_add(1, Ordering::Relaxed);
                            stats.keyframes += u64::from(frame.keyframe);
                        }
                        for p in track.packetize(std_now, &frame.data, frame.duration)? {
                            batch.push((track.sender, p, Some(layer)));
                        }
                    }
                }
            }
            let (written, errors) = self.driver.with_pc(|pc| {
                let mut written = Vec::with_capacity(batch.len());
                let mut errors = 0u64;
                for (sender, packet, layer) in batch {
                    let len = packet.payload.len() as u64;
                    let result = match pc.rtp_sender(sender) {
                        Some(mut s) => s.write_rtp(std_now, packet),
                        None => Err(rtc::shared::error::Error::ErrRTPSenderNotExisted),
                    };
                    match result {
                        Ok(()) => written.push((layer, len)),
                        Err(err) => {
                            if errors == 0 {
                                tracing::debug!(%err, "write_rtp");
                            }
                            errors += 1;
                        }
                    }
                }
                (written, errors)
            });
            stats.write_errors += errors;
            for (layer, len) in written {
                match layer {
                    Some(layer) => {
                        stats.video_packets += 1;
                        if let Some(n) = stats.layer_packets.get_mut(layer) {
                            *n += 1;
                        }
                    }
                    None => stats.audio_packets += 1,
                }
                stats.payload_bytes += len;
            }
        }
        self.lock_media().last_end = Some(Instant::now());
        Ok(stats)
    }

    /// ICE restart (RFC 9725 §4.3.2): new local ufrag/pwd, sent as an sdpfrag PATCH with
    /// `If-Match: "*"`; expects `200` with an sdpfrag carrying the server's new credentials (and
    /// candidates) and a new `ETag`. The peer connection then restarts: the offer staged by
    /// `create_offer` after `restart_ice()` becomes the local description, and the server's
    /// answer, rewritten with its new credentials and candidates, the remote one. With
    /// `trickle`, the local candidate is PATCHed again with the new tag.
    ///
    /// If the PATCH is refused, the current ICE session is left as it was.
    pub async fn restart_ice(&mut self) -> Result<(), Error> {
        let offer = self.driver.with_pc(|pc| {
            pc.restart_ice();
            pc.create_offer(None)
                .map_err(Error::rtc("create_offer(ice restart)"))
        })?;
        let new_local = SdpFrag::parse(&offer.sdp);
        let Some(new_creds) = new_local.credentials else {
            return Err(Error::protocol(
                "ICE restart",
                "the restart offer has no ICE credentials",
            ));
        };
        if Some(&new_creds) == self.local.credentials.as_ref() {
            return Err(Error::protocol(
                "ICE restart",
                "the restart offer kept the old ICE credentials",
            ));
        }
        let frag = SdpFrag {
            credentials: Some(new_creds.clone()),
            candidates: if self.trickle {
                Vec::new()
            } else {
                self.local.candidates.clone()
            },
            end_of_candidates: !self.trickle,
            ..self.local.clone()
        };
        let url = self.session_url.clone();
        let response = self
            .http
            .send(
                Method::PATCH,
                &url,
                Some(TRICKLE_ICE_SDPFRAG),
                Some("*"),
                Bytes::from(frag.to_sdpfrag()),
            )
            .await?
            .require_status("PATCH", &url, &[200], "200 (ICE restart)")?;
        warn_content_type(&response, TRICKLE_ICE_SDPFRAG, "ICE restart answer");
        let etag = response
            .header(ETAG.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::protocol("ICE restart answer", "200 without ETag"))?
            .to_owned();
        let body = std::str::from_utf8(&response.body)
            .map_err(|_| Error::protocol("ICE restart answer", "sdpfrag is not UTF-8"))?;
        let remote = SdpFrag::parse(body);
        let Some(remote_creds) = remote.credentials else {
            return Err(Error::protocol(
                "ICE restart answer",
                format!("sdpfrag has no ice-ufrag/ice-pwd: {body:?}"),
            ));
        };
        let remote_sdp = rewrite_ice(&self.remote_sdp, &remote_creds, &remote.candidates, true);
        let answer = RTCSessionDescription::answer(remote_sdp.clone())
            .map_err(Error::rtc("parse rewritten answer"))?;
        self.driver.with_pc(|pc| {
            pc.set_local_description(Instant::now(), offer)
                .map_err(Error::rtc("set_local_description(ice restart offer)"))?;
            pc.set_remote_description(Instant::now(), answer)
                .map_err(Error::rtc("set_remote_description(ice restart answer)"))
        })?;
        self.etag = etag;
        self.remote_sdp = remote_sdp;
        self.local.credentials = Some(new_creds);
        if self.trickle {
            self.trickle_candidates().await?;
        }
        Ok(())
    }

    /// PATCHes the session with `body` as `application/trickle-ice-sdpfrag` and the given
    /// `If-Match` (none if `None`); returns status, headers and body whatever the status.
    pub async fn patch_raw(
        &self,
        if_match: Option<&str>,
        body: String,
    ) -> Result<(u16, HeaderMap, Bytes), Error> {
        let r = self
            .http
            .send(
                Method::PATCH,
                &self.session_url,
                Some(TRICKLE_ICE_SDPFRAG),
                if_match,
                Bytes::from(body),
            )
            .await?;
        Ok((r.status, r.headers, r.body))
    }

    /// The current local sdpfrag: `a=ice-options:trickle`, `a=group:BUNDLE ...`, the first
    /// m-line and its mid, `a=ice-ufrag`, `a=ice-pwd`, the host candidate and
    /// `a=end-of-candidates`.
    pub fn local_sdpfrag(&self) -> String {
        self.local.to_sdpfrag()
    }

    /// The current local ICE credentials.
    pub fn local_credentials(&self) -> Option<&IceCredentials> {
        self.local.credentials.as_ref()
    }

    /// DELETEs the session and closes the peer connection. Returns the DELETE status (whatever
    /// it is); the connection is closed in any case.
    pub async fn delete(self) -> Result<u16, Error> {
        let result = self
            .http
            .send(Method::DELETE, &self.session_url, None, None, Bytes::new())
            .await
            .map(|r| r.status);
        self.driver.close().await;
        result
    }

    async fn trickle_candidates(&self) -> Result<(), Error> {
        if self.etag.is_empty() {
            return Err(Error::protocol(
                "trickle",
                "cannot PATCH candidates: the server sent no ETag",
            ));
        }
        let url = &self.session_url;
        self.http
            .send(
                Method::PATCH,
                url,
                Some(TRICKLE_ICE_SDPFRAG),
                Some(&self.etag),
                Bytes::from(self.local_sdpfrag()),
            )
            .await?
            .require_status("PATCH", url, &[204], "204 (trickle)")?;
        Ok(())
    }

    fn lock_media(&self) -> std::sync::MutexGuard<'_, MediaState> {
        self.media.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A peer connection with its local description set, waiting for the server's answer.
struct Prepared {
    trickle: bool,
    simulcast: u8,
    trickle_patch: bool,
    pc: RTCPeerConnection,
    socket: tokio::net::UdpSocket,
    local: SdpFrag,
    audio: SendTrack,
    video: SendTrack,
}

impl Prepared {
    /// Applies the `201` answer, starts the driver and trickles if configured.
    async fn establish(
        self,
        http: WhipHttp,
        session_url: String,
        response: Response,
    ) -> Result<Publisher, Error> {
        let Prepared {
            trickle,
            simulcast,
            trickle_patch,
            mut pc,
            socket,
            local,
            audio,
            video,
        } = self;
        let etag = response
            .header(ETAG.as_str())
            .unwrap_or_default()
            .to_owned();
        if etag.is_empty() {
            tracing::warn!(%session_url, "201 without ETag");
        }
        warn_content_type(&response, APPLICATION_SDP, "POST answer");
        let answer_sdp = String::from_utf8(response.body.to_vec())
            .map_err(|_| Error::protocol("POST answer", "SDP answer is not UTF-8"))?;
        let answer = RTCSessionDescription::answer(answer_sdp.clone())
            .map_err(Error::rtc("parse answer"))?;
        pc.set_remote_description(Instant::now(), answer)
            .map_err(Error::rtc("set_remote_description(answer)"))?;

        let media = MediaState {
            audio: Track::negotiated(&mut pc, &audio, 0, AUDIO_CLOCK_RATE)?,
            video: (0..video.encodings.len())
                .map(|i| Track::negotiated(&mut pc, &video, i, VIDEO_CLOCK_RATE))
                .collect::<Result<_, _>>()?,
            last_end: None,
        };
        let driver = PeerDriver::spawn(pc, socket, None)?;

        let publisher = Publisher {
            trickle,
            simulcast,
            http,
            session_url,
            etag,
            post_headers: response.headers,
            remote_sdp: answer_sdp,
            local,
            driver,
            media: Mutex::new(media),
            frames_sent: Arc::default(),
        };
        if publisher.trickle && trickle_patch {
            publisher.trickle_candidates().await?;
        }
        Ok(publisher)
    }
}

impl Track {
    /// Reads the negotiated payload type (and, for a simulcast layer, the header extension
    /// ids) of `track`'s sender and sets up a packetizer for its encoding `encoding`.
    fn negotiated(
        pc: &mut RTCPeerConnection,
        track: &SendTrack,
        encoding: usize,
        clock_rate: u32,
    ) -> Result<Track, Error> {
        let SendTrack {
            sender,
            ref codec,
            ref encodings,
        } = *track;
        let Some((rid, ssrc)) = encodings.get(encoding).cloned() else {
            return Err(Error::protocol("answer", "no such encoding"));
        };
        let mid = pc
            .rtp_transceiver(sender.into())
            .and_then(|t| t.mid().clone())
            .unwrap_or_default();
        let mut handle = pc
            .rtp_sender(sender)
            .ok_or_else(|| Error::protocol("answer", "RTP sender vanished"))?;
        let parameters = &handle.get_parameters().rtp_parameters;
        let extensions = if rid.is_empty() {
            Vec::new()
        } else {
            // rtc binds a layer's unsignalled SSRC to its rid only through these two, so a
            // simulcast answer without them cannot work.
            let id = |uri: &str| {
                parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .and_then(|e| u8::try_from(e.id).ok())
                    .ok_or_else(|| {
                        Error::protocol(
                            "answer",
                            format!("simulcast, but the {uri} header extension is not negotiated"),
                        )
                    })
            };
            vec![
                (id(SDES_MID_URI)?, Bytes::from(mid)),
                (id(SDES_RTP_STREAM_ID_URI)?, Bytes::from(rid)),
            ]
        };
        let payload_type = parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                Error::protocol(
                    "answer",
                    format!("no {} codec negotiated", codec.rtp_codec.mime_type),
                )
            })?;
        let payloader = codec
            .rtp_codec
            .payloader()
            .map_err(Error::rtc("payloader"))?;
        let packetizer = new_packetizer(
            Instant::now(),
            RTP_MTU,
            payload_type,
            ssrc,
            payloader,
            Box::new(new_random_sequencer()),
            clock_rate,
        );
        Ok(Track {
            sender,
            ssrc,
            payload_type,
            packetizer: Box::new(packetizer),
            extensions,
        })
    }

    fn packetize(
        &mut self,
        now: Instant,
        payload: &Bytes,
        samples: u32,
    ) -> Result<Vec<rtp::Packet>, Error> {
        let mut packets = self
            .packetizer
            .packetize(now, payload, samples)
            .map_err(Error::rtc("packetize"))?;
        for p in &mut packets {
            p.header.ssrc = self.ssrc;
            p.header.payload_type = self.payload_type;
            // OBS sends them on every packet, not only until the answer is in: the simplest
            // shape, and a receiver that binds SSRCs late (after a loss) still can.
            for (id, value) in &self.extensions {
                p.header
                    .set_extension(*id, value.clone())
                    .map_err(Error::rtc("RTP header extension"))?;
            }
        }
        Ok(packets)
    }

    fn skip(&mut self, gap: Duration, clock_rate: u32) {
        let samples = (gap.as_secs_f64() * f64::from(clock_rate)) as u64;
        self.packetizer.skip_samples(samples as u32);
    }
}

/// What a send-only publisher runs, as a browser does: answers to NACKs (a send history),
/// sender reports (the bridge dates HLS segments by them) and transport-wide sequence numbers
/// (the bridge's congestion feedback reads them). rtc's default set also has the receive side's
/// NACK generator, receiver reports and TWCC feedback, stages every packet sent walks through
/// for nothing: a load generator must cost less than what it measures.
///
/// With simulcast, only the `sdes:mid` and `sdes:rtp-stream-id` extensions are offered for video,
/// as OBS does (no repaired-rid: there is no RTX). rtc's NACK responder keeps a history per SSRC
/// it sends, so it answers NACKs on every layer, where OBS answers only on the top one.
fn send_interceptors(media_engine: &mut MediaEngine, simulcast: bool) -> Result<Registry, Error> {
    use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder, Slot};
    use rtc::peer_connection::configuration::interceptor_registry::{
        configure_simulcast_extension_headers, configure_twcc_sender_only,
    };
    use rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability;
    if simulcast {
        for uri in [SDES_MID_URI, SDES_RTP_STREAM_ID_URI] {
            media_engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RtpCodecKind::Video,
                    None,
                )
                .map_err(Error::rtc("register simulcast extensions"))?;
        }
    } else {
        configure_simulcast_extension_headers(media_engine)
            .map_err(Error::rtc("register simulcast extensions"))?;
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build());
    configure_twcc_sender_only(registry, media_engine).map_err(Error::rtc("register TWCC"))
}

fn build_peer_connection(simulcast: u8) -> Result<RTCPeerConnection, Error> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(opus_codec(), RtpCodecKind::Audio)
        .map_err(Error::rtc("register Opus"))?;
    media_engine
        .register_codec(h264_codec(), RtpCodecKind::Video)
        .map_err(Error::rtc("register H.264"))?;
    let registry = send_interceptors(&mut media_engine, simulcast > 1)?;
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .map_err(Error::rtc("build peer connection"))
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: AUDIO_CLOCK_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

fn h264_codec() -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        },
        payload_type: H264_PAYLOAD_TYPE,
    }
}

/// A sendonly track added to the connection: its sender, codec and encodings (rid, SSRC), the
/// rid empty unless it is a simulcast layer.
#[derive(Debug, Clone)]
struct SendTrack {
    sender: RTCRtpSenderId,
    codec: RTCRtpCodecParameters,
    encodings: Vec<(String, u32)>,
}

/// Adds the audio and the video track, the video in `simulcast` layers (see
/// [`PublisherConfig::simulcast`]).
fn add_tracks(pc: &mut RTCPeerConnection, simulcast: u8) -> Result<(SendTrack, SendTrack), Error> {
    let stream_id = format!("loadgen-{:08x}", random_u32());
    let audio_ssrc = random_u32();
    let audio = add_sendonly_track(
        pc,
        &stream_id,
        RtpCodecKind::Audio,
        opus_codec(),
        vec![(String::new(), audio_ssrc)],
    )?;
    let video_encodings = if simulcast > 1 {
        // OBS numbers its SSRCs from one base: audio, then video layer i at base + 1 + i.
        (0..simulcast)
            .map(|i| (i.to_string(), audio_ssrc.wrapping_add(1 + u32::from(i))))
            .collect()
    } else {
        vec![(String::new(), random_u32())]
    };
    let video = add_sendonly_track(
        pc,
        &stream_id,
        RtpCodecKind::Video,
        h264_codec(),
        video_encodings,
    )?;
    Ok((audio, video))
}

/// Adds a sendonly transceiver with these encodings (rid, SSRC).
fn add_sendonly_track(
    pc: &mut RTCPeerConnection,
    stream_id: &str,
    kind: RtpCodecKind,
    codec: RTCRtpCodecParameters,
    encodings: Vec<(String, u32)>,
) -> Result<SendTrack, Error> {
    let track = MediaStreamTrack::new(
        stream_id.to_owned(),
        format!("{stream_id}-{kind}"),
        format!("loadgen {kind}"),
        kind,
        encodings
            .iter()
            .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.clone(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            })
            .collect(),
    );
    let transceiver = pc
        .add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![stream_id.to_owned()],
                send_encodings: vec![],
            }),
        )
        .map_err(Error::rtc("add_transceiver_from_track"))?;
    Ok(SendTrack {
        sender: RTCRtpSenderId::from(transceiver),
        codec,
        encodings,
    })
}

/// The one host candidate: the socket's bound address.
fn host_candidate(addr: std::net::SocketAddr) -> Result<RTCIceCandidateInit, Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(Error::rtc("host candidate"))?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(Error::rtc("host candidate"))
}

/// Adds the candidate, then the end-of-gathering sentinel.
fn add_candidate_and_finish(
    pc: &mut RTCPeerConnection,
    candidate: &RTCIceCandidateInit,
) -> Result<(), Error> {
    pc.add_local_candidate(candidate.clone())
        .map_err(Error::rtc("add_local_candidate"))?;
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(Error::rtc("add_local_candidate(end)"))
}

fn warn_content_type(response: &Response, expected: &str, what: &str) {
    let ct = response.header(CONTENT_TYPE.as_str()).unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(expected) {
        tracing::warn!(content_type = ct, expected, what, "unexpected Content-Type");
    }
}

/// A non-zero random-enough u32 (SSRCs, ids) without a RNG dependency.
fn random_u32() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = std::collections::hash_map::RandomState::new().hash_one((nanos, n));
    ((h >> 32) as u32 ^ h as u32).max(1)
}

#[cfg(test)]
mod tests {
    use rtc::shared::marshal::Marshal as _;

    use super::*;

    /// The offer a publisher with `simulcast` layers POSTs (candidates aside), split into its
    /// audio and video sections.
    fn offer(simulcast: u8) -> (String, String) {
        let mut pc = build_peer_connection(simulcast).unwrap();
        add_tracks(&mut pc, simulcast).unwrap();
        let sdp = pc.create_offer(None).unwrap().sdp;
        let video_at = sdp.find("m=video").unwrap();
        let (head, video) = sdp.split_at(video_at);
        let audio_at = head.find("m=audio").unwrap();
        (head[audio_at..].to_owned(), video.to_owned())
    }

    fn lines<'a>(section: &'a str, prefix: &str) -> Vec<&'a str> {
        section.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn simulcast_offer_is_shaped_like_obs() {
        let (audio, video) = offer(3);
        let extmaps = lines(&video, "a=extmap:");
        assert!(
            extmaps
                .iter()
                .any(|l| l.ends_with(" urn:ietf:params:rtp-hdrext:sdes:mid")),
            "{video}"
        );
        assert!(
            extmaps
                .iter()
                .any(|l| l.ends_with(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")),
            "{video}"
        );
        assert!(!video.contains("repaired-rtp-stream-id"), "{video}");
        assert_eq!(lines(&video, "a=msid:").len(), 1, "{video}");
        assert_eq!(
            lines(&video, "a=rid:"),
            ["a=rid:0 send", "a=rid:1 send", "a=rid:2 send"]
        );
        assert_eq!(lines(&video, "a=simulcast:"), ["a=simulcast:send 0;1;2"]);
        // The layers' SSRCs are never signalled, and there is no RTX.
        assert_eq!(lines(&video, "a=ssrc"), Vec::<&str>::new(), "{video}");
        assert!(!video.contains("rtx/90000"), "{video}");
        assert!(lines(&video, "a=sendonly").len() == 1, "{video}");
        // Audio is as without simulcast.
        assert!(!lines(&audio, "a=ssrc:").is_empty(), "{audio}");
        assert!(lines(&audio, "a=rid:").is_empty(), "{audio}");

        let (_, two) = offer(2);
        assert_eq!(lines(&two, "a=rid:"), ["a=rid:0 send", "a=rid:1 send"]);
        assert_eq!(lines(&two, "a=simulcast:"), ["a=simulcast:send 0;1"]);
    }

    #[test]
    fn one_layer_offer_is_a_plain_video_track() {
        let (_, video) = offer(1);
        assert!(!lines(&video, "a=ssrc:").is_empty(), "{video}");
        assert!(lines(&video, "a=rid:").is_empty(), "{video}");
        assert!(lines(&video, "a=simulcast:").is_empty(), "{video}");
    }

    #[test]
    fn layer_ssrcs_follow_the_audio_ssrc() {
        let mut pc = build_peer_connection(3).unwrap();
        let (audio, video) = add_tracks(&mut pc, 3).unwrap();
        let base = audio.encodings[0].1;
        let expected: Vec<(String, u32)> = (0..3u32)
            .map(|i| (i.to_string(), base.wrapping_add(1 + i)))
            .collect();
        assert_eq!(video.encodings, expected);
    }

    #[test]
    fn layer_packets_carry_mid_and_rid() {
        let payloader = h264_codec().rtp_codec.payloader().unwrap();
        let mut track = Track {
            sender: RTCRtpSenderId::from(1usize),
            ssrc: 0x0102_0304,
            payload_type: H264_PAYLOAD_TYPE,
            packetizer: Box::new(new_packetizer(
                Instant::now(),
                RTP_MTU,
                H264_PAYLOAD_TYPE,
                0x0102_0304,
                payloader,
                Box::new(new_random_sequencer()),
                VIDEO_CLOCK_RATE,
            )),
            extensions: vec![(3, Bytes::from_static(b"1")), (4, Bytes::from_static(b"2"))],
        };
        // One small non-IDR slice: one packet.
        let frame = Bytes::from_static(&[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03]);
        let packets = track.packetize(Instant::now(), &frame, 3000).unwrap();
        assert_eq!(packets.len(), 1);
        let bytes = packets[0].marshal().unwrap();
        // X bit set; after the 12-byte header, RFC 8285 one-byte elements: 0xBEDE, one 32-bit
        // word, then id 3 (mid "1") and id 4 (rid "2"), each length - 1 = 0.
        assert_eq!(bytes[0] & 0x10, 0x10);
        assert_eq!(bytes[1] & 0x7F, H264_PAYLOAD_TYPE);
        assert_eq!(&bytes[8..12], &[1, 2, 3, 4]);
        assert_eq!(&bytes[12..20], &[0xBE, 0xDE, 0, 1, 0x30, b'1', 0x40, b'2']);
        assert_eq!(&bytes[20..], &[0x41, 0x9a, 0x02, 0x03]);
    }
}
