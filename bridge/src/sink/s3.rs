//! HLS to S3-compatible object storage (`--hls-s3 s3://bucket/prefix`): what the HLS outputs
//! write to disk ([`crate::sink::hls`]) is uploaded as well, to `{prefix}/{stream}/{name}`, for
//! a CDN to serve. The local folder and the bridge's own HLS endpoint stay as they are.
//!
//! Decisions, and why:
//!
//! - Never on the media path: an output offers each batch of file operations (the same batch it
//!   writes to disk) with `try_send` to a bounded queue; a full queue drops the batch, counted
//!   (`bridge_hls_s3_dropped_total`) and logged at 1, 2, 4... drops. The stream is then behind:
//!   at its next batch with a playlist, what the playlist lists and storage lacks (one LIST) is
//!   read from the local folder, where the dropped batches were written, and stored before the
//!   playlist (`bridge_hls_s3_recovered_total`), so that a stored playlist never lists a
//!   missing object. The end of a presentation waits for room in the queue (on a task of its
//!   own), and a stream behind then stores its playlists from the local folder: a dropped last
//!   batch does not leave storage without `EXT-X-ENDLIST`. What a dropped batch deleted stays in
//!   storage until the next presentation of the stream clears its folder (or a bucket
//!   lifecycle rule).
//! - [`WORKERS`] upload tasks, a stream always on the same one: a stream's uploads stay in order
//!   and one slow stream delays a share of the others, not all of them.
//! - In a batch, media first (segments, LL-HLS parts, init sections: `PutMode::Create`, which is
//!   `If-None-Match: *` on S3, and `Cache-Control: public, max-age=31536000, immutable`), then
//!   the playlists (overwritten, `Cache-Control: max-age=1`): a playlist is stored only after
//!   what it lists. Then the batch's expired objects, deleted in one bulk request.
//! - LL-HLS parts are uploaded too, so that every URI of the stored playlist exists: plain
//!   players (FFmpeg, hls.js without low-latency mode, AVPlayer outside LL) skip `EXT-X-PART`
//!   lines and read segments; low-latency players read parts. Blocking reload (`_HLS_msn`) and
//!   delta updates are what storage cannot do, so the stored playlist does not offer them, nor
//!   a preload hint ([`for_storage`]): LL-HLS at its lowest latency needs the owning node.
//! - Fencing (split brain: two nodes writing one stream), each way a 412 or its equivalent,
//!   after which this node stops uploading the stream (`bridge_hls_s3_fenced_total`, an error
//!   logged) until its presentation ends here:
//!   - before a stream's first upload in a presentation, the node set ([`Owners`], the
//!     cluster's Redis) is asked whose the stream is. Another node's: fenced. This node's: it
//!     takes the folder over, deleting what is there, even objects written a moment ago: they
//!     are a node's that crashed or paused past its key's TTL (the new owner must not wait out
//!     [`LIVE_FOR`], and one that paused is fenced by its next playlist PUT, below);
//!   - with no node set, or Redis not answering: objects of it written in the last
//!     [`LIVE_FOR`] and no `EXT-X-ENDLIST` in its stored playlist mean another node is live on
//!     it (otherwise what an earlier presentation left is deleted, as on disk);
//!   - a media object already there (412 on `If-None-Match: *`): names are never reused (see
//!     [`crate::sink::hls`]), so another writer made it;
//!   - a playlist changed by someone else: each playlist PUT after the first is conditional on
//!     the ETag of this node's last one (`If-Match`), so of two writers that started together
//!     (both found nothing, and their names differ: they start at the wall clock in ms), the
//!     first to be overwritten gets 412 on its next playlist and yields (a playlist deleted
//!     meanwhile, by a new owner taking the folder over, fences too). The first PUT of a
//!     playlist overwrites: a leftover of a crashed writer must not fence. A batch fenced at
//!     its playlist deletes the media it has just stored, which nothing lists.
//! - Retries: the webhooks' policy ([`crate::hooks::retry`]), object_store's own turned off so
//!   that this code sees every answer. A 412 on a retry may be this node's own earlier try,
//!   landed with its answer lost: the stored object is read back, and only other bytes fence.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::config::S3Settings;
use crate::hls::store::{HlsFile, lock};
use crate::mux::hls::names::MEDIA_PLAYLIST_URI;
use crate::mux::hls::playlist::{for_storage, uris};

use super::hls::FileOp;

/// Upload tasks per bridge.
pub const WORKERS: usize = 4;
/// A stored live playlist younger than this has a writer (a live playlist is rewritten at
/// least once per segment, a few seconds).
pub const LIVE_FOR: Duration = Duration::from_secs(30);
/// How long one request may take before it counts as failed (and is tried again).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// `Cache-Control` of segments, parts and init sections: their names are never reused.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of playlists: a CDN refetches them about once per part.
pub const PLAYLIST: &str = "public, max-age=1";

/// `kind="media|playlist|delete"`, `result="ok|failed"` of one S3 request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadLabel {
    kind: &'static str,
    result: &'static str,
}

/// The uploads' metrics (shared handles; see [`crate::metrics::Metrics`]).
#[derive(Debug, Clone)]
pub struct S3Metrics {
    /// Objects uploaded or deleted, by kind and result.
    pub uploads: Family<UploadLabel, Counter>,
    /// Requests tried again after a failed one.
    pub retries: Counter,
    /// Batches dropped on a full queue.
    pub dropped: Counter,
    /// Media objects stored from the local folder after dropped batches.
    pub recovered: Counter,
    /// Streams this node stopped uploading because another writer has them.
    pub fenced: Counter,
    /// From a batch being queued to its last request answered.
    pub lag: Histogram,
}

impl S3Metrics {
    fn count(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.uploads
            .get_or_create(&UploadLabel { kind, result })
            .inc();
    }
}

/// Whose a stream is, as the node set says when its first upload in a presentation is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the stream's key.
    Ours,
    /// Another node does.
    Theirs,
    /// Nobody can say (no key yet, Redis down): the stored objects decide.
    Unknown,
}

/// The node set's word on who owns a stream ([`crate::cluster::Cluster`]).
pub trait Owners: Send + Sync + std::fmt::Debug {
    /// Whose `stream` is, bounded in time ([`Claim::Unknown`] when there is no answer).
    fn claim<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Claim>;
}

/// What an upload task is told.
#[derive(Debug)]
enum Msg {
    /// A batch of one stream's file operations, in the output's order.
    Batch {
        stream: Arc<str>,
        ops: Vec<FileOp>,
        queued: Instant,
        /// Its place among all batches offered ([`Inner::offered`]).
        seq: u64,
    },
    /// This node ended the stream's presentation: a fence on it is lifted.
    Ended(Arc<str>),
    /// Answer once everything queued before is done.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Inner {
    workers: Vec<mpsc::Sender<Msg>>,
    metrics: S3Metrics,
    /// Batches dropped: logged at 1, 2, 4...
    dropped: AtomicUsize,
    /// Batches offered, dropped ones included: the next one's `seq`.
    offered: AtomicU64,
    /// The streams with batches dropped since their last catch-up.
    behind: Behind,
}

/// A stream with batches dropped.
#[derive(Debug, Clone)]
struct Lag {
    /// Its local folder, where the dropped batches were written.
    dir: PathBuf,
    /// The `seq` of the last batch dropped: only a playlist offered after it lists its files.
    last_dropped: u64,
}

/// The streams behind.
type Behind = Arc<Mutex<HashMap<Arc<str>, Lag>>>;

/// The bridge's uploader: cheap to clone, and doing nothing without `--hls-s3`.
#[derive(Debug, Clone, Default)]
pub struct ObjectSink {
    inner: Option<Arc<Inner>>,
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("S3 storage for HLS: {0}")]
pub struct SetupError(#[from] object_store::Error);

impl ObjectSink {
    /// Builds the S3 client (region and credentials from the `AWS_*` environment) and starts the
    /// upload tasks on the current runtime.
    /// `owners`: the node set, when clustered.
    pub fn s3(
        settings: &S3Settings,
        metrics: S3Metrics,
        owners: Option<Arc<dyn Owners>>,
    ) -> Result<Self, SetupError> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            // The client options hold `allow_http` too: set here, not on the builder, which
            // these would reset.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(TIMEOUT)
                    .with_allow_http(settings.allow_http),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = Arc::new(builder.build()?);
        Ok(Self::new(
            store,
            &settings.prefix,
            settings.queue,
            metrics,
            owners,
        ))
    }

    /// Uploads to `store` under `prefix`, `queue` batches waiting per task at most, asking
    /// `owners` (if any) whose a stream is before taking its folder.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        queue: usize,
        metrics: S3Metrics,
        owners: Option<Arc<dyn Owners>>,
    ) -> Self {
        for kind in ["media", "playlist", "delete"] {
            for ok in [true, false] {
                let result = if ok { "ok" } else { "failed" };
                metrics
                    .uploads
                    .get_or_create(&UploadLabel { kind, result })
                    .inc_by(0);
            }
        }
        let behind = Behind::default();
        let workers = (0..WORKERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(queue);
                let worker = Worker {
                    store: store.clone(),
                    owners: owners.clone(),
                    behind: behind.clone(),
                    prefix: prefix.to_owned(),
                    metrics: metrics.clone(),
                    fenced: HashSet::new(),
                    prepared: HashSet::new(),
                    playlists: HashMap::new(),
                };
                tokio::spawn(worker.run(rx));
                tx
            })
            .collect();
        Self {
            inner: Some(Arc::new(Inner {
                workers,
                metrics,
                dropped: AtomicUsize::new(0),
                offered: AtomicU64::new(0),
                behind,
            })),
        }
    }

    /// Queues a batch of `stream`'s file operations, which are also applied in `dir`; never
    /// waits (a full queue drops it, and the stream catches up from `dir` later).
    pub(crate) fn offer(&self, stream: &Arc<str>, dir: &std::path::Path, ops: &[FileOp]) {
        let Some(inner) = &self.inner else { return };
        let seq = inner.offered.fetch_add(1, Ordering::Relaxed);
        let msg = Msg::Batch {
            stream: stream.clone(),
            ops: ops.to_vec(),
            queued: Instant::now(),
            seq,
        };
        if inner.worker(stream).try_send(msg).is_err() {
            inner.metrics.dropped.inc();
            lock(&inner.behind)
                .entry(stream.clone())
                .and_modify(|lag| lag.last_dropped = seq)
                .or_insert_with(|| Lag {
                    dir: dir.to_owned(),
                    last_dropped: seq,
                });
            let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(%stream, dropped, "HLS upload queue full: batch dropped");
            }
        }
    }

    /// This node ended `stream`'s presentation (its playlist has `EXT-X-ENDLIST`, on disk).
    pub(crate) fn ended(&self, stream: &Arc<str>) {
        let Some(inner) = &self.inner else { return };
        let worker = inner.worker(stream).clone();
        if let Err(mpsc::error::TrySendError::Full(msg)) =
            worker.try_send(Msg::Ended(stream.clone()))
        {
            // Once a presentation, and the end is what catches up a final playlist a full
            // queue dropped: worth waiting for room, on a task of its own, not the output's.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = worker.send(msg).await;
                });
            }
        }
    }

    /// Waits until what is queued now is uploaded (or given up), or `timeout` has passed: at
    /// shutdown, so that the last segments and the playlists' `EXT-X-ENDLIST` reach storage.
    pub async fn flush(&self, timeout: Duration) {
        let Some(inner) = &self.inner else { return };
        let flushed = async {
            for worker in &inner.workers {
                let (done, flushed) = oneshot::channel();
                // Waiting for room is fine here: nothing else is queued at shutdown.
                if worker.send(Msg::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("HLS uploads not finished before shutdown");
        }
    }
}

impl Inner {
    fn worker(&self, stream: &str) -> &mpsc::Sender<Msg> {
        // A fixed hasher: the same stream on the same task for the process's life.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(stream);
        // `workers` is never empty (WORKERS tasks); the remainder is below its length.
        &self.workers[(hash % self.workers.len() as u64) as usize]
    }
}

/// A playlist as storage can serve it ([`for_storage`]), in one piece; one that is not UTF-8
/// (never made here) as it is.
fn storage_playlist(data: &[Bytes]) -> Bytes {
    let whole: Vec<u8> = data.concat();
    match std::str::from_utf8(&whole) {
        Ok(text) => Bytes::from(for_storage(text)),
        Err(_) => Bytes::from(whole),
    }
}

/// What a PUT came to.
#[derive(Debug, PartialEq, Eq)]
enum Put {
    Stored,
    Failed,
    /// The object exists (media) or changed since this node's last PUT (a playlist): another
    /// writer's.
    Fenced,
}

/// One upload task: its streams' batches, one at a time.
#[derive(Debug)]
struct Worker {
    store: Arc<dyn ObjectStore>,
    owners: Option<Arc<dyn Owners>>,
    behind: Behind,
    prefix: String,
    metrics: S3Metrics,
    /// Streams another writer has (until this node ends their presentation).
    fenced: HashSet<Arc<str>>,
    /// Streams whose earlier objects were looked at in this presentation.
    prepared: HashSet<Arc<str>>,
    /// The version of each playlist as this node last stored it: the next PUT's `If-Match`.
    playlists: HashMap<Path, UpdateVersion>,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Msg>) {
        while let Some(msg) = queue.recv().await {
            match msg {
                Msg::Batch {
                    stream,
                    ops,
                    queued,
                    seq,
                } => {
                    self.batch(&stream, ops, seq).await;
                    self.metrics.lag.observe(queued.elapsed().as_secs_f64());
                }
                Msg::Ended(stream) => {
                    let behind = lock(&self.behind).get(&stream).cloned();
                    if let Some(lag) = behind {
                        self.end_from_disk(&stream, &lag.dir).await;
                    }
                    // The next presentation starts afresh: looked at, then a new chain of
                    // playlist versions.
                    lock(&self.behind).remove(&stream);
                    self.fenced.remove(&stream);
                    self.prepared.remove(&stream);
                    let dir = self.path(&stream, "");
                    self.playlists
                        .retain(|path, _| path.prefix_match(&dir).is_none());
                }
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn path(&self, stream: &str, name: &str) -> Path {
        match self.prefix.as_str() {
            "" => Path::from(format!("{stream}/{name}")),
            prefix => Path::from(format!("{prefix}/{stream}/{name}")),
        }
    }

    fn fence(&mut self, stream: &Arc<str>, why: &str) {
        tracing::error!(
            %stream,
            why,
            "another node writes this HLS stream to storage (split brain): uploads stopped"
        );
        self.metrics.fenced.inc();
        self.fenced.insert(stream.clone());
    }

    /// `seq`: the batch's place among those offered (see [`Lag`]).
    async fn batch(&mut self, stream: &Arc<str>, ops: Vec<FileOp>, seq: u64) {
        if self.fenced.contains(stream) {
            return;
        }
        if !self.prepared.contains(stream) {
            match self.prepare(stream).await {
                Ok(Some(why)) => {
                    self.fence(stream, why);
                    return;
                }
                Ok(None) => {}
                // Not fatal: the uploads themselves still fence on a 412.
                Err(err) => tracing::warn!(%stream, %err, "stored HLS objects not checked"),
            }
            self.prepared.insert(stream.clone());
        }
        let (playlists, media): (Vec<_>, Vec<_>) = ops
            .iter()
            .filter_map(|op| match op {
                FileOp::Write(name, data) => Some((name, data)),
                FileOp::Remove(_) => None,
            })
            .partition(|(name, _)| name.ends_with(".m3u8"));
        let mut stored = Vec::with_capacity(media.len());
        for (name, data) in media {
            let path = self.path(stream, name);
            match self.put(path.clone(), data, true).await {
                Put::Fenced => {
                    self.fence(stream, &format!("{name} written by another node (412)"));
                    return;
                }
                put => {
                    if put == Put::Stored {
                        stored.push(path);
                    }
                    self.metrics.count("media", put == Put::Stored);
                }
            }
        }
        let playlists: Vec<_> = playlists
            .into_iter()
            .map(|(name, data)| (name, storage_playlist(data)))
            .collect();
        let lag = match lock(&self.behind).entry(stream.clone()) {
            Entry::Occupied(lag) if !playlists.is_empty() && lag.get().last_dropped < seq => {
                Some(lag.remove())
            }
            _ => None,
        };
        if let Some(lag) = lag {
            match self.catch_up(stream, &lag.dir, &playlists).await {
                Put::Fenced => {
                    self.fence(stream, "a listed object written by another node (412)");
                    return;
                }
                // Its next batch with a playlist tries again (unless more were dropped since).
                Put::Failed => {
                    lock(&self.behind).entry(stream.clone()).or_insert(lag);
                }
                Put::Stored => {}
            }
        }
        for (name, data) in playlists {
            let data = std::slice::from_ref(&data);
            match self.put(self.path(stream, name), data, false).await {
                Put::Fenced => {
                    self.fence(stream, &format!("{name} written by another node (412)"));
                    // Stored a moment ago under names of this node's own, listed by no
                    // playlist: nothing would ever delete them.
                    self.delete(stream, stored).await;
                    return;
                }
                put => self.metrics.count("playlist", put == Put::Stored),
            }
        }
        let expired: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                FileOp::Remove(name) => Some(self.path(stream, name)),
                FileOp::Write(..) => None,
            })
            .collect();
        self.delete(stream, expired).await;
    }

    /// One PUT with retries: media created (never replaced), a playlist overwritten if this
    /// node's last version of it is still the stored one.
    async fn put(&mut self, path: Path, data: &[Bytes], media: bool) -> Put {
        let payload: PutPayload = data.iter().cloned().collect();
        let mut attributes = Attributes::new();
        let control = if media { IMMUTABLE } else { PLAYLIST };
        attributes.insert(Attribute::CacheControl, control.into());
        if let Some(file) = path.filename().and_then(HlsFile::parse) {
            attributes.insert(Attribute::ContentType, file.content_type().into());
        }
        let mode = match self.playlists.get(&path) {
            _ if media => PutMode::Create,
            Some(version) => PutMode::Update(version.clone()),
            None => PutMode::Overwrite,
        };
        let options = PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        };
        let mut attempt = 0;
        loop {
            let err = match self
                .store
                .put_opts(&path, payload.clone(), options.clone())
                .await
            {
                Ok(stored) => {
                    self.chain(path, stored.e_tag, stored.version, media);
                    return Put::Stored;
                }
                // A playlist this node stored and that is gone was taken over (deleted by a new
                // owner): as good as changed.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                )
                | Err(object_store::Error::NotFound { .. })
                    if !matches!(options.mode, PutMode::Overwrite) =>
                {
                    if attempt > 0
                        && let Some(stored) = self.read_back(&path, data).await
                    {
                        self.chain(path, stored.e_tag, stored.version, media);
                        return Put::Stored;
                    }
                    return Put::Fenced;
                }
                Err(err) => err,
            };
            let Some(wait) = crate::hooks::retry(attempt) else {
                tracing::warn!(%path, %err, "HLS upload failed; given up");
                return Put::Failed;
            };
            tracing::debug!(%path, %err, ?wait, "HLS upload failed; retrying");
            self.metrics.retries.inc();
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Keeps the stored version of a playlist for its next PUT (a store that gives no ETag
    /// gets plain overwrites: no fencing by playlist there).
    fn chain(&mut self, path: Path, e_tag: Option<String>, version: Option<String>, media: bool) {
        if media {
            return;
        }
        if e_tag.is_some() {
            self.playlists
                .insert(path, UpdateVersion { e_tag, version });
        } else {
            self.playlists.remove(&path);
        }
    }

    /// The stored object's version if it holds exactly `data`: this node's own write.
    async fn read_back(&self, path: &Path, data: &[Bytes]) -> Option<object_store::ObjectMeta> {
        let stored = self.store.get(path).await.ok()?;
        let meta = stored.meta.clone();
        let bytes = stored.bytes().await.ok()?;
        let ours: Vec<u8> = data
            .iter()
            .flat_map(|chunk| chunk.iter().copied())
            .collect();
        (bytes[..] == ours[..]).then_some(meta)
    }

    /// The end of a presentation with batches dropped (perhaps the last, with
    /// `EXT-X-ENDLIST`): its playlists as they are in the local folder `dir`, with what they
    /// list, are stored as a batch of their own.
    async fn end_from_disk(&mut self, stream: &Arc<str>, dir: &std::path::Path) {
        let mut ops = Vec::new();
        if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".m3u8")
                    && let Ok(data) = tokio::fs::read(entry.path()).await
                {
                    ops.push(FileOp::Write(name, vec![Bytes::from(data)]));
                }
            }
        }
        // After every batch offered: nothing dropped is newer.
        self.batch(stream, ops, u64::MAX).await;
    }

    /// After dropped batches of `stream`: stores what `playlists` list (media, in this folder)
    /// and storage lacks, read from the local folder `dir` (a file that expired there since is
    /// skipped). [`Put::Failed`] if storage could not be listed or a file not stored.
    async fn catch_up(
        &mut self,
        stream: &Arc<str>,
        dir: &std::path::Path,
        playlists: &[(&String, Bytes)],
    ) -> Put {
        let folder = self.path(stream, "");
        // Directly in the folder: a ladder's renditions have folders of their own.
        let present: HashSet<String> = match self.store.list_with_delimiter(Some(&folder)).await {
            Ok(listed) => listed
                .objects
                .into_iter()
                .filter_map(|meta| meta.location.filename().map(str::to_owned))
                .collect(),
            Err(err) => {
                tracing::warn!(%stream, %err, "stored HLS objects not listed; catching up later");
                return Put::Failed;
            }
        };
        let missing: HashSet<&str> = playlists
            .iter()
            .filter_map(|(_, data)| std::str::from_utf8(data).ok())
            .flat_map(uris)
            .filter(|uri| !uri.contains(['/', '?']) && !uri.ends_with(".m3u8"))
            .filter(|uri| !present.contains(*uri))
            .collect();
        let mut outcome = Put::Stored;
        for name in missing {
            let data = match tokio::fs::read(dir.join(name)).await {
                Ok(data) => Bytes::from(data),
                // Expired locally too: it leaves the playlist next.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    tracing::warn!(%stream, name, %err, "HLS file not read to catch up");
                    outcome = Put::Failed;
                    continue;
                }
            };
            match self.put(self.path(stream, name), &[data], true).await {
                Put::Stored => {
                    self.metrics.recovered.inc();
                    self.metrics.count("media", true);
                }
                Put::Failed => {
                    self.metrics.count("media", false);
                    outcome = Put::Failed;
                }
                Put::Fenced => return Put::Fenced,
            }
        }
        outcome
    }

    /// Deletes `paths` in bulk requests (one per 1000 on S3); a missing object is fine.
    async fn delete(&self, stream: &str, paths: Vec<Path>) {
        if paths.is_empty() {
            return;
        }
        let locations = futures_util::stream::iter(paths.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.store.delete_stream(locations).collect().await;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                    self.metrics.count("delete", true);
                }
                Err(err) => {
                    self.metrics.count("delete", false);
                    tracing::warn!(%stream, %err, "expired HLS object not deleted");
                }
            }
        }
    }

    /// Before `stream`'s first upload in a presentation: why another writer has it, if it does
    /// (see the module's doc: the node set's word first, else what is stored); otherwise what
    /// is stored of it is deleted, an earlier presentation's.
    async fn prepare(&self, stream: &str) -> object_store::Result<Option<&'static str>> {
        let claim = match &self.owners {
            Some(owners) => owners.claim(stream).await,
            None => Claim::Unknown,
        };
        if claim == Claim::Theirs {
            return Ok(Some("another node owns the stream in the cluster"));
        }
        let dir = self.path(stream, "");
        let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        let ours = |path: &Path| {
            // Directly in the stream's folder: a ladder's renditions have folders of their own.
            path.prefix_match(&dir).is_some_and(|mut rest| {
                rest.next().is_some_and(|name| {
                    HlsFile::parse(name.as_ref()).is_some()
                        || HlsFile::is_old_part_name(name.as_ref())
                }) && rest.next().is_none()
            })
        };
        // A writer touches its folder at least once per segment: anything written recently is
        // a live writer's, unless its playlist says it ended.
        let now = SystemTime::now();
        let recent = claim == Claim::Unknown
            && listed.iter().any(|meta| {
                ours(&meta.location)
                    && now
                        .duration_since(meta.last_modified.into())
                        .unwrap_or_default()
                        < LIVE_FOR
            });
        if recent {
            let index = self.path(stream, MEDIA_PLAYLIST_URI);
            let ended = match self.store.get(&index).await {
                Ok(playlist) => playlist
                    .bytes()
                    .await?
                    .split(|&b| b == b'\n')
                    .any(|line| line.trim_ascii() == b"#EXT-X-ENDLIST"),
                Err(object_store::Error::NotFound { .. }) => false,
                Err(err) => return Err(err),
            };
            if !ended {
                return Ok(Some("a live playlist is stored"));
            }
        }
        let stale: Vec<_> = listed
            .into_iter()
            .map(|meta| meta.location)
            .filter(ours)
            .collect();
        if !stale.is_empty() {
            tracing::info!(%stream, objects = stale.len(), "stale HLS objects removed from storage");
        }
        self.delete(stream, stale).await;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    /// The local folder of streams that never fall behind here.
    const NOWHERE: &str = "/nonexistent";

    fn write(name: &str) -> FileOp {
        FileOp::Write(name.to_owned(), vec![Bytes::from(name.to_owned())])
    }

    fn live_playlist() -> FileOp {
        FileOp::Write(
            "index.m3u8".to_owned(),
            vec![Bytes::from_static(b"#EXTM3U\n#EXTINF:1,\nseg1.m4s\n")],
        )
    }

    fn metrics() -> S3Metrics {
        crate::metrics::Metrics::default().hls_s3()
    }

    fn count(metrics: &S3Metrics, kind: &'static str, result: &'static str) -> u64 {
        metrics
            .uploads
            .get_or_create(&UploadLabel { kind, result })
            .get()
    }

    /// Waits (a few seconds at most) until the upload tasks have done what `done` wants.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("uploads not done in time");
    }

    async fn stored(store: &InMemory, key: &str) -> Option<object_store::GetResult> {
        store.get(&Path::from(key)).await.ok()
    }

    #[tokio::test]
    async fn media_is_created_immutable_then_playlists_then_expired_deleted() {
        let (store, metrics, sink) = plain_sink("live", 8);
        let stream: Arc<str> = "cam".into();
        sink.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("init5.mp4"), write("seg5.m4s"), live_playlist()],
        );
        sink.offer(
            &stream,
            NOWHERE.as_ref(),
            &[
                write("seg6.m4s"),
                live_playlist(),
                FileOp::Remove("seg5.m4s".into()),
            ],
        );
        until(|| count(&metrics, "delete", "ok") == 1).await;
        let seg = stored(&store, "live/cam/seg6.m4s").await.unwrap();
        assert_eq!(
            seg.attributes
                .get(&Attribute::CacheControl)
                .map(|v| v.as_ref()),
            Some(IMMUTABLE)
        );
        let index = stored(&store, "live/cam/index.m3u8").await.unwrap();
        assert_eq!(
            index
                .attributes
                .get(&Attribute::CacheControl)
                .map(|v| v.as_ref()),
            Some(PLAYLIST)
        );
        assert!(stored(&store, "live/cam/init5.mp4").await.is_some());
        assert!(stored(&store, "live/cam/seg5.m4s").await.is_none());
        assert_eq!(count(&metrics, "media", "ok"), 3);
        assert_eq!(count(&metrics, "playlist", "ok"), 2);
        assert_eq!(metrics.fenced.get(), 0);
    }

    /// A media object already stored is another writer's (names are never reused): the stream
    /// is fenced, and the playlist of the batch (which comes after its media) is never stored.
    #[tokio::test]
    async fn a_second_writer_of_a_name_is_fenced_by_412() {
        let (store, metrics, sink) = plain_sink("", 8);
        let stream: Arc<str> = "cam".into();
        sink.offer(&stream, NOWHERE.as_ref(), &[write("seg7.m4s")]);
        until(|| count(&metrics, "media", "ok") == 1).await;
        store
            .put(
                &Path::from("cam/seg8.m4s"),
                Bytes::from_static(b"theirs").into(),
            )
            .await
            .unwrap();
        sink.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg8.m4s"), live_playlist()],
        );
        sink.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg9.m4s"), live_playlist()],
        );
        until(|| metrics.fenced.get() == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(stored(&store, "cam/index.m3u8").await.is_none());
        assert!(stored(&store, "cam/seg9.m4s").await.is_none());
        let seg = stored(&store, "cam/seg8.m4s").await.unwrap();
        assert_eq!(seg.bytes().await.unwrap(), "theirs");

        // Once its presentation ends here, the node tries again (and is fenced again: the
        // object is still the other writer's).
        sink.ended(&stream);
        sink.offer(&stream, NOWHERE.as_ref(), &[write("seg8.m4s")]);
        until(|| metrics.fenced.get() == 2).await;
    }

    /// Two writers that started together (both found the folder empty, and their names
    /// differ): the one whose playlist the other overwrote gets 412 on its next playlist PUT.
    #[tokio::test]
    async fn a_playlist_overwritten_by_another_writer_fences() {
        let store = Arc::new(InMemory::new());
        let (a_metrics, b_metrics) = (metrics(), metrics());
        let a = ObjectSink::new(store.clone(), "", 8, a_metrics.clone(), None);
        let b = ObjectSink::new(store.clone(), "", 8, b_metrics.clone(), None);
        let stream: Arc<str> = "cam".into();
        let playlist = |body: &'static str| {
            FileOp::Write(
                "index.m3u8".into(),
                vec![Bytes::from_static(body.as_bytes())],
            )
        };
        a.offer(&stream, NOWHERE.as_ref(), &[]);
        b.offer(&stream, NOWHERE.as_ref(), &[]);
        // Both look at the empty folder before either writes (the store answers at once).
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg1.m4s"), playlist("a1")],
        );
        until(|| count(&a_metrics, "playlist", "ok") == 1).await;
        b.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg2.m4s"), playlist("b1")],
        );
        until(|| count(&b_metrics, "playlist", "ok") == 1).await;
        a.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg3.m4s"), playlist("a2")],
        );
        until(|| a_metrics.fenced.get() == 1).await;
        b.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg4.m4s"), playlist("b2")],
        );
        until(|| count(&b_metrics, "playlist", "ok") == 2).await;
        let index = stored(&store, "cam/index.m3u8").await.unwrap();
        assert_eq!(index.bytes().await.unwrap(), "b2");
        assert_eq!(b_metrics.fenced.get(), 0);
    }

    /// A live playlist stored by another node fences before anything is uploaded; an ended
    /// one is an earlier presentation, whose objects are removed (ours only).
    #[tokio::test]
    async fn a_stored_live_playlist_fences_and_an_ended_one_is_cleaned_up() {
        let store = Arc::new(InMemory::new());
        let put = |key: &str, body: &'static [u8]| {
            let store = store.clone();
            let key = Path::from(key);
            async move {
                store
                    .put(&key, Bytes::from_static(body).into())
                    .await
                    .unwrap()
            }
        };
        put("p/live/index.m3u8", b"#EXTM3U\n#EXTINF:1,\nseg1.m4s\n").await;
        put(
            "p/old/index.m3u8",
            b"#EXTM3U\n#EXTINF:1,\nseg1.m4s\n#EXT-X-ENDLIST\n",
        )
        .await;
        put("p/old/seg1.m4s", b"x").await;
        put("p/old/notes.txt", b"keep").await;
        put("p/old/v0/seg1.m4s", b"a rendition's").await;

        let metrics = metrics();
        let sink = ObjectSink::new(store.clone(), "p", 8, metrics.clone(), None);
        sink.offer(&"live".into(), NOWHERE.as_ref(), &[write("seg9.m4s")]);
        sink.offer(&"old".into(), NOWHERE.as_ref(), &[write("seg9.m4s")]);
        until(|| metrics.fenced.get() == 1 && count(&metrics, "media", "ok") == 1).await;
        assert!(stored(&store, "p/live/seg9.m4s").await.is_none());
        assert!(stored(&store, "p/old/seg9.m4s").await.is_some());
        assert!(stored(&store, "p/old/seg1.m4s").await.is_none());
        assert!(stored(&store, "p/old/index.m3u8").await.is_none());
        assert!(stored(&store, "p/old/notes.txt").await.is_some());
        assert!(stored(&store, "p/old/v0/seg1.m4s").await.is_some());
    }

    /// A node set that always says the same.
    #[derive(Debug)]
    struct Says(Claim);

    impl Owners for Says {
        fn claim<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Claim> {
            Box::pin(std::future::ready(self.0))
        }
    }

    /// A sink on a store of its own, with no node set: the store, its metrics, the sink.
    fn plain_sink(prefix: &str, queue: usize) -> (Arc<InMemory>, S3Metrics, ObjectSink) {
        let store = Arc::new(InMemory::new());
        let metrics = metrics();
        let sink = ObjectSink::new(store.clone(), prefix, queue, metrics.clone(), None);
        (store, metrics, sink)
    }

    /// A segment and the playlist.
    fn with_playlist(segment: &str) -> [FileOp; 2] {
        [write(segment), live_playlist()]
    }

    /// A sink on `store` whose node set always says `claim`.
    fn clustered(store: &Arc<InMemory>, metrics: &S3Metrics, claim: Claim) -> ObjectSink {
        let owners: Arc<dyn Owners> = Arc::new(Says(claim));
        ObjectSink::new(store.clone(), "", 8, metrics.clone(), Some(owners))
    }

    /// Clustered: the owner takes a folder that looks live over (a node that crashed or paused
    /// wrote it), and a node the cluster says is not the owner uploads nothing. The paused
    /// writer, back, is fenced by its next playlist PUT (its playlist is gone) and deletes the
    /// media of that batch.
    #[tokio::test]
    async fn the_owner_takes_a_live_folder_over_and_the_paused_writer_is_fenced() {
        let store = Arc::new(InMemory::new());
        let (paused, owner, other) = (metrics(), metrics(), metrics());
        let stream: Arc<str> = "cam".into();
        let a = clustered(&store, &paused, Claim::Ours);
        a.offer(&stream, NOWHERE.as_ref(), &with_playlist("seg1.m4s"));
        until(|| count(&paused, "playlist", "ok") == 1).await;

        let b = clustered(&store, &owner, Claim::Ours);
        b.offer(&stream, NOWHERE.as_ref(), &[write("seg7.m4s")]);
        until(|| count(&owner, "media", "ok") == 1).await;
        assert!(stored(&store, "cam/seg1.m4s").await.is_none());
        assert!(stored(&store, "cam/index.m3u8").await.is_none());

        a.offer(&stream, NOWHERE.as_ref(), &with_playlist("seg2.m4s"));
        until(|| paused.fenced.get() == 1).await;
        assert!(stored(&store, "cam/seg2.m4s").await.is_none());
        assert!(stored(&store, "cam/index.m3u8").await.is_none());
        b.offer(&stream, NOWHERE.as_ref(), &with_playlist("seg8.m4s"));
        until(|| count(&owner, "playlist", "ok") == 1).await;
        assert_eq!(owner.fenced.get(), 0);

        let c = clustered(&store, &other, Claim::Theirs);
        c.offer(&stream, NOWHERE.as_ref(), &with_playlist("seg9.m4s"));
        until(|| other.fenced.get() == 1).await;
        assert!(stored(&store, "cam/seg9.m4s").await.is_none());
        assert!(stored(&store, "cam/seg8.m4s").await.is_some());
    }

    /// Offering never waits: past the queue's room, batches are dropped and counted. The
    /// stream's next playlist is stored only after what it lists that the dropped batches
    /// held, read from the local folder (what expired there is skipped).
    #[tokio::test]
    async fn a_full_queue_drops_never_blocks_and_catches_up_from_disk() {
        let (store, metrics, sink) = plain_sink("p", 2);
        let stream: Arc<str> = "cam".into();
        let dir = bridge_proto::testdata::temp_dir("s3-catch-up");
        // As the HLS output does: every batch is written to the folder too.
        let offer = |ops: &[FileOp]| {
            for op in ops {
                if let FileOp::Write(name, data) = op {
                    std::fs::write(dir.join(name), data.concat()).unwrap();
                }
            }
            sink.offer(&stream, &dir, ops);
        };
        // The current-thread runtime runs no upload task until this one awaits.
        for n in 0..5 {
            offer(&[write(&format!("seg{n}.m4s"))]);
        }
        assert_eq!(metrics.dropped.get(), 3);
        until(|| count(&metrics, "media", "ok") == 2).await;
        std::fs::remove_file(dir.join("seg2.m4s")).unwrap();
        let listing = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1,\nseg1.m4s\n#EXTINF:1,\n\
            seg2.m4s\n#EXTINF:1,\nseg3.m4s\n#EXTINF:1,\nseg4.m4s\n#EXTINF:1,\nseg5.m4s\n";
        offer(&[
            write("seg5.m4s"),
            FileOp::Write(
                "index.m3u8".into(),
                vec![Bytes::from_static(listing.as_bytes())],
            ),
        ]);
        until(|| count(&metrics, "playlist", "ok") == 1).await;
        for n in [0, 1, 3, 4, 5] {
            let key = format!("p/cam/seg{n}.m4s");
            let object = stored(&store, &key).await.unwrap();
            assert_eq!(
                object.bytes().await.unwrap(),
                format!("seg{n}.m4s"),
                "{key}"
            );
        }
        assert!(stored(&store, "p/cam/seg2.m4s").await.is_none());
        assert_eq!(metrics.recovered.get(), 2);
        assert_eq!(count(&metrics, "media", "failed"), 0);
        // Caught up: the next playlist lists nothing missing and asks nothing of the folder.
        std::fs::remove_dir_all(&dir).unwrap();
        sink.offer(
            &stream,
            NOWHERE.as_ref(),
            &[write("seg6.m4s"), live_playlist()],
        );
        until(|| count(&metrics, "playlist", "ok") == 2).await;
        assert_eq!(metrics.recovered.get(), 2);
    }

    /// The last batch of a presentation (its playlist with `EXT-X-ENDLIST`) dropped on a full
    /// queue: the end, which waits for room, stores the ended playlist from the local folder,
    /// with what it lists.
    #[tokio::test]
    async fn an_ended_playlist_dropped_is_stored_at_the_end() {
        let (store, metrics, sink) = plain_sink("", 1);
        let stream: Arc<str> = "cam".into();
        let dir = bridge_proto::testdata::temp_dir("s3-end");
        let ended = "#EXTM3U\n#EXTINF:1,\nseg1.m4s\n#EXTINF:1,\nseg2.m4s\n#EXT-X-ENDLIST\n";
        for (name, data) in [("seg1.m4s", "seg1.m4s"), ("seg2.m4s", "seg2.m4s")] {
            std::fs::write(dir.join(name), data).unwrap();
        }
        std::fs::write(dir.join("index.m3u8"), ended).unwrap();
        sink.offer(&stream, &dir, &[write("seg1.m4s"), live_playlist()]);
        let last = FileOp::Write(
            "index.m3u8".into(),
            vec![Bytes::from_static(ended.as_bytes())],
        );
        sink.offer(&stream, &dir, &[write("seg2.m4s"), last]);
        assert_eq!(metrics.dropped.get(), 1);
        sink.ended(&stream);
        until(|| count(&metrics, "playlist", "ok") == 2).await;
        let index = stored(&store, "cam/index.m3u8").await.unwrap();
        assert_eq!(index.bytes().await.unwrap(), ended);
        assert!(stored(&store, "cam/seg2.m4s").await.is_some());
        assert_eq!(metrics.recovered.get(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Nothing configured: offering is free and does nothing.
    #[tokio::test]
    async fn without_storage_nothing_is_queued() {
        let sink = ObjectSink::default();
        sink.offer(&"cam".into(), NOWHERE.as_ref(), &[write("seg1.m4s")]);
        sink.ended(&"cam".into());
        sink.flush(Duration::from_secs(1)).await;
    }

    /// At shutdown, what was queued is stored before the flush returns.
    #[tokio::test]
    async fn a_flush_waits_for_what_is_queued() {
        let store = Arc::new(InMemory::new());
        let sink = ObjectSink::new(store.clone(), "", 8, metrics(), None);
        for stream in ["a", "b", "c", "d", "e"] {
            sink.offer(
                &stream.into(),
                NOWHERE.as_ref(),
                &[write("seg1.m4s"), live_playlist()],
            );
        }
        sink.flush(Duration::from_secs(5)).await;
        for stream in ["a", "b", "c", "d", "e"] {
            assert!(
                stored(&store, &format!("{stream}/index.m3u8"))
                    .await
                    .is_some()
            );
        }
    }
}
