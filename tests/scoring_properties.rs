//! Property test of scoring through the store (SQLite): random events, applied in random
//! slices with redeliveries, while rules change between steps. Whatever the sequence:
//! - every lead's score is the sum of its history, and each event's points are the sum of
//!   its explanation;
//! - each event is priced exactly as a replay of the same steps priced it (the rules of the
//!   step that applied it, the limit counts of the events applied before it);
//! - no limited rule ever scores more than its count per lead and window;
//! - decay passes (random half-lives, turned off again) run between steps; after a last pass,
//!   every score is within half a point of its events' exact decayed total;
//! - rescores (`$rescore` events, queued like the service's job does) run between steps too;
//!   a last one, once scored, leaves every score equal to a from-scratch replay of its events
//!   with the final rules, and every event priced as that replay prices it.

use leadscore::domain::decay::adjustment_event;
use leadscore::domain::engine::{Engine, Usage};
use leadscore::domain::limits::Per;
use leadscore::domain::query::DetailPage;
use leadscore::domain::rescore::{is_adjustment, needs_replay, replay, rescore_event, RESCORE_EVENT_TYPE};
use leadscore::domain::scoring::default_rules;
use leadscore::domain::validation::validate_scoring_rule;
use leadscore::domain::{NewEvent, StoredEvent};
use leadscore::service::store::sqlite::SqliteStore;
use leadscore::service::store::Store;
use proptest::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;
const LEADS: [&str; 3] = ["a", "b", "c"];
const TYPES: [&str; 2] = ["Page View", "Purchase"];
const PAGES: [&str; 3] = ["/pricing", "/docs", "/blog"];

#[derive(Clone, Debug)]
enum Step {
    /// New events: (lead, type, page, day offset).
    Post(Vec<(usize, usize, usize, i64)>),
    /// Apply the oldest `n` queued events, in slices of `slice`, each slice offered twice.
    Apply { n: usize, slice: usize },
    /// Add a rule on Page View for one page, limited to `count` per `per`.
    AddLimited { page: usize, points: i64, count: u32, per: usize },
    /// Change the base Purchase rule's points.
    Reprice(i64),
    /// A decay pass on `day` with this half-life (`None`: decay off).
    Decay { half_life: Option<f64>, day: i64 },
    /// A rescore job's events, queued (scored by later `Apply` steps).
    Rescore,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec((0..3usize, 0..2usize, 0..3usize, 0..3i64), 1..12).prop_map(Step::Post),
        4 => (1..20usize, 1..6usize).prop_map(|(n, slice)| Step::Apply { n, slice }),
        1 => (0..3usize, -5..30i64, 1..3u32, 0..4usize).prop_map(|(page, points, count, per)| Step::AddLimited { page, points, count, per }),
        1 => (-50..200i64).prop_map(Step::Reprice),
        1 => (prop_oneof![Just(None), Just(Some(1.0)), Just(Some(30.0))], 0..10i64)
            .prop_map(|(half_life, day)| Step::Decay { half_life, day }),
        1 => Just(Step::Rescore),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn scoring_is_exact_whatever_the_steps(steps in proptest::collection::vec(step(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(steps));
    }
}

async fn check(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("p.db")).unwrap();
    store.seed_rules(default_rules(), T0).await.unwrap();
    let mut next = 0;
    // The replay: each event's expected points, priced with its step's rules and the counts
    // of everything applied before it.
    let mut usage = Usage::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut limits: HashMap<String, (u32, Per)> = HashMap::new();
    // Each lead's applied events, in the order applied: what a `$rescore` replays.
    let mut applied: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    let mut jobs = 0;
    for step in steps {
        match step {
            Step::Post(events) => {
                let batch: Vec<NewEvent> = events
                    .into_iter()
                    .map(|(lead, kind, page, day)| {
                        next += 1;
                        NewEvent {
                            event_id: format!("e{next}"),
                            lead_id: LEADS[lead].into(),
                            event_type: TYPES[kind].into(),
                            timestamp: T0 + day * DAY,
                            metadata: Some(json!({"page": PAGES[page]}).to_string()),
                        }
                    })
                    .collect();
                store.insert_events(batch).await.unwrap();
            }
            Step::Apply { n, slice } => {
                let rules = store.rules().await.unwrap();
                let engine = Arc::new(Engine::new(&rules));
                let queued: Vec<StoredEvent> = store.unprocessed(n).await.unwrap().events;
                model(&engine, &queued, &mut usage, &mut expected, &mut applied);
                for chunk in queued.chunks(slice) {
                    store.apply(chunk.to_vec(), engine.clone(), T0).await.unwrap();
                    assert!(store.apply(chunk.to_vec(), engine.clone(), T0).await.unwrap().is_empty(), "applied twice");
                }
            }
            Step::AddLimited { page, points, count, per } => {
                let per = Per::ALL[per];
                let raw = json!({
                    "name": format!("limited {}", limits.len()), "eventType": "Page View", "points": points,
                    "conditions": [{"field": "page", "op": "equals", "value": PAGES[page]}],
                    "limit": {"count": count, "per": per.as_str()},
                });
                let rule = store.create_rule(validate_scoring_rule(&raw).unwrap(), T0).await.unwrap();
                limits.insert(rule.id, (count, per));
            }
            Step::Reprice(points) => {
                let input = leadscore::domain::RuleInput { event_type: "Purchase".into(), points, is_active: true };
                store.upsert_rule(input, T0).await.unwrap();
            }
            Step::Decay { half_life, day } => decay_pass(&store, half_life, T0 + day * DAY).await,
            Step::Rescore => {
                jobs += 1;
                rescore(&store, &format!("job{jobs}"), T0).await;
            }
        }
    }
    // Everything scored, then a last rescore, scored too: every lead is its replay.
    for last_rescore in [false, true] {
        if last_rescore {
            rescore(&store, "last", T0).await;
        }
        let engine = Arc::new(Engine::new(&store.rules().await.unwrap()));
        let queued: Vec<StoredEvent> = store.unprocessed(10_000).await.unwrap().events;
        model(&engine, &queued, &mut usage, &mut expected, &mut applied);
        store.apply(queued, engine, T0).await.unwrap();
    }
    let engine = Engine::new(&store.rules().await.unwrap());
    let all = DetailPage { history_limit: 1000, events_limit: 1000, ..Default::default() };
    for lead in LEADS {
        let Some(l) = store.lead(lead).await.unwrap() else { continue };
        let mut events: Vec<StoredEvent> =
            store.lead_events(lead, &all).await.unwrap().into_iter().filter(|e| e.processed).collect();
        events.reverse();
        let mut fresh = Usage::new();
        let own: Vec<&StoredEvent> = events.iter().filter(|e| !is_adjustment(&e.event_type)).collect();
        let replayed: Vec<i64> = own.iter().map(|e| engine.price(e, &mut fresh).points).collect();
        assert_eq!(l.score, replayed.iter().sum::<i64>(), "{lead}: after a rescore, the score is the replay's");
        assert_eq!(own.iter().map(|e| e.points.unwrap()).collect::<Vec<_>>(), replayed, "{lead}: events as replayed");
    }
    // Everything scored, then one last pass at a 30-day half-life, scored too.
    let end = T0 + 20 * DAY;
    for last_pass in [false, true] {
        if last_pass {
            decay_pass(&store, Some(30.0), end).await;
        }
        let rules = store.rules().await.unwrap();
        let engine = Arc::new(Engine::new(&rules));
        let queued: Vec<StoredEvent> = store.unprocessed(10_000).await.unwrap().events;
        model(&engine, &queued, &mut usage, &mut expected, &mut applied);
        store.apply(queued, engine, end).await.unwrap();
    }
    let page = DetailPage { history_limit: 500, events_limit: 500, ..Default::default() };
    let mut used: HashMap<(String, String, i64), u32> = HashMap::new();
    for lead in LEADS {
        let Some(l) = store.lead(lead).await.unwrap() else { continue };
        let history = store.history(lead, &page).await.unwrap();
        assert_eq!(l.score, history.iter().map(|h| h.delta).sum::<i64>(), "{lead}: score = sum of history");
        let exact: f64 = store
            .lead_events(lead, &page)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.processed && !is_adjustment(&e.event_type))
            .map(|e| e.points.unwrap() as f64 * (-((end - e.timestamp) as f64) / (30.0 * DAY as f64)).exp2())
            .sum();
        assert!((l.score as f64 - exact).abs() <= 0.5 + 1e-9, "{lead}: score {} vs exact decayed {exact}", l.score);
        for e in store.lead_events(lead, &page).await.unwrap().into_iter().filter(|e| e.processed) {
            let points = e.points.unwrap();
            if e.event_type != RESCORE_EVENT_TYPE {
                assert_eq!(Some(&points), expected.get(&e.event_id), "{}: priced as the replay", e.event_id);
            }
            let matches = e.matches.clone().unwrap_or_default();
            assert_eq!(points, matches.iter().map(|m| m.points).sum::<i64>(), "{}: points = explanation", e.event_id);
            for m in matches.iter().filter(|m| !m.limited) {
                if let Some((_, per)) = limits.get(&m.rule_id) {
                    *used.entry((lead.to_string(), m.rule_id.clone(), per.window(e.timestamp))).or_default() += 1;
                }
            }
        }
    }
    for ((lead, rule, window), n) in used {
        let (count, _) = limits[&rule];
        assert!(n <= count, "{lead}: rule {rule} scored {n} times in window {window}, limit {count}");
    }
}

/// The replay: prices `queued` in order as the store will, each with the counts of
/// everything applied before it; a `$rescore` re-prices its lead's applied events from
/// fresh counts, which then replace the lead's.
fn model(
    engine: &Engine,
    queued: &[StoredEvent],
    usage: &mut Usage,
    expected: &mut HashMap<String, i64>,
    applied: &mut HashMap<String, Vec<StoredEvent>>,
) {
    for e in queued {
        let mine = applied.entry(e.lead_id.clone()).or_default();
        if e.event_type == RESCORE_EVENT_TYPE {
            usage.retain(|k, _| k.lead_id != e.lead_id);
            for prior in mine.iter().filter(|p| !is_adjustment(&p.event_type)) {
                expected.insert(prior.event_id.clone(), engine.price(prior, usage).points);
            }
        } else {
            expected.insert(e.event_id.clone(), engine.price(e, usage).points);
        }
        mine.push(e.clone());
    }
}

/// What the service's job does (`service::rescore`) on the store alone: reading two leads a
/// page, a `$rescore` event for each lead the current rules would score differently.
async fn rescore(store: &SqliteStore, job: &str, now: i64) {
    let engine = Engine::new(&store.rules().await.unwrap());
    let (mut cursor, mut events) = (None, Vec::new());
    loop {
        let page = store.rescore_inputs(cursor, 2).await.unwrap();
        for lead in &page.leads {
            if needs_replay(&replay(&engine, &lead.events, None, now), lead) {
                events.push(rescore_event(job, &lead.lead_id, None, now));
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    store.insert_events(events).await.unwrap();
}

/// What the service's pass does (`service::decay`), on the store alone: unless the last
/// pass's adjustments wait to be scored, record each lead's adjustment, reading two leads a
/// page.
async fn decay_pass(store: &SqliteStore, half_life: Option<f64>, now: i64) {
    if store.adjustments_pending().await.unwrap() {
        return;
    }
    let (mut cursor, mut adjustments) = (None, Vec::new());
    loop {
        let page = store.decay_inputs(cursor, 2).await.unwrap();
        adjustments.extend(page.inputs.iter().filter_map(|i| adjustment_event(i, half_life, now)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    store.insert_events(adjustments).await.unwrap();
}
