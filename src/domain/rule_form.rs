//! The rule form's text fields, turned into the JSON the rules API takes (so the form and the
//! API share one validation), and a rule turned back into form fields for editing.
//!
//! A condition's value is typed as text. How it is read depends on the op: a number for
//! `gt`/`gte`/`lt`/`lte`; a comma-separated list for `in` (quote an item that holds a comma
//! or edge spaces: `"Acme, Inc", Beta`); text for `contains`, `startsWith` and `endsWith`;
//! for `equals` and `notEquals` a number or `true`/`false` when it reads as one, else text
//! (quote it, `"5"`, to compare with the text 5). A rule read back into the form and saved
//! unchanged is the same rule.

use super::conditions::Op;
use super::{FieldError, Rule};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleForm {
    /// Empty: named after the event type.
    pub name: String,
    pub event_type: String,
    pub points: String,
    pub is_active: bool,
    pub conditions: Vec<ConditionForm>,
    /// Empty: no limit.
    pub limit_count: String,
    pub limit_per: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionForm {
    pub field: String,
    pub op: String,
    pub value: String,
}

impl RuleForm {
    /// A new rule's form: active, no conditions, no limit.
    pub fn blank() -> Self {
        Self { is_active: true, limit_per: "day".into(), ..Self::default() }
    }

    /// Whether this is the plain form of old (type, points, active): `POST /api/rules` then
    /// sets the type's base rule rather than adding one.
    pub fn is_plain(&self) -> bool {
        self.name.trim().is_empty() && self.conditions.is_empty() && self.limit_count.trim().is_empty()
    }

    pub fn from_rule(rule: &Rule) -> Self {
        Self {
            name: rule.name.clone(),
            event_type: rule.event_type.clone(),
            points: rule.points.to_string(),
            is_active: rule.is_active,
            conditions: rule
                .conditions
                .iter()
                .map(|c| ConditionForm {
                    field: c.field.clone(),
                    op: c.op.as_str().into(),
                    value: value_text(&c.value, c.op),
                })
                .collect(),
            limit_count: rule.limit.map(|l| l.count.to_string()).unwrap_or_default(),
            limit_per: rule.limit.map(|l| l.per.as_str()).unwrap_or("day").into(),
        }
    }

    /// The API's JSON for this form. Only what text cannot say is checked here (a number
    /// that is not one); the API's validation checks the rest and names the same fields.
    pub fn to_json(&self) -> Result<Value, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut obj = Map::new();
        obj.insert("eventType".into(), json!(self.event_type.trim()));
        obj.insert("isActive".into(), json!(self.is_active));
        match integer_text("points", &self.points) {
            Ok(p) => drop(obj.insert("points".into(), p)),
            Err(e) => errors.push(e),
        }
        if self.is_plain() {
            return if errors.is_empty() { Ok(Value::Object(obj)) } else { Err(errors) };
        }
        if !self.name.trim().is_empty() {
            obj.insert("name".into(), json!(self.name.trim()));
        }
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut cond = json!({"field": c.field.trim(), "op": c.op});
                match condition_value(c) {
                    Ok(Some(v)) => drop(cond.as_object_mut().map(|o| o.insert("value".into(), v))),
                    Ok(None) => {}
                    Err(problem) => errors.push(FieldError::new(format!("conditions[{i}].value"), problem)),
                }
                cond
            })
            .collect();
        obj.insert("conditions".into(), Value::Array(conditions));
        let count = self.limit_count.trim();
        if count.is_empty() {
            obj.insert("limit".into(), Value::Null);
        } else {
            match count.parse::<u64>() {
                Ok(n) => drop(obj.insert("limit".into(), json!({"count": n, "per": self.limit_per}))),
                Err(_) => errors.push(FieldError::new("limit.count", format!("must be a whole number, got {count:?}"))),
            }
        }
        if errors.is_empty() {
            Ok(Value::Object(obj))
        } else {
            Err(errors)
        }
    }
}

/// A condition's typed value read by its op; `None` for ops without one.
fn condition_value(c: &ConditionForm) -> Result<Option<Value>, String> {
    let text = c.value.trim();
    Ok(Some(match Op::parse(&c.op) {
        Some(Op::Exists | Op::NotExists) => return Ok(None),
        Some(Op::Gt | Op::Gte | Op::Lt | Op::Lte) => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => json!(n),
            _ => return Err(format!("must be a number, got {text:?}")),
        },
        Some(Op::In) => Value::Array(split_list(&c.value).iter().map(|item| scalar(item)).collect()),
        Some(Op::Contains | Op::StartsWith | Op::EndsWith) => json!(text),
        // An unknown op: the API names it.
        Some(Op::Equals | Op::NotEquals) | None => scalar(text),
    }))
}

/// A list's items: split at commas outside double quotes, each trimmed unless quoted (a
/// quoted item keeps its quotes for `scalar`, which reads it as exactly the text inside).
fn split_list(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                current.push(ch);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    items.push(current);
    items.into_iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect()
}

/// A number or boolean when the text reads as one; quoted text is the text inside.
fn scalar(text: &str) -> Value {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return json!(inner);
    }
    match text {
        "true" => json!(true),
        "false" => json!(false),
        _ => match serde_json::from_str::<serde_json::Number>(text) {
            Ok(n) => Value::Number(n),
            Err(_) => json!(text),
        },
    }
}

/// A value as the form shows it; text that would read back as a number or boolean is quoted
/// (except for the text ops, which read any value as text).
fn value_text(v: &Value, op: Op) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if matches!(op, Op::Contains | Op::StartsWith | Op::EndsWith) => s.clone(),
        // Quoted where the plain text would read back differently: as a number or boolean,
        // trimmed, split (in a list), or unquoted.
        Value::String(s)
            if !matches!(scalar(s), Value::String(_))
                || s.trim() != s
                || s.is_empty()
                || (op == Op::In && s.contains(','))
                || s.starts_with('"') =>
        {
            format!("\"{s}\"")
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(|i| value_text(i, op)).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A whole number typed into a form, as the API's JSON. Empty is `null`, so the API's own
/// validation says what it always says about a missing value; text that is not a whole
/// number is named here, with the field the API would name.
pub fn integer_text(field: impl Into<String>, text: &str) -> Result<Value, FieldError> {
    let text = text.trim();
    match text.parse::<i64>() {
        Ok(n) => Ok(json!(n)),
        Err(_) if text.is_empty() => Ok(Value::Null),
        Err(_) => Err(FieldError::new(field, format!("must be an integer, got {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::validate_scoring_rule;

    #[test]
    fn typed_integers_become_json_or_name_their_field() {
        assert_eq!(integer_text("points", " -15 "), Ok(json!(-15)));
        assert_eq!(integer_text("points", "  "), Ok(Value::Null), "empty: the API says it is required");
        let e = integer_text("stages[1].minScore", "1.5").unwrap_err();
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("stages[1].minScore", "must be an integer, got \"1.5\""));
    }

    fn form(conditions: &[(&str, &str, &str)], limit: &str) -> RuleForm {
        RuleForm {
            name: "Pricing".into(),
            event_type: "Page View".into(),
            points: "20".into(),
            is_active: true,
            conditions: conditions
                .iter()
                .map(|(f, o, v)| ConditionForm { field: (*f).into(), op: (*o).into(), value: (*v).into() })
                .collect(),
            limit_count: limit.into(),
            limit_per: "week".into(),
        }
    }

    #[test]
    fn a_plain_form_is_the_old_upsert() {
        let plain = RuleForm { event_type: "Webinar".into(), points: "-5".into(), ..RuleForm::blank() };
        assert_eq!(plain.to_json().unwrap(), json!({"eventType": "Webinar", "points": -5, "isActive": true}));
        assert!(validate_scoring_rule(&plain.to_json().unwrap()).unwrap().legacy);
    }

    #[test]
    fn values_are_read_by_their_op() {
        let f = form(
            &[
                ("page", "equals", "/pricing"),
                ("plan", "in", "pro, 3, \"4\""),
                ("seats", "gte", "10"),
                ("ref", "exists", "ignored"),
                ("flag", "notEquals", "true"),
                ("title", "contains", "42"),
            ],
            "2",
        );
        let v = f.to_json().unwrap();
        assert_eq!(
            v["conditions"],
            json!([
                {"field": "page", "op": "equals", "value": "/pricing"},
                {"field": "plan", "op": "in", "value": ["pro", 3, "4"]},
                {"field": "seats", "op": "gte", "value": 10.0},
                {"field": "ref", "op": "exists"},
                {"field": "flag", "op": "notEquals", "value": true},
                {"field": "title", "op": "contains", "value": "42"},
            ])
        );
        assert_eq!(v["limit"], json!({"count": 2, "per": "week"}));
        let draft = validate_scoring_rule(&v).unwrap();
        assert!(!draft.legacy);
        // Back to the form and to JSON again: the same rule.
        let rule = Rule::from_draft("r".into(), draft, false, 0);
        assert_eq!(RuleForm::from_rule(&rule).to_json().unwrap(), v);
    }

    #[test]
    fn list_items_with_commas_or_edge_spaces_survive_the_round_trip() {
        let f = form(&[("company", "in", "\"Acme, Inc\", Beta, \" pro\", 7")], "");
        let v = f.to_json().unwrap();
        assert_eq!(v["conditions"][0]["value"], json!(["Acme, Inc", "Beta", " pro", 7]));
        let rule = Rule::from_draft("r".into(), validate_scoring_rule(&v).unwrap(), false, 0);
        assert_eq!(RuleForm::from_rule(&rule).to_json().unwrap(), v, "saved unchanged, the same rule");
    }

    #[test]
    fn text_where_a_number_belongs_names_the_field() {
        let bad = RuleForm { points: "lots".into(), ..form(&[("a", "equals", "x"), ("seats", "gt", "ten")], "once") };
        let fields: Vec<String> = bad.to_json().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["points", "conditions[1].value", "limit.count"]);
    }
}
