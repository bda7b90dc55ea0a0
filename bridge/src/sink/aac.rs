//! The session's one Opus -> AAC transcoder, shared by every output that wants AAC.
//!
//! Decoding Opus and encoding AAC is most of what a stream costs, and it gives the same frames
//! whoever asks (`aac_bitrate` is global), so a session runs it once ([`AacStage`]), in its own
//! task behind a bounded [`OutputQueue`] like any output, and forwards every unit to the outputs
//! that want AAC: video as it came, audio as AAC frames (shared `Bytes`, cheap clones). Outputs
//! that want Opus are fed by the session directly and never wait for it.
//!
//! The stage sits in front of the AAC outputs rather than beside them so that each output still
//! gets one stream of units in timeline order (audio frames where the transcoder emitted them,
//! as when each output transcoded for itself), and a queue that overflows still loses units up
//! to the next keyframe. The AudioSpecificConfig is published ([`AacFormat`]) before the first
//! AAC frame is forwarded, so an output's start gate, which waits for the first audio frame,
//! opens knowing it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use super::queue::{OutputQueue, Pushed};
use crate::media::unit::{AudioFrame, Unit};
use crate::mux::hls::output::AacEncode;
use crate::transcode::{OpusToAac, channels_for};

/// The transcoders' metrics, all sessions together.
#[derive(Debug, Clone, Default)]
pub struct TranscodeMetrics {
    /// Opus -> AAC transcoders running (at most one per session).
    pub active: Gauge,
    /// AAC frames encoded.
    pub frames: Counter,
    /// Units the transcoder stages dropped on a full queue (to the next keyframe).
    pub drops: Counter,
}

/// The AudioSpecificConfig of a session's AAC, set by its [`AacStage`] before the first AAC
/// frame reaches any output. Unset: no AAC (yet, or ever if the encoder could not be made).
#[derive(Debug, Clone, Default)]
pub struct AacFormat(Arc<OnceLock<Bytes>>);

impl AacFormat {
    /// The AudioSpecificConfig, once known.
    pub fn audio_specific_config(&self) -> Option<Bytes> {
        self.0.get().cloned()
    }

    fn set(&self, asc: Bytes) {
        // Set once per session by its only stage.
        let _ = self.0.set(asc);
    }

    /// A format as a transcoder would publish it (tests of the outputs).
    #[cfg(test)]
    pub(crate) fn set_for_test(&self, asc: impl Into<Bytes>) {
        self.set(asc.into());
    }
}

/// What the HLS output's encoder hook gets: the frames are AAC already, so it passes them on.
#[derive(Debug)]
pub struct AacPassthrough {
    asc: Bytes,
}

impl AacPassthrough {
    /// For the session's format; `None` when no AAC is coming.
    pub fn new(format: &AacFormat) -> Option<Self> {
        format.audio_specific_config().map(|asc| Self { asc })
    }
}

impl AacEncode for AacPassthrough {
    fn audio_specific_config(&self) -> Bytes {
        self.asc.clone()
    }

    fn push(&mut self, frame: &AudioFrame) -> Result<Vec<AudioFrame>, String> {
        Ok(vec![frame.clone()])
    }

    fn flush(&mut self) -> Result<Vec<AudioFrame>, String> {
        Ok(Vec::new())
    }
}

enum Transcoder {
    /// No audio yet: the first frame says the channel count.
    Unstarted,
    Running(Box<OpusToAac>),
    /// Could not be made: the AAC outputs get video only.
    Failed,
}

/// A session's transcoder task; see the module docs.
#[derive(Debug)]
pub struct AacStage {
    /// AAC bit rate (bits/s), the same for every output.
    pub bitrate: u32,
    /// Where the AudioSpecificConfig is published.
    pub format: AacFormat,
    /// The queues of the outputs that want AAC.
    pub outputs: Vec<OutputQueue>,
    /// Its metrics.
    pub metrics: TranscodeMetrics,
}

impl AacStage {
    /// Runs until its queue closes (the session ended) or every output has gone; the encoder's
    /// tail is flushed to the outputs first.
    pub async fn run(mut self, mut units: mpsc::Receiver<Unit>) {
        let mut transcoder = Transcoder::Unstarted;
        while let Some(unit) = units.recv().await {
            match unit {
                Unit::Video(_) => self.forward(&unit),
                Unit::Audio(frame) => {
                    if let Transcoder::Unstarted = transcoder {
                        transcoder = self.start(&frame);
                    }
                    if let Transcoder::Running(t) = &mut transcoder {
                        let frames = t.push(&frame).unwrap_or_else(|err| {
                            tracing::debug!(%err, "audio frame not transcodable");
                            Vec::new()
                        });
                        self.forward_audio(frames);
                    }
                }
            }
            if self.outputs.is_empty() {
                break;
            }
        }
        if let Transcoder::Running(mut t) = transcoder {
            let tail = t.flush().unwrap_or_else(|err| {
                tracing::debug!(%err, "AAC flush failed");
                Vec::new()
            });
            self.forward_audio(tail);
            self.metrics.active.dec();
        }
        // Dropping the queues tells the outputs to finish.
    }

    fn start(&self, first: &AudioFrame) -> Transcoder {
        match OpusToAac::new(channels_for(&first.data), self.bitrate) {
            Ok(t) => {
                self.format.set(t.audio_specific_config());
                self.metrics.active.inc();
                Transcoder::Running(Box::new(t))
            }
            Err(err) => {
                tracing::warn!(%err, "AAC encoder unavailable; AAC outputs get video only");
                Transcoder::Failed
            }
        }
    }

    fn forward_audio(&mut self, frames: Vec<AudioFrame>) {
        self.metrics.frames.inc_by(frames.len() as u64);
        for frame in frames {
            self.forward(&Unit::Audio(frame));
        }
    }

    /// Offers a unit to every AAC output; outputs that have gone are forgotten.
    fn forward(&mut self, unit: &Unit) {
        self.outputs
            .retain_mut(|queue| queue.push(unit) != Pushed::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_transcoder_feeds_every_aac_output_and_publishes_the_format_first() {
        if !crate::transcode::AAC_ENCODER {
            return;
        }
        let metrics = TranscodeMetrics::default();
        let (a, mut rx_a) = OutputQueue::new(1024, Counter::default());
        let (b, mut rx_b) = OutputQueue::new(1024, Counter::default());
        let format = AacFormat::default();
        let stage = AacStage {
            bitrate: 128_000,
            format: format.clone(),
            outputs: vec![a, b],
            metrics: metrics.clone(),
        };
        let (input, rx) = OutputQueue::new(1024, metrics.drops.clone());
        let mut input = input;
        let task = tokio::spawn(stage.run(rx));
        input.push(&bridge_proto::testdata::timed_video(0, true));
        for i in 0..50 {
            input.push(&Unit::Audio(AudioFrame {
                pts: i * 1800,
                duration: 1800,
                // A stereo 20 ms CELT frame of digital silence.
                data: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
            }));
        }
        drop(input);
        task.await.unwrap();
        let asc = format.audio_specific_config().expect("format published");
        assert_eq!(asc.as_ref(), crate::transcode::audio_specific_config(2));
        let drain = |rx: &mut mpsc::Receiver<Unit>| {
            let mut audio = Vec::new();
            let mut video = 0;
            while let Ok(unit) = rx.try_recv() {
                match unit {
                    Unit::Audio(f) => audio.push(f),
                    Unit::Video(_) => video += 1,
                }
            }
            (video, audio)
        };
        let (va, aa) = drain(&mut rx_a);
        let (vb, ab) = drain(&mut rx_b);
        assert_eq!((va, vb), (1, 1));
        assert!(aa.len() >= 45, "{} AAC frames", aa.len());
        assert_eq!(aa, ab, "the same frames for both");
        assert!(
            aa.windows(2).all(|w| w[1].pts - w[0].pts == 1920),
            "AAC frames continuous on the timeline"
        );
        assert_eq!(metrics.frames.get(), aa.len() as u64);
        assert_eq!(metrics.active.get(), 0, "gone when the session is");
    }
}
