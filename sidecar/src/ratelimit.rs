//! Per-address token buckets (dynamic client registration; unauthenticated lookups,
//! see [`crate::lookups`]). In memory, per replica: N replicas allow N times the
//! configured rate. Not a defence against a distributed flood, only against one
//! address (or one forwarded client address) hammering the server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    /// Tokens a new or rested address starts with.
    burst: f64,
    /// Tokens added per second.
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` requests per minute per address, with a burst of the same size.
    pub fn new(per_minute: u32) -> RateLimiter {
        let n = f64::from(per_minute.max(1));
        RateLimiter::with_burst(per_minute.max(1), n / 60.0)
    }

    /// A burst of `burst` requests per address, refilled at `per_second` (> 0).
    pub fn with_burst(burst: u32, per_second: f64) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            rate: if per_second > 0.0 { per_second } else { 1.0 },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; `Err(retry_after)` when the bucket is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let (capacity, rate) = (self.burst, self.rate);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 100_000 {
            // An address idle long enough to be full again needs no entry.
            let full_after = Duration::from_secs_f64((capacity / rate).min(86_400.0));
            buckets.retain(|_, (_, t)| now.duration_since(*t) < full_after);
        }
        let (tokens, last) = buckets.entry(ip).or_insert((capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - *tokens) / rate).ceil()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_then_refills() {
        let rl = RateLimiter::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check_at(ip, t0).is_ok());
        }
        let retry = rl.check_at(ip, t0).unwrap_err();
        assert!(retry.as_secs() >= 1 && retry.as_secs() <= 20, "{retry:?}");
        assert!(rl.check_at(other, t0).is_ok(), "buckets are per address");
        assert!(rl.check_at(ip, t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn burst_and_rate_are_separate() {
        let rl = RateLimiter::with_burst(20, 1.0);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(rl.check_at(ip, t0).is_ok(), "request {i} of the burst");
        }
        assert_eq!(rl.check_at(ip, t0), Err(Duration::from_secs(1)));
        assert!(rl.check_at(ip, t0 + Duration::from_secs(1)).is_ok());
        assert!(rl.check_at(ip, t0 + Duration::from_secs(1)).is_err());
    }
}
