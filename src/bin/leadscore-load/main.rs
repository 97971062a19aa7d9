//! `leadscore-load`: load generator and benchmark driver for Leadscore (replaces the old
//! `simulate_events.js`). Targets only the URL you give it (default http://127.0.0.1:5001);
//! every mode is bounded by an event count or a duration.
//!
//! ```text
//! leadscore-load simulate [--rate 20] [--duration 60] [--leads 500] [--metadata]
//! leadscore-load single   [--events 100000] [--concurrency 64] [--random-ids]
//! leadscore-load bulk     [--events 1000000] [--batch 5000] [--concurrency 4] [--random-ids] [--segment]
//! leadscore-load stream   [--clients 1000] [--rate 20000] [--duration 10] [--leads 10000]
//! leadscore-load query    [--requests 2000] [--concurrency 8] [--leads 1000000]
//! leadscore-load rules    [--count 50] [--limit-every 0]  (adds rules with conditions on the load's metadata)
//! leadscore-load rescore  (every type's points up by one, then a rescore of all leads, timed)
//! leadscore-load hostile  [--concurrency 16] [--rounds 3] [--bytes 5242880]  (bodies that should all get a 4xx)
//! leadscore-load overload [--concurrency 64] [--batch 5000] [--duration 20] [--metadata-bytes 0]  (more bodies than the server holds)
//! leadscore-load soak     [--rate 2000] [--minutes 30] [--clients 200] [--queries 20] [--server-pid PID]
//!                         (mixed single and batch ingest, churning stream clients and queries; per-minute figures)
//! leadscore-load store-ceiling [--events 1000000] [--batch 20000] [--database-url URL]  (no server: Store API)
//! leadscore-load populate (--db FILE | --database-url URL) [--leads 1000000] [--events 5000000] (no server)
//! leadscore-load drop-database --database-url mongodb://…/leadscore_bench…  (clean up after a MongoDB run)
//! common: --url URL  --api-key KEY  --json (print a JSON summary line last)
//! --random-ids: random 104-bit event ids (like UUIDv4) instead of counters, so the unique
//! eventId index takes inserts at random places rather than at a few growing ends.
//! --database-url: sqlite://FILE or mongodb://HOST/DB (a throw-away database); on MongoDB the
//! store ceiling also reports the commands sent per scored event (round trips).
//! ```

mod rescore;
mod soak;

use futures::StreamExt;
use leadscore::domain::engine::Engine;
use leadscore::domain::scoring::default_rules;
use leadscore::domain::NewEvent;
use leadscore::server::config::Database;
use leadscore::server::config::WorkerSection;
use leadscore::service::store::mongo::MongoStore;
use leadscore::service::store::sqlite::SqliteStore;
use leadscore::service::store::{DynStore, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TYPES: [(&str, u32); 5] =
    [("Page View", 50), ("Email Open", 25), ("Form Submission", 12), ("Demo Request", 8), ("Purchase", 5)];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(mode) = args.next() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        match mode.as_str() {
            "simulate" => simulate(&opts).await,
            "single" => single(&opts).await,
            "bulk" => bulk(&opts).await,
            "stream" => stream(&opts).await,
            "hostile" => hostile(&opts).await,
            "overload" => overload(&opts).await,
            "soak" => soak::soak(&opts).await,
            "query" => query(&opts).await,
            "rules" => add_rules(&opts).await,
            "rescore" => rescore::rescore(&opts).await,
            "store-ceiling" => store_ceiling(&opts).await,
            "populate" => populate(&opts).await,
            "drop-database" => drop_database(&opts).await,
            "help" | "--help" | "-h" => {
                println!("{}", usage());
                Ok(Value::Null)
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    });
    match result {
        Ok(summary) => {
            if opts.flag("json") && !summary.is_null() {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A GET answered with JSON.
async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    client.get(url).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())
}

fn usage() -> &'static str {
    "usage: leadscore-load <simulate|single|bulk|stream|query|rules|rescore|hostile|overload|soak|store-ceiling|populate|drop-database> [--option value]…\n\
     see the top of src/bin/leadscore-load/main.rs or README.md (Benchmarks) for the options"
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let key = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap(),
                _ => "true".to_string(),
            };
            map.insert(key.to_string(), value);
        }
        Ok(Self(map))
    }
    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.0.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    fn text(&self, key: &str, default: &str) -> String {
        self.0.get(key).cloned().unwrap_or_else(|| default.to_string())
    }
    fn flag(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    fn url(&self) -> String {
        self.text("url", "http://127.0.0.1:5001").trim_end_matches('/').to_string()
    }
    fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = self.0.get("api-key") {
            headers.insert("x-api-key", key.parse().expect("api key is a header value"));
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client")
    }
}

/// A small, fast, seedable generator (xorshift64*): realistic enough for load.
struct Gen {
    state: u64,
    leads: usize,
    prefix: String,
    next_id: u64,
    metadata: bool,
    /// Random 104-bit ids (UUID-like) instead of a per-run counter.
    random_ids: bool,
}

impl Gen {
    fn new(seed: u64, leads: usize, metadata: bool) -> Self {
        let run = chrono::Utc::now().timestamp_micros() as u64;
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            leads,
            prefix: format!("{run:x}-{seed}"),
            next_id: 0,
            metadata,
            random_ids: false,
        }
    }
    fn unit(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Skewed popularity: a few hot leads get most events, a long tail gets a few.
    fn lead(&mut self) -> usize {
        ((self.leads as f64) * self.unit().powi(3)) as usize
    }
    fn event_type(&mut self) -> &'static str {
        let total: u32 = TYPES.iter().map(|t| t.1).sum();
        let mut pick = (self.unit() * total as f64) as u32;
        for (t, w) in TYPES {
            if pick < w {
                return t;
            }
            pick -= w;
        }
        TYPES[0].0
    }
    fn event_id(&mut self) -> String {
        if self.random_ids {
            let (a, b) = ((self.unit() * 2f64.powi(52)) as u64, (self.unit() * 2f64.powi(52)) as u64);
            return format!("{a:013x}-{b:013x}");
        }
        self.next_id += 1;
        format!("load-{}-{}", self.prefix, self.next_id)
    }
    fn event(&mut self) -> Value {
        let lead = self.lead();
        let mut e = json!({
            "eventId": self.event_id(),
            "leadId": format!("lead-{lead}"),
            "eventType": self.event_type(),
            "timestamp": leadscore::domain::time::to_iso(chrono::Utc::now().timestamp_millis()),
        });
        if self.metadata {
            let page = ["/", "/pricing", "/docs", "/blog/launch", "/signup"][(self.unit() * 5.0) as usize % 5];
            e["metadata"] = json!({"page": page, "campaign": "load-test"});
        }
        e
    }
}

/// Latencies in microseconds and status counts, summarised at the end.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, status: &str, latency: Duration) {
        self.latencies_us.push(latency.as_micros().min(u32::MAX as u128) as u32);
        *self.statuses.entry(status.to_string()).or_default() += 1;
    }
    /// The tallies of every client task, merged.
    async fn joined(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Result<Tally, String> {
        let mut tally = Tally::default();
        for t in tasks {
            tally.merge(t.await.map_err(|e| e.to_string())?);
        }
        Ok(tally)
    }
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
    }
    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
    fn summary(&mut self) -> Value {
        json!({
            "p50_ms": self.percentile_ms(0.50), "p95_ms": self.percentile_ms(0.95), "p99_ms": self.percentile_ms(0.99),
            "statuses": self.statuses,
        })
    }
}

/// Prints `label done/total rate` on stderr twice a second until `stop`.
fn progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    total: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / start.elapsed().as_secs_f64();
            let width = 30usize;
            let filled = if total > 0 { (n * width as u64 / total).min(width as u64) as usize } else { 0 };
            eprint!("\r{label} [{}{}] {n}/{total} {rate:>9.0}/s ", "#".repeat(filled), " ".repeat(width - filled));
        }
        eprintln!();
    })
}

/// Waits until the server has scored everything (queue depth 0); bounded by `limit`.
async fn drained(client: &reqwest::Client, url: &str, limit: Duration) -> Result<Instant, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.get(format!("{url}/api/health")).send().await {
            let h: Value = r.json().await.unwrap_or(Value::Null);
            if h["queue"]["depth"] == 0 {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            return Err("the queue did not drain in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (String, Duration) {
    let start = Instant::now();
    let status = match client.post(url).json(body).send().await {
        Ok(r) => {
            let code = r.status().as_u16().to_string();
            let _ = r.bytes().await;
            code
        }
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "connection error".into(),
    };
    (status, start.elapsed())
}

async fn simulate(o: &Opts) -> Result<Value, String> {
    let (rate, duration, leads) = (o.get("rate", 20.0f64), o.get("duration", 60u64), o.get("leads", 500usize));
    let (client, url) = (o.client(), format!("{}/api/events", o.url()));
    let mut gen = Gen::new(o.get("seed", 1), leads, o.flag("metadata") || !o.flag("no-metadata"));
    let mut tally = Tally::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let end = Instant::now() + Duration::from_secs(duration);
    eprintln!("simulating {rate} events/s for {duration} s across {leads} leads → {url}");
    let mut ticker = tokio::time::interval(interval);
    while Instant::now() < end {
        ticker.tick().await;
        let e = gen.event();
        let (status, latency) = post(&client, &url, &e).await;
        eprintln!(
            "{status} {} {} ({:.1} ms)",
            e["leadId"].as_str().unwrap_or(""),
            e["eventType"].as_str().unwrap_or(""),
            latency.as_secs_f64() * 1e3
        );
        tally.record(&status, latency);
    }
    Ok(json!({"mode": "simulate", "sent": tally.latencies_us.len(), "latency": tally.summary()}))
}

async fn single(o: &Opts) -> Result<Value, String> {
    let (events, concurrency) = (o.get("events", 100_000u64), o.get("concurrency", 64usize));
    let random_ids = o.flag("random-ids");
    let (client, base) = (o.client(), o.url());
    let url = format!("{base}/api/events");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress("single", done.clone(), events, stop.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        let share = events / concurrency as u64 + u64::from((worker as u64) < events % concurrency as u64);
        tasks.push(tokio::spawn(async move {
            let mut gen = Gen::new(worker as u64 + 1, 10_000, false);
            gen.random_ids = random_ids;
            let mut tally = Tally::default();
            for _ in 0..share {
                let (status, latency) = post(&client, &url, &gen.event()).await;
                tally.record(&status, latency);
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    let mut tally = Tally::joined(tasks).await?;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = bar.await;
    let accepted = tally.statuses.get("202").copied().unwrap_or(0);
    let scored_at = drained(&client, &base, Duration::from_secs(300)).await?;
    let summary = json!({
        "mode": "single", "events": events, "concurrency": concurrency, "accepted": accepted,
        "requests_per_s": events as f64 / elapsed.as_secs_f64(),
        "scored_per_s": accepted as f64 / (scored_at - start).as_secs_f64(),
        "latency": tally.summary(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

async fn bulk(o: &Opts) -> Result<Value, String> {
    let (events, batch, concurrency) =
        (o.get("events", 1_000_000u64), o.get("batch", 5000u64), o.get("concurrency", 4usize));
    let random_ids = o.flag("random-ids");
    // `--segment`: Segment `track` messages to `/v1/batch`, with UUID-like message ids as the
    // SDKs send them (keep batches under Segment's 500 KB: 500 messages are ~120 KB).
    let segment = o.flag("segment");
    let random_ids = random_ids || segment;
    let (client, base) = (o.client(), o.url());
    let url = if segment { format!("{base}/v1/batch") } else { format!("{base}/api/events/batch") };
    // The SDKs send the write key as HTTP Basic user name.
    let write_key = segment.then(|| o.0.get("api-key").cloned().unwrap_or_default());
    let batches = events.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress("bulk", done.clone(), events, stop.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, next, done) = (client.clone(), url.clone(), next.clone(), done.clone());
        let write_key = write_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut gen = Gen::new(worker as u64 + 101, 100_000, true);
            gen.random_ids = random_ids;
            let mut tally = Tally::default();
            let mut accepted = 0u64;
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let n = batch.min(events - b * batch);
                let body = if segment {
                    json!({"batch": (0..n).map(|_| segment_track(gen.event())).collect::<Vec<_>>()})
                } else {
                    Value::Array((0..n).map(|_| gen.event()).collect())
                };
                let start = Instant::now();
                let mut request = client.post(&url).json(&body);
                if let Some(key) = &write_key {
                    request = request.basic_auth(key, Some(""));
                }
                let (status, latency) = match request.send().await {
                    Ok(r) => {
                        let code = r.status().as_u16().to_string();
                        let report: Value = r.json().await.unwrap_or(Value::Null);
                        accepted += report["accepted"].as_u64().unwrap_or(0);
                        (code, start.elapsed())
                    }
                    Err(_) => ("connection error".into(), start.elapsed()),
                };
                tally.record(&status, latency);
                done.fetch_add(n, Ordering::Relaxed);
            }
            (tally, accepted)
        }));
    }
    let mut tally = Tally::default();
    let mut accepted = 0;
    for t in tasks {
        let (t, a) = t.await.map_err(|e| e.to_string())?;
        tally.merge(t);
        accepted += a;
    }
    let ingested = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = bar.await;
    let scored_at = drained(&client, &base, Duration::from_secs(600)).await?;
    let summary = json!({
        "mode": "bulk", "events": events, "batch": batch, "concurrency": concurrency, "accepted": accepted,
        "segment": segment, "random_ids": random_ids,
        "accepted_per_s": accepted as f64 / ingested.as_secs_f64(),
        "scored_per_s": accepted as f64 / (scored_at - start).as_secs_f64(),
        "batch_latency": tally.summary(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

/// An event as the Segment `track` message that maps to it (README, "Segment's tracking API").
fn segment_track(e: Value) -> Value {
    json!({
        "type": "track", "messageId": e["eventId"], "userId": e["leadId"], "event": e["eventType"],
        "timestamp": e["timestamp"], "properties": e.get("metadata").cloned().unwrap_or(json!({})),
        "context": {"library": {"name": "leadscore-load", "version": "1"}},
    })
}

/// `--count` (50) rules with two conditions each on the metadata the load sends, spread over
/// the event types: what "ingest with rules carrying conditions" is measured with. With
/// `--limit-every N`, every Nth (from the first) also has a daily limit (0, the default: none).
async fn add_rules(o: &Opts) -> Result<Value, String> {
    let count = o.get("count", 50usize);
    let limit_every = o.get("limit-every", 0usize);
    let (client, base) = (o.client(), o.url());
    let pages = ["/", "/pricing", "/docs", "/blog/launch", "/signup"];
    for i in 0..count {
        let (event_type, _) = TYPES[i % TYPES.len()];
        let mut rule = json!({
            "name": format!("load rule {i}"), "eventType": event_type, "points": (i % 7) as i64 + 1,
            "conditions": [
                {"field": "page", "op": if i % 2 == 0 { "equals" } else { "startsWith" }, "value": pages[i % pages.len()]},
                {"field": "campaign", "op": "in", "value": ["load-test", "spring"]},
            ],
        });
        if limit_every > 0 && i % limit_every == 0 {
            rule["limit"] = json!({"count": 3, "per": "day"});
        }
        let r = client.post(format!("{base}/api/rules")).json(&rule).send().await.map_err(|e| e.to_string())?;
        if r.status().as_u16() != 201 {
            return Err(format!("creating rule {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
    }
    Ok(json!({"mode": "rules", "created": count}))
}

/// Hostile bodies: `--concurrency` (16) clients each posting `--rounds` (3) batch bodies of
/// `--bytes` (5 MB) of tiny values (`[0,0,…]`), and 4 posting as deeply nested arrays, at
/// once. Every answer should be a 4xx; the server's peak memory is what bench.sh records.
async fn hostile(o: &Opts) -> Result<Value, String> {
    let (concurrency, rounds, size) =
        (o.get("concurrency", 16usize), o.get("rounds", 3usize), o.get("bytes", 5 * 1024 * 1024usize));
    let (client, base) = (o.client(), o.url());
    let url = format!("{base}/api/events/batch");
    let mut tiny = Vec::with_capacity(size);
    tiny.push(b'[');
    while tiny.len() + 3 < size {
        tiny.extend_from_slice(b"0,");
    }
    tiny.extend_from_slice(b"0]");
    let depth = size / 2 - 1;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let (tiny, nested) = (Arc::new(tiny), Arc::new(nested));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..concurrency + 4 {
        let body = if k < concurrency { tiny.clone() } else { nested.clone() };
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..rounds {
                let start = Instant::now();
                let sent =
                    client.post(&url).header("content-type", "application/json").body(body.to_vec()).send().await;
                let status = match sent {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "connection error".into(),
                };
                tally.record(&status, start.elapsed());
            }
            tally
        }));
    }
    let mut tally = Tally::joined(tasks).await?;
    let all_4xx = tally.statuses.iter().all(|(s, _)| s.starts_with('4'));
    let summary = json!({
        "mode": "hostile", "clients": concurrency + 4, "body_bytes": size, "rounds": rounds,
        "seconds": start.elapsed().as_secs_f64(), "all_4xx": all_4xx, "latency": tally.summary(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

/// Overload: `--concurrency` (64) clients posting full valid batches (`--batch` 5,000 events
/// over 100 leads, `--metadata-bytes` of padding each) back to back for `--duration` (20) s —
/// more bodies than the server holds at once. Counts 202s and 503s (each 503 must carry Retry-After), then waits until
/// everything is scored and checks that every accepted event was (the leads' event counts
/// add up to the accepted total).
async fn overload(o: &Opts) -> Result<Value, String> {
    let (concurrency, batch, duration) =
        (o.get("concurrency", 64usize), o.get("batch", 5000usize), Duration::from_secs(o.get("duration", 20u64)));
    let pad = "p".repeat(o.get("metadata-bytes", 0usize));
    let (client, base) = (o.client(), o.url());
    let url = format!("{base}/api/events/batch");
    let run = format!("ovl{}", std::process::id());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, run, pad) = (client.clone(), url.clone(), run.clone(), pad.clone());
        tasks.push(tokio::spawn(async move {
            let (mut tally, mut accepted, mut without_retry_after, mut n) = (Tally::default(), 0u64, 0u64, 0u64);
            while start.elapsed() < duration {
                let body: Vec<Value> = (0..batch)
                    .map(|i| {
                        json!({"eventId": format!("{run}-{worker}-{n}-{i}"), "leadId": format!("{run}-lead-{}", i % 100),
                               "eventType": "Page View", "timestamp": "2024-05-01T12:00:00Z", "metadata": {"pad": pad}})
                    })
                    .collect();
                n += 1;
                let sent = Instant::now();
                let status = match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        if code == 503 && r.headers().get("retry-after").is_none() {
                            without_retry_after += 1;
                        }
                        let report: Value = r.json().await.unwrap_or(Value::Null);
                        accepted += report["accepted"].as_u64().unwrap_or(0);
                        code.to_string()
                    }
                    Err(_) => "connection error".into(),
                };
                tally.record(&status, sent.elapsed());
            }
            (tally, accepted, without_retry_after)
        }));
    }
    let (mut tally, mut accepted, mut without_retry_after) = (Tally::default(), 0u64, 0u64);
    for t in tasks {
        let (t, a, w) = t.await.map_err(|e| e.to_string())?;
        tally.merge(t);
        accepted += a;
        without_retry_after += w;
    }
    drained(&client, &base, Duration::from_secs(600)).await?;
    let leads = get_json(&client, &format!("{base}/api/leads?search={run}-lead-&limit=500")).await?;
    let scored: u64 = leads.as_array().map(|l| l.iter().filter_map(|l| l["eventCount"].as_u64()).sum()).unwrap_or(0);
    let summary = json!({
        "mode": "overload", "concurrency": concurrency, "batch": batch, "seconds": duration.as_secs(),
        "accepted": accepted, "scored": scored, "nothing_lost": accepted == scored,
        "busy_without_retry_after": without_retry_after, "latency": tally.summary(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

/// 1,000 SSE clients while ingesting: the time from each probe event's 202 to a client
/// receiving its update. Probe events go to leads of their own, so an update carries exactly
/// one known event; all clients read every byte, `--probes` of them also parse.
async fn stream(o: &Opts) -> Result<Value, String> {
    let (clients, rate, duration) = (o.get("clients", 1000usize), o.get("rate", 20_000u64), o.get("duration", 10u64));
    let (leads, probes) = (o.get("leads", 10_000usize), o.get("probes", 20usize).min(clients));
    let (client, base) = (o.client(), o.url());
    let accepted_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Tally>> = Arc::default();
    let reloads = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // A frame carries the 100 highest-scoring changed leads. Probe leads must be among them
    // to be measured at all, so probes use a rule worth more than any load lead can reach.
    let rule = json!({"eventType": PROBE_TYPE, "points": 1_000_000, "isActive": true});
    let saved = client.post(format!("{base}/api/rules")).json(&rule).send().await.map_err(|e| e.to_string())?;
    if !saved.status().is_success() {
        return Err(format!("cannot create the probe rule: HTTP {}", saved.status()));
    }

    let mut readers = Vec::new();
    for i in 0..clients {
        let (client, url) = (client.clone(), format!("{base}/api/stream"));
        let (accepted_at, latencies, reloads, connected, stop) =
            (accepted_at.clone(), latencies.clone(), reloads.clone(), connected.clone(), stop.clone());
        let parse = i < probes;
        readers.push(tokio::spawn(async move {
            let Ok(r) = client.get(&url).timeout(Duration::from_secs(3600)).send().await else { return };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut body = r.bytes_stream();
            let mut buffer = String::new();
            while !stop.load(Ordering::Relaxed) {
                let chunk = match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
                    Ok(Some(Ok(c))) => c,
                    Ok(_) => break,
                    Err(_) => continue,
                };
                let now = Instant::now();
                if !parse {
                    if memchr_reload(&chunk) {
                        reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    if frame.contains("event: reload") {
                        reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                    if !frame.contains("event: leadUpdated") {
                        continue;
                    }
                    let Ok(Value::Array(updates)) = serde_json::from_str::<Value>(data) else { continue };
                    let times = accepted_at.lock().unwrap();
                    let mut tally = latencies.lock().unwrap();
                    for u in updates.iter().filter(|u| u["leadId"].as_str().is_some_and(|l| l.starts_with("probe-"))) {
                        if let Some(t) = u["eventId"].as_str().and_then(|id| times.get(id)) {
                            tally.record("probe", now.saturating_duration_since(*t));
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected.load(Ordering::Relaxed) < clients as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} of {clients} stream clients connected; ingesting {rate} events/s for {duration} s",
        connected.load(Ordering::Relaxed)
    );

    // Ingest in batches of 100 every 1/(rate/100) s; one event per batch is a probe.
    let url = format!("{base}/api/events/batch");
    let per_batch = 100u64;
    let interval = Duration::from_secs_f64(per_batch as f64 / rate as f64);
    let total_batches = rate * duration / per_batch;
    let sent = Arc::new(AtomicU64::new(0));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut gen = Gen::new(7, leads, false);
    let mut posts = Vec::new();
    let start = Instant::now();
    for b in 0..total_batches {
        ticker.tick().await;
        let mut events: Vec<Value> = (0..per_batch - 1).map(|_| gen.event()).collect();
        let probe_id = gen.event_id();
        events.push(json!({"eventId": probe_id, "leadId": format!("probe-{b}"), "eventType": PROBE_TYPE,
                           "timestamp": leadscore::domain::time::to_iso(chrono::Utc::now().timestamp_millis())}));
        let (client, url, accepted_at, sent) = (client.clone(), url.clone(), accepted_at.clone(), sent.clone());
        posts.push(tokio::spawn(async move {
            if let Ok(r) = client.post(&url).json(&events).send().await {
                if r.status().as_u16() == 202 {
                    accepted_at.lock().unwrap().insert(probe_id, Instant::now());
                    sent.fetch_add(per_batch, Ordering::Relaxed);
                }
            }
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let ingest_secs = start.elapsed().as_secs_f64();
    let _ = drained(&client, &base, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    let mut tally = std::mem::take(&mut *latencies.lock().unwrap());
    let probes_sent = accepted_at.lock().unwrap().len();
    let summary = json!({
        "mode": "stream", "clients": clients, "connected": connected.load(Ordering::Relaxed),
        "target_rate": rate, "achieved_rate": sent.load(Ordering::Relaxed) as f64 / ingest_secs,
        "probe_events": probes_sent, "probe_updates_seen": tally.latencies_us.len(),
        "reloads": reloads.load(Ordering::Relaxed), "latency": tally.summary(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

const PROBE_TYPE: &str = "Load Probe";

fn memchr_reload(chunk: &[u8]) -> bool {
    chunk.windows(13).any(|w| w == b"event: reload")
}

async fn query(o: &Opts) -> Result<Value, String> {
    let (requests, concurrency, leads) =
        (o.get("requests", 2000usize), o.get("concurrency", 8usize), o.get("leads", 1_000_000usize));
    let (client, base) = (o.client(), o.url());
    let mut out = json!({"mode": "query"});
    for (name, path) in [("leaderboard_top100", "top"), ("lead_detail", "detail")] {
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let (client, base) = (client.clone(), base.clone());
            let n = requests / concurrency;
            tasks.push(tokio::spawn(async move {
                let mut gen = Gen::new(worker as u64 + 500, leads, false);
                let mut tally = Tally::default();
                for _ in 0..n {
                    let url = if path == "top" {
                        format!("{base}/api/leads?limit=100")
                    } else {
                        format!("{base}/api/leads/lead-{}", (gen.unit() * leads as f64) as usize)
                    };
                    let start = Instant::now();
                    let status = match client.get(&url).send().await {
                        Ok(r) => {
                            let s = r.status().as_u16().to_string();
                            let _ = r.bytes().await;
                            s
                        }
                        Err(_) => "connection error".into(),
                    };
                    tally.record(&status, start.elapsed());
                }
                tally
            }));
        }
        let mut tally = Tally::joined(tasks).await?;
        out[name] = tally.summary();
    }
    eprintln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(out)
}

fn synthetic(i: u64, lead: usize, event_type: &str) -> NewEvent {
    NewEvent {
        event_id: format!("ceiling-{i}"),
        lead_id: format!("lead-{lead}"),
        event_type: event_type.to_string(),
        timestamp: 1_700_000_000_000 + i as i64,
        metadata: Some(r#"{"page":"/pricing","campaign":"load-test"}"#.into()),
    }
}

/// A store for the Store-API modes: `--database-url`, else a SQLite file at `default_file`.
/// A MongoDB store comes back twice: as the store, and to read its command counter.
async fn open_store(o: &Opts, default_file: std::path::PathBuf) -> Result<(DynStore, Option<Arc<MongoStore>>), String> {
    let database = match o.0.get("database-url") {
        Some(url) => Database::parse(url)?,
        None => Database::Sqlite(default_file),
    };
    match database {
        Database::Sqlite(path) => Ok((Arc::new(SqliteStore::open(path).map_err(|e| e.to_string())?), None)),
        Database::Mongo(uri) => {
            let store = Arc::new(MongoStore::connect(&uri).await.map_err(|e| e.to_string())?);
            store.prepare().await.map_err(|e| e.to_string())?;
            Ok((store.clone(), Some(store)))
        }
    }
}

/// Inserts `events` through the Store API, then scores them the way the worker does, with
/// the worker's batch size: the ceiling the HTTP path is measured against.
async fn store_ceiling(o: &Opts) -> Result<Value, String> {
    let (events, batch, leads) = (
        o.get("events", 1_000_000u64),
        o.get("batch", WorkerSection::default().batch_size),
        o.get("leads", 100_000usize),
    );
    let dir = tempfile_dir()?;
    let (store, mongo) = open_store(o, dir.join("ceiling.db")).await?;
    let (inserted, scored, commands) =
        fill(store.as_ref(), mongo.as_deref(), events, leads, 5000, batch, "ceiling").await?;
    let total = inserted + scored;
    let summary = json!({
        "mode": "store-ceiling", "backend": store.backend(), "events": events, "worker_batch": batch,
        "insert_per_s": events as f64 / inserted, "apply_per_s": events as f64 / scored,
        "end_to_end_per_s": events as f64 / total,
        "scoring_commands_per_event": commands.map(|c| c as f64 / events as f64),
    });
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(summary)
}

/// Fills a database for the query benchmark: every lead gets at least one event.
async fn populate(o: &Opts) -> Result<Value, String> {
    let file = o.0.get("db").map(std::path::PathBuf::from);
    if file.is_none() && !o.flag("database-url") {
        return Err("populate needs --db FILE or --database-url URL".into());
    }
    let (leads, events) = (o.get("leads", 1_000_000usize), o.get("events", 5_000_000u64));
    let (store, mongo) = open_store(o, file.unwrap_or_default()).await?;
    let (inserted, scored, _) =
        fill(store.as_ref(), mongo.as_deref(), events, leads, 20000, WorkerSection::default().batch_size, "populate")
            .await?;
    Ok(json!({"mode": "populate", "leads": leads, "events": events, "insert_s": inserted, "apply_s": scored}))
}

/// Drops a benchmark database on MongoDB (only one whose name starts with `leadscore_bench`).
async fn drop_database(o: &Opts) -> Result<Value, String> {
    let url = o.0.get("database-url").ok_or("drop-database needs --database-url")?;
    let store = MongoStore::connect(url).await.map_err(|e| e.to_string())?;
    if !store.location().rsplit(" / ").next().is_some_and(|db| db.starts_with("leadscore_bench")) {
        return Err(format!("refusing to drop {}: not a leadscore_bench database", store.location()));
    }
    store.drop_database().await.map_err(|e| e.to_string())?;
    Ok(json!({"mode": "drop-database", "dropped": store.location()}))
}

/// Inserts then applies `events` spread over `leads`; returns insert seconds, apply seconds,
/// and on MongoDB the commands the scoring sent (queue reads and `apply`).
async fn fill(
    store: &dyn Store,
    mongo: Option<&MongoStore>,
    events: u64,
    leads: usize,
    insert_batch: usize,
    apply_batch: usize,
    label: &'static str,
) -> Result<(f64, f64, Option<u64>), String> {
    store.seed_rules(default_rules(), 0).await.map_err(|e| e.to_string())?;
    let rules = Arc::new(Engine::new(&store.rules().await.map_err(|e| e.to_string())?));
    let mut gen = Gen::new(3, leads, false);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress(label, done.clone(), events * 2, stop.clone());
    let start = Instant::now();
    let mut i = 0u64;
    while i < events {
        let n = (insert_batch as u64).min(events - i);
        let chunk: Vec<NewEvent> = (i..i + n)
            .map(|k| {
                let lead = if (k as usize) < leads { k as usize } else { gen.lead() };
                synthetic(k, lead, gen.event_type())
            })
            .collect();
        store.insert_events(chunk).await.map_err(|e| e.to_string())?;
        i += n;
        done.fetch_add(n, Ordering::Relaxed);
    }
    let inserted = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let commands_before = mongo.map(MongoStore::commands_sent);
    loop {
        let batch = store.unprocessed(apply_batch).await.map_err(|e| e.to_string())?.events;
        if batch.is_empty() {
            break;
        }
        let n = batch.len() as u64;
        store.apply(batch, rules.clone(), chrono::Utc::now().timestamp_millis()).await.map_err(|e| e.to_string())?;
        done.fetch_add(n, Ordering::Relaxed);
    }
    let scored = start.elapsed().as_secs_f64();
    let commands = mongo.zip(commands_before).map(|(m, before)| m.commands_sent() - before);
    stop.store(true, Ordering::Relaxed);
    let _ = bar.await;
    Ok((inserted, scored, commands))
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("leadscore-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
