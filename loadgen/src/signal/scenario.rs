//! What each session will do and when, decided before it starts: an open-loop plan.
//!
//! Every step has an intended time, an offset from the session's intended start. A step that
//! depends on an answer (a trickle needs the 201's tag) is sent at its intended time or when the
//! answer arrives, whichever is later, and its corrected latency is counted from the intended
//! time: a stalled POST thus shows in the trickle PATCHes that waited for it, which timing each
//! PATCH from its own send would hide.
//!
//! Plans are drawn from a generator seeded with the run's seed and the session number, so a run
//! is reproducible whatever the scheduling.
//!
//! Faults (each with its own ratio, drawn per session; the ones that need PATCHes only apply to
//! profiles that PATCH):
//!
//! | fault | what the session does | what RFC 9725 then requires |
//! | --- | --- | --- |
//! | reorder | holds its trickle PATCHes until the last one is due, then sends them last first, 2 ms apart, each on its own connection | 204 each (same tag) |
//! | duplicate | sends every PATCH (trickles and the restart) twice at once | trickles 204 twice; exactly one restart copy 200, the other 412 |
//! | no-if-match | sends one more trickle PATCH without `If-Match` | 428 (`--server-etag lenient`: 204) |
//! | stale-after-restart | forces a restart; after its 200, sends a pre-restart PATCH (old tag, old ufrag) | 412 |
//! | restart-race | forces a restart; its last trickle PATCH goes at the same instant as the restart | 204 or 412, whichever the server processed first |
//! | delete-storm | sends its DELETE 4 times at once, then a PATCH and a DELETE | one or more 200, the rest 404; then 404, 404 |
//! | post-flood | also POSTs 8 offers at once to `{i}-flood{k}` streams and DELETEs each created session | 201, or 429/503 with Retry-After |

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};

use super::profile::{Identity, Profile, ProfileChoice};
use crate::sdp::IceCredentials;

/// Copies of the DELETE a delete storm sends at once.
pub const STORM_DELETES: usize = 4;
/// Extra POSTs a post flood sends at once.
pub const FLOOD_POSTS: usize = 8;
/// Spacing of reordered PATCHes.
pub const REORDER_SPACING: Duration = Duration::from_millis(2);
/// A restart comes this long after the trickles, when there is no hold to put it in.
const RESTART_AFTER: Duration = Duration::from_millis(50);

/// The probability of each fault, per session.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRatios {
    /// See the module table.
    pub reorder: f64,
    /// See the module table.
    pub duplicate: f64,
    /// See the module table.
    pub stale_after_restart: f64,
    /// See the module table.
    pub no_if_match: f64,
    /// See the module table.
    pub restart_race: f64,
    /// See the module table.
    pub delete_storm: f64,
    /// See the module table.
    pub post_flood: f64,
}

/// The faults one session injects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// See the module table.
    pub reorder: bool,
    /// See the module table.
    pub duplicate: bool,
    /// See the module table.
    pub stale_after_restart: bool,
    /// See the module table.
    pub no_if_match: bool,
    /// See the module table.
    pub restart_race: bool,
    /// See the module table.
    pub delete_storm: bool,
    /// See the module table.
    pub post_flood: bool,
}

impl Faults {
    /// Names of the faults that are on, for the report.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.reorder, "reorder"),
            (self.duplicate, "duplicate"),
            (self.stale_after_restart, "stale_after_restart"),
            (self.no_if_match, "no_if_match"),
            (self.restart_race, "restart_race"),
            (self.delete_storm, "delete_storm"),
            (self.post_flood, "post_flood"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// How plans are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// Run seed.
    pub seed: u64,
    /// Client profile(s).
    pub profile: ProfileChoice,
    /// Trickle PATCHes per ICE session, inclusive range.
    pub trickle_patches: (u32, u32),
    /// Gap before each trickle PATCH, inclusive range.
    pub trickle_gap: (Duration, Duration),
    /// Fraction of (PATCHing) sessions that restart ICE.
    pub restart_ratio: f64,
    /// How long a session stays up once its candidates are sent.
    pub hold: Duration,
    /// Fault probabilities.
    pub faults: FaultRatios,
}

/// One trickle PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Offset from the session's intended start.
    pub at: Duration,
    /// Candidate lines (without `a=`).
    pub candidates: Vec<String>,
    /// Ends with `a=end-of-candidates`.
    pub end: bool,
}

/// An ICE restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// Offset from the session's intended start.
    pub at: Duration,
    /// The new credentials.
    pub credentials: IceCredentials,
    /// Candidates sent in the restart fragment itself (clients that do not trickle).
    pub candidates: Vec<String>,
    /// Trickle PATCHes after the restart's 200.
    pub trickle: Vec<Batch>,
}

/// Everything one session does.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// Session number (0-based).
    pub index: u64,
    /// The client.
    pub profile: Profile,
    /// The offer's credentials.
    pub credentials: IceCredentials,
    /// The offer.
    pub offer: String,
    /// Trickle PATCHes of the first ICE session.
    pub trickle: Vec<Batch>,
    /// The ICE restart, if any.
    pub restart: Option<RestartPlan>,
    /// Offset of the DELETE from the session's intended start.
    pub delete_at: Duration,
    /// Injected faults.
    pub faults: Faults,
    /// Offers for the post flood (empty without it).
    pub flood_offers: Vec<String>,
}

/// The generator of session `index`.
pub fn session_rng(seed: u64, index: u64) -> SmallRng {
    // Golden-ratio spacing keeps neighbouring sessions' streams unrelated.
    SmallRng::seed_from_u64(seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn draw(rng: &mut SmallRng, ratio: f64) -> bool {
    ratio > 0.0 && rng.random::<f64>() < ratio
}

fn in_range(rng: &mut SmallRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        lo
    } else {
        lo + Duration::from_secs_f64(rng.random::<f64>() * (hi - lo).as_secs_f64())
    }
}

fn trickle(
    id: &Identity,
    cfg: &PlanConfig,
    creds: &IceCredentials,
    from: Duration,
    rng: &mut SmallRng,
) -> Vec<Batch> {
    let (lo, hi) = cfg.trickle_patches;
    let n = if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    };
    let batches = id.trickle_batches(creds, n as usize, rng);
    let last = batches.len().saturating_sub(1);
    let mut at = from;
    batches
        .into_iter()
        .enumerate()
        .map(|(i, candidates)| {
            at += in_range(rng, cfg.trickle_gap);
            Batch {
                at,
                candidates,
                end: i == last,
            }
        })
        .collect()
}

/// Draws the plan of session `index`.
pub fn plan(cfg: &PlanConfig, id: &Identity, index: u64) -> SessionPlan {
    let mut rng = session_rng(cfg.seed, index);
    let profile = cfg.profile.pick(&mut rng);
    let credentials = profile.credentials(&mut rng);
    let offer = id.offer(profile, &credentials, &mut rng);
    let r = cfg.faults;
    let patches = profile.patches();
    let mut faults = Faults {
        reorder: draw(&mut rng, r.reorder) && profile.trickles(),
        duplicate: draw(&mut rng, r.duplicate) && patches,
        stale_after_restart: draw(&mut rng, r.stale_after_restart) && patches,
        no_if_match: draw(&mut rng, r.no_if_match) && patches,
        restart_race: draw(&mut rng, r.restart_race) && profile.trickles(),
        delete_storm: draw(&mut rng, r.delete_storm),
        post_flood: draw(&mut rng, r.post_flood),
    };
    let restarts = patches
        && (draw(&mut rng, cfg.restart_ratio) || faults.stale_after_restart || faults.restart_race);
    let trickle_batches = if profile.trickles() {
        trickle(id, cfg, &credentials, Duration::ZERO, &mut rng)
    } else {
        Vec::new()
    };
    // A reorder needs two PATCHes to swap, and a race one to race with.
    faults.reorder &= trickle_batches.len() >= 2;
    faults.restart_race &= !trickle_batches.is_empty();
    let setup_end = trickle_batches.last().map_or(Duration::ZERO, |b| b.at);
    let restart = restarts.then(|| {
        let at = setup_end + RESTART_AFTER.max(cfg.hold / 2);
        let credentials = profile.credentials(&mut rng);
        let trickle = if profile.trickles() {
            trickle(id, cfg, &credentials, at, &mut rng)
        } else {
            Vec::new()
        };
        RestartPlan {
            at,
            candidates: id.full_candidates(profile, &mut rng),
            credentials,
            trickle,
        }
    });
    let after_restart = restart.as_ref().map_or(Duration::ZERO, |r| {
        r.trickle.last().map_or(r.at, |b| b.at) + RESTART_AFTER
    });
    let delete_at = (setup_end + cfg.hold).max(after_restart);
    let flood_offers = if faults.post_flood {
        (0..FLOOD_POSTS)
            .map(|_| {
                let creds = profile.credentials(&mut rng);
                id.offer(profile, &creds, &mut rng)
            })
            .collect()
    } else {
        Vec::new()
    };
    SessionPlan {
        index,
        profile,
        credentials,
        offer,
        trickle: trickle_batches,
        restart,
        delete_at,
        faults,
        flood_offers,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn identity() -> Identity {
        Identity {
            fingerprint: "sha-256 AA".into(),
            candidate_ip: IpAddr::from([127, 0, 0, 1]),
            ports: vec![4000],
        }
    }

    fn config() -> PlanConfig {
        PlanConfig {
            seed: 42,
            profile: ProfileChoice::Chromium,
            trickle_patches: (2, 3),
            trickle_gap: (Duration::from_millis(20), Duration::from_millis(50)),
            restart_ratio: 0.0,
            hold: Duration::from_secs(2),
            faults: FaultRatios::default(),
        }
    }

    #[test]
    fn plans_are_reproducible_and_differ_per_session() {
        let id = identity();
        let cfg = config();
        assert_eq!(plan(&cfg, &id, 3), plan(&cfg, &id, 3));
        assert_ne!(
            plan(&cfg, &id, 3).credentials,
            plan(&cfg, &id, 4).credentials
        );
    }

    #[test]
    fn chromium_trickles_two_or_three_patches_20_to_50_ms_apart() {
        let id = identity();
        let cfg = config();
        for i in 0..200 {
            let p = plan(&cfg, &id, i);
            assert!((2..=3).contains(&p.trickle.len()));
            let mut prev = Duration::ZERO;
            for b in &p.trickle {
                let gap = b.at - prev;
                assert!(gap >= Duration::from_millis(20) && gap <= Duration::from_millis(50));
                prev = b.at;
            }
            assert!(p.trickle.last().is_some_and(|b| b.end));
            assert_eq!(p.delete_at, prev + cfg.hold);
            assert!(p.restart.is_none());
        }
    }

    #[test]
    fn ratios_are_honoured_and_faults_force_restarts() {
        let id = identity();
        let cfg = PlanConfig {
            restart_ratio: 0.1,
            faults: FaultRatios {
                reorder: 0.2,
                stale_after_restart: 0.05,
                ..FaultRatios::default()
            },
            ..config()
        };
        let plans: Vec<_> = (0..4000).map(|i| plan(&cfg, &id, i)).collect();
        let share = |f: &dyn Fn(&SessionPlan) -> bool| {
            plans.iter().filter(|p| f(p)).count() as f64 / plans.len() as f64
        };
        let reorder = share(&|p| p.faults.reorder);
        assert!((0.17..0.23).contains(&reorder), "{reorder}");
        assert!(
            plans
                .iter()
                .filter(|p| p.faults.stale_after_restart)
                .all(|p| p.restart.is_some())
        );
        // 10% drawn plus the stale ones that were not drawn anyway.
        let restarts = share(&|p| p.restart.is_some());
        assert!((0.12..0.17).contains(&restarts), "{restarts}");
        for p in plans.iter().filter_map(|p| p.restart.as_ref()) {
            assert!(!p.trickle.is_empty());
        }
    }

    #[test]
    fn profiles_that_never_patch_get_no_patch_faults() {
        let id = identity();
        let cfg = PlanConfig {
            profile: ProfileChoice::Obs,
            restart_ratio: 1.0,
            faults: FaultRatios {
                reorder: 1.0,
                duplicate: 1.0,
                stale_after_restart: 1.0,
                no_if_match: 1.0,
                restart_race: 1.0,
                delete_storm: 1.0,
                post_flood: 1.0,
            },
            ..config()
        };
        let p = plan(&cfg, &id, 0);
        assert!(p.trickle.is_empty() && p.restart.is_none());
        assert_eq!(
            p.faults.names().collect::<Vec<_>>(),
            ["delete_storm", "post_flood"]
        );
        assert_eq!(p.flood_offers.len(), FLOOD_POSTS);
        assert_eq!(p.delete_at, cfg.hold);
    }
}
