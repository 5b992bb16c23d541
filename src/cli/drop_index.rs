//! `discord-indexer drop-index`: remove one model's collection of a guild.

use super::exit;
use crate::config::Settings;
use crate::store::Store;

/// Delete a guild's collection for a model (not the active one unless --force).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub index: super::IndexRef,
    /// Also drop the active index (search then has nothing for the guild).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&settings.data_dir)?;
    let guild = args.index.guild;
    let record = crate::index::find_index(&store, guild, &args.index.model)?;
    let model = &record.model;
    if record.active && !args.force {
        anyhow::bail!("{model} is the active index of guild {guild}: activate another model first, or pass --force");
    }
    let backend = settings.backend()?;
    backend.drop_collection(guild, record.key()).await?;
    store.forget_index(guild, model)?;
    if json {
        out!("{}", serde_json::json!({"guild_id": guild.to_string(), "model": model, "dropped": true}));
    } else {
        out!("dropped the {model} index of guild {guild} ({} chunks)", record.chunks);
    }
    Ok(exit::OK)
}
