//! Hostile offers: 10,000 POSTs of offers mutated from every client shape the tests know (the
//! captured FFmpeg 9 offer, OBS's simulcast offer, and loadgen's Chromium, OBS, FFmpeg and
//! GStreamer shapes), through the router (`oneshot`, no HTTP socket; the UDP mux is real but
//! nothing connects). Whatever the offer, the answer is a 201 or a 4xx with a problem body
//! saying why: never a 5xx, never a panic, and the bridge still answers a good offer afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bridge_proto::testdata::xorshift;
use http_body_util::BodyExt;
use loadgen::signal::profile::{Identity, Profile};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tower::ServiceExt;

const REQUESTS: usize = 10_000;

/// Tokens a mutation puts in place of another: empty, zero, negative, too big, not a number,
/// a hex digit string, odd punctuation.
const TOKENS: [&str; 12] = [
    "",
    "0",
    "-1",
    "4294967296",
    "99999999999999999999999",
    "x",
    "ZZ:ZZ",
    "sha-1",
    "typ",
    "*",
    "://",
    "\u{e9}",
];

/// One to three mutations of `offer`'s lines: delete, duplicate, swap, truncate, replace a
/// token, or put in a line of another offer.
fn mutate(offer: &str, others: &[String], next: &mut impl FnMut() -> u64) -> String {
    let mut lines: Vec<String> = offer.lines().map(str::to_owned).collect();
    let pick = |n: usize, next: &mut dyn FnMut() -> u64| (next() % n.max(1) as u64) as usize;
    for _ in 0..=pick(3, next) {
        if lines.is_empty() {
            break;
        }
        let at = pick(lines.len(), next);
        match pick(6, next) {
            0 => {
                lines.remove(at);
            }
            1 => {
                let line = lines[at].clone();
                lines.insert(at, line);
            }
            2 => {
                let other = pick(lines.len(), next);
                lines.swap(at, other);
            }
            3 => {
                let cut = pick(lines[at].len() + 1, next);
                let cut = (0..=cut)
                    .rev()
                    .find(|&i| lines[at].is_char_boundary(i))
                    .unwrap_or(0);
                lines[at].truncate(cut);
            }
            4 => {
                let mut tokens: Vec<String> = lines[at]
                    .split([' ', ':', '=', ';', '/'])
                    .map(str::to_owned)
                    .collect();
                let t = pick(tokens.len(), next);
                tokens[t] = TOKENS[pick(TOKENS.len(), next)].to_owned();
                // The separators are lost: a line that also changes shape.
                lines[at] = tokens.join(if pick(2, next) == 0 { " " } else { ":" });
            }
            _ => {
                let donor = &others[pick(others.len(), next)];
                let donor: Vec<&str> = donor.lines().collect();
                let line = donor[pick(donor.len(), next)].to_owned();
                lines.insert(at, line);
            }
        }
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_offers_get_no_5xx() {
    let (_app, router) = common::inproc::router_in_process(|c| {
        c.max_sessions = 1_000_000;
        c.post_rate_per_ip = 1_000_000;
    })
    .await;

    let identity = Identity::new(IpAddr::V4(Ipv4Addr::LOCALHOST), Arc::new(AtomicU64::new(0)))
        .await
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let mut seeds = vec![
        include_str!("data/ffmpeg9-whip-offer.sdp").to_owned(),
        include_str!("data/obs32-simulcast-offer.sdp").to_owned(),
    ];
    for profile in Profile::ALL {
        let creds = profile.credentials(&mut rng);
        seeds.push(identity.offer(profile, &creds, &mut rng));
    }

    let post = |body: String| {
        let router = router.clone();
        async move {
            let request = Request::post("/whip/hostile")
                .header(header::CONTENT_TYPE, "application/sdp")
                .body(Body::from(body))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                location,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut server_errors = Vec::new();
    for n in 0..REQUESTS {
        let seed = &seeds[n % seeds.len()];
        let offer = mutate(seed, &seeds, &mut next);
        let (status, location, body) = post(offer.clone()).await;
        *statuses.entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            server_errors.push(format!("{status} {body}\n{offer}"));
        } else if !status.is_success() {
            let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "a refusal says why: {body}"
            );
        }
        if let Some(location) = location {
            // Accepted (the mutation kept it whole): free it for the next.
            let request = Request::delete(location).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    eprintln!("{REQUESTS} hostile offers: {statuses:?}");
    assert!(
        server_errors.is_empty(),
        "{} answers were 5xx, the first:\n{}",
        server_errors.len(),
        server_errors.first().map_or("", String::as_str)
    );
    // Still healthy: a good offer is answered.
    let (status, location, body) = post(seeds[0].clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(location.is_some());
}
