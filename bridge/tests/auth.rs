//! Who may publish and read (`bridge::auth`), over real HTTP: the bridge in this process, the
//! loadgen publisher as the WHIP client, and the platform's side (an auth hook, a JWKS document)
//! as HTTP servers this test starts on loopback. JWT keys are made with the `openssl` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bridge::auth::StreamKeys;
use bridge::config::HlsAuth;
use common::inproc::{endpoint, start_in_process};
use common::proc::Scratch;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use loadgen::Publisher;
use loadgen::publish::hls::{HlsClient, HlsEvent};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(10);

/// `GET url` with an optional bearer token: status and body.
async fn fetch(url: &str, bearer: Option<&str>) -> (u16, String) {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let (status, _, body) = common::http::get(url, &headers).await;
    (status, body)
}

/// The status a WHIP publish of `stream` with `token` got: 201 (and the publisher) or the
/// refusal's status.
async fn publish(
    bridge: &bridge::Bridge,
    stream: &str,
    token: Option<&str>,
) -> Result<Publisher, u16> {
    let config = loadgen::PublisherConfig {
        token: token.map(str::to_owned),
        ..endpoint(bridge, stream)
    };
    Publisher::connect(config)
        .await
        .map_err(|err| err.status().unwrap_or_else(|| panic!("{err}")))
}

/// A loopback HTTP server running `router` until the test ends.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Waits for a playlist of `stream` that lists a segment, asked with `query`.
async fn wait_playlist(http: SocketAddr, stream: &str, query: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = fetch(
            &format!("http://{http}/hls/{stream}/index.m3u8{query}"),
            None,
        )
        .await;
        if status == 200 && text.contains("#EXTINF") {
            return text;
        }
        assert!(Instant::now() < deadline, "no playlist: {status} {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_admit_their_streams_and_hls_tokens_ride_along_the_playlist() {
    let dir = Scratch::new();
    let bridge = start_in_process(|c| {
        c.hls_dir = dir.0.clone();
        c.token = Some("operator".into());
        c.stream = vec![StreamKeys {
            name: "cam-*".into(),
            publish_key: Some("cam-secret".into()),
            read_key: Some("view cam".into()),
        }];
        c.hls_auth = HlsAuth::Token;
    })
    .await;
    let http = bridge.http_addr();

    // Publishing: the stream's key or the operator's; nothing else.
    assert_eq!(publish(&bridge, "cam-1", None).await.err(), Some(401));
    assert_eq!(
        publish(&bridge, "cam-1", Some("wrong")).await.err(),
        Some(401)
    );
    assert_eq!(
        publish(&bridge, "studio", Some("cam-secret")).await.err(),
        Some(401)
    );
    let operator = publish(&bridge, "cam-2", Some("operator")).await.unwrap();
    let publisher = publish(&bridge, "cam-1", Some("cam-secret")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    let sending = tokio::spawn(async move {
        // Stamped: loadgen's HLS client tells this run's frames from an earlier one's by them.
        publisher
            .send_media_stamped(Duration::from_secs(4))
            .await
            .unwrap();
        publisher
    });

    // Reading: refused without the key, whether the stream exists or not.
    for path in ["/hls/cam-1/index.m3u8", "/hls/nope/index.m3u8"] {
        assert_eq!(fetch(&format!("http://{http}{path}"), None).await.0, 401);
    }
    let (status, _) = fetch(&format!("http://{http}/hls/cam-1/index.m3u8?token=x"), None).await;
    assert_eq!(status, 401);

    // The key as a query parameter (percent-encoded): every URI of the answer carries it on.
    let text = wait_playlist(http, "cam-1", "?token=view%20cam").await;
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .chain(
            text.split("URI=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next()),
        )
        .collect();
    assert!(uris.len() >= 3, "{text}");
    for uri in &uris {
        assert!(uri.ends_with("token=view%20cam"), "{uri} in\n{text}");
        let (status, _) = fetch(&format!("http://{http}/hls/cam-1/{uri}"), None).await;
        assert_eq!(status, 200, "{uri}");
        let bare = uri.split('?').next().unwrap();
        let (status, _) = fetch(&format!("http://{http}/hls/cam-1/{bare}"), None).await;
        assert_eq!(status, 401, "{bare} without the token");
    }
    // As a header, the playlist is left as it is; the publish key and the operator's read too.
    for token in ["view cam", "cam-secret", "operator"] {
        let (status, text) =
            fetch(&format!("http://{http}/hls/cam-1/index.m3u8"), Some(token)).await;
        assert_eq!(status, 200, "{token}");
        assert!(!text.contains("token="), "{text}");
    }

    // loadgen's HLS client with --hls-token reads it to its end; without, it is refused.
    let follow = |token: Option<&str>| {
        let client = HlsClient::with_token(token).unwrap();
        let url = format!("http://{http}/hls/cam-1/index.m3u8");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let run = tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                client.follow(url, "cam-1".into(), 0, tx),
            )
            .await
        });
        (run, rx)
    };
    let (with_token, mut events) = follow(Some("view cam"));
    let (without, _) = follow(None);
    let refused = without.await.unwrap().expect("ends at once");
    assert!(
        format!("{:?}", refused.unwrap_err()).contains("401"),
        "no token"
    );
    let publisher = sending.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    assert_eq!(operator.delete().await.unwrap(), 200);
    let ended = with_token.await.unwrap();
    let mut parts = 0;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        parts += usize::from(matches!(event, HlsEvent::Part { .. }));
        seen.push(format!("{event:?}").chars().take(200).collect::<String>());
    }
    ended
        .unwrap_or_else(|_| panic!("no ENDLIST: {seen:#?}"))
        .expect("followed to the end");
    assert!(parts >= 3, "{parts} parts read with the token");
    let metrics = bridge.app().metrics.render();
    for line in [
        "bridge_auth_decisions_total{action=\"publish\",result=\"stream_key\"} ",
        "bridge_auth_decisions_total{action=\"publish\",result=\"unauthenticated\"} 3\n",
        "bridge_auth_decisions_total{action=\"read\",result=\"stream_key\"} ",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    bridge.shutdown().await;
}

/// What the test hook server saw and how it answers.
#[derive(Default)]
struct HookLog {
    requests: Mutex<Vec<Value>>,
}

async fn hook(State(log): State<Arc<HookLog>>, body: Bytes) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap();
    log.requests.lock().unwrap().push(body.clone());
    let stream = body["stream"].as_str().unwrap_or_default();
    if stream.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    match (stream.starts_with("ok"), body["token"].as_str()) {
        (true, Some("good")) => StatusCode::NO_CONTENT,
        (true, _) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_hook_decides_is_cached_and_a_hung_hook_delays_only_its_own() {
    let log = Arc::new(HookLog::default());
    let hook_addr = serve(
        axum::Router::new()
            .route("/auth", post(hook))
            .with_state(log.clone()),
    )
    .await;
    let dir = Scratch::new();
    let bridge = start_in_process(|c| {
        c.hls_dir = dir.0.clone();
        c.auth_url = Some(format!("http://{hook_addr}/auth"));
        c.auth_timeout_ms = 1_500;
        c.auth_cache_secs = 60;
        c.hls_auth = HlsAuth::Hook;
    })
    .await;

    // A hook that never answers, for one stream, while another publishes.
    let slow = {
        let url = endpoint(&bridge, "slow-1");
        tokio::spawn(async move {
            let started = Instant::now();
            let status = Publisher::connect(loadgen::PublisherConfig {
                token: Some("good".into()),
                ..url
            })
            .await
            .err()
            .and_then(|e| e.status());
            (status, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let publisher = publish(&bridge, "ok-1", Some("good")).await.unwrap();
    let took = started.elapsed();
    let (slow_status, slow_took) = slow.await.unwrap();
    assert_eq!(
        slow_status,
        Some(403),
        "a hook that does not answer refuses"
    );
    assert!(
        slow_took >= Duration::from_millis(1_400) && slow_took < Duration::from_secs(10),
        "{slow_took:?}"
    );
    assert!(
        took < slow_took,
        "the publish waited for another stream's hook: {took:?}"
    );

    assert_eq!(publish(&bridge, "ok-2", Some("bad")).await.err(), Some(401));
    assert_eq!(
        publish(&bridge, "no-1", Some("good")).await.err(),
        Some(403)
    );

    // Trickle and media: the session's PATCHes are decided from the cache.
    publisher.wait_connected(CONNECT).await.unwrap();
    publisher.send_media(Duration::from_secs(2)).await.unwrap();
    let http = bridge.http_addr();
    wait_playlist(http, "ok-1", "?token=good").await;
    let (status, _) = fetch(&format!("http://{http}/hls/ok-1/index.m3u8"), None).await;
    assert_eq!(status, 401);
    assert_eq!(publisher.delete().await.unwrap(), 200);

    let requests = log.requests.lock().unwrap().clone();
    let about_ok1: Vec<&Value> = requests.iter().filter(|r| r["stream"] == "ok-1").collect();
    let publish_asks: Vec<&&Value> = about_ok1
        .iter()
        .filter(|r| r["action"] == "publish")
        .collect();
    assert_eq!(publish_asks.len(), 1, "{about_ok1:?}");
    let ask = publish_asks[0];
    assert_eq!(ask["token"], "good");
    assert_eq!(ask["ip"], "127.0.0.1");
    assert_eq!(ask["protocol"], "whip");
    assert!(ask["user_agent"].is_string() || ask["user_agent"].is_null());
    let reads: Vec<&&Value> = about_ok1.iter().filter(|r| r["action"] == "read").collect();
    assert!(
        reads
            .iter()
            .any(|r| r["protocol"] == "hls" && r["token"] == "good"),
        "{about_ok1:?}"
    );
    // One ask per distinct request: the playlist polls and the tokenless GET.
    assert!(reads.len() <= 2, "{reads:?}");
    let metrics = bridge.app().metrics.render();
    assert!(
        metrics.contains("bridge_auth_decisions_total{action=\"publish\",result=\"hook_error\"} 1"),
        "{metrics}"
    );
    bridge.shutdown().await;
}

/// A key made by `openssl`: its private DER for signing and its public JWK.
struct TestKey {
    der: Vec<u8>,
    jwk: Value,
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn rsa_key(dir: &Path, kid: &str) -> TestKey {
    let pem = format!("{kid}.pem");
    openssl(dir, &["genrsa", "-out", &pem, "2048"]);
    // PKCS#1, which ring signs with.
    let der = openssl(
        dir,
        &["rsa", "-in", &pem, "-traditional", "-outform", "DER"],
    );
    let modulus =
        String::from_utf8(openssl(dir, &["rsa", "-in", &pem, "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    TestKey {
        der,
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "n": B64.encode(n), "e": "AQAB"}),
    }
}

fn ec_key(dir: &Path, kid: &str) -> TestKey {
    let pem = format!("{kid}.pem");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &pem,
        ],
    );
    // PKCS#8, which ring signs with.
    let der = openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
        ],
    );
    let public = openssl(dir, &["ec", "-in", &pem, "-pubout", "-outform", "DER"]);
    // The uncompressed point, 0x04 || x || y, ends the SubjectPublicKeyInfo.
    let point = &public[public.len() - 65..];
    assert_eq!(point[0], 4);
    TestKey {
        der,
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])}),
    }
}

fn sign(key: &TestKey, algorithm: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = key.jwk["kid"].as_str().map(str::to_owned);
    let encoding = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_der(&key.der),
        _ => EncodingKey::from_ec_der(&key.der),
    };
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// The JWKS document the test serves (swapped to rotate keys) and how often it was fetched.
#[derive(Default)]
struct Jwks {
    keys: Mutex<Vec<Value>>,
    fetches: Mutex<usize>,
}

async fn jwks(State(set): State<Arc<Jwks>>) -> String {
    *set.fetches.lock().unwrap() += 1;
    json!({ "keys": set.keys.lock().unwrap().clone() }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_signed_by_the_jwks_allow_the_streams_their_claims_name() {
    let keys_dir = Scratch::new();
    let rsa = rsa_key(&keys_dir.0, "r1");
    let ec = ec_key(&keys_dir.0, "e1");
    let rotated = ec_key(&keys_dir.0, "e2");
    let stranger = rsa_key(&keys_dir.0, "x1");
    let set = Arc::new(Jwks::default());
    *set.keys.lock().unwrap() = vec![rsa.jwk.clone(), ec.jwk.clone()];
    let jwks_addr = serve(
        axum::Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(set.clone()),
    )
    .await;
    let dir = Scratch::new();
    let bridge = start_in_process(|c| {
        c.hls_dir = dir.0.clone();
        c.jwks_url = Some(format!("http://{jwks_addr}/jwks.json"));
        c.jwt_issuer = Some("platform".into());
        c.hls_auth = HlsAuth::Jwt;
    })
    .await;
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = |publish: &[&str], read: &[&str]| json!({"iss": "platform", "sub": "u1", "exp": in_an_hour, "publish": publish, "read": read});

    let rs = sign(&rsa, Algorithm::RS256, &claims(&["cam-*"], &["cam-*"]));
    let publisher = publish(&bridge, "cam-1", Some(&rs)).await.unwrap();
    let es = sign(&ec, Algorithm::ES256, &claims(&["studio"], &[]));
    assert_eq!(publish(&bridge, "cam-2", Some(&es)).await.err(), Some(403));
    publish(&bridge, "studio", Some(&es))
        .await
        .unwrap()
        .delete()
        .await
        .unwrap();

    let refused = [
        // Expired (beyond the default leeway of a minute).
        {
            let mut c = claims(&["cam-*"], &[]);
            c["exp"] = json!(in_an_hour - 3 * 3600);
            sign(&rsa, Algorithm::RS256, &c)
        },
        // Another issuer.
        {
            let mut c = claims(&["cam-*"], &[]);
            c["iss"] = json!("elsewhere");
            sign(&rsa, Algorithm::RS256, &c)
        },
        // A key the set does not have, under a key id it does.
        {
            let mut forged = stranger;
            forged.jwk["kid"] = json!("r1");
            sign(&forged, Algorithm::RS256, &claims(&["cam-*"], &[]))
        },
        // HS256 keyed with the public modulus: the algorithm comes from the key, not the token.
        {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("r1".into());
            let secret = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
            jsonwebtoken::encode(
                &header,
                &claims(&["cam-*"], &[]),
                &EncodingKey::from_secret(&secret),
            )
            .unwrap()
        },
        // Not a JWT at all.
        "cam-secret".to_owned(),
    ];
    for token in &refused {
        assert_eq!(
            publish(&bridge, "cam-3", Some(token)).await.err(),
            Some(401),
            "{token}"
        );
    }

    // Rotation: a token under a key id the set lacks fetches it again, once (after the gap
    // that keeps unknown key ids from becoming a fetch each).
    tokio::time::sleep(bridge::auth::jwt::REFETCH_GAP).await;
    let fetches = *set.fetches.lock().unwrap();
    let new = sign(&rotated, Algorithm::ES256, &claims(&["cam-*"], &[]));
    set.keys.lock().unwrap().push(rotated.jwk.clone());
    publish(&bridge, "cam-4", Some(&new))
        .await
        .unwrap()
        .delete()
        .await
        .unwrap();
    assert_eq!(*set.fetches.lock().unwrap(), fetches + 1);
    // Unknown key ids do not turn into a fetch each.
    let ghost = sign(
        &ec_key(&keys_dir.0, "ghost"),
        Algorithm::ES256,
        &claims(&["cam-*"], &[]),
    );
    let flood = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            publish(&bridge, "cam-5", Some(&ghost)).await.err(),
            Some(401)
        );
    }
    let most = flood.elapsed().as_secs_f64() / bridge::auth::jwt::REFETCH_GAP.as_secs_f64();
    let extra = *set.fetches.lock().unwrap() - (fetches + 1);
    assert!(
        extra as f64 <= most.ceil(),
        "{extra} fetches in {:?}",
        flood.elapsed()
    );

    // Reading: the read claim.
    publisher.wait_connected(CONNECT).await.unwrap();
    publisher.send_media(Duration::from_secs(2)).await.unwrap();
    let http = bridge.http_addr();
    wait_playlist(http, "cam-1", &format!("?token={rs}")).await;
    let (status, _) = fetch(&format!("http://{http}/hls/cam-1/index.m3u8"), Some(&es)).await;
    assert_eq!(status, 403, "a token without the read claim");
    assert_eq!(publisher.delete().await.unwrap(), 200);
    bridge.shutdown().await;
}
