//! What an output asks its driver to do.

use std::time::Instant;

use bytes::Bytes;

use crate::mux::hls::playlist::Playlist;

/// What the output wants done, in order.
#[derive(Debug)]
pub enum Action {
    /// Write this file whole (atomically: readers see the old bytes or the new ones).
    Write {
        /// File name (in the stream's folder).
        name: String,
        /// Its bytes, in chunks.
        data: Vec<Bytes>,
    },
    /// Delete this file (one already gone is fine).
    Remove {
        /// File name.
        name: String,
    },
    /// Change what the HTTP layer serves; files written before this are on disk by now.
    Publish(Box<ViewChange>),
    /// Count what was just listed.
    Listed(Listed),
    /// Ask the publisher for a key frame.
    KeyframeWanted,
}

/// A media playlist and its renderings.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The playlist (for blocking reload and preload hints).
    pub playlist: Playlist,
    /// `index.m3u8`.
    pub index: Bytes,
    /// The delta update (`_HLS_skip=YES`), when the playlist offers them.
    pub delta: Option<Bytes>,
}

/// A change to what the HTTP layer serves from memory.
#[derive(Debug, Clone, Default)]
pub struct ViewChange {
    /// A new presentation: forget everything before applying the rest.
    pub reset: bool,
    /// The playlist, when it changed.
    pub playlist: Option<Rendered>,
    /// A new `main.m3u8`.
    pub main: Option<Bytes>,
    /// A new init section, by name.
    pub init: Option<(String, Bytes)>,
    /// A new LL-HLS part: `(msn, number)` (its segment, its [`PartInfo::number`]) and its
    /// bytes. Memory keeps those of its segment and the one before.
    ///
    /// [`PartInfo::number`]: crate::mux::hls::segmenter::PartInfo::number
    pub part: Option<((u64, u64), Bytes)>,
    /// Files no longer listed: out of memory too.
    pub expired: Vec<String>,
    /// The playlist ended: every part is on disk; memory is for live streams.
    pub ended: bool,
}

/// What was listed, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// An LL-HLS part.
    Part {
        /// When its video frames reached the output.
        arrivals: Vec<Instant>,
    },
    /// A segment.
    Segment {
        /// Its size.
        bytes: u64,
        /// When its video frames reached the output, if no part listed them.
        arrivals: Vec<Instant>,
    },
}
