//! HLS playlists (RFC 8216 and its second edition, draft-pantos-hls-rfc8216bis, which adds
//! Low-Latency HLS): built as [`m3u8_rs`] types, written to bytes, no files touched.
//!
//! [`Playlist`] takes the [`PartInfo`]s and [`Segment`]s the segmenter emits and renders the
//! media playlist: a sliding window (or an event playlist that keeps everything), with
//! `EXT-X-PROGRAM-DATE-TIME`, discontinuities, `EXT-X-MAP` for fMP4, and for LL-HLS the
//! `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT` and (for
//! delta updates) `EXT-X-SKIP` tags. It also answers what the HTTP layer must decide: whether a
//! blocking reload (`_HLS_msn`, `_HLS_part`) can be answered yet ([`Playlist::reload`]), which
//! part is hinted ([`Playlist::preload_hint`]), and which files may now be deleted
//! ([`Playlist::take_expired`]). [`Variant`] builds the multivariant playlist of one stream,
//! [`Ladder`] that of a simulcast publisher's renditions, and [`BandwidthMeter`] measures what
//! they advertise.
//!
//! m3u8-rs 6 models neither LL-HLS tags nor tags after the last segment, and its writer skips
//! the playlist's `unknown_tags`. So LL-HLS header tags travel in
//! [`MediaPlaylist::unknown_tags`], a segment's `EXT-X-PART`s in its
//! [`MediaSegment::unknown_tags`], and the in-progress segment's parts and the preload hint in
//! [`MediaPlaylistDoc::trailer`]; [`MediaPlaylistDoc::write_to`] lets m3u8-rs write the rest and
//! puts those where the spec wants them. Program date-times also go out as tags, formatted here,
//! so the bridge does not need chrono for one field.
//!
//! Target durations are honest: `EXT-X-TARGETDURATION` is the configured target rounded up, or
//! the longest segment rounded up if one ran longer (a publisher that ignores key frame
//! requests), and `PART-TARGET` likewise covers every part. The spec also says the target
//! duration must not change; when the two conflict, a value that covers every segment wins,
//! because players stall on segments longer than the target but cope with a target that grew.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, ExtTag, Map, MasterPlaylist, MediaPlaylist,
    MediaPlaylistType, MediaSegment, Resolution, VariantStream,
};
use thiserror::Error;

use super::names::LadderRendition;
use super::segmenter::{PartInfo, Segment, SegmenterConfig, duration_to_ticks};
use crate::media::unit::TIMELINE_HZ;

pub use super::names::{MEDIA_PLAYLIST_URI, MULTIVARIANT_PLAYLIST_URI};

/// Parts of a segment stay listed until the segment starts this many target durations before the
/// end of the playlist (RFC 8216bis §6.2.2: parts SHOULD go after three target durations), and
/// stay downloadable as long again after that (MUST).
const PART_RETENTION_TARGETS: i64 = 3;
/// Segments are not removed if that would leave less than this many target durations listed
/// (RFC 8216bis §6.2.2).
const MIN_PLAYLIST_TARGETS: i64 = 3;
/// `CAN-SKIP-UNTIL`, in target durations: the least the spec allows (§4.4.3.8).
const SKIP_UNTIL_TARGETS: u64 = 6;
/// `PART-HOLD-BACK`, in part targets: the spec's SHOULD (§4.4.3.8).
const PART_HOLD_BACK_PARTS: u64 = 3;
/// Decimal durations are written in units of 10 µs (five decimals, as Apple's examples do).
const UNITS_PER_SEC: u64 = 100_000;

/// The container segments and parts are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// Fragmented MP4 (CMAF): needs an init section (`EXT-X-MAP`).
    Fmp4,
    /// MPEG-2 transport stream: self-contained segments.
    MpegTs,
}

/// Which segments a playlist keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// A live sliding window of this many complete segments (never less than three target
    /// durations); older ones are removed and reported for deletion.
    Live {
        /// Segments to keep (at least 1).
        window: usize,
    },
    /// `EXT-X-PLAYLIST-TYPE:EVENT`: every segment stays; with `EXT-X-ENDLIST` at the end it
    /// plays back like VOD.
    Event,
}

/// How to write a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistConfig {
    /// Segment container.
    pub container: Container,
    /// Sliding window or event.
    pub kind: PlaylistKind,
    /// The segmenter's segment target: the least `EXT-X-TARGETDURATION` advertised.
    pub segment_target: Duration,
    /// The segmenter's part target; `Some` makes this an LL-HLS playlist.
    pub part_target: Option<Duration>,
    /// Advertise and serve playlist delta updates (`CAN-SKIP-UNTIL`, `_HLS_skip`); LL-HLS only.
    pub delta_updates: bool,
}

impl PlaylistConfig {
    /// A six-segment live window with delta updates, matching a segmenter's targets.
    pub fn new(container: Container, segmenter: &SegmenterConfig) -> Self {
        Self {
            container,
            kind: PlaylistKind::Live { window: 6 },
            segment_target: segmenter.segment_target,
            part_target: segmenter.part_target,
            delta_updates: true,
        }
    }
}

/// A playlist update that does not fit the playlist.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// The configuration cannot work.
    #[error("invalid playlist configuration: {0}")]
    Config(&'static str),
    /// [`Playlist::end`] was called; nothing may be added after `EXT-X-ENDLIST`.
    #[error("the playlist has ended")]
    Ended,
    /// A part that is not the next one.
    #[error("part {msn}.{index} out of order (expected {expected_msn}.{expected_index})")]
    PartOutOfOrder {
        /// The part's segment.
        msn: u64,
        /// The part's index.
        index: u32,
        /// The segment expected.
        expected_msn: u64,
        /// The index expected.
        expected_index: u32,
    },
    /// A segment that is not the next one.
    #[error("segment {msn} out of order (expected {expected})")]
    SegmentOutOfOrder {
        /// The segment's media sequence number.
        msn: u64,
        /// The one expected.
        expected: u64,
    },
}

/// One part, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartRef {
    /// Media sequence number of the parent segment.
    pub msn: u64,
    /// Index within it.
    pub index: u32,
}

/// Whether a blocking playlist reload can be answered (RFC 8216bis §6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Answer now with the playlist.
    Ready,
    /// Hold the request until the playlist changes, then ask again; after
    /// [`Playlist::blocking_timeout`] answer 503.
    Wait,
    /// Too far ahead of the live edge: answer 400 at once.
    BadRequest,
}

/// The delivery directives of a playlist request's query (RFC 8216bis §6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryDirectives {
    /// `_HLS_msn`: block until this segment exists.
    pub msn: Option<u64>,
    /// `_HLS_part`: and this part of it.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` or `v2`: a delta update is wanted.
    pub skip: bool,
}

/// A playlist query the spec says to refuse with 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DirectiveError {
    /// `_HLS_part` without `_HLS_msn` (§6.2.5.2: MUST be a Bad Request).
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    /// A directive whose value is not what the spec defines.
    #[error("invalid {0} value")]
    Invalid(&'static str),
}

impl DeliveryDirectives {
    /// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a raw query string (`a=1&b=2`, no
    /// leading `?`). Other parameters are ignored; the values defined here never need
    /// percent-decoding.
    pub fn parse(query: &str) -> Result<Self, DirectiveError> {
        let mut out = Self::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => out.msn = Some(parse_decimal(value, "_HLS_msn")?),
                "_HLS_part" => out.part = Some(parse_decimal(value, "_HLS_part")?),
                "_HLS_skip" => match value {
                    "YES" | "v2" => out.skip = true,
                    _ => return Err(DirectiveError::Invalid("_HLS_skip")),
                },
                _ => {}
            }
        }
        if out.part.is_some() && out.msn.is_none() {
            return Err(DirectiveError::PartWithoutMsn);
        }
        Ok(out)
    }
}

fn parse_decimal(value: &str, name: &'static str) -> Result<u64, DirectiveError> {
    // u64's parser takes a leading '+', which a decimal-integer does not have.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DirectiveError::Invalid(name));
    }
    value.parse().map_err(|_| DirectiveError::Invalid(name))
}

/// A media playlist ready to write: m3u8-rs types plus the tags they cannot place.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylistDoc {
    /// The playlist. Its `unknown_tags` are the LL-HLS header tags (`EXT-X-SERVER-CONTROL`,
    /// `EXT-X-PART-INF`, `EXT-X-SKIP`), which m3u8-rs's writer would drop; a segment's
    /// `unknown_tags` carry its program date-time and its `EXT-X-PART`s.
    pub playlist: MediaPlaylist,
    /// Tags after the last complete segment: the in-progress segment's `EXT-X-PART`s (after its
    /// `EXT-X-MAP` and `EXT-X-DISCONTINUITY` when it starts a new epoch) and the
    /// `EXT-X-PRELOAD-HINT`.
    pub trailer: Vec<ExtTag>,
}

impl MediaPlaylistDoc {
    /// Writes the playlist: m3u8-rs's header, the header tags, m3u8-rs's segments, the trailer,
    /// then `EXT-X-ENDLIST` if it has ended.
    pub fn write_to<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let pl = &self.playlist;
        let header_only = MediaPlaylist {
            version: pl.version,
            target_duration: pl.target_duration,
            media_sequence: pl.media_sequence,
            segments: Vec::new(),
            discontinuity_sequence: pl.discontinuity_sequence,
            end_list: false,
            playlist_type: pl.playlist_type.clone(),
            i_frames_only: pl.i_frames_only,
            start: pl.start.clone(),
            independent_segments: pl.independent_segments,
            unknown_tags: Vec::new(),
        };
        let mut header = Vec::new();
        header_only.write_to(&mut header)?;
        let mut full = Vec::new();
        pl.write_to(&mut full)?;
        let segments = full
            .strip_prefix(header.as_slice())
            .ok_or_else(|| io::Error::other("m3u8-rs wrote its header differently twice"))?;
        let segments = if pl.end_list {
            segments
                .strip_suffix(ENDLIST)
                .ok_or_else(|| io::Error::other("m3u8-rs wrote no EXT-X-ENDLIST last"))?
        } else {
            segments
        };
        w.write_all(&header)?;
        for tag in &pl.unknown_tags {
            writeln!(w, "{tag}")?;
        }
        w.write_all(segments)?;
        for tag in &self.trailer {
            writeln!(w, "{tag}")?;
        }
        if pl.end_list {
            w.write_all(ENDLIST)?;
        }
        Ok(())
    }

    /// The playlist as bytes.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }
}

const ENDLIST: &[u8] = b"#EXT-X-ENDLIST\n";

/// A complete segment in the playlist.
#[derive(Debug, Clone)]
struct Entry {
    msn: u64,
    duration: i64,
    discontinuity: bool,
    epoch: u64,
    program_date_time: Option<SystemTime>,
    parts: Vec<PartInfo>,
    /// Position of its start on the playlist's own clock (ticks of media added so far, which
    /// keeps counting across discontinuities when timestamps restart).
    start: i64,
    /// Its `EXT-X-PART` tags are still listed (once removed, never listed again).
    parts_listed: bool,
}

/// The segment in progress: parts only.
#[derive(Debug, Clone)]
struct Open {
    msn: u64,
    epoch: u64,
    discontinuity: bool,
    parts: Vec<PartInfo>,
}

/// A file no longer listed, and when (on the playlist clock) it may be deleted.
#[derive(Debug, Clone)]
struct Retiring {
    uri: String,
    at: i64,
}

/// A media playlist being built. See the module docs.
#[derive(Debug, Clone)]
pub struct Playlist {
    config: PlaylistConfig,
    segment_target: i64,
    part_target: Option<i64>,
    segments: VecDeque<Entry>,
    open: Option<Open>,
    /// The next segment's media sequence number, once the first part or segment fixed it.
    next_msn: Option<u64>,
    /// Number of the part after the last one listed.
    next_part: Option<u64>,
    last_complete: Option<u64>,
    discontinuity_sequence: u64,
    /// End of all complete segments on the playlist clock.
    closed_end: i64,
    /// Duration of the open segment's parts.
    open_duration: i64,
    max_segment: i64,
    max_part: i64,
    longest_playlist: i64,
    ended: bool,
    retiring: Vec<Retiring>,
}

impl Playlist {
    /// An empty playlist.
    pub fn new(config: PlaylistConfig) -> Result<Self, PlaylistError> {
        if config.segment_target.is_zero() {
            return Err(PlaylistError::Config("segment target is zero"));
        }
        if config.part_target.is_some_and(|p| p.is_zero()) {
            return Err(PlaylistError::Config("part target is zero"));
        }
        if config.kind == (PlaylistKind::Live { window: 0 }) {
            return Err(PlaylistError::Config("live window of zero segments"));
        }
        Ok(Self {
            config,
            segment_target: duration_to_ticks(config.segment_target),
            part_target: config.part_target.map(duration_to_ticks),
            segments: VecDeque::new(),
            open: None,
            next_msn: None,
            next_part: None,
            last_complete: None,
            discontinuity_sequence: 0,
            closed_end: 0,
            open_duration: 0,
            max_segment: 0,
            max_part: 0,
            longest_playlist: 0,
            ended: false,
            retiring: Vec::new(),
        })
    }

    // Getters.

    /// The configuration.
    pub fn config(&self) -> &PlaylistConfig {
        &self.config
    }

    /// `EXT-X-TARGETDURATION` in seconds: covers the target, every complete segment and the one
    /// in progress.
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segment_target
            .max(self.max_segment)
            .max(self.open_duration);
        ceil_div(longest, TIMELINE_HZ)
    }

    /// `PART-TARGET` in timeline ticks (covers every part), for LL-HLS playlists.
    pub fn part_target(&self) -> Option<i64> {
        self.part_target.map(|t| t.max(self.max_part))
    }

    /// How long a blocking reload may wait before the server should give up with 503: three
    /// target durations (RFC 8216bis §6.2.5.2).
    pub fn blocking_timeout(&self) -> Duration {
        Duration::from_secs(self.target_duration().saturating_mul(3))
    }

    /// `EXT-X-MEDIA-SEQUENCE`: the first listed segment's number.
    pub fn media_sequence(&self) -> u64 {
        self.segments
            .front()
            .map(|s| s.msn)
            .or(self.open.as_ref().map(|o| o.msn))
            .or(self.next_msn)
            .unwrap_or(0)
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// Complete segments listed.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether there is anything to serve yet (a segment, or for LL-HLS a part).
    pub fn has_media(&self) -> bool {
        !self.segments.is_empty()
            || (self.part_target.is_some()
                && self.open.as_ref().is_some_and(|o| !o.parts.is_empty()))
    }

    /// `EXT-X-ENDLIST` was added.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The newest part listed (LL-HLS), if any.
    pub fn last_part(&self) -> Option<PartRef> {
        self.part_target?;
        if let Some(p) = self.open.as_ref().and_then(|o| o.parts.last()) {
            return Some(PartRef {
                msn: p.msn,
                index: p.index,
            });
        }
        let p = self.segments.back()?.parts.last()?;
        Some(PartRef {
            msn: p.msn,
            index: p.index,
        })
    }

    /// The number ([`PartInfo::number`]) of the part `EXT-X-PRELOAD-HINT` names: the next one,
    /// whether it continues the segment in progress or starts the next (which the segmenter
    /// only knows when its first unit comes), which the HTTP layer must hold requests for until
    /// it exists (RFC 8216bis §6.2.6). None without LL-HLS, before the first part, and after
    /// the end.
    pub fn preload_hint(&self) -> Option<u64> {
        self.part_target?;
        if self.ended {
            return None;
        }
        self.next_part
    }

    /// Whether a playlist request with these directives can be answered now (RFC 8216bis
    /// §6.2.5.2). Without `_HLS_msn`, or once ended, it always can.
    pub fn reload(&self, directives: &DeliveryDirectives) -> Reload {
        let Some(msn) = directives.msn else {
            return Reload::Ready;
        };
        if self.ended {
            return Reload::Ready;
        }
        // Parts are only meaningful where they are listed.
        let part = directives.part.filter(|_| self.part_target.is_some());
        let open_msn = self.open.as_ref().map(|o| o.msn);
        let last_plus_one = self
            .last_complete
            .map(|l| l.saturating_add(1))
            .or(open_msn)
            .or(self.next_msn)
            .unwrap_or(0);
        if msn > last_plus_one.saturating_add(1) {
            return Reload::BadRequest;
        }
        let complete = |m: u64| self.last_complete.is_some_and(|l| l >= m);
        let Some(part) = part else {
            return if complete(msn) {
                Reload::Ready
            } else {
                Reload::Wait
            };
        };
        let limit = self.advance_part_limit();
        let open_parts = self.open.as_ref().map_or(0, |o| o.parts.len() as u64);
        if complete(msn) {
            let Some(entry) = self.segments.iter().find(|e| e.msn == msn) else {
                // Removed already, so later media exists.
                return Reload::Ready;
            };
            if part < entry.parts.len() as u64 {
                return Reload::Ready;
            }
            // Past its last part means part 0 of the next segment (§6.2.5.2).
            let next = msn.saturating_add(1);
            return if complete(next) || (open_msn == Some(next) && open_parts > 0) {
                Reload::Ready
            } else {
                Reload::Wait
            };
        }
        if open_msn == Some(msn) {
            if part < open_parts {
                return Reload::Ready;
            }
            // How far past the newest part (index open_parts - 1) the request is.
            return if part + 1 - open_parts > limit {
                Reload::BadRequest
            } else {
                Reload::Wait
            };
        }
        // A segment not started yet: at least `part + 1` parts away.
        if part.saturating_add(1) > limit {
            Reload::BadRequest
        } else {
            Reload::Wait
        }
    }

    /// The Advance Part Limit (§6.2.5.2): three divided by the part target in seconds when that
    /// is under one second, else three.
    fn advance_part_limit(&self) -> u64 {
        match self.part_target() {
            Some(t) if t > 0 && t < TIMELINE_HZ => ceil_div(3 * TIMELINE_HZ, t),
            _ => 3,
        }
    }

    // Mutators.

    /// Lists a part of the segment in progress (LL-HLS). Parts must come in order; a plain HLS
    /// playlist may skip this and take whole segments only.
    pub fn add_part(&mut self, part: PartInfo) -> Result<(), PlaylistError> {
        if self.ended {
            return Err(PlaylistError::Ended);
        }
        let (expected_msn, expected_index) = match &self.open {
            Some(open) => (
                open.msn,
                u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
            ),
            None => (self.next_msn.unwrap_or(part.msn), 0),
        };
        if (part.msn, part.index) != (expected_msn, expected_index) {
            return Err(PlaylistError::PartOutOfOrder {
                msn: part.msn,
                index: part.index,
                expected_msn,
                expected_index,
            });
        }
        let open = self.open.get_or_insert_with(|| Open {
            msn: part.msn,
            epoch: part.epoch,
            discontinuity: part.discontinuity,
            parts: Vec::new(),
        });
        open.parts.push(part);
        self.next_msn = Some(part.msn);
        self.next_part = Some(part.number.saturating_add(1));
        let duration = part.duration.max(0);
        self.open_duration = self.open_duration.saturating_add(duration);
        self.max_part = self.max_part.max(duration);
        self.update();
        Ok(())
    }

    /// Lists a complete segment (replacing its in-progress parts with its final list), removes
    /// what falls out of the window, and schedules deletions.
    pub fn add_segment(&mut self, segment: &Segment) -> Result<(), PlaylistError> {
        if self.ended {
            return Err(PlaylistError::Ended);
        }
        let expected = self
            .open
            .as_ref()
            .map(|o| o.msn)
            .or(self.next_msn)
            .unwrap_or(segment.msn);
        if segment.msn != expected {
            return Err(PlaylistError::SegmentOutOfOrder {
                msn: segment.msn,
                expected,
            });
        }
        let duration = segment.duration.max(0);
        for part in &segment.parts {
            self.max_part = self.max_part.max(part.duration);
        }
        self.open = None;
        self.open_duration = 0;
        self.segments.push_back(Entry {
            msn: segment.msn,
            duration,
            discontinuity: segment.discontinuity,
            epoch: segment.epoch,
            program_date_time: segment.program_date_time,
            parts: segment.parts.clone(),
            start: self.closed_end,
            parts_listed: self.part_target.is_some(),
        });
        self.closed_end = self.closed_end.saturating_add(duration);
        self.max_segment = self.max_segment.max(duration);
        self.last_complete = Some(segment.msn);
        self.next_msn = Some(segment.msn.saturating_add(1));
        if let Some(last) = segment.parts.last() {
            self.next_part = Some(last.number.saturating_add(1));
        }
        self.update();
        Ok(())
    }

    /// Adds `EXT-X-ENDLIST`: the presentation is over (the segmenter was finished and its last
    /// segment added). Nothing is removed or expired after this; the sink decides when the whole
    /// stream goes.
    pub fn end(&mut self) {
        self.ended = true;
        // A part list without its segment would dangle after the end.
        self.open = None;
        self.open_duration = 0;
    }

    /// Files (relative URIs) that are no longer listed and have stayed downloadable as long as
    /// the spec asks (§6.2.2: parts three target durations after their tags went; segments for
    /// their duration plus the longest playlist after they left), so the sink may delete them.
    pub fn take_expired(&mut self) -> Vec<String> {
        let now = self.end_position();
        let mut out = Vec::new();
        self.retiring.retain(|r| {
            if r.at <= now {
                out.push(r.uri.clone());
                false
            } else {
                true
            }
        });
        out
    }

    // Rendering.

    /// The media playlist; `skip` asks for a delta update (`_HLS_skip`), given only when delta
    /// updates are on, the playlist has not ended, and some segments are old enough.
    pub fn render(&self, skip: bool) -> MediaPlaylistDoc {
        let container = self.config.container;
        let ll = self.part_target();
        let target_duration = self.target_duration();
        let delta = ll.is_some() && self.config.delta_updates;
        let skipped = if skip && delta && !self.ended {
            self.skippable(target_duration)
        } else {
            0
        };

        let mut header = Vec::new();
        if let Some(part_target) = ll {
            let part_units = ticks_to_units_ceil(part_target);
            let mut control = format!(
                "CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
                format_units(part_units.saturating_mul(PART_HOLD_BACK_PARTS))
            );
            if delta {
                let until = target_duration.saturating_mul(SKIP_UNTIL_TARGETS);
                control.push_str(&format!(
                    ",CAN-SKIP-UNTIL={}",
                    format_units(until.saturating_mul(UNITS_PER_SEC))
                ));
            }
            header.push(tag("X-SERVER-CONTROL", control));
            header.push(tag(
                "X-PART-INF",
                format!("PART-TARGET={}", format_units(part_units)),
            ));
            if skipped > 0 {
                header.push(tag("X-SKIP", format!("SKIPPED-SEGMENTS={skipped}")));
            }
        }

        let mut map_epoch = None;
        let mut segments = Vec::with_capacity(self.segments.len() - skipped);
        for entry in self.segments.iter().skip(skipped) {
            let map = (map_epoch != Some(entry.epoch))
                .then(|| container.init_uri(entry.epoch))
                .flatten()
                .map(|uri| Map {
                    uri,
                    ..Map::default()
                });
            map_epoch = Some(entry.epoch);
            let mut unknown_tags = Vec::new();
            if let Some(pdt) = entry.program_date_time.and_then(format_rfc3339) {
                unknown_tags.push(tag("X-PROGRAM-DATE-TIME", pdt));
            }
            if ll.is_some() && entry.parts_listed {
                unknown_tags.extend(entry.parts.iter().map(|p| part_tag(container, p)));
            }
            segments.push(MediaSegment {
                uri: container.segment_uri(entry.msn),
                duration: (entry.duration as f64 / TIMELINE_HZ as f64) as f32,
                discontinuity: entry.discontinuity,
                map,
                unknown_tags,
                ..MediaSegment::default()
            });
        }

        let mut trailer = Vec::new();
        if ll.is_some() {
            if let Some(open) = &self.open {
                if map_epoch != Some(open.epoch)
                    && let Some(uri) = container.init_uri(open.epoch)
                {
                    trailer.push(tag("X-MAP", format!("URI=\"{uri}\"")));
                }
                if open.discontinuity {
                    trailer.push(ExtTag {
                        tag: "X-DISCONTINUITY".to_owned(),
                        rest: None,
                    });
                }
                trailer.extend(open.parts.iter().map(|p| part_tag(container, p)));
            }
            if let Some(hint) = self.preload_hint() {
                trailer.push(tag(
                    "X-PRELOAD-HINT",
                    format!("TYPE=PART,URI=\"{}\"", container.part_uri(hint)),
                ));
            }
        }

        let version = if delta {
            // EXT-X-SKIP.
            9
        } else if container == Container::Fmp4 {
            // EXT-X-MAP without EXT-X-I-FRAMES-ONLY.
            6
        } else {
            // Decimal EXTINF.
            3
        };
        MediaPlaylistDoc {
            playlist: MediaPlaylist {
                version: Some(version),
                target_duration,
                media_sequence: self.media_sequence(),
                segments,
                discontinuity_sequence: self.discontinuity_sequence,
                end_list: self.ended,
                playlist_type: match self.config.kind {
                    PlaylistKind::Event => Some(MediaPlaylistType::Event),
                    PlaylistKind::Live { .. } => None,
                },
                unknown_tags: header,
                ..MediaPlaylist::default()
            },
            trailer,
        }
    }

    /// [`Playlist::render`] written out.
    pub fn to_bytes(&self, skip: bool) -> io::Result<Vec<u8>> {
        self.render(skip).to_bytes()
    }

    // Internals.

    fn end_position(&self) -> i64 {
        self.closed_end.saturating_add(self.open_duration)
    }

    fn target_ticks(&self) -> i64 {
        i64::try_from(self.target_duration())
            .unwrap_or(i64::MAX)
            .saturating_mul(TIMELINE_HZ)
    }

    /// How many leading segments a delta update replaces with `EXT-X-SKIP`: those that end at
    /// least `CAN-SKIP-UNTIL` before the last complete segment does.
    fn skippable(&self, target_duration: u64) -> usize {
        let boundary = i64::try_from(target_duration.saturating_mul(SKIP_UNTIL_TARGETS))
            .unwrap_or(i64::MAX)
            .saturating_mul(TIMELINE_HZ);
        self.segments
            .iter()
            .take_while(|e| self.closed_end - (e.start + e.duration) >= boundary)
            .count()
    }

    /// Unlists old parts, slides the window, and schedules deletions.
    fn update(&mut self) {
        let now = self.end_position();
        let target = self.target_ticks();
        let part_hold = target.saturating_mul(PART_RETENTION_TARGETS);
        let container = self.config.container;
        let ll = self.part_target.is_some();
        for entry in &mut self.segments {
            if entry.parts_listed && now - entry.start > part_hold {
                entry.parts_listed = false;
                for p in &entry.parts {
                    self.retiring.push(Retiring {
                        uri: container.part_uri(p.number),
                        at: now.saturating_add(part_hold),
                    });
                }
            }
        }
        if let PlaylistKind::Live { window } = self.config.kind {
            let min_listed = target.saturating_mul(MIN_PLAYLIST_TARGETS);
            let mut listed: i64 = self.segments.iter().map(|e| e.duration).sum();
            while self.segments.len() > window {
                let Some(front) = self.segments.front() else {
                    break;
                };
                if listed - front.duration < min_listed {
                    break;
                }
                let Some(gone) = self.segments.pop_front() else {
                    break;
                };
                listed -= gone.duration;
                if gone.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                // Downloadable until it has been listed for its Availability Duration (its
                // duration plus the longest playlist's), counted from when it appeared (§6.2.2).
                let at = (gone.start.saturating_add(gone.duration))
                    .saturating_add(gone.duration)
                    .saturating_add(self.longest_playlist)
                    .max(now);
                self.retiring.push(Retiring {
                    uri: container.segment_uri(gone.msn),
                    at,
                });
                if ll && gone.parts_listed {
                    for p in &gone.parts {
                        self.retiring.push(Retiring {
                            uri: container.part_uri(p.number),
                            at: now.saturating_add(part_hold),
                        });
                    }
                }
                let next_epoch = self
                    .segments
                    .front()
                    .map(|e| e.epoch)
                    .or(self.open.as_ref().map(|o| o.epoch));
                if next_epoch.is_some_and(|e| e != gone.epoch)
                    && let Some(uri) = container.init_uri(gone.epoch)
                {
                    self.retiring.push(Retiring { uri, at });
                }
            }
        }
        let listed: i64 = self.segments.iter().map(|e| e.duration).sum();
        self.longest_playlist = self
            .longest_playlist
            .max(listed.saturating_add(self.open_duration));
    }
}

/// An `EXT-X-PART` tag.
fn part_tag(container: Container, part: &PartInfo) -> ExtTag {
    let mut rest = format!(
        "DURATION={},URI=\"{}\"",
        format_units(ticks_to_units_round(part.duration)),
        container.part_uri(part.number)
    );
    if part.independent {
        rest.push_str(",INDEPENDENT=YES");
    }
    tag("X-PART", rest)
}

/// `#EXT-{name}:{rest}`.
fn tag(name: &str, rest: String) -> ExtTag {
    ExtTag {
        tag: name.to_owned(),
        rest: Some(rest),
    }
}

fn ceil_div(a: i64, b: i64) -> u64 {
    if a <= 0 || b <= 0 {
        return 0;
    }
    // Both positive here; unsigned so the rounding up cannot overflow.
    (a as u64).div_ceil(b as u64)
}

/// Ticks (1/90 000 s) to 10 µs units, rounded up: for targets that must cover durations.
fn ticks_to_units_ceil(ticks: i64) -> u64 {
    let units = i128::from(ticks.max(0)) * i128::from(UNITS_PER_SEC);
    u64::try_from((units + i128::from(TIMELINE_HZ) - 1) / i128::from(TIMELINE_HZ))
        .unwrap_or(u64::MAX)
}

/// Ticks to 10 µs units, rounded to nearest: for durations.
fn ticks_to_units_round(ticks: i64) -> u64 {
    let units = i128::from(ticks.max(0)) * i128::from(UNITS_PER_SEC);
    u64::try_from((units + i128::from(TIMELINE_HZ) / 2) / i128::from(TIMELINE_HZ))
        .unwrap_or(u64::MAX)
}

/// 10 µs units as a decimal-floating-point number of seconds: `0.2`, `1.0`, `0.03333`.
fn format_units(units: u64) -> String {
    let whole = units / UNITS_PER_SEC;
    let frac = units % UNITS_PER_SEC;
    if frac == 0 {
        return format!("{whole}.0");
    }
    let digits = format!("{frac:05}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `2024-05-01T12:34:56.789Z` (RFC 3339, UTC, milliseconds), as `EXT-X-PROGRAM-DATE-TIME`
/// wants. None before 1970 or after 9999.
pub fn format_rfc3339(t: SystemTime) -> Option<String> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    let secs = i64::try_from(since.as_secs()).ok()?;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // In range by construction: day 1..=31, month 1..=12.
    (year, month as u32, day as u32)
}

/// A piece of a playlist's text: a URI it lists, or what is around them.
enum Piece<'a> {
    Text(&'a str),
    Uri(&'a str),
}

/// Walks `playlist` piece by piece, in order (together the pieces are the playlist): each URI
/// it lists (the media lines and each `URI="..."` attribute: maps, parts, preload hints,
/// rendition reports, renditions), and the text around them.
fn walk_uris<'a>(playlist: &'a str, mut each: impl FnMut(Piece<'a>)) {
    for line in playlist.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = &line[body.len()..];
        if body.starts_with('#') {
            let mut rest = body;
            while let Some(at) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(at + 5);
                each(Piece::Text(head));
                let close = tail.find('"').unwrap_or(tail.len());
                each(Piece::Uri(&tail[..close]));
                rest = &tail[close..];
            }
            each(Piece::Text(rest));
        } else if !body.is_empty() {
            each(Piece::Uri(body));
        }
        each(Piece::Text(end));
    }
}

/// Every URI `playlist` lists, in order: the media lines and each `URI="..."` attribute
/// (maps, parts, preload hints, rendition reports, renditions).
pub fn uris(playlist: &str) -> Vec<&str> {
    let mut out = Vec::new();
    walk_uris(playlist, |piece| {
        if let Piece::Uri(uri) = piece {
            out.push(uri);
        }
    });
    out
}

/// The playlist with `query` (`name=value`, already encoded) added to every URI it lists
/// ([`uris`]). A player given a playlist URL with a token in its query then carries that
/// token on every request the playlist leads it to: players cannot set headers.
pub fn with_query(playlist: &str, query: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    walk_uris(playlist, |piece| match piece {
        Piece::Text(text) => out.push_str(text),
        Piece::Uri(uri) => {
            out.push_str(uri);
            out.push(if uri.contains('?') { '&' } else { '?' });
            out.push_str(query);
        }
    });
    out
}

/// The playlist as plain storage behind a CDN can serve it: no `EXT-X-SERVER-CONTROL` promise
/// only the bridge keeps (`CAN-BLOCK-RELOAD`, `CAN-SKIP-UNTIL`, `CAN-SKIP-DATERANGES`: storage
/// answers `_HLS_msn` and `_HLS_skip` requests at once, with the whole playlist, and a player
/// told it may block would poll it back to back) and no `EXT-X-PRELOAD-HINT` (a request for
/// the hinted part is a 404 there, not held until the part exists). The hold-backs stay, and
/// so do the parts, which exist: a low-latency player polls the playlist as a plain one.
pub fn for_storage(playlist: &str) -> String {
    const SERVER_CONTROL: &str = "#EXT-X-SERVER-CONTROL:";
    const BRIDGE_ONLY: [&str; 3] = [
        "CAN-BLOCK-RELOAD=",
        "CAN-SKIP-UNTIL=",
        "CAN-SKIP-DATERANGES=",
    ];
    let mut out = String::with_capacity(playlist.len());
    for line in playlist.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.starts_with("#EXT-X-PRELOAD-HINT:") {
            continue;
        }
        let Some(attributes) = text.strip_prefix(SERVER_CONTROL) else {
            out.push_str(line);
            continue;
        };
        // Its attributes are numbers and enums: no quoted commas.
        let kept: Vec<&str> = attributes
            .split(',')
            .filter(|a| !BRIDGE_ONLY.iter().any(|name| a.starts_with(name)))
            .collect();
        if !kept.is_empty() {
            out.push_str(SERVER_CONTROL);
            out.push_str(&kept.join(","));
            out.push_str(&line[text.len()..]);
        }
    }
    out
}

/// A variant of the multivariant playlist: the stream's one, or a rendition of a [`Ladder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The media playlist, relative to the multivariant one ([`MEDIA_PLAYLIST_URI`]).
    pub uri: String,
    /// `BANDWIDTH`: peak bits per second ([`BandwidthMeter::peak`]).
    pub bandwidth: u64,
    /// `AVERAGE-BANDWIDTH`: bits per second over everything so far.
    pub average_bandwidth: Option<u64>,
    /// `CODECS` (RFC 6381), e.g. `avc1.42e01f,mp4a.40.2` or `avc1.640028,opus`; the fMP4
    /// muxer's `codecs()` gives it.
    pub codecs: String,
    /// `RESOLUTION` from the SPS: width, height.
    pub resolution: Option<(u32, u32)>,
    /// `FRAME-RATE`, if known.
    pub frame_rate: Option<f64>,
}

impl Variant {
    /// The multivariant playlist as an m3u8-rs type.
    pub fn playlist(&self) -> MasterPlaylist {
        MasterPlaylist {
            variants: vec![self.stream()],
            ..MasterPlaylist::default()
        }
    }

    /// Its `EXT-X-STREAM-INF`.
    fn stream(&self) -> VariantStream {
        VariantStream {
            uri: self.uri.clone(),
            bandwidth: self.bandwidth,
            average_bandwidth: self.average_bandwidth,
            codecs: Some(self.codecs.clone()).filter(|c| !c.is_empty()),
            resolution: self.resolution.map(|(width, height)| Resolution {
                width: u64::from(width),
                height: u64::from(height),
            }),
            frame_rate: self.frame_rate,
            ..VariantStream::default()
        }
    }

    /// The multivariant playlist as bytes.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.playlist().write_to(&mut out)?;
        Ok(out)
    }
}

/// `GROUP-ID` of a ladder's audio rendition.
const AUDIO_GROUP: &str = "audio";

/// A simulcast publisher's renditions: one video-only media playlist per layer, and the audio
/// in one rendition they share (`EXT-X-MEDIA`), encoded once. Each is described by what its own
/// output measured ([`Ladder::set`]).
///
/// A video rendition is listed only while players can switch to it at any segment boundary:
/// it leaves the ladder ([`Ladder::left`]) when one of its latest segments ran more than twice
/// the target (a GOP far above it: its boundaries are not where the others' are), or when one
/// of its latest segments started more than a part (a fifth of a segment without parts) away
/// from every segment start of the largest rendition (its key frames drift from the top
/// layer's). It comes back when its latest segments are fine again.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    video: Vec<(LadderRendition, Rung)>,
    audio: Option<Variant>,
    segment_target: i64,
    tolerance: i64,
}

/// What a video rendition's output measured of itself.
#[derive(Debug, Clone, PartialEq)]
struct Rung {
    variant: Variant,
    /// `(start, duration)` of its latest segments on the session timeline, oldest first.
    segments: Vec<(i64, i64)>,
}

/// Why a video rendition is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// A segment ran more than twice the target.
    LongGop,
    /// Its segments start more than a part away from the largest rendition's.
    Drift,
}

impl Leave {
    /// `long_gop` / `drift`, for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LongGop => "long_gop",
            Self::Drift => "drift",
        }
    }
}

/// Latest segments of a rendition the checks look at.
const CHECKED_SEGMENTS: usize = 3;

impl Ladder {
    /// An empty ladder of renditions cut with these targets.
    pub fn new(config: &SegmenterConfig) -> Self {
        let segment_target = duration_to_ticks(config.segment_target);
        let tolerance = config
            .part_target
            .map_or(segment_target / 5, duration_to_ticks);
        Self {
            video: Vec::new(),
            audio: None,
            segment_target,
            tolerance,
        }
    }

    /// Puts in (or replaces) what `rendition`'s output measured of itself: its variant (`uri`
    /// made relative to the multivariant playlist, in the rendition's folder) and, for video,
    /// its latest segments as `(start, duration)` on the session timeline.
    pub fn set(
        &mut self,
        rendition: LadderRendition,
        mut variant: Variant,
        segments: Vec<(i64, i64)>,
    ) {
        variant.uri = format!("{rendition}/{}", variant.uri);
        match rendition {
            LadderRendition::Audio => self.audio = Some(variant),
            LadderRendition::Video(_) => {
                let rung = Rung { variant, segments };
                match self.video.iter_mut().find(|(r, _)| *r == rendition) {
                    Some((_, known)) => *known = rung,
                    None => self.video.push((rendition, rung)),
                }
            }
        }
    }

    /// The video renditions not listed, and why.
    pub fn left(&self) -> Vec<(LadderRendition, Leave)> {
        let pixels = |rung: &Rung| {
            rung.variant
                .resolution
                .map_or(0, |(w, h)| u64::from(w) * u64::from(h))
        };
        let top = self.video.iter().max_by_key(|(_, rung)| pixels(rung));
        let top_starts: Vec<i64> = top
            .map(|(_, rung)| rung.segments.iter().map(|&(start, _)| start).collect())
            .unwrap_or_default();
        let (first, last) = match (top_starts.first(), top_starts.last()) {
            (Some(&first), Some(&last)) => (first, last),
            _ => (i64::MAX, i64::MIN),
        };
        let mut left = Vec::new();
        for (rendition, rung) in &self.video {
            let latest = &rung.segments[rung.segments.len().saturating_sub(CHECKED_SEGMENTS)..];
            if latest
                .iter()
                .any(|&(_, duration)| duration > self.segment_target.saturating_mul(2))
            {
                left.push((*rendition, Leave::LongGop));
                continue;
            }
            let drifts = latest
                .iter()
                .filter(|&&(start, _)| (first..=last).contains(&start))
                .any(|&(start, _)| {
                    top_starts
                        .iter()
                        .all(|&t| t.abs_diff(start) > self.tolerance.unsigned_abs())
                });
            if drifts {
                left.push((*rendition, Leave::Drift));
            }
        }
        left
    }

    /// The video renditions listed.
    fn listed(&self) -> Vec<&Variant> {
        let left = self.left();
        self.video
            .iter()
            .filter(|(r, _)| !left.iter().any(|(l, _)| l == r))
            .map(|(_, rung)| &rung.variant)
            .collect()
    }

    /// No video rendition to list (yet, or none fit).
    pub fn is_empty(&self) -> bool {
        self.listed().is_empty()
    }

    /// The multivariant playlist: the audio group, then a variant per video rendition, the
    /// highest bandwidth first. A variant's `BANDWIDTH` and `CODECS` cover its video and the
    /// audio played with it, as RFC 8216 §4.3.4.2 asks.
    pub fn playlist(&self) -> MasterPlaylist {
        let alternatives = self
            .audio
            .iter()
            .map(|audio| AlternativeMedia {
                media_type: AlternativeMediaType::Audio,
                uri: Some(audio.uri.clone()),
                group_id: AUDIO_GROUP.to_owned(),
                name: AUDIO_GROUP.to_owned(),
                default: true,
                autoselect: true,
                ..AlternativeMedia::default()
            })
            .collect();
        let mut video = self.listed();
        video.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        let variants = video
            .into_iter()
            .map(|v| {
                let mut stream = v.stream();
                if let Some(audio) = &self.audio {
                    stream.bandwidth = v.bandwidth.saturating_add(audio.bandwidth);
                    stream.average_bandwidth = v
                        .average_bandwidth
                        .zip(audio.average_bandwidth)
                        .map(|(v, a)| v.saturating_add(a));
                    stream.codecs = Some(
                        [v.codecs.as_str(), audio.codecs.as_str()]
                            .into_iter()
                            .filter(|c| !c.is_empty())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    stream.audio = Some(AUDIO_GROUP.to_owned());
                }
                stream
            })
            .collect();
        MasterPlaylist {
            version: Some(7),
            independent_segments: true,
            alternatives,
            variants,
            ..MasterPlaylist::default()
        }
    }

    /// The multivariant playlist as bytes.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.playlist().write_to(&mut out)?;
        Ok(out)
    }
}

/// Measures `BANDWIDTH` and `AVERAGE-BANDWIDTH` from segment sizes.
///
/// The peak is RFC 8216 §4.3.4.2's: the highest bit rate of any run of consecutive segments
/// lasting between 0.5 and 1.5 target durations (so a short final segment that is mostly key
/// frame does not set it alone, unless no run qualifies).
#[derive(Debug, Clone)]
pub struct BandwidthMeter {
    target: i64,
    /// Recent segments as (bytes, ticks), newest last, as many as a 1.5-target run can reach.
    recent: VecDeque<(u64, i64)>,
    peak: Option<u64>,
    total_bytes: u64,
    total_ticks: i64,
}

impl BandwidthMeter {
    /// A meter for segments of this target duration.
    pub fn new(segment_target: Duration) -> Self {
        Self {
            target: duration_to_ticks(segment_target).max(1),
            recent: VecDeque::new(),
            peak: None,
            total_bytes: 0,
            total_ticks: 0,
        }
    }

    /// Counts a segment of `bytes` lasting `duration` ticks.
    pub fn add_segment(&mut self, bytes: u64, duration: i64) {
        let duration = duration.max(0);
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        self.total_ticks = self.total_ticks.saturating_add(duration);
        self.recent.push_back((bytes, duration));
        let (low, high) = (self.target / 2, self.target.saturating_mul(3) / 2);
        let (mut run_bytes, mut run_ticks, mut best) = (0u64, 0i64, None);
        for &(b, d) in self.recent.iter().rev() {
            run_bytes = run_bytes.saturating_add(b);
            run_ticks = run_ticks.saturating_add(d);
            if run_ticks > high {
                break;
            }
            if run_ticks >= low {
                best = best.max(bits_per_sec(run_bytes, run_ticks));
            }
        }
        // No run fits (a segment longer than 1.5 targets): its own rate is still a measurement.
        let best = best.or_else(|| bits_per_sec(bytes, duration));
        self.peak = self.peak.max(best);
        // Keep only what a run ending at a later segment can still reach.
        let mut reach = 0i64;
        let mut keep = 0;
        for &(_, d) in self.recent.iter().rev() {
            if reach > high {
                break;
            }
            reach = reach.saturating_add(d);
            keep += 1;
        }
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }

    /// `BANDWIDTH`, once a segment was measured.
    pub fn peak(&self) -> Option<u64> {
        self.peak
    }

    /// `AVERAGE-BANDWIDTH`, once a segment was measured.
    pub fn average(&self) -> Option<u64> {
        bits_per_sec(self.total_bytes, self.total_ticks)
    }
}

fn bits_per_sec(bytes: u64, ticks: i64) -> Option<u64> {
    if ticks <= 0 {
        return None;
    }
    let bits = u128::from(bytes) * 8 * TIMELINE_HZ as u128;
    u64::try_from(bits / ticks as u128).ok()
}

#[cfg(test)]
mod tests {
    use m3u8_rs::Playlist as Parsed;

    use super::*;
    use crate::media::unit::Unit;
    use crate::mux::hls::segmenter::{Event, Segmenter};

    const HZ: i64 = TIMELINE_HZ;
    const FRAME: i64 = HZ / 30;
    const OPUS: i64 = HZ / 50;

    use crate::testdata::timed_video as video;

    fn audio(pts: i64) -> Unit {
        crate::testdata::timed_audio(pts, OPUS)
    }

    /// `secs` of 30 fps video with a key frame every `gop` frames and 20 ms audio from `from`.
    fn av(from: i64, secs: i64, gop: i64) -> Vec<Unit> {
        let mut units: Vec<(i64, Unit)> = (0..secs * 30)
            .map(|i| (from + i * FRAME, video(from + i * FRAME, i % gop == 0)))
            .chain((0..secs * 50).map(|i| (from + i * OPUS + 45, audio(from + i * OPUS + 45))))
            .collect();
        units.sort_by_key(|(t, _)| *t);
        units.into_iter().map(|(_, u)| u).collect()
    }

    /// A segmenter feeding a playlist, checking every playlist it could serve along the way.
    struct Harness {
        segmenter: Segmenter,
        playlist: Playlist,
        /// Every URI that was ever listed, and every URI reported expired.
        listed: Vec<String>,
        expired: Vec<String>,
        last_sequence: u64,
        renders: usize,
        /// The preload hint served right after the latest part was listed, while its segment
        /// was still open.
        hint_after_part: Option<u64>,
        /// Parts that started a new segment after a hint had been served in the old one.
        hints_across_cuts: usize,
    }

    impl Harness {
        fn new(segmenter: SegmenterConfig, playlist: PlaylistConfig) -> Self {
            Self {
                segmenter: Segmenter::new(segmenter).unwrap(),
                playlist: Playlist::new(playlist).unwrap(),
                listed: Vec::new(),
                expired: Vec::new(),
                last_sequence: 0,
                renders: 0,
                hint_after_part: None,
                hints_across_cuts: 0,
            }
        }

        fn feed(&mut self, units: impl IntoIterator<Item = Unit>) {
            for unit in units {
                self.segmenter.push(unit);
                self.drain();
            }
        }

        fn drain(&mut self) {
            while let Some(event) = self.segmenter.poll_event() {
                match event {
                    Event::PartReady(part) => {
                        if self.playlist.config().part_target.is_some() {
                            // A player holding the hinted request gets exactly this part,
                            // whether it continues the segment or a key frame began the next.
                            if let Some(hint) = self.hint_after_part {
                                assert_eq!(part.info.number, hint, "{:?}", part.info);
                                self.hints_across_cuts += usize::from(part.info.index == 0);
                            }
                            self.playlist.add_part(part.info).unwrap();
                            self.hint_after_part = self.playlist.preload_hint();
                        }
                    }
                    Event::SegmentReady(segment) => self.playlist.add_segment(&segment).unwrap(),
                    _ => continue,
                }
                self.check();
            }
        }

        fn finish(&mut self) {
            self.segmenter.finish();
            self.drain();
            self.playlist.end();
            self.check();
        }

        /// Renders the full playlist and a delta update, and checks the rules on both.
        fn check(&mut self) {
            self.renders += 1;
            let full = check_playlist(&self.playlist, false);
            let delta = check_playlist(&self.playlist, true);
            let sequence = self.playlist.media_sequence();
            assert!(
                sequence >= self.last_sequence,
                "media sequence never decreases"
            );
            self.last_sequence = sequence;
            // A delta update trades skipped segments for one EXT-X-SKIP line.
            assert!(delta.lines().count() <= full.lines().count() + 1);
            for line in full.lines() {
                let uri = ["#EXT-X-PART:", "#EXT-X-MAP:"]
                    .iter()
                    .find_map(|prefix| line.strip_prefix(prefix))
                    .and_then(|rest| attribute(rest, "URI"))
                    .map(str::to_owned)
                    .or_else(|| (!line.starts_with('#')).then(|| line.to_owned()));
                if let Some(uri) = uri {
                    assert!(
                        !self.expired.contains(&uri),
                        "{uri} listed after it expired"
                    );
                    if !self.listed.contains(&uri) {
                        self.listed.push(uri);
                    }
                }
            }
            for uri in self.playlist.take_expired() {
                assert!(self.listed.contains(&uri), "{uri} expired but never listed");
                assert!(
                    !full.contains(&format!("\n{uri}\n")),
                    "{uri} expired while listed"
                );
                assert!(
                    !full.contains(&format!("\"{uri}\"")),
                    "{uri} expired while listed"
                );
                self.expired.push(uri);
            }
        }
    }

    /// An attribute's value from an attribute list, quotes removed.
    fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
        list.split(',').find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
    }

    /// Renders, parses back with m3u8-rs, checks the spec's rules, returns the text.
    fn check_playlist(playlist: &Playlist, skip: bool) -> String {
        let bytes = playlist.to_bytes(skip).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let Ok(Parsed::MediaPlaylist(parsed)) = m3u8_rs::parse_playlist_res(&bytes) else {
            panic!("not a media playlist:\n{text}");
        };
        let doc = playlist.render(skip);
        assert_eq!(parsed.target_duration, doc.playlist.target_duration);
        assert_eq!(parsed.media_sequence, doc.playlist.media_sequence);
        assert_eq!(
            parsed.discontinuity_sequence,
            doc.playlist.discontinuity_sequence
        );
        assert_eq!(parsed.end_list, playlist.is_ended());
        assert_eq!(parsed.segments.len(), doc.playlist.segments.len());
        for (p, d) in parsed.segments.iter().zip(&doc.playlist.segments) {
            assert_eq!(p.uri, d.uri);
            assert_eq!(p.duration, d.duration);
            assert_eq!(p.discontinuity, d.discontinuity);
            assert!(
                f64::from(p.duration) <= parsed.target_duration as f64,
                "EXTINF {} over the target duration {}:\n{text}",
                p.duration,
                parsed.target_duration
            );
        }
        for p in &parsed.segments {
            let tagged = p
                .unknown_tags
                .iter()
                .any(|t| t.tag == "X-PROGRAM-DATE-TIME");
            assert!(!tagged, "m3u8-rs parses our date-times as date-times");
        }
        let ll = playlist.config().part_target.is_some();
        let part_target = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
            .map(|v| v.parse::<f64>().unwrap());
        assert_eq!(part_target.is_some(), ll, "{text}");
        if let Some(part_target) = part_target {
            let control = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-SERVER-CONTROL:"))
                .unwrap();
            assert!(control.contains("CAN-BLOCK-RELOAD=YES"));
            let hold: f64 = attribute(control, "PART-HOLD-BACK")
                .unwrap()
                .parse()
                .unwrap();
            assert!(hold >= 3.0 * part_target - 1e-9, "{control}");
            if playlist.config().delta_updates {
                let until: f64 = attribute(control, "CAN-SKIP-UNTIL")
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(until >= 6.0 * parsed.target_duration as f64);
                assert_eq!(parsed.version, Some(9));
            }
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
                    let d: f64 = attribute(rest, "DURATION").unwrap().parse().unwrap();
                    assert!(d > 0.0 && d <= part_target, "{line} vs {part_target}");
                }
            }
            let hints = text.matches("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=").count();
            assert_eq!(hints, usize::from(!playlist.is_ended()), "{text}");
        } else {
            assert!(!text.contains("#EXT-X-PART"));
            assert!(!text.contains("#EXT-X-SERVER-CONTROL"));
        }
        if !skip || !ll {
            assert!(!text.contains("#EXT-X-SKIP"));
        }
        text
    }

    fn ll_fmp4() -> (SegmenterConfig, PlaylistConfig) {
        let seg = SegmenterConfig::low_latency(true);
        (seg, PlaylistConfig::new(Container::Fmp4, &seg))
    }

    #[test]
    fn ll_fmp4_live_window_slides_and_expires_files() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        h.feed(av(0, 30, 30));
        let p = &h.playlist;
        assert_eq!(p.segment_count(), 6);
        assert_eq!(p.media_sequence(), 29 - 6);
        assert_eq!(p.target_duration(), 1);
        assert_eq!(p.part_target(), Some(HZ / 5));
        // Old segments and parts were reported, after a delay, never the live init section.
        for uri in [
            "seg0.m4s",
            "part0.m4s",
            "part4.m4s",
            "seg15.m4s",
            "part104.m4s",
        ] {
            assert!(h.expired.contains(&uri.to_owned()), "{uri} not expired");
        }
        for uri in ["init.mp4", "seg22.m4s", "part125.m4s"] {
            assert!(
                !h.expired.contains(&uri.to_owned()),
                "{uri} expired too soon"
            );
        }
        let text = String::from_utf8(p.to_bytes(false).unwrap()).unwrap();
        // Parts only for the last three target durations.
        assert!(!text.contains("part120.m4s"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.2,URI=\"part135.m4s\",INDEPENDENT=YES"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.2,URI=\"part144.m4s\"\n"));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part149.m4s\""));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        h.finish();
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        assert!(text.ends_with("seg29.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(h.renders > 150);
    }

    #[test]
    fn golden_ll_playlist() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        h.segmenter
            .set_wallclock_anchor(Some(UNIX_EPOCH + Duration::from_millis(1_714_567_890_123)));
        h.feed(av(0, 4, 30).into_iter().take_while(|u| match u {
            Unit::Video(v) => v.dts < 3 * HZ + 13 * FRAME,
            Unit::Audio(a) => a.pts < 3 * HZ + 13 * FRAME,
        }));
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        // Compare with RFC 8216bis appendix examples and Apple's "Enabling Low-Latency HLS".
        let expected = "\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=6.0
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:51:30.123Z
#EXTINF:1,
seg0.m4s
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:51:31.123Z
#EXT-X-PART:DURATION=0.2,URI=\"part5.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part6.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part7.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part8.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part9.m4s\"
#EXTINF:1,
seg1.m4s
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:51:32.123Z
#EXT-X-PART:DURATION=0.2,URI=\"part10.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part11.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part12.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part13.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"part14.m4s\"
#EXTINF:1,
seg2.m4s
#EXT-X-PART:DURATION=0.2,URI=\"part15.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part16.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part17.m4s\"
";
        assert_eq!(text, expected);
    }

    #[test]
    fn discontinuity_gets_a_new_init_section_and_sequence() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        h.feed(av(100 * HZ, 5, 30));
        h.segmenter.discontinuity();
        h.drain();
        // The new publisher's first parts, before its first segment is complete.
        let mut next = av(0, 13, 30).into_iter();
        h.feed(next.by_ref().take(20));
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        let tail = text.split("seg4.m4s\n").nth(1).unwrap();
        assert!(
            tail.starts_with(
                "#EXT-X-MAP:URI=\"init1.mp4\"\n#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.2,URI=\"part25.m4s\",INDEPENDENT=YES\n"
            ),
            "{tail}"
        );
        h.feed(next);
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        // The discontinuity left the window: counted, and the old init section expired.
        assert_eq!(h.playlist.discontinuity_sequence(), 1, "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init1.mp4\""));
        assert!(h.expired.contains(&"init.mp4".to_owned()));
        assert!(!h.expired.contains(&"init1.mp4".to_owned()));
    }

    #[test]
    fn discontinuity_inside_the_window() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        h.feed(av(100 * HZ, 3, 30));
        h.segmenter.discontinuity();
        h.feed(av(0, 3, 30));
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        assert!(
            text.contains("seg2.m4s\n#EXT-X-MAP:URI=\"init1.mp4\"\n#EXT-X-DISCONTINUITY\n"),
            "{text}"
        );
        let Ok(Parsed::MediaPlaylist(parsed)) = m3u8_rs::parse_playlist_res(text.as_bytes()) else {
            panic!()
        };
        let flags: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(flags, [false, false, false, true, false]);
    }

    #[test]
    fn event_playlist_keeps_everything_and_ends() {
        let seg = SegmenterConfig::low_latency(true);
        let pl = PlaylistConfig {
            kind: PlaylistKind::Event,
            ..PlaylistConfig::new(Container::Fmp4, &seg)
        };
        let mut h = Harness::new(seg, pl);
        h.feed(av(0, 20, 30));
        assert_eq!(h.playlist.segment_count(), 19);
        assert!(
            h.expired.iter().all(|uri| uri.starts_with("part")),
            "{:?}",
            h.expired
        );
        assert!(h.expired.contains(&"part0.m4s".to_owned()));
        let full = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        assert!(full.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        // Delta update: segments ending 6 s or more before the last one's end are skipped.
        let delta = String::from_utf8(h.playlist.to_bytes(true).unwrap()).unwrap();
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=13\n"),
            "{delta}"
        );
        assert!(!delta.contains("\nseg12.m4s\n"));
        // The first segment left keeps its init section.
        assert!(delta.contains(
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=13\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1,\nseg13.m4s\n"
        ));
        h.finish();
        let text = String::from_utf8(h.playlist.to_bytes(true).unwrap()).unwrap();
        assert!(text.contains("seg0.m4s"), "no delta updates once ended");
        assert!(text.ends_with("seg19.m4s\n#EXT-X-ENDLIST\n"));
        assert_eq!(
            h.playlist.add_segment(&dummy_segment(20)),
            Err(PlaylistError::Ended)
        );
    }

    fn dummy_segment(msn: u64) -> Segment {
        Segment {
            msn,
            start: 0,
            duration: HZ,
            discontinuity: false,
            epoch: 0,
            program_date_time: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn mpegts_standard_playlist() {
        let seg = SegmenterConfig::standard(true);
        let pl = PlaylistConfig::new(Container::MpegTs, &seg);
        let mut h = Harness::new(seg, pl);
        h.feed(av(0, 20, 60));
        let text = String::from_utf8(h.playlist.to_bytes(true).unwrap()).unwrap();
        assert!(text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2,\nseg3.ts\n"
        ), "{text}");
        assert!(!text.contains("MAP"));
        assert_eq!(h.playlist.preload_hint(), None);
        assert!(h.expired.contains(&"seg0.ts".to_owned()));
        assert!(!h.expired.iter().any(|u| u.starts_with("part")));
    }

    #[test]
    fn audio_only_playlist() {
        let seg = SegmenterConfig::low_latency(false);
        let mut h = Harness::new(seg, PlaylistConfig::new(Container::Fmp4, &seg));
        h.feed((0..500).map(|i| audio(i * OPUS)));
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        // Every audio part can start playback.
        let parts = text.matches("#EXT-X-PART:").count();
        assert_eq!(parts, text.matches("INDEPENDENT=YES").count());
        assert!(parts > 10);
    }

    /// The Shaka Player 404: with parts named by their segment, the hint served after part 4 of
    /// a segment named `part{msn}.5`, and a key frame then started segment msn+1 instead.
    #[test]
    fn the_preload_hint_names_the_next_part_wherever_the_segment_is_cut() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        // Key frames at irregular distances: segments end after different numbers of parts.
        let keyframes = [0, 31, 47, 80, 97, 130, 137, 175];
        let units = av(0, 6, 1000).into_iter().map(|u| match u {
            Unit::Video(v) if keyframes.contains(&(v.dts / FRAME)) => video(v.dts, true),
            u => u,
        });
        h.feed(units);
        h.finish();
        assert!(h.playlist.segment_count() >= 5);
        assert!(h.hints_across_cuts >= 4, "{}", h.hints_across_cuts);
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        let counts: Vec<usize> = text
            .split("#EXTINF")
            .map(|s| s.matches("#EXT-X-PART:").count())
            .collect();
        assert!(
            counts.windows(2).any(|w| w[0] != w[1]),
            "segments of different part counts: {counts:?}"
        );
    }

    #[test]
    fn keyframe_only_at_start_keeps_the_target_duration_honest() {
        let (seg, pl) = ll_fmp4();
        let mut h = Harness::new(seg, pl);
        h.feed(av(0, 2, 30));
        assert_eq!(h.playlist.target_duration(), 1);
        // From now on the publisher ignores key frame requests: one 7.5 s segment in progress.
        h.feed(
            av(2 * HZ, 8, 30)
                .into_iter()
                .filter(|u| !matches!(u, Unit::Video(v) if v.keyframe && v.dts > 2 * HZ))
                .take_while(|u| match u {
                    Unit::Video(v) => v.dts < 9 * HZ + HZ / 2,
                    Unit::Audio(a) => a.pts < 9 * HZ + HZ / 2,
                }),
        );
        // Its parts are listed, so the target already covers what is listed so far.
        assert_eq!(h.playlist.target_duration(), 8);
        h.finish();
        assert_eq!(h.playlist.target_duration(), 8);
        let text = String::from_utf8(h.playlist.to_bytes(false).unwrap()).unwrap();
        assert!(text.contains("#EXTINF:7.5,\nseg2.m4s\n"), "{text}");
    }

    /// A playlist with segments 10..=12 complete (parts 0..=4 each) and segment 13 in progress
    /// with two parts.
    fn reload_fixture() -> Playlist {
        let mut p = Playlist::new(ll_fmp4().1).unwrap();
        for msn in 10..=13u64 {
            let parts: Vec<PartInfo> = (0..5)
                .map(|index| PartInfo {
                    msn,
                    index,
                    number: (msn - 10) * 5 + u64::from(index),
                    independent: index == 0,
                    duration: HZ / 5,
                    discontinuity: false,
                    epoch: 0,
                })
                .collect();
            for part in &parts[..if msn == 13 { 2 } else { 5 }] {
                p.add_part(*part).unwrap();
            }
            if msn < 13 {
                p.add_segment(&Segment {
                    msn,
                    parts,
                    ..dummy_segment(msn)
                })
                .unwrap();
            }
        }
        p
    }

    #[test]
    fn blocking_reload_table() {
        let p = reload_fixture();
        let d = |msn: u64, part: Option<u64>| DeliveryDirectives {
            msn: Some(msn),
            part,
            skip: false,
        };
        use Reload::*;
        let table = [
            (DeliveryDirectives::default(), Ready, "no directives"),
            (d(9, None), Ready, "before the window"),
            (d(12, None), Ready, "the last complete segment"),
            (d(13, None), Wait, "the segment in progress is not complete"),
            (d(14, None), Wait, "last complete + 2"),
            (
                d(15, None),
                BadRequest,
                "more than two past the last segment",
            ),
            (d(12, Some(4)), Ready, "a listed part"),
            (d(12, Some(5)), Ready, "past the last part: 13.0, listed"),
            (d(13, Some(1)), Ready, "the newest part"),
            (d(13, Some(2)), Wait, "the hinted part"),
            (
                d(13, Some(16)),
                Wait,
                "15 parts (3 s / 0.2 s) ahead is the limit",
            ),
            (d(13, Some(17)), BadRequest, "past the Advance Part Limit"),
            (d(14, Some(0)), Wait, "the next segment's first part"),
            (d(14, Some(15)), BadRequest, "too far into the next segment"),
        ];
        for (directives, expected, why) in table {
            assert_eq!(p.reload(&directives), expected, "{why}: {directives:?}");
        }
        // Part 13.2, whichever segment it turns out to be in: the 18th part (from 0).
        assert_eq!(p.preload_hint(), Some(17));
        assert_eq!(p.last_part(), Some(PartRef { msn: 13, index: 1 }));
        assert_eq!(p.blocking_timeout(), Duration::from_secs(3));
        let mut ended = reload_fixture();
        ended.end();
        assert_eq!(
            ended.reload(&d(99, Some(3))),
            Ready,
            "ignored after the end"
        );
        assert_eq!(ended.preload_hint(), None);
    }

    #[test]
    fn reload_past_the_last_part_of_the_newest_segment() {
        let d = DeliveryDirectives {
            msn: Some(12),
            part: Some(5),
            skip: false,
        };
        // Around the moment segment 12 completes: 12.5 means 13.0, which is not there yet.
        let mut q = Playlist::new(ll_fmp4().1).unwrap();
        for part in (0..5).map(|index| PartInfo {
            msn: 12,
            index,
            number: u64::from(index),
            independent: index == 0,
            duration: HZ / 5,
            discontinuity: false,
            epoch: 0,
        }) {
            q.add_part(part).unwrap();
        }
        assert_eq!(q.reload(&d), Reload::Wait);
        q.add_segment(&Segment {
            msn: 12,
            parts: vec![],
            ..dummy_segment(12)
        })
        .unwrap();
        assert_eq!(q.reload(&d), Reload::Wait);
        assert_eq!(q.preload_hint(), Some(5), "13.0, the sixth part");
    }

    #[test]
    fn out_of_order_updates_are_refused() {
        let mut p = reload_fixture();
        let part = |msn: u64, index: u32| PartInfo {
            msn,
            index,
            number: msn * 5 + u64::from(index),
            independent: false,
            duration: HZ / 5,
            discontinuity: false,
            epoch: 0,
        };
        assert!(matches!(
            p.add_part(part(13, 5)),
            Err(PlaylistError::PartOutOfOrder { .. })
        ));
        assert!(matches!(
            p.add_part(part(14, 0)),
            Err(PlaylistError::PartOutOfOrder { .. })
        ));
        assert!(matches!(
            p.add_segment(&dummy_segment(14)),
            Err(PlaylistError::SegmentOutOfOrder {
                msn: 14,
                expected: 13
            })
        ));
        assert!(p.add_part(part(13, 2)).is_ok());
        assert!(
            Playlist::new(PlaylistConfig {
                kind: PlaylistKind::Live { window: 0 },
                ..*p.config()
            })
            .is_err()
        );
    }

    #[test]
    fn delivery_directives_table() {
        let ok = |msn, part, skip| Ok(DeliveryDirectives { msn, part, skip });
        let table = [
            ("", ok(None, None, false)),
            ("_HLS_msn=12", ok(Some(12), None, false)),
            ("_HLS_msn=12&_HLS_part=3", ok(Some(12), Some(3), false)),
            (
                "_HLS_part=3&_HLS_msn=12&_HLS_skip=YES",
                ok(Some(12), Some(3), true),
            ),
            ("_HLS_skip=v2&foo=bar&flag", ok(None, None, true)),
            ("_HLS_part=3", Err(DirectiveError::PartWithoutMsn)),
            ("_HLS_msn=-1", Err(DirectiveError::Invalid("_HLS_msn"))),
            ("_HLS_msn=+1", Err(DirectiveError::Invalid("_HLS_msn"))),
            ("_HLS_msn=", Err(DirectiveError::Invalid("_HLS_msn"))),
            (
                "_HLS_msn=1&_HLS_part=x",
                Err(DirectiveError::Invalid("_HLS_part")),
            ),
            (
                "_HLS_msn=99999999999999999999",
                Err(DirectiveError::Invalid("_HLS_msn")),
            ),
            ("_HLS_skip=NO", Err(DirectiveError::Invalid("_HLS_skip"))),
        ];
        for (query, expected) in table {
            assert_eq!(DeliveryDirectives::parse(query), expected, "{query}");
        }
    }

    #[test]
    fn multivariant_playlist_round_trips() {
        let variant = Variant {
            uri: MEDIA_PLAYLIST_URI.to_owned(),
            bandwidth: 2_500_000,
            average_bandwidth: Some(1_800_000),
            codecs: "avc1.42e01f,opus".to_owned(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
        };
        let bytes = variant.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=1800000,\
             CODECS=\"avc1.42e01f,opus\",RESOLUTION=1280x720,FRAME-RATE=30\nindex.m3u8\n"
        );
        let Ok(Parsed::MasterPlaylist(parsed)) = m3u8_rs::parse_playlist_res(&bytes) else {
            panic!("{text}");
        };
        assert_eq!(parsed, variant.playlist());
    }

    /// hls.js and Shaka read the ladder: every layer a variant with the audio group, the
    /// audio's bandwidth and codec added, the highest first.
    #[test]
    fn a_ladder_lists_every_layer_with_the_shared_audio() {
        let video = |uri: &str, bandwidth, size| Variant {
            uri: uri.to_owned(),
            bandwidth,
            average_bandwidth: Some(bandwidth / 2),
            codecs: "avc1.42c01f".to_owned(),
            resolution: Some(size),
            frame_rate: Some(30.0),
        };
        let mut ladder = Ladder::new(&SegmenterConfig::low_latency(true));
        assert!(ladder.is_empty());
        let in_step = vec![(0, HZ), (HZ, HZ), (2 * HZ, HZ)];
        for (layer, bandwidth, size) in [
            (1, 999, (320, 180)),
            (0, 2_000_000, (1280, 720)),
            (2, 100_000, (160, 90)),
            (1, 300_000, (320, 180)),
        ] {
            let own = video(MEDIA_PLAYLIST_URI, bandwidth, size);
            ladder.set(LadderRendition::Video(layer), own, in_step.clone());
        }
        assert_eq!(
            ladder.video.len(),
            3,
            "a rendition measured again is replaced"
        );
        ladder.set(
            LadderRendition::Audio,
            Variant {
                uri: MEDIA_PLAYLIST_URI.to_owned(),
                bandwidth: 130_000,
                average_bandwidth: Some(128_000),
                codecs: "mp4a.40.2".to_owned(),
                resolution: None,
                frame_rate: None,
            },
            Vec::new(),
        );
        assert_eq!(ladder.left(), []);
        let bytes = ladder.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let Ok(Parsed::MasterPlaylist(parsed)) = m3u8_rs::parse_playlist_res(&bytes) else {
            panic!("{text}");
        };
        assert_eq!(parsed.alternatives.len(), 1, "{text}");
        let audio = &parsed.alternatives[0];
        assert_eq!(audio.media_type, AlternativeMediaType::Audio);
        assert_eq!(audio.uri.as_deref(), Some("audio/index.m3u8"));
        assert!(audio.default && audio.autoselect);
        let listed: Vec<_> = parsed
            .variants
            .iter()
            .map(|v| (v.uri.as_str(), v.bandwidth, v.audio.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                ("v0/index.m3u8", 2_130_000, Some("audio")),
                ("v1/index.m3u8", 430_000, Some("audio")),
                ("v2/index.m3u8", 230_000, Some("audio")),
            ],
            "{text}"
        );
        assert_eq!(
            parsed.variants[0].codecs.as_deref(),
            Some("avc1.42c01f,mp4a.40.2")
        );
        assert_eq!(parsed.variants[0].average_bandwidth, Some(1_128_000));
        assert!(text.contains("RESOLUTION=1280x720"), "{text}");
        // Without audio: the layers alone, no group.
        let silent = Ladder {
            audio: None,
            ..ladder
        };
        let text = String::from_utf8(silent.to_bytes().unwrap()).unwrap();
        assert!(
            !text.contains("EXT-X-MEDIA") && !text.contains("AUDIO="),
            "{text}"
        );
    }

    /// A rendition whose latest segments ran long, or started away from the top layer's,
    /// leaves the ladder; it is back once its latest segments are in step again.
    #[test]
    fn renditions_out_of_step_leave_the_ladder() {
        let video = |size| Variant {
            uri: MEDIA_PLAYLIST_URI.to_owned(),
            bandwidth: 1000,
            average_bandwidth: None,
            codecs: "avc1.42c01f".to_owned(),
            resolution: Some(size),
            frame_rate: None,
        };
        let part = HZ / 5;
        let top: Vec<(i64, i64)> = (0..6).map(|k| (k * HZ, HZ)).collect();
        type Case = (&'static str, Vec<(i64, i64)>, Option<Leave>);
        let cases: [Case; 6] = [
            ("in step", top.clone(), None),
            (
                "a frame late",
                top.iter().map(|&(s, d)| (s + 3000, d)).collect(),
                None,
            ),
            (
                "a part late, still in step",
                top.iter().map(|&(s, d)| (s + part, d)).collect(),
                None,
            ),
            (
                "half a second off",
                top.iter().map(|&(s, d)| (s + HZ / 2, d)).collect(),
                Some(Leave::Drift),
            ),
            (
                "a 2.5 s GOP",
                vec![(0, HZ), (HZ, 5 * HZ / 2), (7 * HZ / 2, HZ)],
                Some(Leave::LongGop),
            ),
            (
                "a long GOP long ago",
                vec![(-5 * HZ, 5 * HZ), (0, HZ), (HZ, HZ), (2 * HZ, HZ)],
                None,
            ),
        ];
        for (what, segments, expect) in cases {
            let mut ladder = Ladder::new(&SegmenterConfig::low_latency(true));
            ladder.set(LadderRendition::Video(0), video((640, 360)), top.clone());
            ladder.set(LadderRendition::Video(1), video((320, 180)), segments);
            let left = ladder.left();
            assert_eq!(
                left,
                expect
                    .map(|why| (LadderRendition::Video(1), why))
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{what}"
            );
            let listed = ladder.playlist().variants.len();
            assert_eq!(listed, if expect.is_some() { 1 } else { 2 }, "{what}");
        }
    }

    #[test]
    fn bandwidth_meter() {
        let mut m = BandwidthMeter::new(Duration::from_secs(2));
        assert_eq!(m.peak(), None);
        // 2 s segments of 250 kB: 1 Mbit/s.
        for _ in 0..3 {
            m.add_segment(250_000, 2 * HZ);
        }
        assert_eq!(m.peak(), Some(1_000_000));
        // A short heavy one (0.5 s, 100 kB) counts with its neighbour, as runs of 1..3 s do:
        // 350 kB over 2.5 s.
        m.add_segment(100_000, HZ / 2);
        assert_eq!(m.peak(), Some(1_120_000));
        // A ballooned 10 s segment fits no run, but is still measured.
        m.add_segment(2_500_000, 10 * HZ);
        assert_eq!(m.peak(), Some(2_000_000));
        assert_eq!(
            m.average(),
            Some((250_000 * 3 + 100_000 + 2_500_000) * 8 * 2 / 33)
        );
        assert!(m.recent.len() <= 2);
    }

    #[test]
    fn date_times() {
        let at = |ms: u64| format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000).unwrap(), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_735_689_599_999).unwrap(), "2024-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400_000).unwrap(), "2100-03-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_units(ticks_to_units_round(HZ / 5)), "0.2");
        assert_eq!(format_units(ticks_to_units_round(FRAME)), "0.03333");
        assert_eq!(format_units(ticks_to_units_ceil(FRAME)), "0.03334");
        assert_eq!(format_units(ticks_to_units_ceil(12 * HZ)), "12.0");
        assert_eq!(format_units(ticks_to_units_round(-5)), "0.0");
    }

    #[test]
    fn a_query_is_carried_onto_every_uri() {
        let playlist = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MAP:URI=\"init0.mp4\"\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part12.m4s\",INDEPENDENT=YES\n#EXTINF:1.0,\n\
            seg3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part13.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../v1/index.m3u8?a=1\",LAST-MSN=3\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"audio\",URI=\"audio/index.m3u8\"\n\
            v0/index.m3u8\r\n\n";
        let want = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MAP:URI=\"init0.mp4?t=x%20y\"\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part12.m4s?t=x%20y\",INDEPENDENT=YES\n#EXTINF:1.0,\n\
            seg3.m4s?t=x%20y\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part13.m4s?t=x%20y\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../v1/index.m3u8?a=1&t=x%20y\",LAST-MSN=3\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"audio\",URI=\"audio/index.m3u8?t=x%20y\"\n\
            v0/index.m3u8?t=x%20y\r\n\n";
        assert_eq!(with_query(playlist, "t=x%20y"), want);
        // An unclosed attribute (never made here) is carried to its end, not lost.
        assert_eq!(with_query("#X:URI=\"a", "q=1"), "#X:URI=\"a?q=1");
        assert_eq!(
            uris(playlist),
            [
                "init0.mp4",
                "part12.m4s",
                "seg3.m4s",
                "part13.m4s",
                "../v1/index.m3u8?a=1",
                "audio/index.m3u8",
                "v0/index.m3u8"
            ]
        );
    }

    #[test]
    fn storage_gets_no_promise_only_the_bridge_keeps() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=12.0\r\n\
            #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-PART:DURATION=0.2,URI=\"part12.m4s\"\n\
            #EXTINF:1.0,\nseg3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part13.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../v1/index.m3u8\",LAST-MSN=3\n";
        let want = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n\
            #EXT-X-SERVER-CONTROL:PART-HOLD-BACK=0.6\r\n\
            #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-PART:DURATION=0.2,URI=\"part12.m4s\"\n\
            #EXTINF:1.0,\nseg3.m4s\n\
            #EXT-X-RENDITION-REPORT:URI=\"../v1/index.m3u8\",LAST-MSN=3\n";
        assert_eq!(for_storage(playlist), want);
        // Nothing left of the tag: no tag. A plain playlist is left as it is.
        assert_eq!(
            for_storage("#EXTM3U\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n#EXTINF:1.0,\ns\n"),
            "#EXTM3U\n#EXTINF:1.0,\ns\n"
        );
        let plain = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg1.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(for_storage(plain), plain);
    }
}
