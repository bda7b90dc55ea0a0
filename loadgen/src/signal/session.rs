//! A signalling-only session: the plan played over HTTP with well-formed offers and fragments
//! but no peer behind them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use tokio::task::JoinSet;

use super::oracle::Failure;
use super::scenario::{Batch, Faults, REORDER_SPACING, STORM_DELETES, SessionPlan};
use super::{Ctx, Event, Req, SessionResult};
use crate::sdp::{IceCredentials, SdpFrag, resolve_location};
use crate::stats::Metric;
use crate::whip_client::{APPLICATION_SDP, Exchange, MAX_REDIRECTS, Response, TRICKLE_ICE_SDPFRAG};
/// Longest Retry-After honoured; a missing or HTTP-date one counts as 1 s.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The session a 201 created.
#[derive(Debug)]
struct Created {
    url: String,
    /// As the server sent it (sent back verbatim in If-Match).
    etag: Option<String>,
}

/// What every sdpfrag of a session repeats from its offer (RFC 8840 layout).
#[derive(Debug, Clone)]
struct Shape(SdpFrag);

impl Shape {
    fn of(offer: &str) -> Self {
        let parsed = SdpFrag::parse(offer);
        Shape(SdpFrag {
            credentials: None,
            candidates: Vec::new(),
            end_of_candidates: false,
            ..parsed
        })
    }

    fn frag(&self, creds: &IceCredentials, candidates: &[String], end: bool) -> Bytes {
        Bytes::from(
            SdpFrag {
                credentials: Some(creds.clone()),
                candidates: candidates.to_vec(),
                end_of_candidates: end,
                ..self.0.clone()
            }
            .to_sdpfrag(),
        )
    }
}

fn patch(url: &str, if_match: Option<&str>, body: Bytes) -> Req {
    Req {
        method: Method::PATCH,
        url: url.to_owned(),
        content_type: Some(TRICKLE_ICE_SDPFRAG),
        if_match: if_match.map(str::to_owned),
        body,
    }
}

fn delete(url: &str) -> Req {
    Req {
        method: Method::DELETE,
        url: url.to_owned(),
        content_type: None,
        if_match: None,
        body: Bytes::new(),
    }
}

fn post(url: &str, offer: Bytes) -> Req {
    Req {
        method: Method::POST,
        url: url.to_owned(),
        content_type: Some(APPLICATION_SDP),
        if_match: None,
        body: offer,
    }
}

/// `Retry-After` in seconds; an HTTP-date or nothing counts as 1 s.
fn retry_after(r: &Response) -> Duration {
    r.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// The session URL a 201 names.
pub(super) fn session_url(e: &Exchange) -> Option<String> {
    let r = e.outcome.as_ref().ok().filter(|r| r.status == 201)?;
    resolve_location(&e.url, r.header("location")?)
}

/// Plays `plan` from its intended start `start`.
pub(super) async fn run(ctx: &Arc<Ctx>, plan: SessionPlan, start: Instant) -> SessionResult {
    let mut log = Vec::new();
    let flood = start_flood(ctx, &plan, start);
    if let Some(created) = create(ctx, &mut log, &plan, start).await {
        play(ctx, &mut log, &plan, start, created).await;
    }
    finish(plan, flood, log, None).await
}

/// Starts the session's POST flood beside it, when its plan has one.
pub(super) fn start_flood(
    ctx: &Arc<Ctx>,
    plan: &SessionPlan,
    start: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    plan.faults.post_flood.then(|| {
        tokio::spawn(flood(
            ctx.clone(),
            plan.index,
            plan.flood_offers.clone(),
            start,
        ))
    })
}

/// The session's result, once its flood (if any) is over too.
pub(super) async fn finish(
    plan: SessionPlan,
    flood: Option<tokio::task::JoinHandle<()>>,
    exchanges: Vec<Exchange>,
    failure: Option<(Failure, String)>,
) -> SessionResult {
    if let Some(flood) = flood {
        let _ = flood.await;
    }
    SessionResult {
        index: plan.index,
        profile: plan.profile,
        faults: plan.faults,
        exchanges,
        failure,
    }
}

/// POSTs the offer, following 307s and honouring Retry-After; the POST latency is that of the
/// final attempt (raw) and from the session's intended start (corrected). Each attempt answered
/// `201` or refused for load is also timed alone (`post_admitted`, `post_refused`).
async fn create(
    ctx: &Ctx,
    log: &mut Vec<Exchange>,
    plan: &SessionPlan,
    start: Instant,
) -> Option<Created> {
    let mut url = ctx.endpoint(plan.index);
    let body = Bytes::from(plan.offer.clone());
    let mut not_before = start;
    let (mut hops, mut retries) = (0, 0);
    loop {
        let e = ctx.send(post(&url, body.clone()), not_before, None).await;
        let answer = e.outcome.as_ref().ok();
        let status = answer.map(|r| r.status);
        match status {
            Some(201) => ctx.record(Metric::PostAdmitted, &e, not_before),
            Some(429 | 503) => ctx.record(Metric::PostRefused, &e, not_before),
            _ => {}
        }
        if status == Some(307) && hops < MAX_REDIRECTS {
            let next = answer
                .and_then(|r| r.header("location"))
                .and_then(|l| resolve_location(&url, l));
            if let Some(next) = next {
                url = next;
                hops += 1;
                not_before = Instant::now();
                log.push(e);
                continue;
            }
        }
        if matches!(status, Some(429 | 503)) && retries < ctx.args.max_retries {
            let wait = answer.map_or(Duration::from_secs(1), retry_after);
            retries += 1;
            log.push(e);
            not_before = Instant::now() + wait;
            if !ctx.sleep_until(not_before).await {
                return None;
            }
            continue;
        }
        ctx.record(Metric::Post, &e, start);
        let created = session_url(&e).map(|url| Created {
            url,
            etag: answer.and_then(|r| r.header("etag")).map(str::to_owned),
        });
        log.push(e);
        return created;
    }
}

/// A created session being played: where it lives and what it logged.
struct Live<'a> {
    ctx: &'a Arc<Ctx>,
    url: &'a str,
    shape: Shape,
    start: Instant,
    faults: Faults,
    log: &'a mut Vec<Exchange>,
}

impl Live<'_> {
    /// Sends each request at its intended time, all concurrently (each on its own connection
    /// when they overlap), timed under its metric if it has one; returns the exchanges.
    async fn burst(&self, jobs: Vec<(Req, Instant, Option<Metric>)>) -> Vec<Exchange> {
        let mut set = JoinSet::new();
        for (req, intended, metric) in jobs {
            let ctx = self.ctx.clone();
            set.spawn(async move {
                let timing = metric.map(|m| (m, intended));
                ctx.send(req, intended, timing).await
            });
        }
        let mut out = Vec::new();
        while let Some(done) = set.join_next().await {
            out.extend(done.ok());
        }
        out
    }

    /// Sends one request now, untimed (a probe), and logs it.
    async fn probe(&mut self, req: Req) {
        let e = self.ctx.send(req, Instant::now(), None).await;
        self.log.push(e);
    }

    /// Sends trickle PATCHes at their times (faults applied) and waits for all answers.
    async fn trickle(&mut self, creds: &IceCredentials, tag: &str, batches: &[Batch]) {
        let n = batches.len();
        let last = batches.last().map_or(Duration::ZERO, |b| b.at);
        let mut jobs = Vec::new();
        for (k, b) in batches.iter().enumerate() {
            let at = if self.faults.reorder && n >= 2 {
                // Last first, each on its own connection.
                last + REORDER_SPACING * (n - 1 - k) as u32
            } else {
                b.at
            };
            let req = patch(
                self.url,
                Some(tag),
                self.shape.frag(creds, &b.candidates, b.end),
            );
            for _ in 0..self.copies() {
                jobs.push((req.clone(), self.start + at, Some(Metric::PatchTrickle)));
            }
        }
        let answers = self.burst(jobs).await;
        self.log.extend(answers);
    }

    fn copies(&self) -> usize {
        if self.faults.duplicate { 2 } else { 1 }
    }
}

/// Everything after the 201: trickles, restart, hold, DELETE.
async fn play(
    ctx: &Arc<Ctx>,
    log: &mut Vec<Exchange>,
    plan: &SessionPlan,
    start: Instant,
    created: Created,
) {
    let faults = plan.faults;
    let mut live = Live {
        ctx,
        url: &created.url,
        shape: Shape::of(&plan.offer),
        start,
        faults,
        log,
    };
    let url = created.url.as_str();
    let mut creds = plan.credentials.clone();
    let mut tag = created.etag.clone();
    // With a race, the last trickle waits for the restart and goes with it.
    let (batches, race) = match plan.trickle.split_last() {
        Some((last, rest)) if faults.restart_race => (rest, Some(last)),
        _ => (plan.trickle.as_slice(), None),
    };
    if let Some(t) = &tag {
        live.trickle(&creds, t, batches).await;
    }
    // Probes carry some candidates of the session's, as the PATCHes they stand for would.
    let probe_candidates = match (plan.trickle.first(), &plan.restart) {
        (Some(b), _) => b.candidates.clone(),
        (None, Some(r)) => r.candidates.clone(),
        (None, None) => Vec::new(),
    };
    if faults.no_if_match {
        let body = live.shape.frag(&creds, &probe_candidates, false);
        live.probe(patch(url, None, body)).await;
    }
    if let Some(r) = &plan.restart {
        let intended = start + r.at;
        let mut jobs = Vec::new();
        if let (Some(b), Some(t)) = (race, &tag) {
            let body = live.shape.frag(&creds, &b.candidates, b.end);
            jobs.push((
                patch(url, Some(t), body),
                intended,
                Some(Metric::PatchTrickle),
            ));
        }
        let body = live
            .shape
            .frag(&r.credentials, &r.candidates, !r.candidates.is_empty());
        for _ in 0..live.copies() {
            jobs.push((
                patch(url, Some("*"), body.clone()),
                intended,
                Some(Metric::PatchRestart),
            ));
        }
        let answers = live.burst(jobs).await;
        // The client goes on with whichever copy got the 200.
        let new_tag = answers.iter().find_map(|e| {
            let answer = e.outcome.as_ref().ok()?;
            (answer.status == 200 && e.if_match.as_deref() == Some("*"))
                .then(|| answer.header("etag").map(str::to_owned))
        });
        live.log.extend(answers);
        if let Some(new_tag) = new_tag {
            let old = (std::mem::replace(&mut creds, r.credentials.clone()), tag);
            tag = new_tag;
            if let Some(t) = &tag {
                live.trickle(&creds, t, &r.trickle).await;
            }
            if faults.stale_after_restart {
                // A PATCH from before the restart, arriving late: old ufrag, old tag.
                let body = live.shape.frag(&old.0, &probe_candidates, false);
                live.probe(patch(url, old.1.as_deref(), body)).await;
            }
        }
    }
    let planned = start + plan.delete_at;
    let intended = if ctx.sleep_until(planned).await {
        planned
    } else {
        Instant::now()
    };
    if !faults.delete_storm {
        let answers = live
            .burst(vec![(delete(url), intended, Some(Metric::Delete))])
            .await;
        live.log.extend(answers);
        return;
    }
    let storm = (0..STORM_DELETES)
        .map(|_| (delete(url), intended, Some(Metric::Delete)))
        .collect();
    let answers = live.burst(storm).await;
    live.log.extend(answers);
    // After the storm the session must be gone for everything.
    let body = live.shape.frag(&creds, &probe_candidates, false);
    live.probe(patch(url, tag.as_deref(), body)).await;
    live.probe(delete(url)).await;
}

/// The post flood: offers POSTed at once to their own streams; every created session is
/// DELETEd at once. Each POST goes to the collector as a session of its own.
async fn flood(ctx: Arc<Ctx>, index: u64, offers: Vec<String>, start: Instant) {
    let mut set = JoinSet::new();
    for (k, offer) in offers.into_iter().enumerate() {
        let ctx = ctx.clone();
        set.spawn(async move {
            let url = ctx.flood_endpoint(index, k);
            let created = ctx.send(post(&url, Bytes::from(offer)), start, None).await;
            let session = session_url(&created);
            let mut exchanges = vec![created];
            if let Some(session) = session {
                exchanges.push(ctx.send(delete(&session), Instant::now(), None).await);
            }
            let _ = ctx.events.send(Event::Flood {
                label: format!("{index}-flood{k}"),
                exchanges,
            });
        });
    }
    while set.join_next().await.is_some() {}
}
