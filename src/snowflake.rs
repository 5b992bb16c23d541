//! Discord snowflakes: 64-bit ids whose top 42 bits are milliseconds since the
//! Discord epoch (2015-01-01T00:00:00Z), so ids sort by creation time.
//!
//! Everything that orders messages (paging, checkpoints, de-duplication) uses
//! ids, never timestamps: messages sent in the same millisecond may carry equal
//! timestamps but never equal ids.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds from the Unix epoch to the Discord epoch.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The creation time encoded in a snowflake.
pub fn timestamp(id: u64) -> DateTime<Utc> {
    let ms = (id >> 22) + DISCORD_EPOCH_MS;
    Utc.timestamp_millis_opt(ms as i64).single().unwrap_or_default()
}

/// The smallest snowflake created at `time` (useful as an `after`/`before`
/// bound). Times before the Discord epoch give 0, and times past what the
/// store's signed 64-bit ids can hold (the year 2084) give the largest id, so
/// a bound never wraps around to mean its opposite.
pub fn from_timestamp(time: DateTime<Utc>) -> u64 {
    let ms = time.timestamp_millis().saturating_sub(DISCORD_EPOCH_MS as i64);
    if ms <= 0 {
        return 0;
    }
    let ms = ms as u64;
    if ms > MAX_ID >> 22 {
        return MAX_ID;
    }
    ms << 22
}

/// The largest id the store holds (its columns are signed 64-bit).
pub const MAX_ID: u64 = i64::MAX as u64;

/// How far ahead of this machine's clock an id may be created (clocks
/// disagree); an id further ahead comes from no real message.
const FUTURE_SLACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Whether `id` cannot be a real message's: created more than a day from now.
/// The error is the time it claims.
pub fn check_not_future(id: u64) -> Result<(), String> {
    let created = timestamp(id);
    if created > Utc::now() + FUTURE_SLACK {
        return Err(format_time(created));
    }
    Ok(())
}

/// A Discord id written as text (exports, arguments): a positive integer that
/// fits the store's signed 64-bit columns.
pub fn parse(text: &str) -> Option<u64> {
    text.parse().ok().filter(|&id: &u64| id > 0 && id <= i64::MAX as u64)
}

/// Formats a time the one way the store writes times: RFC 3339, UTC, microseconds,
/// `Z` suffix. A fixed format means stored times also compare correctly as text.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Normalises a timestamp string from Discord (`2024-01-02T03:04:05.123000+00:00`)
/// into the store's format. Returns `None` for text that is not RFC 3339.
pub fn normalize_time(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| format_time(t.with_timezone(&Utc)))
}

/// Snowflakes go out as strings in JSON, as Discord sends them: they exceed
/// 2^53, which many JSON readers cannot hold exactly.
pub fn serialize_id<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// [`serialize_id`] for an optional id.
pub fn serialize_opt_id<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_before_the_epoch_or_past_the_ids_do_not_wrap() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        assert_eq!(from_timestamp(at("0001-01-01T00:00:00Z")), 0);
        assert_eq!(from_timestamp(at("1969-12-31T23:59:59Z")), 0);
        assert_eq!(from_timestamp(at("2015-01-01T00:00:00Z")), 0);
        assert_eq!(from_timestamp(at("2160-01-01T00:00:00Z")), MAX_ID);
        assert_eq!(from_timestamp(at("9999-12-31T00:00:00Z")), MAX_ID);
        let now = from_timestamp(Utc::now());
        assert!(0 < now && now < MAX_ID);
        assert!(check_not_future(now).is_ok());
        let next_week = from_timestamp(Utc::now() + chrono::TimeDelta::days(7));
        assert!(check_not_future(next_week).unwrap_err().starts_with(&Utc::now().format("%Y").to_string()[..2]));
    }

    #[test]
    fn round_trips_through_time() {
        // Discord's documented example: 175928847299117063 was created 2016-04-30 11:18:25.796 UTC.
        let t = timestamp(175_928_847_299_117_063);
        assert_eq!(format_time(t), "2016-04-30T11:18:25.796000Z");
        let low = from_timestamp(t);
        assert!(low <= 175_928_847_299_117_063);
        assert_eq!(timestamp(low), t);
    }

    #[test]
    fn normalizes_discord_timestamps() {
        assert_eq!(normalize_time("2024-01-02T03:04:05.123000+00:00").as_deref(), Some("2024-01-02T03:04:05.123000Z"));
        assert_eq!(normalize_time("2024-01-02T05:04:05+02:00").as_deref(), Some("2024-01-02T03:04:05.000000Z"));
        assert_eq!(normalize_time("yesterday"), None);
    }
}
