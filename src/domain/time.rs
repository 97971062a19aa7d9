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
    if let Some(ms) = parse_to_iso(s) {
        return Some(ms);
    }
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

/// Parses exactly what [`to_iso`] writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`), without chrono's
/// general format parser: the browser only ever reads timestamps the server wrote, and that
/// parser is ~25 KB of its WASM before compression. On the server it is the fast path of [`parse_iso`].
pub fn parse_to_iso(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let num = |from: usize, to: usize| b[from..to].iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
    let date = NaiveDate::from_ymd_opt(num(0, 4) as i32, num(5, 7), num(8, 10))?;
    let time = date.and_hms_milli_opt(num(11, 13), num(14, 16), num(17, 19), num(20, 23))?;
    Some(time.and_utc().timestamp_millis())
}

/// What the serde adapters parse: anything [`parse_iso`] takes on the server, where requests
/// carry timestamps from anyone; in the browser, only the server's own format.
fn parse_wire(s: &str) -> Option<Millis> {
    #[cfg(feature = "ssr")]
    return parse_iso(s);
    #[cfg(not(feature = "ssr"))]
    return parse_to_iso(s);
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
        parse_wire(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
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
                parse_wire(&s).map(Some).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
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
    fn the_exact_parser_takes_only_the_written_format() {
        assert_eq!(parse_to_iso("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(parse_to_iso("1970-01-01T00:00:00.000Z"), Some(0));
        for other in ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20.123+00:00", "2023-11-14 22:13:20.123Z", ""] {
            assert_eq!(parse_to_iso(other), None, "{other}");
            assert!(parse_iso(other).is_some() || other.is_empty(), "{other}");
        }
        for impossible in ["2023-02-29T00:00:00.000Z", "2023-11-14T24:00:00.000Z", "2023-11-14T23:60:00.000Z"] {
            assert_eq!(parse_to_iso(impossible), None, "{impossible}");
        }
    }

    proptest::proptest! {
        /// Whatever the server writes (years 0000 to 9999), the browser reads back to the
        /// same instant.
        #[test]
        fn reads_back_what_it_writes(ms in -62_167_219_200_000i64..=253_402_300_799_999) {
            proptest::prop_assert_eq!(parse_to_iso(&to_iso(ms)), Some(ms));
        }

        /// And it never disagrees with chrono's RFC 3339 parser, which `parse_iso` falls back to.
        #[test]
        fn agrees_with_chrono_on_near_misses(text in "[0-9]{4}-(0[0-9]|1[0-3])-([0-2][0-9]|3[0-2])T([01][0-9]|2[0-4]):[0-6][0-9]:[0-6][0-9]\\.[0-9]{3}Z") {
            let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp_millis());
            match parse_to_iso(&text) {
                Some(ms) => proptest::prop_assert_eq!(chrono, Some(ms)),
                // A leap second, which `to_iso` never writes; the server's `parse_iso` takes it.
                None => proptest::prop_assert!(chrono.is_none() || &text[17..19] == "60", "{text}"),
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "yesterday", "2023-13-01", "2023-02-30T00:00:00Z", "12345"] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
