//! Turning an uploaded file into batch items, in the browser before sending.
//!
//! CSV: a header row names the columns; `eventId`, `leadId`, `eventType` and `timestamp` are
//! the event's fields, any other column goes into `metadata`. As the old app did, a row
//! without an `eventId` or `timestamp` gets a generated one. JSON: an array of event objects.
//! Nothing is validated here beyond the file's syntax: the server reports every bad row.

use serde_json::{Map, Value};

const EVENT_FIELDS: [&str; 4] = ["eventId", "leadId", "eventType", "timestamp"];

/// Fills what the old app generated for rows that lack it.
pub trait Generate {
    fn event_id(&mut self) -> String;
    fn now_iso(&mut self) -> String;
}

/// Where a batch item came from, to tell the user about it: a CSV line or a JSON array index.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedFile {
    pub items: Vec<Value>,
    /// Human label of item `i`'s origin, e.g. "line 3" or "item 2".
    pub origins: Vec<String>,
}

pub fn parse_file(name: &str, text: &str, generate: &mut impl Generate) -> Result<ParsedFile, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if name.to_ascii_lowercase().ends_with(".json") || trimmed.starts_with('[') {
        parse_json(trimmed, generate)
    } else {
        parse_csv(trimmed, generate)
    }
}

fn parse_json(text: &str, generate: &mut impl Generate) -> Result<ParsedFile, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("a JSON upload must be an array of events".into());
    };
    let origins = (1..=items.len()).map(|i| format!("item {i}")).collect();
    let items = items.into_iter().map(|item| fill_generated(item, generate)).collect();
    Ok(ParsedFile { items, origins })
}

fn fill_generated(mut item: Value, generate: &mut impl Generate) -> Value {
    if let Value::Object(map) = &mut item {
        if blank(map.get("eventId")) {
            map.insert("eventId".into(), Value::String(generate.event_id()));
        }
        if blank(map.get("timestamp")) {
            map.insert("timestamp".into(), Value::String(generate.now_iso()));
        }
    }
    item
}

fn blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

fn parse_csv(text: &str, generate: &mut impl Generate) -> Result<ParsedFile, String> {
    let records = csv_records(text)?;
    let mut iter = records.into_iter();
    let Some((_, header)) = iter.next() else {
        return Err("the CSV file is empty".into());
    };
    let header: Vec<String> = header.into_iter().map(|h| h.trim().to_string()).collect();
    for required in ["leadId", "eventType"] {
        if !header.iter().any(|h| h == required) {
            return Err(format!("the CSV header must name a {required} column (found: {})", header.join(", ")));
        }
    }
    let mut items = Vec::new();
    let mut origins = Vec::new();
    for (line, fields) in iter {
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue; // blank line
        }
        let mut event = Map::new();
        let mut metadata = Map::new();
        for (i, value) in fields.into_iter().enumerate() {
            let Some(column) = header.get(i) else {
                metadata.insert(format!("column{}", i + 1), Value::String(value));
                continue;
            };
            if EVENT_FIELDS.contains(&column.as_str()) {
                event.insert(column.clone(), Value::String(value.trim().to_string()));
            } else if !value.is_empty() {
                metadata.insert(column.clone(), Value::String(value));
            }
        }
        if !metadata.is_empty() {
            event.insert("metadata".into(), Value::Object(metadata));
        }
        items.push(fill_generated(Value::Object(event), generate));
        origins.push(format!("line {line}"));
    }
    Ok(ParsedFile { items, origins })
}

/// RFC 4180 records with the 1-based line each starts on: quoted fields may hold commas,
/// line breaks and doubled quotes.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => in_quotes = false,
            ('"', false) if field.is_empty() => in_quotes = true,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\r', false) if chars.peek() == Some(&'\n') => {}
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut record)));
                line += 1;
                record_line = line;
            }
            ('\n', true) => {
                line += 1;
                field.push('\n');
            }
            (c, _) => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("line {record_line}: a quoted field is never closed"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((record_line, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(u32);
    impl Generate for Fixed {
        fn event_id(&mut self) -> String {
            self.0 += 1;
            format!("gen-{}", self.0)
        }
        fn now_iso(&mut self) -> String {
            "2024-01-01T00:00:00.000Z".into()
        }
    }

    #[test]
    fn csv_rows_become_events_with_extra_columns_as_metadata() {
        let csv = "eventId,leadId,eventType,timestamp,page,campaign\n\
                   e1,lead-1,Page View,2024-05-01T12:00:00Z,/pricing,spring\n\
                   ,lead-2,Purchase,,,\n";
        let parsed = parse_file("events.csv", csv, &mut Fixed(0)).unwrap();
        assert_eq!(parsed.origins, ["line 2", "line 3"]);
        assert_eq!(
            parsed.items[0],
            json!({"eventId": "e1", "leadId": "lead-1", "eventType": "Page View",
                   "timestamp": "2024-05-01T12:00:00Z", "metadata": {"page": "/pricing", "campaign": "spring"}})
        );
        assert_eq!(
            parsed.items[1],
            json!({"eventId": "gen-1", "leadId": "lead-2", "eventType": "Purchase", "timestamp": "2024-01-01T00:00:00.000Z"})
        );
    }

    #[test]
    fn csv_quoting_blank_lines_and_crlf() {
        let csv = "leadId,eventType,note\r\n\"a, b\",Email Open,\"say \"\"hi\"\"\nthere\"\r\n\r\nc,Page View,\n";
        let parsed = parse_file("x.csv", csv, &mut Fixed(0)).unwrap();
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(parsed.items[0]["leadId"], "a, b");
        assert_eq!(parsed.items[0]["metadata"]["note"], "say \"hi\"\nthere");
        assert_eq!(parsed.origins, ["line 2", "line 5"], "line numbers count the embedded newline");
        assert_eq!(parsed.items[1]["eventId"], "gen-2");
    }

    #[test]
    fn csv_errors_are_explained() {
        assert!(parse_file("x.csv", "", &mut Fixed(0)).unwrap_err().contains("empty"));
        let err = parse_file("x.csv", "eventId,timestamp\n1,2\n", &mut Fixed(0)).unwrap_err();
        assert!(err.contains("leadId"), "{err}");
        let err = parse_file("x.csv", "leadId,eventType\n\"open,x\n", &mut Fixed(0)).unwrap_err();
        assert_eq!(err, "line 2: a quoted field is never closed");
    }

    #[test]
    fn short_rows_keep_their_missing_fields_missing_for_the_server_to_report() {
        let parsed = parse_file("x.csv", "leadId,eventType,timestamp\nonly-lead\n", &mut Fixed(0)).unwrap();
        assert_eq!(parsed.items[0].get("eventType"), None);
        assert_eq!(parsed.items[0]["timestamp"], "2024-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_arrays_are_taken_as_they_are_with_generated_ids() {
        let text = r#"[{"leadId": "a", "eventType": "Purchase"}, {"eventId": "x", "leadId": 5}]"#;
        let parsed = parse_file("upload.json", text, &mut Fixed(0)).unwrap();
        assert_eq!(parsed.items[0]["eventId"], "gen-1");
        assert_eq!(parsed.items[1]["eventId"], "x");
        assert_eq!(parsed.items[1]["leadId"], 5, "bad types go to the server to be reported");
        assert_eq!(parsed.origins, ["item 1", "item 2"]);
        assert!(parse_file("u.json", "{}", &mut Fixed(0)).unwrap_err().contains("array"));
        assert!(parse_file("u.json", "[1,", &mut Fixed(0)).unwrap_err().starts_with("not valid JSON"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any file: parsed into items with one origin each, or refused with a message;
            /// never a panic.
            #[test]
            fn any_file_is_parsed_or_refused(
                name in prop_oneof![Just("u.csv"), Just("u.json"), Just("u.txt")],
                text in prop_oneof![".{0,200}", "(eventId|leadId|eventType|timestamp|page)(,[a-zA-Z \"]{0,8}){0,5}\n([a-z0-9 ,\"]{0,30}\n){0,5}"],
            ) {
                match parse_file(name, &text, &mut Fixed(0)) {
                    Ok(parsed) => prop_assert_eq!(parsed.items.len(), parsed.origins.len()),
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }
        }
    }
}
