//! A signalling-only WHIP server with a known behaviour, to test the load generator itself:
//! POSTs served one at a time in a fixed time (a single worker, so a stall builds a queue that
//! drains at its pace, as in the textbook coordinated-omission example), fixed PATCH and DELETE
//! delays, one stall, and two ways of being wrong on purpose. No media: answers are canned SDP.
//!
//! Per session it follows RFC 9725's PATCH rules (strict entity tags), deciding each request
//! under the session lock before its delay, so requests are linearized at a point between their
//! sending and their answer, as the oracle assumes.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use loadgen::sdp::{IceCredentials, SdpFrag};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Service time of a POST; POSTs are served one at a time, in arrival order.
    pub post_delay: Duration,
    /// Every PATCH is answered this long after it is decided.
    pub patch_delay: Duration,
    /// Every DELETE is answered this long after it arrives.
    pub delete_delay: Duration,
    /// The POST worker freezes once.
    pub stall: Option<Stall>,
    /// Wrong: `If-Match` is never looked at (new credentials restart ICE, the rest trickles).
    pub ignore_if_match: bool,
    /// Wrong: ICE-restart answers carry no `ETag`.
    pub no_restart_etag: bool,
    /// POSTs to `/whip/{stream}` are sent to `/alt/whip/{stream}` with a 307.
    pub redirect: bool,
    /// The first POST for each stream gets 503 with `Retry-After: 0`.
    pub busy_once: bool,
}

/// A freeze of the POST worker.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    /// The session (stream `s{at}`) whose POST the worker freezes on.
    pub at: u64,
    /// How long it freezes before serving it.
    pub length: Duration,
}

struct Session {
    remote: IceCredentials,
    etag: u64,
    generation: u32,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    next: u64,
    /// When the POST worker is free again. Departures are computed, not slept in turn, so timer
    /// lateness does not add up along a queue.
    free_at: Option<Instant>,
    /// Streams that had their 503.
    refused: HashSet<String>,
}

/// The running server.
pub struct FakeWhip {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeWhip {
    /// Starts the server on a thread and runtime of its own, so that its timing does not depend
    /// on how busy the load generator's runtime is.
    pub async fn start(behaviour: Behaviour) -> FakeWhip {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (st, b) = (state.clone(), Arc::new(behaviour));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (st, b) = (st.clone(), b.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let (st, b) = (st.clone(), b.clone());
                            async move { Ok::<_, Infallible>(handle(&st, &b, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        FakeWhip { addr, state }
    }

    /// The `--url` for the load generator: one stream per session.
    pub fn url(&self) -> String {
        format!("http://{}/whip/s{{i}}", self.addr)
    }

    /// Sessions still open.
    pub fn open_sessions(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }
}

/// Sleeps until `until` to the microsecond: tokio's timer ticks in milliseconds, so the last
/// one is waited out by yielding. The stall test compares percentiles with theory to 1 ms.
async fn sleep_precisely(until: Instant) {
    if let Some(early) = until.checked_sub(Duration::from_millis(1)) {
        tokio::time::sleep_until(early).await;
    }
    while Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

fn reply(status: u16, headers: &[(&str, String)], body: String) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn tag(n: u64) -> String {
    format!("\"fake-{n:016x}\"")
}

fn answer(offer: &str, ufrag: &str) -> String {
    let setup = if offer.contains("a=setup:passive") {
        "active"
    } else {
        "passive"
    };
    let mut out = String::from(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
         a=fingerprint:sha-256 AA:BB:CC\r\n",
    );
    for line in offer.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            let kind = fields.next().unwrap_or("audio");
            let pt = fields.nth(2).unwrap_or("96");
            out += &format!(
                "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 127.0.0.1\r\n\
                 a=ice-ufrag:{ufrag}\r\na=ice-pwd:fakepasswordfakepassword\r\n\
                 a=setup:{setup}\r\na=rtcp-mux\r\na=recvonly\r\n\
                 a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
            );
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            out += &format!("a=mid:{mid}\r\n");
        }
    }
    out
}

async fn handle(
    state: &Mutex<State>,
    b: &Behaviour,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let if_match = req
        .headers()
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["whip", stream]) if b.redirect => reply(
            307,
            &[("location", format!("/alt/whip/{stream}"))],
            String::new(),
        ),
        (Method::POST, ["whip", stream] | ["alt", "whip", stream])
            if b.busy_once && state.lock().unwrap().refused.insert((*stream).to_owned()) =>
        {
            reply(503, &[("retry-after", "0".into())], String::new())
        }
        (Method::POST, ["whip", stream] | ["alt", "whip", stream]) => {
            let index: Option<u64> = stream.strip_prefix('s').and_then(|n| n.parse().ok());
            let (id, etag, release) = {
                let mut st = state.lock().unwrap();
                st.next += 1;
                let id = st.next;
                let creds = SdpFrag::parse(&body).credentials.unwrap_or_default();
                st.sessions.insert(
                    id.to_string(),
                    Session {
                        remote: creds,
                        etag: id << 8,
                        generation: 0,
                    },
                );
                let mut start = st.free_at.map_or(arrived, |free| free.max(arrived));
                if let Some(stall) = b.stall.filter(|s| Some(s.at) == index) {
                    start += stall.length;
                }
                let departure = start + b.post_delay;
                st.free_at = Some(departure);
                (id, tag(id << 8), departure)
            };
            sleep_precisely(release).await;
            reply(
                201,
                &[
                    ("content-type", "application/sdp".into()),
                    ("location", format!("/whip/{stream}/{id}")),
                    ("etag", etag),
                ],
                answer(&body, &format!("srv{id}g0")),
            )
        }
        (Method::PATCH, ["whip", _, id]) => {
            let frag = SdpFrag::parse(&body);
            let decided = {
                let mut st = state.lock().unwrap();
                match st.sessions.get_mut(*id) {
                    None => Err(404),
                    Some(s) => decide(s, id, b, if_match.as_deref(), frag),
                }
            };
            tokio::time::sleep(b.patch_delay).await;
            match decided {
                Err(status) => reply(status, &[], String::new()),
                Ok(None) => reply(204, &[], String::new()),
                Ok(Some((etag, frag))) => {
                    let mut headers =
                        vec![("content-type", "application/trickle-ice-sdpfrag".to_owned())];
                    if !b.no_restart_etag {
                        headers.push(("etag", etag));
                    }
                    reply(200, &headers, frag)
                }
            }
        }
        (Method::DELETE, ["whip", _, id]) => {
            let removed = state.lock().unwrap().sessions.remove(*id).is_some();
            tokio::time::sleep(b.delete_delay).await;
            reply(if removed { 200 } else { 404 }, &[], String::new())
        }
        _ => reply(404, &[], String::new()),
    }
}

/// RFC 9725 §4.3 (or, with `ignore_if_match`, a server that never checks tags). `Ok(None)` is a
/// trickle (204), `Ok(Some)` a restart (200 with this tag and fragment).
fn decide(
    s: &mut Session,
    id: &str,
    b: &Behaviour,
    if_match: Option<&str>,
    frag: SdpFrag,
) -> Result<Option<(String, String)>, u16> {
    let restart = frag.credentials.as_ref().is_some_and(|c| *c != s.remote);
    let opaque = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    if !b.ignore_if_match {
        match (restart, if_match) {
            (_, None) => return Err(428),
            (true, Some(t)) if opaque(t) != "*" => return Err(412),
            (false, Some(t)) if opaque(t) != opaque(&tag(s.etag)) => return Err(412),
            _ => {}
        }
    }
    if !restart {
        return Ok(None);
    }
    s.remote = frag.credentials.unwrap_or_default();
    s.etag += 1;
    s.generation += 1;
    let ufrag = format!("srv{id}g{}", s.generation);
    let body = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:fakepasswordfakepassword\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    );
    Ok(Some((tag(s.etag), body)))
}
