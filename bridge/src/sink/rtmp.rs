//! One RTMP push target as a task: units in (from its bounded queue; with audio=aac, from the
//! session's one transcoder, [`super::aac::AacStage`], AAC frames already), FLV tags out over [`RtmpConnection`], reconnecting with capped exponential backoff while the
//! publisher is live. A reconnect resumes at the next keyframe with fresh sequence headers, on
//! the same clock, so timestamps stay monotonic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use super::rtmp_conn::{RtmpConnection, RtmpError};
use crate::hooks::{self, SessionHooks};
use crate::media::start::StartGate;
use crate::media::unit::{AudioFrame, Unit};
use crate::mux::flv::{AudioCodec, FlvMuxer, FlvTag, TagKind};
use crate::rtmp_url::RtmpUrl;
use crate::transcode::channels_for;

use super::aac::AacFormat;

pub use crate::config::AudioMode;

/// Per-target metrics (already labelled with stream and target).
#[derive(Debug, Clone, Default)]
pub struct TargetMetrics {
    /// 1 while publishing, 0 otherwise.
    pub up: Gauge,
    /// FLV tag body bytes sent.
    pub bytes: Counter,
    /// Video frames sent.
    pub frames: Counter,
    /// Units dropped: full queue (counted by the queue) or while reconnecting.
    pub drops: Counter,
    /// Successful reconnects after a lost connection.
    pub reconnects: Counter,
}

/// Everything one target task needs.
#[derive(Debug)]
pub struct RtmpOutput {
    /// Where to push.
    pub url: RtmpUrl,
    /// Audio handling.
    pub audio: AudioMode,
    /// With [`AudioMode::Aac`]: the session transcoder's format (its audio frames are AAC).
    pub aac: AacFormat,
    /// Whether the publisher sends audio at all (else video starts without waiting for it).
    pub has_audio: bool,
    /// Whether the publisher sends video at all (else audio starts on its own).
    pub has_video: bool,
    /// TLS settings for `rtmps://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Its metrics.
    pub metrics: TargetMetrics,
    /// Set to ask the session for a keyframe (on every (re)connect).
    pub keyframe_wanted: Arc<AtomicBool>,
    /// The session's webhooks: `rtmp_up` and `rtmp_down`.
    pub hooks: SessionHooks,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

enum Event {
    Unit(Option<Unit>),
    Server(Option<Vec<u8>>),
    Retry,
}

struct Pipeline {
    muxer: FlvMuxer,
    /// Video has started on the current connection. Until then audio is not sent, so every connection starts with the video
    /// sequence header and a keyframe, and audio joins within a frame.
    video_started: bool,
    frame_rate: Option<f32>,
}

impl Pipeline {
    fn metadata(&self) -> rml_rtmp::sessions::StreamMetadata {
        let mut metadata = self.muxer.metadata();
        metadata.video_frame_rate = self.frame_rate;
        metadata
    }
}

impl RtmpOutput {
    /// The FLV pipeline, once the audio format is known (or known to be absent).
    fn pipeline(&self, first_audio: Option<&AudioFrame>) -> Pipeline {
        let codec = match (self.audio, first_audio) {
            // The transcoder published its format before its first frame.
            (AudioMode::Aac, Some(_)) => match self.aac.audio_specific_config() {
                Some(audio_specific_config) => Some(AudioCodec::Aac {
                    audio_specific_config,
                }),
                None => {
                    tracing::warn!("AAC format unknown; pushing video only");
                    None
                }
            },
            (AudioMode::Opus, Some(f)) => Some(AudioCodec::Opus {
                channels: channels_for(&f.data),
            }),
            _ => None,
        };
        Pipeline {
            muxer: FlvMuxer::new(codec),
            video_started: false,
            frame_rate: None,
        }
    }

    /// Runs until the queue closes (the publisher left), then unpublishes cleanly.
    pub async fn run(self, mut units: mpsc::Receiver<Unit>) {
        let target = self.url.redacted();
        let mut pending: Vec<Unit> = Vec::new();
        let mut pipeline: Option<Pipeline> = None;
        let mut conn: Option<RtmpConnection> = None;
        let mut backoff = BACKOFF_START;
        let mut retry_at = tokio::time::Instant::now();
        let mut ever_connected = false;
        loop {
            if conn.is_none() && tokio::time::Instant::now() >= retry_at {
                match RtmpConnection::publish(&self.url, &self.tls, CONNECT_TIMEOUT).await {
                    Ok(mut c) => {
                        tracing::info!(%target, "RTMP publishing");
                        if ever_connected {
                            self.metrics.reconnects.inc();
                        }
                        ever_connected = true;
                        backoff = BACKOFF_START;
                        self.keyframe_wanted.store(true, Ordering::Relaxed);
                        if let Some(p) = pipeline.as_mut() {
                            p.muxer.restart();
                            p.video_started = false;
                            if let Err(err) = c.metadata(&p.metadata()).await {
                                tracing::warn!(%target, %err, "RTMP metadata failed");
                            }
                        }
                        self.metrics.up.set(1);
                        self.hooks.emit(hooks::Event::RtmpUp {
                            target: target.clone(),
                        });
                        conn = Some(c);
                    }
                    Err(err) => {
                        tracing::warn!(%target, %err, retry_in = ?backoff, "RTMP connect failed");
                        retry_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_CAP);
                    }
                }
            }
            let disconnected = conn.is_none();
            let event = {
                let server = async {
                    match conn.as_mut() {
                        Some(c) => c.recv_server().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    unit = units.recv() => Event::Unit(unit),
                    bytes = server => Event::Server(bytes),
                    _ = tokio::time::sleep_until(retry_at), if disconnected => Event::Retry,
                }
            };
            match event {
                Event::Unit(None) => break,
                Event::Unit(Some(unit)) => {
                    if pipeline.is_none() {
                        pipeline = self.start(&mut pending, unit);
                        let Some(p) = pipeline.as_mut() else { continue };
                        if let Some(c) = conn.as_mut()
                            && let Err(err) = c.metadata(&p.metadata()).await
                        {
                            tracing::warn!(%target, %err, "RTMP metadata failed");
                        }
                        for unit in std::mem::take(&mut pending) {
                            self.send(p, &mut conn, unit).await;
                        }
                    } else if let Some(p) = pipeline.as_mut() {
                        self.send(p, &mut conn, unit).await;
                    }
                }
                Event::Server(bytes) => {
                    let result = match (bytes, conn.as_mut()) {
                        (Some(bytes), Some(c)) => c.handle_server(&bytes).await.map(drop),
                        _ => Err(RtmpError::Closed),
                    };
                    if let Err(err) = result {
                        self.lost(&target, &err, &mut conn);
                    }
                }
                Event::Retry => {}
            }
            if !disconnected && conn.is_none() {
                // Lost just now: wait the current backoff before redialling.
                retry_at = tokio::time::Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
        self.metrics.up.set(0);
        if let Some(c) = conn {
            c.close().await;
            tracing::info!(%target, "RTMP unpublished");
            self.hooks.emit(hooks::Event::RtmpDown {
                target,
                reason: "ended",
                error: None,
            });
        }
    }

    /// Holds units until the audio format (channel count) and the frame rate (two pictures) are
    /// known, or a second has passed ([`StartGate`]); returns the pipeline then. Costs one frame
    /// of delay once.
    fn start(&self, pending: &mut Vec<Unit>, unit: Unit) -> Option<Pipeline> {
        pending.push(unit);
        let wait_audio = self.has_audio && self.audio != AudioMode::None;
        let start = StartGate::new(wait_audio, self.has_video).open(pending)?;
        let mut pipeline = self.pipeline(start.first_audio);
        // Frame rate as onMetaData reports it.
        pipeline.frame_rate = start.frame_rate.map(|fps| fps as f32);
        Some(pipeline)
    }

    async fn send(&self, p: &mut Pipeline, conn: &mut Option<RtmpConnection>, unit: Unit) {
        let tags: Vec<FlvTag> = match &unit {
            Unit::Video(v) => match p.muxer.video(v) {
                Ok(tags) => {
                    p.video_started |= !tags.is_empty();
                    tags
                }
                Err(err) => {
                    tracing::debug!(%err, "video unit not muxable");
                    Vec::new()
                }
            },
            Unit::Audio(frame) => {
                // Video-only outputs (no video track at all) start on audio.
                if p.video_started || !self.has_video {
                    p.muxer.audio(frame)
                } else {
                    Vec::new()
                }
            }
        };
        let Some(c) = conn.as_mut() else {
            if !tags.is_empty() {
                self.metrics.drops.inc();
            }
            return;
        };
        for tag in tags {
            let len = tag.body.len() as u64;
            let frame = tag.kind == TagKind::Video && !tag.config;
            let sent = match tag.kind {
                TagKind::Video => c.video(tag.timestamp, tag.body).await,
                TagKind::Audio => c.audio(tag.timestamp, tag.body).await,
            };
            if let Err(err) = sent {
                self.lost(&self.url.redacted(), &err, conn);
                return;
            }
            self.metrics.bytes.inc_by(len);
            if frame {
                self.metrics.frames.inc();
            }
        }
    }

    fn lost(&self, target: &str, err: &RtmpError, conn: &mut Option<RtmpConnection>) {
        tracing::warn!(%target, %err, "RTMP connection lost");
        self.metrics.up.set(0);
        self.hooks.emit(hooks::Event::RtmpDown {
            target: target.to_owned(),
            reason: "lost",
            error: Some(err.to_string()),
        });
        // Dropping the connection closes the socket; the task redials after the backoff.
        *conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn output(has_audio: bool) -> RtmpOutput {
        RtmpOutput {
            url: RtmpUrl::parse("rtmp://127.0.0.1/live/test").unwrap(),
            audio: AudioMode::Aac,
            aac: {
                let format = AacFormat::default();
                format.set_for_test(Bytes::copy_from_slice(
                    &crate::transcode::audio_specific_config(2),
                ));
                format
            },
            has_audio,
            has_video: true,
            tls: super::super::rtmp_conn::tls_config(Vec::new()).unwrap(),
            metrics: TargetMetrics::default(),
            keyframe_wanted: Arc::default(),
            hooks: SessionHooks::default(),
        }
    }

    fn video(pts: i64) -> Unit {
        bridge_proto::testdata::timed_video(pts, pts == 0)
    }

    #[test]
    fn the_pipeline_starts_once_audio_and_frame_rate_are_known() {
        let out = output(true);
        let mut pending = Vec::new();
        assert!(out.start(&mut pending, video(0)).is_none(), "rate unknown");
        assert!(
            out.start(&mut pending, video(3000)).is_none(),
            "audio unknown"
        );
        let aac = Unit::Audio(AudioFrame {
            pts: 3000,
            duration: 1920,
            data: Bytes::from_static(&[0x21, 0x10]),
        });
        let p = out.start(&mut pending, aac).unwrap();
        assert_eq!(pending.len(), 3, "nothing lost while waiting");
        assert_eq!(p.metadata().video_frame_rate, Some(30.0));
        assert_eq!(
            p.metadata().audio_channels,
            Some(2),
            "the transcoder's format"
        );
        assert_eq!(p.metadata().video_codec_id, Some(7));
    }

    #[test]
    fn without_audio_the_second_picture_starts_it_and_a_second_is_the_longest_wait() {
        let out = output(false);
        let mut pending = Vec::new();
        assert!(out.start(&mut pending, video(0)).is_none());
        let p = out.start(&mut pending, video(3754)).unwrap();
        assert_eq!(p.metadata().audio_codec_id, None);
        assert!((p.metadata().video_frame_rate.unwrap() - 23.97).abs() < 0.01);
        let out = output(true);
        let mut pending = Vec::new();
        assert!(out.start(&mut pending, video(0)).is_none());
        assert!(out.start(&mut pending, video(45_000)).is_none());
        assert!(
            out.start(&mut pending, video(90_000)).is_some(),
            "audio never came"
        );
    }
}
