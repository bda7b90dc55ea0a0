//! POST rate limit per client address (RFC 9725 §5): a fixed one-second window, pure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Counts requests per address in the current one-second window.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    window_start: Option<Instant>,
    counts: HashMap<IpAddr, u32>,
}

impl RateLimiter {
    /// Allows `per_second` requests per address per second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window_start: None,
            counts: HashMap::new(),
        }
    }

    /// Records a request at `now`; `Err(retry_after)` when over the limit.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            // A new window forgets every address: the map never outgrows one second of clients.
            self.window_start = Some(now);
            self.counts.clear();
        }
        let count = self.counts.entry(ip).or_insert(0);
        if *count >= self.per_second {
            return Err(Duration::from_secs(1).saturating_sub(elapsed.min(Duration::from_secs(1))));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_per_window() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut rl = RateLimiter::new(2);
        assert!(rl.check(a, t0).is_ok());
        assert!(rl.check(a, t0).is_ok());
        let wait = rl.check(a, t0 + Duration::from_millis(300)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(700));
        assert!(
            rl.check(b, t0 + Duration::from_millis(300)).is_ok(),
            "per address"
        );
        assert!(
            rl.check(a, t0 + Duration::from_secs(1)).is_ok(),
            "new window"
        );
    }
}
