//! What an asker narrows a question to, as they write it (channel and user
//! names or ids, dates), resolved against the archive into [`Filters`]. The
//! CLI's `ask` flags and the bot's `/ask` options both come through here.
//!
//! **Names** are matched as people remember them, not as Discord spells
//! them: case, emoji, punctuation and separators are ignored
//! (`👾agentic-ethereum-chat` is `agentic ethereum chat`, `Pascal | ETHGlobal`
//! is `pascal-ethglobal`), and a prefix will do (`agentic`). A user goes by
//! their username and their display name. An id (`123…`, a mention such as
//! `<#123…>` or `<@123…>`) must be a channel of the searched guilds, or a user
//! of the archive, as a name must.
//!
//! Names are facts too, so there are two ways to resolve them.
//! [`FilterRequest::resolve_for_operator`] (the CLI: whoever runs it owns the
//! archive and may know every name) matches exactly first, takes a prefix
//! only when it names one channel or user, and its errors list the candidates
//! or the closest names. [`FilterRequest::resolve`] (anyone, such as the bot's
//! `/ask`) tells nothing about names the asker may not read: a name takes
//! every channel or user it matches exactly or as a prefix (the search then
//! reads only what the asker may), and errors list no names. Preferring an
//! exact match, or refusing a prefix of several names, would answer a member
//! differently depending on whether a channel they cannot see is so called.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::Filters;
use crate::snowflake;
use crate::store::{Store, StoreError};

/// The filters as asked for.
#[derive(Debug, Clone, Default)]
pub struct FilterRequest {
    /// Channel ids or names (`general`, `#general`, `<#id>`).
    pub channels: Vec<String>,
    /// User ids, or user or display names (`@` allowed, `<@id>`).
    pub authors: Vec<String>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A channel name or id that the searched guilds do not have (or, for the
    /// operator, a prefix of several).
    #[error("{0}")]
    NoChannel(NoMatch),
    /// A user name or id that the archive does not have (or, for the
    /// operator, a prefix of several).
    #[error("{0}")]
    NoUser(NoMatch),
    #[error("the start ({after}) must be earlier than the end ({before})")]
    EmptySpan { after: DateTime<Utc>, before: DateTime<Utc> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A channel or user name (or id) that resolved to nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    /// As the asker wrote it.
    pub asked: String,
    /// What was looked for: `channel` or `user`.
    pub kind: &'static str,
    pub why: Why,
}

/// Why a name resolved to nothing, with the names worth suggesting (none
/// where names may not be told; see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// No such name; the closest ones, best first.
    Unknown { closest: Vec<String> },
    /// An id of no channel searched, or of no user in the archive.
    UnknownId(u64),
    /// A prefix of several names: these.
    Ambiguous { candidates: Vec<String> },
}

/// Most names an error lists.
const LISTED: usize = 5;

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.kind == "channel" { "in the searched guilds" } else { "in the archive" };
        match &self.why {
            Why::Unknown { closest } => {
                write!(f, "no {} named {:?} {place}", self.kind, self.asked)?;
                if !closest.is_empty() {
                    write!(f, "; the closest: {}", closest.join(", "))?;
                }
                Ok(())
            }
            Why::UnknownId(id) => write!(f, "no {} with id {id} {place}", self.kind),
            Why::Ambiguous { candidates } => {
                let shown = candidates.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
                write!(f, "{:?} could be more than one {}: {shown}", self.asked, self.kind)?;
                if candidates.len() > LISTED {
                    write!(f, " and {} more", candidates.len() - LISTED)?;
                }
                write!(f, "; say which (a longer name, or an id)")
            }
        }
    }
}

impl FilterRequest {
    /// Resolves names against the archive (`guilds`: the guilds searched) for
    /// any asker: a name takes every channel or user it matches, and errors
    /// name nothing (see the module doc). An unknown name or id is an error,
    /// not an empty answer.
    pub fn resolve(&self, store: &Store, guilds: &[u64]) -> Result<Filters, FilterError> {
        self.resolve_as(store, guilds, false)
    }

    /// Resolves names against the archive for its operator: an exact match
    /// first, else a prefix of one name; a prefix of several and an unknown
    /// name are errors that list the candidates or the closest names.
    pub fn resolve_for_operator(&self, store: &Store, guilds: &[u64]) -> Result<Filters, FilterError> {
        self.resolve_as(store, guilds, true)
    }

    /// `tell`: whether errors may name channels and users, and a prefix of
    /// several names is refused.
    fn resolve_as(&self, store: &Store, guilds: &[u64], tell: bool) -> Result<Filters, FilterError> {
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
        if !self.channels.is_empty() {
            let mut channels = Vec::new();
            for &g in guilds {
                let infos = store.channel_infos(g)?;
                channels
                    .extend(infos.into_iter().map(|(id, i)| Named::new(id, [i.name.as_str()], format!("#{}", i.name))));
            }
            for c in &self.channels {
                let text = unwrap_mention(c.trim(), &["<#"]).trim_start_matches('#');
                let found =
                    find(text, &channels, tell).map_err(|why| NoMatch { asked: c.clone(), kind: "channel", why });
                f.channels.extend(found.map_err(FilterError::NoChannel)?);
            }
        }
        if !self.authors.is_empty() {
            let users: Vec<Named> = store
                .user_names()?
                .into_iter()
                .map(|(id, username, display)| {
                    let label = match &display {
                        Some(d) if *d != username => format!("{d} (@{username})"),
                        _ => format!("@{username}"),
                    };
                    Named::new(id, [Some(username.as_str()), display.as_deref()].into_iter().flatten(), label)
                })
                .collect();
            for a in &self.authors {
                let text = unwrap_mention(a.trim(), &["<@!", "<@"]).trim_start_matches('@');
                let found = find(text, &users, tell).map_err(|why| NoMatch { asked: a.clone(), kind: "user", why });
                f.authors.extend(found.map_err(FilterError::NoUser)?);
            }
        }
        f.channels.sort_unstable();
        f.channels.dedup();
        f.authors.sort_unstable();
        f.authors.dedup();
        Ok(f)
    }
}

/// `<#123>` as `123` (with any of these openings); other text as it is.
fn unwrap_mention<'a>(text: &'a str, openings: &[&str]) -> &'a str {
    openings
        .iter()
        .find_map(|o| text.strip_prefix(o).and_then(|t| t.strip_suffix('>')))
        .filter(|id| snowflake::parse(id).is_some())
        .unwrap_or(text)
}

/// A channel or user as it may be named.
struct Named {
    id: u64,
    /// Its names as [`key`]s.
    keys: Vec<String>,
    /// Its names in lower case (for names without letters or digits).
    lower: Vec<String>,
    /// How an error shows it.
    label: String,
}

impl Named {
    fn new<'a>(id: u64, names: impl IntoIterator<Item = &'a str>, label: String) -> Named {
        let names: Vec<&str> = names.into_iter().collect();
        Named {
            id,
            keys: names.iter().map(|n| key(n)).collect(),
            lower: names.iter().map(|n| n.trim().to_lowercase()).collect(),
            label,
        }
    }
}

/// A name as it is compared: its letters and digits, in lower case (case,
/// emoji, punctuation, decoration and separators ignored).
fn key(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// What `asked` names among `all` (see the module doc for `tell`): ids, or
/// why none.
fn find(asked: &str, all: &[Named], tell: bool) -> Result<Vec<u64>, Why> {
    let id = snowflake::parse(asked);
    if let Some(id) = id.filter(|id| all.iter().any(|n| n.id == *id)) {
        return Ok(vec![id]);
    }
    let k = key(asked);
    let (exact, prefixed): (Vec<&Named>, Vec<&Named>) = if k.is_empty() {
        // A name of symbols only (an emoji): as written, in any case.
        let lower = asked.trim().to_lowercase();
        (all.iter().filter(|n| !lower.is_empty() && n.lower.contains(&lower)).collect(), Vec::new())
    } else {
        (
            all.iter().filter(|n| n.keys.contains(&k)).collect(),
            all.iter().filter(|n| n.keys.iter().any(|m| m.starts_with(&k))).collect(),
        )
    };
    let ids = |named: &[&Named]| -> Vec<u64> { named.iter().map(|n| n.id).collect() };
    let none = || match id {
        Some(id) => Why::UnknownId(id),
        None => Why::Unknown { closest: if tell { closest(&k, all) } else { Vec::new() } },
    };
    if !tell {
        let found: BTreeSet<u64> = ids(&exact).into_iter().chain(ids(&prefixed)).collect();
        return if found.is_empty() { Err(none()) } else { Ok(found.into_iter().collect()) };
    }
    if !exact.is_empty() {
        return Ok(ids(&exact));
    }
    // A prefix of one name, however many channels or users go by it.
    let names = |n: &Named| -> BTreeSet<String> { n.keys.iter().filter(|m| m.starts_with(&k)).cloned().collect() };
    let shared = prefixed.iter().map(|n| names(n)).reduce(|a, b| &a & &b).unwrap_or_default();
    match prefixed.len() {
        0 => Err(none()),
        1 => Ok(ids(&prefixed)),
        _ if !shared.is_empty() => Ok(ids(&prefixed)),
        _ => {
            let candidates: BTreeSet<&str> = prefixed.iter().map(|n| n.label.as_str()).collect();
            Err(Why::Ambiguous { candidates: candidates.into_iter().map(str::to_owned).collect() })
        }
    }
}

/// Up to [`LISTED`] names nearest to `k` (a [`key`]): those containing it
/// first, then by edit distance to the name or to its start (a misspelt
/// prefix is near too).
fn closest(k: &str, all: &[Named]) -> Vec<String> {
    if k.is_empty() {
        return Vec::new();
    }
    let asked: Vec<char> = k.chars().collect();
    let mut ranked: Vec<(bool, usize, &str)> = all
        .iter()
        .filter_map(|n| {
            let best = n
                .keys
                .iter()
                .filter(|m| !m.is_empty())
                .map(|m| {
                    let name: Vec<char> = m.chars().collect();
                    let start = &name[..name.len().min(asked.len())];
                    (!m.contains(k), edit_distance(&asked, &name).min(edit_distance(&asked, start)))
                })
                .min()?;
            Some((best.0, best.1, n.label.as_str()))
        })
        .collect();
    ranked.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    for (_, _, label) in ranked {
        if !out.iter().any(|l| l == label) {
            out.push(label.to_owned());
        }
        if out.len() == LISTED {
            break;
        }
    }
    out
}

/// Levenshtein distance (insertions, deletions and substitutions of one character each).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
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

    fn named(id: u64, names: &[&str]) -> Named {
        Named::new(id, names.iter().copied(), format!("#{}", names[0]))
    }

    #[test]
    fn names_match_without_case_emoji_or_decoration() {
        assert_eq!(key("👾agentic-ethereum-chat"), "agenticethereumchat");
        assert_eq!(key("Pascal | ETHGlobal"), key("pascal-ethglobal"));
        assert_eq!(key("Inês"), "inês");
        let all = [
            named(1, &["👾agentic-ethereum-chat"]),
            named(2, &["agentic-ops"]),
            named(3, &["general"]),
            named(4, &["General"]),
            named(5, &["🎉"]),
            named(6, &["general-2"]),
        ];
        for tell in [true, false] {
            assert_eq!(find("Agentic Ethereum Chat", &all, tell), Ok(vec![1]));
            assert_eq!(find("agentic_eth", &all, tell), Ok(vec![1]), "a unique prefix");
            assert_eq!(find("🎉", &all, tell), Ok(vec![5]));
            assert_eq!(find("2", &all, tell), Ok(vec![2]), "an id");
            assert_eq!(find("1234567", &all, tell), Err(Why::UnknownId(1_234_567)));
        }
        // The operator: exact first, and one name per prefix.
        assert_eq!(find("general", &all, true), Ok(vec![3, 4]), "one name, two channels");
        assert_eq!(
            find("agentic", &all, true),
            Err(Why::Ambiguous { candidates: vec!["#agentic-ops".into(), "#👾agentic-ethereum-chat".into()] })
        );
        let Err(Why::Unknown { closest }) = find("genral", &all, true) else { panic!("genral is no name") };
        assert_eq!(closest[..3], ["#General", "#general", "#general-2"]);
        // Anyone else: every channel a name matches, and no names told.
        assert_eq!(find("general", &all, false), Ok(vec![3, 4, 6]));
        assert_eq!(find("agentic", &all, false), Ok(vec![1, 2]));
        assert_eq!(find("genral", &all, false), Err(Why::Unknown { closest: vec![] }));
        // Mentions are ids.
        assert_eq!(unwrap_mention("<#123>", &["<#"]), "123");
        assert_eq!(unwrap_mention("<@!123>", &["<@!", "<@"]), "123");
        assert_eq!(unwrap_mention("<#general>", &["<#"]), "<#general>");
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        let d = |a: &str, b: &str| edit_distance(&a.chars().collect::<Vec<_>>(), &b.chars().collect::<Vec<_>>());
        assert_eq!((d("kitten", "sitting"), d("", "abc"), d("abc", "abc"), d("ab", "ba")), (3, 3, 0, 2));
    }

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
