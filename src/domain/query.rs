//! Leaderboard and lead-detail query parameters, parsed from `?key=value` pairs.
//! Unknown keys are ignored (old clients send cache-busters); bad values are errors.

use super::model::FieldError;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 500;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
pub const MAX_SEARCH_CHARS: usize = 256;

/// Which leads to list: sorted by score descending, ties by id ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadQuery {
    pub limit: usize,
    pub offset: usize,
    /// Literal, case-insensitive substring of the lead id. Never interpreted as a pattern.
    pub search: Option<String>,
    pub min_score: Option<i64>,
    pub max_score: Option<i64>,
    /// Only leads in this stage (a name from the ladder; case ignored).
    #[serde(default)]
    pub stage: Option<String>,
    /// Only ids after this one (byte order): with `min_score == max_score`, the rest of a band
    /// of equal scores, for keyset paging (`next_band`). Not a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_after: Option<String>,
}

impl Default for LeadQuery {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            offset: 0,
            search: None,
            min_score: None,
            max_score: None,
            stage: None,
            id_after: None,
        }
    }
}

impl LeadQuery {
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Vec<FieldError>> {
        let mut q = LeadQuery::default();
        let mut errors = Vec::new();
        for (key, value) in pairs {
            // An empty value means "not given", as `?limit=&search=` did in the old app.
            if value.is_empty() {
                continue;
            }
            match key {
                "limit" => q.limit = bounded(key, value, 1, MAX_LIMIT, &mut errors).unwrap_or(q.limit),
                "offset" => q.offset = bounded(key, value, 0, usize::MAX, &mut errors).unwrap_or(0),
                "search" if value.chars().count() > MAX_SEARCH_CHARS => {
                    errors.push(FieldError::new(key, format!("must be at most {MAX_SEARCH_CHARS} characters")))
                }
                "search" => q.search = Some(value.to_string()),
                "stage" if value.chars().count() > super::stages::MAX_STAGE_NAME_CHARS => errors.push(FieldError::new(
                    key,
                    format!("must be at most {} characters", super::stages::MAX_STAGE_NAME_CHARS),
                )),
                "stage" => q.stage = Some(value.to_string()),
                "minScore" => q.min_score = integer(key, value, &mut errors),
                "maxScore" => q.max_score = integer(key, value, &mut errors),
                _ => {}
            }
        }
        if let (Some(min), Some(max)) = (q.min_score, q.max_score) {
            if min > max {
                errors.push(FieldError::new("minScore", "must not be greater than maxScore"));
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }

    /// The lowercase needle a store compares against lowercase lead ids.
    pub fn search_needle(&self) -> Option<String> {
        self.search.as_deref().map(str::to_lowercase)
    }

    /// Whether a lead matches the filters (used by stores that filter in memory, and by tests).
    pub fn matches(&self, id: &str, score: i64) -> bool {
        self.id_after.as_deref().is_none_or(|after| id > after)
            && self.min_score.is_none_or(|m| score >= m)
            && self.max_score.is_none_or(|m| score <= m)
            && self.search_needle().is_none_or(|n| id.to_lowercase().contains(&n))
    }

    /// Whether a lead in `stage` passes the stage filter.
    pub fn matches_stage(&self, stage: &str) -> bool {
        self.stage.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(stage))
    }

    /// The query a store runs: the stage filter turned into the score range it stands for
    /// (served by the score index), intersected with any score filters. `None`: no such stage.
    pub fn resolve_stage(&self, stages: &[super::stages::Stage]) -> Option<LeadQuery> {
        let Some(name) = self.stage.as_deref() else { return Some(self.clone()) };
        let (low, high) = super::stages::score_range(stages, name)?;
        let tighter = |a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(pick(a, b)),
            (a, b) => a.or(b),
        };
        Some(LeadQuery {
            min_score: tighter(self.min_score, low, i64::max),
            max_score: tighter(self.max_score, high, i64::min),
            stage: None,
            ..self.clone()
        })
    }
}

/// Keyset paging through every lead a query matches, in leaderboard order, without offsets
/// (which cost a walk past every skipped lead): after the lead `(score, id)`, the next leads
/// are the rest of its score's band (`same_score`), then those below it (`below`). Each is a
/// seek on the (score, id) index.
impl LeadQuery {
    /// The leads with this score and an id after `id`, within the filters (`None`: the score is
    /// outside them).
    pub fn same_score(&self, score: i64, id: &str, limit: usize) -> Option<LeadQuery> {
        let inside = self.min_score.is_none_or(|m| score >= m) && self.max_score.is_none_or(|m| score <= m);
        inside.then(|| LeadQuery {
            limit,
            offset: 0,
            min_score: Some(score),
            max_score: Some(score),
            id_after: Some(id.to_string()),
            stage: None,
            ..self.clone()
        })
    }

    /// The leads scoring below `score`, within the filters (`None`: none can).
    pub fn below(&self, score: i64, limit: usize) -> Option<LeadQuery> {
        let max = score.checked_sub(1)?;
        let max = self.max_score.map_or(max, |m| m.min(max));
        (self.min_score.is_none_or(|m| m <= max)).then(|| LeadQuery {
            limit,
            offset: 0,
            max_score: Some(max),
            id_after: None,
            stage: None,
            ..self.clone()
        })
    }
}

/// Paging of a lead's history and event log, newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailPage {
    pub history_limit: usize,
    pub history_offset: usize,
    pub events_limit: usize,
    pub events_offset: usize,
}

impl Default for DetailPage {
    fn default() -> Self {
        Self { history_limit: DEFAULT_PAGE, history_offset: 0, events_limit: DEFAULT_PAGE, events_offset: 0 }
    }
}

impl DetailPage {
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Vec<FieldError>> {
        let mut p = DetailPage::default();
        let mut errors = Vec::new();
        for (key, value) in pairs {
            if value.is_empty() {
                continue;
            }
            let slot = match key {
                "historyLimit" => &mut p.history_limit,
                "eventsLimit" => &mut p.events_limit,
                "historyOffset" => &mut p.history_offset,
                "eventsOffset" => &mut p.events_offset,
                _ => continue,
            };
            let (min, max) = if key.ends_with("Limit") { (1, MAX_PAGE) } else { (0, usize::MAX) };
            if let Some(n) = bounded(key, value, min, max, &mut errors) {
                *slot = n;
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }
}

fn bounded(key: &str, value: &str, min: usize, max: usize, errors: &mut Vec<FieldError>) -> Option<usize> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(_) if max == usize::MAX => {
            errors.push(FieldError::new(key, format!("must be at least {min}")));
            None
        }
        _ => {
            let range = if max == usize::MAX {
                format!("a whole number ≥ {min}")
            } else {
                format!("a whole number from {min} to {max}")
            };
            errors.push(FieldError::new(key, format!("must be {range}, got {value:?}")));
            None
        }
    }
}

fn integer(key: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match value.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(FieldError::new(key, format!("must be an integer, got {value:?}")));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_empty_values() {
        assert_eq!(LeadQuery::parse([]).unwrap(), LeadQuery::default());
        assert_eq!(LeadQuery::parse([("limit", ""), ("search", "")]).unwrap(), LeadQuery::default());
    }

    #[test]
    fn parses_every_parameter() {
        let q = LeadQuery::parse([
            ("limit", "500"),
            ("offset", "20"),
            ("search", "Acme.*"),
            ("minScore", "-5"),
            ("maxScore", "100"),
            ("stage", "MQL"),
            ("_", "123"),
        ])
        .unwrap();
        assert_eq!(
            q,
            LeadQuery {
                limit: 500,
                offset: 20,
                search: Some("Acme.*".into()),
                min_score: Some(-5),
                max_score: Some(100),
                stage: Some("MQL".into()),
                id_after: None,
            }
        );
    }

    #[test]
    fn a_stage_filter_becomes_a_score_range_within_any_score_filters() {
        let ladder = crate::domain::stages::default_stages();
        let q = LeadQuery { stage: Some("warm".into()), ..Default::default() };
        let r = q.resolve_stage(&ladder).unwrap();
        assert_eq!((r.min_score, r.max_score, r.stage), (Some(50), Some(99), None));
        let q =
            LeadQuery { stage: Some("SQL".into()), min_score: Some(500), max_score: Some(150), ..Default::default() };
        let r = q.resolve_stage(&ladder).unwrap();
        assert_eq!((r.min_score, r.max_score), (Some(500), Some(150)), "empty: nothing matches");
        let q = LeadQuery { stage: Some("Cold".into()), min_score: Some(-10), ..Default::default() };
        assert_eq!(q.resolve_stage(&ladder).unwrap().min_score, Some(-10));
        assert!(LeadQuery { stage: Some("Hot".into()), ..Default::default() }.resolve_stage(&ladder).is_none());
        assert_eq!(LeadQuery::default().resolve_stage(&ladder), Some(LeadQuery::default()));
    }

    #[test]
    fn rejects_out_of_range_and_non_numeric() {
        let errs = LeadQuery::parse([("limit", "501"), ("offset", "-1"), ("minScore", "x")]).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "offset", "minScore"]);
        assert_eq!(errs[0].problem, "must be a whole number from 1 to 500, got \"501\"");
        assert!(LeadQuery::parse([("limit", "0")]).is_err());
        assert_eq!(
            LeadQuery::parse([("minScore", "10"), ("maxScore", "5")]).unwrap_err()[0].problem,
            "must not be greater than maxScore"
        );
    }

    #[test]
    fn search_is_a_literal_case_insensitive_substring() {
        let q = LeadQuery { search: Some("A.C".into()), ..Default::default() };
        assert!(q.matches("xa.cx", 0));
        assert!(!q.matches("abc", 0), "a dot is a dot, not a wildcard");
        let q = LeadQuery { search: Some("ÜBER".into()), min_score: Some(10), ..Default::default() };
        assert!(q.matches("lead-über", 10));
        assert!(!q.matches("lead-über", 9));
    }

    #[test]
    fn detail_paging() {
        assert_eq!(DetailPage::parse([]).unwrap(), DetailPage::default());
        let p = DetailPage::parse([("historyLimit", "5"), ("eventsOffset", "10")]).unwrap();
        assert_eq!((p.history_limit, p.events_offset, p.events_limit), (5, 10, DEFAULT_PAGE));
        assert_eq!(DetailPage::parse([("eventsLimit", "0")]).unwrap_err()[0].field, "eventsLimit");
        assert_eq!(DetailPage::parse([("historyLimit", "501")]).unwrap_err()[0].field, "historyLimit");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any query string pairs: parsed or refused field by field, never a panic; what
            /// parses stays within the documented bounds.
            #[test]
            fn any_query_is_parsed_or_refused_by_field(
                pairs in proptest::collection::vec(
                    (prop_oneof![
                        "limit|offset|search|minScore|maxScore|historyLimit|historyOffset|eventsLimit|eventsOffset",
                        "[a-z]{1,6}"
                    ],
                     ".{0,24}"),
                    0..8
                )
            ) {
                let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match LeadQuery::parse(pairs.iter().copied()) {
                    Ok(q) => prop_assert!(q.limit >= 1 && q.limit <= 500, "{:?}", q),
                    Err(problems) => prop_assert!(problems.iter().all(|p| !p.field.is_empty() && !p.problem.is_empty())),
                }
                match DetailPage::parse(pairs.iter().copied()) {
                    Ok(p) => prop_assert!(p.history_limit >= 1 && p.history_limit <= 500 && p.events_limit >= 1 && p.events_limit <= 500),
                    Err(problems) => prop_assert!(problems.iter().all(|p| !p.field.is_empty() && !p.problem.is_empty())),
                }
            }
        }
    }
}
