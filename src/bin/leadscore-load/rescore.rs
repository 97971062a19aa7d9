//! `rescore`: every event type's points changed by one, then `POST /api/rescore`, polled until
//! the job is done: how fast a store full of events is replayed with new rules.

use super::{get_json, Opts, TYPES};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The job is given at most this long.
const LIMIT: Duration = Duration::from_secs(3600);

pub async fn rescore(o: &Opts) -> Result<Value, String> {
    let (client, base) = (o.client(), o.url());
    let rules = get_json(&client, &format!("{base}/api/rules")).await?;
    let rules = rules.as_array().cloned().unwrap_or_default();
    // Every type's base rule one point up: every lead's replay changes its score.
    for (event_type, _) in TYPES {
        let points =
            rules.iter().find(|r| r["eventType"] == event_type).and_then(|r| r["points"].as_i64()).unwrap_or(0);
        let rule = json!({"eventType": event_type, "points": points + 1, "isActive": true});
        let r = client.post(format!("{base}/api/rules")).json(&rule).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("changing {event_type}: {}", r.status()));
        }
    }
    let start = Instant::now();
    let r = client.post(format!("{base}/api/rescore")).send().await.map_err(|e| e.to_string())?;
    if r.status().as_u16() != 202 {
        return Err(format!("POST /api/rescore: {}", r.status()));
    }
    let id = r.json::<Value>().await.map_err(|e| e.to_string())?["id"].as_str().unwrap_or_default().to_string();
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job = get_json(&client, &format!("{base}/api/rescore/{id}")).await?;
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("rescore: {} of {} events", job["processed"], job["total"]);
            last_print = Instant::now();
        }
        match job["state"].as_str() {
            Some("running") if start.elapsed() < LIMIT => continue,
            Some("done") => {
                let seconds = start.elapsed().as_secs_f64();
                let processed = job["processed"].as_u64().unwrap_or(0);
                let summary = json!({
                    "mode": "rescore", "processed": processed, "total": job["total"], "leads": job["leads"],
                    "adjusted": job["adjusted"], "seconds": seconds, "per_s": processed as f64 / seconds,
                });
                eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
                return Ok(summary);
            }
            _ => return Err(format!("the job did not finish: {job}")),
        }
    }
}
