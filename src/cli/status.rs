//! `discord-indexer status`: what the archive holds.

use super::exit;
use crate::config::Settings;
use crate::store::{Store, StoreError};

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
    // Count each collection's points (skipped if another process holds it open).
    let backend = settings.backend()?;
    for g in &mut guilds {
        for i in &mut g.indexes {
            if let Ok(Some(c)) = backend.open_existing(g.guild_id, &i.model).await {
                i.points = c.count().await.ok();
            }
        }
    }
    if let Some(missing) = args.guilds.iter().find(|g| !guilds.iter().any(|s| s.guild_id == **g)) {
        anyhow::bail!("guild {missing} is not in the archive {}", store.path().display());
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&serde_json::json!({ "guilds": guilds }))?);
        return Ok(exit::OK);
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
    Ok(exit::OK)
}
