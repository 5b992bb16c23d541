//! Text the bot shows people, and log text made safe: durations, Discord's
//! length limits, result fields of `/ask`, and interaction tokens redacted.

use std::time::Duration;

use crate::search::SearchResult;

/// "3m 05s", "42s".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A stored time (RFC 3339) as Discord's timestamp markup, which each
/// reader's client shows in their own time zone and language (`<t:…:f>`);
/// other text as it is.
pub fn discord_time(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map_or_else(|_| stored.to_owned(), |t| format!("<t:{}:f>", t.timestamp()))
}

/// The first letter in upper case.
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The same answer for a server that is not indexed and one the person is not in.
pub fn no_such_server(name: &str) -> String {
    format!("No indexed server you are in is called {}.", truncate(name, 100))
}

/// One result as an embed field: where, who and when in the name; snippet
/// and link in the value. The time and the link are of the message the
/// result is about (its line is marked in the snippet), not the chunk's start.
pub fn result_field(r: &SearchResult, guild_name: Option<&str>, show_guild: bool) -> (String, String) {
    let place = if r.is_thread { format!("🧵 {}", r.channel_name) } else { format!("#{}", r.channel_name) };
    let when = chrono::DateTime::parse_from_rfc3339(&r.time)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| r.time.clone());
    let mut name = format!("{place} · {} · {when}", r.authors.join(", "));
    if show_guild {
        if let Some(g) = guild_name {
            name = format!("{g} · {name}");
        }
    }
    let link = format!("\n[Jump to the message]({})", r.jump_url);
    let value = format!("{}{link}", truncate(&r.text, 900 - link.chars().count()));
    (truncate(&name, 200), value)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Interaction tokens (in webhook URLs) out of a text meant for logs: any
/// run of token characters longer than 64 becomes `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(if run.len() > 64 { "<redacted>" } else { run });
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_become_discord_timestamps() {
        assert_eq!(discord_time("2024-05-01T09:00:00.000000Z"), "<t:1714554000:f>");
        assert_eq!(discord_time("2024-05-01T11:00:00+02:00"), "<t:1714554000:f>");
        assert_eq!(discord_time("never"), "never");
    }

    #[test]
    fn long_texts_are_cut_to_discord_limits() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(2000), 1000);
        assert_eq!(t.chars().count(), 1000);
        assert!(t.ends_with('…'));
        assert_eq!(capitalize("a load"), "A load");
    }

    #[test]
    fn a_result_shows_the_time_and_link_of_its_message() {
        let r = SearchResult {
            guild_id: 1,
            channel_id: 2,
            channel_name: "general".into(),
            parent_id: None,
            is_thread: false,
            message_ids: vec![3, 4],
            message_id: 4,
            time: "2024-05-01T14:30:00.000000Z".into(),
            jump_url: "https://discord.com/channels/1/2/4".into(),
            start: "2024-05-01T09:00:00.000000Z".into(),
            end: "2024-05-01T14:30:00.000000Z".into(),
            authors: vec!["Alice".into(), "Bob".into()],
            score: 1.0,
            vector_score: None,
            vector_rank: None,
            keyword_rank: Some(1),
            text: "Alice: hi\n» Bob: the answer".into(),
            model: "m".into(),
            chunk_id: 9,
        };
        let (name, value) = result_field(&r, None, false);
        assert_eq!(name, "#general · Alice, Bob · 2024-05-01 14:30 UTC");
        assert!(
            value.contains("» Bob: the answer") && value.ends_with("(https://discord.com/channels/1/2/4)"),
            "{value}"
        );
    }

    #[test]
    fn interaction_tokens_are_redacted() {
        let token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OjEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MA";
        let e = format!(
            "error sending request for url (https://discord.com/api/v10/webhooks/123/{token}/messages/@original)"
        );
        let r = redact(&e);
        assert!(!r.contains(token) && r.contains("/webhooks/123/<redacted>/messages/@original"), "{r}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h 01m");
    }
}
