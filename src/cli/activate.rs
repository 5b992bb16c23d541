//! `discord-indexer activate`: choose which complete index search uses.

use super::exit;
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
    let Some(record) = store.index_record(args.index.guild, &args.index.model)? else {
        anyhow::bail!(
            "guild {} has no index with model {}: run `discord-indexer index --guild {} --model {}`",
            args.index.guild,
            args.index.model,
            args.index.guild,
            args.index.model
        );
    };
    if record.state != "complete" {
        anyhow::bail!(
            "the {} index of guild {} is not complete yet: rerun `index` to finish it",
            args.index.model,
            args.index.guild
        );
    }
    super::backend(settings)?.activate(args.index.guild, &args.index.model).await?;
    store.activate_index(args.index.guild, &args.index.model)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"guild_id": args.index.guild.to_string(), "model": args.index.model, "active": true})
        );
    } else {
        println!("guild {} now searches with {}", args.index.guild, args.index.model);
    }
    Ok(exit::OK)
}
