//! The cluster's Redis IO: this node's registration, the keys of the streams it owns, and a
//! cached snapshot of the node set. Decisions are [`super::route_post`]'s.
//!
//! Keys (all with a TTL, so a node that dies leaves nothing behind for longer than it):
//! - `whip-bridge:node:<id>`: the node's [`NodeLoad`] as JSON, set every tick;
//! - `whip-bridge:stream:<name>`: the owner's [`Owner::value`], claimed (set if absent) and
//!   refreshed by one script that compares the value first, and deleted by one that does too:
//!   a node that paused past the TTL finds its key taken over and neither refreshes nor deletes
//!   it (it ends its own session of that stream instead).
//!
//! A POST never waits on Redis longer than [`LOOKUP_TIMEOUT`], and not at all while the last
//! tick found Redis down: it then runs on the `--cluster-redis-down` policy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{NodeLoad, Owner, PostView, RedirectReason, Route};
use crate::app::App;
use crate::config::ClusterSettings;
use crate::whip::liveness::EndReason;

/// Longest a request handler waits for Redis (the owner of a stream).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// How often, at most, the node publishes its load and reads the others' (stream keys are
/// refreshed every TTL / 3): a node balancing new streams by loads seconds old sends a burst
/// to the same node. Measured: with a 3 s TTL, reading every 1 s left the entry node of 600
/// sessions 18 % over its share.
const LOAD_PERIOD: Duration = Duration::from_millis(250);

const PREFIX: &str = "whip-bridge:";

/// Claim or refresh: set the key if absent, extend it if it holds our value; 1 if ours now, 0
/// if another node's.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

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

    /// Where a POST for `stream` goes (see [`super::route_post`]); counts the redirect.
    pub async fn route_post(&self, app: &App, stream: &str, routed: bool) -> Route {
        let owner = self.owner(stream).await;
        let me = self.load(app, 0.0);
        let mut nodes = lock(&self.nodes);
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
        route
    }

    /// Claims `stream` for this node (a new session on it), in the background.
    pub fn claim(self: &Arc<Self>, stream: &str) {
        let (this, stream) = (self.clone(), stream.to_owned());
        tokio::spawn(async move {
            if let Err(err) = this.claim_now(&stream).await {
                tracing::debug!(%stream, %err, "claim failed; the next tick retries");
            }
        });
    }

    async fn claim_now(&self, stream: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let ours: i64 = self
            .claim
            .key(stream_key(stream))
            .arg(self.owner_value())
            .arg(ttl_ms(self.settings.ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(ours == 1)
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
            sessions: app.session_count() as u64,
            publishers: app.stream_names().len() as u64,
            cpu,
            draining: app.is_draining(),
        }
    }

    /// Until aborted: registers this node with its load and reads the node set every
    /// [`LOAD_PERIOD`] (or `ttl / 3` if shorter), and every `ttl / 3` claims or refreshes its
    /// streams' keys (ending the local sessions of a stream another node took meanwhile). Redis down: logged once, `bridge_cluster_redis_up` 0, the node goes on with
    /// what it has; back up: the next tick registers it and its streams again.
    pub async fn run(self: Arc<Self>, app: Arc<App>) {
        let keys_period = self.settings.ttl / 3;
        let mut tick = tokio::time::interval(keys_period.min(LOAD_PERIOD));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuMeter::new();
        let mut keys_due = Instant::now();
        loop {
            tick.tick().await;
            let load = self.load(&app, cpu.share());
            let keys = Instant::now() >= keys_due;
            let outcome = tokio::time::timeout(keys_period, self.refresh(&app, &load, keys));
            let up = match outcome.await {
                Ok(Ok(())) => {
                    if keys {
                        keys_due = Instant::now() + keys_period;
                    }
                    true
                }
                Ok(Err(err)) => {
                    if self.up.load(Ordering::Relaxed) {
                        tracing::warn!(%err, "Redis unreachable: serving what this node has");
                    }
                    false
                }
                Err(_) => {
                    if self.up.load(Ordering::Relaxed) {
                        tracing::warn!("Redis did not answer in time: serving what this node has");
                    }
                    false
                }
            };
            if up && !self.up.load(Ordering::Relaxed) {
                tracing::info!(node = %self.settings.node_url, "registered in the cluster");
            }
            self.up.store(up, Ordering::Relaxed);
            app.metrics.cluster_redis_up.set(i64::from(up));
        }
    }

    async fn refresh(&self, app: &App, load: &NodeLoad, keys: bool) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(load).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encoding", e.to_string()))
        })?;
        let () = conn
            .pset_ex(node_key(&self.id), json, ttl_ms(self.settings.ttl))
            .await?;
        let streams = if keys { app.stream_names() } else { Vec::new() };
        for stream in streams {
            if !self.claim_now(&stream).await? {
                tracing::warn!(%stream, "the stream's key belongs to another node now: ending it here");
                app.end_stream(&stream, EndReason::Takeover);
            }
        }
        let mut keys = Vec::new();
        {
            let mut iter = conn
                .scan_match::<_, String>(format!("{PREFIX}node:*"))
                .await?;
            while let Some(key) = iter.next_item().await {
                keys.push(key?);
            }
        }
        let nodes: Vec<NodeLoad> = if keys.is_empty() {
            Vec::new()
        } else {
            let values: Vec<Option<String>> = conn.mget(&keys).await?;
            values
                .iter()
                .flatten()
                .filter_map(|v| serde_json::from_str(v).ok())
                .collect()
        };
        app.metrics.cluster_nodes.set(nodes.len() as i64);
        *lock(&self.nodes) = nodes;
        Ok(())
    }

    /// Removes this node's registration (at shutdown, after its sessions ended and released
    /// their streams), bounded by [`LOOKUP_TIMEOUT`].
    pub async fn leave(&self) {
        let mut conn = self.conn.clone();
        let del = conn.del::<_, ()>(node_key(&self.id));
        if !matches!(tokio::time::timeout(LOOKUP_TIMEOUT, del).await, Ok(Ok(()))) {
            tracing::debug!("could not deregister; the key expires within the TTL");
        }
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
