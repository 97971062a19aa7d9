//! Timestamps: parsed leniently from clients, always written back as JavaScript's
//! `toISOString()` format (`2024-01-02T03:04:05.678Z`) so responses match the old app.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC. Stores and sorts cheaply; formats on the way out.
pub type Millis = i64;

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn to_iso(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::new(),
    }
}

/// Parses an ISO-8601 timestamp: RFC 3339 with an offset, or a date-time / date without one
/// (taken as UTC, as JavaScript's `Date` does for date-only strings).
pub fn parse_iso(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// Serde adapter for `Millis` fields that travel as ISO strings.
pub mod iso {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_iso(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse_iso(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

/// Serde adapter for `Option<Millis>` fields.
pub mod iso_opt {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&to_iso(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => {
                parse_iso(&s).map(Some).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript_to_iso_string() {
        assert_eq!(to_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn parses_offsets_and_round_trips() {
        let ms = parse_iso("2023-11-14T23:13:20.123+01:00").unwrap();
        assert_eq!(to_iso(ms), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_iso(&to_iso(ms)), Some(ms));
    }

    #[test]
    fn parses_dates_without_zone_as_utc() {
        assert_eq!(parse_iso("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_iso("1970-01-01T00:00:01"), Some(1000));
        assert_eq!(parse_iso("1970-01-01T00:01"), Some(60_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "yesterday", "2023-13-01", "2023-02-30T00:00:00Z", "12345"] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
