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
    let Some(record) = store.index_record(args.index.guild, &args.index.model)? else {
        anyhow::bail!("guild {} has no index with model {}", args.index.guild, args.index.model);
    };
    if record.active && !args.force {
        anyhow::bail!(
            "{} is the active index of guild {}: activate another model first, or pass --force",
            args.index.model,
            args.index.guild
        );
    }
    let backend = settings.backend()?;
    backend.drop_collection(args.index.guild, &args.index.model).await?;
    store.forget_index(args.index.guild, &args.index.model)?;
    if json {
        out!(
            "{}",
            serde_json::json!({"guild_id": args.index.guild.to_string(), "model": args.index.model, "dropped": true})
        );
    } else {
        out!("dropped the {} index of guild {} ({} chunks)", args.index.model, args.index.guild, record.chunks);
    }
    Ok(exit::OK)
}
