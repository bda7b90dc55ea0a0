//! One session's HLS output as a state machine: units in ([`HlsOutput::push`], with the clocks
//! read by the caller), [`Action`]s out ([`HlsOutput::poll`]): files to write and remove, view
//! changes to publish to the HTTP layer, key frames to ask for, listings to count. It does no IO
//! and reads no clock, as str0m's `Rtc` does not: the `bridge` crate's `sink::hls` drives it.
//!
//! What it decides, and why:
//!
//! - **The start.** Units are held behind a [`StartGate`] until the audio format is known (the
//!   first Opus frame says the channel count), so the first init section describes both tracks.
//! - **Dating.** `EXT-X-PROGRAM-DATE-TIME` comes from the publisher's clock: the first RTCP
//!   sender report dates the session timeline (capture time, as RFC 3550 intends), so a player
//!   comparing it with its own clock sees the whole glass-to-glass delay, and streams from one
//!   sender line up, when that report comes before the first segment starts. Once a segment
//!   has started, the dating of the presentation never changes: dates that jump against
//!   `EXTINF` under a live playlist move the timeline of players that place segments by them
//!   (Shaka Player re-computes its timestamp offset, aborts its SourceBuffer and drops what it
//!   appends until the next key frame, then jumps the gap; FFmpeg's first reports put its
//!   media 0.3 to 0.5 s off its arrival). Waiting for the report instead would hold the first
//!   segment about a second (it was tried: it doubled the HLS frame latency of short runs). So
//!   a report that comes later (the usual case with LL-HLS, whose first part is listed within
//!   a part's time), and a sender whose clock is more than [`MAX_CLOCK_SKEW`] off the bridge's,
//!   leave the dating to the bridge's clock at timeline 0 (the session's start, the same for
//!   every output of the session; [`HlsOutput::set_timeline_origin`]): within the network
//!   delay of the capture time.
//! - **Discontinuities.** New parameter sets (a resolution change) need a new init section,
//!   which only a discontinuity can introduce; the shared [`ParameterSets`] tracker says when.
//! - **Numbering.** Each session has its own segmenter counting from 0; its sequence numbers
//!   and epochs are offset to follow the last session's ([`Handoff`]), and a session that
//!   continues another's playlist starts with a discontinuity.
//! - **Files.** Which files to write (media before the playlist that lists it) and which to
//!   remove (what the playlist no longer needs; the last presentation's when a new one starts).
//!   The output keeps the set of files of the current presentation in its [`Handoff`].
//!
//! The output makes one [`Rendition`] of a stream: a ladder of renditions (simulcast, alternate
//! audio) is one output per rendition, each with its own handoff.

mod action;
mod config;
mod muxer;

pub use self::action::{Action, Listed, Rendered, ViewChange};
pub use self::config::{
    AacEncode, AudioChoice, Handoff, NewAacEncoder, OutputConfig, OutputError, Rendition,
};

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use self::muxer::{Muxer, concat};
use super::fmp4::{AacConfig, AudioParams, Fmp4Muxer, OpusParams, VideoParams};
use super::names::HlsFile;
use super::playlist::{BandwidthMeter, Container, Ladder, Playlist, Variant};
use super::segmenter::{Event, Part, PartInfo, Segment, Segmenter, add_ticks};
use super::ts::TsMuxer;
use crate::media::h264::params::ParameterSets;
use crate::media::opus::Toc;
use crate::media::start::{FrameRate, StartGate};
use crate::media::unit::{AudioFrame, Unit, VideoUnit};

/// Furthest a publisher's sender-report clock may be from the bridge's for
/// `EXT-X-PROGRAM-DATE-TIME` to follow it; beyond, the sender's clock is wrong (or counts from
/// something else than 1900) and the bridge's dates the segments.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Segments [`HlsOutput::recent_segments`] keeps.
pub const RECENT_SEGMENTS: usize = 8;

/// Arrivals kept for frames the segmenter has not put in a part yet: past this, the oldest go
/// (frames dropped before the first key frame never reach a part).
const MAX_ARRIVALS: usize = 512;

/// How audio is handled, once the first frame said how many channels there are.
#[derive(Debug)]
enum AudioOut {
    None,
    Aac(Box<dyn AacEncode>, AacConfig),
    Opus(OpusParams),
}

/// What dates the segments (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dating {
    /// Nothing yet: no unit came.
    Undated,
    /// The bridge's clock at the first unit, until a sender report comes.
    Arrival(SystemTime),
    /// The publisher's sender-report clock, or the bridge's for good when the publisher's was
    /// implausible: no more changes.
    Settled,
}

/// One session's HLS output. See the module docs.
pub struct HlsOutput {
    config: OutputConfig,
    handoff: Handoff,
    segmenter: Segmenter,
    /// Added to the segmenter's sequence numbers, part numbers and epochs (they start at 0 per
    /// session).
    msn_base: u64,
    part_base: u64,
    epoch_base: u64,
    /// Discontinuities this session made (new parameter sets): epochs it used past its first.
    splits: u64,
    /// This session continues a playlist another one started: its first segment follows a
    /// discontinuity.
    continuing: bool,
    /// The new presentation's playlist, until the first part replaces the last presentation
    /// with it (so a publisher that never sends media replaces nothing).
    fresh: Option<Playlist>,
    gate: StartGate,
    /// Units held until the gate opens; `None` once it has.
    pending: Option<Vec<Unit>>,
    new_encoder: Option<NewAacEncoder>,
    audio: AudioOut,
    late_audio: bool,
    /// Parameter sets of the current epoch (from its first key frame).
    video_params: Option<VideoParams>,
    /// Made at the first part of each epoch.
    muxer: Option<Muxer>,
    /// The open segment's parts, which make the segment file.
    segment_parts: Vec<Bytes>,
    frame_rate: FrameRate,
    dated: Dating,
    /// The publisher's wallclock of timeline 0, once its first sender report came.
    sender_clock: Option<SystemTime>,
    /// The bridge's wallclock of timeline 0 (when the session started), if the driver knows it.
    timeline_origin: Option<SystemTime>,
    /// A simulcast publisher's renditions, which `main.m3u8` then lists instead of this
    /// output's own media playlist.
    ladder: Option<Ladder>,
    segments: u64,
    /// `(start, duration)` of the latest segments on the session timeline, oldest first: what
    /// a ladder checks a rendition's boundaries by.
    recent: VecDeque<(i64, i64)>,
    /// `(dts, when it reached this output)` of video units not listed yet, oldest first.
    arrivals: VecDeque<(i64, Instant)>,
    /// Arrivals of the open segment's frames, without LL-HLS (listed with the segment).
    unlisted: Vec<Instant>,
    actions: VecDeque<Action>,
}

impl fmt::Debug for HlsOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HlsOutput")
            .field("config", &self.config)
            .field("msn_base", &self.msn_base)
            .field("splits", &self.splits)
            .field("continuing", &self.continuing)
            .field("dated", &self.dated)
            .field("segments", &self.segments)
            .finish_non_exhaustive()
    }
}

impl HlsOutput {
    /// A session's output continuing from `handoff` (the stream's last session's, or a new
    /// one). `new_encoder` makes the AAC encoder for [`AudioChoice::Aac`]; without one that
    /// output has no audio.
    pub fn new(
        config: OutputConfig,
        handoff: Handoff,
        new_encoder: Option<NewAacEncoder>,
    ) -> Result<Self, OutputError> {
        let segmenter = Segmenter::new(config.segmenter)?;
        let continuing = handoff.is_live();
        let fresh = if continuing {
            None
        } else {
            Some(Playlist::new(config.playlist)?)
        };
        let audio_wanted = config.has_audio && config.audio != AudioChoice::None;
        Ok(Self {
            msn_base: handoff.next_msn,
            part_base: handoff.next_part,
            epoch_base: handoff.next_epoch,
            config,
            handoff,
            segmenter,
            splits: 0,
            continuing,
            fresh,
            gate: StartGate::new(audio_wanted, false),
            pending: Some(Vec::new()),
            new_encoder,
            audio: AudioOut::None,
            late_audio: false,
            video_params: None,
            muxer: None,
            segment_parts: Vec::new(),
            frame_rate: FrameRate::default(),
            dated: Dating::Undated,
            sender_clock: None,
            timeline_origin: None,
            ladder: None,
            segments: 0,
            recent: VecDeque::new(),
            arrivals: VecDeque::new(),
            unlisted: Vec::new(),
            // A new publisher starts with a key frame.
            actions: VecDeque::from([Action::KeyframeWanted]),
        })
    }

    /// This session continues a live playlist another session started.
    pub fn is_continuing(&self) -> bool {
        self.continuing
    }

    /// Segments this session completed.
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// `(start, duration)` of this session's latest segments (at most [`RECENT_SEGMENTS`]) on
    /// the session timeline, oldest first.
    pub fn recent_segments(&self) -> Vec<(i64, i64)> {
        self.recent.iter().copied().collect()
    }

    /// Some media made it into a playlist (a presentation was started or continued).
    pub fn has_media(&self) -> bool {
        self.fresh.is_none()
    }

    /// The next thing to do; `None` until more input comes.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The bridge's clock at timeline 0 (the session's start): dates the segments until the
    /// publisher's clock does, instead of the bridge's clock at the first unit less its
    /// timestamp. The same instant for every output of a session, so a ladder's renditions
    /// carry the same `EXT-X-PROGRAM-DATE-TIME` for the same media time; without it each
    /// output's own processing delay would put its dates a few milliseconds apart.
    pub fn set_timeline_origin(&mut self, origin: SystemTime) {
        self.timeline_origin = Some(origin);
    }

    /// The publisher's clock: the wallclock time of timeline 0, from its first sender report.
    pub fn handle_sender_clock(&mut self, timeline_zero: SystemTime) {
        self.sender_clock = Some(timeline_zero);
    }

    /// The renditions of a simulcast publisher, as their outputs measured them: `main.m3u8`
    /// lists them (from this output's next segment) instead of this output's `index.m3u8`,
    /// which stays for the players that ask for it.
    pub fn handle_ladder(&mut self, ladder: Ladder) {
        self.ladder = Some(ladder);
    }

    /// A unit, reaching the output at `now` (monotonic; for the listing-delay metric) and
    /// `wall` (the bridge's clock; dates the timeline until the publisher's does).
    pub fn push(&mut self, unit: Unit, now: Instant, wall: SystemTime) {
        self.date(&unit, wall);
        if let Unit::Video(v) = &unit {
            if self.arrivals.len() == MAX_ARRIVALS {
                self.arrivals.pop_front();
            }
            self.arrivals.push_back((v.dts, now));
        }
        let Some(pending) = self.pending.as_mut() else {
            self.admit(unit);
            return;
        };
        pending.push(unit);
        if self.gate.open(pending).is_some() {
            self.start();
        }
    }

    /// The session ended: finishes the last segment and sets what the next session continues
    /// from. The playlist stays open: [`HlsOutput::end`] ends it, unless another session has
    /// taken the stream over.
    pub fn finish(&mut self) {
        if self.pending.is_some() {
            self.start();
        }
        if let AudioOut::Aac(encoder, _) = &mut self.audio {
            let tail = encoder.flush().unwrap_or_default();
            for frame in tail {
                self.segment_unit(Unit::Audio(frame));
            }
        }
        self.segmenter.finish();
        self.drain();
        self.handoff.next_msn = self.msn_base.saturating_add(self.segmenter.next_msn());
        self.handoff.next_part = self.part_base.saturating_add(self.segmenter.next_part());
        self.handoff.next_epoch = self.epoch_base.saturating_add(self.splits + 1);
    }

    /// Ends the playlist (`EXT-X-ENDLIST`), if this session had media.
    pub fn end(&mut self) {
        if !self.has_media() {
            return;
        }
        let Some(playlist) = self.handoff.playlist.as_mut() else {
            return;
        };
        playlist.end();
        let rendered = self.render();
        let index = self.handoff.index.clone();
        self.publish(ViewChange {
            playlist: rendered,
            ended: true,
            ..ViewChange::default()
        });
        // A presentation that never wrote anything (no media came) leaves no folder behind.
        if !self.handoff.files.is_empty() {
            self.write(self.name(HlsFile::MediaPlaylist), vec![index]);
        }
    }

    /// What the next session on the stream continues from (call after [`HlsOutput::finish`]).
    pub fn into_handoff(self) -> Handoff {
        self.handoff
    }

    /// Dates timeline 0 for `EXT-X-PROGRAM-DATE-TIME`: by the bridge's clock (at timeline 0 when
    /// known, else at the first unit), or by the publisher's sender-report clock when it is
    /// known and plausible before the first segment starts.
    fn date(&mut self, unit: &Unit, wall: SystemTime) {
        let arrival = match self.dated {
            Dating::Settled => return,
            Dating::Arrival(origin) => origin,
            Dating::Undated => {
                let pts = match unit {
                    Unit::Video(v) => v.pts,
                    Unit::Audio(a) => a.pts,
                };
                let origin = self
                    .timeline_origin
                    .or_else(|| add_ticks(wall, pts.saturating_neg()));
                let Some(origin) = origin else {
                    self.dated = Dating::Settled;
                    return;
                };
                self.segmenter.set_wallclock_anchor(Some(origin));
                self.dated = Dating::Arrival(origin);
                origin
            }
        };
        let Some(sender) = self.sender_clock else {
            return;
        };
        self.dated = Dating::Settled;
        if self.segmenter.has_started() {
            tracing::debug!(
                "the publisher's first sender report came after the first segment started; \
                 EXT-X-PROGRAM-DATE-TIME keeps the bridge's clock"
            );
        } else if plausible_clock(sender, arrival) {
            // Positive: the publisher's clock dates the media earlier than its arrival did.
            let ahead_ms = match arrival.duration_since(sender) {
                Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
                Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
            };
            tracing::debug!(ahead_ms, "HLS dated by the publisher's sender-report clock");
            self.segmenter.set_wallclock_anchor(Some(sender));
        } else {
            tracing::warn!(
                sender = ?sender,
                bridge = ?arrival,
                "publisher's sender-report clock is off by more than {MAX_CLOCK_SKEW:?}; \
                 EXT-X-PROGRAM-DATE-TIME follows the bridge's clock"
            );
        }
    }

    /// Decides the audio format from the first held frame (if any), then lets the held units in.
    fn start(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let first = pending.iter().find_map(|u| match u {
            Unit::Audio(a) => Some(a),
            Unit::Video(_) => None,
        });
        let wanted = if self.config.has_audio {
            self.config.audio
        } else {
            AudioChoice::None
        };
        self.audio = match (wanted, first) {
            (AudioChoice::Aac, Some(first)) => {
                let made = self
                    .new_encoder
                    .take()
                    .ok_or_else(|| "no AAC encoder".to_owned())
                    .and_then(|new| new(channels(first)))
                    .and_then(|encoder| {
                        let config = AacConfig::parse(&encoder.audio_specific_config())
                            .map_err(|e| e.to_string())?;
                        Ok(AudioOut::Aac(encoder, config))
                    });
                made.unwrap_or_else(|err| {
                    tracing::warn!(%err, "AAC encoder unavailable; HLS without audio");
                    AudioOut::None
                })
            }
            (AudioChoice::Opus, Some(first)) => AudioOut::Opus(OpusParams {
                channels: channels(first),
                pre_skip: 0,
            }),
            _ => AudioOut::None,
        };
        for unit in pending {
            self.admit(unit);
        }
    }

    /// A unit past the start: transcoded, checked for new parameter sets, then segmented.
    fn admit(&mut self, unit: Unit) {
        match unit {
            Unit::Audio(frame) => {
                let frames = match &mut self.audio {
                    AudioOut::Aac(encoder, _) => encoder.push(&frame).unwrap_or_else(|err| {
                        tracing::debug!(%err, "audio frame not transcodable");
                        Vec::new()
                    }),
                    AudioOut::Opus(_) => vec![frame],
                    AudioOut::None => {
                        if self.config.has_audio
                            && self.config.audio != AudioChoice::None
                            && !self.late_audio
                        {
                            self.late_audio = true;
                            tracing::info!("audio came too late for this HLS session; left out");
                        }
                        Vec::new()
                    }
                };
                for frame in frames {
                    self.segment_unit(Unit::Audio(frame));
                }
            }
            Unit::Video(v) if self.config.has_video => {
                self.frame_rate.observe(v.pts);
                if v.keyframe {
                    match params_changed(self.video_params.as_ref(), &v) {
                        ParamsCheck::First(params) => self.video_params = Some(params),
                        ParamsCheck::Changed(params) => {
                            tracing::info!(
                                codec = %params.codec_string(),
                                "video parameters changed; HLS discontinuity"
                            );
                            self.segmenter.discontinuity();
                            self.splits += 1;
                            self.drain();
                            self.muxer = None;
                            self.video_params = Some(params);
                        }
                        ParamsCheck::Same => {}
                        ParamsCheck::Unusable => {
                            // Nothing to describe the track with yet: wait for a better one.
                            self.actions.push_back(Action::KeyframeWanted);
                            return;
                        }
                    }
                } else if self.video_params.is_none() {
                    return;
                }
                self.segment_unit(Unit::Video(v));
            }
            Unit::Video(_) => {}
        }
    }

    fn segment_unit(&mut self, unit: Unit) {
        self.segmenter.push(unit);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(event) = self.segmenter.poll_event() {
            match event {
                Event::KeyframeWanted => self.actions.push_back(Action::KeyframeWanted),
                Event::PartReady(part) => self.part(part),
                Event::SegmentReady(segment) => self.segment(segment),
            }
        }
    }

    /// The segmenter's per-session numbers on the stream's scale.
    fn map_info(&self, info: PartInfo) -> PartInfo {
        PartInfo {
            msn: info.msn.saturating_add(self.msn_base),
            number: info.number.saturating_add(self.part_base),
            epoch: info.epoch.saturating_add(self.epoch_base),
            discontinuity: info.discontinuity || (self.continuing && info.msn == 0),
            ..info
        }
    }

    fn name(&self, file: HlsFile) -> String {
        self.config.rendition.uri(file)
    }

    fn container(&self) -> Container {
        self.config.playlist.container
    }

    fn low_latency(&self) -> bool {
        self.config.segmenter.part_target.is_some()
    }

    fn write(&mut self, name: String, data: Vec<Bytes>) {
        self.handoff.files.insert(name.clone());
        self.actions.push_back(Action::Write { name, data });
    }

    fn remove(&mut self, name: String) {
        self.handoff.files.remove(&name);
        self.actions.push_back(Action::Remove { name });
    }

    fn publish(&mut self, change: ViewChange) {
        self.actions.push_back(Action::Publish(Box::new(change)));
    }

    /// The playlist as it is now, rendered (and kept as the last `index.m3u8`); `None` before
    /// a presentation is installed.
    fn render(&mut self) -> Option<Rendered> {
        let playlist = self.handoff.playlist.clone()?;
        match playlist.to_bytes(false) {
            Ok(bytes) => self.handoff.index = Bytes::from(bytes),
            Err(err) => tracing::error!(%err, "rendering the HLS playlist failed"),
        }
        let delta = playlist.config().part_target.is_some() && playlist.config().delta_updates;
        let delta = delta
            .then(|| playlist.to_bytes(true).ok().map(Bytes::from))
            .flatten();
        Some(Rendered {
            playlist,
            index: self.handoff.index.clone(),
            delta,
        })
    }

    fn make_muxer(&self) -> Option<Muxer> {
        let video = if self.config.has_video {
            Some(self.video_params.clone()?)
        } else {
            None
        };
        let made = match (self.container(), &self.audio) {
            (Container::Fmp4, audio) => {
                let audio = match audio {
                    AudioOut::Aac(_, config) => Some(AudioParams::Aac(config.clone())),
                    AudioOut::Opus(params) => Some(AudioParams::Opus(*params)),
                    AudioOut::None => None,
                };
                Fmp4Muxer::new(video, audio)
                    .map(Muxer::Fmp4)
                    .map_err(|e| e.to_string())
            }
            (Container::MpegTs, audio) => {
                let aac = match audio {
                    AudioOut::Aac(_, config) => Some(config),
                    _ => None,
                };
                TsMuxer::new(video.is_some(), aac)
                    .map(Muxer::Ts)
                    .map_err(|e| e.to_string())
            }
        };
        made.inspect_err(|err| tracing::error!(%err, "HLS muxer refused the stream"))
            .ok()
    }

    /// Starts the new presentation: its playlist replaces the last one's, whose files go.
    fn install(&mut self) {
        let Some(playlist) = self.fresh.take() else {
            return;
        };
        let stale = std::mem::take(&mut self.handoff.files);
        self.handoff.playlist = Some(playlist);
        self.handoff.main = None;
        // The empty playlist first: meanwhile requests wait for new media rather than get a
        // playlist whose files are going.
        let rendered = self.render();
        self.publish(ViewChange {
            reset: true,
            playlist: rendered,
            ..ViewChange::default()
        });
        self.handoff.meter = Some(BandwidthMeter::new(self.config.segmenter.segment_target));
        for name in stale {
            self.remove(name);
        }
        self.remove(self.name(HlsFile::MediaPlaylist));
        self.remove(self.name(HlsFile::MultivariantPlaylist));
    }

    /// When the video frames of a part reached this output (those of frames the segmenter
    /// dropped are passed over).
    fn arrivals_of(&mut self, part: &Part) -> Vec<Instant> {
        let mut found = Vec::new();
        for unit in &part.units {
            let Unit::Video(v) = unit else { continue };
            while let Some(&(dts, at)) = self.arrivals.front() {
                if dts > v.dts {
                    break;
                }
                self.arrivals.pop_front();
                if dts == v.dts {
                    found.push(at);
                    break;
                }
            }
        }
        found
    }

    fn part(&mut self, part: Part) {
        self.install();
        let arrivals = self.arrivals_of(&part);
        let info = self.map_info(part.info);
        let mut init = None;
        if self.muxer.is_none() {
            self.muxer = self.make_muxer();
            let name = (self.container() == Container::Fmp4)
                .then(|| self.name(HlsFile::Init { epoch: info.epoch }));
            init = self.muxer.as_ref().and_then(Muxer::init).zip(name);
        }
        let chunks = match self.muxer.as_mut() {
            Some(m) => m.part(part, info.index == 0),
            None => Vec::new(),
        };
        let bytes = concat(chunks);
        self.segment_parts.push(bytes.clone());
        if !self.low_latency() {
            self.unlisted.extend(arrivals);
            if let Some((bytes, name)) = init {
                self.publish(ViewChange {
                    init: Some((name.clone(), bytes.clone())),
                    ..ViewChange::default()
                });
                self.write(name, vec![bytes]);
            }
            return;
        }
        let name = self.name(HlsFile::Part {
            container: self.container(),
            number: info.number,
        });
        let expired = match self.handoff.playlist.as_mut() {
            Some(playlist) => {
                if let Err(err) = playlist.add_part(info) {
                    tracing::warn!(%err, "HLS part not listed");
                }
                playlist.take_expired()
            }
            None => Vec::new(),
        };
        let rendered = self.render();
        let index = self.handoff.index.clone();
        self.publish(ViewChange {
            playlist: rendered,
            init: init.clone().map(|(bytes, name)| (name, bytes)),
            part: Some(((info.msn, info.number), bytes.clone())),
            expired: expired.clone(),
            ..ViewChange::default()
        });
        self.actions
            .push_back(Action::Listed(Listed::Part { arrivals }));
        if let Some((bytes, name)) = init {
            self.write(name, vec![bytes]);
        }
        self.write(name, vec![bytes]);
        self.write(self.name(HlsFile::MediaPlaylist), vec![index]);
        for name in expired {
            self.remove(name);
        }
    }

    fn segment(&mut self, segment: Segment) {
        if self.recent.len() == RECENT_SEGMENTS {
            self.recent.pop_front();
        }
        self.recent.push_back((segment.start, segment.duration));
        let segment = Segment {
            msn: segment.msn.saturating_add(self.msn_base),
            epoch: segment.epoch.saturating_add(self.epoch_base),
            discontinuity: segment.discontinuity || (self.continuing && segment.msn == 0),
            parts: segment.parts.iter().map(|p| self.map_info(*p)).collect(),
            ..segment
        };
        let parts = std::mem::take(&mut self.segment_parts);
        let size = parts.iter().map(Bytes::len).sum::<usize>() as u64;
        // On disk before it is listed: the HTTP layer serves segments from there.
        let name = self.name(HlsFile::Segment {
            container: self.container(),
            msn: segment.msn,
        });
        self.write(name, parts);
        self.segments += 1;
        if let Some(meter) = self.handoff.meter.as_mut() {
            meter.add_segment(size, segment.duration);
        }
        let main = self.multivariant();
        let main = main.filter(|main| self.handoff.main.as_ref() != Some(main));
        let expired = match self.handoff.playlist.as_mut() {
            Some(playlist) => {
                if let Err(err) = playlist.add_segment(&segment) {
                    tracing::warn!(%err, "HLS segment not listed");
                }
                playlist.take_expired()
            }
            None => Vec::new(),
        };
        if main.is_some() {
            self.handoff.main.clone_from(&main);
        }
        let rendered = self.render();
        let index = self.handoff.index.clone();
        self.publish(ViewChange {
            playlist: rendered,
            main: main.clone(),
            expired: expired.clone(),
            ..ViewChange::default()
        });
        let arrivals = std::mem::take(&mut self.unlisted);
        self.actions.push_back(Action::Listed(Listed::Segment {
            bytes: size,
            arrivals,
        }));
        tracing::debug!(msn = segment.msn, bytes = size, "HLS segment");
        self.write(self.name(HlsFile::MediaPlaylist), vec![index]);
        if let Some(main) = main {
            self.write(self.name(HlsFile::MultivariantPlaylist), vec![main]);
        }
        for name in expired {
            self.remove(name);
        }
    }

    /// `main.m3u8`, once a segment measured the bandwidth: this output's variant, or the
    /// ladder it was given.
    fn multivariant(&self) -> Option<Bytes> {
        let rendered = match &self.ladder {
            Some(ladder) if !ladder.is_empty() => ladder.to_bytes(),
            _ => self.variant()?.to_bytes(),
        };
        rendered
            .inspect_err(|err| tracing::error!(%err, "rendering main.m3u8 failed"))
            .ok()
            .map(Bytes::from)
    }

    /// What this output's media playlist is, as a variant of a multivariant playlist (its
    /// `uri` is [`HlsFile::MediaPlaylist`]'s), once a segment measured the bandwidth.
    pub fn variant(&self) -> Option<Variant> {
        let meter = self.handoff.meter.as_ref()?;
        let video = self.video_params.as_ref();
        let codecs = match self.muxer.as_ref() {
            Some(Muxer::Fmp4(m)) => m.codecs(),
            _ => {
                let audio = match &self.audio {
                    AudioOut::Aac(_, config) => Some(config.codec_string()),
                    _ => None,
                };
                video
                    .map(VideoParams::codec_string)
                    .into_iter()
                    .chain(audio)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        Some(Variant {
            uri: self.name(HlsFile::MediaPlaylist),
            bandwidth: meter.peak()?,
            average_bandwidth: meter.average(),
            codecs,
            resolution: video.map(|p| (p.info().width, p.info().height)),
            frame_rate: self.frame_rate.get(),
        })
    }
}

/// What a key frame says about the video parameter sets.
#[derive(Debug)]
enum ParamsCheck {
    /// The first usable ones.
    First(VideoParams),
    /// New ones: a new init section, which only a discontinuity can introduce.
    Changed(VideoParams),
    /// The same as before, or unusable ones after usable ones (decoders read in-band sets; the
    /// init section keeps the old ones).
    Same,
    /// None usable yet.
    Unusable,
}

/// Whether a key frame changes the parameter sets in force, by the tracker every output shares
/// ([`ParameterSets::changed_by`]): a key frame that repeats them changes nothing, one with a new
/// PPS alone keeps the SPS.
fn params_changed(current: Option<&VideoParams>, keyframe: &VideoUnit) -> ParamsCheck {
    let none = ParameterSets::new();
    let in_force = current.map_or(&none, VideoParams::sets);
    let Some(next) = in_force.changed_by(&keyframe.nalus) else {
        return match current {
            Some(_) => ParamsCheck::Same,
            None => ParamsCheck::Unusable,
        };
    };
    match (VideoParams::from_sets(&next), current) {
        (Ok(params), None) => ParamsCheck::First(params),
        (Ok(params), Some(_)) => ParamsCheck::Changed(params),
        (Err(err), Some(_)) => {
            tracing::debug!(%err, "key frame with unusable parameter sets; keeping the old ones");
            ParamsCheck::Same
        }
        (Err(err), None) => {
            tracing::debug!(%err, "key frame without usable parameter sets");
            ParamsCheck::Unusable
        }
    }
}

/// Channels to carry, from an Opus packet's TOC: browsers send mono unless the SDP asked for
/// `stereo=1`, whatever the `opus/48000/2` rtpmap says.
fn channels(frame: &AudioFrame) -> u8 {
    match frame.data.first() {
        Some(&toc) if Toc::new(toc).stereo => 2,
        _ => 1,
    }
}

/// The publisher's clock (`sender`) is within [`MAX_CLOCK_SKEW`] of the bridge's (`bridge`),
/// both as the wallclock time of timeline 0.
pub fn plausible_clock(sender: SystemTime, bridge: SystemTime) -> bool {
    let skew = sender
        .duration_since(bridge)
        .or_else(|_| bridge.duration_since(sender))
        .unwrap_or(Duration::MAX);
    skew <= MAX_CLOCK_SKEW
}

#[cfg(test)]
mod tests;
