//! The oracle: checks every answer of a session against RFC 9725 (as `docs/whip-rules.md` states it).
//! Pure: it reads the exchanges a session made, with their send and receive instants, after
//! the session ended, and does no I/O.
//!
//! # How PATCH answers are judged
//!
//! A server applies a session's requests one at a time, each at some instant between its sending
//! and its answer (linearizability; the bridge's per-session actor gives exactly that). Every
//! `200` to an ICE restart starts a new *ICE session* `g` with the credentials the restart
//! carried and the tag the `200` returned; it became current somewhere in the restart's window
//! `[sent, received]`, and stayed current until the next one did. So a PATCH sent at `s` and
//! answered at `r` may have met any ICE session `g` with `g.start_sent < r` and
//! `next(g).received > s`, and its answer must be what the server owes it against one of them:
//!
//! | PATCH carries | ICE session `g` | answer owed |
//! | --- | --- | --- |
//! | ufrag/pwd other than `g`'s, `If-Match: *` | restart | 200, ETag strong, quoted, new |
//! | ufrag/pwd other than `g`'s, no `If-Match` | | 428 |
//! | ufrag/pwd other than `g`'s, a tag | | 412 |
//! | `g`'s ufrag/pwd (or none), `g`'s tag | trickle | 204, no ETag |
//! | `g`'s ufrag/pwd, another tag | stale | 412 |
//! | `g`'s ufrag/pwd, `*` | | 412 (lenient server: 204) |
//! | `g`'s ufrag/pwd, no `If-Match` | | 428 (lenient server: 204) |
//!
//! Hence: a PATCH with the current tag gets 204 unless a restart was in flight while it was; a
//! PATCH with a superseded tag (sent after the restart's 200 arrived) gets 412; of two copies of
//! one restart exactly one gets 200; a late pre-restart PATCH (old ufrag, old tag) gets 412 and is
//! never taken for a restart. Once a restart's outcome is unknown (no answer, or 503), later
//! PATCHes of the session are not judged (counted as unchecked).
//!
//! # Other rules
//!
//! * POST: 201 with `Location` (unique across the run), a strong quoted `ETag`, an
//!   `application/sdp` answer whose every media section is `recvonly`, with ICE credentials, a
//!   fingerprint, the server's candidates (a server never trickles) and `a=setup` `active` or
//!   `passive`, `active` to a `passive` offer and `passive` to an `active` one (RFC 8842). 307
//!   carries `Location`; 301/302/303/308 are wrong (WHIP redirects with 307 only). 429 and 503
//!   carry `Retry-After`. Our offers are valid, so a 4xx (but 401/403) refusing one is a
//!   violation.
//! * DELETE: 200, and every request sent after a DELETE's 200 arrived gets 404. Copies of a
//!   DELETE sent together may get 200 or 404, but not all 404.
//! * A 404 before any DELETE means the server ended the session (consent freshness, connect
//!   timeout): a failure of the session, not a protocol violation.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use hyper::Method;

use crate::sdp::{IceCredentials, SdpFrag, resolve_location};
use crate::whip_client::{Exchange, Response};

/// What the server is expected to do with trickle PATCHes that lack the current tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EtagMode {
    /// RFC 9725: a trickle PATCH needs the current tag.
    #[default]
    Strict,
    /// Also accepts a trickle PATCH with no `If-Match`, or `*` and unchanged credentials.
    Lenient,
}

/// A broken protocol rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Violation {
    /// A valid offer refused with a 4xx.
    OfferRefused,
    /// 201 without `Location`.
    MissingLocation,
    /// Two sessions got the same `Location`.
    LocationReused,
    /// 201 without `ETag`.
    MissingEtag,
    /// An `ETag` that is weak, unquoted or `*`.
    EtagNotStrong,
    /// The answer is not `application/sdp`.
    AnswerNotSdp,
    /// A media section of the answer is not `recvonly`.
    AnswerNotRecvonly,
    /// The answer lacks ICE credentials or a fingerprint.
    AnswerIncomplete,
    /// The answer has no candidates (a server never trickles).
    AnswerWithoutCandidates,
    /// The answer's `a=setup` is `actpass` or not the complement of the offer's.
    AnswerSetup,
    /// A redirect other than 307.
    RedirectNot307,
    /// A 307 without `Location`.
    RedirectWithoutLocation,
    /// A 429 or 503 without `Retry-After`.
    RetryAfterMissing,
    /// A PATCH with a superseded or foreign tag (or `*` on a trickle) was accepted.
    StaleTagAccepted,
    /// A PATCH without `If-Match` was accepted by a strict server.
    MissingIfMatchAccepted,
    /// A trickle PATCH with the current tag, with no restart in flight, was refused.
    CurrentTagRefused,
    /// An ICE restart with `If-Match: *` and new credentials was refused.
    RestartRefused,
    /// A trickle PATCH was answered as an ICE restart.
    TrickleTakenForRestart,
    /// An ICE restart was answered as a trickle.
    RestartTakenForTrickle,
    /// Two copies of one restart both got 200.
    RestartReplayed,
    /// 412 where 428 was owed, or the other way round.
    WrongPreconditionStatus,
    /// A 204 carrying an `ETag`.
    EtagOn204,
    /// A restart's 200 without `ETag`.
    RestartWithoutEtag,
    /// A restart's 200 with a tag the session had before.
    EtagReused,
    /// A restart's 200 whose body is not an sdpfrag with ICE credentials.
    RestartAnswerInvalid,
    /// A restart's 200 with the server's old ICE credentials.
    RestartKeptCredentials,
    /// A DELETE answered with neither 200 nor 404.
    DeleteRefused,
    /// A request sent after the session was deleted did not get 404.
    NotGoneAfterDelete,
    /// A 5xx other than 503.
    ServerError,
    /// Any other status the rules do not allow.
    UnexpectedStatus,
}

impl Violation {
    /// Name in reports and SLO expressions.
    pub fn name(self) -> &'static str {
        match self {
            Violation::OfferRefused => "offer_refused",
            Violation::MissingLocation => "missing_location",
            Violation::LocationReused => "location_reused",
            Violation::MissingEtag => "missing_etag",
            Violation::EtagNotStrong => "etag_not_strong",
            Violation::AnswerNotSdp => "answer_not_sdp",
            Violation::AnswerNotRecvonly => "answer_not_recvonly",
            Violation::AnswerIncomplete => "answer_incomplete",
            Violation::AnswerWithoutCandidates => "answer_without_candidates",
            Violation::AnswerSetup => "answer_setup",
            Violation::RedirectNot307 => "redirect_not_307",
            Violation::RedirectWithoutLocation => "redirect_without_location",
            Violation::RetryAfterMissing => "retry_after_missing",
            Violation::StaleTagAccepted => "stale_tag_accepted",
            Violation::MissingIfMatchAccepted => "missing_if_match_accepted",
            Violation::CurrentTagRefused => "current_tag_refused",
            Violation::RestartRefused => "restart_refused",
            Violation::TrickleTakenForRestart => "trickle_taken_for_restart",
            Violation::RestartTakenForTrickle => "restart_taken_for_trickle",
            Violation::RestartReplayed => "restart_replayed",
            Violation::WrongPreconditionStatus => "wrong_precondition_status",
            Violation::EtagOn204 => "etag_on_204",
            Violation::RestartWithoutEtag => "restart_without_etag",
            Violation::EtagReused => "etag_reused",
            Violation::RestartAnswerInvalid => "restart_answer_invalid",
            Violation::RestartKeptCredentials => "restart_kept_credentials",
            Violation::DeleteRefused => "delete_refused",
            Violation::NotGoneAfterDelete => "not_gone_after_delete",
            Violation::ServerError => "server_error",
            Violation::UnexpectedStatus => "unexpected_status",
        }
    }
}

/// Why a session did not run its plan to the end (not a protocol violation by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Failure {
    /// No answer: connect error, reset, timeout.
    Transport,
    /// The POST never got a 201.
    NotCreated,
    /// 401 or 403.
    Unauthorized,
    /// 429 or 503 on a PATCH or DELETE, or POST retries exhausted.
    Overloaded,
    /// A 404 before any DELETE: the server ended the session.
    Gone,
    /// ICE/DTLS did not connect (`--connect`).
    IceFailed,
    /// An ICE restart did not reconnect (`--connect`).
    IceReconnectFailed,
    /// The WHIP client gave up on an answer it could not use (`--connect`).
    Client,
}

impl Failure {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Transport => "transport",
            Failure::NotCreated => "not_created",
            Failure::Unauthorized => "unauthorized",
            Failure::Overloaded => "overloaded",
            Failure::Gone => "gone",
            Failure::IceFailed => "ice_failed",
            Failure::IceReconnectFailed => "ice_reconnect_failed",
            Failure::Client => "client",
        }
    }
}

/// One broken rule, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub kind: Violation,
    /// What was sent and what came back.
    pub detail: String,
}

/// The oracle's judgement of one session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Broken rules.
    pub findings: Vec<Finding>,
    /// The first failure, with a reason.
    pub failure: Option<(Failure, String)>,
    /// PATCHes not judged because an earlier restart's outcome is unknown.
    pub unchecked: u64,
}

impl Verdict {
    fn find(&mut self, kind: Violation, detail: String) {
        self.findings.push(Finding { kind, detail });
    }

    fn fail(&mut self, failure: Failure, reason: String) {
        self.failure.get_or_insert((failure, reason));
    }

    /// No violations and no failure.
    pub fn ok(&self) -> bool {
        self.findings.is_empty() && self.failure.is_none()
    }
}

/// The checker for one run: it remembers every `Location` handed out.
#[derive(Debug, Default)]
pub struct Oracle {
    mode: EtagMode,
    locations: HashSet<String>,
}

/// One ICE session of a WHIP session, as the answers reveal it.
#[derive(Debug)]
struct IceSession {
    /// The client's credentials (None: the request had none).
    creds: Option<IceCredentials>,
    /// The opaque tag (no quotes), None when the answer had none.
    tag: Option<String>,
    /// When the request that started it was sent (None for the POST's).
    sent: Option<Instant>,
    /// When its answer arrived.
    received: Instant,
    /// The PATCH (index among the session's PATCHes) whose 200 started it.
    creator: Option<usize>,
}

/// Where a PATCH stands in its session.
#[derive(Debug, Clone, Copy)]
struct PatchAt {
    /// Its index among the session's PATCHes (by send time).
    index: usize,
    /// When the first DELETE's 200 arrived.
    deleted_at: Option<Instant>,
    /// When the first restart whose outcome is unknown was sent.
    uncertain_from: Option<Instant>,
}

/// If-Match as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IfMatch {
    None,
    Star,
    Tag(String),
}

impl IfMatch {
    fn of(header: Option<&str>) -> Self {
        match header.map(str::trim) {
            None => IfMatch::None,
            Some("*" | "\"*\"") => IfMatch::Star,
            Some(tag) => IfMatch::Tag(opaque(tag).to_owned()),
        }
    }
}

/// The opaque part of an entity tag (quotes and `W/` dropped), for lenient comparison.
fn opaque(tag: &str) -> &str {
    let t = tag.trim();
    t.strip_prefix("W/").unwrap_or(t).trim_matches('"')
}

/// A strong, quoted entity tag that is not `*`.
fn strong_quoted(tag: &str) -> bool {
    tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"') && opaque(tag) != "*"
}

fn describe(e: &Exchange) -> String {
    let status = e
        .status()
        .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
    let if_match = e
        .if_match
        .as_deref()
        .map_or_else(|| "no If-Match".to_owned(), |t| format!("If-Match {t}"));
    let ufrag = SdpFrag::parse(&String::from_utf8_lossy(&e.body))
        .credentials
        .map(|c| format!(", ufrag {}", c.ufrag))
        .unwrap_or_default();
    format!("{} {} ({if_match}{ufrag}) got {status}", e.method, e.url)
}

fn retry_after_ok(r: &Response) -> bool {
    r.header("retry-after")
        .is_some_and(|v| !v.trim().is_empty())
}

fn creds_of(e: &Exchange) -> Option<IceCredentials> {
    SdpFrag::parse(&String::from_utf8_lossy(&e.body)).credentials
}

impl Oracle {
    /// An oracle expecting `mode` on trickle PATCHes.
    pub fn new(mode: EtagMode) -> Self {
        Self {
            mode,
            locations: HashSet::new(),
        }
    }

    /// Judges one session from all its exchanges (in any order). `session` labels the findings.
    pub fn check(&mut self, session: &str, exchanges: &[Exchange]) -> Verdict {
        let mut v = Verdict::default();
        let mut all: Vec<&Exchange> = exchanges.iter().collect();
        all.sort_by_key(|e| e.sent);
        let (posts, rest): (Vec<&Exchange>, Vec<&Exchange>) =
            all.into_iter().partition(|e| e.method == Method::POST);
        let Some(first) = self.check_posts(session, &posts, &mut v) else {
            if v.failure.is_none() {
                v.fail(Failure::NotCreated, format!("session {session}: no 201"));
            }
            return v;
        };
        let patches: Vec<&Exchange> = rest
            .iter()
            .copied()
            .filter(|e| e.method == Method::PATCH)
            .collect();
        let deletes: Vec<&Exchange> = rest
            .iter()
            .copied()
            .filter(|e| e.method == Method::DELETE)
            .collect();
        let deleted_at = deletes
            .iter()
            .filter(|d| d.status() == Some(200))
            .map(|d| d.received)
            .min();
        let history = self.history(session, first, &patches, &mut v);
        let uncertain_from = patches
            .iter()
            .filter(|p| {
                let restart_like = IfMatch::of(p.if_match.as_deref()) == IfMatch::Star;
                let unknown = match p.status() {
                    None => true,
                    Some(s) => s == 503 || s == 429 || s >= 500,
                };
                restart_like && unknown
            })
            .map(|p| p.sent)
            .min();
        for (index, p) in patches.iter().enumerate() {
            let at = PatchAt {
                index,
                deleted_at,
                uncertain_from,
            };
            self.check_patch(session, p, at, &history, &deletes, &mut v);
        }
        check_deletes(session, &deletes, &mut v);
        v
    }

    /// POST attempts in order; returns the ICE session the 201 created.
    fn check_posts(
        &mut self,
        session: &str,
        posts: &[&Exchange],
        v: &mut Verdict,
    ) -> Option<IceSession> {
        let mut created = None;
        for e in posts {
            let r = match &e.outcome {
                Ok(r) => r,
                Err(err) => {
                    v.fail(
                        Failure::Transport,
                        format!("session {session}: POST: {err}"),
                    );
                    continue;
                }
            };
            let what = || format!("session {session}: {}", describe(e));
            match r.status {
                201 => created = self.check_created(session, e, r, v),
                307 => {
                    if r.header("location").is_none() {
                        v.find(Violation::RedirectWithoutLocation, what());
                    }
                }
                301 | 302 | 303 | 308 => v.find(Violation::RedirectNot307, what()),
                429 | 503 => {
                    if !retry_after_ok(r) {
                        v.find(Violation::RetryAfterMissing, what());
                    }
                    v.fail(Failure::Overloaded, what());
                }
                401 | 403 => v.fail(Failure::Unauthorized, what()),
                400..=499 => v.find(
                    Violation::OfferRefused,
                    format!("{}: {}", what(), r.body_excerpt()),
                ),
                500..=599 => v.find(Violation::ServerError, what()),
                _ => v.find(Violation::UnexpectedStatus, what()),
            }
        }
        if created.is_some() {
            // Retries that ended in a 201 are not a failure of the session.
            if matches!(
                v.failure,
                Some((Failure::Overloaded | Failure::Transport, _))
            ) {
                v.failure = None;
            }
        }
        created
    }

    fn check_created(
        &mut self,
        session: &str,
        e: &Exchange,
        r: &Response,
        v: &mut Verdict,
    ) -> Option<IceSession> {
        let what = |s: &str| format!("session {session}: POST {} got 201 {s}", e.url);
        match r.header("location") {
            None => v.find(Violation::MissingLocation, what("without Location")),
            Some(loc) => {
                let url = resolve_location(&e.url, loc).unwrap_or_else(|| loc.to_owned());
                if !self.locations.insert(url.clone()) {
                    v.find(
                        Violation::LocationReused,
                        what(&format!("with Location {url}, given out before")),
                    );
                }
            }
        }
        let tag = match r.header("etag") {
            None => {
                v.find(Violation::MissingEtag, what("without ETag"));
                None
            }
            Some(t) => {
                if !strong_quoted(t) {
                    v.find(Violation::EtagNotStrong, what(&format!("with ETag {t}")));
                }
                Some(opaque(t).to_owned())
            }
        };
        let ct = r.header("content-type").unwrap_or_default();
        if !ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/sdp")
        {
            v.find(
                Violation::AnswerNotSdp,
                what(&format!("with Content-Type {ct:?}")),
            );
        }
        let answer = String::from_utf8_lossy(&r.body);
        let offer = String::from_utf8_lossy(&e.body);
        for (kind, problem) in answer_problems(&offer, &answer) {
            v.find(kind, what(&problem));
        }
        Some(IceSession {
            creds: creds_of(e),
            tag,
            sent: None,
            received: e.received,
            creator: None,
        })
    }

    /// The ICE sessions in order: the POST's, then one per 200 to a PATCH.
    fn history(
        &self,
        session: &str,
        first: IceSession,
        patches: &[&Exchange],
        v: &mut Verdict,
    ) -> Vec<IceSession> {
        let mut history = vec![first];
        let mut tags: Vec<String> = history.iter().filter_map(|g| g.tag.clone()).collect();
        let mut server_ufrag: Option<String> = None;
        for (index, p) in patches.iter().enumerate() {
            let Ok(r) = &p.outcome else { continue };
            if r.status != 200 {
                continue;
            }
            let what = |s: &str| format!("session {session}: {} {s}", describe(p));
            let creds = creds_of(p);
            if history.last().is_some_and(|g| g.creds == creds) {
                v.find(
                    Violation::RestartReplayed,
                    what("for credentials already current"),
                );
                continue;
            }
            let tag = match r.header("etag") {
                None => {
                    v.find(Violation::RestartWithoutEtag, what("without ETag"));
                    None
                }
                Some(t) => {
                    if !strong_quoted(t) {
                        v.find(Violation::EtagNotStrong, what(&format!("with ETag {t}")));
                    }
                    let o = opaque(t).to_owned();
                    if tags.contains(&o) {
                        v.find(
                            Violation::EtagReused,
                            what(&format!("with ETag {t}, used before")),
                        );
                    }
                    tags.push(o.clone());
                    Some(o)
                }
            };
            let ct = r.header("content-type").unwrap_or_default();
            let frag = SdpFrag::parse(&String::from_utf8_lossy(&r.body));
            let sdpfrag = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/trickle-ice-sdpfrag");
            match frag.credentials {
                Some(c) if sdpfrag => {
                    if server_ufrag.as_deref() == Some(c.ufrag.as_str()) {
                        v.find(
                            Violation::RestartKeptCredentials,
                            what(&format!("with the old server ufrag {}", c.ufrag)),
                        );
                    }
                    server_ufrag = Some(c.ufrag);
                }
                _ => v.find(
                    Violation::RestartAnswerInvalid,
                    what(&format!(
                        "with Content-Type {ct:?} and body {:?}",
                        r.body_excerpt()
                    )),
                ),
            }
            history.push(IceSession {
                creds,
                tag,
                sent: Some(p.sent),
                received: p.received,
                creator: Some(index),
            });
        }
        history
    }

    /// The statuses the server may give `p` against ICE session `g`; None when unknowable.
    fn owed(&self, p: &Exchange, g: &IceSession) -> Option<Vec<u16>> {
        let same_creds = match (creds_of(p), &g.creds) {
            (None, _) => true,
            (Some(a), Some(b)) => a == *b,
            (Some(_), None) => return None,
        };
        let lenient = self.mode == EtagMode::Lenient;
        Some(match (same_creds, IfMatch::of(p.if_match.as_deref())) {
            (false, IfMatch::None) => vec![428],
            (false, IfMatch::Star) => vec![200],
            (false, IfMatch::Tag(_)) => vec![412],
            (true, IfMatch::None) if lenient => vec![204],
            (true, IfMatch::None) => vec![428],
            (true, IfMatch::Star) if lenient => vec![204],
            (true, IfMatch::Star) => vec![412],
            (true, IfMatch::Tag(t)) => match &g.tag {
                None => return None,
                Some(current) if *current == t => vec![204],
                Some(_) => vec![412],
            },
        })
    }

    fn check_patch(
        &self,
        session: &str,
        p: &Exchange,
        at: PatchAt,
        history: &[IceSession],
        deletes: &[&Exchange],
        v: &mut Verdict,
    ) {
        let PatchAt {
            index,
            deleted_at,
            uncertain_from,
        } = at;
        let what = || format!("session {session}: {}", describe(p));
        let r = match &p.outcome {
            Ok(r) => r,
            Err(err) => {
                v.fail(Failure::Transport, format!("{}: {err}", what()));
                return;
            }
        };
        if deleted_at.is_some_and(|d| d <= p.sent) {
            if r.status != 404 {
                v.find(
                    Violation::NotGoneAfterDelete,
                    format!("{}, expected 404", what()),
                );
            }
            return;
        }
        match r.status {
            404 => {
                // Racing our own DELETE, 404 is fine; before any DELETE it means the server
                // ended the session.
                if !deletes.iter().any(|d| d.sent <= p.received) {
                    v.fail(Failure::Gone, what());
                }
                return;
            }
            429 | 503 => {
                if !retry_after_ok(r) {
                    v.find(Violation::RetryAfterMissing, what());
                }
                v.fail(Failure::Overloaded, what());
                return;
            }
            401 | 403 => {
                v.fail(Failure::Unauthorized, what());
                return;
            }
            500..=599 => {
                v.find(
                    Violation::ServerError,
                    format!("{}: {}", what(), r.body_excerpt()),
                );
                return;
            }
            _ => {}
        }
        if r.status == 204 && r.header("etag").is_some() {
            v.find(Violation::EtagOn204, what());
        }
        if uncertain_from.is_some_and(|u| u < p.received) {
            v.unchecked += 1;
            return;
        }
        let mut owed: Vec<u16> = Vec::new();
        for (i, g) in history.iter().enumerate() {
            // The request that started an ICE session was applied before it existed.
            if g.creator == Some(index) {
                continue;
            }
            let started_in_time = g.sent.is_none_or(|s| s < p.received);
            let still_current = history.get(i + 1).is_none_or(|next| next.received > p.sent);
            if !(started_in_time && still_current) {
                continue;
            }
            match self.owed(p, g) {
                Some(statuses) => owed.extend(statuses),
                None => {
                    v.unchecked += 1;
                    return;
                }
            }
        }
        owed.sort_unstable();
        owed.dedup();
        if owed.contains(&r.status) {
            return;
        }
        let kind = classify(r.status, &owed, IfMatch::of(p.if_match.as_deref()));
        v.find(kind, format!("{}, expected {owed:?}", what()));
    }
}

/// Names the rule a PATCH answer `status` broke when `owed` was allowed.
fn classify(status: u16, owed: &[u16], if_match: IfMatch) -> Violation {
    let success = matches!(status, 200 | 204);
    if status == 200 && owed.contains(&204) {
        Violation::TrickleTakenForRestart
    } else if success && if_match == IfMatch::None {
        Violation::MissingIfMatchAccepted
    } else if success && owed.iter().all(|s| matches!(s, 412 | 428)) {
        Violation::StaleTagAccepted
    } else if status == 204 && owed == [200] {
        Violation::RestartTakenForTrickle
    } else if owed == [204] && matches!(status, 412 | 428) {
        Violation::CurrentTagRefused
    } else if owed == [200] {
        Violation::RestartRefused
    } else if matches!(status, 412 | 428) && owed.iter().all(|s| matches!(s, 412 | 428)) {
        Violation::WrongPreconditionStatus
    } else {
        Violation::UnexpectedStatus
    }
}

fn check_deletes(session: &str, deletes: &[&Exchange], v: &mut Verdict) {
    let first_ok = deletes
        .iter()
        .filter(|d| d.status() == Some(200))
        .map(|d| d.received)
        .min();
    for d in deletes {
        let what = || format!("session {session}: {}", describe(d));
        let r = match &d.outcome {
            Ok(r) => r,
            Err(err) => {
                v.fail(Failure::Transport, format!("{}: {err}", what()));
                continue;
            }
        };
        let after_delete = first_ok.is_some_and(|t| t <= d.sent);
        match r.status {
            200 if after_delete => {
                v.find(
                    Violation::NotGoneAfterDelete,
                    format!("{}, expected 404", what()),
                );
            }
            200 => {}
            404 if first_ok.is_none() => v.fail(Failure::Gone, what()),
            404 => {}
            429 | 503 => {
                if !retry_after_ok(r) {
                    v.find(Violation::RetryAfterMissing, what());
                }
                v.fail(Failure::Overloaded, what());
            }
            401 | 403 => v.fail(Failure::Unauthorized, what()),
            500..=599 => v.find(Violation::ServerError, what()),
            _ => v.find(Violation::DeleteRefused, what()),
        }
    }
}

/// What is wrong with an SDP answer to `offer`.
fn answer_problems(offer: &str, answer: &str) -> Vec<(Violation, String)> {
    let mut problems = Vec::new();
    let mut sections: Vec<Vec<&str>> = Vec::new();
    let mut session_attrs: Vec<&str> = Vec::new();
    for line in answer.lines().map(str::trim) {
        if line.starts_with("m=") {
            sections.push(vec![line]);
        } else if let Some(attr) = line.strip_prefix("a=") {
            match sections.last_mut() {
                Some(s) => s.push(attr),
                None => session_attrs.push(attr),
            }
        }
    }
    if sections.is_empty() {
        problems.push((
            Violation::AnswerIncomplete,
            "with no media section".to_owned(),
        ));
        return problems;
    }
    const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
    let session_dir = session_attrs
        .iter()
        .find(|a| DIRECTIONS.contains(a))
        .copied();
    for s in &sections {
        let dir = s
            .iter()
            .find(|a| DIRECTIONS.contains(a))
            .copied()
            .or(session_dir)
            .unwrap_or("sendrecv");
        if dir != "recvonly" {
            problems.push((
                Violation::AnswerNotRecvonly,
                format!("with a {dir} section ({})", s.first().unwrap_or(&"")),
            ));
        }
    }
    let any = |prefix: &str| {
        session_attrs
            .iter()
            .chain(sections.iter().flatten())
            .any(|a| a.starts_with(prefix))
    };
    for needed in ["ice-ufrag:", "ice-pwd:", "fingerprint:"] {
        if !any(needed) {
            problems.push((Violation::AnswerIncomplete, format!("without a={needed}")));
        }
    }
    if !any("candidate:") {
        problems.push((
            Violation::AnswerWithoutCandidates,
            "without candidates".to_owned(),
        ));
    }
    let setup_of = |text: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("a=setup:"))
            .map(str::to_owned)
    };
    let offered = setup_of(offer).unwrap_or_else(|| "actpass".to_owned());
    match setup_of(answer).as_deref() {
        None => problems.push((Violation::AnswerIncomplete, "without a=setup".to_owned())),
        Some(answered) => {
            let fine = match offered.as_str() {
                "passive" => answered == "active",
                "active" => answered == "passive",
                _ => matches!(answered, "active" | "passive"),
            };
            if !fine {
                problems.push((
                    Violation::AnswerSetup,
                    format!("with a=setup:{answered} to an offer's a=setup:{offered}"),
                ));
            }
        }
    }
    problems
}

/// Counts of findings by kind, with the first examples of each.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Findings per kind.
    pub counts: BTreeMap<Violation, u64>,
    /// Up to `limit` details per kind.
    pub examples: BTreeMap<Violation, Vec<String>>,
    /// Examples kept per kind.
    pub limit: usize,
}

impl Tally {
    /// An empty tally keeping `limit` examples per kind.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Adds a verdict's findings; returns how many there were.
    pub fn add(&mut self, verdict: &Verdict) -> u64 {
        for f in &verdict.findings {
            *self.counts.entry(f.kind).or_default() += 1;
            let examples = self.examples.entry(f.kind).or_default();
            if examples.len() < self.limit {
                examples.push(f.detail.clone());
            }
        }
        verdict.findings.len() as u64
    }

    /// All findings.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use hyper::header::{HeaderMap, HeaderValue};

    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:aaaa\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaa\r\na=setup:actpass\r\na=sendonly\r\n";
    const ANSWER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:srv1\r\na=ice-pwd:ppppppppppppppppppppppp\r\na=fingerprint:sha-256 AA\r\na=setup:passive\r\na=recvonly\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
    const URL: &str = "http://h/whip/s";

    /// A clock in milliseconds from a fixed base.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        Response {
            status,
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn exchange(
        method: Method,
        if_match: Option<&str>,
        body: &str,
        (sent, received): (Instant, Instant),
        answer: Response,
    ) -> Exchange {
        Exchange {
            method,
            url: URL.into(),
            if_match: if_match.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
            sent,
            received,
            outcome: Ok(answer),
        }
    }

    fn frag(ufrag: &str) -> String {
        format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 4000 typ host\r\n",
            "p".repeat(22)
        )
    }

    fn post(c: &Clock) -> Exchange {
        exchange(
            Method::POST,
            None,
            OFFER
                .replace(
                    "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaa",
                    &format!("a=ice-pwd:{}", "p".repeat(22)),
                )
                .as_str(),
            (c.at(0), c.at(10)),
            response(
                201,
                &[
                    ("location", "/whip/s/1"),
                    ("etag", "\"t0\""),
                    ("content-type", "application/sdp"),
                ],
                ANSWER,
            ),
        )
    }

    fn restart_ok(c: &Clock, ufrag: &str, tag: &str, window: (u64, u64)) -> Exchange {
        exchange(
            Method::PATCH,
            Some("*"),
            &frag(ufrag),
            (c.at(window.0), c.at(window.1)),
            response(
                200,
                &[
                    ("etag", tag),
                    ("content-type", "application/trickle-ice-sdpfrag"),
                ],
                &frag(&format!("srv-{ufrag}")),
            ),
        )
    }

    fn trickle(
        c: &Clock,
        ufrag: &str,
        tag: Option<&str>,
        window: (u64, u64),
        status: u16,
    ) -> Exchange {
        exchange(
            Method::PATCH,
            tag,
            &frag(ufrag),
            (c.at(window.0), c.at(window.1)),
            response(status, &[], ""),
        )
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.findings.iter().map(|f| f.kind.name()).collect()
    }

    fn check(log: Vec<Exchange>) -> Verdict {
        Oracle::new(EtagMode::Strict).check("0", &log)
    }

    #[test]
    fn a_clean_session_passes() {
        let c = Clock(Instant::now());
        let v = check(vec![
            post(&c),
            trickle(&c, "aaaa", Some("\"t0\""), (20, 25), 204),
            trickle(&c, "aaaa", Some("t0"), (40, 45), 204),
            restart_ok(&c, "bbbb", "\"t1\"", (100, 110)),
            trickle(&c, "bbbb", Some("\"t1\""), (130, 135), 204),
            // A late pre-restart PATCH: old ufrag, old tag.
            trickle(&c, "aaaa", Some("\"t0\""), (140, 145), 412),
            trickle(&c, "bbbb", None, (150, 155), 428),
            exchange(
                Method::DELETE,
                None,
                "",
                (c.at(200), c.at(210)),
                response(200, &[], ""),
            ),
            trickle(&c, "bbbb", Some("\"t1\""), (220, 225), 404),
        ]);
        assert!(v.ok(), "{v:?}");
    }

    #[test]
    fn a_trickle_racing_a_restart_may_get_either_answer() {
        let c = Clock(Instant::now());
        for status in [204, 412] {
            let v = check(vec![
                post(&c),
                trickle(&c, "aaaa", Some("\"t0\""), (100, 112), status),
                restart_ok(&c, "bbbb", "\"t1\"", (101, 110)),
            ]);
            assert!(v.ok(), "{status}: {v:?}");
        }
        // But once the restart's 200 is in, the old tag is stale ...
        let v = check(vec![
            post(&c),
            restart_ok(&c, "bbbb", "\"t1\"", (100, 110)),
            trickle(&c, "aaaa", Some("\"t0\""), (111, 115), 204),
        ]);
        assert_eq!(kinds(&v), ["stale_tag_accepted"]);
        // ... and before the restart was sent, the current tag must be accepted.
        let v = check(vec![
            post(&c),
            trickle(&c, "aaaa", Some("\"t0\""), (50, 60), 412),
            restart_ok(&c, "bbbb", "\"t1\"", (100, 110)),
        ]);
        assert_eq!(kinds(&v), ["current_tag_refused"]);
    }

    #[test]
    fn duplicated_restarts_get_one_200() {
        let c = Clock(Instant::now());
        let copy = trickle(&c, "bbbb", Some("*"), (100, 111), 412);
        let v = check(vec![
            post(&c),
            restart_ok(&c, "bbbb", "\"t1\"", (100, 110)),
            copy,
        ]);
        assert!(v.ok(), "{v:?}");
        let v = check(vec![
            post(&c),
            restart_ok(&c, "bbbb", "\"t1\"", (100, 110)),
            restart_ok(&c, "bbbb", "\"t2\"", (100, 111)),
        ]);
        assert_eq!(kinds(&v), ["restart_replayed"]);
    }

    #[test]
    fn a_broken_server_is_caught() {
        let c = Clock(Instant::now());
        // MediaMTX-like: a late pre-restart PATCH restarts ICE again; restarts carry no ETag.
        let mut stale = restart_ok(&c, "aaaa", "\"x\"", (140, 145));
        stale.if_match = Some("\"t0\"".into());
        if let Ok(r) = &mut stale.outcome {
            r.headers.remove("etag");
        }
        let mut restart = restart_ok(&c, "bbbb", "\"t1\"", (100, 110));
        if let Ok(r) = &mut restart.outcome {
            r.headers.remove("etag");
        }
        let v = check(vec![
            post(&c),
            restart,
            stale,
            trickle(&c, "aaaa", None, (150, 155), 204),
        ]);
        let mut got = kinds(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                "missing_if_match_accepted",
                "restart_without_etag",
                "restart_without_etag",
                "stale_tag_accepted"
            ],
            "{v:?}"
        );
    }

    #[test]
    fn unknown_restart_outcome_stops_judging() {
        let c = Clock(Instant::now());
        let mut lost = trickle(&c, "bbbb", Some("*"), (100, 110), 0);
        lost.outcome = Err("timed out".into());
        let v = check(vec![
            post(&c),
            lost,
            trickle(&c, "aaaa", Some("\"t0\""), (120, 125), 412),
        ]);
        assert!(v.findings.is_empty(), "{v:?}");
        assert_eq!(v.unchecked, 1);
        assert_eq!(v.failure.map(|f| f.0), Some(Failure::Transport));
    }

    #[test]
    fn post_answer_rules() {
        let c = Clock(Instant::now());
        let mut bad = post(&c);
        if let Ok(r) = &mut bad.outcome {
            r.headers
                .insert("etag", HeaderValue::from_static("W/\"t0\""));
            r.headers.remove("location");
            r.body = Bytes::from(
                ANSWER
                    .replace("a=recvonly", "a=sendrecv")
                    .replace("a=setup:passive", "a=setup:actpass"),
            );
        }
        let mut v = check(vec![bad])
            .findings
            .into_iter()
            .map(|f| f.kind.name())
            .collect::<Vec<_>>();
        v.sort_unstable();
        assert_eq!(
            v,
            [
                "answer_not_recvonly",
                "answer_setup",
                "etag_not_strong",
                "missing_location"
            ]
        );
        // Locations must be unique across sessions.
        let mut oracle = Oracle::new(EtagMode::Strict);
        assert!(oracle.check("1", &[post(&c)]).ok());
        assert_eq!(kinds(&oracle.check("2", &[post(&c)])), ["location_reused"]);
    }

    #[test]
    fn lenient_servers_may_take_trickles_without_tags() {
        let c = Clock(Instant::now());
        let log = vec![post(&c), trickle(&c, "aaaa", None, (20, 25), 204)];
        assert!(Oracle::new(EtagMode::Lenient).check("0", &log).ok());
        assert_eq!(kinds(&check(log)), ["missing_if_match_accepted"]);
    }

    #[test]
    fn delete_storms() {
        let c = Clock(Instant::now());
        let del = |w: (u64, u64), s: u16| {
            exchange(
                Method::DELETE,
                None,
                "",
                (c.at(w.0), c.at(w.1)),
                response(s, &[], ""),
            )
        };
        let v = check(vec![
            post(&c),
            del((100, 110), 200),
            del((100, 111), 404),
            del((101, 109), 200),
            del((120, 121), 404),
        ]);
        assert!(v.ok(), "{v:?}");
        let v = check(vec![post(&c), del((100, 110), 200), del((120, 121), 200)]);
        assert_eq!(kinds(&v), ["not_gone_after_delete"]);
        let v = check(vec![post(&c), del((100, 110), 404)]);
        assert_eq!(v.failure.map(|f| f.0), Some(Failure::Gone));
    }
}
