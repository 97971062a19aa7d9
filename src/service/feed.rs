//! The live stream of a store several server processes share: every instance tails the
//! store's feed of applied changes, so each dashboard sees every change whichever instance's
//! worker scored it.
//!
//! Feed positions are reserved before their changes are written, so a poll may see position
//! 12 before 11 (another worker's batch still in flight). The cursor remembers such gaps and
//! looks for exactly those positions again on every poll; a gap still empty after
//! [`GAP_GRACE_MS`] is given up on. That happens when a worker died before writing (the
//! batch's next holder writes it about a lease later, well inside the grace) or stalled for
//! longer than the grace: those changes are scored and stored, but not streamed; dashboards
//! show them on their next refetch.

use super::store::DynStore;
use super::{now_ms, UpdateBatch};
use crate::domain::time::Millis;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

/// How long a missing position is waited for: three MongoDB leases, so the next holder of a
/// crashed worker's leads has written its batch by then.
pub const GAP_GRACE_MS: Millis = 30_000;
/// Changes read per query; a full page is followed by another query at once.
const PAGE: usize = 2_000;
/// Gaps remembered at most; beyond it the oldest are given up on.
const MAX_GAPS: usize = 10_000;
/// Gaps looked for per query (the oldest first; the rest on the next polls).
const GAPS_PER_QUERY: usize = 64;

/// Missing positions `start..end`, first noticed at `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gap {
    start: i64,
    end: i64,
    since: Millis,
}

/// Which feed positions were delivered: everything up to `high` except the open gaps.
#[derive(Debug)]
pub struct FeedCursor {
    high: i64,
    gaps: VecDeque<Gap>,
    grace: Millis,
}

impl FeedCursor {
    /// Starts after `written`, the highest position written: changes recorded before the
    /// tail began are not replayed. Positions up to `reserved` were handed out but not
    /// written yet: they are waited for like any gap.
    pub fn new(written: i64, reserved: i64, now: Millis, grace: Millis) -> Self {
        let mut gaps = VecDeque::new();
        if reserved > written {
            gaps.push_back(Gap { start: written + 1, end: reserved + 1, since: now });
        }
        Self { high: reserved.max(written), gaps, grace }
    }

    /// The first position never seen.
    pub fn next(&self) -> i64 {
        self.high + 1
    }

    /// The oldest open gaps as spans `from..to`, at most `n`: only missing positions, so
    /// looking for them never reads a delivered change again.
    pub fn gap_spans(&self, n: usize) -> Vec<(i64, i64)> {
        self.gaps.iter().take(n).map(|g| (g.start, g.end)).collect()
    }

    /// Takes changes read at their positions (in any order, repeats allowed) and returns
    /// those not delivered before, in position order.
    pub fn take<T>(&mut self, mut items: Vec<(i64, T)>, now: Millis) -> Vec<T> {
        items.sort_by_key(|(position, _)| *position);
        let mut out = Vec::new();
        for (position, item) in items {
            if position > self.high {
                if position > self.high + 1 {
                    self.gaps.push_back(Gap { start: self.high + 1, end: position, since: now });
                }
                self.high = position;
                out.push(item);
            } else if self.fill(position) {
                out.push(item);
            }
        }
        let grace = self.grace;
        self.gaps.retain(|g| now - g.since < grace);
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_front();
        }
        out
    }

    /// Whether `position` was missing (it is not any more).
    fn fill(&mut self, position: i64) -> bool {
        let Some(i) = self.gaps.iter().position(|g| g.start <= position && position < g.end) else {
            return false;
        };
        let gap = self.gaps.remove(i).expect("found above");
        let after = Gap { start: position + 1, end: gap.end, since: gap.since };
        let before = Gap { end: position, ..gap };
        for part in [after, before] {
            if part.start < part.end {
                self.gaps.insert(i, part);
            }
        }
        true
    }
}

/// Tails the store's shared feed into `updates` until shutdown: on every `wake` (this
/// instance's worker finished a step) and at least every `poll`.
pub async fn tail(
    store: DynStore,
    updates: broadcast::Sender<UpdateBatch>,
    wake: Arc<Notify>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(feed) = store.shared_feed() else { return };
    let mut cursor = loop {
        match feed.head().await {
            Ok((written, reserved)) => break FeedCursor::new(written, reserved, now_ms(), GAP_GRACE_MS),
            Err(e) => tracing::warn!(error = %e, "live feed: cannot read its head; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll.max(Duration::from_secs(1))) => {}
            _ = shutdown.changed() => return,
        }
    };
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() {
            return;
        }
        let read = async {
            let mut items = feed.within(&[(cursor.next(), i64::MAX)], PAGE).await?;
            let filled = feed.within(&cursor.gap_spans(GAPS_PER_QUERY), PAGE).await?;
            let full = items.len() == PAGE || filled.len() == PAGE;
            items.extend(filled);
            Ok::<_, super::store::StoreError>((items, full))
        };
        match read.await {
            Ok((items, full)) => {
                more = full;
                let changes = cursor.take(items, now_ms());
                if !changes.is_empty() {
                    // No subscribers is fine: nobody is watching.
                    let _ = updates.send(changes.into());
                }
            }
            Err(e) => {
                more = false;
                tracing::warn!(error = %e, "live feed: poll failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delivers_in_order_once_and_waits_for_gaps() {
        let mut c = FeedCursor::new(10, 10, 0, 1_000);
        assert_eq!(c.next(), 11);
        assert_eq!(c.take(vec![(11, 'a'), (12, 'b')], 0), vec!['a', 'b']);
        assert_eq!(c.take(vec![(12, 'b')], 0), Vec::<char>::new(), "no repeats");
        // 13 and 14 are still being written when 15 and 16 show up.
        assert_eq!(c.take(vec![(16, 'f'), (15, 'e')], 5), vec!['e', 'f']);
        assert_eq!(c.gap_spans(8), [(13, 15)]);
        assert_eq!(c.next(), 17);
        assert_eq!(c.take(vec![(14, 'd'), (15, 'e')], 10), vec!['d']);
        assert_eq!(c.gap_spans(8), [(13, 14)]);
        assert_eq!(c.take(vec![(13, 'c'), (14, 'd')], 20), vec!['c']);
        assert_eq!(c.gap_spans(8), []);
    }

    #[test]
    fn a_gap_never_filled_is_given_up_after_the_grace() {
        let mut c = FeedCursor::new(0, 0, 0, 1_000);
        assert_eq!(c.take(vec![(3, 'c')], 0), vec!['c']);
        assert_eq!(c.gap_spans(8), [(1, 3)]);
        assert!(c.take(Vec::<(i64, char)>::new(), 999).is_empty());
        assert_eq!(c.gap_spans(8), [(1, 3)], "still within the grace");
        assert!(c.take(Vec::<(i64, char)>::new(), 1_000).is_empty());
        assert_eq!(c.gap_spans(8), []);
        assert!(c.take(vec![(1, 'a')], 1_001).is_empty(), "too late: given up");
    }

    #[test]
    fn positions_handed_out_but_unwritten_at_the_start_are_waited_for() {
        // Written up to 7; 8 and 9 were reserved by a worker still writing them.
        let mut c = FeedCursor::new(7, 9, 0, 1_000);
        assert_eq!(c.next(), 10);
        assert_eq!(c.gap_spans(8), [(8, 10)]);
        assert_eq!(c.take(vec![(9, 'i'), (10, 'j')], 5), vec!['i', 'j']);
        assert_eq!(c.take(vec![(8, 'h')], 6), vec!['h']);
        assert_eq!(c.gap_spans(8), []);
    }

    proptest! {
        /// However writes interleave and polls repeat, every position is delivered exactly
        /// once while it arrives within the grace.
        #[test]
        fn every_position_once_whatever_the_arrival_order(
            order in Just((1..=60i64).collect::<Vec<_>>()).prop_shuffle(),
            polls in proptest::collection::vec(1usize..8, 1..40),
        ) {
            let mut c = FeedCursor::new(0, 0, 0, i64::MAX);
            let mut visible: Vec<i64> = Vec::new();
            let mut delivered = Vec::new();
            let mut arriving = order.into_iter();
            for (t, n) in polls.iter().cycle().enumerate().take(200) {
                visible.extend(arriving.by_ref().take(*n));
                // What the two queries return: everything from `next`, and what is in the
                // oldest two gaps (the query's cap on gaps, small here to exercise it).
                let mut read: Vec<(i64, i64)> = visible.iter().filter(|p| **p >= c.next()).map(|p| (*p, *p)).collect();
                for (from, to) in c.gap_spans(2) {
                    read.extend(visible.iter().filter(|p| **p >= from && **p < to).map(|p| (*p, *p)));
                }
                delivered.extend(c.take(read, t as i64));
            }
            delivered.sort();
            prop_assert_eq!(delivered, (1..=60).collect::<Vec<_>>());
        }
    }
}
