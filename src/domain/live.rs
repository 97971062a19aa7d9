//! Live updates: what the stream sends, how changes are coalesced per lead, how a
//! reconnecting client is replayed what it missed, and how a browser folds updates into the
//! leaderboard it shows. Pure logic, shared by the server and the WASM client.

use super::model::{Lead, ScoreChange};
use super::query::LeadQuery;
use super::stages::{stage_for, Stage};
use super::time::{iso, Millis};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The latest state of one lead after one or more score changes (`leadUpdated` item).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadUpdate {
    pub lead_id: String,
    pub score: i64,
    /// Sum of the deltas folded into this update.
    pub delta: i64,
    /// Type of the latest event folded in.
    pub event_type: String,
    #[serde(with = "iso")]
    pub updated_at: Millis,
    /// Additive: id of the latest event folded in, and how many events were folded.
    pub event_id: String,
    pub events: u32,
    /// Additive: the stage the new score is in.
    #[serde(default)]
    pub stage: String,
}

/// A lead's move to another stage (`stageChanged` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageMoved {
    pub lead_id: String,
    pub from: String,
    pub to: String,
    pub score: i64,
}

/// A lead merged into another (`leadMerged` event, `identity.rs`): `from` is gone, its
/// history is `to`'s, which now scores `score`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadMerged {
    pub from: String,
    pub to: String,
    pub score: i64,
}

/// Stage moves between two flushes, per lead: the stage before its first move, and now.
#[derive(Default)]
pub struct StageMoves {
    order: Vec<String>,
    moves: HashMap<String, StageMoved>,
}

impl StageMoves {
    pub fn add(&mut self, change: &ScoreChange, stages: &[Stage]) {
        let now = stage_for(stages, change.score);
        match self.moves.get_mut(&change.lead_id) {
            Some(m) => {
                m.to = now.to_string();
                m.score = change.score;
            }
            None => {
                let before = stage_for(stages, change.score - change.delta);
                if before != now {
                    self.order.push(change.lead_id.clone());
                    let moved = StageMoved {
                        lead_id: change.lead_id.clone(),
                        from: before.into(),
                        to: now.into(),
                        score: change.score,
                    };
                    self.moves.insert(change.lead_id.clone(), moved);
                }
            }
        }
    }

    /// The moves since the last flush, in the order they happened; a lead that went up and
    /// back down to where it was has not moved.
    pub fn flush(&mut self) -> Vec<StageMoved> {
        let mut moves = std::mem::take(&mut self.moves);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|id| moves.remove(&id))
            .filter(|m| m.from != m.to)
            .collect()
    }
}

/// Folds score changes per lead between two flushes, keeping first-seen order.
#[derive(Default)]
pub struct Coalescer {
    order: Vec<String>,
    latest: HashMap<String, LeadUpdate>,
}

impl Coalescer {
    pub fn add(&mut self, change: &ScoreChange) {
        match self.latest.get_mut(&change.lead_id) {
            Some(u) => {
                // Changes arrive in commit order, so the last one carries the newest score.
                u.score = change.score;
                u.delta += change.delta;
                u.event_type.clone_from(&change.event_type);
                u.event_id.clone_from(&change.event_id);
                u.updated_at = change.updated_at;
                u.events += 1;
            }
            None => {
                self.order.push(change.lead_id.clone());
                self.latest.insert(
                    change.lead_id.clone(),
                    LeadUpdate {
                        lead_id: change.lead_id.clone(),
                        score: change.score,
                        delta: change.delta,
                        event_type: change.event_type.clone(),
                        updated_at: change.updated_at,
                        event_id: change.event_id.clone(),
                        events: 1,
                        stage: String::new(),
                    },
                );
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Everything folded since the last flush, one update per lead.
    pub fn flush(&mut self) -> Vec<LeadUpdate> {
        let mut latest = std::mem::take(&mut self.latest);
        std::mem::take(&mut self.order).into_iter().filter_map(|id| latest.remove(&id)).collect()
    }

    /// At most `max` updates — the highest scores, which is what leaderboards show — and how
    /// many were left out. Any changed lead in the global top `max` is always included: at
    /// most `max - 1` changed leads can outscore it.
    pub fn flush_top(&mut self, max: usize) -> (Vec<LeadUpdate>, usize) {
        let mut all = self.flush();
        if all.len() <= max {
            return (all, 0);
        }
        all.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.lead_id.cmp(&b.lead_id)));
        let omitted = all.len() - max;
        all.truncate(max);
        (all, omitted)
    }
}

/// What a reconnecting client gets.
#[derive(Debug, PartialEq)]
pub enum Replay<T> {
    /// The frames after its last id (possibly none).
    Frames(Vec<(u64, T)>),
    /// It fell further behind than the buffer reaches: it must reload its data.
    TooOld,
}

/// The most recent frames, numbered from 1, for `Last-Event-ID` resumption.
pub struct ReplayBuffer<T> {
    capacity: usize,
    frames: VecDeque<(u64, T)>,
    last_id: u64,
}

impl<T: Clone> ReplayBuffer<T> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), frames: VecDeque::new(), last_id: 0 }
    }

    /// Id of the newest frame; 0 before the first.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn push(&mut self, frame: T) -> u64 {
        self.last_id += 1;
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back((self.last_id, frame));
        self.last_id
    }

    /// Frames with an id greater than `seen`.
    pub fn after(&self, seen: u64) -> Replay<T> {
        if seen > self.last_id {
            return Replay::TooOld; // an id this buffer never issued
        }
        let oldest = self.frames.front().map_or(self.last_id + 1, |f| f.0);
        if seen + 1 < oldest {
            return Replay::TooOld;
        }
        Replay::Frames(self.frames.iter().filter(|f| f.0 > seen).cloned().collect())
    }
}

/// Folds live updates into a displayed leaderboard page. Returns true when the page can no
/// longer be derived locally (a lead left it, or a lead outside it may now belong in it), so
/// the caller should refetch it from the server.
pub fn apply_updates(rows: &mut Vec<Lead>, updates: &[LeadUpdate], query: &LeadQuery) -> bool {
    if query.offset > 0 {
        // Any change above this page shifts it; only the server knows how.
        return !updates.is_empty();
    }
    let was_full = rows.len() >= query.limit;
    let mut refetch = false;
    for u in updates {
        let matches = query.matches(&u.lead_id, u.score) && query.matches_stage(&u.stage);
        match rows.iter().position(|r| r.id == u.lead_id) {
            Some(i) if !matches => {
                rows.remove(i);
                refetch = true;
            }
            Some(i) => {
                let row = &mut rows[i];
                if u.score < row.score && was_full {
                    refetch = true; // someone below the page may now outrank it
                }
                row.score = u.score;
                row.updated_at = u.updated_at;
                row.last_event_id = Some(u.event_id.clone());
                row.event_count += i64::from(u.events);
                row.stage.clone_from(&u.stage);
            }
            None if matches => rows.push(Lead {
                id: u.lead_id.clone(),
                score: u.score,
                last_event_id: Some(u.event_id.clone()),
                updated_at: u.updated_at,
                last_event_at: None,
                event_count: i64::from(u.events),
                stage: u.stage.clone(),
                profile: None,
            }),
            None => {}
        }
    }
    rows.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    rows.truncate(query.limit);
    refetch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(lead: &str, event: &str, delta: i64, score: i64, at: Millis) -> ScoreChange {
        ScoreChange {
            lead_id: lead.into(),
            event_id: event.into(),
            event_type: format!("T{delta}"),
            delta,
            score,
            updated_at: at,
            merged_from: None,
        }
    }

    fn lead(id: &str, score: i64) -> Lead {
        Lead {
            id: id.into(),
            score,
            last_event_id: None,
            updated_at: 0,
            last_event_at: None,
            event_count: 1,
            stage: String::new(),
            profile: None,
        }
    }

    fn update(id: &str, score: i64) -> LeadUpdate {
        LeadUpdate {
            lead_id: id.into(),
            score,
            delta: 1,
            event_type: "x".into(),
            updated_at: 9,
            event_id: "e".into(),
            events: 1,
            stage: String::new(),
        }
    }

    #[test]
    fn stage_moves_fold_per_lead_and_vanish_when_undone() {
        let ladder = crate::domain::stages::default_stages();
        let mut m = StageMoves::default();
        m.add(&change("a", "1", 30, 40, 1), &ladder); // Cold, no move
        m.add(&change("a", "2", 70, 110, 2), &ladder); // Cold → MQL
        m.add(&change("b", "3", 60, 60, 3), &ladder); // Cold → Warm
        m.add(&change("a", "4", 100, 210, 4), &ladder); // … → SQL
        m.add(&change("b", "5", -20, 40, 5), &ladder); // back to Cold
        let moves = m.flush();
        assert_eq!(moves, [StageMoved { lead_id: "a".into(), from: "Cold".into(), to: "SQL".into(), score: 210 }]);
        assert!(m.flush().is_empty());
    }

    #[test]
    fn a_stage_filter_drops_leads_that_leave_the_stage() {
        let q = LeadQuery { stage: Some("mql".into()), limit: 10, ..Default::default() };
        let mut rows = vec![Lead { stage: "MQL".into(), ..lead("a", 120) }];
        let left = LeadUpdate { stage: "SQL".into(), ..update("a", 230) };
        let joined = LeadUpdate { stage: "MQL".into(), ..update("b", 150) };
        apply_updates(&mut rows, &[left, joined], &q);
        assert_eq!(rows.iter().map(|r| (r.id.as_str(), r.stage.as_str())).collect::<Vec<_>>(), [("b", "MQL")]);
    }

    #[test]
    fn coalescer_keeps_one_update_per_lead_with_the_latest_score() {
        let mut c = Coalescer::default();
        c.add(&change("a", "1", 5, 5, 10));
        c.add(&change("b", "2", 10, 10, 11));
        c.add(&change("a", "3", 20, 25, 12));
        c.add(&change("a", "4", -3, 22, 13));
        let out = c.flush();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].lead_id.as_str(), out[0].score, out[0].delta, out[0].events, out[0].event_id.as_str()),
            ("a", 22, 22, 3, "4")
        );
        assert_eq!((out[0].event_type.as_str(), out[0].updated_at), ("T-3", 13));
        assert_eq!((out[1].lead_id.as_str(), out[1].score), ("b", 10));
        assert!(c.is_empty());
        assert!(c.flush().is_empty());
    }

    #[test]
    fn capped_flush_keeps_the_highest_scores_and_counts_the_rest() {
        let mut c = Coalescer::default();
        for (i, score) in [5, 50, 20, 70, 1].iter().enumerate() {
            c.add(&change(&format!("l{i}"), &format!("e{i}"), *score, *score, 0));
        }
        let (top, omitted) = c.flush_top(3);
        assert_eq!(top.iter().map(|u| u.score).collect::<Vec<_>>(), [70, 50, 20]);
        assert_eq!(omitted, 2);
        c.add(&change("a", "x", 1, 1, 0));
        assert_eq!(c.flush_top(3).1, 0);
    }

    #[test]
    fn lead_update_serialises_with_the_stream_field_names() {
        let v = serde_json::to_value(update("a", 3)).unwrap();
        for key in ["leadId", "score", "delta", "eventType", "updatedAt"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["updatedAt"], "1970-01-01T00:00:00.009Z");
    }

    #[test]
    fn replay_resumes_after_the_last_seen_id() {
        let mut b = ReplayBuffer::new(3);
        assert_eq!(b.after(0), Replay::Frames(vec![]));
        for f in ["a", "b", "c", "d"] {
            b.push(f);
        }
        assert_eq!(b.last_id(), 4);
        assert_eq!(b.after(2), Replay::Frames(vec![(3, "c"), (4, "d")]));
        assert_eq!(b.after(1), Replay::Frames(vec![(2, "b"), (3, "c"), (4, "d")]));
        assert_eq!(b.after(4), Replay::Frames(vec![]));
        assert_eq!(b.after(0), Replay::TooOld, "frame 1 fell out of the buffer");
        assert_eq!(b.after(7), Replay::TooOld, "an id from another server run");
    }

    #[test]
    fn updates_reorder_the_page_and_bring_new_leads_in() {
        let q = LeadQuery { limit: 3, ..Default::default() };
        let mut rows = vec![lead("a", 30), lead("b", 20), lead("c", 10)];
        let refetch = apply_updates(&mut rows, &[update("c", 40), update("d", 25)], &q);
        assert!(!refetch);
        let ids: Vec<_> = rows.iter().map(|r| (r.id.as_str(), r.score)).collect();
        assert_eq!(ids, [("c", 40), ("a", 30), ("d", 25)], "b dropped below the top 3");
        assert_eq!(rows[0].event_count, 2);
    }

    #[test]
    fn ties_sort_by_id_and_filters_apply() {
        let q = LeadQuery { limit: 10, search: Some("ACME".into()), min_score: Some(5), ..Default::default() };
        let mut rows = vec![lead("acme-b", 10)];
        assert!(!apply_updates(&mut rows, &[update("acme-a", 10), update("other", 50), update("acme-c", 4)], &q));
        let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["acme-a", "acme-b"]);
    }

    #[test]
    fn asks_for_a_refetch_when_the_page_cannot_be_derived() {
        let full = LeadQuery { limit: 2, ..Default::default() };
        let mut rows = vec![lead("a", 30), lead("b", 20)];
        assert!(apply_updates(&mut rows, &[update("a", 10)], &full), "a fell; an unseen lead may outrank it");

        let banded = LeadQuery { limit: 10, max_score: Some(50), ..Default::default() };
        let mut rows = vec![lead("a", 30)];
        assert!(apply_updates(&mut rows, &[update("a", 60)], &banded), "a left the band");
        assert!(rows.is_empty());

        let second_page = LeadQuery { limit: 10, offset: 10, ..Default::default() };
        assert!(apply_updates(&mut vec![], &[update("z", 1)], &second_page));
        assert!(!apply_updates(&mut vec![], &[], &second_page));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// However changes interleave, folding keeps each lead's latest score, the sum of
            /// its deltas and its event count; `flush_top` loses nothing but what it says it
            /// left out.
            #[test]
            fn folding_keeps_every_leads_total(
                deltas in proptest::collection::vec((0usize..6, -50i64..50), 0..200),
                max in 1usize..8,
            ) {
                let mut c = Coalescer::default();
                let mut scores: HashMap<String, (i64, i64, u32)> = HashMap::new();
                for (i, (lead, delta)) in deltas.iter().enumerate() {
                    let lead = format!("l{lead}");
                    let e = scores.entry(lead.clone()).or_default();
                    *e = (e.0 + delta, e.1 + delta, e.2 + 1);
                    c.add(&change(&lead, &format!("e{i}"), *delta, e.0, i as i64));
                }
                let (top, omitted) = c.flush_top(max);
                prop_assert_eq!(top.len() + omitted, scores.len());
                if omitted > 0 {
                    // Cut down to the highest scores: nothing left out outscores what is kept.
                    let lowest_kept = top.iter().map(|u| u.score).min().unwrap();
                    let kept: Vec<&str> = top.iter().map(|u| u.lead_id.as_str()).collect();
                    prop_assert!(scores.iter().filter(|(l, _)| !kept.contains(&l.as_str())).all(|(_, s)| s.0 <= lowest_kept));
                }
                for u in &top {
                    let (score, delta, events) = scores[&u.lead_id];
                    prop_assert_eq!((u.score, u.delta, u.events), (score, delta, events));
                }
                prop_assert!(c.is_empty());
            }
        }
    }
}
