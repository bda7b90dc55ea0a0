//! The WHIP session resource: entity tags, trickle and ICE restart (RFC 9725 §4.3).
//!
//! Pure: it decides, the session actor does. Randomness (new tags) is handed in, so every row of
//! the decision table is a plain test.

use std::collections::HashSet;

use super::sdpfrag::{Candidate, IceCredentials, SdpFrag};

/// How strictly `If-Match` is enforced on trickle PATCHes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtagMode {
    /// RFC 9725 as written: a trickle PATCH must carry the current tag.
    #[default]
    Strict,
    /// Also accept a trickle PATCH with no `If-Match`, or with `*` and unchanged credentials.
    Lenient,
}

/// A strong entity tag naming one ICE session of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// Wraps an opaque tag value (without quotes).
    pub fn new(opaque: impl Into<String>) -> Self {
        Self(opaque.into())
    }

    /// The header value: strong and quoted.
    pub fn header_value(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Compares leniently with a client-sent tag: quotes and a `W/` prefix are ignored.
    fn matches(&self, sent: &str) -> bool {
        let sent = sent.trim();
        let sent = sent.strip_prefix("W/").unwrap_or(sent);
        sent.trim_matches('"') == self.0
    }
}

/// What `If-Match` said.
fn is_wildcard(sent: &str) -> bool {
    matches!(sent.trim(), "*" | "\"*\"")
}

/// Why a PATCH is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchRefusal {
    /// No `If-Match` where one is required (428).
    #[error("If-Match is required on PATCH")]
    PreconditionRequired,
    /// A trickle PATCH whose tag is not the current one, e.g. sent before an ICE restart (412).
    #[error("If-Match does not name the current ICE session")]
    StaleTag,
    /// An ICE restart (new ufrag/pwd) without `If-Match: *` (412).
    #[error("an ICE restart requires If-Match: *")]
    RestartNeedsWildcard,
}

impl PatchRefusal {
    /// The HTTP status this maps to.
    pub fn status(self) -> u16 {
        match self {
            Self::PreconditionRequired => 428,
            Self::StaleTag | Self::RestartNeedsWildcard => 412,
        }
    }
}

/// What to do with an accepted PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchDecision {
    /// Same ICE session: add these (new, not yet seen) candidates. Answer 204.
    Trickle {
        /// Candidates not seen before in this ICE session.
        new_candidates: Vec<Candidate>,
        /// Accepted only because of `--etag lenient`.
        lenient: bool,
    },
    /// New remote credentials: restart ICE, then call [`WhipResource::commit_restart`]. Answer
    /// 200 with the new local fragment and a new tag. If the restart fails, call nothing: the old
    /// ICE session stays.
    Restart {
        /// The remote side's new credentials.
        remote: IceCredentials,
        /// The new ICE session's remote candidates (they replace the old set).
        candidates: Vec<Candidate>,
        /// The fragment already said end-of-candidates.
        end_of_candidates: bool,
    },
}

/// The entity-tag and candidate state of one WHIP session.
#[derive(Debug)]
pub struct WhipResource {
    etag: ETag,
    mode: EtagMode,
    remote: IceCredentials,
    seen: HashSet<String>,
    end_of_candidates: bool,
}

impl WhipResource {
    /// A resource just created by POST, with the offer's credentials and candidates.
    pub fn new(
        etag: ETag,
        mode: EtagMode,
        remote: IceCredentials,
        offer_candidates: &[Candidate],
    ) -> Self {
        Self {
            etag,
            mode,
            remote,
            seen: offer_candidates.iter().map(|c| c.key.clone()).collect(),
            end_of_candidates: false,
        }
    }

    /// The current entity tag.
    pub fn etag(&self) -> &ETag {
        &self.etag
    }

    /// The remote side's current credentials.
    pub fn remote(&self) -> &IceCredentials {
        &self.remote
    }

    /// Decides a PATCH. Trickle state is updated at once (a trickle cannot fail); a restart only
    /// when committed.
    pub fn decide_patch(
        &mut self,
        if_match: Option<&str>,
        frag: SdpFrag,
    ) -> Result<PatchDecision, PatchRefusal> {
        let restart = frag
            .credentials
            .as_ref()
            .is_some_and(|creds| *creds != self.remote);
        if restart {
            return match if_match {
                None => Err(PatchRefusal::PreconditionRequired),
                Some(tag) if is_wildcard(tag) => Ok(PatchDecision::Restart {
                    remote: frag.credentials.unwrap_or_else(|| self.remote.clone()),
                    candidates: dedup(frag.candidates),
                    end_of_candidates: frag.end_of_candidates,
                }),
                Some(_) => Err(PatchRefusal::RestartNeedsWildcard),
            };
        }
        let lenient = match if_match {
            Some(tag) if self.etag.matches(tag) => false,
            None if self.mode == EtagMode::Lenient => true,
            Some(tag) if self.mode == EtagMode::Lenient && is_wildcard(tag) => true,
            None => return Err(PatchRefusal::PreconditionRequired),
            Some(_) => return Err(PatchRefusal::StaleTag),
        };
        let new_candidates = if self.end_of_candidates {
            Vec::new()
        } else {
            frag.candidates
                .into_iter()
                .filter(|c| self.seen.insert(c.key.clone()))
                .collect()
        };
        self.end_of_candidates |= frag.end_of_candidates;
        Ok(PatchDecision::Trickle {
            new_candidates,
            lenient,
        })
    }

    /// Records a restart that the peer carried out: new credentials, new tag, the candidate set
    /// replaced.
    pub fn commit_restart(
        &mut self,
        remote: IceCredentials,
        candidates: &[Candidate],
        end_of_candidates: bool,
        etag: ETag,
    ) {
        self.remote = remote;
        self.seen = candidates.iter().map(|c| c.key.clone()).collect();
        self.end_of_candidates = end_of_candidates;
        self.etag = etag;
    }
}

fn dedup(candidates: Vec<Candidate>) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    candidates
        .into_iter()
        .filter(|c| seen.insert(c.key.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(ufrag: &str) -> IceCredentials {
        // Legal lengths (RFC 8839): 4+ characters of ufrag, 22+ of password.
        IceCredentials {
            ufrag: format!("{ufrag}frag"),
            pwd: format!("{ufrag}password0123456789abc"),
        }
    }

    fn frag(ufrag: Option<&str>, ports: &[u16], eoc: bool) -> SdpFrag {
        let mut body = String::new();
        if let Some(u) = ufrag {
            let c = creds(u);
            body += &format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", c.ufrag, c.pwd);
        }
        body += "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
        for p in ports {
            body += &format!("a=candidate:1 1 udp 2122260223 10.0.0.2 {p} typ host\r\n");
        }
        if eoc {
            body += "a=end-of-candidates\r\n";
        }
        SdpFrag::parse(body.as_bytes()).unwrap()
    }

    fn resource(mode: EtagMode) -> WhipResource {
        WhipResource::new(ETag::new("tag1"), mode, creds("old"), &[])
    }

    fn ports(decision: &PatchDecision) -> Vec<String> {
        let list = match decision {
            PatchDecision::Trickle { new_candidates, .. } => new_candidates,
            PatchDecision::Restart { candidates, .. } => candidates,
        };
        list.iter().map(|c| c.key.clone()).collect()
    }

    /// One row per line of the PATCH decision table in `docs/whip-rules.md`.
    #[test]
    fn patch_decision_table() {
        use EtagMode::*;
        type Row = (
            EtagMode,
            Option<&'static str>,
            Option<&'static str>,
            Result<&'static str, PatchRefusal>,
        );
        let rows: &[Row] = &[
            // (mode, If-Match, fragment ufrag, expected)
            (Strict, Some("\"tag1\""), Some("old"), Ok("trickle")),
            (Strict, Some("tag1"), Some("old"), Ok("trickle")),
            (Strict, Some("W/\"tag1\""), Some("old"), Ok("trickle")),
            (Strict, Some("\"tag1\""), None, Ok("trickle")),
            (
                Strict,
                None,
                Some("old"),
                Err(PatchRefusal::PreconditionRequired),
            ),
            (
                Strict,
                Some("\"tag0\""),
                Some("old"),
                Err(PatchRefusal::StaleTag),
            ),
            (Strict, Some("*"), Some("old"), Err(PatchRefusal::StaleTag)),
            (Strict, Some("*"), Some("new"), Ok("restart")),
            (Strict, Some("\"*\""), Some("new"), Ok("restart")),
            (
                Strict,
                None,
                Some("new"),
                Err(PatchRefusal::PreconditionRequired),
            ),
            (
                Strict,
                Some("\"tag1\""),
                Some("new"),
                Err(PatchRefusal::RestartNeedsWildcard),
            ),
            (Lenient, None, Some("old"), Ok("trickle-lenient")),
            (Lenient, Some("*"), Some("old"), Ok("trickle-lenient")),
            (
                Lenient,
                Some("\"tag0\""),
                Some("old"),
                Err(PatchRefusal::StaleTag),
            ),
            (
                Lenient,
                None,
                Some("new"),
                Err(PatchRefusal::PreconditionRequired),
            ),
        ];
        for (mode, if_match, ufrag, want) in rows {
            let mut r = resource(*mode);
            let got = r
                .decide_patch(*if_match, frag(*ufrag, &[5000], false))
                .map(|d| match d {
                    PatchDecision::Trickle { lenient: false, .. } => "trickle",
                    PatchDecision::Trickle { lenient: true, .. } => "trickle-lenient",
                    PatchDecision::Restart { .. } => "restart",
                });
            assert_eq!(
                got, *want,
                "mode {mode:?} If-Match {if_match:?} ufrag {ufrag:?}"
            );
        }
    }

    #[test]
    fn refusals_map_to_status_codes() {
        assert_eq!(PatchRefusal::PreconditionRequired.status(), 428);
        assert_eq!(PatchRefusal::StaleTag.status(), 412);
        assert_eq!(PatchRefusal::RestartNeedsWildcard.status(), 412);
    }

    #[test]
    fn trickle_is_idempotent_and_honours_end_of_candidates() {
        let mut r = resource(EtagMode::Strict);
        let d = r.decide_patch(Some("\"tag1\""), frag(Some("old"), &[1, 2], false));
        assert_eq!(ports(&d.unwrap()).len(), 2);
        let d = r.decide_patch(Some("\"tag1\""), frag(Some("old"), &[2, 3], true));
        assert_eq!(ports(&d.unwrap()), vec!["1 udp 10.0.0.2 3 host"]);
        let d = r.decide_patch(Some("\"tag1\""), frag(Some("old"), &[4], false));
        assert!(ports(&d.unwrap()).is_empty(), "after end-of-candidates");
    }

    #[test]
    fn restart_is_only_applied_when_committed() {
        let mut r = resource(EtagMode::Strict);
        let d = r
            .decide_patch(Some("*"), frag(Some("new"), &[7, 7], false))
            .unwrap();
        assert_eq!(
            ports(&d).len(),
            1,
            "duplicates inside one fragment collapse"
        );
        // Not committed (the peer failed to restart): the old session is untouched.
        assert_eq!(r.remote(), &creds("old"));
        assert_eq!(r.etag(), &ETag::new("tag1"));
        let PatchDecision::Restart {
            remote,
            candidates,
            end_of_candidates,
        } = d
        else {
            panic!("not a restart");
        };
        r.commit_restart(remote, &candidates, end_of_candidates, ETag::new("tag2"));
        assert_eq!(r.remote(), &creds("new"));
        assert_eq!(r.etag().header_value(), "\"tag2\"");
        // A late trickle from before the restart: old tag, old ufrag. Refused, nothing changes.
        let late = r.decide_patch(Some("\"tag1\""), frag(Some("old"), &[9], false));
        assert_eq!(late, Err(PatchRefusal::RestartNeedsWildcard));
        let late = r.decide_patch(Some("\"tag1\""), frag(Some("new"), &[9], false));
        assert_eq!(late, Err(PatchRefusal::StaleTag));
        assert_eq!(r.remote(), &creds("new"));
        // The candidate set was replaced: port 7 is known, port 5000 from before is new again.
        let d = r
            .decide_patch(Some("\"tag2\""), frag(Some("new"), &[7, 5000], false))
            .unwrap();
        assert_eq!(ports(&d), vec!["1 udp 10.0.0.2 5000 host"]);
    }
}
