//! `soak`: hours-long use in minutes of figures. Mixed ingest at a steady rate (half single
//! POSTs, half 50-event batches), stream clients that connect and disconnect all the time,
//! and leaderboard / lead queries, for `--minutes`. Every minute it records the server's RSS
//! and open file descriptors (`--server-pid`), the queue depth, that minute's p99s and, from
//! `/metrics`, the embedded store's commit and checkpoint times, so a leak shows as a slope
//! and a slowdown as a later p99 higher than the first, with where the time went.

use super::{post, Gen, Opts, Tally};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCH: usize = 50;
/// Requests of each kind in flight at most; past it, ticks skip rather than pile up (a
/// server that falls behind shows as fewer accepted events, not as client memory).
const MAX_IN_FLIGHT: usize = 512;
/// Minutes at the start and the end compared for p99.
const WINDOW_MINUTES: usize = 5;

/// One minute's latencies, by kind of request.
#[derive(Default)]
struct Minute {
    single: Tally,
    batch: Tally,
    query: Tally,
    accepted: u64,
}

#[derive(Default)]
struct Shared {
    minute: Mutex<Minute>,
    /// The first and last `WINDOW_MINUTES`, for the p99 comparison.
    first: Mutex<Minute>,
    last: Mutex<Minute>,
    stream_connects: AtomicU64,
    stream_failures: AtomicU64,
    in_flight: AtomicU64,
    /// Requests not sent because `MAX_IN_FLIGHT` were still waiting for an answer.
    skipped: AtomicU64,
}

impl Shared {
    /// Records into this minute, and into the first or last window when inside one.
    fn record(
        &self,
        kind: fn(&mut Minute) -> &mut Tally,
        status: &str,
        latency: Duration,
        accepted: u64,
        window: Window,
    ) {
        let add = |m: &mut Minute| {
            kind(m).record(status, latency);
            m.accepted += accepted;
        };
        add(&mut self.minute.lock().unwrap());
        match window {
            Window::First => add(&mut self.first.lock().unwrap()),
            Window::Last => add(&mut self.last.lock().unwrap()),
            Window::Middle => {}
        }
    }
}

#[derive(Clone, Copy)]
enum Window {
    First,
    Middle,
    Last,
}

fn window(started: Instant, minutes: u64) -> Window {
    let elapsed = started.elapsed().as_secs();
    let span = WINDOW_MINUTES as u64 * 60;
    if elapsed < span {
        Window::First
    } else if elapsed + span >= minutes * 60 {
        Window::Last
    } else {
        Window::Middle
    }
}

pub async fn soak(o: &Opts) -> Result<Value, String> {
    let (rate, minutes) = (o.get("rate", 2000u64), o.get("minutes", 30u64));
    let (clients, queries) = (o.get("clients", 200usize), o.get("queries", 20u64));
    let (leads, pid) = (o.get("leads", 20_000usize), o.get("server-pid", 0u32));
    let (client, base) = (o.client(), o.url());
    let shared = Arc::new(Shared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);

    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(churning_stream(client.clone(), base.clone(), i as u64, shared.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(ingest(client.clone(), base.clone(), rate, leads, minutes, shared.clone(), stop.clone())));
    tasks.push(tokio::spawn(query(client.clone(), base.clone(), queries, minutes, shared.clone(), stop.clone())));

    let mut rows = Vec::new();
    let mut next = started + Duration::from_secs(60);
    let mut store_times = StoreTimes::scrape(&client, &base).await;
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        let mut m = std::mem::take(&mut *shared.minute.lock().unwrap());
        let (depth, store_mb) = health_figures(&client, &base).await;
        let (rss_mb, fds) = process_figures(pid);
        let now = StoreTimes::scrape(&client, &base).await;
        let (commits, checkpoints) =
            (now.commit.since(&store_times.commit), now.checkpoint.since(&store_times.checkpoint));
        store_times = now;
        let row = json!({
            "minute": rows.len() + 1, "rss_mb": rss_mb, "fds": fds, "queue_depth": depth, "store_mb": store_mb,
            "rss_less_store_mb": rss_mb.zip(store_mb).map(|(r, s)| r - s),
            "accepted": m.accepted, "single_p99_ms": m.single.percentile_ms(0.99),
            "batch_p99_ms": m.batch.percentile_ms(0.99), "query_p99_ms": m.query.percentile_ms(0.99),
            "statuses": merged_statuses(&[&m.single, &m.batch, &m.query]),
            "stream_connects": shared.stream_connects.swap(0, Ordering::Relaxed),
            "stream_failures": shared.stream_failures.swap(0, Ordering::Relaxed),
            "skipped": shared.skipped.swap(0, Ordering::Relaxed),
            "commits": commits.count, "commit_p99_ms": commits.quantile_ms(0.99),
            "checkpoints": checkpoints.count, "checkpoint_ms": checkpoints.sum * 1000.0,
            "checkpoint_max_ms": checkpoints.quantile_ms(1.0),
        });
        eprintln!("minute {:>3}: {row}", rows.len() + 1);
        rows.push(row);
        next += Duration::from_secs(60);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(70), t).await;
    }
    let drained = super::drained(&client, &base, Duration::from_secs(300)).await.is_ok();
    let slope = |key: &str| slope(&rows, key);
    let (mut first, mut last) =
        (std::mem::take(&mut *shared.first.lock().unwrap()), std::mem::take(&mut *shared.last.lock().unwrap()));
    Ok(json!({
        "mode": "soak", "rate": rate, "minutes": minutes, "clients": clients, "queries_per_second": queries,
        "rows": rows, "drained": drained,
        "rss_slope_mb_per_min": slope("rss_mb"), "fd_slope_per_min": slope("fds"),
        "rss_less_store_slope_mb_per_min": slope("rss_less_store_mb"), "store_slope_mb_per_min": slope("store_mb"),
        "first": window_summary(&mut first), "last": window_summary(&mut last),
    }))
}

fn window_summary(m: &mut Minute) -> Value {
    json!({
        "single_p99_ms": m.single.percentile_ms(0.99), "batch_p99_ms": m.batch.percentile_ms(0.99),
        "query_p99_ms": m.query.percentile_ms(0.99), "accepted": m.accepted,
    })
}

fn merged_statuses(tallies: &[&Tally]) -> Value {
    let mut all = std::collections::BTreeMap::<String, u64>::new();
    for t in tallies {
        for (k, v) in &t.statuses {
            *all.entry(k.clone()).or_default() += v;
        }
    }
    json!(all)
}

/// Least-squares slope of `key` per minute, leaving out the first two minutes (warm-up:
/// caches and pools fill once).
fn slope(rows: &[Value], key: &str) -> Option<f64> {
    let points: Vec<(f64, f64)> =
        rows.iter().skip(2).filter_map(|r| Some((r["minute"].as_f64()?, r[key].as_f64()?))).collect();
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    Some(cov / var)
}

/// RSS in MB and open file descriptors of the server process, from /proc.
fn process_figures(pid: u32) -> (Option<f64>, Option<usize>) {
    if pid == 0 {
        return (None, None);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count());
    (rss, fds)
}

/// The embedded store's commit and checkpoint histograms, as `/metrics` has them so far.
#[derive(Default)]
struct StoreTimes {
    commit: Histogram,
    checkpoint: Histogram,
}

impl StoreTimes {
    async fn scrape(client: &reqwest::Client, base: &str) -> Self {
        let text = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Self {
            commit: Histogram::parse(&text, "leadscore_sqlite_commit_duration_seconds"),
            checkpoint: Histogram::parse(&text, "leadscore_sqlite_checkpoint_duration_seconds"),
        }
    }
}

/// A Prometheus histogram: cumulative counts by upper bound (seconds), sum and count.
#[derive(Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Self {
        let (bucket, sum, count) = (format!("{name}_bucket{{le=\""), format!("{name}_sum "), format!("{name}_count "));
        let number = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
        let mut h = Self::default();
        for line in text.lines() {
            if let Some((le, n)) = line.strip_prefix(&bucket).and_then(|rest| rest.split_once("\"} ")) {
                h.buckets.push((if le == "+Inf" { f64::INFINITY } else { number(le) }, number(n)));
            } else if let Some(v) = line.strip_prefix(&sum) {
                h.sum = number(v);
            } else if let Some(v) = line.strip_prefix(&count) {
                h.count = number(v);
            }
        }
        h
    }

    /// What was recorded after `before`.
    fn since(&self, before: &Self) -> Self {
        let earlier = |i: usize| before.buckets.get(i).map_or(0.0, |b| b.1);
        Self {
            buckets: self.buckets.iter().enumerate().map(|(i, (le, n))| (*le, n - earlier(i))).collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The bucket bound (ms) that `q` of the samples fall under; `None` without samples.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let wanted = q * self.count;
        (self.count > 0.0)
            .then(|| self.buckets.iter().find(|(_, n)| *n >= wanted).map_or(f64::INFINITY, |b| b.0 * 1000.0))
    }
}

/// Queue depth, and the memory the embedded database holds (MB), from health.
async fn health_figures(client: &reqwest::Client, base: &str) -> (Option<u64>, Option<f64>) {
    let Ok(r) = client.get(format!("{base}/api/health")).send().await else { return (None, None) };
    let h: Value = r.json().await.unwrap_or(Value::Null);
    (h["queue"]["depth"].as_u64(), h["store"]["memoryBytes"].as_f64().map(|b| b / 1_048_576.0))
}

/// `rate` events a second in ticks of 100 ms: half as single POSTs, half in batches.
async fn ingest(
    client: reqwest::Client,
    base: String,
    rate: u64,
    leads: usize,
    minutes: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut gen = Gen::new(7, leads, true);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = (rate / 10).max(2);
    let mut carry = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let singles = per_tick / 2;
        // Batches of 50: carry the remainder into later ticks.
        carry += (per_tick - singles) as usize;
        let mut bodies: Vec<(bool, Value)> = (0..singles).map(|_| (false, gen.event())).collect();
        while carry >= BATCH {
            carry -= BATCH;
            bodies.push((true, Value::Array((0..BATCH).map(|_| gen.event()).collect())));
        }
        for (is_batch, body) in bodies {
            if shared.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT as u64 {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, shared) = (client.clone(), shared.clone());
            let url = format!("{base}/api/events{}", if is_batch { "/batch" } else { "" });
            tokio::spawn(async move {
                let at = window(started, minutes);
                let (status, latency) = post(&client, &url, &body).await;
                let accepted = match (status.as_str(), is_batch) {
                    ("202", true) => BATCH as u64,
                    ("202", false) => 1,
                    _ => 0,
                };
                let kind: fn(&mut Minute) -> &mut Tally = if is_batch { |m| &mut m.batch } else { |m| &mut m.single };
                shared.record(kind, &status, latency, accepted, at);
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// `per_second` reads, alternating the leaderboard's top 100 and one hot lead's page.
async fn query(
    client: reqwest::Client,
    base: String,
    per_second: u64,
    minutes: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(1) as f64));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let url = if n % 2 == 0 { format!("{base}/api/leads?limit=100") } else { format!("{base}/api/leads/lead-0") };
        let (client, shared) = (client.clone(), shared.clone());
        tokio::spawn(async move {
            let at = window(started, minutes);
            let begun = Instant::now();
            let status = match client.get(&url).send().await {
                Ok(r) => {
                    let code = r.status().as_u16().to_string();
                    let _ = r.bytes().await;
                    code
                }
                Err(_) => "connection error".into(),
            };
            shared.record(|m| &mut m.query, &status, begun.elapsed(), 0, at);
        });
    }
}

/// A stream client that stays 5–30 s, leaves, and comes back, until `stop`.
async fn churning_stream(client: reqwest::Client, base: String, seed: u64, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut gen = Gen::new(seed + 100, 1, false);
    while !stop.load(Ordering::Relaxed) {
        let stay = Duration::from_secs_f64(5.0 + 25.0 * gen.unit());
        match client.get(format!("{base}/api/stream")).timeout(Duration::from_secs(3600)).send().await {
            Ok(r) if r.status().is_success() => {
                shared.stream_connects.fetch_add(1, Ordering::Relaxed);
                let mut body = r.bytes_stream();
                let until = Instant::now() + stay;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
                        Ok(Some(Ok(_))) | Err(_) => {}
                        Ok(_) => break,
                    }
                }
            }
            _ => {
                shared.stream_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis((gen.unit() * 1000.0) as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    const SCRAPE: &str = "# TYPE t histogram\nt_bucket{le=\"0.005\"} 90\nt_bucket{le=\"0.25\"} 99\nt_bucket{le=\"0.5\"} 100\nt_bucket{le=\"+Inf\"} 100\nt_sum 1.5\nt_count 100\n";

    #[test]
    fn a_minute_of_a_histogram_is_the_difference_of_two_scrapes() {
        let earlier = SCRAPE.replace("} 90", "} 40").replace("} 99", "} 40").replace("} 100", "} 40");
        let earlier = Histogram::parse(&earlier.replace("t_count 100", "t_count 40"), "t");
        assert_eq!(earlier.buckets[0], (0.005, 40.0));
        let now = Histogram::parse(SCRAPE, "t");
        assert_eq!((now.count, now.sum), (100.0, 1.5));
        assert_eq!(now.quantile_ms(0.99), Some(250.0));
        assert_eq!(now.quantile_ms(1.0), Some(500.0));
        let minute = now.since(&earlier);
        assert_eq!(minute.buckets[..2], [(0.005, 50.0), (0.25, 59.0)]);
        assert_eq!(minute.quantile_ms(0.5), Some(5.0));
        assert_eq!(Histogram::parse("", "t").quantile_ms(0.99), None, "no samples, no quantile");
    }
}
