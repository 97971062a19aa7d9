//! Lifecycle stages: an ordered ladder of score thresholds (`Cold` from 0, `Warm` from 50,
//! `MQL` from 100, `SQL` from 200 by default). A lead is in the highest stage whose
//! `minScore` its score reaches; a score below every threshold (a negative one) is in the
//! first stage.

use super::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MAX_STAGES: usize = 20;
pub const MAX_STAGE_NAME_CHARS: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub name: String,
    pub min_score: i64,
}

/// A stage with how many leads are in it (the dashboard's overview).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StageCount {
    pub name: String,
    pub min_score: i64,
    pub leads: u64,
}

/// A move from one stage to another: on a history entry, and the stream's `stageChanged`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StageChange {
    pub from: String,
    pub to: String,
}

impl StageChange {
    /// The move a change from `old` to `new` makes, if it crosses a threshold.
    pub fn between(stages: &[Stage], old: i64, new: i64) -> Option<StageChange> {
        let (from, to) = (stage_for(stages, old), stage_for(stages, new));
        (from != to).then(|| StageChange { from: from.into(), to: to.into() })
    }
}

/// The score range of a stage, both ends included (`None`: unbounded), for filtering by
/// stage through the score index; `None` if there is no such stage (names ignore case).
pub fn score_range(stages: &[Stage], name: &str) -> Option<(Option<i64>, Option<i64>)> {
    let i = stages.iter().position(|s| s.name.eq_ignore_ascii_case(name))?;
    let low = (i > 0).then(|| stages[i].min_score);
    let high = stages.get(i + 1).map(|next| next.min_score - 1);
    Some((low, high))
}

pub fn default_stages() -> Vec<Stage> {
    [("Cold", 0), ("Warm", 50), ("MQL", 100), ("SQL", 200)]
        .into_iter()
        .map(|(name, min_score)| Stage { name: name.into(), min_score })
        .collect()
}

/// The stage a score is in. `stages` is a valid ladder (`parse_stages`): never empty.
pub fn stage_for(stages: &[Stage], score: i64) -> &str {
    stages.iter().rev().find(|s| score >= s.min_score).or(stages.first()).map_or("", |s| s.name.as_str())
}

/// Reads a ladder for `PUT /api/stages`: a list of `{name, minScore}` with unique names and
/// strictly rising thresholds. Every problem names its place: `stages[2].minScore`.
pub fn parse_stages(raw: &Value) -> Result<Vec<Stage>, Vec<FieldError>> {
    let Some(list) = raw.as_array() else {
        return Err(vec![FieldError::new("stages", "must be a list of {name, minScore}, lowest first")]);
    };
    if list.is_empty() || list.len() > MAX_STAGES {
        return Err(vec![FieldError::new("stages", format!("must have from 1 to {MAX_STAGES} stages"))]);
    }
    let mut errors = Vec::new();
    let mut stages: Vec<Stage> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("stages[{i}]");
        let Some(obj) = item.as_object() else {
            errors.push(FieldError::new(at, "must be an object {name, minScore}"));
            continue;
        };
        let name = match obj.get("name") {
            Some(Value::String(s))
                if !s.trim().is_empty()
                    && s.chars().count() <= MAX_STAGE_NAME_CHARS
                    && !s.chars().any(char::is_control) =>
            {
                let name = s.trim().to_string();
                if stages.iter().any(|st| st.name.eq_ignore_ascii_case(&name)) {
                    errors.push(FieldError::new(format!("{at}.name"), format!("{name:?} is already a stage")));
                }
                Some(name)
            }
            _ => {
                errors.push(FieldError::new(
                    format!("{at}.name"),
                    format!("must be a name of 1 to {MAX_STAGE_NAME_CHARS} characters"),
                ));
                None
            }
        };
        let min_score = match obj.get("minScore").and_then(Value::as_i64) {
            Some(n) => {
                if let Some(before) = stages.last().filter(|b| b.min_score >= n) {
                    errors.push(FieldError::new(
                        format!("{at}.minScore"),
                        format!("must be above the previous stage's {} (stages go lowest first)", before.min_score),
                    ));
                }
                Some(n)
            }
            None => {
                errors.push(FieldError::new(format!("{at}.minScore"), "must be a whole number"));
                None
            }
        };
        if let (Some(name), Some(min_score)) = (name, min_score) {
            stages.push(Stage { name, min_score });
        }
    }
    if errors.is_empty() {
        Ok(stages)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_score_is_in_the_highest_stage_it_reaches() {
        let ladder = default_stages();
        let at = |score| stage_for(&ladder, score);
        assert_eq!(
            [at(-30), at(0), at(49), at(50), at(100), at(199), at(200), at(1_000_000)],
            ["Cold", "Cold", "Cold", "Warm", "MQL", "MQL", "SQL", "SQL"]
        );
    }

    #[test]
    fn stage_ranges_and_moves_follow_the_ladder() {
        let ladder = default_stages();
        assert_eq!(score_range(&ladder, "cold"), Some((None, Some(49))), "the first stage takes negatives too");
        assert_eq!(score_range(&ladder, "MQL"), Some((Some(100), Some(199))));
        assert_eq!(score_range(&ladder, "SQL"), Some((Some(200), None)));
        assert_eq!(score_range(&ladder, "Hot"), None);
        assert_eq!(StageChange::between(&ladder, 95, 105), Some(StageChange { from: "Warm".into(), to: "MQL".into() }));
        assert_eq!(StageChange::between(&ladder, 10, 40), None);
        assert_eq!(StageChange::between(&ladder, 250, -5), Some(StageChange { from: "SQL".into(), to: "Cold".into() }));
    }

    #[test]
    fn ladders_parse_or_name_their_problem() {
        let ladder =
            parse_stages(&json!([{"name": "New", "minScore": -10}, {"name": " Hot ", "minScore": 10}])).unwrap();
        assert_eq!(ladder[1], Stage { name: "Hot".into(), min_score: 10 });
        let fields = |v: Value| parse_stages(&v).unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(json!([])), ["stages"]);
        assert_eq!(fields(json!({"name": "Cold"})), ["stages"]);
        assert_eq!(
            fields(
                json!([{"name": "A", "minScore": 5}, {"name": "a", "minScore": 5}, {"name": "", "minScore": 1.5}, 7])
            ),
            ["stages[1].name", "stages[1].minScore", "stages[2].name", "stages[2].minScore", "stages[3]"]
        );
        assert_eq!(serde_json::to_value(&ladder[0]).unwrap(), json!({"name": "New", "minScore": -10}));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A higher score is never in a lower stage.
            #[test]
            fn stages_rise_with_the_score(a in -1_000i64..1_000, b in -1_000i64..1_000) {
                let ladder = default_stages();
                let rank = |s: i64| ladder.iter().position(|st| st.name == stage_for(&ladder, s)).unwrap();
                prop_assert!(a > b || rank(a) <= rank(b));
            }
        }
    }
}
