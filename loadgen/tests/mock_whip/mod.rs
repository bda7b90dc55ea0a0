//! A minimal strict WHIP server for testing the publisher: an rtc answerer per session (ICE full,
//! DTLS passive) behind a hyper HTTP/1 server. It implements POST / PATCH (trickle and ICE
//! restart with entity tags, RFC 9725 §4.3) / DELETE, and records every request.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadgen::driver::{PeerDriver, RxStats};
use loadgen::rtc;
use loadgen::sdp::{IceCredentials, SdpFrag, rewrite_ice};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use tokio::net::{TcpListener, UdpSocket};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub if_match: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    pub status: u16,
}

struct Session {
    driver: PeerDriver,
    /// The publisher's offer with the ICE parts of the latest restart applied.
    offer_sdp: String,
    remote: IceCredentials,
    etag: String,
    generation: u32,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    log: Vec<Logged>,
    next_id: u32,
    closed: Vec<RxStats>,
}

/// The server; dropping it leaves the listener task running until the runtime ends.
#[derive(Clone)]
pub struct MockWhip {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl MockWhip {
    pub async fn start() -> MockWhip {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockWhip { addr, state }
    }

    pub fn endpoint(&self, stream: &str) -> String {
        format!("http://{}/whip/{stream}", self.addr)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Received-media counters of a live session (by id, the last path segment).
    pub fn rx(&self, session_url: &str) -> Option<RxStats> {
        let id = session_url.rsplit('/').next()?;
        let st = self.state.lock().unwrap();
        st.sessions.get(id).map(|s| s.driver.rx_stats())
    }

    pub fn session_count(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: String) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (if_match, authorization, content_type) =
        (h("if-match"), h("authorization"), h("content-type"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();

    let response = match (method.as_str(), path.strip_prefix("/whip/")) {
        ("POST", Some(_stream)) => post(&state, &body).await,
        ("PATCH", Some(rest)) if rest.starts_with("session/") => patch(
            &state,
            &rest["session/".len()..],
            if_match.as_deref(),
            &body,
        ),
        ("DELETE", Some(rest)) if rest.starts_with("session/") => {
            let removed = state
                .lock()
                .unwrap()
                .sessions
                .remove(&rest["session/".len()..]);
            match removed {
                Some(s) => {
                    let rx = s.driver.rx_stats();
                    s.driver.close().await;
                    state.lock().unwrap().closed.push(rx);
                    reply(StatusCode::OK, &[], String::new())
                }
                None => reply(StatusCode::NOT_FOUND, &[], String::new()),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, &[], String::new()),
    };
    state.lock().unwrap().log.push(Logged {
        method,
        path,
        if_match,
        authorization,
        content_type,
        body,
        status: response.status().as_u16(),
    });
    Ok(response)
}

async fn post(state: &Arc<Mutex<State>>, offer_sdp: &str) -> Response<Full<Bytes>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().unwrap();
    let registry =
        register_default_interceptors(rtc::interceptor::Registry::new(), &mut media_engine)
            .unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_answering_dtls_role(RTCDtlsRole::Server)
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .build(),
        )
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .unwrap();
    let offer = match RTCSessionDescription::offer(offer_sdp.to_owned()) {
        Ok(o) => o,
        Err(e) => return reply(StatusCode::BAD_REQUEST, &[], e.to_string()),
    };
    if let Err(e) = pc.set_remote_description(Instant::now(), offer) {
        return reply(StatusCode::UNPROCESSABLE_ENTITY, &[], e.to_string());
    }
    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap())
        .unwrap();
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .unwrap();
    let answer = pc.create_answer(None).unwrap();
    pc.set_local_description(Instant::now(), answer.clone())
        .unwrap();
    let driver = PeerDriver::spawn(pc, socket, None).unwrap();

    let remote = SdpFrag::parse(offer_sdp).credentials.unwrap();
    let mut st = state.lock().unwrap();
    st.next_id += 1;
    let id = format!("s{}x{:08x}", st.next_id, rand_tag());
    let etag = format!("\"{id}-0\"");
    st.sessions.insert(
        id.clone(),
        Session {
            driver,
            offer_sdp: offer_sdp.to_owned(),
            remote,
            etag: etag.clone(),
            generation: 0,
        },
    );
    reply(
        StatusCode::CREATED,
        &[
            ("location", format!("/whip/session/{id}")),
            ("etag", etag),
            ("content-type", "application/sdp".into()),
            ("link", "<stun:127.0.0.1:3478>; rel=\"ice-server\"".into()),
        ],
        answer.sdp,
    )
}

fn patch(
    state: &Arc<Mutex<State>>,
    id: &str,
    if_match: Option<&str>,
    body: &str,
) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap();
    let Some(s) = st.sessions.get_mut(id) else {
        return reply(StatusCode::NOT_FOUND, &[], String::new());
    };
    let frag = SdpFrag::parse(body);
    let Some(creds) = frag.credentials.clone() else {
        return reply(StatusCode::BAD_REQUEST, &[], "no credentials".into());
    };
    let unquote = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    if creds != s.remote {
        // ICE restart.
        match if_match.map(unquote) {
            None => return reply(StatusCode::PRECONDITION_REQUIRED, &[], String::new()),
            Some(t) if t != "*" => {
                return reply(StatusCode::PRECONDITION_FAILED, &[], String::new());
            }
            Some(_) => {}
        }
        let offer_sdp = rewrite_ice(
            &s.offer_sdp,
            &creds,
            &frag.candidates,
            frag.end_of_candidates,
        );
        let result = s.driver.with_pc(|pc| {
            pc.set_remote_description(
                Instant::now(),
                RTCSessionDescription::offer(offer_sdp.clone())?,
            )?;
            let answer = pc.create_answer(None)?;
            pc.set_local_description(Instant::now(), answer.clone())?;
            Ok::<_, rtc::shared::error::Error>(answer)
        });
        let answer = match result {
            Ok(a) => a,
            Err(e) => return reply(StatusCode::INTERNAL_SERVER_ERROR, &[], e.to_string()),
        };
        let local = SdpFrag::parse(&answer.sdp);
        s.offer_sdp = offer_sdp;
        s.remote = creds;
        s.generation += 1;
        s.etag = format!("\"{id}-{}\"", s.generation);
        let out = SdpFrag {
            ice_options_trickle: false,
            group: local.group.clone(),
            m_line: local.m_line.clone(),
            mid: local.mid.clone(),
            credentials: local.credentials.clone(),
            candidates: local.candidates.clone(),
            end_of_candidates: true,
        };
        reply(
            StatusCode::OK,
            &[
                ("etag", s.etag.clone()),
                ("content-type", "application/trickle-ice-sdpfrag".into()),
            ],
            out.to_sdpfrag(),
        )
    } else {
        // Trickle.
        match if_match.map(unquote) {
            None => return reply(StatusCode::PRECONDITION_REQUIRED, &[], String::new()),
            Some(t) if t != unquote(&s.etag) => {
                return reply(StatusCode::PRECONDITION_FAILED, &[], String::new());
            }
            Some(_) => {}
        }
        let result = s.driver.with_pc(|pc| {
            for c in &frag.candidates {
                pc.add_remote_candidate(RTCIceCandidateInit {
                    candidate: c.clone(),
                    ..Default::default()
                })?;
            }
            Ok::<_, rtc::shared::error::Error>(())
        });
        match result {
            Ok(()) => reply(StatusCode::NO_CONTENT, &[], String::new()),
            Err(e) => reply(StatusCode::BAD_REQUEST, &[], e.to_string()),
        }
    }
}

fn rand_tag() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now().elapsed()) as u32
}
