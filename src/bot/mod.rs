//! The Discord bot: a thin layer over the same library functions the CLI
//! uses.
//!
//! - [`commands`]: the slash commands (`/load`, `/index`, `/reindex`,
//!   `/status` in servers; `/ask` in DMs) and the one error handler.
//! - [`format`]: the text they show (durations, Discord's limits, `/ask`
//!   result fields) and log text with interaction tokens redacted.
//! - [`jobs`]: one background job per guild, its progress message and ticker.
//! - [`capture`]: live capture of gateway events into the archive.
//! - [`checkpoints`]: the rules for when a live message may move its
//!   channel's checkpoint.
//! - [`schedule`]: what the bot runs on its own: the catch-up when a gateway
//!   session begins, loads of new channels, and the timers.
//!
//! The bot holds one [`Store`], one [`Searcher`] (models and collections stay
//! open between questions) and one rate-limited [`Client`] for loads. Serenity
//! speaks the gateway and answers interactions; with a non-default API base
//! (the loopback fake server) its HTTP goes through that base too.

pub mod capture;
pub mod checkpoints;
pub mod commands;
pub mod format;
pub mod jobs;
pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serenity::all::{ClientBuilder, GatewayIntents, GuildId, HttpBuilder};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::discord::{Client, DEFAULT_API_BASE};
use crate::search::Searcher;
use crate::store::Store;
use crate::vector::Backend;
use checkpoints::Live;
use jobs::Jobs;

/// How the bot runs.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// Register the commands in this guild only (instant; global registration
    /// can take a while to reach every client).
    pub dev_guild: Option<u64>,
    /// How often stage two catches up with live changes for guilds that have an active index.
    pub index_every: Duration,
    /// How often a progress message is edited.
    pub progress_every: Duration,
    /// Per-user wait between two `/ask`s.
    pub ask_cooldown: Duration,
    /// How long an interaction's response may be edited (Discord: 15 minutes);
    /// after that, progress continues in a channel message.
    pub interaction_ttl: Duration,
    /// Results per `/ask`.
    pub ask_results: usize,
}

impl Default for BotOptions {
    fn default() -> Self {
        BotOptions {
            dev_guild: None,
            index_every: Duration::from_secs(300),
            progress_every: Duration::from_secs(5),
            ask_cooldown: Duration::from_secs(5),
            // A margin under Discord's 15 minutes.
            interaction_ttl: Duration::from_secs(14 * 60),
            ask_results: 5,
        }
    }
}

/// What every command and event handler shares.
pub struct Bot {
    pub settings: Settings,
    pub options: BotOptions,
    pub store: Store,
    pub backend: Backend,
    pub client: Client,
    pub searcher: Searcher,
    pub jobs: Arc<Jobs>,
    pub live: Live,
    pub shutdown: CancellationToken,
    /// The bot's own user id, once the gateway said it.
    pub me: Mutex<Option<u64>>,
}

pub type Error = anyhow::Error;
pub type Context<'a> = poise::Context<'a, Arc<Bot>, Error>;

/// The gateway intents the bot needs: guilds (channels, threads), guild
/// messages and their content (live capture). Direct messages are not
/// requested: DMs are never stored; `/ask` arrives as an interaction.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT
}

/// Runs the bot until `shutdown` is cancelled or the gateway refuses it.
pub async fn run(settings: Settings, options: BotOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let token = settings.require_token()?;
    let store = Store::open(&settings.data_dir)?;
    let backend = settings.backend()?;
    let client = settings.client(token.clone())?;
    // Fail fast, with the loader's clear messages, on a bad token or an unreachable API.
    let me = client.current_user().await.context("cannot start the bot")?;
    tracing::info!(bot = %me.username, "token accepted");
    let searcher = Searcher::new(
        store.clone(),
        backend.clone(),
        settings.models_dir.clone(),
        Some(client.clone()),
        settings.search.clone(),
    );

    let mut http = HttpBuilder::new(token.expose());
    if settings.api_base.trim_end_matches('/') != DEFAULT_API_BASE {
        // Serenity's own rate limiter ignores a proxy; the bot's few REST
        // calls (interaction answers, progress edits) then go straight out.
        http = http.proxy(settings.api_base.trim_end_matches('/')).ratelimiter_disabled(true);
    }
    let http = http.build();

    let bot = Arc::new(Bot {
        settings,
        options: options.clone(),
        store,
        backend,
        client,
        searcher,
        jobs: Arc::default(),
        live: Live::default(),
        shutdown: shutdown.clone(),
        me: Mutex::new(Some(me.id)),
    });

    let data = bot.clone();
    let dev_guild = options.dev_guild;
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: commands::all(&options),
            on_error: |error| Box::pin(commands::on_error(error)),
            event_handler: |ctx, event, _framework, bot| Box::pin(capture::on_event(ctx, event, bot)),
            initialize_owners: false,
            ..Default::default()
        })
        .setup(move |ctx, _ready, framework| {
            Box::pin(async move {
                let commands = &framework.options().commands;
                let registered = match dev_guild {
                    Some(g) => poise::builtins::register_in_guild(ctx, commands, GuildId::new(g)).await,
                    None => poise::builtins::register_globally(ctx, commands).await,
                };
                // Not fatal: commands registered by an earlier run keep working,
                // and live capture does not need them.
                match registered {
                    Ok(()) => tracing::info!(guild = ?dev_guild, "slash commands registered"),
                    Err(e) => tracing::error!(
                        error = %format::redact(&e.to_string()),
                        "could not register the slash commands; those registered earlier still work"
                    ),
                }
                schedule::start_background(data.clone());
                Ok(data)
            })
        })
        .build();

    let mut client = ClientBuilder::new_with_http(http, intents())
        .framework(framework)
        .await
        .context("cannot build the Discord client")?;
    let shards = client.shard_manager.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        shards.shutdown_all().await;
    });
    let result = client.start().await;
    shutdown.cancel();
    result.map_err(|e| match e {
        serenity::Error::Gateway(serenity::gateway::GatewayError::InvalidAuthentication) => {
            anyhow::anyhow!("Discord refused the bot token on the gateway (close code 4004)")
        }
        serenity::Error::Gateway(serenity::gateway::GatewayError::DisallowedGatewayIntents) => anyhow::anyhow!(
            "Discord refused the gateway intents: enable \"Message Content Intent\" for the application \
             (Developer Portal → Bot → Privileged Gateway Intents)"
        ),
        e => anyhow::Error::new(e).context("the gateway connection failed"),
    })
}
