//! The cluster's Redis IO: this node's registration, the keys of the streams it owns, and a
//! cached snapshot of the node set. Decisions are [`super::route_post`]'s.
//!
//! Keys (all but one with a TTL, so a node that dies leaves nothing behind for longer than it):
//! - `whip-bridge:node:<id>`: the node's [`NodeLoad`] as JSON, set every tick, its id also in
//!   the set `whip-bridge:nodes` (no TTL: readers remove the ids whose keys are gone);
//! - `whip-bridge:stream:<name>`: the owner's [`Owner::value`], claimed (set if absent) and
//!   refreshed by one script that compares the value first, and deleted by one that does too:
//!   a node that paused past the TTL finds its key taken over and neither refreshes nor deletes
//!   it (it ends its own session of that stream instead).
//!
//! A POST never waits on Redis longer than [`LOOKUP_TIMEOUT`], and not at all while the last
//! tick found Redis down: it then runs on the `--cluster-redis-down` policy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{NodeLoad, Owner, PostView, RedirectReason, Route};
use crate::app::App;
use crate::config::ClusterSettings;
use crate::sink::s3::{Claim, Owners};
use crate::whip::liveness::EndReason;

/// Longest a request handler waits for Redis (the owner of a stream).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// How often, at most, the node publishes its load and reads the others' (stream keys are
/// refreshed every TTL / 3): a node balancing new streams by loads seconds old sends a burst
/// to the same node. Measured: with a 3 s TTL, reading every 1 s left the entry node of 600
/// sessions 18 % over its share.
const LOAD_PERIOD: Duration = Duration::from_millis(250);

const PREFIX: &str = "whip-bridge:";

/// The set of node ids whose keys to read: cheaper than a SCAN of the whole key space (every
/// stream has a key), and cleaned by its readers of the ids whose keys expired.
const NODES: &str = "whip-bridge:nodes";

/// Claim or refresh each key: set it if absent, extend it if it holds our value; per key 1 if
/// ours now, 0 if another node's. Many keys in one call: one round trip a tick, however many
/// streams (one call per stream took over a second for 200 streams on a busy machine, and
/// the node took that for Redis being down).
const CLAIM: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif not v then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// Streams claimed per script call: Redis runs nothing else during one.
const CLAIM_BATCH: usize = 500;

/// Delete the key only if it holds our value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// This node's handle on the cluster.
pub struct Cluster {
    settings: ClusterSettings,
    /// This run's id: the token on the stream keys it owns.
    id: String,
    conn: ConnectionManager,
    claim: redis::Script,
    release: redis::Script,
    /// The node set as last read (this node included), with the redirects made since added to
    /// the targets' counts: a snapshot is up to a tick old, and an entry node that sent every
    /// new stream of a tick to the same node would not balance.
    nodes: Mutex<Vec<NodeLoad>>,
    /// The last tick reached Redis.
    up: AtomicBool,
    /// POSTs routed here whose sessions are not set up yet ([`Admission`]s alive).
    admitting: AtomicUsize,
}

/// A POST routed to this node, counted in its load until dropped (once its session is set up,
/// or refused).
#[derive(Debug)]
pub struct Admission(Arc<Cluster>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("url", &self.settings.node_url)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn stream_key(stream: &str) -> String {
    format!("{PREFIX}stream:{stream}")
}

fn node_key(id: &str) -> String {
    format!("{PREFIX}node:{id}")
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// A handle that connects on first use (the bridge starts, and serves, with Redis down).
    pub fn new(settings: ClusterSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            settings,
            id: crate::ids::random_hex(),
            conn,
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            nodes: Mutex::default(),
            up: AtomicBool::new(false),
            admitting: AtomicUsize::new(0),
        })
    }

    /// This node's URL (`--node-url`), without a trailing slash.
    pub fn url(&self) -> &str {
        &self.settings.node_url
    }

    fn owner_value(&self) -> String {
        Owner {
            id: self.id.clone(),
            url: self.settings.node_url.clone(),
        }
        .value()
    }

    /// The stream's owner, if Redis says within [`LOOKUP_TIMEOUT`]; `Err` if it does not.
    pub async fn owner(&self, stream: &str) -> Result<Option<Owner>, ()> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(());
        }
        let mut conn = self.conn.clone();
        let get = conn.get::<_, Option<String>>(stream_key(stream));
        match tokio::time::timeout(LOOKUP_TIMEOUT, get).await {
            Ok(Ok(value)) => Ok(value.as_deref().and_then(Owner::parse)),
            Ok(Err(err)) => {
                tracing::debug!(%stream, %err, "owner look-up failed");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    /// Where a POST for `stream` goes (see [`super::route_post`]); counts the redirect, or,
    /// when it stays here, hands back the [`Admission`] to hold until its session is set up.
    pub async fn route_post(
        self: &Arc<Self>,
        app: &App,
        stream: &str,
        routed: bool,
    ) -> (Route, Option<Admission>) {
        let owner = self.owner(stream).await;
        // Decided and counted under the lock: concurrent POSTs see each other's decisions.
        let mut nodes = lock(&self.nodes);
        let me = self.load(app, 0.0);
        let route = super::route_post(&PostView {
            me: &me,
            nodes: &nodes,
            owner: owner.as_ref().ok().and_then(Option::as_ref),
            redis_up: owner.is_ok(),
            redis_down: self.settings.redis_down,
            routed,
        });
        if let Route::Redirect { url, reason } = &route
            && *reason != RedirectReason::Owner
            && let Some(node) = nodes.iter_mut().find(|n| &n.url == url)
        {
            node.sessions += 1;
        }
        // Counted before this call returns, so the next POST of a burst sees it.
        let admission = (route == Route::Here).then(|| {
            self.admitting.fetch_add(1, Ordering::Relaxed);
            Admission(self.clone())
        });
        (route, admission)
    }

    /// Claims `stream` for this node (a new session on it), in the background.
    pub fn claim(self: &Arc<Self>, stream: &str) {
        let (this, stream) = (self.clone(), stream.to_owned());
        tokio::spawn(async move {
            if let Err(err) = this.claim_now(std::slice::from_ref(&stream)).await {
                tracing::debug!(%stream, %err, "claim failed; the next tick retries");
            }
        });
    }

    /// Claims or refreshes these streams' keys; the streams another node owns.
    async fn claim_now(&self, streams: &[String]) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut lost = Vec::new();
        for batch in streams.chunks(CLAIM_BATCH) {
            let mut call = self.claim.prepare_invoke();
            for stream in batch {
                call.key(stream_key(stream));
            }
            let ours: Vec<i64> = call
                .arg(self.owner_value())
                .arg(ttl_ms(self.settings.ttl))
                .invoke_async(&mut conn)
                .await?;
            lost.extend(
                batch
                    .iter()
                    .zip(ours)
                    .filter(|(_, ours)| *ours != 1)
                    .map(|(stream, _)| stream.clone()),
            );
        }
        Ok(lost)
    }

    /// Gives `stream` up (its last session here ended), in the background. Must be called from
    /// within the runtime.
    pub fn release(self: &Arc<Self>, stream: &str) {
        let (this, stream) = (self.clone(), stream.to_owned());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside the runtime (never in the bridge): the key expires within the TTL.
            return;
        };
        runtime.spawn(async move {
            let mut conn = this.conn.clone();
            let released: redis::RedisResult<i64> = this
                .release
                .key(stream_key(&stream))
                .arg(this.owner_value())
                .invoke_async(&mut conn)
                .await;
            if let Err(err) = released {
                tracing::debug!(%stream, %err, "release failed; the key expires within the TTL");
            }
        });
    }

    /// This node's registration as of now.
    fn load(&self, app: &App, cpu: f64) -> NodeLoad {
        NodeLoad {
            id: self.id.clone(),
            url: self.settings.node_url.clone(),
            // POSTs taken and not yet sessions count: a node that has just taken a burst of
            // POSTs (each a session in a moment) must not take the rest of the burst too.
            sessions: (app.session_count() + self.admitting.load(Ordering::Relaxed)) as u64,
            publishers: app.stream_names().len() as u64,
            cpu,
            draining: app.is_draining(),
        }
    }

    /// Until aborted: registers this node with its load and reads the node set every 250 ms
    /// (or `ttl / 3` if shorter), and every `ttl / 3` claims or refreshes its streams' keys
    /// (ending the local sessions of a stream another node took meanwhile). Redis down: logged
    /// once, `bridge_cluster_redis_up` 0, the node goes on with what it has; back up: the next
    /// tick registers it and its streams again.
    pub async fn run(self: Arc<Self>, app: Arc<App>) {
        let keys_period = self.settings.ttl / 3;
        let mut tick = tokio::time::interval(keys_period.min(LOAD_PERIOD));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuMeter::new();
        let mut keys_due = Instant::now();
        // Logged when it changes, and at the first tick: a node that never reaches Redis (a
        // wrong address, a certificate it does not trust) says why once.
        let mut was_up = None;
        loop {
            tick.tick().await;
            let load = self.load(&app, cpu.share());
            let keys = Instant::now() >= keys_due;
            let outcome = tokio::time::timeout(keys_period, self.refresh(&app, &load, keys));
            let down = match outcome.await {
                Ok(Ok(())) => {
                    if keys {
                        keys_due = Instant::now() + keys_period;
                    }
                    None
                }
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some("no answer in time".to_owned()),
            };
            let up = down.is_none();
            if was_up != Some(up) {
                match down {
                    Some(err) => {
                        tracing::warn!(%err, "Redis unreachable: serving what this node has");
                    }
                    None => {
                        tracing::info!(node = %self.settings.node_url, "registered in the cluster");
                    }
                }
            }
            was_up = Some(up);
            self.up.store(up, Ordering::Relaxed);
            app.metrics.cluster_redis_up.set(i64::from(up));
        }
    }

    async fn refresh(&self, app: &App, load: &NodeLoad, keys: bool) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(load).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encoding", e.to_string()))
        })?;
        // The key first, then the id in the set: a reader never finds an id with no key yet.
        let () = redis::pipe()
            .pset_ex(node_key(&self.id), json, ttl_ms(self.settings.ttl))
            .ignore()
            .sadd(NODES, &self.id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        if keys {
            for stream in self.claim_now(&app.stream_names()).await? {
                tracing::warn!(%stream, "the stream's key belongs to another node now: ending it here");
                app.end_stream(&stream, EndReason::Takeover);
            }
        }
        let ids: Vec<String> = conn.smembers(NODES).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
            let values: Vec<Option<String>> = conn.mget(&keys).await?;
            let mut gone = Vec::new();
            for (id, value) in ids.iter().zip(values) {
                match value.as_deref().map(serde_json::from_str::<NodeLoad>) {
                    Some(Ok(node)) => nodes.push(node),
                    Some(Err(_)) => {}
                    // Its key expired: the node is gone (one that was only paused adds itself
                    // again at its next tick).
                    None => gone.push(id),
                }
            }
            if !gone.is_empty() {
                let () = conn.srem(NODES, gone).await?;
            }
        }
        app.metrics.cluster_nodes.set(nodes.len() as i64);
        *lock(&self.nodes) = nodes;
        Ok(())
    }

    /// Removes this node's registration (at shutdown, after its sessions ended and released
    /// their streams), bounded by [`LOOKUP_TIMEOUT`].
    pub async fn leave(&self) {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.del(node_key(&self.id))
            .ignore()
            .srem(NODES, &self.id)
            .ignore();
        let del = pipe.query_async::<()>(&mut conn);
        if !matches!(tokio::time::timeout(LOOKUP_TIMEOUT, del).await, Ok(Ok(()))) {
            tracing::debug!("could not deregister; the key expires within the TTL");
        }
    }
}

impl Owners for Cluster {
    fn claim<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            match self.owner(stream).await {
                Ok(Some(owner)) if owner.id == self.id => Claim::Ours,
                Ok(Some(_)) => Claim::Theirs,
                Ok(None) | Err(()) => Claim::Unknown,
            }
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The snapshot is replaced whole or one count bumped: a poisoned lock still holds a valid one.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's CPU share between two reads of `/proc/self/stat` (0 where it cannot be read).
struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    fn new() -> Self {
        Self { last: None }
    }

    fn share(&mut self) -> f64 {
        let now = Instant::now();
        let Some(seconds) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(crate::metrics::process::parse_stat)
            .map(|s| s.cpu_seconds())
        else {
            return 0.0;
        };
        let share = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    (seconds - before) / wall
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, seconds));
        share
    }
}
