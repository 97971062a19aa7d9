//! Frequency limits: a rule scores at most `count` events per lead per UTC calendar window
//! (`day`, `week` starting Monday, `month`), or ever (`lead`; `{"count": 1, "per": "lead"}` is
//! Mautic's non-repeatable action). Windows follow the event's own timestamp, so a replayed
//! or late event counts in the window it happened in.

use super::time::Millis;
use super::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MAX_LIMIT_COUNT: u64 = 1_000_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum Per {
    Day,
    Week,
    Month,
    Lead,
}

impl Per {
    pub const ALL: [Per; 4] = [Per::Day, Per::Week, Per::Month, Per::Lead];

    pub fn as_str(self) -> &'static str {
        match self {
            Per::Day => "day",
            Per::Week => "week",
            Per::Month => "month",
            Per::Lead => "lead",
        }
    }

    /// The window an event at `at` counts in: days since 1970-01-01, weeks since the Monday
    /// before it, months since January 1970, or 0 (`lead`: one window, forever).
    pub fn window(self, at: Millis) -> i64 {
        let day = at.div_euclid(DAY_MS);
        match self {
            Per::Day => day,
            // 1970-01-01 was a Thursday: shift so weeks start on Monday (ISO 8601).
            Per::Week => (day + 3).div_euclid(7),
            Per::Month => {
                use chrono::Datelike;
                let date = chrono::DateTime::from_timestamp_millis(at).map(|d| d.date_naive()).unwrap_or_default();
                (i64::from(date.year()) - 1970) * 12 + i64::from(date.month0())
            }
            Per::Lead => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Limit {
    pub count: u32,
    pub per: Per,
}

/// Reads a rule's `limit` (absent or `null`: no limit).
pub fn parse_limit(raw: Option<&Value>) -> Result<Option<Limit>, Vec<FieldError>> {
    let obj = match raw {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(vec![FieldError::new(
                "limit",
                "must be an object like {\"count\": 1, \"per\": \"day\"}, or null",
            )])
        }
    };
    let mut errors = Vec::new();
    for key in obj.keys().filter(|k| !matches!(k.as_str(), "count" | "per")) {
        errors.push(FieldError::new(format!("limit.{key}"), "unknown key; a limit has count and per"));
    }
    let count = match obj.get("count").and_then(Value::as_u64) {
        Some(n) if (1..=MAX_LIMIT_COUNT).contains(&n) => Some(n as u32),
        _ => {
            errors.push(FieldError::new("limit.count", format!("must be a whole number from 1 to {MAX_LIMIT_COUNT}")));
            None
        }
    };
    let names = Per::ALL.map(Per::as_str).join(", ");
    let per = match obj.get("per").and_then(Value::as_str) {
        Some(name) => match Per::ALL.into_iter().find(|p| p.as_str() == name) {
            Some(p) => Some(p),
            None => {
                errors.push(FieldError::new("limit.per", format!("unknown window {name:?}; one of {names}")));
                None
            }
        },
        None => {
            errors.push(FieldError::new("limit.per", format!("is required: one of {names}")));
            None
        }
    };
    match (count, per) {
        (Some(count), Some(per)) if errors.is_empty() => Ok(Some(Limit { count, per })),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iso;
    use serde_json::json;

    fn at(iso: &str) -> Millis {
        parse_iso(iso).unwrap()
    }

    #[test]
    fn windows_are_utc_calendar_days_weeks_and_months() {
        let (mon, sun) = (at("2024-04-29T00:00:00Z"), at("2024-05-05T23:59:59.999Z"));
        assert_eq!(Per::Week.window(mon), Per::Week.window(sun), "Monday to Sunday is one week");
        assert_eq!(Per::Week.window(sun) + 1, Per::Week.window(at("2024-05-06T00:00:00Z")), "a new week on Monday");
        assert_eq!(Per::Day.window(at("2024-05-01T23:59:59.999Z")) + 1, Per::Day.window(at("2024-05-02T00:00:00Z")));
        assert_eq!(Per::Month.window(at("2024-04-30T23:59:59Z")) + 1, Per::Month.window(at("2024-05-01T00:00:00Z")));
        assert_eq!(Per::Month.window(at("2024-12-31T12:00:00Z")) + 1, Per::Month.window(at("2025-01-01T12:00:00Z")));
        assert_eq!(Per::Month.window(at("1970-01-15T00:00:00Z")), 0);
        assert_eq!(Per::Lead.window(at("1999-01-01T00:00:00Z")), Per::Lead.window(at("2030-01-01T00:00:00Z")));
        assert_eq!(Per::Day.window(-1), -1, "before 1970 counts down, not into day 0");
    }

    #[test]
    fn limits_parse_or_name_their_problem() {
        assert_eq!(parse_limit(None), Ok(None));
        assert_eq!(parse_limit(Some(&Value::Null)), Ok(None));
        assert_eq!(
            parse_limit(Some(&json!({"count": 20, "per": "day"}))),
            Ok(Some(Limit { count: 20, per: Per::Day }))
        );
        let fields = |v: Value| parse_limit(Some(&v)).unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(json!({"count": 0, "per": "day"})), ["limit.count"]);
        assert_eq!(fields(json!({"count": 1.5, "per": "day"})), ["limit.count"]);
        assert_eq!(fields(json!({"count": 3, "per": "year"})), ["limit.per"]);
        assert_eq!(fields(json!({"per": "week", "every": 2})), ["limit.every", "limit.count"]);
        assert_eq!(fields(json!(5)), ["limit"]);
        let text = serde_json::to_value(Limit { count: 1, per: Per::Lead }).unwrap();
        assert_eq!(text, json!({"count": 1, "per": "lead"}));
    }
}
