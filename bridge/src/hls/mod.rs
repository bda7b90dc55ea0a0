//! HLS: what the outputs ([`crate::sink::hls`]) write and the HTTP layer ([`crate::http`])
//! serves, in between: the [`store`] of every stream's playlist and recent parts, and the
//! settings and metrics both sides share. The decisions (what to write, list and delete) are
//! the pure output in [`crate::mux::hls::output`]; the file names are
//! [`crate::mux::hls::names`].

pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::mux::hls::output::{AudioChoice, OutputConfig, Rendition};
use crate::mux::hls::playlist::{Container, PlaylistConfig, PlaylistKind};
use crate::mux::hls::segmenter::SegmenterConfig;

/// The HLS settings every stream shares (from the [`crate::Config`]: see
/// `HlsSettings::from_config` in [`crate::sink::hls`]).
#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// The folder holding one subfolder per stream.
    pub dir: PathBuf,
    /// Segment container.
    pub container: Container,
    /// LL-HLS parts (fMP4 only).
    pub low_latency: bool,
    /// Sliding window or event playlist.
    pub kind: PlaylistKind,
    /// Audio handling.
    pub audio: AudioChoice,
    /// AAC bit rate.
    pub aac_bitrate: u32,
}

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
            audio: self.audio,
            has_audio,
            has_video,
        }
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
}
