//! How an event's explanation (`[RuleMatch]`) is kept in a text column (SQLite): each match
//! as a row `[ruleId, name, points]` (with a fourth `true` when its limit held it back),
//! rather than the objects the API shows. Every scored event stores one, and with several
//! rules matching, the object keys made the events table's rows over twice as long; rows
//! are what the one writer writes. Older files hold the objects: both read.

use super::engine::RuleMatch;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The text kept for `matches` (never empty: no matches is no text).
pub fn to_text(matches: &[RuleMatch]) -> String {
    let rows: Vec<String> = matches
        .iter()
        .map(|m| {
            let row = if m.limited {
                serde_json::to_string(&(&m.rule_id, &m.name, m.points, true))
            } else {
                serde_json::to_string(&(&m.rule_id, &m.name, m.points))
            };
            row.unwrap_or_default()
        })
        .collect();
    format!("[{}]", rows.join(","))
}

/// Reads what `to_text` wrote, or the objects older versions wrote; `None` if neither.
pub fn from_text(text: &str) -> Option<Vec<RuleMatch>> {
    serde_json::from_str::<Vec<Stored>>(text).ok().map(|rows| rows.into_iter().map(|s| s.0).collect())
}

/// One match as stored, either way.
struct Stored(RuleMatch);

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StoredVisitor)
    }
}

struct StoredVisitor;

impl<'de> Visitor<'de> for StoredVisitor {
    type Value = Stored;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a match as [ruleId, name, points(, limited)] or as an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stored, A::Error> {
        let rule_id = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let name = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        let points = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(2, &self))?;
        let limited = seq.next_element()?.unwrap_or(false);
        Ok(Stored(RuleMatch { rule_id, name, points, limited }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stored, A::Error> {
        RuleMatch::deserialize(de::value::MapAccessDeserializer::new(map)).map(Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(id: &str, name: &str, points: i64, limited: bool) -> RuleMatch {
        RuleMatch { rule_id: id.into(), name: name.into(), points, limited }
    }

    #[test]
    fn rows_are_short_and_the_old_objects_still_read() {
        let matches = vec![m("d8ef", "Demo \"Request\"", 50, false), m("33ab", "Pricing, once", 0, true)];
        let text = to_text(&matches);
        assert_eq!(text, r#"[["d8ef","Demo \"Request\"",50],["33ab","Pricing, once",0,true]]"#);
        assert_eq!(from_text(&text), Some(matches.clone()));
        let old = serde_json::to_string(&matches).unwrap();
        assert!(old.len() > text.len() + 40, "{old} vs {text}");
        assert_eq!(from_text(&old), Some(matches), "what older versions stored");
        assert_eq!(from_text("[[\"x\"]]"), None, "a row without name and points");
        assert_eq!(from_text("not json"), None);
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(rows in prop::collection::vec((".{0,12}", ".{0,12}", any::<i64>(), any::<bool>()), 0..5)) {
            let matches: Vec<RuleMatch> = rows.iter().map(|(i, n, p, l)| m(i, n, *p, *l)).collect();
            prop_assert_eq!(from_text(&to_text(&matches)), Some(matches));
        }
    }
}
