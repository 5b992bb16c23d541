//! The slash commands, and the one error handler that answers the user.
//!
//! In servers (Manage Server, declared with `default_member_permissions` and
//! checked again at run time from the member's permissions in the
//! interaction): `/load [channel]`, `/index [model]`, `/reindex model`.
//! In servers for everyone: `/status`. In DMs only: `/ask question [server]`.
//!
//! Long jobs answer at once, then keep one progress message up to date until
//! their summary (see [`super::jobs::Progress`]).

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use poise::CreateReply;
use serenity::all::{ChannelId, CreateEmbed, CreateEmbedFooter};

use super::jobs::{self, human_duration, JobKind, Progress};
use super::{Bot, BotOptions, Context, Error};
use crate::search::{Mode, Query, SearchError, SearchResult, Viewer};

/// Every command, with the configured cooldowns.
pub fn all(options: &BotOptions) -> Vec<poise::Command<Arc<Bot>, Error>> {
    let ask = ask();
    ask.cooldown_config.write().unwrap().user = Some(options.ask_cooldown).filter(|d| !d.is_zero());
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
    let status = running.status();
    ctx.send(
        CreateReply::default()
            .content(format!(
                "{} of this server is already running (started {} ago{}). Try again when it has finished.",
                capitalize(running.kind.describe()),
                human_duration(running.started.elapsed()),
                if status.is_empty() { String::new() } else { format!("; {status}") }
            ))
            .ephemeral(true),
    )
    .await?;
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Load this server's message history into the archive (or one channel's).
#[poise::command(slash_command, guild_only, default_member_permissions = "MANAGE_GUILD", check = "manage_server")]
pub async fn load(
    ctx: Context<'_>,
    #[description = "Only this channel or thread (default: every channel the bot can read)"] channel: Option<ChannelId>,
) -> Result<(), Error> {
    let guild = guild_of(&ctx)?;
    let bot = ctx.data().clone();
    let slot = match bot.jobs.start(guild, JobKind::Load) {
        Ok(slot) => slot,
        Err(running) => return busy(ctx, &running).await,
    };
    let what = match channel {
        Some(c) => format!("<#{c}>"),
        None => "this server".to_owned(),
    };
    ctx.say(format!("Loading {what}: listing channels…")).await?;
    let progress = Progress::new(ctx.serenity_context().http.clone(), interaction(&ctx)?, bot.options.interaction_ttl);
    let session = bot.live.session();
    let channels: Vec<u64> = channel.map(|c| c.get()).into_iter().collect();
    let (b, info) = (bot.clone(), slot.info.clone());
    let run = async move { jobs::load(&b, guild, channels, session, &|line| info.set_status(line)).await };
    let title = format!("Loading {what}");
    spawn_job(bot.clone(), slot, progress, title, run, move |result, took| match result {
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
                t.push_str(&format!(" The index ({model}) catches up within minutes, or now with /index."));
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

/// Runs a job in the background, holding the guild's slot: `run` to
/// completion while a separate task shows `title (elapsed): status` every
/// few seconds (so a slow edit never holds the job up), then the summary.
fn spawn_job<T: Send + 'static>(
    bot: Arc<Bot>,
    slot: jobs::JobSlot,
    progress: Progress,
    title: String,
    run: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    summary: impl FnOnce(anyhow::Result<T>, std::time::Duration) -> String + Send + 'static,
) {
    tokio::spawn(async move {
        let started = Instant::now();
        let progress = Arc::new(tokio::sync::Mutex::new(progress));
        let done = tokio_util::sync::CancellationToken::new();
        let ticker = {
            let (progress, done, info) = (progress.clone(), done.clone(), slot.info.clone());
            let every = bot.options.progress_every;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let line = info.status();
                    if !line.is_empty() {
                        let text = format!("{title} ({}): {line}", human_duration(started.elapsed()));
                        progress.lock().await.show(&text).await;
                    }
                }
            })
        };
        let result = {
            // Stops the ticker however `run` ends (a panic included).
            let _stop_ticker = done.clone().drop_guard();
            run.await
        };
        drop(slot);
        let _ = ticker.await;
        let text = summary(result, started.elapsed());
        progress.lock().await.show(&text).await;
    });
}

async fn autocomplete_model<'a>(ctx: Context<'_>, partial: &'a str) -> impl Stream<Item = String> + 'a {
    let mut names: Vec<String> = crate::embed::installed(&ctx.data().settings.models_dir)
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
        None => ctx.data().store.active_model(guild)?.unwrap_or_else(|| ctx.data().settings.model.clone()),
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
    if !bot.store.has_guild(guild)? {
        ctx.say("Nothing of this server is archived yet: run /load first.").await?;
        return Ok(());
    }
    // A bad model name is a clear answer, not a job.
    if let Err(e) = crate::embed::ModelInfo::find(&bot.settings.models_dir, &model) {
        ctx.send(CreateReply::default().content(format!("Cannot use model {model}: {e}")).ephemeral(true)).await?;
        return Ok(());
    }
    let slot = match bot.jobs.start(guild, kind) {
        Ok(slot) => slot,
        Err(running) => return busy(ctx, &running).await,
    };
    let previous = bot.store.active_model(guild)?;
    let activate = kind == JobKind::Reindex;
    ctx.say(match (&previous, activate) {
        (Some(p), true) if *p != model => {
            format!("Building the index with {model} beside the active one ({p}); search switches when it is complete…")
        }
        _ => format!("Indexing with {model}…"),
    })
    .await?;
    let progress = Progress::new(ctx.serenity_context().http.clone(), interaction(&ctx)?, bot.options.interaction_ttl);
    let (b, m, info) = (bot.clone(), model.clone(), slot.info.clone());
    let run = async move { jobs::index(&b, guild, &m, activate, &|line| info.set_status(line)).await };
    let title = format!("Indexing with {model}");
    spawn_job(bot, slot, progress, title, run, move |result, took| match result {
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
    match bot.store.status(&[guild])?.into_iter().next() {
        None => lines.push("Nothing of this server is archived yet: /load starts.".to_owned()),
        Some(g) => {
            let loaded = g.channels.iter().filter(|c| matches!(c.state.as_str(), "complete" | "partial")).count();
            let skipped = g.channels.iter().filter(|c| matches!(c.state.as_str(), "forbidden" | "gone")).count();
            lines.push(format!(
                "**Archive**: {} messages in {loaded} channels and threads{}; last load {}.",
                g.messages,
                if skipped > 0 { format!(" ({skipped} not readable by the bot)") } else { String::new() },
                match (&g.last_load_at, &g.last_load_outcome) {
                    (Some(at), Some(outcome)) => format!("{at} ({outcome})"),
                    (Some(at), None) => at.clone(),
                    _ => "never finished".to_owned(),
                }
            ));
            if let Some(newest) = g.channels.iter().filter_map(|c| c.loaded_at.clone()).max() {
                lines.push(format!("Newest checkpoint move: {newest}."));
            }
            if g.indexes.is_empty() {
                lines.push("**Index**: none yet: /index builds one.".to_owned());
            }
            for i in &g.indexes {
                lines.push(format!(
                    "**Index** {}{}: {} chunks, {} ({}), updated {}.",
                    i.model,
                    if i.active { " (active)" } else { "" },
                    i.chunks,
                    i.state,
                    i.backend,
                    i.updated_at
                ));
            }
        }
    }
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

/// Search the servers you share with the bot; you only see what you may read there.
#[poise::command(slash_command, dm_only)]
pub async fn ask(
    ctx: Context<'_>,
    #[description = "What to look for"] question: String,
    #[description = "Only this server (name or id)"] server: Option<String>,
) -> Result<(), Error> {
    let bot = ctx.data().clone();
    ctx.defer().await?;
    let indexed: Vec<(u64, String)> = {
        let active: Vec<u64> =
            bot.store.index_records(None)?.into_iter().filter(|r| r.active).map(|r| r.guild_id).collect();
        bot.store.guilds()?.into_iter().filter(|(g, _, _)| active.contains(g)).map(|(g, name, _)| (g, name)).collect()
    };
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
    let query = Query {
        text: question.clone(),
        guilds,
        viewer: Viewer::User(ctx.author().id.get()),
        limit: bot.options.ask_results,
        mode: Mode::Hybrid,
    };
    let answer = match bot.searcher.ask(&query).await {
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
        if answer.searched.iter().all(|g| answer.not_member.contains(g)) {
            ctx.say(no_such_server(s.trim())).await?;
            return Ok(());
        }
    }
    let left_out = answer.notes.len() > answer.not_member.len();
    if left_out {
        tracing::info!(user = %ctx.author().id, notes = ?answer.notes, "/ask left something out");
    }
    const LEFT_OUT: &str = "Some servers or private threads could not be checked just now, so they were left out.";
    if answer.results.is_empty() {
        let mut text = "Nothing you can read matches that.".to_owned();
        if left_out {
            text.push_str(&format!("\n_{LEFT_OUT}_"));
        }
        ctx.say(text).await?;
        return Ok(());
    }
    let names: std::collections::HashMap<u64, String> = indexed.into_iter().collect();
    // Discord's limits: 256 per title and field name, 1024 per field value, 6000 per embed.
    let mut embed = CreateEmbed::new().title(truncate(&format!("Results for: {question}"), 200));
    for r in &answer.results {
        let (name, value) = result_field(r, names.get(&r.guild_id).map(String::as_str), answer.searched.len() > 1);
        embed = embed.field(name, value, false);
    }
    if left_out {
        embed = embed.footer(CreateEmbedFooter::new(LEFT_OUT));
    }
    ctx.send(CreateReply::default().embed(embed)).await?;
    Ok(())
}

/// The same answer for a server that is not indexed and one the person is not in.
fn no_such_server(name: &str) -> String {
    format!("No indexed server you are in is called {}.", truncate(name, 100))
}

/// One result as an embed field: where and who in the name; snippet and link in the value.
fn result_field(r: &SearchResult, guild_name: Option<&str>, show_guild: bool) -> (String, String) {
    let place = if r.is_thread { format!("🧵 {}", r.channel_name) } else { format!("#{}", r.channel_name) };
    let when = chrono::DateTime::parse_from_rfc3339(&r.start)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| r.start.clone());
    let mut name = format!("{place} · {} · {when}", r.authors.join(", "));
    if show_guild {
        if let Some(g) = guild_name {
            name = format!("{g} · {name}");
        }
    }
    let link = format!("\n[Jump to the conversation]({})", r.jump_url);
    let value = format!("{}{link}", truncate(&r.text, 900 - link.chars().count()));
    (truncate(&name, 200), value)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Answers the user with what went wrong, and logs the detail.
pub async fn on_error(error: poise::FrameworkError<'_, Arc<Bot>, Error>) {
    use poise::FrameworkError as E;
    let (ctx, text) = match error {
        E::Command { error, ctx, .. } => {
            let detail = super::jobs::redact(&format!("{error:#}"));
            tracing::error!(command = %ctx.command().name, error = %detail, "command failed");
            // Server managers get the cause; people asking in DMs get no internals.
            let text = if ctx.guild_id().is_some() {
                format!("Sorry, /{} failed: {}.", ctx.command().name, super::jobs::redact(&error.to_string()))
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
        tracing::error!(error = %super::jobs::redact(&e.to_string()), "could not tell the user about an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_to_discord_limits() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(2000), 1000);
        assert_eq!(t.chars().count(), 1000);
        assert!(t.ends_with('…'));
        assert_eq!(capitalize("a load"), "A load");
    }
}
