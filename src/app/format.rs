//! How times read on screen: cut from the ISO form the server writes rather than formatted
//! with chrono's `format`, whose strftime machinery is KBs of WASM for a few labels.

use crate::domain::time::{to_iso, Millis};

/// An epoch-millisecond time for tables: `2024-05-01 12:00:03`. (Cut at fixed places: every
/// time shown is a validated event time or the server's clock, years 1971 to 9999.)
pub fn short_time(ms: Millis) -> String {
    let iso = to_iso(ms);
    iso.get(..19).map(|s| s.replace('T', " ")).unwrap_or(iso)
}

/// To the minute, with its zone: `2024-05-01 12:00 UTC`.
pub fn utc_minute(ms: Millis) -> String {
    let iso = to_iso(ms);
    iso.get(..16).map(|s| format!("{} UTC", s.replace('T', " "))).unwrap_or(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_well() {
        assert_eq!(short_time(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(utc_minute(1_700_000_000_123), "2023-11-14 22:13 UTC");
    }
}
