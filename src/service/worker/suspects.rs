//! Events that failed to read or to apply, with their attempts so far. A suspect is tried
//! on its own (so it cannot fail a batch again), after a growing pause, and set aside in the
//! dead-letter list once it has failed `attempts` times; the rest of the queue goes on.
//! Only errors of the event itself count: a store that is unavailable fails the whole step.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Pause before a suspect's next attempt: doubles per failure, from this.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Suspects {
    failing: HashMap<i64, Suspect>,
}

#[derive(Debug)]
struct Suspect {
    attempts: u32,
    next_try: Instant,
}

impl Suspects {
    pub fn len(&self) -> usize {
        self.failing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failing.is_empty()
    }

    pub fn contains(&self, seq: i64) -> bool {
        self.failing.contains_key(&seq)
    }

    /// Whether `seq` may be tried now: not a suspect, or its pause is over.
    pub fn due(&self, seq: i64, now: Instant) -> bool {
        self.failing.get(&seq).is_none_or(|s| s.next_try <= now)
    }

    /// Counts a failed attempt; returns how many there have been.
    pub fn failed(&mut self, seq: i64, now: Instant) -> u32 {
        let s = self.failing.entry(seq).or_insert(Suspect { attempts: 0, next_try: now });
        s.attempts += 1;
        let pause = FIRST_PAUSE.saturating_mul(1 << (s.attempts - 1).min(16)).min(LONGEST_PAUSE);
        s.next_try = now + pause;
        s.attempts
    }

    /// Forgets `seq`: it was applied, or set aside.
    pub fn clear(&mut self, seq: i64) {
        self.failing.remove(&seq);
    }

    /// Forgets suspects no longer queued (scored by another instance, or set aside there).
    /// The queue is read oldest first and suspects are its oldest rows, so every suspect
    /// still queued is among what the worker just read.
    pub fn keep_only(&mut self, queued: &HashSet<i64>) {
        self.failing.retain(|seq, _| queued.contains(seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_up_and_pauses_grow() {
        let mut s = Suspects::default();
        let t0 = Instant::now();
        assert!(s.due(7, t0) && !s.contains(7));
        assert_eq!(s.failed(7, t0), 1);
        assert!(!s.due(7, t0), "paused after a failure");
        assert!(s.due(7, t0 + FIRST_PAUSE));
        assert_eq!(s.failed(7, t0 + FIRST_PAUSE), 2);
        assert!(!s.due(7, t0 + FIRST_PAUSE * 2), "the second pause is twice the first");
        assert!(s.due(7, t0 + FIRST_PAUSE * 3));
        for _ in 0..40 {
            s.failed(7, t0);
        }
        assert!(s.due(7, t0 + LONGEST_PAUSE), "pauses are capped");
        assert!(s.due(8, t0), "other events are unaffected");
    }

    #[test]
    fn forgets_what_succeeded_or_left_the_queue() {
        let mut s = Suspects::default();
        let t0 = Instant::now();
        s.failed(1, t0);
        s.failed(2, t0);
        s.failed(3, t0);
        s.clear(1);
        s.keep_only(&HashSet::from([3, 4]));
        assert!(!s.contains(1) && !s.contains(2) && s.contains(3));
        assert_eq!(s.len(), 1);
        assert_eq!(s.failed(3, t0), 2, "attempts carry on while it stays queued");
    }
}
