//! Scoring rules in the embedded store: each a row with its conditions as JSON text.

use crate::domain::conditions::parse_conditions;
use crate::domain::limits::{parse_limit, Limit};
use crate::domain::time::Millis;
use crate::domain::{Rule, RuleDraft, RuleInput};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

const COLUMNS: &str = "id, name, event_type, points, is_active, conditions, limit_count, limit_per, base, updated_at";

/// By event type; within a type the base rule first, then oldest first.
pub(super) fn list(c: &Connection) -> rusqlite::Result<Vec<Rule>> {
    let mut s =
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM rules ORDER BY event_type, base DESC, created_at, id"))?;
    let rows = s.query_map([], from_row)?;
    rows.collect()
}

fn find(c: &Connection, id: &str) -> rusqlite::Result<Option<Rule>> {
    c.prepare_cached(&format!("SELECT {COLUMNS} FROM rules WHERE id = ?1"))?.query_row([id], from_row).optional()
}

/// The type's base rule takes the new points and state; a type without one gets one.
pub(super) fn upsert_base(c: &Connection, rule: RuleInput, now: Millis) -> rusqlite::Result<Rule> {
    let existing: Option<String> = c
        .prepare_cached("SELECT id FROM rules WHERE event_type = ?1 AND base = 1")?
        .query_row([&rule.event_type], |r| r.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => {
            c.prepare_cached("UPDATE rules SET points = ?2, is_active = ?3, updated_at = ?4 WHERE id = ?1")?
                .execute(params![id, rule.points, rule.is_active, now])?;
            id
        }
        None => {
            let draft = RuleDraft {
                name: None,
                event_type: rule.event_type,
                points: rule.points,
                is_active: rule.is_active,
                conditions: Vec::new(),
                limit: None,
                legacy: true,
            };
            insert(c, Rule::from_draft(new_id(), draft, true, now), now)?
        }
    };
    find(c, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

pub(super) fn create(c: &Connection, draft: RuleDraft, now: Millis) -> rusqlite::Result<Rule> {
    let id = insert(c, Rule::from_draft(new_id(), draft, false, now), now)?;
    find(c, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

pub(super) fn update(c: &Connection, id: &str, draft: RuleDraft, now: Millis) -> rusqlite::Result<Option<Rule>> {
    let Some(old) = find(c, id)? else { return Ok(None) };
    let base = old.stays_base(&draft);
    let rule = Rule::from_draft(old.id, draft, base, now);
    write(
        c,
        "UPDATE rules SET name = ?2, event_type = ?3, points = ?4, is_active = ?5, conditions = ?6, \
           limit_count = ?7, limit_per = ?8, base = ?9, updated_at = ?10 WHERE id = ?1",
        &rule,
        now,
    )?;
    find(c, id)
}

pub(super) fn delete(c: &Connection, id: &str) -> rusqlite::Result<Option<Rule>> {
    let Some(old) = find(c, id)? else { return Ok(None) };
    // Its counts stay: ids are never reused, and finding them would scan the table (keyed by
    // lead) on the one writer thread.
    c.prepare_cached("DELETE FROM rules WHERE id = ?1")?.execute([id])?;
    Ok(Some(old))
}

/// Inserts the rules only when there are none at all; true if it did.
pub(super) fn seed(c: &Connection, defaults: Vec<RuleInput>, now: Millis) -> rusqlite::Result<bool> {
    let count: i64 = c.query_row("SELECT count(*) FROM rules", [], |r| r.get(0))?;
    if count > 0 {
        return Ok(false);
    }
    for r in defaults {
        upsert_base(c, r, now)?;
    }
    Ok(true)
}

fn insert(c: &Connection, rule: Rule, now: Millis) -> rusqlite::Result<String> {
    write(
        c,
        "INSERT INTO rules (id, name, event_type, points, is_active, conditions, limit_count, limit_per, base, \
           created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        &rule,
        now,
    )?;
    Ok(rule.id)
}

/// Runs `sql` with the rule's fields as ?1…?9 (id first) and `now` as ?10.
fn write(c: &Connection, sql: &str, rule: &Rule, now: Millis) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?
        .execute(params![
            rule.id,
            rule.name,
            rule.event_type,
            rule.points,
            rule.is_active,
            conditions_json(rule),
            rule.limit.map(|l| l.count),
            rule.limit.map(|l| l.per.as_str()),
            rule.base,
            now
        ])
        .map(drop)
}

fn conditions_json(rule: &Rule) -> String {
    serde_json::to_string(&rule.conditions).unwrap_or_else(|_| "[]".into())
}

/// 64 random bits as hex: opaque, and never reused.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A rule row; conditions and limit are checked as the API checks them, so a hand-edited
/// row that would not pass is an error rather than a rule that silently scores differently.
fn from_row(r: &Row) -> rusqlite::Result<Rule> {
    let invalid =
        |column: usize, what: String| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, what.into());
    let conditions_text: String = r.get(5)?;
    let conditions = serde_json::from_str(&conditions_text)
        .map_err(|e| e.to_string())
        .and_then(|v| parse_conditions(Some(&v)).map_err(|e| format!("{e:?}")))
        .map_err(|e| invalid(5, format!("rule conditions: {e}")))?;
    let limit = match (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<String>>(7)?) {
        (Some(count), Some(per)) => parse_limit(Some(&serde_json::json!({"count": count, "per": per})))
            .map_err(|e| invalid(7, format!("rule limit: {e:?}")))?,
        _ => None::<Limit>,
    };
    Ok(Rule {
        id: r.get(0)?,
        name: r.get(1)?,
        event_type: r.get(2)?,
        points: r.get(3)?,
        is_active: r.get(4)?,
        conditions,
        limit,
        base: r.get(8)?,
        updated_at: r.get(9)?,
    })
}
