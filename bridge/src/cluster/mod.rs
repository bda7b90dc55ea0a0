//! Several bridges as one: the node set and the stream owners live in Redis (`--cluster-redis`),
//! and a WHIP POST that belongs elsewhere is answered `307` (RFC 9725 §4.5).
//!
//! This module is PURE: what a node publishes about itself ([`NodeLoad`]), what a stream key
//! holds ([`Owner`]), and the routing decision ([`route_post`]) over a snapshot of the node set.
//! [`redis`] does the IO: registration, stream keys, the cached snapshot.

pub mod redis;

use serde::{Deserialize, Serialize};

pub use self::redis::Cluster;

/// What a node registers about itself, refreshed with a TTL: a node whose key expired is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The node's random id for this run (also its token on the stream keys it owns).
    pub id: String,
    /// Its `--node-url`: where other nodes and clients reach it.
    pub url: String,
    /// Live WHIP sessions, and set-ups under way.
    pub sessions: u64,
    /// Streams it publishes (sessions less those of the same stream).
    pub publishers: u64,
    /// Share of one CPU core the process used since the last registration (1.0: a whole core).
    pub cpu: f64,
    /// It takes no new sessions.
    pub draining: bool,
}

/// The value of a stream key: the owner's token (its node id) and URL, so that a redirect needs
/// no second look-up and a compare on the whole value is a compare on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning node's id.
    pub id: String,
    /// Its URL.
    pub url: String,
}

impl Owner {
    /// The key's value: `<id> <url>` (ids are hex, so the first space splits them).
    pub fn value(&self) -> String {
        format!("{} {}", self.id, self.url)
    }

    /// Reads a key's value; `None` for anything this bridge did not write.
    pub fn parse(value: &str) -> Option<Self> {
        let (id, url) = value.split_once(' ')?;
        (!id.is_empty() && !url.is_empty()).then(|| Self {
            id: id.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// What a node does when Redis cannot be reached (`--cluster-redis-down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RedisDown {
    /// Admit new sessions here as a lone bridge would (no owner check, no balancing).
    #[default]
    Local,
    /// Refuse new sessions with 503 + Retry-After until Redis answers again.
    Refuse,
}

/// Why a request was sent elsewhere: `bridge_whip_redirects_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectReason {
    /// The stream is live on another node (a takeover happens there).
    Owner,
    /// This node carries more than the least-loaded live node.
    Load,
    /// This node drains.
    Draining,
    /// An HLS request for a stream another node makes (counted with the WHIP redirects: one
    /// place to see what this node sends elsewhere).
    HlsOwner,
}

impl RedirectReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Load => "load",
            Self::Draining => "draining",
            Self::HlsOwner => "hls_owner",
        }
    }
}

/// Why a POST was refused rather than taken or redirected (503 + Retry-After).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Redis is down and the policy is [`RedisDown::Refuse`].
    RedisDown,
    /// This node drains and no other live node takes new sessions.
    Draining,
}

/// Where a WHIP POST goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Set the session up here.
    Here,
    /// `307` to this node's base URL.
    Redirect {
        /// The node's URL (`--node-url` of the target).
        url: String,
        /// Why.
        reason: RedirectReason,
    },
    /// `503` + Retry-After.
    Refuse(RefuseReason),
}

/// What a POST's routing is decided on.
#[derive(Debug, Clone, Copy)]
pub struct PostView<'a> {
    /// This node, with its live counts.
    pub me: &'a NodeLoad,
    /// The live nodes as last read from Redis (this node may be among them: it is ignored there).
    pub nodes: &'a [NodeLoad],
    /// The stream's owner, if its key exists (`None` also when Redis could not say).
    pub owner: Option<&'a Owner>,
    /// Redis answered the owner look-up and the last refresh.
    pub redis_up: bool,
    /// The policy while it does not.
    pub redis_down: RedisDown,
    /// The POST was already redirected once by a node's load rule: it is not balanced again
    /// (two nodes with stale views of each other would otherwise send it back and forth).
    pub routed: bool,
}

/// Decides where a POST goes.
///
/// - Redis down: the policy (this node's own drain still refuses).
/// - The stream is owned by another node: there (the takeover happens where the stream lives).
/// - The stream is owned here: here, unless draining (then 503 as a lone bridge: sending it
///   elsewhere would only come back, the key being this node's).
/// - A new stream on a draining node: the least-loaded other live node, else 503.
/// - A new stream on a node with more sessions than the least-loaded other live node (not
///   draining): there, unless the POST was redirected already. Ties stay here, so a POST that
///   meets equal loads costs no round trip, and one entry node hands streams round in turn.
pub fn route_post(view: &PostView<'_>) -> Route {
    let draining = view.me.draining;
    if !view.redis_up {
        return match (draining, view.redis_down) {
            (true, _) => Route::Refuse(RefuseReason::Draining),
            (false, RedisDown::Local) => Route::Here,
            (false, RedisDown::Refuse) => Route::Refuse(RefuseReason::RedisDown),
        };
    }
    match view.owner {
        Some(owner) if owner.id != view.me.id => {
            return Route::Redirect {
                url: owner.url.clone(),
                reason: RedirectReason::Owner,
            };
        }
        Some(_) if draining => return Route::Refuse(RefuseReason::Draining),
        Some(_) => return Route::Here,
        None => {}
    }
    let least = view
        .nodes
        .iter()
        .filter(|n| n.id != view.me.id && !n.draining)
        .min_by(|a, b| a.sessions.cmp(&b.sessions).then_with(|| a.id.cmp(&b.id)));
    match least {
        Some(node) if draining => Route::Redirect {
            url: node.url.clone(),
            reason: RedirectReason::Draining,
        },
        None if draining => Route::Refuse(RefuseReason::Draining),
        Some(node) if !view.routed && view.me.sessions > node.sessions => Route::Redirect {
            url: node.url.clone(),
            reason: RedirectReason::Load,
        },
        _ => Route::Here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sessions: u64, draining: bool) -> NodeLoad {
        NodeLoad {
            id: id.into(),
            url: format!("http://{id}"),
            sessions,
            publishers: sessions,
            cpu: 0.0,
            draining,
        }
    }

    fn owner(id: &str) -> Owner {
        Owner {
            id: id.into(),
            url: format!("http://{id}"),
        }
    }

    fn to(id: &str, reason: RedirectReason) -> Route {
        Route::Redirect {
            url: format!("http://{id}"),
            reason,
        }
    }

    /// One row: my sessions, draining, the other nodes, the owner, Redis up, the policy,
    /// routed already, and where the POST goes.
    type Case = (
        u64,
        bool,
        Vec<NodeLoad>,
        Option<Owner>,
        bool,
        RedisDown,
        bool,
        Route,
    );

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        use RedirectReason::{Draining, Load, Owner as Own};
        use RedisDown::{Local, Refuse};
        let refused = |why| Route::Refuse(why);
        vec![
            // A lone node (only itself in the set) keeps everything.
            (5, false, vec![], None, true, Local, false, Route::Here),
            // The owner's node, whatever the loads, routed or not.
            (0, false, vec![node("b", 9, false)], Some(owner("b")), true, Local, false, to("b", Own)),
            (0, false, vec![node("b", 9, false)], Some(owner("b")), true, Local, true, to("b", Own)),
            // Owned here: here; draining: refused (a redirect would come back).
            (9, false, vec![node("b", 0, false)], Some(owner("a")), true, Local, false, Route::Here),
            (9, true, vec![node("b", 0, false)], Some(owner("a")), true, Local, false, refused(RefuseReason::Draining)),
            // New stream: ties stay, more goes to the least loaded...
            (3, false, vec![node("b", 3, false), node("c", 3, false)], None, true, Local, false, Route::Here),
            (4, false, vec![node("b", 3, false), node("c", 2, false)], None, true, Local, false, to("c", Load)),
            // ... but never a second time.
            (4, false, vec![node("b", 3, false), node("c", 2, false)], None, true, Local, true, Route::Here),
            // Draining nodes take nothing new.
            (4, false, vec![node("b", 0, true), node("c", 2, false)], None, true, Local, false, to("c", Load)),
            (4, false, vec![node("b", 0, true)], None, true, Local, false, Route::Here),
            // Draining here: elsewhere, even when routed, or 503 when nobody else takes it.
            (0, true, vec![node("b", 7, false)], None, true, Local, true, to("b", Draining)),
            (0, true, vec![node("b", 7, true)], None, true, Local, false, refused(RefuseReason::Draining)),
            // This node's own entry in the snapshot is ignored.
            (4, false, vec![node("a", 0, false)], None, true, Local, false, Route::Here),
            // Redis down: the policy, whatever the (stale) snapshot says.
            (9, false, vec![node("b", 0, false)], None, false, Local, false, Route::Here),
            (0, false, vec![], None, false, Refuse, false, refused(RefuseReason::RedisDown)),
            (0, true, vec![], None, false, Local, false, refused(RefuseReason::Draining)),
        ]
    }

    #[test]
    fn the_table() {
        for (i, (sessions, draining, nodes, owner, up, policy, routed, want)) in
            cases().into_iter().enumerate()
        {
            let me = node("a", sessions, draining);
            let view = PostView {
                me: &me,
                nodes: &nodes,
                owner: owner.as_ref(),
                redis_up: up,
                redis_down: policy,
                routed,
            };
            assert_eq!(route_post(&view), want, "case {i}");
        }
    }

    #[test]
    fn owner_values_round_trip_and_foreign_ones_are_refused() {
        let o = owner("ab12");
        assert_eq!(Owner::parse(&o.value()), Some(o));
        assert_eq!(Owner::parse("nospace"), None);
        assert_eq!(Owner::parse(" http://x"), None);
    }
}
