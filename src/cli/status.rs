//! `discord-indexer status`: what the archive holds.

use super::exit;
use crate::config::Settings;
use crate::store::{IndexState, Store, StoreError};

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
    for g in &mut guilds {
        for i in &mut g.indexes {
            let repair = match i.model.strip_suffix(crate::index::REBUILDING) {
                Some(model) => format!("discord-indexer index --guild {} --model {model} --rebuild", g.guild_id),
                None => format!("discord-indexer index --guild {} --model {}", g.guild_id, i.model),
            };
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
                    i.problem = Some(format!("its vector store is missing; rebuild it with `{repair} --rebuild`"))
                }
                // Not this index's problem: nothing can be opened on that disk.
                Err(e @ crate::vector::VectorError::NoSpace { .. }) => return Err(e.into()),
                Err(e) => i.problem = Some(e.to_string()),
            }
        }
    }
    if let Some(missing) = args.guilds.iter().find(|g| !guilds.iter().any(|s| s.guild_id == **g)) {
        anyhow::bail!("guild {missing} is not in the archive {}", store.path().display());
    }
    // A damaged or unreadable index is worth a non-zero exit to a script.
    let code =
        if guilds.iter().flat_map(|g| &g.indexes).any(|i| i.problem.is_some()) { exit::PARTIAL } else { exit::OK };
    if json {
        out!("{}", serde_json::to_string_pretty(&serde_json::json!({ "guilds": guilds }))?);
        return Ok(code);
    }
    if guilds.is_empty() {
        out!("the archive {} holds no guilds yet", store.path().display());
    }
    for g in &guilds {
        out!(
            "guild {} ({}): {} messages; last load {} ({})",
            g.guild_id,
            g.name,
            g.messages,
            g.last_load_at.as_deref().unwrap_or("never"),
            g.last_load_outcome.as_deref().unwrap_or("-"),
        );
        for i in &g.indexes {
            out!(
                "  index {}{}: {}, {} chunks and {} parts, {} points, {} dimensions, checkpoint version {}, {} ({})",
                i.model,
                if i.active { " (active)" } else { "" },
                i.state,
                i.chunks,
                i.parts,
                i.points.map_or("?".into(), |p| p.to_string()),
                i.dim,
                i.version,
                i.backend,
                i.collection,
            );
            if let Some(problem) = &i.problem {
                out!("    {problem}");
            }
        }
        for c in &g.channels {
            let indent = if c.parent_id.is_some() && c.kind.contains("thread") { "    " } else { "  " };
            let detail = c.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            // When the checkpoint last moved, to the minute.
            let moved = c.loaded_at.as_deref().and_then(|t| t.get(..16)).map_or("-".into(), |t| t.replace('T', " "));
            out!(
                "{indent}#{:<24} {:<15} {:>8} messages  checkpoint {:<20} moved {moved:<16}  {}{detail}",
                c.name.as_deref().unwrap_or("?"),
                c.kind,
                c.messages,
                c.last_message_id,
                c.state,
            );
        }
    }
    Ok(code)
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
