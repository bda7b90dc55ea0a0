//! How an output is set up, and what it hands the next session's output.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use thiserror::Error;

use crate::media::unit::AudioFrame;
use crate::mux::hls::names::HlsFile;
use crate::mux::hls::playlist::{BandwidthMeter, Playlist, PlaylistConfig, PlaylistError};
use crate::mux::hls::segmenter::{SegmenterConfig, SegmenterError};

/// Which rendition of a stream an output makes. A stream has one today; a simulcast ladder or
/// an alternate audio track adds variants here, each naming its own files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rendition {
    /// The stream as published: `index.m3u8`, `seg{msn}.m4s`, ...
    #[default]
    Main,
}

impl Rendition {
    /// The name of this rendition's `file`.
    pub fn uri(self, file: HlsFile) -> String {
        match self {
            Rendition::Main => file.to_string(),
        }
    }
}

/// What HLS carries for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioChoice {
    /// Opus transcoded to AAC by the [`AacEncode`] the output is given.
    Aac,
    /// Opus as is (fMP4 only).
    Opus,
    /// No audio.
    None,
}

/// How one output works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputConfig {
    /// The rendition it makes.
    pub rendition: Rendition,
    /// How units are cut; with a part target this is an LL-HLS output.
    pub segmenter: SegmenterConfig,
    /// How the playlist is written (its container is the output's).
    pub playlist: PlaylistConfig,
    /// What it does with audio.
    pub audio: AudioChoice,
    /// The publisher sends audio (else nothing waits for it).
    pub has_audio: bool,
    /// The publisher sends video (else audio is cut on its own).
    pub has_video: bool,
}

/// Opus to AAC, for [`AudioChoice::Aac`]: the bridge's is libfdk-aac; tests bring their own.
pub trait AacEncode: fmt::Debug + Send {
    /// The AudioSpecificConfig of the frames it makes.
    fn audio_specific_config(&self) -> Bytes;
    /// Takes an Opus frame; returns the AAC frames complete so far.
    fn push(&mut self, frame: &AudioFrame) -> Result<Vec<AudioFrame>, String>;
    /// Encodes what is buffered: the end of the stream.
    fn flush(&mut self) -> Result<Vec<AudioFrame>, String>;
}

/// Makes the [`AacEncode`] for a channel count (1 or 2), once the first frame said it.
pub type NewAacEncoder = Box<dyn FnOnce(u8) -> Result<Box<dyn AacEncode>, String> + Send>;

/// What one session's output hands the next on the same stream (and rendition): the playlist,
/// the numbers to continue from and the files on disk. One per stream, passed along.
#[derive(Debug)]
pub struct Handoff {
    /// Sequence number the next session's first segment gets.
    pub(super) next_msn: u64,
    /// Epoch (init section) the next session's first segment gets.
    pub(super) next_epoch: u64,
    /// Number the next session's first part gets: parts are counted across sessions, so the
    /// last preload hint of one names the first part of the next.
    pub(super) next_part: u64,
    /// The presentation's playlist, once one had media.
    pub(super) playlist: Option<Playlist>,
    /// `index.m3u8` as last rendered.
    pub(super) index: Bytes,
    /// `main.m3u8` as last published.
    pub(super) main: Option<Bytes>,
    /// Files on disk of the current presentation.
    pub(super) files: BTreeSet<String>,
    /// Measures the variant's bandwidth over the presentation.
    pub(super) meter: Option<BandwidthMeter>,
}

impl Handoff {
    /// Nothing published yet; numbers start at `base` (see the bridge's `sink::hls` for why
    /// that is the wall clock in milliseconds).
    pub fn new(base: u64) -> Self {
        Self {
            next_msn: base,
            next_epoch: base,
            next_part: base,
            playlist: None,
            index: Bytes::new(),
            main: None,
            files: BTreeSet::new(),
            meter: None,
        }
    }

    /// Sequence number the next session's first segment gets.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    /// A live playlist is there to continue.
    pub fn is_live(&self) -> bool {
        self.playlist.as_ref().is_some_and(|p| !p.is_ended())
    }
}

/// Why an output cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The segmenter refused its configuration.
    #[error("HLS segmenter configuration refused: {0}")]
    Segmenter(#[from] SegmenterError),
    /// The playlist refused its configuration.
    #[error("HLS playlist configuration refused: {0}")]
    Playlist(#[from] PlaylistError),
}
