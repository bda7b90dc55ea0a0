//! A minimal RTMP server for `publish`: it accepts every connect and publish, and reports when
//! each stream's connection began, every frame stamp found in its video tags, the timestamp
//! of every audio and video tag (for the audio/video drift) and the picture size of every AVC
//! sequence header (which simulcast layer the bridge forwards).
//!
//! rml_rtmp does the protocol (sans-IO); this module moves bytes and reads FLV video tag bodies.
//! That reading is a checker of the bridge's FLV muxer and stays its own code (see the crate
//! docs); only the names of the standard FLV codes come from bridge-proto.

use std::net::SocketAddr;

use bridge_proto::mux::flv::{CODEC_AVC, SOUND_AAC, SOUND_EX_HEADER};
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::account::Track;
use super::sps::picture_size;
use crate::media::{FrameStamp, now_us};

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 64 * 1024;
/// FLV `AVCPacketType` of NAL units (0 is the sequence header, 2 the end of sequence).
const AVC_NALU: u8 = 1;
/// FLV `AVCPacketType` of the sequence header (an AVCDecoderConfigurationRecord).
const AVC_SEQUENCE_HEADER: u8 = 0;
/// `AACPacketType` raw (after [`SOUND_AAC`]; 0 is the sequence header) / Enhanced RTMP
/// `AudioPacketType` CodedFrames (after [`SOUND_EX_HEADER`]).
const AUDIO_FRAMES: u8 = 1;

/// What the ingest saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEvent {
    /// A connection asked to publish `stream`; `first_byte_us` is when its first byte (of the
    /// handshake) arrived, in µs since the UNIX epoch.
    Publishing {
        /// The stream key.
        stream: String,
        /// Arrival of the connection's first byte.
        first_byte_us: u64,
    },
    /// A video tag of `stream` carried `stamp`; it arrived at `received_us` (µs since the UNIX
    /// epoch).
    Frame {
        /// The stream key.
        stream: String,
        /// The stamp.
        stamp: FrameStamp,
        /// Arrival of the bytes that completed the tag.
        received_us: u64,
    },
    /// An AVC sequence header of `stream`: the picture size its first SPS says (`None`: the
    /// record or the SPS could not be read).
    VideoConfig {
        /// The stream key.
        stream: String,
        /// Width and height.
        size: Option<(u32, u32)>,
    },
    /// An audio or video tag of `stream` carrying media (not a sequence header), at
    /// `timestamp_ms` on the FLV timeline.
    Media {
        /// The stream key.
        stream: String,
        /// Audio or video.
        track: Track,
        /// The tag's timestamp.
        timestamp_ms: u32,
    },
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Socket I/O failed.
    #[error("RTMP ingest: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake failed.
    #[error("RTMP ingest handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The RTMP session failed.
    #[error("RTMP ingest session: {0}")]
    Session(#[from] ServerSessionError),
}

/// The listening ingest. Dropping it stops the listener and every connection.
#[derive(Debug)]
pub struct RtmpIngest {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<IngestEvent>,
    task: JoinHandle<()>,
}

impl RtmpIngest {
    /// Listens on `addr` (port 0: the OS picks one, see [`RtmpIngest::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<RtmpIngest, IngestError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(listener, tx));
        Ok(RtmpIngest { addr, events, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next event; `None` once the listener is gone.
    pub async fn recv(&mut self) -> Option<IngestEvent> {
        self.events.recv().await
    }
}

impl Drop for RtmpIngest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<IngestEvent>) {
    // Owning the connections here means aborting this task ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let events = events.clone();
                    connections.spawn(async move {
                        if let Err(e) = serve(socket, &events).await {
                            tracing::warn!(%peer, "{e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("RTMP ingest accept: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: handshake, then the session until the peer closes.
async fn serve(
    mut socket: TcpStream,
    events: &mpsc::UnboundedSender<IngestEvent>,
) -> Result<(), IngestError> {
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut handshake = Handshake::new(PeerType::Server);
    let mut first_byte_us = None;
    let remaining = loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        first_byte_us.get_or_insert_with(now_us);
        match handshake.process_bytes(buf.get(..n).unwrap_or_default())? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let mut conn = Connection {
        first_byte_us: first_byte_us.unwrap_or_else(now_us),
        events,
    };
    let (mut session, results) = ServerSession::new(ServerSessionConfig::new())?;
    conn.handle(&mut socket, &mut session, results, now_us())
        .await?;
    let results = session.handle_input(&remaining)?;
    conn.handle(&mut socket, &mut session, results, now_us())
        .await?;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let received_us = now_us();
        let results = session.handle_input(buf.get(..n).unwrap_or_default())?;
        conn.handle(&mut socket, &mut session, results, received_us)
            .await?;
    }
}

struct Connection<'a> {
    first_byte_us: u64,
    events: &'a mpsc::UnboundedSender<IngestEvent>,
}

impl Connection<'_> {
    /// Sends the responses, accepts every request and reports what was published.
    async fn handle(
        &mut self,
        socket: &mut TcpStream,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
        received_us: u64,
    ) -> Result<(), IngestError> {
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(result) = queue.pop_front() {
            let ServerSessionResult::RaisedEvent(event) = result else {
                if let ServerSessionResult::OutboundResponse(packet) = result {
                    socket.write_all(&packet.bytes).await?;
                }
                continue;
            };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    queue.extend(session.accept_request(request_id)?);
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    stream_key,
                    ..
                } => {
                    // A closed receiver only means nobody listens any more.
                    let _ = self.events.send(IngestEvent::Publishing {
                        stream: stream_key,
                        first_byte_us: self.first_byte_us,
                    });
                    queue.extend(session.accept_request(request_id)?);
                }
                ServerSessionEvent::AudioDataReceived {
                    stream_key,
                    data,
                    timestamp,
                    ..
                } if is_audio_frame(&data) => {
                    let _ = self.events.send(IngestEvent::Media {
                        stream: stream_key,
                        track: Track::Audio,
                        timestamp_ms: timestamp.value,
                    });
                }
                ServerSessionEvent::VideoDataReceived {
                    stream_key,
                    data,
                    timestamp,
                    ..
                } => {
                    if is_avc_sequence_header(&data) {
                        let _ = self.events.send(IngestEvent::VideoConfig {
                            stream: stream_key.clone(),
                            size: first_sps(&data).and_then(picture_size),
                        });
                    }
                    if is_avc_nalu(&data) {
                        let _ = self.events.send(IngestEvent::Media {
                            stream: stream_key.clone(),
                            track: Track::Video,
                            timestamp_ms: timestamp.value,
                        });
                    }
                    for stamp in stamps_in_video_tag(&data) {
                        let _ = self.events.send(IngestEvent::Frame {
                            stream: stream_key.clone(),
                            stamp,
                            received_us,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether an FLV video tag body holds AVC NAL units (not a sequence header).
fn is_avc_nalu(body: &[u8]) -> bool {
    matches!(body, [head, AVC_NALU, ..] if head & 0x0F == CODEC_AVC)
}

/// Whether an FLV video tag body is an AVC sequence header.
fn is_avc_sequence_header(body: &[u8]) -> bool {
    matches!(body, [head, AVC_SEQUENCE_HEADER, ..] if head & 0x0F == CODEC_AVC)
}

/// The first SPS of an AVC sequence header tag body: after the 5-byte AVC video tag header,
/// the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): version, profile,
/// compatibility, level, length size, then the SPS count (low 5 bits) and each SPS after a
/// 16-bit length.
fn first_sps(body: &[u8]) -> Option<&[u8]> {
    let record = body.get(5..)?;
    if record.first() != Some(&1) || record.get(5)? & 0x1F == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*record.get(6)?, *record.get(7)?]));
    record.get(8..8 + len)
}

/// Whether an FLV audio tag body holds audio (not a sequence header): AAC raw, Enhanced RTMP
/// coded frames, or any legacy format (which has no headers).
fn is_audio_frame(body: &[u8]) -> bool {
    match body {
        [head, rest @ ..] if head >> 4 == SOUND_AAC => rest.first() == Some(&AUDIO_FRAMES),
        [head, ..] if head >> 4 == SOUND_EX_HEADER => head & 0x0F == AUDIO_FRAMES,
        [_, ..] => true,
        [] => false,
    }
}

/// The frame stamps in an FLV video tag body: AVC NAL units (not the sequence header), each
/// after a 4-byte length, following the 5-byte AVC video tag header.
pub fn stamps_in_video_tag(body: &[u8]) -> Vec<FrameStamp> {
    let mut stamps = Vec::new();
    if !is_avc_nalu(body) {
        return stamps;
    }
    let mut rest = body.get(5..).unwrap_or_default();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some((nal, tail)) = tail.split_at_checked(len) else {
            break;
        };
        stamps.extend(FrameStamp::from_sei(nal));
        rest = tail;
    }
    stamps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_stamps_in_avc_nalu_tags_only() {
        let stamp = FrameStamp {
            sent_us: 42,
            frame: 7,
        };
        let sei = stamp.to_sei();
        let mut body = vec![0x27, AVC_NALU, 0, 0, 0];
        for nal in [&sei[..], &[0x41, 0x9a, 0x01]] {
            body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            body.extend_from_slice(nal);
        }
        assert_eq!(stamps_in_video_tag(&body), vec![stamp]);
        // A sequence header is not searched; a truncated NAL ends the search.
        body[1] = 0;
        assert!(stamps_in_video_tag(&body).is_empty());
        body[1] = AVC_NALU;
        body.truncate(12);
        assert!(stamps_in_video_tag(&body).is_empty());
        assert!(stamps_in_video_tag(&[]).is_empty());
    }

    #[test]
    fn reads_the_picture_size_of_a_sequence_header() {
        // The clip's own SPS (640x360) in a record as FLV carries it.
        let sps: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x18, 0x32, 0x48,
        ];
        let mut body = vec![
            0x17,
            AVC_SEQUENCE_HEADER,
            0,
            0,
            0,
            1,
            0x42,
            0xc0,
            0x1f,
            0xff,
            0xe1,
        ];
        body.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        body.extend_from_slice(sps);
        body.extend_from_slice(&[1, 0, 4, 0x68, 0xcb, 0x8c, 0xb2]);
        assert!(is_avc_sequence_header(&body));
        assert!(!is_avc_nalu(&body));
        assert_eq!(first_sps(&body), Some(sps));
        assert_eq!(first_sps(&body).and_then(picture_size), Some((640, 360)));
        // No SPS, or cut inside it.
        let mut none = body.clone();
        none[10] = 0xe0;
        assert_eq!(first_sps(&none), None);
        assert_eq!(first_sps(&body[..20]), None);
        assert!(!is_avc_sequence_header(&[0x27, AVC_NALU, 0, 0, 0]));
    }

    #[test]
    fn tells_media_tags_from_sequence_headers() {
        assert!(is_avc_nalu(&[0x27, AVC_NALU, 0, 0, 0]));
        assert!(!is_avc_nalu(&[0x17, 0, 0, 0, 0]));
        assert!(!is_avc_nalu(&[0x27]));
        // AAC raw and sequence header.
        assert!(is_audio_frame(&[0xAF, 1, 0x21]));
        assert!(!is_audio_frame(&[0xAF, 0, 0x11, 0x90]));
        // Enhanced RTMP Opus: coded frames and sequence start.
        assert!(is_audio_frame(&[0x91, b'O', b'p', b'u', b's', 0xfc]));
        assert!(!is_audio_frame(&[0x90, b'O', b'p', b'u', b's']));
        assert!(!is_audio_frame(&[]));
    }
}
