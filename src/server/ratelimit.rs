//! How often one client may call: a token bucket per client (its valid key, its signed-in
//! account, else its address). The gate (`gate.rs`) applies it to every route but health.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets per client: `rate` requests per second on average, bursts up to `burst`.
pub struct RateLimiter {
    pub rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Beyond this many tracked clients, idle (full) buckets are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `client` at time `now`; `Err(seconds)` says when to retry.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(client.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.check("a", t0).is_ok()));
        assert_eq!(limiter.check("a", t0), Err(1));
        assert!(limiter.check("b", t0).is_ok(), "clients are limited separately");
        assert!(limiter.check("a", t0 + Duration::from_millis(100)).is_ok(), "one token per 100 ms");
        assert!(limiter.check("a", t0 + Duration::from_millis(150)).is_err());
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.check("a", later).is_ok()), "refill is capped at the burst");
        assert!(limiter.check("a", later).is_err());
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let limiter = RateLimiter::new(0.1, 1.0);
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(10));
    }
}
