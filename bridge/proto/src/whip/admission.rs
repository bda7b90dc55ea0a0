//! How long a POST refused for want of a set-up slot is told to wait (`Retry-After`).
//!
//! A fixed `Retry-After: 1` turns sustained overload into a retry storm: every client refused
//! comes back each second, so a backlog of B clients sends B POSTs a second to a bridge that
//! sets up C. Measured (release build, 2 cores, 3,000 POSTs/s for 20 s against a bridge that
//! sets up about 1,000/s): 626,751 refusals for 60,000 sessions, and the refusals' own cost took
//! the machine, so that admitted POSTs waited seconds.
//!
//! The clients refused in a second, times the wait they were given, is the backlog B; it drains
//! in B / C seconds. So the wait is scaled each second by refused / set up (smoothed, bounded):
//! it grows while the bridge refuses more than it sets up, shrinks while it refuses fewer, and
//! is 1 s again after a second without refusals. At the fixed point about as many POSTs are
//! refused as are set up.

use std::time::{Duration, Instant};

/// Shortest and longest wait given, seconds.
const MIN_SECS: f64 = 1.0;
const MAX_SECS: f64 = 30.0;
/// How often the wait is revised: the counts are per window.
const WINDOW: Duration = Duration::from_secs(1);

/// Counts refusals and set-ups per window and revises the wait from them.
#[derive(Debug, Clone)]
pub struct RetryPacer {
    window_start: Option<Instant>,
    refused: u64,
    set_up: u64,
    secs: f64,
}

impl Default for RetryPacer {
    fn default() -> Self {
        Self {
            window_start: None,
            refused: 0,
            set_up: 0,
            secs: MIN_SECS,
        }
    }
}

impl RetryPacer {
    /// A POST was refused at `now`; returns the `Retry-After` to give it, whole seconds.
    pub fn refused(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.refused += 1;
        // Rounded up: a client must not come back before the backlog ahead of it is served.
        self.secs.ceil() as u64
    }

    /// A session was set up at `now`.
    pub fn set_up(&mut self, now: Instant) {
        self.roll(now);
        self.set_up += 1;
    }

    /// Closes the window if `now` is past it, revising the wait.
    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        // A window without refusals (the backlog is served), or a spell with no traffic at all
        // (which tells nothing): start afresh.
        if self.refused == 0 || elapsed >= 2 * WINDOW {
            self.secs = MIN_SECS;
        } else {
            // No set-up finished in the window: the backlog drains no faster than one a window.
            let target = self.secs * self.refused as f64 / self.set_up.max(1) as f64;
            // Halfway to the target: one window's counts are noisy, and a client told to wait
            // comes back only after that wait.
            self.secs = ((self.secs + target) / 2.0).clamp(MIN_SECS, MAX_SECS);
        }
        self.window_start = Some(now);
        self.refused = 0;
        self.set_up = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `windows` windows of `refused` refusals and `set_up` set-ups; the last wait given.
    fn drive(p: &mut RetryPacer, t: &mut Instant, windows: u32, refused: u64, set_up: u64) -> u64 {
        let mut last = 0;
        for _ in 0..windows {
            for _ in 0..set_up {
                p.set_up(*t);
            }
            for _ in 0..refused {
                last = p.refused(*t);
            }
            *t += WINDOW;
        }
        last
    }

    #[test]
    fn one_second_until_the_bridge_refuses_more_than_it_sets_up() {
        let (mut p, mut t) = (RetryPacer::default(), Instant::now());
        assert_eq!(p.refused(t), 1);
        assert_eq!(drive(&mut p, &mut t, 5, 100, 1000), 1);
        assert_eq!(drive(&mut p, &mut t, 5, 1000, 1000), 1);
    }

    #[test]
    fn grows_under_sustained_overload_bounded_then_falls_back() {
        let (mut p, mut t) = (RetryPacer::default(), Instant::now());
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(drive(&mut p, &mut t, 1, 4000, 1000));
        }
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(waits[5] > 5, "{waits:?}");
        assert_eq!(drive(&mut p, &mut t, 20, 40_000, 1000), MAX_SECS as u64);
        // Refusals stop: back to 1 s.
        drive(&mut p, &mut t, 1, 0, 1000);
        assert_eq!(drive(&mut p, &mut t, 1, 1, 1000), 1);
    }

    #[test]
    fn settles_where_refusals_match_set_ups() {
        // A backlog of 20,000 clients, each back after the wait it was given: the refusals a
        // window sees are the backlog over the wait.
        let (mut p, mut t) = (RetryPacer::default(), Instant::now());
        let (backlog, capacity) = (20_000.0, 1000);
        let mut wait = 1.0;
        for _ in 0..30 {
            let refused = (backlog / wait) as u64;
            wait = drive(&mut p, &mut t, 1, refused, capacity) as f64;
        }
        assert!((15.0..=25.0).contains(&wait), "{wait}");
    }

    #[test]
    fn an_idle_spell_starts_afresh() {
        let (mut p, mut t) = (RetryPacer::default(), Instant::now());
        drive(&mut p, &mut t, 10, 10_000, 100);
        t += Duration::from_secs(10);
        assert_eq!(p.refused(t), 1);
    }
}
