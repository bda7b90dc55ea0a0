//! Three bridge binaries as one cluster on 127.0.0.1, .2 and .3, with one Redis of the test's
//! own (`--cluster-redis`): the proofs of "Running several nodes" in the README.
//!
//! 1. 600 `loadgen signal` sessions sent to one node spread to all three within ±20 %, with no
//!    violation of the WHIP rules (the 307s included).
//! 2. A second publisher of a live stream POSTed to another node is sent (307) to the owner and
//!    takes the stream over there (raw POSTs, then loadgen's publisher, which connects ICE on the
//!    owner); a session request, or an HLS request, that lands on the wrong node is sent on.
//! 3. A node killed with SIGKILL loses its keys within the TTL, and its stream can then be
//!    published on another node.
//! 4. Redis killed and started again mid-run: the nodes keep serving (a POST is answered at
//!    once, by the `local` policy), and register again, with their streams, once it is back.
//!
//!
//! And `rediss://`: a node that trusts the TLS Redis's CA registers; one that does not, never.
//!
//! Skipped without `redis-server` unless `BRIDGE_REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::binary::{Bridge, TOKEN, free_ports_on, http_request};
use common::proc::Scratch;
use common::redis::Redis;
use common::tls::TestCa;

/// The nodes' key TTL: short, so that a killed node's keys expire quickly here.
const TTL_MS: u64 = 3_000;
const SESSIONS: u64 = 600;
const OFFER: &str = include_str!("data/ffmpeg9-whip-offer.sdp");

struct Node {
    bridge: Bridge<'static>,
    url: String,
    http: SocketAddr,
    _scratch: Scratch,
}

impl Node {
    fn start(last_octet: u8, redis: &Redis) -> Self {
        Self::start_with(last_octet, &redis.url(), &[])
    }

    /// A node on the Redis at `redis_url`, with these environment variables.
    fn start_with(last_octet: u8, redis_url: &str, env: &[(&str, &str)]) -> Self {
        let ip = IpAddr::from([127, 0, 0, last_octet]);
        let (http, udp) = free_ports_on(ip);
        let scratch = Scratch::new();
        let url = format!("http://{http}");
        let extra = [
            "--cluster-redis",
            redis_url,
            "--node-url",
            &url,
            "--cluster-ttl-ms",
            &TTL_MS.to_string(),
            "--hls",
            "off",
            // The signalling sessions never connect ICE.
            "--connect-timeout-secs",
            "120",
            // Three debug builds and loadgen share two busy cores: set-ups wait their turn
            // rather than being refused (what is measured is where sessions go, not capacity).
            "--setup-queue-ms",
            "10000",
            "--max-loop-lag-ms",
            "0",
        ]
        .map(str::to_owned);
        let bridge = Bridge::start_with_env(&scratch, None, http, udp, Some(ip), &extra, env);
        Self {
            bridge,
            url,
            http,
            _scratch: scratch,
        }
    }

    fn gauge(&self, name: &str) -> f64 {
        self.bridge.metrics().sum(name, &[])
    }

    fn post(&self, path: &str) -> (u16, Option<String>) {
        let (code, head, body) =
            http_request(self.http, "POST", path, Some("application/sdp"), OFFER).unwrap();
        assert!(code != 500, "{body}\n{}", self.bridge.proc.log_tail(20));
        (code, location(&head))
    }

    fn request(&self, method: &str, path: &str) -> (u16, Option<String>) {
        let (code, head, _) = http_request(self.http, method, path, None, "").unwrap();
        (code, location(&head))
    }
}

fn location(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    })
}

/// Waits up to `within` for `done`.
fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Managed Redis services speak TLS only. The node checks the server's certificate against the
/// system's roots, which `SSL_CERT_FILE` replaces (as for OpenSSL-based tools): a node given
/// the Redis's CA registers, a node given another CA never does.
#[test]
fn a_node_registers_over_tls_and_checks_the_certificate() {
    let _serial = common::proc::serial();
    let scratch = Scratch::new();
    let ca = TestCa::new();
    let leaf = ca.leaf("redis", 1);
    let (chain, key) = (scratch.file("redis.pem"), scratch.file("redis.key"));
    std::fs::write(&chain, &leaf.chain_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let Some(redis) = Redis::start_tls(&scratch, &chain, &key) else {
        return;
    };
    let (trusted, other) = (scratch.file("ca.pem"), scratch.file("other-ca.pem"));
    std::fs::write(&trusted, &ca.pem).unwrap();
    std::fs::write(&other, TestCa::new().pem).unwrap();
    let url = redis.tls_url();
    let trusting = Node::start_with(1, &url, &[("SSL_CERT_FILE", trusted.to_str().unwrap())]);
    let doubting = Node::start_with(2, &url, &[("SSL_CERT_FILE", other.to_str().unwrap())]);
    wait_for(
        "the trusting node registered",
        Duration::from_secs(10),
        || {
            trusting.gauge("bridge_cluster_redis_up") == 1.0
                && redis.keys("whip-bridge:node:*").len() == 1
        },
    );
    // The other node has tried at every tick (250 ms) meanwhile, and a second longer.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(doubting.gauge("bridge_cluster_redis_up"), 0.0);
    assert_eq!(redis.keys("whip-bridge:node:*").len(), 1);
    assert_eq!(trusting.gauge("bridge_cluster_nodes"), 1.0);
    let log = doubting.bridge.proc.log_text();
    let why = log.lines().find(|l| l.contains("Redis unreachable"));
    assert!(why.is_some(), "{}", doubting.bridge.proc.log_tail(20));
    println!(
        "the node that does not trust the CA: {}",
        why.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_spread_take_over_lose_a_node_and_outlive_redis() {
    let redis_scratch = Scratch::new();
    let Some(mut redis) = Redis::start(&redis_scratch) else {
        return;
    };
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::start(i, &redis)).collect();
    let ttl = Duration::from_millis(TTL_MS);
    for node in &nodes {
        wait_for("three nodes registered", ttl * 2, || {
            node.gauge("bridge_cluster_nodes") == 3.0
        });
    }

    // 1. The spread, all sent to the first node.
    let url = format!("{}/whip/spread{{i}}", nodes[0].url);
    let args = [
        "--url",
        &url,
        "--sessions",
        &SESSIONS.to_string(),
        "--rate",
        "100",
        "--hold",
        "2s",
        "--timeout",
        "30s",
        "--token",
        TOKEN,
        "--seed",
        "9725",
    ];
    let report = common::inproc::signal_without_violations(&args).await;
    assert_eq!(
        report.sessions.ok, SESSIONS,
        "{:?}",
        report.failure_examples
    );
    let mean = SESSIONS as f64 / 3.0;
    for node in &nodes {
        let n = report.nodes.get(&node.url).copied().unwrap_or(0) as f64;
        assert!(
            (n - mean).abs() <= mean * 0.2,
            "{} got {n} of {SESSIONS}: {:?}",
            node.url,
            report.nodes
        );
    }
    for node in &nodes {
        wait_for(
            "the spread's sessions ended",
            Duration::from_secs(30),
            || node.gauge("bridge_sessions") == 0.0,
        );
    }

    // 2. A takeover POSTed to another node happens on the owner.
    let (code, first) = nodes[0].post("/whip/live");
    assert_eq!(code, 201);
    let first = first.unwrap();
    assert!(
        first.starts_with(&format!("{}/whip/live/", nodes[0].url)),
        "{first}"
    );
    wait_for("the stream key claimed", ttl, || {
        redis
            .cli(&["GET", "whip-bridge:stream:live"])
            .is_ok_and(|v| v.ends_with(&nodes[0].url))
    });
    let (code, to) = nodes[1].post("/whip/live");
    assert_eq!(code, 307);
    let to = to.unwrap();
    assert_eq!(to, format!("{}/whip/live?routed=1", nodes[0].url));
    let (code, second) = nodes[0].post(to.trim_start_matches(&nodes[0].url));
    assert_eq!(code, 201);
    let second = second.unwrap();
    let path = |url: &str| {
        url.split_once("/whip/")
            .map(|(_, p)| format!("/whip/{p}"))
            .unwrap()
    };
    assert_eq!(nodes[0].request("GET", &path(&first)).0, 404, "taken over");
    assert_eq!(nodes[0].request("GET", &path(&second)).0, 204);
    // The session's requests that land on another node are sent to the owner.
    assert_eq!(
        nodes[2].request("DELETE", &path(&second)),
        (307, Some(second.clone()))
    );
    let redirects = |node: &Node, reason| {
        node.bridge
            .metrics()
            .sum("bridge_whip_redirects_total", &[("reason", reason)])
    };
    assert!(redirects(&nodes[0], "load") > 0.0);
    assert_eq!(redirects(&nodes[1], "owner"), 1.0);
    assert_eq!(redirects(&nodes[2], "owner"), 1.0);
    // A real publisher (loadgen's) sent to another node follows the 307, takes the stream over
    // on the owner and connects there.
    let publisher = loadgen::Publisher::connect(loadgen::PublisherConfig {
        token: Some(TOKEN.into()),
        trickle: true,
        ..loadgen::PublisherConfig::new(format!("{}/whip/live", nodes[2].url))
    })
    .await
    .unwrap();
    assert!(
        publisher
            .session_url()
            .starts_with(&format!("{}/whip/live/", nodes[0].url)),
        "{}",
        publisher.session_url()
    );
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(nodes[0].request("GET", &path(&second)).0, 404, "taken over");
    assert_eq!(redirects(&nodes[2], "owner"), 2.0);
    // An HLS request for the stream on another node goes to the owner, path and query kept
    // (the owner, with no HLS output here, answers it itself: 404).
    let hls = "/hls/live/index.m3u8?_HLS_msn=5&_HLS_part=1";
    assert_eq!(
        nodes[1].request("GET", hls),
        (307, Some(format!("{}{hls}", nodes[0].url)))
    );
    assert_eq!(nodes[0].request("GET", hls).0, 404);
    assert_eq!(redirects(&nodes[1], "hls_owner"), 1.0);

    // 3. The owner killed: its keys expire within the TTL, and the stream moves.
    let node_keys = redis.keys("whip-bridge:node:*");
    assert_eq!(node_keys.len(), 3, "{node_keys:?}");
    nodes[0].bridge.proc.kill();
    let gone = wait_for("the killed node's keys expired", ttl * 2, || {
        redis.cli(&["EXISTS", "whip-bridge:stream:live"]).as_deref() == Ok("0")
            && redis.keys("whip-bridge:node:*").len() == 2
    });
    println!("a killed node's keys expired {gone:?} after SIGKILL (TTL {ttl:?})");
    assert!(gone <= ttl + Duration::from_millis(500), "{gone:?}");
    let (code, moved) = nodes[1].post("/whip/live");
    assert_eq!(code, 201);
    assert!(moved.unwrap().starts_with(&nodes[1].url));
    let node_a = nodes.remove(0);
    drop(node_a);

    // 4. Redis killed: the nodes keep serving, at once; back up, they register again.
    redis.stop();
    for node in &nodes {
        wait_for("Redis seen down", ttl, || {
            node.gauge("bridge_cluster_redis_up") == 0.0
        });
    }
    let asked = Instant::now();
    let (code, _) = nodes[0].post("/whip/offline");
    assert_eq!(code, 201, "the local policy admits without Redis");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    redis = Redis::start_on(&redis_scratch, redis.port);
    for node in &mut nodes {
        wait_for("registered again", ttl, || {
            node.gauge("bridge_cluster_redis_up") == 1.0
        });
        assert!(
            node.bridge.proc.exited().is_none(),
            "{}",
            node.bridge.proc.log_tail(20)
        );
    }
    wait_for("the streams claimed again", ttl, || {
        redis.keys("whip-bridge:node:*").len() == 2
            && ["live", "offline"].iter().all(|s| {
                redis
                    .cli(&["GET", &format!("whip-bridge:stream:{s}")])
                    .is_ok_and(|v| v.ends_with(&nodes[0].url))
            })
    });
}
