//! `discord-indexer status`: what the archive holds.

use chrono::{DateTime, Utc};

use super::{exit, plural};
use crate::config::Settings;
use crate::snowflake;
use crate::store::{GuildStatus, IndexRecord, IndexState, LoadState, Store, StoreError};

/// Show per guild and channel: messages stored, checkpoint, last load, state.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this guild; repeat for several.
    #[arg(long = "guild", value_name = "ID", value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = match Store::open_existing(&settings.data_dir) {
        // A new data directory holds no guilds: an empty result, for scripts.
        Err(StoreError::Missing(_)) if json && args.guilds.is_empty() => {
            out!("{}", serde_json::to_string_pretty(&serde_json::json!({ "guilds": [] }))?);
            return Ok(exit::OK);
        }
        store => store?,
    };
    let mut guilds = store.status(&args.guilds)?;
    // Count each collection's points, and say what is wrong with one that
    // cannot be read or holds fewer points than its index records.
    let backend = settings.backend()?;
    let mut progress = Vec::new();
    for g in &mut guilds {
        let mut of_guild = Vec::new();
        for i in &mut g.indexes {
            let repair = run_command(g.guild_id, &i.model);
            of_guild.push(Progress::of(&store, g.guild_id, i)?);
            match backend.open_existing(g.guild_id, i.key()).await {
                Ok(Some(c)) => match probe(&c).await {
                    Ok(points) => {
                        i.points = Some(points);
                        if i.state == IndexState::Complete {
                            match crate::index::check(&store, &c, g.guild_id, &i.model).await {
                                Ok(None) => {}
                                Ok(Some(problem)) => {
                                    i.problem = Some(format!(
                                        "damaged: {problem}; `{repair}` re-embeds what is missing or corrupted"
                                    ))
                                }
                                Err(e) => i.problem = Some(e.to_string()),
                            }
                        }
                    }
                    Err(e) => i.problem = Some(e.to_string()),
                },
                Ok(None) => {
                    let rebuild =
                        if repair.ends_with(" --rebuild") { repair.clone() } else { format!("{repair} --rebuild") };
                    i.problem = Some(format!("its vector store is missing; rebuild it with `{rebuild}`"))
                }
                // Not this index's problem: nothing can be opened on that disk.
                Err(e @ crate::vector::VectorError::NoSpace { .. }) => return Err(e.into()),
                Err(e) => i.problem = Some(e.to_string()),
            }
        }
        progress.push(of_guild);
    }
    if let Some(missing) = args.guilds.iter().find(|g| !guilds.iter().any(|s| s.guild_id == **g)) {
        anyhow::bail!("guild {missing} is not in the archive {}", store.path().display());
    }
    // A damaged or unreadable index is worth a non-zero exit to a script.
    let code =
        if guilds.iter().flat_map(|g| &g.indexes).any(|i| i.problem.is_some()) { exit::PARTIAL } else { exit::OK };
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "guilds": with_additions(&guilds, &progress)? }))?
        );
        return Ok(code);
    }
    if guilds.is_empty() {
        out!("the archive {} holds no guilds yet", store.path().display());
    }
    for (g, progress) in guilds.iter().zip(&progress) {
        out!(
            "guild {} ({}): {} messages; last load {} ({})",
            g.guild_id,
            g.name,
            g.messages,
            g.last_load_at.as_deref().map_or("never".into(), shown),
            g.last_load_outcome.as_deref().unwrap_or("-"),
        );
        for (i, p) in g.indexes.iter().zip(progress) {
            let run = run_command(g.guild_id, &i.model);
            let (what, hint) = match (i.state, p.embedded, p.changed) {
                (IndexState::Building, embedded, _) => (
                    format!(
                        "building: {} of ~{} messages embedded so far",
                        embedded.unwrap_or(0),
                        g.messages.max(embedded.unwrap_or(0))
                    ),
                    Some(format!("unless a run is still going, `{run}` resumes it")),
                ),
                (IndexState::Complete, _, Some((channels @ 1.., messages))) => (
                    format!(
                        "complete, not up to date: {} changed since (~{messages} messages to re-read)",
                        plural(channels, "channel")
                    ),
                    Some(format!("`{run}` brings it up to date")),
                ),
                (IndexState::Complete, _, _) => ("complete, up to date".to_owned(), None),
            };
            out!(
                "  index {}{}: {what}; last run {}",
                i.model,
                if i.active { " (active)" } else { "" },
                shown(&i.updated_at)
            );
            if let Some(hint) = hint {
                out!("    {hint}");
            }
            out!(
                "    {} chunks, {} points, {} dimensions, {} store {}",
                p.stored_chunks,
                i.points.map_or("?".into(), |p| p.to_string()),
                i.dim,
                i.backend,
                i.collection
            );
            if let Some(problem) = &i.problem {
                out!("    {problem}");
            }
        }
        for c in &g.channels {
            let indent = if c.parent_id.is_some() && c.kind.contains("thread") { "    " } else { "  " };
            let detail = c.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            // Up to which message, by its time, and when the checkpoint last moved.
            let reached = match c.last_message_id {
                0 if c.state == LoadState::HoldsThreads => "-".to_owned(),
                0 => "nothing loaded".to_owned(),
                id => format!("loaded up to {}", minute(snowflake::timestamp(id))),
            };
            let moved = c.loaded_at.as_deref().map(|t| format!(" (checkpoint moved {})", shown(t))).unwrap_or_default();
            out!(
                "{indent}#{:<24} {:<15} {:>8} messages  {:<73}  {}{detail}",
                c.name.as_deref().unwrap_or("?"),
                c.kind,
                c.messages,
                format!("{reached}{moved}"),
                c.state,
            );
        }
    }
    Ok(code)
}

/// The command that resumes or updates an index (a rebuild beside a
/// complete one is resumed by asking for the rebuild again).
fn run_command(guild: u64, model: &str) -> String {
    match model.strip_suffix(crate::index::REBUILDING) {
        Some(model) => format!("discord-indexer index --guild {guild} --model {model} --rebuild"),
        None => format!("discord-indexer index --guild {guild} --model {model}"),
    }
}

/// What the archive says about how far an index has got, beside its record
/// (whose `chunks` is counted when it completes, and stays 0 while building).
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Chunks in its manifest now (each stored in the collection).
    stored_chunks: u64,
    /// Building: messages within the stored chunks.
    embedded: Option<u64>,
    /// Complete: channels changed since the version it covers, and (about)
    /// the messages the next run re-reads in them (from each one's first change on).
    changed: Option<(u64, u64)>,
}

impl Progress {
    fn of(store: &Store, guild: u64, i: &IndexRecord) -> Result<Progress, StoreError> {
        let stored_chunks = store.manifest_chunks(guild, &i.model)?;
        Ok(match i.state {
            IndexState::Building => {
                Progress { stored_chunks, embedded: Some(store.manifest_messages(guild, &i.model)?), changed: None }
            }
            IndexState::Complete => {
                let changed = store.changed_channels(guild, i.version)?;
                let messages = store.messages_from(&changed)?;
                Progress { stored_chunks, embedded: None, changed: Some((changed.len() as u64, messages)) }
            }
        })
    }
}

/// The guilds as JSON, each field as it always was, with what the text
/// shows beside them: each channel's `checkpoint_at` (the time of the
/// message its checkpoint reached, null before any) and each index's
/// `stored_chunks`, `messages_embedded` (building) or `changed_channels` and
/// `messages_to_read` (complete: what the next run re-reads, about).
fn with_additions(guilds: &[GuildStatus], progress: &[Vec<Progress>]) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(guilds)?;
    for ((g, status), progress) in value.as_array_mut().into_iter().flatten().zip(guilds).zip(progress) {
        for (c, status) in g["channels"].as_array_mut().into_iter().flatten().zip(&status.channels) {
            let at = (status.last_message_id > 0)
                .then(|| snowflake::format_time(snowflake::timestamp(status.last_message_id)));
            c["checkpoint_at"] = at.into();
        }
        for (i, p) in g["indexes"].as_array_mut().into_iter().flatten().zip(progress) {
            i["stored_chunks"] = p.stored_chunks.into();
            if let Some(embedded) = p.embedded {
                i["messages_embedded"] = embedded.into();
            }
            if let Some((channels, messages)) = p.changed {
                i["changed_channels"] = channels.into();
                i["messages_to_read"] = messages.into();
            }
        }
    }
    Ok(value)
}

/// A time as status shows every time: `2026-12-07 11:10 UTC`.
fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A stored time (RFC 3339) as [`minute`] shows it; other text as it is.
fn shown(stored: &str) -> String {
    DateTime::parse_from_rfc3339(stored).map_or_else(|_| stored.to_owned(), |t| minute(t.with_timezone(&Utc)))
}

/// The collection's point count, after one nearest-neighbour search that
/// reads stored vectors (a damaged vector file fails here, as `ask` would).
async fn probe(c: &crate::vector::Collection) -> Result<u64, crate::vector::VectorError> {
    let points = c.count().await?;
    if points > 0 {
        let mut unit = vec![0.0; c.dim()];
        unit[0] = 1.0;
        c.search(unit, Default::default(), 1).await?;
    }
    Ok(points)
}
