//! Every document the MongoDB store sends, built in one place so unit tests can check them
//! exactly, and the tolerant readers that turn documents back into the model.

use crate::domain::engine::{Priced, RuleMatch, Usage, UsageKey};
use crate::domain::profile::Profile;
use crate::domain::query::LeadQuery;
use crate::domain::rescore::is_adjustment;
use crate::domain::time::Millis;
use crate::domain::{DeadLetter, HistoryEntry, Lead, NewEvent, ScoreChange, StoredEvent};
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

/// Indexes earlier releases created that no query uses any more, by collection. The three
/// with `_id` inside a compound key gave way to explicit fields: several MongoDB-compatible
/// servers cannot index `_id` there (the nx-27017 stand-in breaks every insert).
pub const SUPERSEDED_INDEXES: &[(&str, &str)] = &[
    ("events", "lead_events"),
    ("events", "lead_events_by_seq"),
    ("events", "unprocessed"),
    ("leads", "leaderboard"),
    ("scorehistories", "lead_history"),
];

/// The indexes behind every query, by collection.
pub fn indexes() -> Vec<(&'static str, IndexModel)> {
    let index = |keys: Document, options: IndexOptions| IndexModel::builder().keys(keys).options(options).build();
    let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
    vec![
        (
            "events",
            index(doc! {"eventId": 1}, IndexOptions::builder().name("eventId_unique".to_string()).unique(true).build()),
        ),
        ("events", index(doc! {"leadId": 1, "seq": -1}, named("events_by_lead_seq"))),
        (
            "events",
            index(
                doc! {"processed": 1, "seq": 1},
                IndexOptions::builder()
                    .name("queue_by_seq".to_string())
                    .partial_filter_expression(doc! {"processed": false})
                    .build(),
            ),
        ),
        // The dead-letter list: the few events held aside (sparse: only they are indexed).
        (
            "events",
            index(
                doc! {"deadLetter": 1},
                IndexOptions::builder().name("dead_letters".to_string()).sparse(true).build(),
            ),
        ),
        ("leads", index(doc! {"score": -1, "leadId": 1}, named("leaderboard_by_score_id"))),
        // A lead's history in the order it was applied (feed positions are handed out under
        // the lead's lease); wall clocks of different instances may disagree.
        ("scorehistories", index(doc! {"leadId": 1, "feedSeq": -1}, named("lead_history_by_feed"))),
        // The live feed every instance tails (entries of earlier releases have no feedSeq).
        ("scorehistories", index(doc! {"feedSeq": 1}, named("feed"))),
        super::rules::index(),
        // Webhook deliveries: one per key (the outbox may be written twice), the due ones,
        // and each subscription's, newest first.
        (
            "deliveries",
            index(
                doc! {"key": 1},
                IndexOptions::builder().name("delivery_key_unique".to_string()).unique(true).build(),
            ),
        ),
        ("deliveries", index(doc! {"state": 1, "nextAt": 1}, named("deliveries_due"))),
        // (Not on `_id`: the stand-in then refuses every insert, "JSON path error near '_id'".)
        ("deliveries", index(doc! {"webhookId": 1, "createdAt": -1}, named("deliveries_by_hook"))),
    ]
}

/// Validated JSON as BSON. BSON has no unsigned 64-bit integer: a whole number above
/// `i64::MAX` is kept as a double (as JavaScript would read it), where a plain conversion
/// fails and would lose the event's whole metadata.
pub fn json_to_bson(v: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            (None, Some(f)) => Bson::Double(f),
            (None, None) => Bson::Null,
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(map.iter().map(|(k, v)| (k.clone(), json_to_bson(v))).collect()),
    }
}

/// An event as stored: `seq` (also its `_id`) is its ingest sequence number: queue order.
pub fn new_event(e: &NewEvent, seq: i64, received_at: Millis) -> Document {
    let metadata = e
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .map(|v| json_to_bson(&v))
        .unwrap_or(Bson::Null);
    doc! {
        "_id": seq,
        "seq": seq,
        "eventId": &e.event_id,
        "leadId": &e.lead_id,
        "eventType": &e.event_type,
        "timestamp": DateTime::from_millis(e.timestamp),
        "metadata": metadata,
        "receivedAt": DateTime::from_millis(received_at),
        "processed": false,
        "points": Bson::Null,
    }
}

pub fn unprocessed() -> Document {
    doc! {"processed": false}
}

/// Dead letters: a `deadletters` document (keyed by the event's seq) says why; the event
/// leaves the queue by losing `processed` and is marked `deadLetter: "held"` until retried
/// (back to `processed: false`) or discarded (`"discarded"`). The letter is written first and
/// removed last, so a crash between the two writes never hides an event: at worst a letter
/// outlives its episode, and `dead_letters` skips letters whose event is not held.
pub const HELD: &str = "held";
pub const DISCARDED: &str = "discarded";

pub fn dead_letter_doc(l: &DeadLetter) -> Document {
    doc! {
        "_id": l.id, "eventId": l.event_id.as_deref(), "leadId": l.lead_id.as_deref(), "error": &l.error,
        "attempts": l.attempts as i64, "deadLetteredAt": DateTime::from_millis(l.dead_lettered_at),
        "raw": DeadLetter::clip(l.raw.clone()),
    }
}

pub fn dead_letter(d: &Document) -> Option<DeadLetter> {
    Some(DeadLetter {
        id: int(d.get("_id"))?,
        event_id: field(d, "eventId"),
        lead_id: field(d, "leadId"),
        error: field(d, "error").unwrap_or_default(),
        attempts: int(d.get("attempts")).unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
        dead_lettered_at: millis(d.get("deadLetteredAt")).unwrap_or(0),
        raw: field(d, "raw").unwrap_or_default(),
    })
}

/// Takes a queued event out of the queue into the dead-letter list (or finds it held
/// already: another instance set it aside at the same time, and its letter is this one).
pub fn hold(seq: i64) -> (Document, Document) {
    (
        doc! {"$and": [{"_id": seq}, {"$or": [{"processed": false}, {"deadLetter": HELD}]}]},
        doc! {"$unset": {"processed": ""}, "$set": {"deadLetter": HELD}},
    )
}

/// Held events after `after` (by `seq`: the stand-in orders `_id`s as text), by the sparse
/// `dead_letters` index.
pub fn held_after(after: i64) -> Document {
    doc! {"deadLetter": HELD, "seq": {"$gt": after}}
}

/// Ends a held event's dead letter: back in the queue, or discarded. Only while it is still
/// unscored: a worker that read it before it was held may have scored it since.
pub fn release_held(seq: i64, retry: bool) -> (Document, Document) {
    let filter = doc! {"_id": seq, "deadLetter": HELD, "processed": {"$exists": false}};
    if retry {
        (filter, doc! {"$set": {"processed": false}, "$unset": {"deadLetter": ""}})
    } else {
        (filter, doc! {"$set": {"deadLetter": DISCARDED}})
    }
}

/// An unprocessed document that is not a valid event, as far as it can be read.
pub fn unreadable_event(d: &Document) -> Option<crate::service::store::Unreadable> {
    Some(crate::service::store::Unreadable {
        seq: int(d.get("seq")).or_else(|| int(d.get("_id")))?,
        event_id: field(d, "eventId"),
        lead_id: field(d, "leadId"),
        error: format!("unreadable event: {}", event_problem(d)),
        raw: Bson::Document(d.clone()).into_relaxed_extjson().to_string(),
    })
}

/// Which field of an event document does not read.
fn event_problem(d: &Document) -> String {
    let checks: [(&str, bool); 5] = [
        ("eventId", field(d, "eventId").is_some()),
        ("leadId", field(d, "leadId").is_some()),
        ("eventType", field(d, "eventType").is_some()),
        ("timestamp", millis(d.get("timestamp")).is_some()),
        ("receivedAt", millis(d.get("receivedAt")).is_some()),
    ];
    let bad: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
    if bad.is_empty() {
        "unexpected document".into()
    } else {
        format!("{} missing or of the wrong type", bad.join(", "))
    }
}

/// How long a worker's lease on a lead keeps other workers off it. Fencing keeps scoring
/// exact however long a worker stalls; the lease only decides when another may take over.
pub const LEASE_MS: Millis = 10_000;

/// The `counters` documents: ingest order of events, and feed order of applied changes.
pub const EVENTS_COUNTER: &str = "events";
pub const FEED_COUNTER: &str = "feed";

/// Reserves `n` consecutive numbers of a counter (`$inc` on an upserted document).
pub fn reserve(counter: &str, n: i64) -> (Document, Document) {
    (doc! {"_id": counter}, doc! {"$inc": {"seq": n}})
}

/// One applied event as the lead records it in `lastBatch` (and the history entry repeats):
/// fixed once, so whoever finishes the bookkeeping writes exactly the same thing.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub lead_id: String,
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub delta: i64,
    pub old_score: i64,
    pub new_score: i64,
    /// Position in the feed every instance's live stream tails.
    pub feed_seq: i64,
    /// When it was applied.
    pub at: Millis,
    /// Which rules matched and what each added.
    pub matches: Vec<RuleMatch>,
    /// The lead this entry's event merged in, and the lead's score before the merge
    /// (`merge.rs`): webhooks hear of the whole move.
    pub merged: Option<(String, i64)>,
}

/// Leases the leads that are free (never leased, released, or expired) to `token`.
pub fn lease(leads: &[String], token: &str, now: Millis) -> (Document, Document) {
    (
        // `$or` with `$exists` rather than `$not`: the stand-in lacks `$not`. Inside `$and`:
        // the stand-in's updates read `{_id, $or: [x, y]}` as `(_id AND x) OR y`.
        doc! {"$and": [
            {"_id": {"$in": leads}},
            {"$or": [{"leaseUntil": {"$lt": now}}, {"leaseUntil": {"$exists": false}}]},
        ]},
        doc! {"$set": {"leaseToken": token, "leaseUntil": now + LEASE_MS}},
    )
}

/// Extends this token's leases from `now` (a slow batch keeps its leads).
pub fn renew(leads: &[String], token: &str, now: Millis) -> (Document, Document) {
    (doc! {"_id": {"$in": leads}, "leaseToken": token}, doc! {"$set": {"leaseUntil": now + LEASE_MS}})
}

/// The lead fields `apply` reads after leasing: never the whole history of anything.
pub fn lease_view() -> Document {
    doc! {"_id": 1, "score": 1, "leaseToken": 1, "lastBatch": 1, "usage": 1, "profile": 1}
}

/// Limit counts live on the lead, under `usage`, one field per rule and window
/// (`<rule id>_<per>_<window>`): the update that adds events to the lead moves them, fenced
/// with it, so a count can never disagree with the score.
pub fn usage_field(key: &UsageKey) -> String {
    key.field()
}

/// All the lead's counts, by field name, sorted (a count that does not read is left out).
pub fn all_usage(lead: &Document) -> Vec<(String, u32)> {
    let mut all: Vec<(String, u32)> = lead
        .get_document("usage")
        .map(|u| u.iter().filter_map(|(k, v)| Some((k.clone(), u32::try_from(int(Some(v))?).ok()?))).collect())
        .unwrap_or_default();
    all.retain(|(_, n)| *n > 0);
    all.sort();
    all
}

/// The lead's counts for these keys (absent: 0). A count that does not read is an error: a
/// guess could let a limited rule score once too often.
pub fn usage_of(lead: &Document, keys: Vec<UsageKey>) -> Result<Usage, String> {
    let usage = lead.get_document("usage").ok();
    keys.into_iter()
        .map(|key| {
            let n = match usage.and_then(|u| u.get(usage_field(&key))) {
                None => 0,
                Some(v) => int(Some(v)).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("usage {v}"))?,
            };
            Ok((key, n))
        })
        .collect()
}

/// A lead that does not exist yet, created already leased (a duplicate key means another
/// worker created it first and holds it).
pub fn new_lead(lead_id: &str, token: &str, now: Millis) -> Document {
    doc! {
        "_id": lead_id,
        "leadId": lead_id,
        "searchKey": lead_id.to_lowercase(),
        "score": 0_i64,
        "eventCount": 0_i64,
        "createdAt": DateTime::from_millis(now),
        "updatedAt": DateTime::from_millis(now),
        "leaseToken": token,
        "leaseUntil": now + LEASE_MS,
    }
}

/// Which of these events are still unprocessed (the answer's `_id`s and `eventId`s). A
/// dead-lettered event has no `processed` at all and counts as unprocessed here: if a lead's
/// `lastBatch` records it, the batch is unfinished and must be finished, not forgotten.
pub fn still_unprocessed(seqs: &[i64]) -> Document {
    doc! {"_id": {"$in": seqs}, "processed": {"$ne": true}}
}

fn entry_doc(e: &Entry) -> Document {
    let mut d = doc! {
        "seq": e.seq, "eventId": &e.event_id, "eventType": &e.event_type, "delta": e.delta,
        "oldScore": e.old_score, "newScore": e.new_score, "feedSeq": e.feed_seq,
        "at": DateTime::from_millis(e.at),
    };
    if !e.matches.is_empty() {
        d.insert("matches", matches_bson(&e.matches));
    }
    if let Some((from, before)) = &e.merged {
        d.insert("mergedFrom", from);
        d.insert("scoreBefore", before);
    }
    d
}

/// Null when no rule matched, as the embedded store keeps it.
fn matches_bson(matches: &[RuleMatch]) -> Bson {
    if matches.is_empty() {
        return Bson::Null;
    }
    serde_json::to_value(matches).ok().and_then(|v| Bson::try_from(v).ok()).unwrap_or(Bson::Null)
}

/// An explanation as stored; `None` when absent or unreadable (the points stand alone).
fn matches_of(v: Option<&Bson>) -> Option<Vec<RuleMatch>> {
    serde_json::from_value(v?.clone().into_relaxed_extjson()).ok()
}

/// A lead's `lastBatch` entries, as recorded by the update that applied them; none when it
/// has no `lastBatch`. An entry that cannot be read is an error, never skipped: skipping it
/// would let its event be added again.
pub fn last_batch(lead: &Document) -> Result<Vec<Entry>, String> {
    let Some(batch) = lead.get("lastBatch") else { return Ok(Vec::new()) };
    let lead_id = text(lead.get("_id")).ok_or("lead _id")?;
    let entries = batch.as_document().and_then(|b| b.get_array("entries").ok()).ok_or("lastBatch")?;
    let entry = |d: &Document| -> Option<Entry> {
        Some(Entry {
            lead_id: lead_id.clone(),
            seq: int(d.get("seq"))?,
            event_id: text(d.get("eventId"))?,
            event_type: text(d.get("eventType"))?,
            delta: int(d.get("delta"))?,
            old_score: int(d.get("oldScore"))?,
            new_score: int(d.get("newScore"))?,
            feed_seq: int(d.get("feedSeq"))?,
            at: millis(d.get("at"))?,
            // Entries of earlier releases have none.
            matches: matches_of(d.get("matches")).unwrap_or_default(),
            merged: match (text(d.get("mergedFrom")), int(d.get("scoreBefore"))) {
                (Some(from), Some(before)) => Some((from, before)),
                _ => None,
            },
        })
    };
    entries.iter().map(|b| b.as_document().and_then(entry).ok_or_else(|| format!("lastBatch entry {b}"))).collect()
}

/// The one update statement that adds a batch of one lead's events to it, fenced on the
/// lease token and recording the entries as `lastBatch` in the same single-document write.
/// `last_event_at`: the newest timestamp among the lead's own events in it (`None`: only
/// decay adjustments, which are not the lead's activity and leave its last event as it was).
/// How an apply statement moves a lead's limit counts.
#[derive(Clone, Debug, PartialEq)]
pub enum Counts {
    /// Adds to these counts.
    Add(Vec<(UsageKey, u32)>),
    /// Replaces all of them (a `$rescore` replay counted them afresh).
    Replace(Vec<(UsageKey, u32)>),
}

/// What a batch leaves of the lead's profile: the search key, always, and the profile as JSON
/// when the batch changed it.
pub struct ProfileUpdate {
    pub search_key: String,
    pub profile: Option<String>,
}

pub fn apply_statement(
    entries: &[Entry],
    counts: &Counts,
    token: &str,
    last_event_at: Option<Millis>,
    profile: ProfileUpdate,
) -> Document {
    let last = entries.last().expect("a statement applies at least one event");
    let delta: i64 = entries.iter().map(|e| e.delta).sum();
    let mut inc = doc! {"score": delta, "eventCount": entries.len() as i64};
    if let Counts::Add(used) = counts {
        for (key, n) in used {
            inc.insert(format!("usage.{}", usage_field(key)), i64::from(*n));
        }
    }
    let mut set = doc! {
        "updatedAt": DateTime::from_millis(last.at),
        "leadId": &last.lead_id,
        "searchKey": profile.search_key,
        "lastBatch": {"token": token, "entries": entries.iter().map(entry_doc).collect::<Vec<_>>()},
    };
    if let Some(json) = profile.profile {
        set.insert("profile", json);
    }
    if let Counts::Replace(all) = counts {
        let usage: Document = all.iter().map(|(key, n)| (usage_field(key), Bson::Int64(i64::from(*n)))).collect();
        set.insert("usage", usage);
    }
    let mut update = doc! {"$inc": inc};
    if let Some(activity) = entries.iter().rev().find(|e| !is_adjustment(&e.event_type)) {
        set.insert("lastEventId", &activity.event_id);
    }
    if let Some(at) = last_event_at {
        update.insert("$max", doc! {"lastEventAt": DateTime::from_millis(at)});
    }
    update.insert("$set", set);
    doc! {"q": {"_id": &last.lead_id, "leaseToken": token}, "u": update}
}

/// Leads whose `lastBatch` this token wrote (to learn which fenced statements matched).
pub fn applied_by(leads: &[String], token: &str) -> Document {
    doc! {"_id": {"$in": leads}, "lastBatch.token": token}
}

/// The history entry of an applied event, as a replacing upsert: writing it twice, or over
/// an entry an earlier release left half-written, comes to the same document.
pub fn history_statement(e: &Entry) -> Document {
    // `_id` in the replacement too: an upsert should take it from the query, but not
    // every compatible server does (the stand-in would add a second document).
    let mut entry = doc! {
        "_id": &e.event_id, "eventId": &e.event_id, "leadId": &e.lead_id, "eventType": &e.event_type,
        "delta": e.delta, "oldScore": e.old_score, "newScore": e.new_score, "seq": e.seq,
        "feedSeq": e.feed_seq, "timestamp": DateTime::from_millis(e.at), "applied": true,
    };
    if let Some((from, _)) = &e.merged {
        entry.insert("mergedFrom", from);
    }
    doc! {"q": {"_id": &e.event_id}, "u": entry, "upsert": true}
}

/// A replayed event's new points and explanation (`$rescore`), idempotent.
pub fn reprice_statement(seq: i64, priced: &Priced) -> Document {
    doc! {"q": {"_id": seq}, "u": {"$set": {"points": priced.points, "matches": matches_bson(&priced.matches)}}}
}

pub fn processed_statement(e: &Entry) -> Document {
    doc! {
        "q": {"_id": e.seq, "eventId": &e.event_id},
        // Scored after all (it was held after this worker read it): no longer a dead letter.
        "u": {"$set": {"processed": true, "points": e.delta, "matches": matches_bson(&e.matches)}, "$unset": {"deadLetter": ""}},
    }
}

/// Ends the lease only, keeping any `lastBatch` for the lead's next holder to finish: for a
/// call that stops before it has checked the leads' unfinished batches.
pub fn unlease(leads: &[String], token: &str) -> (Document, Document) {
    (
        doc! {"_id": {"$in": leads}, "leaseToken": token},
        doc! {"$set": {"leaseUntil": 0_i64}, "$unset": {"leaseToken": ""}},
    )
}

/// Ends the lease and drops `lastBatch` (its events are processed by now), fenced like the
/// apply: a worker that lost its lease releases nothing.
pub fn release(leads: &[String], token: &str) -> (Document, Document) {
    (
        doc! {"_id": {"$in": leads}, "leaseToken": token},
        doc! {"$set": {"leaseUntil": 0_i64}, "$unset": {"leaseToken": "", "lastBatch": ""}},
    )
}

/// Applied changes at positions within any of `spans` (`from..to`), in feed order.
pub fn feed_within(spans: &[(i64, i64)]) -> (Document, Document) {
    let range = |(from, to): &(i64, i64)| doc! {"feedSeq": {"$gte": *from, "$lt": *to}};
    let filter = match spans {
        [one] => range(one),
        many => doc! {"$or": many.iter().map(range).collect::<Vec<_>>()},
    };
    (filter, doc! {"feedSeq": 1})
}

/// The highest position written so far.
pub fn feed_newest() -> (Document, Document) {
    (doc! {"feedSeq": {"$exists": true}}, doc! {"feedSeq": -1})
}

/// A history entry as a live-stream change with its feed position.
pub fn feed_change(d: &Document) -> Option<(i64, ScoreChange)> {
    let h = history(d)?;
    Some((
        int(d.get("feedSeq"))?,
        ScoreChange {
            lead_id: h.lead_id,
            event_id: h.event_id,
            event_type: h.event_type,
            delta: h.delta,
            score: h.new_score,
            updated_at: h.timestamp,
            merged_from: h.merged_from,
        },
    ))
}

/// A lead is listed once it has an event (documents the old app wrote have no count):
/// `apply` creates a lead leased and empty (`eventCount: 0`) just
/// before adding its first events, and a crash may leave it so for a moment.
pub fn scored_lead(lead_id: &str) -> Document {
    doc! {"_id": lead_id, "eventCount": {"$ne": 0}}
}

/// Lead fields readers never need: `apply`'s bookkeeping.
pub fn lead_view() -> Document {
    doc! {"lastBatch": 0, "leaseToken": 0, "pending": 0, "usage": 0}
}

pub fn leads_filter(q: &LeadQuery) -> Document {
    let mut filter = doc! {"eventCount": {"$ne": 0}};
    let mut score = Document::new();
    if let Some(min) = q.min_score {
        score.insert("$gte", min);
    }
    if let Some(max) = q.max_score {
        score.insert("$lte", max);
    }
    if !score.is_empty() {
        filter.insert("score", score);
    }
    if let Some(after) = &q.id_after {
        filter.insert("leadId", doc! {"$gt": after});
    }
    if let Some(needle) = q.search_needle() {
        // Lowercased id, lowercased needle, every metacharacter escaped: a literal substring.
        filter.insert("searchKey", doc! {"$regex": escape_regex(&needle)});
    }
    filter
}

pub fn leads_sort() -> Document {
    doc! {"score": -1, "leadId": 1}
}

/// Escapes every ASCII character that is not a letter or digit, so user input can only
/// ever match itself.
pub fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn history_page(lead_id: &str) -> (Document, Document) {
    (doc! {"leadId": lead_id, "applied": true}, doc! {"feedSeq": -1})
}

/// A lead's events, newest first; dead letters (held or discarded) are listed apart, as on SQLite.
pub fn lead_events_page(lead_id: &str) -> (Document, Document) {
    (doc! {"leadId": lead_id, "deadLetter": {"$exists": false}}, doc! {"seq": -1})
}

// Readers are tolerant: MongoDB-compatible servers (and documents other tools wrote) may
// hand back a boolean as 0/1, a number as Int32, Int64 or Double, a date as a string.
// A document that still cannot be read is reported by the caller, never guessed at.

/// An integer from any numeric type, a boolean, or a numeric string.
pub fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.is_finite() => Some(*f as i64),
        Bson::Boolean(b) => Some(i64::from(*b)),
        Bson::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
        }
        _ => None,
    }
}

/// Epoch milliseconds from a BSON date, a number, or a string (digits or ISO 8601).
pub fn millis(v: Option<&Bson>) -> Option<Millis> {
    match v? {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Boolean(_) => None,
        Bson::String(s) => s.trim().parse::<i64>().ok().or_else(|| crate::domain::time::parse_iso(s)),
        other => int(Some(other)),
    }
}

/// A boolean from a boolean, a number (0 is false) or `"true"`/`"false"`.
pub fn boolean(v: Option<&Bson>) -> Option<bool> {
    match v? {
        Bson::Boolean(b) => Some(*b),
        Bson::String(s) => s.trim().parse().ok(),
        other => int(Some(other)).map(|n| n != 0),
    }
}

pub fn text(v: Option<&Bson>) -> Option<String> {
    match v? {
        Bson::String(s) | Bson::Symbol(s) => Some(s.clone()),
        Bson::Int32(n) => Some(n.to_string()),
        Bson::Int64(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn field(d: &Document, key: &str) -> Option<String> {
    text(d.get(key))
}

pub fn stored_event(d: &Document) -> Option<StoredEvent> {
    let metadata = match d.get("metadata") {
        None | Some(Bson::Null) => None,
        Some(m) => Some(m.clone().into_relaxed_extjson().to_string()),
    };
    Some(StoredEvent {
        // `seq`; documents written before it existed carry the sequence as `_id` only.
        seq: int(d.get("seq")).or_else(|| int(d.get("_id")))?,
        event_id: field(d, "eventId")?,
        lead_id: field(d, "leadId")?,
        event_type: field(d, "eventType")?,
        timestamp: millis(d.get("timestamp"))?,
        metadata,
        received_at: millis(d.get("receivedAt"))?,
        processed: boolean(d.get("processed")).unwrap_or(false),
        points: int(d.get("points")),
        matches: matches_of(d.get("matches")),
    })
}

pub fn lead(d: &Document) -> Option<Lead> {
    Some(Lead {
        id: field(d, "_id")?,
        score: int(d.get("score")).unwrap_or(0),
        last_event_id: field(d, "lastEventId"),
        updated_at: millis(d.get("updatedAt")).unwrap_or(0),
        last_event_at: millis(d.get("lastEventAt")),
        event_count: int(d.get("eventCount")).unwrap_or(0),
        // The service names the stage, from the ladder.
        stage: String::new(),
        profile: profile_of(d),
    })
}

/// A lead's profile: JSON text under `profile` (trait names are free text, and not every
/// MongoDB-compatible server takes dots or dollars in field names).
pub fn profile_of(d: &Document) -> Option<Profile> {
    d.get_str("profile").ok().map(|p| crate::domain::profile::parse(Some(p)))
}

pub fn history(d: &Document) -> Option<HistoryEntry> {
    Some(HistoryEntry {
        lead_id: field(d, "leadId")?,
        event_id: field(d, "eventId")?,
        event_type: field(d, "eventType")?,
        old_score: int(d.get("oldScore"))?,
        new_score: int(d.get("newScore"))?,
        delta: int(d.get("delta"))?,
        timestamp: millis(d.get("timestamp"))?,
        stage_change: None,
        merged_from: field(d, "mergedFrom"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Lead, NewEvent};
    use mongodb::bson::{Bson, DateTime};
    use mongodb::IndexModel;

    fn keys_and_options(collection: &str, name: &str) -> (Document, IndexModel) {
        let (_, model) = indexes()
            .into_iter()
            .find(|(c, m)| *c == collection && m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
            .unwrap_or_else(|| panic!("no index {name} on {collection}"));
        (model.keys.clone(), model)
    }

    #[test]
    fn indexes_back_every_query() {
        let (keys, model) = keys_and_options("events", "eventId_unique");
        assert_eq!(keys, doc! {"eventId": 1});
        assert_eq!(model.options.unwrap().unique, Some(true));
        assert_eq!(keys_and_options("events", "events_by_lead_seq").0, doc! {"leadId": 1, "seq": -1});
        assert_eq!(SUPERSEDED_INDEXES.len(), 5);
        for (collection, model) in indexes() {
            let name = model.options.and_then(|o| o.name).unwrap();
            assert!(
                !SUPERSEDED_INDEXES.contains(&(collection, name.as_str())),
                "{name} would be created, then dropped"
            );
        }
        let (keys, model) = keys_and_options("events", "queue_by_seq");
        assert_eq!(keys, doc! {"processed": 1, "seq": 1});
        assert_eq!(model.options.unwrap().partial_filter_expression, Some(doc! {"processed": false}));
        assert_eq!(keys_and_options("leads", "leaderboard_by_score_id").0, doc! {"score": -1, "leadId": 1});
        assert_eq!(keys_and_options("scorehistories", "lead_history_by_feed").0, doc! {"leadId": 1, "feedSeq": -1});
        let (keys, model) = keys_and_options("scoringrules", "base_rule_by_type");
        assert_eq!(keys, doc! {"baseOf": 1});
        let options = model.options.unwrap();
        assert_eq!((options.unique, options.sparse), (Some(true), Some(true)));
        assert_eq!(keys_and_options("scorehistories", "feed").0, doc! {"feedSeq": 1});
        let (keys, model) = keys_and_options("events", "dead_letters");
        assert_eq!(keys, doc! {"deadLetter": 1});
        assert_eq!(model.options.unwrap().sparse, Some(true), "only the few held events are indexed");
        let (keys, model) = keys_and_options("deliveries", "delivery_key_unique");
        assert_eq!((keys, model.options.unwrap().unique), (doc! {"key": 1}, Some(true)), "one delivery per key");
        assert_eq!(keys_and_options("deliveries", "deliveries_due").0, doc! {"state": 1, "nextAt": 1});
        assert_eq!(keys_and_options("deliveries", "deliveries_by_hook").0, doc! {"webhookId": 1, "createdAt": -1});
        assert_eq!(indexes().len(), 11);
        // The queries' sorts are prefixes the indexes serve.
        assert_eq!(leads_sort(), doc! {"score": -1, "leadId": 1});
        assert_eq!(history_page("l").1, doc! {"feedSeq": -1}, "application order, newest first");
        assert_eq!(lead_events_page("l").1, doc! {"seq": -1}, "ingest order, newest first");
        assert_eq!(lead_events_page("l").0, doc! {"leadId": "l", "deadLetter": {"$exists": false}});
    }

    #[test]
    fn no_compound_index_holds_id() {
        for (collection, model) in indexes().into_iter().chain(super::super::accounts::indexes()) {
            let keys: Vec<&String> = model.keys.keys().collect();
            assert!(keys.len() == 1 || !keys.iter().any(|k| *k == "_id"), "{collection}: {keys:?}");
        }
    }

    #[test]
    fn new_events_are_stored_unprocessed_with_the_sequence_as_id() {
        let e = NewEvent {
            event_id: "e1".into(),
            lead_id: "l1".into(),
            event_type: "Page View".into(),
            timestamp: 5_000,
            metadata: Some(r#"{"page":"/pricing","n":3}"#.into()),
        };
        assert_eq!(
            new_event(&e, 7, 9_000),
            doc! {
                "_id": 7_i64, "seq": 7_i64, "eventId": "e1", "leadId": "l1", "eventType": "Page View",
                "timestamp": DateTime::from_millis(5_000), "metadata": {"page": "/pricing", "n": 3_i64},
                "receivedAt": DateTime::from_millis(9_000), "processed": false, "points": Bson::Null,
            }
        );
        let back = stored_event(&new_event(&e, 7, 9_000)).unwrap();
        assert_eq!((back.seq, back.timestamp, back.received_at, back.processed), (7, 5_000, 9_000, false));
        assert_eq!(serde_json::from_str::<serde_json::Value>(back.metadata.as_deref().unwrap()).unwrap()["n"], 3);
        // A whole number BSON cannot hold exactly is kept as a double, and the rest with it.
        let big = NewEvent {
            metadata: Some(r#"{"big":18446744073709551615,"page":"/x","list":[1,2.5]}"#.into()),
            ..e.clone()
        };
        let stored = new_event(&big, 8, 6_000);
        assert_eq!(
            stored.get_document("metadata").unwrap(),
            &doc! {"big": 18_446_744_073_709_551_615_f64, "page": "/x", "list": [1_i64, 2.5_f64]}
        );
        assert_eq!(unprocessed(), doc! {"processed": false});
        assert_eq!(reserve(EVENTS_COUNTER, 500), (doc! {"_id": "events"}, doc! {"$inc": {"seq": 500_i64}}));
    }

    fn entry(seq: i64, delta: i64, old: i64) -> Entry {
        Entry {
            merged: None,
            lead_id: "Lead-ÜX".into(),
            seq,
            event_id: format!("evt-{seq}"),
            event_type: "Purchase".into(),
            delta,
            old_score: old,
            new_score: old + delta,
            feed_seq: 700 + seq,
            at: 2_000,
            matches: Vec::new(),
        }
    }

    #[test]
    fn apply_steps_send_exactly_these_documents() {
        let leads = vec!["a".to_string(), "Lead-ÜX".to_string()];
        assert_eq!(
            lease(&leads, "tok", 2_000),
            (
                doc! {"$and": [
                    {"_id": {"$in": ["a", "Lead-ÜX"]}},
                    {"$or": [{"leaseUntil": {"$lt": 2_000_i64}}, {"leaseUntil": {"$exists": false}}]},
                ]},
                doc! {"$set": {"leaseToken": "tok", "leaseUntil": 12_000_i64}},
            )
        );
        assert_eq!(
            new_lead("Lead-ÜX", "tok", 2_000),
            doc! {
                "_id": "Lead-ÜX", "leadId": "Lead-ÜX", "searchKey": "lead-üx", "score": 0_i64, "eventCount": 0_i64,
                "createdAt": DateTime::from_millis(2_000), "updatedAt": DateTime::from_millis(2_000),
                "leaseToken": "tok", "leaseUntil": 12_000_i64,
            }
        );
        assert_eq!(still_unprocessed(&[4, 5]), doc! {"_id": {"$in": [4_i64, 5_i64]}, "processed": {"$ne": true}});
        let bought = RuleMatch { rule_id: "r1".into(), name: "Purchase".into(), points: 100, limited: false };
        let batch = [Entry { matches: vec![bought], ..entry(4, 100, 5) }, entry(5, -10, 105)];
        let once = UsageKey { lead_id: "Lead-ÜX".into(), rule_id: "r1".into(), per: "lead", window: 0 };
        let unchanged = ProfileUpdate { search_key: "lead-üx".into(), profile: None };
        let statement = apply_statement(&batch, &Counts::Add(vec![(once, 1)]), "tok", Some(1_500), unchanged);
        assert_eq!(
            statement,
            doc! {
                "q": {"_id": "Lead-ÜX", "leaseToken": "tok"},
                "u": {
                    "$inc": {"score": 90_i64, "eventCount": 2_i64, "usage.r1_lead_0": 1_i64},
                    "$set": {
                        "lastEventId": "evt-5", "updatedAt": DateTime::from_millis(2_000),
                        "leadId": "Lead-ÜX", "searchKey": "lead-üx",
                        "lastBatch": {"token": "tok", "entries": [
                            {"seq": 4_i64, "eventId": "evt-4", "eventType": "Purchase", "delta": 100_i64,
                             "oldScore": 5_i64, "newScore": 105_i64, "feedSeq": 704_i64, "at": DateTime::from_millis(2_000),
                             "matches": [{"ruleId": "r1", "name": "Purchase", "points": 100_i32}]},
                            {"seq": 5_i64, "eventId": "evt-5", "eventType": "Purchase", "delta": -10_i64,
                             "oldScore": 105_i64, "newScore": 95_i64, "feedSeq": 705_i64, "at": DateTime::from_millis(2_000)},
                        ]},
                    },
                    "$max": {"lastEventAt": DateTime::from_millis(1_500)},
                },
            }
        );
        // What the lead records is exactly what recovery reads back.
        let mut lead_doc = doc! {"_id": "Lead-ÜX"};
        lead_doc.extend(statement.get_document("u").unwrap().get_document("$set").unwrap().clone());
        assert_eq!(last_batch(&lead_doc), Ok(batch.to_vec()));
        assert_eq!(last_batch(&doc! {"_id": "x"}), Ok(Vec::new()));
        let mut broken = lead_doc.clone();
        broken.insert("lastBatch", doc! {"token": "tok", "entries": [{"seq": 4_i64, "eventId": "evt-4"}]});
        assert!(last_batch(&broken).is_err(), "an unreadable entry is an error, not skipped");
        assert_eq!(applied_by(&leads, "tok"), doc! {"_id": {"$in": ["a", "Lead-ÜX"]}, "lastBatch.token": "tok"});
        assert_eq!(
            history_statement(&batch[0]),
            doc! {
                "q": {"_id": "evt-4"},
                "u": {
                    "_id": "evt-4", "eventId": "evt-4", "leadId": "Lead-ÜX", "eventType": "Purchase", "delta": 100_i64,
                    "oldScore": 5_i64, "newScore": 105_i64, "seq": 4_i64, "feedSeq": 704_i64,
                    "timestamp": DateTime::from_millis(2_000), "applied": true,
                },
                "upsert": true,
            }
        );
        assert_eq!(
            processed_statement(&batch[1]),
            doc! {"q": {"_id": 5_i64, "eventId": "evt-5"},
            "u": {"$set": {"processed": true, "points": -10_i64, "matches": Bson::Null}, "$unset": {"deadLetter": ""}}}
        );
        let explained = processed_statement(&batch[0]);
        let set = explained.get_document("u").unwrap().get_document("$set").unwrap();
        assert_eq!(matches_of(set.get("matches")), Some(batch[0].matches.clone()), "the event keeps its explanation");
        // Counts read back from the lead as the statement leaves them.
        let lead = doc! {"_id": "Lead-ÜX", "usage": {"r1_lead_0": 1_i64}};
        let keys = vec![UsageKey { lead_id: "Lead-ÜX".into(), rule_id: "r1".into(), per: "lead", window: 0 }];
        assert_eq!(usage_of(&lead, keys.clone()).unwrap().into_values().collect::<Vec<_>>(), [1]);
        assert_eq!(usage_of(&doc! {"_id": "x"}, keys.clone()).unwrap().into_values().collect::<Vec<_>>(), [0]);
        assert!(
            usage_of(&doc! {"usage": {"r1_lead_0": "lots"}}, keys).is_err(),
            "an unreadable count is never guessed"
        );
        let odd = UsageKey { lead_id: "l".into(), rule_id: "a.b$c".into(), per: "day", window: 3 };
        assert_eq!(usage_field(&odd), "x612e622463_day_3", "never a path: hex for ids other than letters and digits");
        assert_eq!(
            release(&leads, "tok"),
            (
                doc! {"_id": {"$in": ["a", "Lead-ÜX"]}, "leaseToken": "tok"},
                doc! {"$set": {"leaseUntil": 0_i64}, "$unset": {"leaseToken": "", "lastBatch": ""}},
            )
        );
        assert_eq!(reserve(FEED_COUNTER, 3), (doc! {"_id": "feed"}, doc! {"$inc": {"seq": 3_i64}}));
        assert_eq!(feed_within(&[(10, 12)]), (doc! {"feedSeq": {"$gte": 10_i64, "$lt": 12_i64}}, doc! {"feedSeq": 1}));
        assert_eq!(
            feed_within(&[(1, 2), (5, 9)]).0,
            doc! {"$or": [{"feedSeq": {"$gte": 1_i64, "$lt": 2_i64}}, {"feedSeq": {"$gte": 5_i64, "$lt": 9_i64}}]}
        );
        assert_eq!(
            renew(&leads, "tok", 5_000),
            (doc! {"_id": {"$in": ["a", "Lead-ÜX"]}, "leaseToken": "tok"}, doc! {"$set": {"leaseUntil": 15_000_i64}})
        );
        let written = history_statement(&batch[1]).get_document("u").unwrap().clone();
        let (position, change) = feed_change(&written).unwrap();
        assert_eq!((position, change.score, change.delta, change.updated_at), (705, 95, -10, 2_000));
    }

    #[test]
    fn leaderboard_filters_are_literal() {
        assert_eq!(leads_filter(&LeadQuery::default()), doc! {"eventCount": {"$ne": 0}});
        let q = LeadQuery {
            search: Some("A.c*(1)".into()),
            min_score: Some(10),
            max_score: Some(50),
            ..Default::default()
        };
        assert_eq!(
            leads_filter(&q),
            doc! {
                "eventCount": {"$ne": 0}, "score": {"$gte": 10_i64, "$lte": 50_i64},
                "searchKey": {"$regex": r"a\.c\*\(1\)"},
            }
        );
        assert_eq!(escape_regex(r"^x$|[a]{2}\d+?/ü"), r"\^x\$\|\[a\]\{2\}\\d\+\?\/ü");
        assert_eq!(escape_regex("plain123"), "plain123");
    }

    #[test]
    fn documents_read_back_into_the_model() {
        let l = lead(&doc! {
            "_id": "l", "score": 15_i32, "lastEventId": "e", "updatedAt": DateTime::from_millis(9),
            "lastEventAt": DateTime::from_millis(8), "eventCount": 2_i64, "pending": [],
        })
        .unwrap();
        assert_eq!(
            l,
            Lead {
                id: "l".into(),
                score: 15,
                last_event_id: Some("e".into()),
                updated_at: 9,
                last_event_at: Some(8),
                event_count: 2,
                stage: String::new(),
                profile: None,
            }
        );
        let h = history_statement(&entry(4, 100, 0)).get_document("u").unwrap().clone();
        assert_eq!(history(&h).unwrap().new_score, 100);
        assert!(history(&doc! {"eventId": "e", "leadId": "l"}).is_none(), "an entry without scores is unreadable");
    }
}
