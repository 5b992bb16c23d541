//! `discord-indexer drop-index`: remove one model's collection of a guild.

use super::exit;
use crate::config::Settings;
use crate::store::Store;

/// Delete a guild's collection for a model (not the active one unless --force).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_name = "ID")]
    pub guild: u64,
    #[arg(long)]
    pub model: String,
    /// Also drop the active index (search then has nothing for the guild).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&settings.data_dir)?;
    let Some(record) = store.index_record(args.guild, &args.model)? else {
        anyhow::bail!("guild {} has no index with model {}", args.guild, args.model);
    };
    if record.active && !args.force {
        anyhow::bail!(
            "{} is the active index of guild {}: activate another model first, or pass --force",
            args.model,
            args.guild
        );
    }
    let backend = super::backend(settings)?;
    backend.drop_collection(args.guild, &args.model).await?;
    store.forget_index(args.guild, &args.model)?;
    if json {
        println!("{}", serde_json::json!({"guild_id": args.guild.to_string(), "model": args.model, "dropped": true}));
    } else {
        println!("dropped the {} index of guild {} ({} chunks)", args.model, args.guild, record.chunks);
    }
    Ok(exit::OK)
}
