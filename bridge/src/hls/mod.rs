//! HLS: what the outputs ([`crate::sink::hls`]) write and the HTTP layer ([`crate::http`])
//! serves, in between: the [`store`] of every stream's playlist and recent parts, and the
//! metrics both sides share. The decisions (what to write, list and delete) are
//! the pure output in [`crate::mux::hls::output`]; the file names are
//! [`crate::mux::hls::names`].

pub mod store;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::{HlsAudio, HlsSettings};
use crate::mux::hls::output::{AudioChoice, OutputConfig, Rendition};
use crate::mux::hls::playlist::{Ladder, Leave, PlaylistConfig};
use crate::mux::hls::segmenter::SegmenterConfig;

impl HlsSettings {
    fn segmenter(&self, video: bool) -> SegmenterConfig {
        if self.low_latency {
            SegmenterConfig::low_latency(video)
        } else {
            SegmenterConfig::standard(video)
        }
    }

    /// How the output of `rendition` of a session with these tracks works.
    pub fn output(&self, rendition: Rendition, has_audio: bool, has_video: bool) -> OutputConfig {
        let segmenter = self.segmenter(has_video);
        OutputConfig {
            rendition,
            segmenter,
            playlist: PlaylistConfig {
                kind: self.kind,
                ..PlaylistConfig::new(self.container, &segmenter)
            },
            audio: match self.audio {
                HlsAudio::Aac => AudioChoice::Aac,
                HlsAudio::Opus => AudioChoice::Opus,
                HlsAudio::None => AudioChoice::None,
            },
            has_audio,
            has_video,
        }
    }

    /// An empty ladder for a simulcast publisher's renditions, cut as these settings cut.
    pub fn ladder(&self) -> Ladder {
        Ladder::new(&self.segmenter(true))
    }

    /// How long a request waits for a stream's first playlist: the blocking reload timeout of
    /// an empty playlist (three target durations).
    pub fn first_playlist_wait(&self) -> Duration {
        let target = self.segmenter(true).segment_target;
        Duration::from_secs(target.as_secs_f64().ceil() as u64 * 3)
    }
}

/// The HLS outputs' Prometheus metrics (see [`crate::metrics::Metrics`]).
#[derive(Debug, Clone)]
pub struct HlsMetrics {
    /// Segments listed.
    pub segments: Counter,
    /// LL-HLS parts listed.
    pub parts: Counter,
    /// Media bytes written (segments).
    pub bytes: Counter,
    /// Units dropped by the output queues.
    pub drops: Counter,
    /// Seconds from a video frame reaching the output to the playlist listing it.
    pub listing_delay: Histogram,
    /// Renditions that left a simulcast ladder, by why.
    pub ladder_exits: Family<LeaveLabel, Counter>,
}

/// `reason="long_gop|drift"`: why a rendition left a ladder ([`Leave::as_str`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaveLabel {
    reason: &'static str,
}

impl From<Leave> for LeaveLabel {
    fn from(leave: Leave) -> Self {
        Self {
            reason: leave.as_str(),
        }
    }
}
