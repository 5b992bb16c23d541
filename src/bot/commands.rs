//! The slash commands, and the one error handler that answers the user.
//!
//! In servers (Manage Server, declared with `default_member_permissions` and
//! checked again at run time from the member's permissions in the
//! interaction): `/load [channel]`, `/index [model]`, `/reindex model`.
//! In servers for everyone: `/status`. In DMs only: `/ask question [server]
//! [channel] [author] [after] [before] [answer]`, whose answer is written by
//! [`super::answers`].
//!
//! Long jobs answer at once, then keep one progress message up to date until
//! their summary (see [`super::jobs::Progress`]).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use poise::CreateReply;
use serenity::all::{ChannelId, CreateEmbed, CreateEmbedFooter};

use super::answers;
use super::format::{
    capitalize, discord_time, human_duration, no_such_server, question_too_long, redact, result_field, truncate,
    ANSWERS_BROKEN, ANSWERS_OFF,
};
use super::jobs::{self, JobKind, Progress};
use super::{Bot, BotOptions, Context, Error};
use crate::answer::check_question;
use crate::search::filters::{parse_date, FilterError, FilterRequest};
use crate::search::{Mode, Query, SearchError, Viewer};
use crate::store::LoadState;

/// Every command, with the configured cooldowns; `/ask`'s `answer` option
/// says whether answers are on (`answers`), and how to turn them on when not.
pub fn all(options: &BotOptions, answers: bool) -> Vec<poise::Command<Arc<Bot>, Error>> {
    let mut ask = ask();
    ask.cooldown_config.write().unwrap().user = Some(options.ask_cooldown).filter(|d| !d.is_zero());
    if let Some(p) = ask.parameters.iter_mut().find(|p| p.name == "answer") {
        // Discord's limit on an option's description: 100 characters.
        p.description = Some(
            if answers {
                "Also write a short answer from the results, citing them (default: yes)"
            } else {
                "Answers are off: the bot's operator turns them on (scripts/fetch-model.sh smollm2)"
            }
            .to_owned(),
        );
    }
    vec![load(), index(), reindex(), status(), ask]
}

/// Run-time half of the Manage Server requirement: Discord hides the
/// command from others (`default_member_permissions`), but server admins can
/// change that, so the member's permissions in this channel are checked too.
async fn manage_server(ctx: Context<'_>) -> Result<bool, Error> {
    let permissions = match ctx {
        poise::Context::Application(a) => a.interaction.member.as_ref().and_then(|m| m.permissions),
        poise::Context::Prefix(_) => None,
    };
    Ok(permissions.is_some_and(|p| p.manage_guild() || p.administrator()))
}

fn guild_of(ctx: &Context<'_>) -> anyhow::Result<u64> {
    ctx.guild_id().map(|g| g.get()).ok_or_else(|| anyhow::anyhow!("this command works in a server"))
}

fn interaction(ctx: &Context<'_>) -> anyhow::Result<serenity::all::CommandInteraction> {
    match ctx {
        poise::Context::Application(a) => Ok(a.interaction.clone()),
        poise::Context::Prefix(_) => anyhow::bail!("only slash commands are supported"),
    }
}

/// Says what already runs in this guild instead of starting twice.
async fn busy(ctx: Context<'_>, running: &jobs::JobInfo) -> Result<(), Error> {
    ctx.send(CreateReply::default().content(busy_text(running)).ephemeral(true)).await?;
    Ok(())
}

fn busy_text(running: &jobs::JobInfo) -> String {
    let status = running.status();
    format!(
        "{} of this server is already running (started {} ago{}). Try again when it has finished.",
        capitalize(running.kind.describe()),
        human_duration(running.started.elapsed()),
        if status.is_empty() { String::new() } else { format!("; {status}") }
    )
}

/// Takes the guild's job slot for a command, or says what runs there
/// (`None`). Live indexing gives way; when its run takes longer to stop
/// than Discord waits for an answer, the answer says so first, and its
/// handle comes back for [`announce`] to edit.
async fn claim<'a>(
    ctx: Context<'a>,
    guild: u64,
    kind: JobKind,
) -> Result<Option<(jobs::JobSlot, Option<poise::ReplyHandle<'a>>)>, Error> {
    let bot = ctx.data();
    let running = match bot.jobs.claim(guild, kind, jobs::ANSWER_WITHIN).await {
        Ok(slot) => return Ok(Some((slot, None))),
        Err(running) => running,
    };
    if running.kind != JobKind::Live {
        busy(ctx, &running).await?;
        return Ok(None);
    }
    let waiting = ctx.say("Waiting for the live index run to stop…").await?;
    match bot.jobs.claim(guild, kind, jobs::LIVE_STOPS_WITHIN).await {
        Ok(slot) => Ok(Some((slot, Some(waiting)))),
        Err(running) => {
            waiting.edit(ctx, CreateReply::default().content(busy_text(&running))).await?;
            Ok(None)
        }
    }
}

/// A command's first answer: said, or edited into the answer [`claim`] gave.
async fn announce(ctx: Context<'_>, answered: Option<poise::ReplyHandle<'_>>, text: String) -> Result<(), Error> {
    match answered {
        Some(reply) => reply.edit(ctx, CreateReply::default().content(text)).await?,
        None => {
            ctx.say(text).await?;
        }
    }
    Ok(())
}

/// Load this server's message history into the archive (or one channel's).
#[poise::command(slash_command, guild_only, default_member_permissions = "MANAGE_GUILD", check = "manage_server")]
pub async fn load(
    ctx: Context<'_>,
    #[description = "Only this channel or thread (default: every channel the bot can read)"] channel: Option<ChannelId>,
) -> Result<(), Error> {
    let guild = guild_of(&ctx)?;
    let bot = ctx.data().clone();
    let Some((slot, answered)) = claim(ctx, guild, JobKind::Load).await? else { return Ok(()) };
    let what = match channel {
        Some(c) => format!("<#{c}>"),
        None => "this server".to_owned(),
    };
    announce(ctx, answered, format!("Loading {what}: listing channels…")).await?;
    let progress = Progress::new(ctx.serenity_context().http.clone(), interaction(&ctx)?, bot.options.interaction_ttl);
    let session = bot.live.session();
    let channels: Vec<u64> = channel.map(|c| c.get()).into_iter().collect();
    let (b, info) = (bot.clone(), slot.info.clone());
    let run = async move { jobs::load(&b, guild, channels, session, &|line| info.set_status(line)).await };
    let title = format!("Loading {what}");
    jobs::spawn(bot.clone(), slot, progress, title, run, move |result, took| match result {
        Ok(s) => {
            let skipped = s.channels.iter().filter(|c| !c.outcome.is_ok() || c.reason.is_some()).count();
            let failed = s.channels.iter().filter(|c| !c.outcome.is_ok()).count();
            let mut t = format!(
                "Load finished in {}: {} channels, {} new messages, {} updated{}.",
                human_duration(took),
                s.channels.len(),
                s.new,
                s.updated,
                if skipped > 0 { format!(", {skipped} skipped (no access or gone)") } else { String::new() }
            );
            if failed > 0 || s.interrupted {
                t.push_str(&format!(" {failed} channels did not finish: run /load again to continue."));
            }
            if let Ok(Some(model)) = bot.store.active_model(guild) {
                t.push_str(&match bot.options.live_delay {
                    Some(_) => format!(" The index ({model}) takes them in now."),
                    None => format!(" The index ({model}) catches up within the hour, or now with /index."),
                });
            } else {
                t.push_str(" Next: /index to make it searchable.");
            }
            t
        }
        Err(e) => {
            tracing::error!(guild, error = %format!("{e:#}"), "load failed");
            format!("Load failed: {e:#}. Nothing stored is lost; run /load again to continue.")
        }
    });
    Ok(())
}

async fn autocomplete_model<'a>(ctx: Context<'_>, partial: &'a str) -> impl Stream<Item = String> + 'a {
    let mut names: Vec<String> = crate::embed::installed(&ctx.data().settings.index.models_dir)
        .into_iter()
        .filter(|(_, info)| info.is_ok())
        .map(|(name, _)| name)
        .collect();
    names.sort();
    let partial = partial.to_lowercase();
    futures::stream::iter(names).filter(move |n| futures::future::ready(n.to_lowercase().contains(&partial)))
}

/// Bring this server's search index up to date (or build one with another model).
#[poise::command(slash_command, guild_only, default_member_permissions = "MANAGE_GUILD", check = "manage_server")]
pub async fn index(
    ctx: Context<'_>,
    #[description = "Embedding model (default: the active one)"]
    #[autocomplete = "autocomplete_model"]
    model: Option<String>,
) -> Result<(), Error> {
    let guild = guild_of(&ctx)?;
    let model = match model {
        Some(m) => m,
        None => ctx
            .data()
            .store
            .call(move |s| s.active_model(guild))
            .await?
            .unwrap_or_else(|| ctx.data().settings.index.model.clone()),
    };
    run_index(ctx, guild, model, JobKind::Index).await
}

/// Build the index with another model beside the active one, and switch to it when complete.
#[poise::command(slash_command, guild_only, default_member_permissions = "MANAGE_GUILD", check = "manage_server")]
pub async fn reindex(
    ctx: Context<'_>,
    #[description = "Embedding model to switch to"]
    #[autocomplete = "autocomplete_model"]
    model: String,
) -> Result<(), Error> {
    let guild = guild_of(&ctx)?;
    run_index(ctx, guild, model, JobKind::Reindex).await
}

async fn run_index(ctx: Context<'_>, guild: u64, model: String, kind: JobKind) -> Result<(), Error> {
    let bot = ctx.data().clone();
    if !bot.store.call(move |s| s.has_guild(guild)).await? {
        ctx.say("Nothing of this server is archived yet: run /load first.").await?;
        return Ok(());
    }
    // A bad model name is a clear answer, not a job.
    if let Err(e) = crate::embed::ModelInfo::find(&bot.settings.index.models_dir, &model) {
        ctx.send(CreateReply::default().content(format!("Cannot use model {model}: {e}")).ephemeral(true)).await?;
        return Ok(());
    }
    let Some((slot, answered)) = claim(ctx, guild, kind).await? else { return Ok(()) };
    let previous = bot.store.call(move |s| s.active_model(guild)).await?;
    let activate = kind == JobKind::Reindex;
    let first = match (&previous, activate) {
        (Some(p), true) if *p != model => {
            format!("Building the index with {model} beside the active one ({p}); search switches when it is complete…")
        }
        _ => format!("Indexing with {model}…"),
    };
    announce(ctx, answered, first).await?;
    let progress = Progress::new(ctx.serenity_context().http.clone(), interaction(&ctx)?, bot.options.interaction_ttl);
    let (b, m, info) = (bot.clone(), model.clone(), slot.info.clone());
    let run = async move { jobs::index(&b, guild, &m, activate, &|line| info.set_status(line)).await };
    let title = format!("Indexing with {model}");
    jobs::spawn(bot, slot, progress, title, run, move |result, took| match result {
        Ok(s) => format!(
            "Index finished in {}: {} chunks embedded, {} unchanged, {} removed; {} chunks searchable with {}{}.",
            human_duration(took),
            s.embedded,
            s.unchanged,
            s.deleted,
            s.chunks,
            s.model,
            match (s.active, &previous) {
                (true, Some(p)) if *p != s.model => format!(" (switched from {p})"),
                (true, _) => " (active)".to_owned(),
                (false, Some(p)) => format!(" (not active: search uses {p}; /reindex switches)"),
                (false, None) => String::new(),
            }
        ),
        Err(e) => {
            tracing::error!(guild, error = %format!("{e:#}"), "index failed");
            format!("Indexing failed: {e:#}. Search still uses the previous index; run the command again to continue.")
        }
    });
    Ok(())
}

/// What is archived and indexed for this server, and any job in progress.
#[poise::command(slash_command, guild_only)]
pub async fn status(ctx: Context<'_>) -> Result<(), Error> {
    let guild = guild_of(&ctx)?;
    let bot = ctx.data();
    let mut lines = Vec::new();
    match bot.store.call(move |s| s.status(&[guild])).await?.into_iter().next() {
        None => lines.push("Nothing of this server is archived yet: /load starts.".to_owned()),
        Some(g) => {
            let state = |c: &crate::store::ChannelStatus| match c.state {
                LoadState::Checkpoint(s) => Some(s),
                _ => None,
            };
            let loaded = g.channels.iter().filter_map(state).filter(|s| s.is_loaded()).count();
            let skipped = g.channels.iter().filter_map(state).filter(|s| s.is_unreadable()).count();
            lines.push(format!(
                "**Archive**: {} messages in {loaded} channels and threads{}; last load {}.",
                g.messages,
                if skipped > 0 { format!(" ({skipped} not readable by the bot)") } else { String::new() },
                match (&g.last_load_at, &g.last_load_outcome) {
                    (Some(at), Some(outcome)) => format!("{} ({outcome})", discord_time(at)),
                    (Some(at), None) => discord_time(at),
                    _ => "never finished".to_owned(),
                }
            ));
            if let Some(newest) = g.channels.iter().filter_map(|c| c.loaded_at.clone()).max() {
                lines.push(format!("Newest checkpoint move: {}.", discord_time(&newest)));
            }
            if g.indexes.is_empty() {
                lines.push("**Index**: none yet: /index builds one.".to_owned());
            }
            for i in &g.indexes {
                // A building index counts its chunks only once complete.
                let what = match i.state {
                    crate::store::IndexState::Complete => format!("{} chunks, complete", i.chunks),
                    crate::store::IndexState::Building => "building (/index finishes it)".to_owned(),
                };
                lines.push(format!(
                    "**Index** {}{}: {what} ({}), updated {}.",
                    i.model,
                    if i.active { " (active)" } else { "" },
                    i.backend,
                    discord_time(&i.updated_at)
                ));
            }
        }
    }
    lines.push(live_line(bot.options.live_delay, bot.follow.stats(guild), bot.follow.unindexed(guild)));
    match bot.jobs.get(guild) {
        Some(job) => {
            let status = job.status();
            lines.push(format!(
                "**Running**: {} for {}{}.",
                job.kind.describe(),
                human_duration(job.started.elapsed()),
                if status.is_empty() { String::new() } else { format!(": {status}") }
            ));
        }
        None => lines.push("No job running.".to_owned()),
    }
    ctx.say(lines.join("\n")).await?;
    Ok(())
}

/// `/status`'s line on live indexing.
fn live_line(delay: Option<std::time::Duration>, s: super::follow::LiveStats, unindexed: u64) -> String {
    let Some(delay) = delay else {
        return "**Live indexing**: off: the index takes live changes at the next /index.".to_owned();
    };
    let mut line = format!("**Live indexing**: on, within about {} of a change", human_duration(delay));
    if s.changes > 0 {
        line.push_str(&format!(
            "; since the bot started: {} changes, {} runs ({:.1}s in all), {} chunks embedded ({} tokens a change), \
             {} points removed",
            s.changes,
            s.runs,
            s.run_seconds,
            s.chunks,
            s.tokens / s.changes.max(1),
            s.deleted
        ));
    }
    if unindexed > 0 {
        line.push_str(&format!("; {unindexed} changes not indexed yet"));
    }
    line.push('.');
    line
}

/// `/ask`'s `mode` option: the search modes, as a menu.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum AskMode {
    #[name = "hybrid"]
    Hybrid,
    #[name = "vector"]
    Vector,
    #[name = "keyword"]
    Keyword,
}

impl From<AskMode> for Mode {
    fn from(m: AskMode) -> Mode {
        match m {
            AskMode::Hybrid => Mode::Hybrid,
            AskMode::Vector => Mode::Vector,
            AskMode::Keyword => Mode::Keyword,
        }
    }
}

const NOTHING_MATCHES: &str = "Nothing you can read matches that.";

/// Search the servers you share with the bot; you only see what you may read there.
#[poise::command(slash_command, dm_only)]
#[allow(clippy::too_many_arguments)] // Each option of the command is an argument.
pub async fn ask(
    ctx: Context<'_>,
    #[description = "What to look for"] question: String,
    #[description = "Only this server (name or id)"] server: Option<String>,
    #[description = "Only this channel and its threads (name or id)"] channel: Option<String>,
    #[description = "Only messages by this user (name or id)"] author: Option<String>,
    #[description = "Only messages from this date on (2024-05-01)"] after: Option<String>,
    #[description = "Only messages before this date (2024-05-01)"] before: Option<String>,
    #[description = "Also write a short answer from the results, citing them"] answer: Option<bool>,
    #[description = "How to search: both ways (default), by meaning only, or by words only"] mode: Option<AskMode>,
) -> Result<(), Error> {
    let bot = ctx.data().clone();
    ctx.defer().await?;
    let indexed: Vec<(u64, String)> =
        bot.store.call(|s| s.active_indexes()).await?.into_iter().map(|a| (a.guild_id, a.guild_name)).collect();
    let guilds: Vec<u64> = match &server {
        None => indexed.iter().map(|(g, _)| *g).collect(),
        Some(s) => {
            let s = s.trim();
            let found: Vec<u64> = indexed
                .iter()
                .filter(|(g, name)| g.to_string() == s || name.eq_ignore_ascii_case(s))
                .map(|(g, _)| *g)
                .collect();
            if found.is_empty() {
                ctx.say(no_such_server(s)).await?;
                return Ok(());
            }
            found
        }
    };
    if guilds.is_empty() {
        ctx.say("Nothing is indexed yet, so there is nothing to search.").await?;
        return Ok(());
    }
    let date = |d: &Option<String>| d.as_deref().map(parse_date).transpose();
    let request = match (date(&after), date(&before)) {
        (Ok(after), Ok(before)) => FilterRequest {
            channels: channel.into_iter().collect(),
            authors: author.into_iter().collect(),
            after,
            before,
        },
        (Err(e), _) | (_, Err(e)) => {
            ctx.say(e).await?;
            return Ok(());
        }
    };
    let g = guilds.clone();
    let filters = match bot.store.call(move |s| Ok(request.resolve(s, &g))).await? {
        Ok(f) => f,
        // An unknown channel or user answers as one the person may not read
        // does: nothing tells them which names exist.
        Err(FilterError::NoChannel(_) | FilterError::NoUser(_)) => {
            ctx.say(NOTHING_MATCHES).await?;
            return Ok(());
        }
        Err(e) => {
            ctx.say(format!("{e}.")).await?;
            return Ok(());
        }
    };
    let query = Query {
        text: question.clone(),
        guilds,
        viewer: Viewer::User(ctx.author().id.get()),
        limit: bot.options.ask_results,
        mode: mode.map_or(Mode::Hybrid, Mode::from),
        filters,
    };
    let found = match bot.searcher.ask(&query).await {
        Ok(a) => a,
        Err(SearchError::EmptyQuestion) => {
            ctx.say("Ask a question with some words in it.").await?;
            return Ok(());
        }
        Err(e @ SearchError::Access(_)) => {
            tracing::warn!(error = %e, "permissions could not be determined for /ask");
            ctx.say("I could not check what you may read right now, so I show nothing. Please try again later.")
                .await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // Servers the person is not in say nothing about themselves, and notes
    // (which name servers and causes) stay in the log.
    if let Some(s) = &server {
        if found.searched.iter().all(|g| found.not_member.contains(g)) {
            ctx.say(no_such_server(s.trim())).await?;
            return Ok(());
        }
    }
    let left_out = found.notes.len() > found.not_member.len();
    if left_out {
        tracing::info!(user = %ctx.author().id, notes = ?found.notes, "/ask left something out");
    }
    const LEFT_OUT: &str = "Some servers or private threads could not be checked just now, so they were left out.";
    if found.results.is_empty() {
        let mut text = NOTHING_MATCHES.to_owned();
        if left_out {
            text.push_str(&format!("\n_{LEFT_OUT}_"));
        }
        ctx.say(text).await?;
        return Ok(());
    }
    let names: std::collections::HashMap<u64, String> = indexed.into_iter().collect();
    // Discord's limits: 256 per title and field name, 1024 per field value, 6000 per embed.
    let mut embed = CreateEmbed::new().title(truncate(&format!("Results for: {question}"), 200));
    for r in &found.results {
        let (name, value) = result_field(r, names.get(&r.guild_id).map(String::as_str), found.searched.len() > 1);
        embed = embed.field(name, value, false);
    }
    if left_out {
        embed = embed.footer(CreateEmbedFooter::new(LEFT_OUT));
    }
    // An answer, when asked for (by default, when the bot has a chat model).
    let note = match answer {
        Some(false) => None,
        None if !bot.answers.on() => None,
        Some(true) if !bot.answers.on() => {
            Some(if bot.answers.why_off().is_some() { ANSWERS_OFF } else { ANSWERS_BROKEN }.to_owned())
        }
        _ => match check_question(&question, bot.settings.answer.max_question_chars) {
            Err(_) => Some(question_too_long(question.trim().chars().count(), bot.settings.answer.max_question_chars)),
            Ok(()) => {
                let request = answers::Request {
                    http: ctx.serenity_context().http.clone(),
                    interaction: interaction(&ctx)?,
                    question,
                    results: found.results,
                    embed,
                };
                return answers::start(bot, request).await;
            }
        },
    };
    let mut reply = CreateReply::default().embed(embed);
    if let Some(note) = note {
        reply = reply.content(note);
    }
    ctx.send(reply).await?;
    Ok(())
}

/// Answers the user with what went wrong, and logs the detail.
pub async fn on_error(error: poise::FrameworkError<'_, Arc<Bot>, Error>) {
    use poise::FrameworkError as E;
    let (ctx, text) = match error {
        E::Command { error, ctx, .. } => {
            let detail = redact(&format!("{error:#}"));
            tracing::error!(command = %ctx.command().name, error = %detail, "command failed");
            // Server managers get the cause; people asking in DMs get no internals.
            let text = if ctx.guild_id().is_some() {
                format!("Sorry, /{} failed: {}.", ctx.command().name, redact(&error.to_string()))
            } else {
                format!("Sorry, /{} failed. The cause is in the bot's log; please try again later.", ctx.command().name)
            };
            (ctx, text)
        }
        E::DmOnly { ctx, .. } => (
            ctx,
            "/ask works in a direct message with me only: answers can quote channels that others here may not read."
                .to_owned(),
        ),
        E::GuildOnly { ctx, .. } => (ctx, format!("/{} works in a server, not in DMs.", ctx.command().name)),
        E::CommandCheckFailed { ctx, error, .. } => {
            if let Some(e) = error {
                tracing::warn!(error = %e, "command check failed");
            }
            (ctx, format!("/{} needs the Manage Server permission.", ctx.command().name))
        }
        E::MissingUserPermissions { ctx, .. } => {
            (ctx, format!("/{} needs the Manage Server permission.", ctx.command().name))
        }
        E::CooldownHit { ctx, remaining_cooldown, .. } => {
            (ctx, format!("Please wait {:.0}s before asking again.", remaining_cooldown.as_secs_f64().ceil()))
        }
        E::ArgumentParse { ctx, error, input, .. } => {
            tracing::warn!(error = %error, input = ?input, "bad command arguments");
            (ctx, format!("I could not read the options of /{}: {error}.", ctx.command().name))
        }
        other => {
            if let Err(e) = poise::builtins::on_error(other).await {
                tracing::error!(error = %e, "error while handling an error");
            }
            return;
        }
    };
    if let Err(e) = ctx.send(CreateReply::default().content(text).ephemeral(true)).await {
        tracing::error!(error = %redact(&e.to_string()), "could not tell the user about an error");
    }
}
