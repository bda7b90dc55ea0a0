//! A `--connect` session: a real WebRTC peer ([`Publisher`]) does the signalling and completes
//! ICE + DTLS; every exchange it makes is observed for the oracle and the histograms.
//!
//! The publisher offers what the rtc stack offers (one host candidate on its own socket), shaped
//! by the profile only in how candidates travel: trickled in one PATCH (chromium), inside the
//! offer (ffmpeg, gstreamer) or not at all (obs). Its trickle PATCH goes out as soon as the 201
//! arrives, so it has no planned time: its corrected latency is its raw one.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::oracle::Failure;
use super::profile::Profile;
use super::scenario::{STORM_DELETES, SessionPlan};
use super::{Ctx, SessionResult};
use crate::stats::Metric;
use crate::whip_client::{Exchange, TRICKLE_ICE_SDPFRAG};
use crate::{Publisher, PublisherConfig};

fn drain(rx: &mut mpsc::UnboundedReceiver<Exchange>) -> Vec<Exchange> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Plays `plan` with a real peer from its intended start `start`.
pub(super) async fn run(ctx: &Arc<Ctx>, plan: SessionPlan, start: Instant) -> SessionResult {
    let flood = super::session::start_flood(ctx, &plan, start);
    let mut log = Vec::new();
    let failure = play(ctx, &plan, start, &mut log).await.err();
    super::session::finish(plan, flood, log, failure).await
}

async fn play(
    ctx: &Arc<Ctx>,
    plan: &SessionPlan,
    start: Instant,
    log: &mut Vec<Exchange>,
) -> Result<(), (Failure, String)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let http = ctx.http.clone().with_observer(tx);
    let cfg = PublisherConfig {
        endpoint: ctx.endpoint(plan.index),
        token: ctx.args.token.clone(),
        trickle: matches!(
            plan.profile,
            Profile::Chromium | Profile::Obs | Profile::ObsSimulcast
        ),
        bind_ip: ctx.identity.candidate_ip,
        simulcast: plan.profile.simulcast_layers(),
    };
    let label = format!("session {} ({})", plan.index, plan.profile.name());
    tokio::time::sleep_until(start.into()).await;
    let connected = Publisher::connect_with(cfg, http.clone(), plan.profile.trickles()).await;
    let mut post_sent = start;
    for e in drain(&mut rx) {
        match e.method {
            Method::POST => {
                post_sent = e.sent;
                ctx.record(Metric::Post, &e, start);
            }
            Method::PATCH => ctx.record(Metric::PatchTrickle, &e, e.sent),
            _ => {}
        }
        log.push(e);
    }
    let mut p = connected.map_err(|e| (Failure::Client, format!("{label}: connecting: {e}")))?;
    let ice = p.wait_connected(ctx.args.ice_timeout).await;
    log.extend(drain(&mut rx));
    let mut outcome = match ice {
        Ok(()) => {
            ctx.record_span(Metric::IceConnected, post_sent, start);
            Ok(())
        }
        Err(e) => Err((Failure::IceFailed, format!("{label}: {e}"))),
    };
    if plan.faults.no_if_match {
        let _ = p.patch_raw(None, p.local_sdpfrag()).await;
        log.extend(drain(&mut rx));
    }
    if let Some(r) = plan.restart.as_ref().filter(|_| outcome.is_ok()) {
        let intended = start + r.at;
        if ctx.sleep_until(intended).await {
            let (old_tag, old_frag) = (p.etag().to_owned(), p.local_sdpfrag());
            let restarted = p.restart_ice().await;
            let mut restart_sent = intended;
            for e in drain(&mut rx) {
                if e.if_match.as_deref() == Some("*") {
                    restart_sent = e.sent;
                    ctx.record(Metric::PatchRestart, &e, intended);
                } else {
                    ctx.record(Metric::PatchTrickle, &e, e.sent);
                }
                log.push(e);
            }
            outcome = match restarted {
                Err(e) => Err((Failure::Client, format!("{label}: ICE restart: {e}"))),
                Ok(()) => match p.wait_connected(ctx.args.ice_timeout).await {
                    Ok(()) => {
                        ctx.record_span(Metric::IceReconnected, restart_sent, intended);
                        Ok(())
                    }
                    Err(e) => Err((
                        Failure::IceReconnectFailed,
                        format!("{label}: after the restart: {e}"),
                    )),
                },
            };
            if plan.faults.stale_after_restart {
                let _ = p.patch_raw(Some(&old_tag), old_frag).await;
                log.extend(drain(&mut rx));
            }
        }
    }
    let planned = start + plan.delete_at;
    let intended = if ctx.sleep_until(planned).await {
        planned
    } else {
        Instant::now()
    };
    let url = p.session_url().to_owned();
    let (tag, frag) = (p.etag().to_owned(), p.local_sdpfrag());
    let mut storm = JoinSet::new();
    if plan.faults.delete_storm {
        for _ in 1..STORM_DELETES {
            let (http, url) = (http.clone(), url.clone());
            storm.spawn(async move {
                http.exchange(Method::DELETE, &url, None, None, Bytes::new())
                    .await
            });
        }
    }
    // The publisher's own DELETE also closes its peer connection.
    let _ = p.delete().await;
    while storm.join_next().await.is_some() {}
    for e in drain(&mut rx) {
        ctx.record(Metric::Delete, &e, intended);
        log.push(e);
    }
    if plan.faults.delete_storm {
        let body = Bytes::from(frag);
        let _ = http
            .exchange(
                Method::PATCH,
                &url,
                Some(TRICKLE_ICE_SDPFRAG),
                Some(&tag),
                body,
            )
            .await;
        let _ = http
            .exchange(Method::DELETE, &url, None, None, Bytes::new())
            .await;
        log.extend(drain(&mut rx));
    }
    outcome
}
