//! `apply` on SQLite: prices each queued event with the rules and adds it to its lead, once.
//!
//! Everything happens in the writer's one transaction: the event's processed flag (the
//! once-only guard), its points and explanation, the limit counts, the lead and the history
//! row commit together or not at all. Pricing happens here, not in the worker, because a
//! limit's count must move only when its event is really added.

use super::merge::{self, Aliases};
use super::rescore::replay_lead;
use crate::domain::engine::{Engine, Prepared, Usage, UsageKey};
use crate::domain::identity::merge_source;
use crate::domain::profile::{self, traits_of, Profile};
use crate::domain::rescore::{is_adjustment, RESCORE_EVENT_TYPE};
use crate::domain::time::Millis;
use crate::domain::{ScoreChange, StoredEvent};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// One claimed event and what it was worth.
struct Claimed<'a> {
    event: &'a StoredEvent,
    points: i64,
}

/// Scores `events`. `prepared`: what pricing them needs that reads no stored counts, worked
/// out before the transaction (`Engine::prepare`, by seq); an event without is prepared here.
pub(super) fn apply(
    c: &Connection,
    events: &[StoredEvent],
    prepared: &HashMap<i64, Prepared>,
    engine: &Engine,
    now: Millis,
) -> rusqlite::Result<Vec<ScoreChange>> {
    let mut aliases = Aliases::load(c)?;
    let mut changes = Vec::with_capacity(events.len());
    let mut rest = events;
    while !rest.is_empty() {
        // An event asking for a merge is scored on its own: what comes before it is written
        // first, and what comes after it sees the merged lead.
        let (segment, next) = match rest.iter().position(|e| merge_source(e).is_some()) {
            Some(0) => rest.split_at(1),
            Some(i) => rest.split_at(i),
            None => (rest, &[][..]),
        };
        rest = next;
        let segment = aliases.resolve(c, segment)?;
        let merging = match &*segment {
            [event] => merge_source(event).map(|from| (event, from)),
            _ => None,
        };
        let Some((event, from)) = merging else {
            changes.extend(apply_segment(c, &segment, prepared, engine, now)?);
            continue;
        };
        let merged = merge::merge(c, &mut aliases, event, &from, now)?;
        let mut applied = apply_segment(c, &segment, prepared, engine, now)?;
        if let (Some(merged), Some(change)) = (merged, applied.first_mut()) {
            merge::finish(c, &merged, event.seq, change, engine, now)?;
        }
        changes.extend(applied);
    }
    Ok(changes)
}

/// Scores a run of events, each already credited to its lead (`Aliases::resolve`).
fn apply_segment(
    c: &Connection,
    events: &[StoredEvent],
    prepared: &HashMap<i64, Prepared>,
    engine: &Engine,
    now: Millis,
) -> rusqlite::Result<Vec<ScoreChange>> {
    // The processed flag is the guard: only the call that flips it applies the points.
    let mut claim = c.prepare_cached(
        "UPDATE events SET processed = 1, points = ?2, matches = ?3 WHERE seq = ?1 AND processed = 0",
    )?;
    let mut counts = Counts::new(c, engine.has_limits())?;
    let mut claimed = Vec::with_capacity(events.len());
    let mut changes = Vec::with_capacity(events.len());
    // Leads with events in `claimed`, not yet written.
    let mut unwritten: HashSet<&str> = HashSet::new();
    for event in events {
        if event.event_type == RESCORE_EVENT_TYPE {
            // The replay reads the lead as stored: if the batch scored some of its events
            // already, write the batch so far first. It replaces the lead's limit counts, so
            // none of them may stay cached.
            if unwritten.contains(event.lead_id.as_str()) {
                std::mem::replace(&mut counts, Counts::new(c, engine.has_limits())?).save()?;
                changes.extend(add_to_leads(c, std::mem::take(&mut claimed), engine, now)?);
                unwritten.clear();
            }
            counts.forget(&event.lead_id);
            if let Some(priced) = replay_lead(c, event, engine)? {
                claim.execute(params![event.seq, priced.points, priced.matches_json()])?;
                claimed.push(Claimed { event, points: priced.points });
                unwritten.insert(&event.lead_id);
            }
            continue;
        }
        // Priced against a copy of the counts it reads; they move only if the claim succeeds
        // (an event already scored, or offered twice, must not use up a limit).
        let fresh;
        let prepared = match prepared.get(&event.seq) {
            Some(p) => p,
            None => {
                fresh = engine.prepare(event);
                &fresh
            }
        };
        let (priced, scratch) = engine.price_prepared(event, prepared, |keys| counts.load(keys))?;
        let explained = match &prepared.priced {
            Some(_) => prepared.matches_json.clone(),
            None => priced.matches_json(),
        };
        if claim.execute(params![event.seq, priced.points, explained])? == 1 {
            counts.keep(scratch);
            claimed.push(Claimed { event, points: priced.points });
            unwritten.insert(&event.lead_id);
        }
    }
    counts.save()?;
    changes.extend(add_to_leads(c, claimed, engine, now)?);
    Ok(changes)
}

/// Adds claimed events to their leads: one read and one write per lead, however many of
/// its events are in the batch; one history row per event.
/// Deliveries for subscribed webhooks go to the outbox in the same transaction.
fn add_to_leads(
    c: &Connection,
    claimed: Vec<Claimed>,
    engine: &Engine,
    now: Millis,
) -> rusqlite::Result<Vec<ScoreChange>> {
    let mut deliveries = Vec::new();
    let mut by_lead: Vec<(&str, Vec<Claimed>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in claimed {
        let lead = e.event.lead_id.as_str();
        match index.get(lead) {
            Some(&i) => by_lead[i].1.push(e),
            None => {
                index.insert(lead, by_lead.len());
                by_lead.push((lead, vec![e]));
            }
        }
    }
    let mut history = c.prepare_cached(
        "INSERT INTO score_history (id, lead_id, event_id, event_type, delta, old_score, new_score, timestamp) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut current = c.prepare_cached("SELECT score FROM leads WHERE id = ?1")?;
    // Not `RETURNING`: a statement with it needs a statement journal, and releasing one costs
    // time in proportion to the pages the transaction has dirtied.
    let mut save = c.prepare_cached(
        "INSERT INTO leads (id, search_key, score, last_event_id, updated_at, last_event_at, event_count, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5) \
         ON CONFLICT(id) DO UPDATE SET score = excluded.score, \
           last_event_id = coalesce(excluded.last_event_id, last_event_id), updated_at = excluded.updated_at, \
           last_event_at = CASE WHEN excluded.last_event_at IS NULL THEN last_event_at \
             ELSE max(coalesce(last_event_at, 0), excluded.last_event_at) END, \
           event_count = event_count + excluded.event_count",
    )?;
    let mut changes = Vec::new();
    // Leads created, or whose search key changed: the search index is brought up to date for
    // them at the end, all at once (`search::reindex`).
    let mut to_index: Vec<&str> = Vec::new();
    for (lead_id, events) in by_lead {
        // Safe to read then write: this thread is the only writer.
        let stored: Option<i64> = current.query_row([lead_id], |r| r.get(0)).optional()?;
        if stored.is_none() {
            to_index.push(lead_id);
        }
        let mut score = stored.unwrap_or(0);
        for Claimed { event: e, points } in &events {
            let old = score;
            score += points;
            history.execute(params![e.seq, lead_id, e.event_id, e.event_type, points, old, score, now])?;
            deliveries.extend(engine.outbox().deliveries(lead_id, old, score, &e.event_id, now));
            changes.push(ScoreChange {
                lead_id: lead_id.to_string(),
                event_id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                delta: *points,
                score,
                updated_at: now,
                merged_from: None,
            });
        }
        // An adjustment (decay, rescore) is not the lead's activity: its last event stays.
        let activity = || events.iter().map(|c| c.event).filter(|e| !is_adjustment(&e.event_type));
        let last_event_at = activity().map(|e| e.timestamp).max();
        let last = activity().last().map(|e| e.event_id.as_str());
        save.execute(params![lead_id, lead_id.to_lowercase(), score, last, now, last_event_at, events.len() as i64])?;
        let traits: Vec<Profile> = events.iter().filter_map(|c| traits_of(c.event)).collect();
        if !traits.is_empty() {
            let stored: Option<String> =
                c.prepare_cached("SELECT profile FROM leads WHERE id = ?1")?.query_row([lead_id], |r| r.get(0))?;
            let profile = traits.iter().fold(profile::parse(stored.as_deref()), |p, t| profile::merged(p, t));
            c.prepare_cached("UPDATE leads SET profile = ?2, search_key = ?3 WHERE id = ?1")?.execute(params![
                lead_id,
                serde_json::Value::Object(profile.clone()).to_string(),
                profile::search_key(lead_id, &profile)
            ])?;
            to_index.push(lead_id);
        }
    }
    super::search::reindex(c, &to_index)?;
    super::webhooks::outbox(c, &deliveries)?;
    Ok(changes)
}

/// Limit counts (`rule_usage`) read once per key in a transaction and written back at its end.
struct Counts<'c> {
    read: Option<CachedStatement<'c>>,
    c: &'c Connection,
    known: Usage,
    changed: HashSet<UsageKey>,
}

impl<'c> Counts<'c> {
    fn new(c: &'c Connection, any_limits: bool) -> rusqlite::Result<Self> {
        let read = if any_limits {
            Some(c.prepare_cached(
                "SELECT count FROM rule_usage WHERE lead_id = ?1 AND rule_id = ?2 AND per = ?3 AND period = ?4",
            )?)
        } else {
            None
        };
        Ok(Self { read, c, known: Usage::new(), changed: HashSet::new() })
    }

    /// The current counts of these keys.
    fn load(&mut self, keys: Vec<UsageKey>) -> rusqlite::Result<Usage> {
        let mut out = Usage::with_capacity(keys.len());
        for key in keys {
            let n = match (self.known.get(&key), self.read.as_mut()) {
                (Some(n), _) => *n,
                (None, Some(read)) => {
                    let params = params![key.lead_id, key.rule_id, key.per, key.window];
                    let n: u32 = read.query_row(params, |r| r.get(0)).optional()?.unwrap_or(0);
                    self.known.insert(key.clone(), n);
                    n
                }
                (None, None) => 0,
            };
            out.insert(key, n);
        }
        Ok(out)
    }

    /// Keeps the counts an applied event moved.
    fn keep(&mut self, counts: Usage) {
        for (key, n) in counts {
            if self.known.get(&key) != Some(&n) {
                self.changed.insert(key.clone());
                self.known.insert(key, n);
            }
        }
    }

    /// Drops what is cached of a lead whose counts were just replaced (only when none of
    /// them is changed and unsaved: the caller writes the batch first otherwise).
    fn forget(&mut self, lead_id: &str) {
        self.known.retain(|k, _| k.lead_id != lead_id);
    }

    fn save(self) -> rusqlite::Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut write = self.c.prepare_cached(
            "INSERT INTO rule_usage (lead_id, rule_id, per, period, count) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (lead_id, rule_id, per, period) DO UPDATE SET count = excluded.count",
        )?;
        for key in &self.changed {
            write.execute(params![key.lead_id, key.rule_id, key.per, key.window, self.known[key]])?;
        }
        Ok(())
    }
}
