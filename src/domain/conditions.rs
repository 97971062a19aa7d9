//! Rule conditions: a test on one field of an event's metadata (`page`, `utm.source`); a rule
//! scores an event only if all its conditions hold. The semantics are what marketers know from
//! HubSpot's and Mautic's filters:
//! - string comparisons ignore case (`equals "/Pricing"` matches `/pricing`);
//! - numeric comparisons (`gt`, `gte`, `lt`, `lte`) compare numbers only: a string never
//!   matches `gt`, even one that looks like a number;
//! - `equals` compares like with like: `5` does not equal `"5"`;
//! - a missing field (or `null`) matches only `notExists` and `notEquals`.

use super::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MAX_CONDITIONS: usize = 20;
const MAX_PATH_CHARS: usize = 200;
const MAX_PATH_DEPTH: usize = 8;
const MAX_TEXT_CHARS: usize = 1_000;
const MAX_IN_VALUES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum Op {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    EndsWith,
    Exists,
    NotExists,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Equals,
        Op::NotEquals,
        Op::Contains,
        Op::StartsWith,
        Op::EndsWith,
        Op::Exists,
        Op::NotExists,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::In,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "notEquals",
            Op::Contains => "contains",
            Op::StartsWith => "startsWith",
            Op::EndsWith => "endsWith",
            Op::Exists => "exists",
            Op::NotExists => "notExists",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::In => "in",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// What the op's `value` must be, for error messages and the rule form.
    pub fn expects(self) -> &'static str {
        match self {
            Op::Exists | Op::NotExists => "no value",
            Op::Equals | Op::NotEquals => "a string, number or boolean",
            Op::Contains | Op::StartsWith | Op::EndsWith => "a non-empty string",
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => "a number",
            Op::In => "a non-empty list of strings, numbers or booleans",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Condition {
    /// A dot path into the metadata object; a numeric segment indexes a list.
    pub field: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

impl Condition {
    /// Whether the condition holds for an event with this metadata.
    pub fn holds(&self, metadata: Option<&Value>) -> bool {
        let found = metadata.and_then(|m| lookup(m, &self.field)).filter(|v| !v.is_null());
        match self.op {
            Op::Exists => found.is_some(),
            Op::NotExists => found.is_none(),
            Op::Equals => found.is_some_and(|v| same(v, &self.value)),
            Op::NotEquals => !found.is_some_and(|v| same(v, &self.value)),
            Op::Contains => texts(found, &self.value).is_some_and(|(t, v)| contains_ignore_case(t, v)),
            Op::StartsWith => texts(found, &self.value).is_some_and(|(t, v)| starts_with_ignore_case(t, v)),
            Op::EndsWith => texts(found, &self.value).is_some_and(|(t, v)| ends_with_ignore_case(t, v)),
            Op::Gt => numbers(found, &self.value).is_some_and(|(a, b)| a > b),
            Op::Gte => numbers(found, &self.value).is_some_and(|(a, b)| a >= b),
            Op::Lt => numbers(found, &self.value).is_some_and(|(a, b)| a < b),
            Op::Lte => numbers(found, &self.value).is_some_and(|(a, b)| a <= b),
            Op::In => found.is_some_and(|v| self.value.as_array().is_some_and(|list| list.iter().any(|x| same(v, x)))),
        }
    }
}

/// The value at a dot path (`utm.source`, `items.0.sku`).
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get(i)),
        _ => None,
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => eq_ignore_case(x, y),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

fn texts<'a>(found: Option<&'a Value>, value: &'a Value) -> Option<(&'a str, &'a str)> {
    Some((found?.as_str()?, value.as_str()?))
}

// Case-insensitive text comparisons. Every event's metadata meets every condition of its
// type's rules, so ASCII text (pages, campaigns, ids: nearly all of it) is compared in place;
// only other text is lowercased into new strings.

fn eq_ignore_case(t: &str, v: &str) -> bool {
    if t.is_ascii() && v.is_ascii() {
        t.eq_ignore_ascii_case(v)
    } else {
        t.to_lowercase() == v.to_lowercase()
    }
}

fn starts_with_ignore_case(t: &str, v: &str) -> bool {
    if t.is_ascii() && v.is_ascii() {
        t.len() >= v.len() && t.as_bytes()[..v.len()].eq_ignore_ascii_case(v.as_bytes())
    } else {
        t.to_lowercase().starts_with(&v.to_lowercase())
    }
}

fn ends_with_ignore_case(t: &str, v: &str) -> bool {
    if t.is_ascii() && v.is_ascii() {
        t.len() >= v.len() && t.as_bytes()[t.len() - v.len()..].eq_ignore_ascii_case(v.as_bytes())
    } else {
        t.to_lowercase().ends_with(&v.to_lowercase())
    }
}

fn contains_ignore_case(t: &str, v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    if t.is_ascii() && v.is_ascii() {
        t.as_bytes().windows(v.len()).any(|w| w.eq_ignore_ascii_case(v.as_bytes()))
    } else {
        t.to_lowercase().contains(&v.to_lowercase())
    }
}

fn numbers(found: Option<&Value>, value: &Value) -> Option<(f64, f64)> {
    match found? {
        Value::Number(n) => Some((n.as_f64()?, value.as_f64()?)),
        _ => None,
    }
}

/// Reads a rule's `conditions` (absent or `null`: none). Every problem is reported, each
/// naming its place: `conditions[1].op`.
pub fn parse_conditions(raw: Option<&Value>) -> Result<Vec<Condition>, Vec<FieldError>> {
    let list = match raw {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(vec![FieldError::new("conditions", "must be a list of {field, op, value} objects")]),
    };
    if list.len() > MAX_CONDITIONS {
        return Err(vec![FieldError::new("conditions", format!("must have at most {MAX_CONDITIONS} conditions"))]);
    }
    let mut out = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match parse_one(item, &format!("conditions[{i}]")) {
            Ok(c) => out.push(c),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_one(item: &Value, at: &str) -> Result<Condition, Vec<FieldError>> {
    let Some(obj) = item.as_object() else {
        return Err(vec![FieldError::new(at, "must be an object {field, op, value}")]);
    };
    let mut errors = Vec::new();
    let mut problem = |name: &str, text: String| errors.push(FieldError::new(format!("{at}.{name}"), text));
    for key in obj.keys().filter(|k| !matches!(k.as_str(), "field" | "op" | "value")) {
        problem(key, "unknown key; a condition has field, op and value".into());
    }
    let field = match obj.get("field") {
        Some(Value::String(f)) => match path_problem(f) {
            None => Some(f.clone()),
            Some(p) => {
                problem("field", p);
                None
            }
        },
        Some(_) => {
            problem("field", "must be a dot path into metadata, like \"page\" or \"utm.source\"".into());
            None
        }
        None => {
            problem("field", "is required".into());
            None
        }
    };
    let names = || Op::ALL.map(Op::as_str).join(", ");
    let op = match obj.get("op") {
        Some(Value::String(name)) => match Op::parse(name) {
            Some(op) => Some(op),
            None => {
                problem("op", format!("unknown op {name:?}; one of {}", names()));
                None
            }
        },
        Some(_) | None => {
            problem("op", format!("is required: one of {}", names()));
            None
        }
    };
    let value = obj.get("value").cloned().unwrap_or(Value::Null);
    if let Some(op) = op {
        if let Some(p) = value_problem(op, &value) {
            problem("value", format!("{op} needs {}: {p}", op.expects(), op = op.as_str()));
        }
    }
    match (field, op) {
        (Some(field), Some(op)) if errors.is_empty() => Ok(Condition { field, op, value }),
        _ => Err(errors),
    }
}

fn path_problem(path: &str) -> Option<String> {
    if path.chars().count() > MAX_PATH_CHARS {
        return Some(format!("must be at most {MAX_PATH_CHARS} characters"));
    }
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.trim().is_empty()) {
        return Some(format!("{path:?} has an empty segment; use a dot path like \"utm.source\""));
    }
    if segments.len() > MAX_PATH_DEPTH {
        return Some(format!("must be at most {MAX_PATH_DEPTH} levels deep"));
    }
    None
}

fn value_problem(op: Op, value: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) if s.chars().count() > MAX_TEXT_CHARS => Some(format!("at most {MAX_TEXT_CHARS} characters")),
        Value::String(_) | Value::Bool(_) => None,
        Value::Number(n) if n.as_f64().is_some() => None,
        other => Some(format!("got {}", kind(other))),
    };
    match op {
        Op::Exists | Op::NotExists => (!value.is_null()).then(|| format!("got {}", kind(value))),
        Op::Equals | Op::NotEquals => scalar(value),
        Op::Contains | Op::StartsWith | Op::EndsWith => match value {
            Value::String(s) if s.is_empty() => Some("got an empty string".into()),
            Value::String(_) => scalar(value),
            other => Some(format!("got {}", kind(other))),
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match value {
            Value::Number(_) => None,
            other => Some(format!("got {}", kind(other))),
        },
        Op::In => match value {
            Value::Array(list) if list.is_empty() => Some("got an empty list".into()),
            Value::Array(list) if list.len() > MAX_IN_VALUES => Some(format!("at most {MAX_IN_VALUES} values")),
            Value::Array(list) => list.iter().find_map(scalar),
            other => Some(format!("got {}", kind(other))),
        },
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(field: &str, op: &str, value: Value) -> Condition {
        let mut raw = json!({"field": field, "op": op});
        if !value.is_null() {
            raw["value"] = value;
        }
        parse_conditions(Some(&json!([raw]))).unwrap().remove(0)
    }

    fn meta() -> Value {
        json!({"page": "/Pricing", "utm": {"source": "Google", "medium": null}, "amount": 120.5, "seats": 5,
               "trial": true, "items": [{"sku": "PRO"}], "count": "7"})
    }

    #[test]
    fn strings_compare_ignoring_case() {
        let m = meta();
        assert!(cond("page", "equals", json!("/pricing")).holds(Some(&m)));
        assert!(cond("utm.source", "equals", json!("GOOGLE")).holds(Some(&m)));
        assert!(cond("page", "contains", json!("PRIC")).holds(Some(&m)));
        assert!(cond("page", "startsWith", json!("/p")).holds(Some(&m)));
        assert!(cond("page", "endsWith", json!("ING")).holds(Some(&m)));
        assert!(!cond("page", "endsWith", json!("/p")).holds(Some(&m)));
        assert!(cond("page", "notEquals", json!("/blog")).holds(Some(&m)));
        assert!(!cond("page", "notEquals", json!("/PRICING")).holds(Some(&m)));
        assert!(cond("utm.source", "in", json!(["bing", "google"])).holds(Some(&m)));
        assert!(cond("items.0.sku", "equals", json!("pro")).holds(Some(&m)), "a numeric segment indexes a list");
    }

    #[test]
    fn numeric_ops_compare_numbers_only() {
        let m = meta();
        assert!(cond("amount", "gt", json!(100)).holds(Some(&m)));
        assert!(cond("amount", "lte", json!(120.5)).holds(Some(&m)));
        assert!(!cond("amount", "lt", json!(120.5)).holds(Some(&m)));
        assert!(cond("seats", "gte", json!(5)).holds(Some(&m)));
        assert!(!cond("count", "gt", json!(1)).holds(Some(&m)), "a string that looks like a number is not one");
        assert!(!cond("page", "gt", json!(0)).holds(Some(&m)));
        assert!(cond("seats", "equals", json!(5.0)).holds(Some(&m)), "5 and 5.0 are the same number");
        assert!(!cond("count", "equals", json!(7)).holds(Some(&m)), "\"7\" is not 7");
        assert!(cond("trial", "equals", json!(true)).holds(Some(&m)));
        assert!(!cond("trial", "contains", json!("t")).holds(Some(&m)), "contains is for strings");
    }

    #[test]
    fn missing_fields_match_only_not_exists_and_not_equals() {
        let m = meta();
        for (field, missing) in [("utm.campaign", true), ("utm.medium", true), ("page.x", true), ("page", false)] {
            assert_eq!(cond(field, "exists", Value::Null).holds(Some(&m)), !missing, "{field}");
            assert_eq!(cond(field, "notExists", Value::Null).holds(Some(&m)), missing, "{field}");
        }
        for op in ["equals", "contains", "startsWith", "endsWith"] {
            assert!(!cond("nope", op, json!("x")).holds(Some(&m)), "{op}");
            assert!(!cond("nope", op, json!("x")).holds(None), "{op} without metadata");
        }
        assert!(!cond("nope", "gt", json!(1)).holds(Some(&m)));
        assert!(!cond("nope", "in", json!(["x"])).holds(Some(&m)));
        assert!(cond("nope", "notEquals", json!("x")).holds(Some(&m)));
        assert!(cond("nope", "notEquals", json!("x")).holds(None));
    }

    #[test]
    fn every_problem_is_named_by_its_place() {
        let raw = json!([
            {"field": "page", "op": "equals", "value": "/pricing"},
            {"field": "", "op": "like", "value": 1},
            {"field": "amount", "op": "gt", "value": "100"},
            {"field": "a..b", "op": "exists", "value": 3, "extra": 1},
            "page = /pricing",
            {"op": "in", "value": []},
        ]);
        let errors = parse_conditions(Some(&raw)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "conditions[1].field",
                "conditions[1].op",
                "conditions[2].value",
                "conditions[3].extra",
                "conditions[3].field",
                "conditions[3].value",
                "conditions[4]",
                "conditions[5].field",
                "conditions[5].value"
            ]
        );
        assert!(errors[1].problem.contains("notEquals"), "lists the ops: {}", errors[1].problem);
        assert!(errors[2].problem.contains("gt needs a number"), "{}", errors[2].problem);
        assert_eq!(parse_conditions(None), Ok(vec![]));
        assert_eq!(parse_conditions(Some(&Value::Null)), Ok(vec![]));
        assert_eq!(parse_conditions(Some(&json!({}))).unwrap_err()[0].field, "conditions");
        let many = Value::Array(vec![json!({"field": "a", "op": "exists"}); MAX_CONDITIONS + 1]);
        assert_eq!(parse_conditions(Some(&many)).unwrap_err()[0].field, "conditions");
    }

    #[test]
    fn conditions_travel_as_json_and_back() {
        let parsed = parse_conditions(Some(&json!([
            {"field": "utm.source", "op": "in", "value": ["google", "bing"]},
            {"field": "page", "op": "exists"}
        ])))
        .unwrap();
        let text = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            text,
            json!([{"field": "utm.source", "op": "in", "value": ["google", "bing"]}, {"field": "page", "op": "exists"}])
        );
        assert_eq!(parse_conditions(Some(&text)).unwrap(), parsed);
    }

    mod properties {
        use super::*;
        use crate::domain::arbitrary;
        use proptest::prelude::*;

        proptest! {
            /// Any JSON as conditions: parsed, or refused with every error naming a field
            /// under `conditions`; and whatever parses can be evaluated on any metadata.
            #[test]
            fn any_conditions_parse_or_name_their_problem(raw in arbitrary::json(true), metadata in arbitrary::json(true)) {
                match parse_conditions(Some(&raw)) {
                    Ok(conditions) => {
                        for c in &conditions {
                            let _ = c.holds(Some(&metadata));
                        }
                    }
                    Err(errors) => {
                        prop_assert!(!errors.is_empty());
                        for e in errors {
                            prop_assert!(e.field.starts_with("conditions"), "{:?}", e);
                            prop_assert!(!e.problem.is_empty());
                        }
                    }
                }
            }

            /// The in-place comparisons say what lowercasing both sides would, ASCII or not.
            #[test]
            fn comparisons_ignore_case_as_lowercasing_does(t in "[aAbB/é-]{0,8}", v in "[aAbB/É-]{0,3}") {
                let (lt, lv) = (t.to_lowercase(), v.to_lowercase());
                prop_assert_eq!(eq_ignore_case(&t, &v), lt == lv);
                prop_assert_eq!(starts_with_ignore_case(&t, &v), lt.starts_with(&lv));
                prop_assert_eq!(ends_with_ignore_case(&t, &v), lt.ends_with(&lv));
                prop_assert_eq!(contains_ignore_case(&t, &v), lt.contains(&lv));
            }

            /// `exists` and `notExists` split every event in two; so do `equals` and `notEquals`.
            #[test]
            fn opposite_ops_never_agree(field in "[a-c](\\.[a-c]){0,2}", value in arbitrary::json(false), metadata in arbitrary::json(false)) {
                let exists = Condition { field: field.clone(), op: Op::Exists, value: Value::Null };
                let absent = Condition { field: field.clone(), op: Op::NotExists, value: Value::Null };
                prop_assert_ne!(exists.holds(Some(&metadata)), absent.holds(Some(&metadata)));
                let equals = Condition { field: field.clone(), op: Op::Equals, value: value.clone() };
                let differs = Condition { field, op: Op::NotEquals, value };
                prop_assert_ne!(equals.holds(Some(&metadata)), differs.holds(Some(&metadata)));
            }
        }
    }
}
