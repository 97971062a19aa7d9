//! The dashboard's overview: how many leads, how many events today, how far scoring lags,
//! and how scores are spread (a histogram over the score index).

use super::stages::StageCount;
use super::time::Millis;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub leads: u64,
    /// Events received since midnight UTC.
    pub events_today: u64,
    /// Events received and not scored yet, and how long the oldest has waited.
    pub queue_depth: u64,
    pub scoring_lag_ms: Millis,
    pub histogram: Vec<ScoreBucket>,
    pub stages: Vec<StageCount>,
}

/// Leads scoring `from..=to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScoreBucket {
    pub from: i64,
    pub to: i64,
    pub leads: u64,
}

/// Up to `n` buckets of one round width (1, 2 or 5 × a power of ten) covering `min..=max`,
/// starting at a multiple of the width.
pub fn bucket_bounds(min: i64, max: i64, n: usize) -> Vec<(i64, i64)> {
    if min > max || n == 0 {
        return Vec::new();
    }
    let span = (max as i128 - min as i128 + 1) as f64;
    let raw = (span / n as f64).max(1.0);
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let width = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|w| *w >= raw).unwrap_or(10.0 * magnitude);
    let width = width.clamp(1.0, 1e30) as i128;
    let (min, max) = (min as i128, max as i128);
    let mut from = min.div_euclid(width) * width;
    let mut out = Vec::new();
    let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    while from <= max && out.len() < n + 1 {
        out.push((clamp(from), clamp(from + width - 1)));
        from += width;
    }
    out
}

/// Midnight UTC of the day `now` is in.
pub fn start_of_day(now: Millis) -> Millis {
    now - now.rem_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_round_widths_and_cover_the_range() {
        assert_eq!(bucket_bounds(0, 99, 10), (0..10).map(|i| (i * 10, i * 10 + 9)).collect::<Vec<_>>());
        let b = bucket_bounds(3, 1_234, 10);
        assert_eq!(b[0], (0, 199), "width 200, from a multiple of it");
        assert!(b.last().unwrap().1 >= 1_234);
        assert_eq!(bucket_bounds(5, 5, 10), [(5, 5)]);
        let negative = bucket_bounds(-30, 45, 10);
        assert_eq!(negative.first(), Some(&(-30, -21)));
        assert!(negative.windows(2).all(|w| w[1].0 == w[0].1 + 1), "contiguous");
        assert!(bucket_bounds(1, 0, 10).is_empty());
        assert!(bucket_bounds(i64::MIN, i64::MAX, 10).len() <= 11);
    }

    #[test]
    fn days_start_at_midnight_utc() {
        assert_eq!(start_of_day(1_700_000_000_000), 1_699_920_000_000);
        assert_eq!(start_of_day(1_699_920_000_000), 1_699_920_000_000);
    }
}
