//! Failed sign-ins, counted per account and per client address: after `MAX_FAILURES` within
//! `WINDOW`, further attempts are refused (429 with `Retry-After`) until the oldest failure
//! ages out. Kept in memory per instance: a restart forgives, which errs towards letting people in.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Beyond this many tracked names, the stalest are forgotten (bounded memory under a spray).
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `Err(seconds)` when any of `names` (e.g. `user:ann`, `ip:10.0.0.1`) is locked out.
    pub fn check(&self, names: &[String], now: Instant) -> Result<(), u64> {
        let mut failures = self.failures.lock().unwrap();
        let mut wait = Duration::ZERO;
        for name in names {
            if let Some(times) = failures.get_mut(name) {
                while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
                    times.pop_front();
                }
                if times.len() >= MAX_FAILURES {
                    let oldest = times[times.len() - MAX_FAILURES];
                    wait = wait.max(WINDOW.saturating_sub(now.saturating_duration_since(oldest)));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    pub fn failed(&self, names: &[String], now: Instant) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < WINDOW));
        }
        for name in names {
            let times = failures.entry(name.clone()).or_default();
            times.push_back(now);
            while times.len() > MAX_FAILURES {
                times.pop_front();
            }
        }
    }

    /// A successful sign-in clears the account's count (not the address's).
    pub fn succeeded(&self, name: &str) {
        self.failures.lock().unwrap().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_out_until_the_oldest_ages_out() {
        let t = LoginThrottle::default();
        let t0 = Instant::now();
        let names = ["user:ann".to_string(), "ip:1.2.3.4".to_string()];
        for i in 0..MAX_FAILURES as u64 {
            assert!(t.check(&names, t0 + Duration::from_secs(i)).is_ok());
            t.failed(&names, t0 + Duration::from_secs(i));
        }
        let retry = t.check(&names, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, WINDOW.as_secs() - 10);
        assert!(t.check(&["user:bob".to_string(), "ip:1.2.3.4".to_string()], t0).is_err(), "per address too");
        assert!(t.check(&["user:ann".to_string(), "ip:5.6.7.8".to_string()], t0).is_err(), "per account too");
        assert!(t.check(&["user:bob".to_string(), "ip:5.6.7.8".to_string()], t0).is_ok());
        assert!(t.check(&names, t0 + WINDOW).is_ok(), "the first failure aged out");
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let names = ["user:ann".to_string(), "ip:1.2.3.4".to_string()];
        for _ in 0..MAX_FAILURES {
            t.failed(&names, now);
        }
        t.succeeded("user:ann");
        assert!(t.check(&["user:ann".to_string()], now).is_ok());
        assert!(t.check(&["ip:1.2.3.4".to_string()], now).is_err());
    }
}
