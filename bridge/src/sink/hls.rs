//! The HLS output's IO: one task per session drives the pure output
//! ([`crate::mux::hls::output::HlsOutput`], which decides what to cut, write, list and delete),
//! handing it the clocks, and applies what it asks: files into `hls_dir/{stream}/`, view
//! changes into the store the HTTP layer serves from ([`crate::hls::store`]), metrics, key
//! frame requests; with `--hls-s3`, each batch of files is also offered to the uploader
//! ([`super::s3`]), which never makes this task wait.
//!
//! Decisions, and why:
//!
//! - A stream's state outlives sessions: a publisher taking a stream over continues the same
//!   playlist after an `EXT-X-DISCONTINUITY`, with sequence numbers running on, so players keep
//!   playing; only the last publisher's task ends the playlist (`EXT-X-ENDLIST`). Sessions take
//!   turns through the stream's writer lock, held for a whole session.
//! - Segments, parts and init sections are served as immutable, so a name must never be reused
//!   for other bytes, not even after the bridge restarts (a CDN may still hold the old ones).
//!   Sequence numbers and epochs therefore start at the wall clock in milliseconds when a stream
//!   is first published in this process (`seg1718000000000.m4s`), not at 0.
//! - Files are written atomically (a temporary file, then a rename), media before the playlist
//!   that lists it, so a web server serving the folder never sees a half file or a dangling
//!   entry. LL-HLS parts go to disk too (the folder is then a complete origin, less blocking
//!   reload); recent parts are also kept in memory, where blocking requests are answered from.
//! - The folder holds exactly one presentation: a stream's stale files are removed when it is
//!   first written after a bridge start, and the previous presentation's files when a new one
//!   starts after `EXT-X-ENDLIST`.
//! - File IO runs on the blocking pool (`std::fs` there, which is what `tokio::fs` would do
//!   per call), one batch per run of file actions, so the output stays pure.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{OwnedMutexGuard, mpsc, watch};

use crate::hls::store::{HlsFile, StreamState, Writer, first_number};
use crate::hooks::{Event, SessionHooks};
use crate::media::unit::Unit;
use crate::mux::hls::names::LadderRendition;
use crate::mux::hls::output::{
    AacEncode, Action, Handoff, HlsOutput, Listed, NewAacEncoder, Rendition,
};
use crate::mux::hls::playlist::{Ladder, Leave};

use super::aac::{AacFormat, AacPassthrough};
use super::s3::ObjectSink;

pub use crate::config::{HlsAudio, HlsContainer, HlsSettings};
pub use crate::hls::HlsMetrics;
pub use crate::hls::store::HlsStreams;
pub use crate::mux::hls::output::MAX_CLOCK_SKEW;

impl HlsStreams {
    /// The output task of a new session on `stream`. Call it when the session is created, before
    /// the session it replaces ends: that is how the old session's output knows it is taken over
    /// and hands the playlist on instead of ending it. With `hls_audio = aac` its audio frames
    /// come AAC already, from the session's transcoder, whose format `aac` holds.
    pub fn output(
        &self,
        stream: &str,
        has_audio: bool,
        has_video: bool,
        keyframe_wanted: Arc<AtomicBool>,
        wallclock: watch::Receiver<Option<SystemTime>>,
        aac: AacFormat,
    ) -> HlsTask {
        let state = self.stream(stream);
        let generation = state.next_generation();
        HlsTask {
            state,
            settings: self.settings().clone(),
            generation,
            has_audio,
            has_video,
            keyframe_wanted,
            wallclock,
            aac,
            metrics: self.metrics().clone(),
            ladder: None,
            timeline_origin: None,
            hooks: SessionHooks::default(),
            uploader: self.uploader().clone(),
            stream: stream.into(),
        }
    }
}

/// Where an output stands in a simulcast publisher's HLS ladder.
#[derive(Debug)]
pub enum LadderRole {
    /// The stream's own output (`index.m3u8`): its `main.m3u8` lists the renditions.
    Main(watch::Receiver<Ladder>),
    /// A rendition's output (in the stream's `v{layer}/` or `audio/` folder): it tells the
    /// ladder what it measured of itself after each segment.
    Rendition(LadderRendition, Arc<watch::Sender<Ladder>>),
}

/// One session's HLS output task; see [`HlsStreams::output`].
#[derive(Debug)]
pub struct HlsTask {
    state: Arc<StreamState>,
    settings: HlsSettings,
    generation: u64,
    has_audio: bool,
    has_video: bool,
    keyframe_wanted: Arc<AtomicBool>,
    /// The publisher's wallclock of timeline 0, once its first sender report came.
    wallclock: watch::Receiver<Option<SystemTime>>,
    /// The session transcoder's format (`hls_audio = aac`).
    aac: AacFormat,
    metrics: HlsMetrics,
    ladder: Option<LadderRole>,
    /// The bridge's clock at the session's timeline 0.
    timeline_origin: Option<SystemTime>,
    /// The session's webhooks: `hls_ready`.
    hooks: SessionHooks,
    /// Where its files are uploaded too.
    uploader: ObjectSink,
    /// The stream's name (a ladder rendition's: `{stream}/{rendition}`).
    stream: Arc<str>,
}

impl HlsTask {
    /// The same task, dating its segments from the bridge's clock at the session's timeline 0
    /// (until the publisher's clock does): every output of the session the same.
    pub fn dated_from(mut self, timeline_origin: SystemTime) -> Self {
        self.timeline_origin = Some(timeline_origin);
        self
    }

    /// The same task, telling the session's webhooks when its playlist is ready.
    pub fn with_hooks(mut self, hooks: SessionHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The same task, as a part of a simulcast publisher's ladder.
    pub fn in_ladder(mut self, role: LadderRole) -> Self {
        self.ladder = Some(role);
        self
    }

    /// Runs until the queue closes (the session ended), then finishes the last segment and ends
    /// the playlist, unless another session has taken the stream over.
    pub async fn run(self, mut units: mpsc::Receiver<Unit>) {
        let Some(mut run) = Run::begin(self).await else {
            return;
        };
        while let Some(unit) = units.recv().await {
            let sender = *run.task.wallclock.borrow_and_update();
            if let Some(timeline_zero) = sender {
                run.output.handle_sender_clock(timeline_zero);
            }
            run.follow_ladder();
            let segments = run.output.segments();
            run.output.push(unit, Instant::now(), SystemTime::now());
            run.apply().await;
            if let Some(LadderRole::Rendition(rendition, ladder)) = &run.task.ladder
                && run.output.segments() != segments
                && let Some(variant) = run.output.variant()
            {
                let recent = run.output.recent_segments();
                ladder.send_modify(|l| l.set(*rendition, variant, recent));
            }
        }
        run.finish().await;
    }
}

/// A session's output at work, holding the stream's writer lock for the whole session.
#[derive(Debug)]
struct Run {
    task: HlsTask,
    writer: OwnedMutexGuard<Writer>,
    output: HlsOutput,
    /// The ladder's renditions not listed, as last logged.
    left: Vec<(LadderRendition, Leave)>,
    /// `hls_ready` was sent (or is not this output's to send).
    ready_told: bool,
}

impl Run {
    /// The stream's own output in a ladder: takes the renditions' latest measures, and logs
    /// and counts those that leave the ladder or come back.
    fn follow_ladder(&mut self) {
        let Some(LadderRole::Main(ladder)) = self.task.ladder.as_mut() else {
            return;
        };
        if !ladder.has_changed().unwrap_or(false) {
            return;
        }
        let ladder = ladder.borrow_and_update().clone();
        let left = ladder.left();
        for &(rendition, why) in &left {
            if !self.left.contains(&(rendition, why)) {
                tracing::info!(%rendition, why = why.as_str(), "rendition leaves the HLS ladder");
                self.task
                    .metrics
                    .ladder_exits
                    .get_or_create(&why.into())
                    .inc();
            }
        }
        for (rendition, _) in &self.left {
            if !left.iter().any(|(r, _)| r == rendition) {
                tracing::info!(%rendition, "rendition back in the HLS ladder");
            }
        }
        self.left = left;
        self.output.handle_ladder(ladder);
    }

    async fn begin(task: HlsTask) -> Option<Self> {
        let mut writer = task.state.writer().lock_owned().await;
        if !task.state.is_newest(task.generation) {
            // A newer session on this stream got the writer first: this one has been taken
            // over already and must not touch what the newer one wrote.
            tracing::debug!("HLS output superseded before it started");
            return None;
        }
        // Only a task that panicked leaves no handoff: start afresh then.
        let handoff = writer
            .handoff
            .take()
            .unwrap_or_else(|| Handoff::new(first_number()));
        let msn = handoff.next_msn();
        let mut config = task
            .settings
            .output(Rendition::Main, task.has_audio, task.has_video);
        // A ladder's renditions cut on one grid, so players can switch at any boundary.
        config.segmenter.grid = matches!(task.ladder, Some(LadderRole::Rendition(..)));
        // The frames are AAC already: the "encoder" passes them on, with the transcoder's
        // format (published before its first frame, which opened the output's start gate).
        let aac = task.aac.clone();
        let new_encoder: NewAacEncoder = Box::new(move |_channels| {
            AacPassthrough::new(&aac)
                .map(|t| Box::new(t) as Box<dyn AacEncode>)
                .ok_or_else(|| "no AAC from the session's transcoder".to_owned())
        });
        let mut output = match HlsOutput::new(config, handoff, Some(new_encoder)) {
            Ok(output) => output,
            Err(err) => {
                // The same settings refuse every session: nothing to continue.
                tracing::error!(%err, "HLS output not started");
                writer.handoff = Some(Handoff::new(first_number()));
                return None;
            }
        };
        if let Some(origin) = task.timeline_origin {
            output.set_timeline_origin(origin);
        }
        tracing::info!(
            continuing = output.is_continuing(),
            msn,
            "HLS output started"
        );
        // A ladder's renditions are parts of the stream's presentation: its own output speaks
        // for it.
        let ready_told = matches!(task.ladder, Some(LadderRole::Rendition(..)));
        let mut run = Self {
            task,
            writer,
            output,
            left: Vec::new(),
            ready_told,
        };
        run.apply().await;
        Some(run)
    }

    /// Does what the output asks, in order: consecutive file actions as one batch, finished
    /// before a view change is published (media before the playlist that lists it).
    async fn apply(&mut self) {
        let mut ops = Vec::new();
        while let Some(action) = self.output.poll() {
            match action {
                Action::Write { name, data } => ops.push(FileOp::Write(name, data)),
                Action::Remove { name } => ops.push(FileOp::Remove(name)),
                Action::Publish(change) => {
                    self.files(std::mem::take(&mut ops)).await;
                    // What the store answers a playlist request with from now on.
                    let servable = change
                        .playlist
                        .as_ref()
                        .is_some_and(|p| p.playlist.has_media());
                    self.task.state.publish(*change);
                    if servable && !self.ready_told {
                        self.ready_told = true;
                        self.task.hooks.emit(Event::HlsReady {
                            playlist: format!("/hls/{}/index.m3u8", self.task.stream),
                        });
                    }
                }
                Action::Listed(listed) => self.listed(listed),
                Action::KeyframeWanted => self.task.keyframe_wanted.store(true, Ordering::Relaxed),
            }
        }
        self.files(ops).await;
    }

    fn listed(&self, listed: Listed) {
        let metrics = &self.task.metrics;
        let arrivals = match listed {
            Listed::Part { arrivals } => {
                metrics.parts.inc();
                arrivals
            }
            Listed::Segment { bytes, arrivals } => {
                metrics.segments.inc();
                metrics.bytes.inc_by(bytes);
                arrivals
            }
        };
        let now = Instant::now();
        for at in arrivals {
            metrics
                .listing_delay
                .observe(now.saturating_duration_since(at).as_secs_f64());
        }
    }

    async fn files(&mut self, ops: Vec<FileOp>) {
        if ops.is_empty() {
            return;
        }
        // Queued before the disk write: storage keeps the batch's order, whatever the disk does.
        self.task
            .uploader
            .offer(&self.task.stream, self.task.state.dir(), &ops);
        let dir = self.task.state.dir().to_owned();
        // The folder is made (and what an earlier run left there removed) at the first write,
        // not when the session starts: a publisher that never sends media leaves nothing.
        let prepare = !self.writer.prepared;
        let result = tokio::task::spawn_blocking(move || {
            let removed = prepare.then(|| prepare_blocking(&dir));
            (removed, apply_blocking(&dir, ops))
        })
        .await;
        let dir = self.task.state.dir().display();
        let errors = match result {
            Ok((Some(Err(err)), mut errors)) => {
                errors.insert(0, (".".to_owned(), err));
                errors
            }
            Ok((Some(Ok(removed)), errors)) => {
                self.writer.prepared = true;
                if removed > 0 {
                    tracing::info!(removed, %dir, "stale HLS files removed");
                }
                errors
            }
            Ok((None, errors)) => errors,
            Err(err) => {
                tracing::error!(%err, "HLS file task failed");
                return;
            }
        };
        match errors.first() {
            // Once per outage, not five times a second.
            Some((file, err)) if !self.writer.failing => {
                self.writer.failing = true;
                tracing::warn!(%file, %err, %dir, "HLS files not written");
            }
            None if self.writer.failing => {
                self.writer.failing = false;
                tracing::info!("HLS files written again");
            }
            _ => {}
        }
    }

    async fn finish(mut self) {
        self.output.finish();
        self.apply().await;
        let segments = self.output.segments();
        if !self.output.has_media() {
            tracing::info!("HLS output ended without media");
        } else if !self.task.state.is_newest(self.task.generation) {
            tracing::info!(segments, "HLS output handed over to the next publisher");
        } else {
            self.output.end();
            self.apply().await;
            self.task.uploader.ended(&self.task.stream);
            tracing::info!(segments, "HLS playlist ended");
        }
        self.writer.handoff = Some(self.output.into_handoff());
    }
}

/// A file operation in a stream's folder (and in storage, [`super::s3`]).
#[derive(Debug, Clone)]
pub(crate) enum FileOp {
    /// Write atomically.
    Write(String, Vec<Bytes>),
    /// Delete (a file already gone is fine).
    Remove(String),
}

/// Runs `ops` in order in `dir`; returns the failures.
fn apply_blocking(dir: &Path, ops: Vec<FileOp>) -> Vec<(String, std::io::Error)> {
    let mut errors = Vec::new();
    for op in ops {
        let result = match &op {
            FileOp::Write(name, chunks) => write_atomic(dir, name, chunks),
            FileOp::Remove(name) => match std::fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        if let Err(err) = result {
            let (FileOp::Write(name, _) | FileOp::Remove(name)) = op;
            errors.push((name, err));
        }
    }
    errors
}

/// Writes a temporary file beside the target and renames it over: readers see the old file or
/// the new one, never a part of it. No fsync: after a crash, live HLS is worthless anyway.
fn write_atomic(dir: &Path, name: &str, chunks: &[Bytes]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        for chunk in chunks {
            file.write_all(chunk)?;
        }
        Ok(())
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates the folder and removes what an earlier run left in it (our names only).
fn prepare_blocking(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = HlsFile::parse(name).is_some()
            || HlsFile::is_old_part_name(name)
            || name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| HlsFile::parse(n).is_some());
        if ours && std::fs::remove_file(dir.join(name)).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::hls::playlist::{Container, PlaylistKind};

    /// 2 s of real video through an LL-HLS output task: the files land on disk and every
    /// listing is counted. (What is listed, and how it is dated, is tested on the pure output.)
    #[tokio::test]
    async fn a_task_writes_the_files_and_counts_the_listings() {
        let metrics = crate::metrics::Metrics::default();
        let settings = HlsSettings {
            dir: bridge_proto::testdata::temp_dir("hls-task"),
            container: Container::Fmp4,
            low_latency: true,
            kind: PlaylistKind::Live { window: 6 },
            audio: HlsAudio::None,
        };
        let streams = HlsStreams::new(settings, metrics.hls());
        let (_clock, wallclock) = watch::channel(None);
        let output = streams.output(
            "s",
            false,
            true,
            Arc::default(),
            wallclock,
            AacFormat::default(),
        );
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(output.run(rx));
        for unit in bridge_proto::testdata::video_units(0) {
            tx.send(Unit::Video(unit)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let dir = streams.get("s").unwrap().dir().to_owned();
        let index = std::fs::read(dir.join("index.m3u8")).unwrap();
        let playlist = m3u8_rs::parse_media_playlist_res(&index).unwrap();
        assert!(playlist.end_list);
        for segment in &playlist.segments {
            assert!(dir.join(&segment.uri).exists(), "{}", segment.uri);
        }
        let metrics = metrics.render();
        let line = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {metrics}"))
                .to_owned()
        };
        assert_eq!(
            line("bridge_hls_listing_delay_seconds_count"),
            "bridge_hls_listing_delay_seconds_count 60"
        );
        assert_eq!(
            line("bridge_hls_segments_total"),
            "bridge_hls_segments_total 2"
        );
        assert!(line("bridge_hls_parts_total").ends_with(" 10"), "{metrics}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_are_replaced_whole_and_stale_ones_removed() {
        let dir = std::env::temp_dir().join(format!("bridge-hls-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seg5.m4s"), b"old").unwrap();
        std::fs::write(dir.join(".index.m3u8.tmp"), b"half").unwrap();
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        assert_eq!(prepare_blocking(&dir).unwrap(), 2);
        assert!(dir.join("notes.txt").exists());
        let errors = apply_blocking(
            &dir,
            vec![
                FileOp::Write(
                    "seg6.m4s".into(),
                    vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                ),
                FileOp::Remove("seg5.m4s".into()),
            ],
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(std::fs::read(dir.join("seg6.m4s")).unwrap(), b"ab");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
