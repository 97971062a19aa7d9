//! Identity merge on SQLite (`domain::identity`), inside the writer's one transaction: the
//! merge, the event asking for it and its once-only guard commit together or not at all, so
//! a crash at any instant leaves both leads as they were or fully merged.

use crate::domain::engine::Engine;
use crate::domain::identity::rechain;
use crate::domain::profile::{self, Profile};
use crate::domain::time::Millis;
use crate::domain::webhooks::NewDelivery;
use crate::domain::{ScoreChange, StoredEvent};
use rusqlite::{params, Connection, OptionalExtension};
use std::borrow::Cow;
use std::collections::HashMap;

/// Where merged leads' events go (`aliases`), looked up once per lead per batch.
pub(super) struct Aliases {
    /// Whether any lead was ever merged: when none was, nothing is looked up at all.
    any: bool,
    known: HashMap<String, Option<String>>,
}

impl Aliases {
    pub fn load(c: &Connection) -> rusqlite::Result<Self> {
        let any = c.prepare_cached("SELECT EXISTS (SELECT 1 FROM aliases)")?.query_row([], |r| r.get(0))?;
        Ok(Self { any, known: HashMap::new() })
    }

    /// The lead `lead_id` was merged into, if it was.
    pub fn target(&mut self, c: &Connection, lead_id: &str) -> rusqlite::Result<Option<String>> {
        if !self.any {
            return Ok(None);
        }
        if let Some(known) = self.known.get(lead_id) {
            return Ok(known.clone());
        }
        let to: Option<String> = c
            .prepare_cached("SELECT to_id FROM aliases WHERE from_id = ?1")?
            .query_row([lead_id], |r| r.get(0))
            .optional()?;
        self.known.insert(lead_id.to_string(), to.clone());
        Ok(to)
    }

    /// The events, each credited to the lead its own was merged into (and so stored: the
    /// event log then agrees). Borrowed as they are when no lead of theirs was merged.
    pub fn resolve<'e>(
        &mut self,
        c: &Connection,
        events: &'e [StoredEvent],
    ) -> rusqlite::Result<Cow<'e, [StoredEvent]>> {
        let mut resolved: Option<Vec<StoredEvent>> = None;
        for (i, e) in events.iter().enumerate() {
            if let Some(to) = self.target(c, &e.lead_id)? {
                c.prepare_cached("UPDATE events SET lead_id = ?2 WHERE seq = ?1")?.execute(params![e.seq, to])?;
                resolved.get_or_insert_with(|| events.to_vec())[i].lead_id = to;
            }
        }
        Ok(resolved.map_or(Cow::Borrowed(events), Cow::Owned))
    }

    fn merged(&mut self, from: &str, to: &str) {
        self.any = true;
        self.known.clear();
        self.known.insert(from.to_string(), Some(to.to_string()));
    }
}

/// A lead row as a merge reads it.
struct Row {
    score: i64,
    event_count: i64,
    last_event_id: Option<String>,
    last_event_at: Option<Millis>,
    profile: Profile,
}

fn read_lead(c: &Connection, id: &str) -> rusqlite::Result<Option<Row>> {
    c.prepare_cached("SELECT score, event_count, last_event_id, last_event_at, profile FROM leads WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Row {
                score: r.get(0)?,
                event_count: r.get(1)?,
                last_event_id: r.get(2)?,
                last_event_at: r.get(3)?,
                profile: profile::parse(r.get::<_, Option<String>>(4)?.as_deref()),
            })
        })
        .optional()
}

/// What a merge did: the target's score before it and after it.
pub(super) struct Merged {
    pub from: String,
    pub score_before: i64,
}

/// Merges lead `from` into `event`'s lead, unless `event` was scored already, `from` was
/// merged before (a lead is merged once), or `from` is the lead itself. The event itself is
/// then scored as usual by the caller (`finish`).
pub(super) fn merge(
    c: &Connection,
    aliases: &mut Aliases,
    event: &StoredEvent,
    from: &str,
    now: Millis,
) -> rusqlite::Result<Option<Merged>> {
    let queued: Option<i64> = c
        .prepare_cached("SELECT processed FROM events WHERE seq = ?1")?
        .query_row([event.seq], |r| r.get(0))
        .optional()?;
    let to = event.lead_id.as_str();
    if queued != Some(0) || from == to || aliases.target(c, from)?.is_some() {
        return Ok(None);
    }
    let target = read_lead(c, to)?;
    let score_before = target.as_ref().map_or(0, |t| t.score);
    let source = read_lead(c, from)?;
    // Later events for `from` go to `to`; leads merged into `from` before now go there too.
    c.prepare_cached("INSERT INTO aliases (from_id, to_id, event_id, merged_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![from, to, event.event_id, now])?;
    c.prepare_cached("UPDATE aliases SET to_id = ?2 WHERE to_id = ?1")?.execute(params![from, to])?;
    aliases.merged(from, to);
    let Some(source) = source else {
        // Nothing scored yet: only queued events, if any, change hands.
        c.prepare_cached("UPDATE events SET lead_id = ?2 WHERE processed = 0 AND lead_id = ?1")?
            .execute(params![from, to])?;
        return Ok(Some(Merged { from: from.to_string(), score_before }));
    };
    // Scored events are found through their history rows (events have no index by lead).
    c.prepare_cached(
        "UPDATE events SET lead_id = ?2 WHERE seq IN (SELECT id FROM score_history WHERE lead_id = ?1) \
         OR (processed = 0 AND lead_id = ?1)",
    )?
    .execute(params![from, to])?;
    c.prepare_cached("UPDATE score_history SET lead_id = ?2 WHERE lead_id = ?1")?.execute(params![from, to])?;
    let score = rechain_history(c, to)?;
    c.prepare_cached(
        "INSERT INTO rule_usage (lead_id, rule_id, per, period, count) \
         SELECT ?2, rule_id, per, period, count FROM rule_usage WHERE lead_id = ?1 \
         ON CONFLICT (lead_id, rule_id, per, period) DO UPDATE SET count = count + excluded.count",
    )?
    .execute(params![from, to])?;
    c.prepare_cached("DELETE FROM rule_usage WHERE lead_id = ?1")?.execute([from])?;

    // The known lead's traits win over the anonymous one's.
    let (profile, count, last_id, last_at) = match &target {
        Some(t) => {
            let later = source.last_event_at > t.last_event_at;
            (
                profile::merged(source.profile.clone(), &t.profile),
                t.event_count + source.event_count,
                if later { source.last_event_id.clone() } else { t.last_event_id.clone() },
                t.last_event_at.max(source.last_event_at),
            )
        }
        None => (source.profile.clone(), source.event_count, source.last_event_id.clone(), source.last_event_at),
    };
    let profile_json = (!profile.is_empty()).then(|| serde_json::Value::Object(profile.clone()).to_string());
    c.prepare_cached(
        "INSERT INTO leads (id, search_key, score, last_event_id, updated_at, last_event_at, event_count, created_at, profile) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5, ?8) \
         ON CONFLICT(id) DO UPDATE SET search_key = excluded.search_key, score = excluded.score, \
           last_event_id = excluded.last_event_id, updated_at = excluded.updated_at, \
           last_event_at = excluded.last_event_at, event_count = excluded.event_count, profile = excluded.profile",
    )?
    .execute(params![to, profile::search_key(to, &profile), score, last_id, now, last_at, count, profile_json])?;
    c.prepare_cached("DELETE FROM leads WHERE id = ?1")?.execute([from])?;
    super::search::reindex(c, &[to, from])?;
    Ok(Some(Merged { from: from.to_string(), score_before }))
}

/// Re-chains a lead's history in ingest order; returns the score it ends at.
fn rechain_history(c: &Connection, lead: &str) -> rusqlite::Result<i64> {
    let entries: Vec<(i64, i64, i64, i64)> = c
        .prepare_cached("SELECT id, delta, old_score, new_score FROM score_history WHERE lead_id = ?1 ORDER BY id")?
        .query_map([lead], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let chained = rechain(entries.iter().map(|e| e.1));
    let mut update = c.prepare_cached("UPDATE score_history SET old_score = ?2, new_score = ?3 WHERE id = ?1")?;
    for ((id, _, old, new), (chained_old, chained_new)) in entries.iter().zip(&chained) {
        if (old, new) != (chained_old, chained_new) {
            update.execute(params![id, chained_old, chained_new])?;
        }
    }
    Ok(chained.last().map_or(0, |(_, new)| *new))
}

/// After the event that asked for the merge (`seq`) is scored (its change in `change`): marks
/// its history entry and change as the merge, and tells webhooks of the whole move, from the
/// target's score before the merge (replacing what the event alone would have sent).
pub(super) fn finish(
    c: &Connection,
    merged: &Merged,
    seq: i64,
    change: &mut ScoreChange,
    engine: &Engine,
    now: Millis,
) -> rusqlite::Result<()> {
    // A history entry's id is its event's `seq`.
    c.prepare_cached("UPDATE score_history SET merged_from = ?2 WHERE id = ?1")?.execute(params![seq, merged.from])?;
    change.merged_from = Some(merged.from.clone());
    let outbox = engine.outbox();
    let alone = outbox.deliveries(&change.lead_id, change.score - change.delta, change.score, &change.event_id, now);
    let mut drop = c.prepare_cached("DELETE FROM deliveries WHERE key = ?1 AND state = 0 AND attempts = 0")?;
    for d in &alone {
        drop.execute([&d.key])?;
    }
    let whole: Vec<NewDelivery> =
        outbox.deliveries(&change.lead_id, merged.score_before, change.score, &change.event_id, now);
    super::webhooks::outbox(c, &whole)
}
