//! `discord-indexer ask`: search indexed guilds from the command line.

use super::exit;
use crate::config::Settings;
use chrono::{DateTime, Utc};

use crate::search::filters::{parse_date, FilterRequest};
use crate::search::{Mode, Query, SearchResult, Searcher, Viewer};
use crate::store::Store;

/// Search the archive: hybrid vector + keyword search over the active index
/// of each guild, as the operator (every channel) or, with --as-user, as a
/// member (only what they may read now).
///
/// `--json` prints an array of results (ids as strings). Exit codes: 0
/// answered (possibly with no results), 1 some guilds could not be searched
/// (see stderr), 2 bad input or no usable index.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question.
    pub question: String,
    /// Guild id to search; repeat for several (default: every guild with an active index).
    #[arg(long = "guild", value_name = "ID", value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
    /// Search as this Discord user: only channels and threads they may read.
    /// Permissions are refreshed from Discord when stale (needs DISCORD_TOKEN).
    #[arg(long, value_name = "USER_ID", value_parser = super::discord_id)]
    pub as_user: Option<u64>,
    /// How many results.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Which search: hybrid (default), vector or keyword.
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
    /// Only this channel (an id, or a name such as `general` or `#general`),
    /// with its threads and forum posts; repeat for several.
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// Only messages by this user (an id, or a user or display name); repeat for several.
    #[arg(long = "author", value_name = "USER")]
    pub authors: Vec<String>,
    /// Only messages sent at or after this time: `2024-05-01`, `2024-05-01 14:30`
    /// or RFC 3339 (times without an offset are UTC).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub after: Option<DateTime<Utc>>,
    /// Only messages sent before this time (same forms as --after).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub before: Option<DateTime<Utc>>,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    if args.question.trim().is_empty() {
        anyhow::bail!("the question is empty");
    }
    let store = Store::open_existing(&settings.data_dir)?;
    let mut guilds = args.guilds.clone();
    if guilds.is_empty() {
        guilds = store.active_indexes()?.into_iter().map(|a| a.guild_id).collect();
        if guilds.is_empty() && args.mode == Mode::Keyword {
            // The keyword index needs no stage two: every loaded guild.
            guilds = store.guilds()?.into_iter().map(|(id, ..)| id).collect();
        }
        if guilds.is_empty() {
            anyhow::bail!(
                "no guild in {} has an active index: run `discord-indexer index --guild ID` first \
                 (`ask --mode keyword` needs only `load`)",
                settings.data_dir.display()
            );
        }
    }
    let request = FilterRequest {
        channels: args.channels.clone(),
        authors: args.authors.clone(),
        after: args.after,
        before: args.before,
    };
    // The operator owns the archive: names resolve with every channel and
    // user in it, and a miss lists the closest ones.
    let filters = request.resolve_for_operator(&store, &guilds)?;
    let asker = match args.as_user {
        Some(user) => match store.user_label(user)? {
            Some(label) => format!("{label}, user {user}"),
            None => format!("user {user} (not seen in the archive)"),
        },
        None => String::new(),
    };
    let viewer = args.as_user.map_or(Viewer::Operator, Viewer::User);
    let client = match (&settings.token, viewer) {
        (Some(token), Viewer::User(_)) => Some(settings.client(token.clone())?),
        _ => None,
    };
    let searcher =
        Searcher::new(store, settings.backend()?, settings.index.models_dir.clone(), client, settings.search.clone());
    let query = Query {
        text: args.question.clone(),
        guilds: guilds.clone(),
        viewer,
        limit: args.limit as usize,
        mode: args.mode,
        filters,
    };
    let answer = searcher.ask(&query).await?;
    // Whom the results are for; after the search, so that bad input is the only message.
    match viewer {
        Viewer::Operator => {
            say!("searched as the operator: every stored channel (use --as-user ID to search as a member)")
        }
        Viewer::User(_) => say!("searched as {asker}: only the channels and threads they may read now"),
    }
    for note in &answer.notes {
        say!("note: {note}");
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&answer.results)?);
    } else if answer.results.is_empty() {
        out!("nothing found");
    } else {
        for (i, r) in answer.results.iter().enumerate() {
            let place =
                if r.is_thread { format!("thread “{}”", r.channel_name) } else { format!("#{}", r.channel_name) };
            let when = r.time.get(..16).unwrap_or(&r.time).replace('T', " ");
            out!("{}. {place} · {} · {when} UTC · {}", i + 1, r.authors.join(", "), why(r, args.mode));
            out!("   {}", r.jump_url);
            for line in r.text.lines() {
                out!("   │ {line}");
            }
            out!();
        }
    }
    Ok(if answer.searched.len() < guilds.len() { exit::PARTIAL } else { exit::OK })
}

/// Why a result ranks where it does, in words: the similarity of its
/// conversation to the question, and the share of the question's words
/// (rare words weigh more) that its best message holds.
fn why(r: &SearchResult, mode: Mode) -> String {
    let similar = r.vector_score.map(|v| format!("similarity {v:.2}"));
    let words = match mode {
        Mode::Keyword => Some(format!("{:.0}% of the words", r.score * 100.0)),
        _ => r.keyword_rank.map(|k| format!("keyword #{k}")),
    };
    match (similar, words) {
        (Some(v), Some(k)) => format!("{v}, {k}"),
        (Some(v), None) => v,
        (None, Some(k)) => k,
        (None, None) => format!("score {:.4}", r.score),
    }
}
