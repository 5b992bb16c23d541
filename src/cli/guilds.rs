//! `discord-indexer guilds`: the guilds in the archive, for scripts.

use super::exit;
use crate::config::Settings;
use crate::store::{Store, StoreError};

/// List loaded guilds with their message counts, indexes and active model.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = match Store::open_existing(&settings.data_dir) {
        // A new data directory holds no guilds: an empty list, not an error.
        Err(StoreError::Missing(path)) => {
            if json {
                out!("[]");
            } else {
                out!("no guilds: nothing is archived at {} yet (run `load` or `import`)", path.display());
            }
            return Ok(exit::OK);
        }
        store => store?,
    };
    let indexes = store.index_records(None)?;
    let mut out = Vec::new();
    for (id, name, messages) in store.guilds()? {
        let mine: Vec<_> = indexes.iter().filter(|i| i.guild_id == id).collect();
        let active = mine.iter().find(|i| i.active).map(|i| i.model.clone());
        if json {
            out.push(serde_json::json!({"guild_id": id.to_string(), "name": name, "messages": messages,
                                        "active_model": active, "indexes": mine}));
        } else {
            let models: Vec<String> = mine.iter().map(|i| format!("{} ({})", i.model, i.state)).collect();
            out!(
                "{id}  {name}  {messages} messages  active: {}  indexes: {}",
                active.as_deref().unwrap_or("-"),
                if models.is_empty() { "-".into() } else { models.join(", ") }
            );
        }
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(exit::OK)
}
