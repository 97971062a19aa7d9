//! MongoDB only: exactly-once scoring without transactions, from the partial states a crash
//! or a stall leaves (see `src/service/store/mongo/apply.rs`), and what a batch costs in
//! round trips. SQLite commits a batch in one transaction, so it has no such states.
//!
//! Reported as ignored (never as passed) without `MONGODB_TEST_URI`.

use leadscore::domain::engine::Engine;
use leadscore::domain::query::DetailPage;
use leadscore::domain::scoring::default_rules;
use leadscore::domain::validation::validate_scoring_rule;
use leadscore::domain::{DeadLetter, HistoryEntry, NewEvent, ScoreChange, StoredEvent};
use leadscore::service::store::mongo::{CrashPoint, MongoStore, LEASE_MS};
use leadscore::service::store::{SharedFeed, Store};
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type Case = fn(Arc<MongoStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => { vec![$((stringify!($name), (|s| Box::pin($name(s))) as Case)),*] };
}

const T0: i64 = 1_700_000_000_000;

fn main() {
    let args = Arguments::from_args();
    let uri = std::env::var("MONGODB_TEST_URI").ok().filter(|u| !u.trim().is_empty());
    if uri.is_none() {
        eprintln!("skipped: MONGODB_TEST_URI not set — these tests are reported as ignored, not passed");
    }
    let cases = cases![
        a_crash_after_any_step_is_finished_by_the_next_worker_exactly_once,
        a_crash_while_finishing_another_workers_batch_is_finished_too,
        a_stalled_worker_is_fenced_out_once_its_lease_is_taken_over,
        a_live_lease_keeps_a_racing_worker_off_the_lead,
        a_batch_costs_at_most_one_round_trip_per_event,
        the_feed_numbers_every_change_once_in_order,
        a_worker_stalled_after_adding_its_batch_changes_nothing_when_it_resumes,
        a_worker_fenced_out_of_some_leads_applies_the_others,
        a_half_recorded_batch_survives_dead_letters_and_an_unreadable_lead,
        a_lease_takes_only_the_batchs_leads,
        limits_count_each_event_once_whatever_step_a_worker_dies_after,
        a_merge_crashed_after_any_step_is_finished_once,
    ];
    let missing = uri.is_none();
    let trials = cases
        .into_iter()
        .map(|(name, case)| {
            let uri = uri.clone();
            Trial::test(name, move || run(uri, case)).with_ignored_flag(missing)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run(uri: Option<String>, case: Case) -> Result<(), Failed> {
    let uri = uri.ok_or("MONGODB_TEST_URI not set")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("leadscore_fencing_{}_{n}", std::process::id());
        let store = Arc::new(MongoStore::connect_to(&uri, Some(&name)).await.map_err(|e| e.to_string())?);
        store.prepare().await.map_err(|e| e.to_string())?;
        store.seed_rules(default_rules(), T0).await.map_err(|e| e.to_string())?;
        let outcome = tokio::spawn(case(store.clone())).await;
        store.drop_database().await.map_err(|e| e.to_string())?;
        outcome.map_err(|e| Failed::from(format!("case failed: {e}")))
    })
}

fn ev(id: &str, lead: &str, ty: &str) -> NewEvent {
    NewEvent { event_id: id.into(), lead_id: lead.into(), event_type: ty.into(), timestamp: T0, metadata: None }
}

/// Events `prefix-0..n` over `leads` leads, alternating types (5 and 100 points).
fn events(prefix: &str, n: usize, leads: &[&str]) -> Vec<NewEvent> {
    let types = ["Page View", "Purchase"];
    (0..n).map(|i| ev(&format!("{prefix}-{i}"), leads[i % leads.len()], types[i % 2])).collect()
}

/// The oldest `limit` queued events, as the worker reads them.
async fn priced(store: &MongoStore, limit: usize) -> Vec<StoredEvent> {
    store.unprocessed(limit).await.unwrap().events
}

/// The store's rules, as the worker prices with them.
async fn engine(store: &MongoStore) -> Arc<Engine> {
    Arc::new(Engine::new(&store.rules().await.unwrap()))
}

/// Scores everything unprocessed at `now` the way the worker does.
async fn drain(store: &MongoStore, now: i64) {
    for _ in 0..100 {
        let batch = priced(store, 1_000).await;
        if batch.is_empty() {
            return;
        }
        store.apply(batch, engine(store).await, now).await.unwrap();
    }
    panic!("the queue did not drain");
}

async fn expect_crash(store: &MongoStore, point: CrashPoint, batch: Vec<StoredEvent>, now: i64) {
    store.crash_after(point);
    let err = store.apply(batch, engine(store).await, now).await.expect_err("the simulated crash happens");
    assert!(err.to_string().contains(&format!("simulated crash after {point:?}")), "{err}");
}

/// Each event counted once, each history chain old → new from 0 to the score, nothing queued.
async fn assert_exact(store: &MongoStore, posted: &[NewEvent]) {
    assert_eq!(store.queue_stats().await.unwrap().depth, 0, "nothing left unprocessed");
    let mut expected: HashMap<&str, (i64, i64)> = HashMap::new();
    for e in posted {
        let points = if e.event_type == "Purchase" { 100 } else { 5 };
        let entry = expected.entry(e.lead_id.as_str()).or_default();
        *entry = (entry.0 + points, entry.1 + 1);
    }
    for (lead_id, (score, count)) in expected {
        let lead = store.lead(lead_id).await.unwrap().unwrap_or_else(|| panic!("{lead_id} missing"));
        assert_eq!((lead.score, lead.event_count), (score, count), "{lead_id}");
        let page = DetailPage { history_limit: 1_000, ..Default::default() };
        let history = store.history(lead_id, &page).await.unwrap();
        assert_eq!(history.len() as i64, count, "{lead_id}: one history entry per event");
        assert_chained_once(lead_id, &history, lead.score);
        let page = DetailPage { events_limit: 1_000, ..Default::default() };
        for e in store.lead_events(lead_id, &page).await.unwrap() {
            assert!(e.processed && e.points.is_some(), "{} processed with its points", e.event_id);
        }
    }
}

/// A lead's history (newest first) names each event once, and chains old → new from 0 to the score.
fn assert_chained_once(lead_id: &str, history: &[HistoryEntry], score: i64) {
    let mut ids: Vec<&str> = history.iter().map(|h| h.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), history.len(), "{lead_id}: an event has two entries");
    let mut chained = 0;
    for h in history.iter().rev() {
        assert_eq!(
            (h.old_score, h.new_score),
            (chained, chained + h.delta),
            "{lead_id}: chain broken at {}",
            h.event_id
        );
        chained = h.new_score;
    }
    assert_eq!(chained, score, "{lead_id}: the chain ends at the score");
}

// ---- cases ----

/// A worker dies right after each step in turn; the next worker, once the lease has
/// expired, finishes the job, and a redelivery of everything changes nothing.
async fn a_crash_after_any_step_is_finished_by_the_next_worker_exactly_once(store: Arc<MongoStore>) {
    // Steps that only run when a batch is left half-done have their own case below.
    let points = CrashPoint::ALL.iter().filter(|p| !matches!(p, CrashPoint::RecoverHistory | CrashPoint::Recover));
    // `a` has a score before the first round.
    let mut all_posted = vec![ev("seed", "a", "Purchase")];
    store.insert_events(all_posted.clone()).await.unwrap();
    drain(&store, T0 - 1).await;
    for (round, point) in points.enumerate() {
        let now = T0 + 10 * round as i64 * LEASE_MS;
        // `a` already has a score from earlier rounds; `b-<round>` is new, so it is created.
        let new_lead = format!("b-{round}");
        let posted = events(&format!("r{round}"), 12, &["a", &new_lead]);
        store.insert_events(posted.clone()).await.unwrap();
        all_posted.extend(posted.clone());
        expect_crash(&store, *point, priced(&store, 1_000).await, now).await;
        // While the dead worker's lease lasts, nobody else touches its leads...
        // (A new lead is only leased once created: after `Lease` it is anybody's.)
        let early = store.apply(priced(&store, 1_000).await, engine(&store).await, now + 1).await.unwrap();
        let leased = |c: &&ScoreChange| c.lead_id == "a" || *point != CrashPoint::Lease;
        assert!(!early.iter().any(|c| leased(&c)), "{point:?}: applied under a live lease: {early:?}");
        // ...once it has expired, the next worker finishes the batch.
        drain(&store, now + LEASE_MS + 1).await;
        // Every event of both leads offered again: nothing counts twice.
        let page = DetailPage { events_limit: 1_000, ..Default::default() };
        let mut stored = store.lead_events(&new_lead, &page).await.unwrap();
        stored.extend(store.lead_events("a", &page).await.unwrap());
        assert!(
            store.apply(stored, engine(&store).await, now + 2 * LEASE_MS).await.unwrap().is_empty(),
            "{point:?}: applied again"
        );
        let new_leads: Vec<NewEvent> = posted.into_iter().filter(|e| e.lead_id == new_lead).collect();
        assert_exact(&store, &new_leads).await;
    }
    assert_exact(&store, &all_posted).await;
}

/// A worker dies after adding a batch (leaving `lastBatch`); the worker finishing it dies
/// after each of its own steps in turn; a third finishes everything, exactly once.
async fn a_crash_while_finishing_another_workers_batch_is_finished_too(store: Arc<MongoStore>) {
    for (round, point) in CrashPoint::ALL.iter().enumerate() {
        let now = T0 + 10 * round as i64 * LEASE_MS;
        let lead = format!("c-{round}");
        let first = events(&format!("first{round}"), 6, &[&lead]);
        store.insert_events(first.clone()).await.unwrap();
        expect_crash(&store, CrashPoint::Apply, priced(&store, 1_000).await, now).await;
        // More events arrive, one for a new lead; the next worker dies at `point`.
        let second = events(&format!("second{round}"), 4, &[&lead, &format!("d-{round}")]);
        store.insert_events(second.clone()).await.unwrap();
        let later = now + LEASE_MS + 1;
        expect_crash(&store, *point, priced(&store, 1_000).await, later).await;
        drain(&store, later + LEASE_MS + 1).await;
        let posted: Vec<NewEvent> = first.into_iter().chain(second).collect();
        assert_exact(&store, &posted).await;
    }
}

/// Worker A leases and stalls past its lease; B takes over and scores everything; when A
/// resumes, its writes match nothing.
async fn a_stalled_worker_is_fenced_out_once_its_lease_is_taken_over(store: Arc<MongoStore>) {
    let posted = events("s", 30, &["a", "s1", "s2"]);
    store.insert_events(posted.clone()).await.unwrap();
    let batch = priced(&store, 1_000).await;
    let stalled = store.lease(batch.clone(), engine(&store).await, T0).await.unwrap();
    let b = store.apply(batch.clone(), engine(&store).await, T0 + LEASE_MS + 1).await.unwrap();
    assert_eq!(b.len(), 30, "B scores all of it");
    let a = store.commit(stalled).await.unwrap();
    assert!(a.is_empty(), "A was fenced out, yet applied {a:?}");
    assert_exact(&store, &posted).await;
}

/// While A's lease is live, B gets none of A's leads; when A is done, nothing is left.
async fn a_live_lease_keeps_a_racing_worker_off_the_lead(store: Arc<MongoStore>) {
    let posted = events("r", 20, &["a"]);
    store.insert_events(posted.clone()).await.unwrap();
    let batch = priced(&store, 1_000).await;
    let a = store.lease(batch.clone(), engine(&store).await, T0).await.unwrap();
    assert!(
        store.apply(batch.clone(), engine(&store).await, T0 + 1).await.unwrap().is_empty(),
        "B must wait for the lead"
    );
    assert_eq!(store.commit(a).await.unwrap().len(), 20);
    assert!(store.apply(batch, engine(&store).await, T0 + 2).await.unwrap().is_empty(), "all applied already");
    assert_exact(&store, &posted).await;
}

/// The worker's whole step (read the queue, read the rules, apply) over a realistic batch
/// costs at most one round trip per event.
async fn a_batch_costs_at_most_one_round_trip_per_event(store: Arc<MongoStore>) {
    let leads: Vec<String> = (0..200).map(|i| format!("rt-{i}")).collect();
    let leads: Vec<&str> = leads.iter().map(String::as_str).collect();
    let posted = events("rt", 2_000, &leads);
    for chunk in posted.chunks(500) {
        store.insert_events(chunk.to_vec()).await.unwrap();
    }
    let before = store.commands_sent();
    let mut steps = 0;
    for _ in 0..10 {
        let batch = priced(&store, 500).await;
        if batch.is_empty() {
            break;
        }
        steps += 1;
        store.apply(batch, engine(&store).await, T0).await.unwrap();
    }
    let commands = store.commands_sent() - before;
    println!("{commands} commands for 2000 events in {steps} steps of 500");
    assert!(commands > 0, "the counter counts");
    assert!(commands <= 2_000, "{commands} round trips for 2000 events");
    assert!(commands <= 15 * steps, "{commands} round trips in {steps} steps: more than a fixed number per step");
    assert_exact(&store, &posted).await;
}

/// Every applied change is in the feed once, numbered in the order it was recorded.
async fn the_feed_numbers_every_change_once_in_order(store: Arc<MongoStore>) {
    let (written, reserved) = store.head().await.unwrap();
    assert_eq!(written, reserved, "nothing in flight");
    let posted = events("f", 50, &["a", "f1"]);
    store.insert_events(posted.clone()).await.unwrap();
    let mut applied = Vec::new();
    for chunk in priced(&store, 1_000).await.chunks(20) {
        applied.extend(store.apply(chunk.to_vec(), engine(&store).await, T0).await.unwrap());
    }
    assert_eq!(applied.len(), 50);
    let feed = store.within(&[(written + 1, i64::MAX)], 1_000).await.unwrap();
    let positions: Vec<i64> = feed.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (written + 1..=written + 50).collect::<Vec<_>>(), "one position per change, no gaps");
    assert_eq!(feed.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(), applied, "in the order applied");
    assert_eq!(store.head().await.unwrap(), (written + 50, written + 50));
    let two_spans = store.within(&[(written + 11, written + 13), (written + 40, written + 41)], 100).await.unwrap();
    assert_eq!(two_spans.iter().map(|(p, _)| *p - written).collect::<Vec<_>>(), [11, 12, 40]);
    // A worker that reserved positions and died: they stay a gap, and the head says so.
    expect_crash(
        &store,
        CrashPoint::Number,
        {
            store.insert_events(events("g", 3, &["g1"])).await.unwrap();
            priced(&store, 1_000).await
        },
        T0,
    )
    .await;
    assert_eq!(store.head().await.unwrap(), (written + 50, written + 53));
}

/// A worker stopped between adding its batch and recording it (SIGSTOP, a GC pause) past its
/// lease: another worker finishes that batch and adds its own; the first one, resumed,
/// writes the same records again and releases nothing.
async fn a_worker_stalled_after_adding_its_batch_changes_nothing_when_it_resumes(store: Arc<MongoStore>) {
    let first = events("p", 10, &["a", "p1"]);
    store.insert_events(first.clone()).await.unwrap();
    let (reached, resume) = store.pause_after(CrashPoint::Apply);
    let stalled = {
        let (store, batch) = (store.clone(), priced(&store, 1_000).await);
        tokio::spawn(async move { store.apply(batch, engine(&store).await, T0).await })
    };
    reached.notified().await;
    let second = events("q", 6, &["a", "p1"]);
    store.insert_events(second.clone()).await.unwrap();
    let b = store.apply(priced(&store, 1_000).await, engine(&store).await, T0 + LEASE_MS + 1).await.unwrap();
    assert_eq!(b.len(), 6, "B adds only the new events (and finishes A's batch as recorded)");
    resume.notify_one();
    let a = stalled.await.unwrap().unwrap();
    assert_eq!(a.len(), 10, "A's batch was added once, by A");
    let posted: Vec<NewEvent> = first.into_iter().chain(second).collect();
    assert_exact(&store, &posted).await;
}

/// A worker that lost only some of its leads applies the rest.
async fn a_worker_fenced_out_of_some_leads_applies_the_others(store: Arc<MongoStore>) {
    let posted = events("x", 12, &["x1", "x2", "x3"]);
    store.insert_events(posted.clone()).await.unwrap();
    let batch = priced(&store, 1_000).await;
    let a = store.lease(batch.clone(), engine(&store).await, T0).await.unwrap();
    // B takes over x2 only, after A's lease expired.
    let x2: Vec<StoredEvent> = batch.iter().filter(|e| e.lead_id == "x2").cloned().collect();
    assert_eq!(store.apply(x2, engine(&store).await, T0 + LEASE_MS + 1).await.unwrap().len(), 4);
    let applied = store.commit(a).await.unwrap();
    let mut leads: Vec<&str> = applied.iter().map(|c| c.lead_id.as_str()).collect();
    leads.dedup();
    assert_eq!(leads, ["x1", "x3"], "x2 was not A's any more");
    assert_eq!(applied.len(), 8);
    assert_exact(&store, &posted).await;
}

/// A batch a crash left added but unrecorded (its events in the lead's `lastBatch`, still
/// unprocessed) must be finished by the lead's next holder, whatever happens meanwhile: the
/// worker giving up on those events (they are never set aside), or the next batch failing
/// on another lead that does not read (the lease ends, the unfinished batch stays).
async fn a_half_recorded_batch_survives_dead_letters_and_an_unreadable_lead(store: Arc<MongoStore>) {
    let posted = events("half", 4, &["a"]);
    store.insert_events(posted.clone()).await.unwrap();
    expect_crash(&store, CrashPoint::Apply, priced(&store, 1_000).await, T0).await;

    let letters: Vec<DeadLetter> = priced(&store, 1_000)
        .await
        .iter()
        .map(|e| DeadLetter {
            id: e.seq,
            event_id: Some(e.event_id.clone()),
            lead_id: Some(e.lead_id.clone()),
            error: "gave up".into(),
            attempts: 5,
            dead_lettered_at: T0,
            raw: String::new(),
        })
        .collect();
    store.dead_letter(letters).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (4, 0), "recorded in a lastBatch: not set aside");
    assert_eq!(store.dead_letters(None, 10).await.unwrap(), (vec![], 0));

    use mongodb::bson::doc;
    let broken = doc! {"_id": "broken", "leadId": "broken", "score": "not a number"};
    store.raw_collection("leads").insert_one(broken).await.unwrap();
    store.insert_events(vec![ev("bad-1", "broken", "Purchase")]).await.unwrap();
    let later = T0 + 2 * LEASE_MS;
    let err = store
        .apply(priced(&store, 1_000).await, engine(&store).await, later)
        .await
        .expect_err("the broken lead does not read");
    assert!(err.to_string().contains("unreadable score"), "{err}");
    // Its lease ended at once: the others' next try needs no expiry.
    let without_broken: Vec<StoredEvent> =
        priced(&store, 1_000).await.into_iter().filter(|e| e.lead_id != "broken").collect();
    store.apply(without_broken, engine(&store).await, later + 1).await.unwrap();
    assert_eq!(store.queue_stats().await.unwrap().depth, 1, "only the broken lead's event is left");
    store.raw_collection("events").delete_one(doc! {"eventId": "bad-1"}).await.unwrap();
    assert_exact(&store, &posted).await;
}

/// A lease takes the batch's leads and no other: the filter's `$or` must not widen it to a
/// lead never leased (the stand-in once read `{_id: …, $or: [x, y]}` as `_id AND x OR y`).
async fn a_lease_takes_only_the_batchs_leads(store: Arc<MongoStore>) {
    use mongodb::bson::doc;
    store.insert_events(events("first", 2, &["a"])).await.unwrap();
    drain(&store, T0).await;
    // As the old app left its leads: no lease fields at all.
    store.raw_collection("leads").insert_one(doc! {"_id": "z", "leadId": "z", "score": 5_i64}).await.unwrap();
    store.insert_events(vec![ev("second", "a", "Purchase")]).await.unwrap();
    let leased = store.lease(priced(&store, 10).await, engine(&store).await, T0 + 1).await.unwrap();
    let leads = store.raw_collection("leads");
    let held = |id: &'static str| {
        let leads = leads.clone();
        async move { leads.find_one(doc! {"_id": id}).await.unwrap().unwrap().get_str("leaseToken").is_ok() }
    };
    assert!(held("a").await, "the batch's lead is leased");
    assert!(!held("z").await, "a lead outside the batch is not");
    store.commit(leased).await.unwrap();
}

/// A limited rule's count lives on the lead and moves with its score in one fenced update: a
/// worker dying after any step, or fenced out, never lets the rule score once too often.
async fn limits_count_each_event_once_whatever_step_a_worker_dies_after(store: Arc<MongoStore>) {
    let raw = serde_json::json!({"name": "Bonus", "eventType": "Purchase", "points": 7, "limit": {"count": 2, "per": "lead"}});
    let bonus = store.create_rule(validate_scoring_rule(&raw).unwrap(), T0).await.unwrap();
    let check = |lead: String, events: usize| {
        let store = store.clone();
        let bonus_id = bonus.id.clone();
        async move {
            let lead_doc = store.lead(&lead).await.unwrap().unwrap();
            assert_eq!(lead_doc.score, events as i64 * 100 + 2 * 7, "{lead}: the bonus counted exactly twice");
            let page = DetailPage { events_limit: 1_000, ..Default::default() };
            let rewarded = store
                .lead_events(&lead, &page)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.matches.iter().flatten().any(|m| m.rule_id == bonus_id && !m.limited))
                .count();
            assert_eq!(rewarded, 2, "{lead}: explanations agree with the score");
        }
    };
    for (round, point) in CrashPoint::ALL.iter().enumerate() {
        let now = T0 + 10 * round as i64 * LEASE_MS;
        let lead = format!("limit-{round}");
        let posted: Vec<NewEvent> = (0..5).map(|i| ev(&format!("lim{round}-{i}"), &lead, "Purchase")).collect();
        store.insert_events(posted[..3].to_vec()).await.unwrap();
        let recovering = matches!(point, CrashPoint::RecoverHistory | CrashPoint::Recover);
        // The recovery steps only run when an earlier worker left a batch half-done.
        let first = if recovering { CrashPoint::Apply } else { *point };
        expect_crash(&store, first, priced(&store, 1_000).await, now).await;
        store.insert_events(posted[3..].to_vec()).await.unwrap();
        if recovering {
            expect_crash(&store, *point, priced(&store, 1_000).await, now + LEASE_MS + 1).await;
        }
        drain(&store, now + 3 * LEASE_MS).await;
        check(lead, 5).await;
    }
    // Fenced out: A prices under its lease, stalls; B takes over and scores everything.
    let posted: Vec<NewEvent> = (0..4).map(|i| ev(&format!("fence-{i}"), "limit-f", "Purchase")).collect();
    store.insert_events(posted).await.unwrap();
    let batch = priced(&store, 1_000).await;
    let stalled = store.lease(batch.clone(), engine(&store).await, T0).await.unwrap();
    store.apply(batch, engine(&store).await, T0 + LEASE_MS + 1).await.unwrap();
    assert!(store.commit(stalled).await.unwrap().is_empty(), "A was fenced out");
    store.insert_events(vec![ev("fence-late", "limit-f", "Purchase")]).await.unwrap();
    drain(&store, T0 + 3 * LEASE_MS).await;
    check("limit-f".into(), 5).await;
}

/// An anonymous lead and a known one, each with scored events, then an `Alias` of the first
/// into the second and, after it, one more event for the anonymous id.
async fn merge_scenario(store: &MongoStore, tag: &str) -> (String, String, NewEvent, NewEvent) {
    let (anon, known) = (format!("anon-{tag}"), format!("known-{tag}"));
    store.insert_events(events(&format!("m-{tag}"), 6, &[&anon, &known])).await.unwrap();
    let metadata = serde_json::json!({ "previousId": anon }).to_string();
    let alias = NewEvent { metadata: Some(metadata), ..ev(&format!("alias-{tag}"), &known, "Alias") };
    let late = ev(&format!("late-{tag}"), &anon, "Purchase");
    (anon, known, alias, late)
}

/// What a merged lead looks like from outside: score, events, history (old → new per entry,
/// each event once), the alias, and the anonymous lead gone.
async fn merged_state(store: &MongoStore, anon: &str, known: &str) -> (i64, i64, usize) {
    assert_eq!(store.merged_into(anon).await.unwrap().as_deref(), Some(known), "{anon} → {known}");
    assert!(store.lead(anon).await.unwrap().is_none(), "{anon} is gone");
    let lead = store.lead(known).await.unwrap().expect("the known lead");
    let page = DetailPage { history_limit: 1_000, events_limit: 1_000, ..Default::default() };
    let history = store.history(known, &page).await.unwrap();
    assert_chained_once(known, &history, lead.score);
    let marked: Vec<_> = history.iter().filter_map(|h| h.merged_from.as_deref()).collect();
    assert_eq!(marked, [anon], "{known}: the merge's own entry, and only it, names the merged lead");
    for e in store.lead_events(known, &page).await.unwrap() {
        assert!(e.processed, "{} processed", e.event_id);
    }
    (lead.score, lead.event_count, history.len())
}

/// A merge dies after each of its steps, and after each step of scoring the merge event, in
/// turn; once the leases have expired the next worker finishes it. The result is the one a
/// merge that never crashed gives, and a redelivery of everything changes nothing.
async fn a_merge_crashed_after_any_step_is_finished_once(store: Arc<MongoStore>) {
    let (anon, known, alias, late) = merge_scenario(&store, "ref").await;
    drain(&store, T0).await;
    store.insert_events(vec![alias, late]).await.unwrap();
    drain(&store, T0 + 1).await;
    let expected = merged_state(&store, &anon, &known).await;
    assert_eq!(expected, (3 * 5 + 3 * 100 + 100, 8, 8), "the merge with no crash");

    let after_merge = [CrashPoint::Lease, CrashPoint::Apply, CrashPoint::History, CrashPoint::Processed];
    for (round, point) in CrashPoint::MERGE.iter().chain(after_merge.iter()).enumerate() {
        let now = T0 + 10 * (round as i64 + 1) * LEASE_MS;
        let (anon, known, alias, late) = merge_scenario(&store, &round.to_string()).await;
        drain(&store, now).await;
        store.insert_events(vec![alias]).await.unwrap();
        expect_crash(&store, *point, priced(&store, 1_000).await, now + 1).await;
        store.insert_events(vec![late]).await.unwrap();
        drain(&store, now + LEASE_MS + 2).await;
        assert_eq!(merged_state(&store, &anon, &known).await, expected, "{point:?}");
        let page = DetailPage { events_limit: 1_000, ..Default::default() };
        let stored = store.lead_events(&known, &page).await.unwrap();
        assert!(
            store.apply(stored, engine(&store).await, now + 2 * LEASE_MS).await.unwrap().is_empty(),
            "{point:?}: applied again"
        );
        assert_eq!(merged_state(&store, &anon, &known).await, expected, "{point:?}: after the redelivery");
    }
}
