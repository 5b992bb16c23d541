//! What an asker narrows a question to, as they write it (channel and user
//! names or ids, dates), resolved against the archive into [`Filters`]. The
//! CLI's `ask` flags and the bot's `/ask` options both come through here.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::Filters;
use crate::snowflake;
use crate::store::{Store, StoreError};

/// The filters as asked for.
#[derive(Debug, Clone, Default)]
pub struct FilterRequest {
    /// Channel ids or names (`general`, `#general`).
    pub channels: Vec<String>,
    /// User ids, or user or display names (`@` allowed).
    pub authors: Vec<String>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("no channel named {0:?} in the searched guilds")]
    NoChannel(String),
    #[error("no user named {0:?} in the archive")]
    NoUser(String),
    #[error("the start ({after}) must be earlier than the end ({before})")]
    EmptySpan { after: DateTime<Utc>, before: DateTime<Utc> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FilterRequest {
    /// Resolves names against the archive (`guilds`: the guilds searched). An
    /// unknown name is an error, not an empty answer.
    pub fn resolve(&self, store: &Store, guilds: &[u64]) -> Result<Filters, FilterError> {
        if let (Some(after), Some(before)) = (self.after, self.before) {
            if after >= before {
                return Err(FilterError::EmptySpan { after, before });
            }
        }
        let mut f = Filters {
            after: self.after.map(snowflake::from_timestamp),
            before: self.before.map(snowflake::from_timestamp),
            ..Default::default()
        };
        for c in &self.channels {
            let name = c.trim().trim_start_matches('#');
            if let Some(id) = snowflake::parse(name) {
                f.channels.push(id);
                continue;
            }
            let before = f.channels.len();
            for &g in guilds {
                let infos = store.channel_infos(g)?;
                f.channels
                    .extend(infos.into_iter().filter(|(_, i)| i.name.eq_ignore_ascii_case(name)).map(|(id, _)| id));
            }
            if f.channels.len() == before {
                return Err(FilterError::NoChannel(c.clone()));
            }
        }
        for a in &self.authors {
            let name = a.trim().trim_start_matches('@');
            if let Some(id) = snowflake::parse(name) {
                f.authors.push(id);
                continue;
            }
            let found = store.users_named(name)?;
            if found.is_empty() {
                return Err(FilterError::NoUser(a.clone()));
            }
            f.authors.extend(found);
        }
        f.channels.sort_unstable();
        f.channels.dedup();
        f.authors.sort_unstable();
        f.authors.dedup();
        Ok(f)
    }
}

/// A date or time as DiscordChatExporter's `--after`/`--before` take them:
/// `2024-05-01` (midnight), `2024-05-01 14:30[:00]` or RFC 3339; times
/// without an offset are UTC.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(d.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| {
            format!("{t:?} is not a date: use 2024-05-01, 2024-05-01 14:30 or RFC 3339 (2024-05-01T14:30:00+02:00)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_dce_writes_them() {
        let day = parse_date("2024-05-01").unwrap();
        assert_eq!(day.to_rfc3339(), "2024-05-01T00:00:00+00:00");
        assert_eq!(parse_date(" 2024-05-01 14:30 ").unwrap().to_rfc3339(), "2024-05-01T14:30:00+00:00");
        assert_eq!(parse_date("2024-05-01T14:30:00+02:00").unwrap().to_rfc3339(), "2024-05-01T12:30:00+00:00");
        assert!(parse_date("yesterday").unwrap_err().contains("not a date"));
        assert!(parse_date("2024-13-01").is_err());
    }
}
