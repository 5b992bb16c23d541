//! `discord-indexer bot`: run the Discord bot.

use std::time::Duration;

use super::{exit, shutdown_on_signal};
use crate::bot::{self, BotOptions};
use crate::config::Settings;

/// Run the bot: slash commands for loads, indexes and status in servers,
/// `/ask` in DMs, and live capture of new, edited and deleted messages,
/// which the active index follows within seconds.
///
/// Token from DISCORD_TOKEN, API base from DISCORD_API_BASE (as for `load`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Register the commands in this guild only (instant; for development).
    /// Without it they are registered globally.
    #[arg(long, value_name = "ID", value_parser = super::discord_id)]
    pub dev_guild: Option<u64>,
    /// Seconds between stage-two catch-ups of guilds with an active index
    /// (a safety net: live indexing follows changes within seconds).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub index_every: u64,
    /// Milliseconds from a live change (a message posted, edited or deleted)
    /// to the run of stage two that indexes it (64 changes start one at
    /// once); 0 turns live indexing off, leaving the timer and /index.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub live_delay: u64,
    /// Seconds between edits of a job's progress message.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub progress_every: u64,
    /// Seconds a user waits between two /ask.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub ask_cooldown: u64,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<u8> {
    let options = BotOptions {
        dev_guild: args.dev_guild,
        index_every: Duration::from_secs(args.index_every.max(1)),
        live_delay: (args.live_delay > 0).then(|| Duration::from_millis(args.live_delay)),
        progress_every: Duration::from_secs(args.progress_every.max(1)),
        ask_cooldown: Duration::from_secs(args.ask_cooldown),
        ..BotOptions::default()
    };
    // Returns when Ctrl-C/SIGTERM stopped it; a refused token or intent is an error.
    bot::run(
        settings.clone(),
        options,
        shutdown_on_signal("stopping the bot: finishing the jobs in flight (Ctrl-C again to quit at once)"),
    )
    .await?;
    Ok(exit::OK)
}
