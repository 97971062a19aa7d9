//! The dashboard's overview (`domain::overview`), read from the store's indexes and the
//! cached stage counts; a second cache in front, as every open dashboard asks.

use super::{now_ms, Service, ServiceResult};
use crate::domain::overview::{bucket_bounds, start_of_day, Overview, ScoreBucket};
use std::time::{Duration, Instant};

/// Bars of the score histogram.
const BUCKETS: usize = 10;
/// How long one overview serves every dashboard that asks.
const FRESH: Duration = Duration::from_secs(2);

impl Service {
    pub async fn overview(&self) -> ServiceResult<Overview> {
        if let Some((at, overview)) = self.overview_cache.lock().unwrap().as_ref() {
            if at.elapsed() < FRESH {
                return Ok(overview.clone());
            }
        }
        let now = now_ms();
        let (stages, events_today, range, health) = tokio::join!(
            self.stage_counts(),
            self.store.events_since(start_of_day(now)),
            self.store.score_range(),
            self.health()
        );
        let stages = stages?;
        let mut histogram = Vec::new();
        if let Some((low, high)) = range? {
            for (from, to) in bucket_bounds(low, high, BUCKETS) {
                histogram.push(ScoreBucket { from, to, leads: self.store.count_leads(Some(from), Some(to)).await? });
            }
        }
        let overview = Overview {
            leads: stages.iter().map(|s| s.leads).sum(),
            events_today: events_today?,
            queue_depth: health.queue.depth.unwrap_or(0),
            scoring_lag_ms: health.queue.oldest_unprocessed_age_ms.unwrap_or(0),
            histogram,
            stages,
        };
        *self.overview_cache.lock().unwrap() = Some((Instant::now(), overview.clone()));
        Ok(overview)
    }
}
