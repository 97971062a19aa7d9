//! What the CSV exports hold: their columns, each row as text, and the escaping that keeps a
//! spreadsheet from running a cell as a formula. (Writing the CSV itself is the `csv` crate's,
//! in `server::export_api`.)

use super::time::to_iso;
use super::{HistoryEntry, Lead};
use std::borrow::Cow;

pub const LEAD_COLUMNS: [&str; 7] = ["id", "score", "stage", "eventCount", "lastEventId", "lastEventAt", "updatedAt"];

pub const HISTORY_COLUMNS: [&str; 8] =
    ["timestamp", "eventId", "eventType", "delta", "oldScore", "newScore", "stageFrom", "stageTo"];

/// Text a client chose (ids, names) as a cell. Spreadsheets run a cell starting with `=`, `+`,
/// `-` or `@` (or a tab or carriage return before one) as a formula, so such text gets a
/// leading `'`, which they show as text (OWASP's advice). Numbers we write ourselves are
/// never escaped: `-5` stays a number.
pub fn text_cell(text: &str) -> Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

pub fn lead_row(lead: &Lead) -> [String; 7] {
    [
        text_cell(&lead.id).into_owned(),
        lead.score.to_string(),
        text_cell(&lead.stage).into_owned(),
        lead.event_count.to_string(),
        lead.last_event_id.as_deref().map(|id| text_cell(id).into_owned()).unwrap_or_default(),
        lead.last_event_at.map(to_iso).unwrap_or_default(),
        to_iso(lead.updated_at),
    ]
}

pub fn history_row(entry: &HistoryEntry) -> [String; 8] {
    let (from, to) = match &entry.stage_change {
        Some(change) => (text_cell(&change.from).into_owned(), text_cell(&change.to).into_owned()),
        None => (String::new(), String::new()),
    };
    [
        to_iso(entry.timestamp),
        text_cell(&entry.event_id).into_owned(),
        text_cell(&entry.event_type).into_owned(),
        entry.delta.to_string(),
        entry.old_score.to_string(),
        entry.new_score.to_string(),
        from,
        to,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_a_spreadsheet_would_run_is_escaped() {
        for risky in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"] {
            assert_eq!(text_cell(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in ["acme-7", "a=b", "", "'quoted", "über"] {
            assert_eq!(text_cell(plain), plain);
        }
    }

    #[test]
    fn rows_line_up_with_their_columns_and_numbers_stay_numbers() {
        let lead = Lead {
            id: "=cmd|' /C calc'!A0".into(),
            score: -5,
            last_event_id: Some("@evt".into()),
            updated_at: 1_700_000_000_000,
            last_event_at: None,
            event_count: 3,
            stage: "Cold".into(),
            profile: None,
        };
        let row = lead_row(&lead);
        assert_eq!(row.len(), LEAD_COLUMNS.len());
        assert_eq!(row[0], "'=cmd|' /C calc'!A0");
        assert_eq!(row[1], "-5", "a score we write is a number, not a formula");
        assert_eq!(row[4], "'@evt");
        assert_eq!(row[5], "");
        assert_eq!(row[6], "2023-11-14T22:13:20.000Z");
    }
}
