//! Every stream's HLS state, shared by the outputs (writers) and the HTTP layer (readers).
//!
//! A stream's state ([`StreamState`]) is keyed by stream name and outlives sessions: a publisher
//! taking a stream over continues the same playlist. Readers see a [`View`]: the playlist and
//! what it lists that is kept in memory, changed only by the [`ViewChange`]s the output
//! publishes. Writers take turns through the writer lock, which also holds what one session's
//! output hands the next ([`Handoff`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::HlsMetrics;
use crate::config::HlsSettings;
pub use crate::mux::hls::names::HlsFile;
use crate::mux::hls::output::{Handoff, ViewChange};
use crate::mux::hls::playlist::{DeliveryDirectives, Playlist, Reload};
use crate::sink::s3::ObjectSink;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the view consistent (a change applied whole), so a
    // poisoned lock is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every stream's HLS state.
#[derive(Debug)]
pub struct HlsStreams {
    settings: HlsSettings,
    metrics: HlsMetrics,
    /// Where the outputs' files are uploaded too (a no-op without `--hls-s3`).
    uploader: ObjectSink,
    streams: Mutex<HashMap<String, Arc<StreamState>>>,
}

impl HlsStreams {
    /// No streams yet.
    pub fn new(settings: HlsSettings, metrics: HlsMetrics) -> Self {
        Self {
            settings,
            metrics,
            uploader: ObjectSink::default(),
            streams: Mutex::default(),
        }
    }

    /// The same streams, their outputs' files uploaded by `uploader` as well.
    pub fn with_uploader(mut self, uploader: ObjectSink) -> Self {
        self.uploader = uploader;
        self
    }

    /// Where the outputs' files are uploaded too.
    pub fn uploader(&self) -> &ObjectSink {
        &self.uploader
    }

    /// The shared settings.
    pub fn settings(&self) -> &HlsSettings {
        &self.settings
    }

    /// The outputs' metrics.
    pub fn metrics(&self) -> &HlsMetrics {
        &self.metrics
    }

    /// A stream published since the bridge started (live or ended).
    pub fn get(&self, stream: &str) -> Option<Arc<StreamState>> {
        lock(&self.streams).get(stream).cloned()
    }

    /// The state of `stream`, made on its first publish.
    pub(crate) fn stream(&self, stream: &str) -> Arc<StreamState> {
        lock(&self.streams)
            .entry(stream.to_owned())
            .or_insert_with(|| Arc::new(StreamState::new(stream, &self.settings.dir)))
            .clone()
    }
}

/// What the HTTP layer reads: the playlist and what it lists that is kept in memory.
#[derive(Debug, Default)]
pub struct View {
    playlist: Option<Playlist>,
    /// `index.m3u8` as last rendered.
    index: Bytes,
    /// The delta update (`_HLS_skip=YES`), when the playlist offers them.
    delta: Option<Bytes>,
    /// `main.m3u8`, once a segment has measured the bandwidth.
    main: Option<Bytes>,
    /// Init sections by name.
    init: HashMap<String, Bytes>,
    /// The newest LL-HLS parts, by (msn, part number): those of the open segment and the one
    /// before, which is what clients at the live edge ask for. Older ones are read from disk,
    /// where they stay as long as the spec says; memory would otherwise hold seconds of media
    /// per stream.
    parts: BTreeMap<(u64, u64), Bytes>,
}

impl View {
    fn apply(&mut self, change: ViewChange) {
        if change.reset {
            *self = View::default();
        }
        if let Some(rendered) = change.playlist {
            self.playlist = Some(rendered.playlist);
            self.index = rendered.index;
            self.delta = rendered.delta;
        }
        if let Some(main) = change.main {
            self.main = Some(main);
        }
        if let Some((name, bytes)) = change.init {
            self.init.insert(name, bytes);
        }
        if let Some(((msn, number), bytes)) = change.part {
            self.parts.insert((msn, number), bytes);
            self.parts = self.parts.split_off(&(msn.saturating_sub(1), 0));
        }
        for name in &change.expired {
            if let Some(HlsFile::Part { number, .. }) = HlsFile::parse(name) {
                self.parts.retain(|&(_, n), _| n != number);
            }
            self.init.remove(name);
        }
        if change.ended {
            self.parts.clear();
        }
    }
}

/// What a playlist request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistAnswer {
    /// The playlist.
    Ready(Bytes),
    /// Not yet: wait for a change and ask again.
    Wait,
    /// Too far ahead of the live edge (400).
    BadRequest,
}

/// What a part request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswer {
    /// The part, from memory.
    Ready(Bytes),
    /// It is the preload-hinted part: wait for a change and ask again.
    Wait,
    /// Not in memory: look on disk.
    NotHere,
}

/// The writer's side of a stream, held by one session's output at a time.
#[derive(Debug)]
pub(crate) struct Writer {
    /// What the next session continues from; out while a session holds it.
    pub(crate) handoff: Option<Handoff>,
    /// The folder exists and stale files from an earlier run are gone.
    pub(crate) prepared: bool,
    /// Writes are failing (logged once until they work again).
    pub(crate) failing: bool,
}

/// One stream's HLS state.
#[derive(Debug)]
pub struct StreamState {
    dir: PathBuf,
    /// Bumped by every new session on the stream; the output whose session is the newest ends
    /// the playlist, the others hand it on.
    generation: AtomicU64,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    view: Mutex<View>,
    /// Bumped after every change to the view: blocked requests wait on it.
    changed: watch::Sender<u64>,
}

/// Where a stream's numbers start: the wall clock in milliseconds, so no name is reused even
/// across bridge restarts (see [`crate::sink::hls`]).
pub(crate) fn first_number() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
}

impl StreamState {
    fn new(name: &str, root: &Path) -> Self {
        Self {
            dir: root.join(name),
            generation: AtomicU64::new(0),
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                handoff: Some(Handoff::new(first_number())),
                prepared: false,
                failing: false,
            })),
            view: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    /// The stream's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver that wakes after each change; take it before asking, so no change is missed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The media playlist for a request with these delivery directives (RFC 8216bis §6.2.5).
    /// Before the stream has any media it is always [`PlaylistAnswer::Wait`].
    pub fn media_playlist(&self, directives: &DeliveryDirectives) -> PlaylistAnswer {
        let view = lock(&self.view);
        let Some(playlist) = &view.playlist else {
            return PlaylistAnswer::Wait;
        };
        if !playlist.has_media() && !playlist.is_ended() {
            return PlaylistAnswer::Wait;
        }
        match playlist.reload(directives) {
            Reload::Ready => PlaylistAnswer::Ready(match (&view.delta, directives.skip) {
                (Some(delta), true) => delta.clone(),
                _ => view.index.clone(),
            }),
            Reload::Wait => PlaylistAnswer::Wait,
            Reload::BadRequest => PlaylistAnswer::BadRequest,
        }
    }

    /// How long a blocking request may wait: three target durations.
    pub fn blocking_timeout(&self) -> Option<Duration> {
        lock(&self.view)
            .playlist
            .as_ref()
            .map(Playlist::blocking_timeout)
    }

    /// `main.m3u8`, once known.
    pub fn multivariant_playlist(&self) -> Option<Bytes> {
        lock(&self.view).main.clone()
    }

    /// An init section kept in memory.
    pub fn init(&self, name: &str) -> Option<Bytes> {
        lock(&self.view).init.get(name).cloned()
    }

    /// A part request, by its number.
    pub fn part(&self, number: u64) -> PartAnswer {
        let view = lock(&self.view);
        // A handful of parts: a scan costs less than a second index.
        if let Some(bytes) = view
            .parts
            .iter()
            .find_map(|(&(_, n), bytes)| (n == number).then_some(bytes))
        {
            return PartAnswer::Ready(bytes.clone());
        }
        // Only the hinted part is waited for (RFC 8216bis §6.2.6); an older one is on disk or
        // gone. Parts are numbered by one running count, so the hinted one always comes.
        let hinted = view
            .playlist
            .as_ref()
            .and_then(Playlist::preload_hint)
            .is_some_and(|h| h == number);
        if hinted {
            PartAnswer::Wait
        } else {
            PartAnswer::NotHere
        }
    }

    /// A new session on the stream: its generation.
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// No session newer than `generation`'s has started on the stream.
    pub(crate) fn is_newest(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) == generation
    }

    /// The writer lock.
    pub(crate) fn writer(&self) -> Arc<tokio::sync::Mutex<Writer>> {
        self.writer.clone()
    }

    /// Applies an output's change to the view and wakes blocked requests.
    pub(crate) fn publish(&self, change: ViewChange) {
        lock(&self.view).apply(change);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_keeps_the_newest_parts_until_they_expire_or_the_playlist_ends() {
        let state = StreamState::new("s", Path::new("/nonexistent"));
        let changes = state.changes();
        // One part per segment, numbered as its segment.
        let part = |msn: u64| ViewChange {
            part: Some(((msn, msn), Bytes::from(vec![msn as u8]))),
            ..ViewChange::default()
        };
        for msn in 5..=7 {
            state.publish(part(msn));
        }
        assert!(changes.has_changed().unwrap(), "readers woken");
        assert_eq!(
            state.part(5),
            PartAnswer::NotHere,
            "two segments back: disk"
        );
        assert_eq!(state.part(6), PartAnswer::Ready(Bytes::from_static(&[6])));
        state.publish(ViewChange {
            expired: vec!["part6.m4s".to_owned()],
            init: Some(("init3.mp4".to_owned(), Bytes::from_static(b"moov"))),
            ..ViewChange::default()
        });
        assert_eq!(state.part(6), PartAnswer::NotHere);
        assert_eq!(state.init("init3.mp4"), Some(Bytes::from_static(b"moov")));
        state.publish(ViewChange {
            ended: true,
            ..ViewChange::default()
        });
        assert_eq!(state.part(7), PartAnswer::NotHere, "all on disk");
        state.publish(ViewChange {
            reset: true,
            ..ViewChange::default()
        });
        assert_eq!(state.init("init3.mp4"), None, "a new presentation");
        let directives = DeliveryDirectives::default();
        assert_eq!(state.media_playlist(&directives), PlaylistAnswer::Wait);
    }
}
