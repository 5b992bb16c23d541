//! `discord-indexer activate`: choose which complete index search uses.

use super::{exit, IndexRef};
use crate::config::Settings;
use crate::store::Store;

/// Make a guild's complete index for a model the one search uses (atomic switch).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub index: super::IndexRef,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&settings.data_dir)?;
    let IndexRef { guild, model } = &args.index;
    let record = crate::index::activate(&store, &settings.backend()?, *guild, model).await?;
    let model = record.model;
    if json {
        out!("{}", serde_json::json!({"guild_id": guild.to_string(), "model": model, "active": true}));
    } else {
        out!("guild {guild} now searches with {model}");
    }
    Ok(exit::OK)
}
