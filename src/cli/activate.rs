//! `discord-indexer activate`: choose which complete index search uses.

use super::exit;
use crate::config::Settings;
use crate::store::Store;

/// Make a guild's complete index for a model the one search uses (atomic switch).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_name = "ID")]
    pub guild: u64,
    #[arg(long)]
    pub model: String,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&settings.data_dir)?;
    let Some(record) = store.index_record(args.guild, &args.model)? else {
        anyhow::bail!(
            "guild {} has no index with model {}: run `discord-indexer index --guild {} --model {}`",
            args.guild,
            args.model,
            args.guild,
            args.model
        );
    };
    if record.state != "complete" {
        anyhow::bail!(
            "the {} index of guild {} is not complete yet: rerun `index` to finish it",
            args.model,
            args.guild
        );
    }
    super::backend(settings)?.activate(args.guild, &args.model).await?;
    store.activate_index(args.guild, &args.model)?;
    if json {
        println!("{}", serde_json::json!({"guild_id": args.guild.to_string(), "model": args.model, "active": true}));
    } else {
        println!("guild {} now searches with {}", args.guild, args.model);
    }
    Ok(exit::OK)
}
