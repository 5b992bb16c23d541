//! The Discord bot: a thin layer over the same library functions the CLI
//! uses.
//!
//! - [`commands`]: the slash commands (`/load`, `/index`, `/reindex`,
//!   `/status` in servers; `/ask` in DMs) and the one error handler.
//! - [`answers`]: `/ask`'s answer, written by the chat model from the
//!   results shown: one at a time, in a fair line, stoppable, within limits.
//! - [`format`]: the text they show (durations, Discord's limits, `/ask`
//!   result fields and answer states) and log text with interaction tokens
//!   redacted.
//! - [`jobs`]: one background job per guild, its progress message and ticker.
//! - [`capture`]: live capture of gateway events into the archive.
//! - [`checkpoints`]: the rules for when a live message may move its
//!   channel's checkpoint.
//! - [`schedule`]: what the bot runs on its own: the catch-up when a gateway
//!   session begins, loads of new channels, and the timers.
//! - [`follow`]: live indexing: stage two following live changes within
//!   seconds.
//!
//! The bot holds one [`Store`], one [`Searcher`] (models and collections stay
//! open between questions), one rate-limited [`Client`] for loads, and the
//! chat model for answers when it has one ([`answers::Answers`], loaded in
//! the background at start). Serenity
//! speaks the gateway and answers interactions; with a non-default API base
//! (the loopback fake server) its HTTP goes through that base too.

pub mod answers;
pub mod capture;
pub mod checkpoints;
pub mod commands;
pub mod follow;
pub mod format;
pub mod jobs;
pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serenity::all::{
    ClientBuilder, FullEvent, GatewayError, GatewayIntents, GuildId, HttpBuilder, HttpError, Interaction,
};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::discord::{Client, DEFAULT_API_BASE};
use crate::search::Searcher;
use crate::store::Store;
use crate::vector::Backend;
use answers::Answers;
use checkpoints::Live;
use jobs::Jobs;

/// How the bot runs.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// Register the commands in this guild only (instant; global registration
    /// can take a while to reach every client).
    pub dev_guild: Option<u64>,
    /// How often stage two catches up with every change for guilds that
    /// have an active index (a safety net under live indexing).
    pub index_every: Duration,
    /// How long after a live change its guild's active index takes it
    /// ([`follow`]); None: live changes wait for the timer or `/index`.
    pub live_delay: Option<Duration>,
    /// How often a progress message is edited.
    pub progress_every: Duration,
    /// Per-user wait between two `/ask`s.
    pub ask_cooldown: Duration,
    /// How long an interaction's response may be edited (Discord: 15 minutes);
    /// after that, progress continues in a channel message.
    pub interaction_ttl: Duration,
    /// Results per `/ask`.
    pub ask_results: usize,
    /// How often a message is edited while its answer is written (the text so far).
    pub answer_edit_every: Duration,
}

impl Default for BotOptions {
    fn default() -> Self {
        BotOptions {
            dev_guild: None,
            index_every: Duration::from_secs(3600),
            live_delay: Some(Duration::from_secs(1)),
            progress_every: Duration::from_secs(5),
            ask_cooldown: Duration::from_secs(5),
            // A margin under Discord's 15 minutes.
            interaction_ttl: Duration::from_secs(14 * 60),
            ask_results: 5,
            answer_edit_every: Duration::from_secs(1),
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
    /// The chat model for `/ask`'s answers, and their line.
    pub answers: Arc<Answers>,
    pub live: Live,
    /// Live changes waiting for stage two, and what live indexing did.
    pub follow: follow::Follow,
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
    let me = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        me = client.current_user() => me.context("cannot start the bot")?,
    };
    tracing::info!(bot = %me.username, "token accepted");
    let searcher = Searcher::new(
        store.clone(),
        backend.clone(),
        settings.index.models_dir.clone(),
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
    // Serenity retries a gateway that refuses it forever, every 5 s, and logs
    // Discord's answer as bytes; a stop cannot end its retries either. So the
    // bot first makes sure the gateway would take a connection.
    let Some(gateway_url) = reach_gateway(&http, &shutdown).await? else {
        return Ok(());
    };

    let answers = Arc::new(Answers::new(&settings));
    match answers.why_off() {
        None => answers.preload(&settings),
        Some(why) => tracing::info!("/ask answers are off: {why}"),
    }
    let answers_on = answers.on();
    let bot = Arc::new(Bot {
        settings,
        options: options.clone(),
        store,
        backend,
        client,
        searcher,
        jobs: Arc::default(),
        answers,
        live: Live::default(),
        follow: Default::default(),
        shutdown: shutdown.clone(),
        me: Mutex::new(Some(me.id)),
    });

    let data = bot.clone();
    let dev_guild = options.dev_guild;
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: commands::all(&options, answers_on),
            on_error: |error| Box::pin(commands::on_error(error)),
            event_handler: |ctx, event, _framework, bot| Box::pin(on_event(ctx, event, bot)),
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
                follow::start(data.clone());
                Ok(data)
            })
        })
        .build();

    let mut client = ClientBuilder::new_with_http(http, intents())
        .framework(framework)
        .await
        .context("cannot build the Discord client")?;
    // The URL that answered, whatever serenity's own `GET /gateway` got (on
    // an error it falls back to Discord's, whatever the API base).
    *client.ws_url.lock().await = gateway_url;
    let shards = client.shard_manager.clone();
    let result = tokio::select! {
        result = client.start() => result,
        () = shutdown.cancelled() => {
            // Stops the running shard. A shard that cannot reconnect only
            // waits in serenity's retry queue, which this does not reach, and
            // `start` would not return: it is dropped instead.
            shards.shutdown_all().await;
            Ok(())
        }
    };
    shutdown.cancel();
    result.map_err(|e| match e {
        serenity::Error::Gateway(GatewayError::InvalidAuthentication) => {
            anyhow::anyhow!("Discord refused the bot token on the gateway (close code 4004)")
        }
        serenity::Error::Gateway(GatewayError::DisallowedGatewayIntents) => anyhow::anyhow!(
            "Discord refused the gateway intents: enable \"Message Content Intent\" for the application \
             (Developer Portal → Bot → Privileged Gateway Intents)"
        ),
        serenity::Error::Gateway(GatewayError::InvalidGatewayIntents) => {
            anyhow::anyhow!("Discord refused the gateway intents as invalid (close code 4013)")
        }
        e => anyhow::Error::new(e).context("the gateway connection failed"),
    })
}

/// The framework's event handler: a button press goes to [`answers`] (the
/// only buttons are Stop on answers), the rest to live capture.
async fn on_event(ctx: &serenity::all::Context, event: &FullEvent, bot: &Arc<Bot>) -> Result<(), Error> {
    if let FullEvent::InteractionCreate { interaction: Interaction::Component(press) } = event {
        answers::on_component(ctx, press, bot).await;
        return Ok(());
    }
    capture::on_event(ctx, event, bot).await
}

/// Longest pause between two tries to reach the gateway.
const GATEWAY_RETRY_CAP: Duration = Duration::from_secs(60);
/// How long one try may take (a request, or a WebSocket handshake).
const GATEWAY_TRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a try to reach the gateway failed, in words.
#[derive(Debug)]
enum GatewayTrouble {
    /// Discord answered, and would answer the same again (a 4xx): stop.
    Refused(String),
    /// Worth another try (no connection, a timeout, a 5xx, a 429), after at
    /// least the wait Discord asked for, if it did.
    Transient(String, Option<Duration>),
}

/// Waits until the gateway would take a connection: `GET /gateway/bot`
/// answers, and the WebSocket handshake at its URL succeeds. Returns that URL,
/// or `None` when `shutdown` fired first. A refusal for good is an error in
/// Discord's words; a transient failure is said once per try and tried
/// again, 1 s later, then 2 s, 4 s, ... up to a minute.
async fn reach_gateway(http: &serenity::http::Http, shutdown: &CancellationToken) -> anyhow::Result<Option<String>> {
    let probe = reqwest::Client::builder()
        .timeout(GATEWAY_TRY_TIMEOUT)
        .build()
        .context("cannot build the gateway's HTTP client")?;
    let mut delay = Duration::from_secs(1);
    for attempt in 1u32.. {
        let tried = async {
            let url = match tokio::time::timeout(GATEWAY_TRY_TIMEOUT, http.get_bot_gateway()).await {
                Ok(answer) => answer.map_err(gateway_bot_trouble)?.url,
                Err(_) => return Err(GatewayTrouble::Transient("GET /gateway/bot timed out".into(), None)),
            };
            probe_gateway(&probe, &url).await?;
            Ok(url)
        };
        let tried = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            tried = tried => tried,
        };
        let (why, asked) = match tried {
            Ok(url) => {
                if attempt > 1 {
                    tracing::warn!("reached Discord's gateway after {attempt} tries");
                }
                return Ok(Some(url));
            }
            Err(GatewayTrouble::Refused(why)) => anyhow::bail!("Discord's gateway refused the bot: {why}"),
            Err(GatewayTrouble::Transient(why, asked)) => (why, asked),
        };
        let wait = delay.max(asked.unwrap_or_default());
        tracing::warn!("cannot connect to Discord's gateway: {why}; retrying in {} s (try {attempt})", wait.as_secs());
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(GATEWAY_RETRY_CAP);
    }
    unreachable!("the tries are counted in a u32")
}

/// An HTTP status Discord would answer again: a client error, but a rate
/// limit (429) or a request timeout (408).
fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

fn gateway_bot_trouble(e: serenity::Error) -> GatewayTrouble {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            let why = format!("GET /gateway/bot answered {}: {}", r.status_code, r.error.message);
            if refused_for_good(r.status_code.as_u16()) {
                GatewayTrouble::Refused(why)
            } else {
                GatewayTrouble::Transient(why, None)
            }
        }
        e => GatewayTrouble::Transient(format!("GET /gateway/bot failed: {}", causes(&e)), None),
    }
}

/// Opens a WebSocket handshake at the gateway's `url` as serenity will
/// (`{url}?v=10`) and closes it at once: a 101 is success; any other answer
/// is read as Discord's words (its JSON `message`, or the text).
async fn probe_gateway(client: &reqwest::Client, url: &str) -> Result<(), GatewayTrouble> {
    use reqwest::header::{CONNECTION, RETRY_AFTER, UPGRADE};
    let target = format!("{url}?v={}", serenity::constants::GATEWAY_VERSION);
    let target = match (target.strip_prefix("wss://"), target.strip_prefix("ws://")) {
        (Some(rest), _) => format!("https://{rest}"),
        (None, Some(rest)) => format!("http://{rest}"),
        _ => return Err(GatewayTrouble::Refused(format!("the gateway URL {url} is not a ws:// or wss:// URL"))),
    };
    let response = client
        .get(&target)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .map_err(|e| GatewayTrouble::Transient(format!("no connection to {url}: {}", causes(&e)), None))?;
    let status = response.status();
    if status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    let asked = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    let body = response.text().await.unwrap_or_default();
    let why = match discord_words(&body) {
        Some(words) => format!("{url} answered {status}: {words}"),
        None => format!("{url} answered {status}"),
    };
    if refused_for_good(status.as_u16()) {
        Err(GatewayTrouble::Refused(why))
    } else {
        Err(GatewayTrouble::Transient(why, asked))
    }
}

/// What an error body says: Discord's JSON `message`, or else the text
/// itself on one line, shortened (an HTML page from a proxy says little more).
fn discord_words(body: &str) -> Option<String> {
    let json = serde_json::from_str::<serde_json::Value>(body).ok();
    if let Some(message) = json.as_ref().and_then(|v| v["message"].as_str()) {
        return Some(message.trim().to_owned()).filter(|m| !m.is_empty());
    }
    let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.chars().count() {
        0 => None,
        n if n <= 200 => Some(text),
        _ => Some(text.chars().take(200).chain("…".chars()).collect()),
    }
}

/// An error and its sources on one line (a connection error's reason is in its sources).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
