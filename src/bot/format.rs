//! Text the bot shows people, and log text made safe: durations, Discord's
//! length limits, result fields of `/ask` and the states of its answer, and
//! interaction tokens redacted.

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

/// Discord's limit on a message's content, in characters.
pub const MESSAGE_LIMIT: usize = 2000;

/// An answer that cites none of the results.
pub const NO_ANSWER: &str = "No answer found in the messages you can read.";
/// A waiting request whose asker asked again.
pub const ANSWER_REPLACED: &str = "No answer here: your newer question took this one's place in line.";
/// A request stopped before anything of its answer was shown.
pub const ANSWER_STOPPED: &str = "Stopped: no answer was written.";
pub const ANSWER_SHUTDOWN: &str = "No answer: the bot is shutting down. Please ask again later.";
/// A request still waiting when its message could no longer be edited.
pub const ANSWER_WAITED_TOO_LONG: &str = "No answer: the line was too long to answer in time. Please ask again later.";
pub const ANSWER_UNAVAILABLE: &str = "No answer: the chat model could not be started (the cause is in the bot's log).";
pub const ANSWER_FAILED: &str =
    "Sorry, the answer could not be written. The cause is in the bot's log; please try again later.";
/// Under the results when an answer was asked for and the bot has no chat model.
pub const ANSWERS_OFF: &str = "_Answers are off on this bot: its operator can turn them on by installing a chat \
     model (`scripts/fetch-model.sh smollm2`) or setting `[answer] endpoint` in its config file._";
/// Under the results when an answer was asked for and the chat model could not be loaded.
pub const ANSWERS_BROKEN: &str =
    "_Answers are unavailable: the chat model could not be loaded (the cause is in the bot's log)._";

/// Under the results when the question is too long to be answered.
pub fn question_too_long(chars: usize, max: usize) -> String {
    format!("_No answer: the question is {chars} characters, and answers take questions of at most {max}._")
}

/// An answer on its way: waiting as number `place` in line, or being written (None).
pub fn answer_waiting(place: Option<usize>) -> String {
    match place {
        Some(n) => format!("Writing an answer… (you are number {n} in line)"),
        None => "Writing an answer…".to_owned(),
    }
}

/// An answer as it is being written: the (checked) text so far.
pub fn answer_streaming(text: &str) -> String {
    let head = answer_waiting(None);
    format!("{head}\n{}", truncate(text.trim(), MESSAGE_LIMIT - head.chars().count() - 1))
}

/// A finished answer: `text` (None: nothing valid was cited) with each
/// citation `[n]` of `links` (result `n`, its jump link) a link, and a note
/// in italics; within Discord's limit (when the text with links inline is
/// too long, the text is cut and the links follow it on one line).
pub fn answer_final(model: &str, text: Option<&str>, links: &[(usize, &str)], note: Option<&str>) -> String {
    let note = note.map(|n| format!("\n_{n}_")).unwrap_or_default();
    let Some(text) = text.map(str::trim) else {
        return format!("{NO_ANSWER}{note}");
    };
    let head = format!("**Answer** ({}):\n", truncate(model, 100));
    let room = MESSAGE_LIMIT - head.chars().count() - note.chars().count();
    let linked = link_citations(text, links);
    let body = if linked.chars().count() <= room {
        linked
    } else {
        let sources: Vec<String> = links.iter().map(|(n, url)| format!("[{n}]({url})")).collect();
        let mut sources = format!("\nSources: {}", sources.join(" "));
        if sources.chars().count() > room / 2 {
            sources.clear();
        }
        format!("{}{sources}", truncate(text, room - sources.chars().count()))
    };
    format!("{head}{body}{note}")
}

/// `text` with each citation `[n]` that `links` has made a link: `[n](url)`.
pub fn link_citations(text: &str, links: &[(usize, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let url = (digits > 0 && after[digits..].starts_with(']') && !after[digits + 1..].starts_with('('))
            .then(|| after[..digits].parse::<usize>().ok())
            .flatten()
            .and_then(|n| links.iter().find(|(m, _)| *m == n));
        match url {
            Some((n, url)) => {
                out.push_str(&format!("[{n}]({url})"));
                rest = &after[digits + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
            rerank_score: None,
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
    fn an_answer_links_its_citations_and_fits_a_message() {
        let links = [(1, "https://discord.com/channels/1/2/3"), (3, "https://discord.com/channels/1/2/5")];
        assert_eq!(
            link_citations("Blue [1][3]; not [2], [x] or [1](a).", &links),
            "Blue [1](https://discord.com/channels/1/2/3)[3](https://discord.com/channels/1/2/5); not [2], [x] or [1](a)."
        );
        let text = answer_final("m", Some(" It is blue [1]. "), &links[..1], None);
        assert_eq!(text, "**Answer** (m):\nIt is blue [1](https://discord.com/channels/1/2/3).");
        let text = answer_final("m", None, &[], Some("Stopped."));
        assert_eq!(text, "No answer found in the messages you can read.\n_Stopped._");
        // Too long with the links inline: cut, and the links after it.
        let long = "word [1] ".repeat(300);
        let text = answer_final("m", Some(&long), &links, Some("Cut."));
        assert!(text.chars().count() <= MESSAGE_LIMIT, "{}", text.chars().count());
        assert!(text.ends_with(
            "\nSources: [1](https://discord.com/channels/1/2/3) [3](https://discord.com/channels/1/2/5)\n_Cut._"
        ));
        assert!(answer_streaming(&long.repeat(3)).chars().count() <= MESSAGE_LIMIT);
        assert_eq!(answer_waiting(Some(2)), "Writing an answer… (you are number 2 in line)");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h 01m");
    }
}
