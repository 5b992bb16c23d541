//! Stage one: load every readable channel, thread and forum post of the
//! requested guilds into the archive, oldest first, resumably.
//!
//! For each channel the loader pages `GET /channels/{id}/messages?after=<checkpoint>&limit=100`,
//! sorts each page by id (Discord sends pages newest first, also with `after`)
//! and hands it to [`Store::write_page`], which stores the messages and moves
//! the checkpoint in one transaction. A killed run therefore resumes exactly
//! after the last page that landed. Channels load concurrently; the Discord
//! client keeps every request inside the rate limits.
//!
//! Progress is reported as [`LoadEvent`]s to a callback, so the CLI's progress
//! bar and the bot's progress message are two views of the same run.

mod discover;
pub mod files;
mod settings;

use std::sync::Mutex;
use std::time::Instant;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::discord::model::{channel_type, message_type, Message, Raw};
use crate::discord::ratelimit::StatsSnapshot;
use crate::discord::{ApiError, Client, PAGE_SIZE};
use crate::permissions::GuildPermissions;
use crate::snowflake;
use crate::store::{ChannelState, GuildFacts, PageCounts, Store, StoreError};
pub use discover::ChannelToLoad;
pub use settings::{LoadSection, LoadSettings};

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Guilds to load entirely (or, with `channels`, to look the channels up in).
    pub guilds: Vec<u64>,
    /// Only these channels or threads; empty = every readable one.
    pub channels: Vec<u64>,
    /// Channels loaded at the same time.
    pub concurrency: usize,
}

/// A stage-one progress event.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoadEvent {
    /// A guild's channels were listed: `channels` will be loaded, `skipped` may not be read.
    Discovered { guild_id: u64, guild: String, channels: usize, skipped: usize },
    /// A page was stored. `from` is where this run started in the channel
    /// (its checkpoint, else the channel's own id, i.e. its creation) and
    /// `newest` the newest message Discord named for it, when it did: with
    /// them a view can tell how far through the channel the run is.
    Page { channel_id: u64, new: u64, updated: u64, last_message_id: u64, from: u64, newest: Option<u64> },
    /// A channel is done (in whatever way).
    ChannelDone(ChannelReport),
}

/// How a channel's load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// All history is stored.
    Complete,
    /// Nothing new since the last run (no request needed, or one empty page).
    UpToDate,
    /// The bot may not read it (skipped; not an error).
    Forbidden,
    /// Discord no longer knows it (skipped; not an error).
    Gone,
    /// It failed after retries; a rerun continues from the checkpoint.
    Failed,
    /// The run was stopped before it finished; a rerun continues.
    Interrupted,
}

impl Outcome {
    /// Whether this outcome leaves nothing to do.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Complete | Outcome::UpToDate | Outcome::Forbidden | Outcome::Gone)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelReport {
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub guild_id: u64,
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub channel_id: u64,
    pub name: String,
    pub kind: &'static str,
    #[serde(serialize_with = "snowflake::serialize_opt_id")]
    pub parent_id: Option<u64>,
    pub outcome: Outcome,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Messages stored for the first time in this run.
    pub new: u64,
    /// Stored messages replaced by a later edit.
    pub updated: u64,
    /// Messages that came back already stored and unchanged.
    pub already_present: u64,
    /// Message pages fetched.
    pub pages: u64,
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub last_message_id: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GuildReport {
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub guild_id: u64,
    pub name: Option<String>,
    /// Why the guild could not be loaded at all.
    pub error: Option<String>,
    /// Things discovery could not list.
    pub notes: Vec<String>,
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadSummary {
    pub ok: bool,
    pub interrupted: bool,
    pub guilds: Vec<GuildReport>,
    pub channels: Vec<ChannelReport>,
    pub new: u64,
    pub updated: u64,
    pub seconds: f64,
    pub requests: StatsSnapshot,
    /// Attachment files, when the run fetched them ([`files::fetch_files`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<files::FileSummary>,
    /// The run's record in the archive (`load_runs`), for [`fetch_files`].
    #[serde(skip)]
    pub run: i64,
}

impl LoadSummary {
    /// What `status` shows of the run: `interrupted`, `ok` or `partial`.
    fn outcome(&self) -> &'static str {
        if self.interrupted {
            "interrupted"
        } else if self.ok {
            "ok"
        } else {
            "partial"
        }
    }
}

/// The attachment-file stage of a finished load ([`files::fetch_files`]) for
/// the guilds it listed: the summary takes its result, and the run's record
/// is written again, so `status` counts a run whose files failed as partial
/// (or failed), never ok. Nothing happens after an interrupted load, or with
/// `AttachmentMode::None`.
pub async fn fetch_files(
    client: &Client,
    store: &Store,
    summary: &mut LoadSummary,
    options: &files::FileOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<(), LoadError> {
    if summary.interrupted || options.mode == files::AttachmentMode::None {
        return Ok(());
    }
    let guilds: Vec<u64> = summary.guilds.iter().filter(|g| g.error.is_none()).map(|g| g.guild_id).collect();
    let fetched = match files::fetch_files(client, store, &guilds, options, progress, shutdown).await {
        Ok(fetched) => fetched,
        Err(e) => {
            let detail = serde_json::json!({"error": format!("attachment files: {e}")}).to_string();
            let _ = store.finish_run(summary.run, "failed", &detail);
            return Err(e);
        }
    };
    summary.interrupted |= shutdown.is_cancelled();
    summary.ok &= fetched.ok() && !summary.interrupted;
    summary.files = Some(fetched);
    store.finish_run(summary.run, summary.outcome(), &serde_json::to_string(&summary).expect("summary serializes"))?;
    Ok(())
}

/// Why a run stopped as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the bot does not have the MESSAGE_CONTENT intent, so Discord sends messages without their text; \
         enable \"Message Content Intent\" for the application (Developer Portal → Bot → Privileged Gateway Intents) and rerun. \
         {0}"
    )]
    MissingIntent(String),
    #[error("nothing to load: give at least one --guild or --channel")]
    NothingRequested,
    #[error("channel {0} is not in any of the requested guilds")]
    UnknownChannel(u64),
    /// Attachment files could not be written (disk full, permissions).
    #[error("{0}")]
    Files(String),
}

/// Runs stage one. Returns `Err` only for failures that stop the whole run
/// (a bad token, a ban, an unusable store, a missing intent); per-channel
/// failures are in the summary. Stops cleanly when `shutdown` is cancelled:
/// the page being written lands with its checkpoint, nothing else is written.
pub async fn load(
    client: &Client,
    store: &Store,
    options: &LoadOptions,
    progress: &(dyn Fn(LoadEvent) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<LoadSummary, LoadError> {
    let started = Instant::now();
    let me = client.current_user().await?;
    let app = client.current_application().await?;
    if !app.has_message_content_intent() {
        return Err(LoadError::MissingIntent("Nothing was loaded.".into()));
    }
    let mut guild_ids = options.guilds.clone();
    for &channel in &options.channels {
        if guild_ids.is_empty() {
            // A channel alone names its guild.
            match client.channel(channel).await {
                Ok(c) => guild_ids.extend(c.value.guild_id),
                Err(ApiError::NotFound { .. }) | Err(ApiError::Forbidden { .. }) => {
                    return Err(LoadError::UnknownChannel(channel))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    guild_ids.sort_unstable();
    guild_ids.dedup();
    if guild_ids.is_empty() {
        return Err(LoadError::NothingRequested);
    }

    let mut guilds = Vec::new();
    let mut targets = Vec::new();
    for &guild_id in &guild_ids {
        let mut report = GuildReport { guild_id, name: None, error: None, notes: Vec::new() };
        match discover_guild(client, store, me.id, guild_id, &options.channels, &mut report).await {
            Ok(found) => {
                let found: Vec<ChannelToLoad> = found
                    .into_iter()
                    .filter(|t| options.channels.is_empty() || options.channels.contains(&t.channel_id))
                    .collect();
                let skipped = found.iter().filter(|t| t.forbidden.is_some()).count();
                progress(LoadEvent::Discovered {
                    guild_id,
                    guild: report.name.clone().unwrap_or_default(),
                    channels: found.len() - skipped,
                    skipped,
                });
                targets.extend(found);
            }
            Err(LoadError::Api(e)) if !e.is_fatal() => report.error = Some(guild_error(&e)),
            Err(e) => return Err(e),
        }
        guilds.push(report);
    }
    for &channel in &options.channels {
        if !targets.iter().any(|t| t.channel_id == channel) && guilds.iter().all(|g| g.error.is_none()) {
            return Err(LoadError::UnknownChannel(channel));
        }
    }

    let run = store.start_run(&guild_ids)?;
    let fatal: Mutex<Option<LoadError>> = Mutex::new(None);
    let stop = shutdown.child_token();
    let ctx = Ctx { client, store, progress, stop: &stop, fatal: &fatal };
    let reports: Vec<ChannelReport> = futures::stream::iter(targets)
        .map(|t| ctx.load_channel(t))
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    if let Some(e) = fatal.into_inner().unwrap() {
        let _ = store.finish_run(run, "failed", &serde_json::json!({"error": e.to_string()}).to_string());
        return Err(e);
    }
    let interrupted = shutdown.is_cancelled();
    let mut summary = LoadSummary {
        ok: false,
        interrupted,
        new: reports.iter().map(|r| r.new).sum(),
        updated: reports.iter().map(|r| r.updated).sum(),
        guilds,
        channels: reports,
        seconds: started.elapsed().as_secs_f64(),
        requests: client.stats(),
        files: None,
        run,
    };
    summary.ok = !interrupted
        && summary.guilds.iter().all(|g| g.error.is_none())
        && summary.channels.iter().all(|c| c.outcome.is_ok());
    store.finish_run(run, summary.outcome(), &serde_json::to_string(&summary).expect("summary serializes"))?;
    Ok(summary)
}

fn guild_error(e: &ApiError) -> String {
    match e {
        ApiError::NotFound { .. } => "unknown guild, or the bot is not a member of it".into(),
        ApiError::Forbidden { .. } => format!("the bot may not read this guild ({e})"),
        other => other.to_string(),
    }
}

async fn discover_guild(
    client: &Client,
    store: &Store,
    bot: u64,
    guild_id: u64,
    wanted: &[u64],
    report: &mut GuildReport,
) -> Result<Vec<ChannelToLoad>, LoadError> {
    let guild = client.guild(guild_id).await?;
    report.name = Some(guild.value.name.clone());
    let member = client.guild_member(guild_id, bot).await?;
    let perms = GuildPermissions {
        guild_id,
        owner_id: guild.value.owner_id,
        roles: guild.value.roles.iter().map(|r| (r.value.id, r.value.permissions)).collect(),
    };
    let found = discover::discover(client, &perms, bot, &member.roles, wanted).await?;
    report.notes = found.notes;
    let channels = found.channels;
    let unseen = store
        .call(move |s| {
            s.record_guild(&GuildFacts { guild: &guild, channels: &channels, bot_member: Some((bot, &member.roles)) })?;
            s.export_only_channels(guild_id)
        })
        .await?;
    if !unseen.is_empty() {
        let names: Vec<String> =
            unseen.iter().map(|(id, name)| format!("#{} ({id})", name.as_deref().unwrap_or("?"))).collect();
        report.notes.push(format!(
            "{} imported channel(s) are not visible to the bot (deleted, or not readable); their imported history \
             is kept, shown to the operator only: {}",
            unseen.len(),
            names.join(", ")
        ));
    }
    Ok(found.targets)
}

struct Ctx<'a> {
    client: &'a Client,
    store: &'a Store,
    progress: &'a (dyn Fn(LoadEvent) + Send + Sync),
    stop: &'a CancellationToken,
    fatal: &'a Mutex<Option<LoadError>>,
}

/// A page of ordinary messages by people, all blank, means the intent is
/// missing (or was revoked mid-run). Fewer than this many is not evidence.
const BLANK_PAGE_EVIDENCE: usize = 10;

impl Ctx<'_> {
    fn fail(&self, e: LoadError) {
        self.fatal.lock().unwrap().get_or_insert(e);
        self.stop.cancel();
    }

    async fn load_channel(&self, t: ChannelToLoad) -> ChannelReport {
        let mut report = ChannelReport {
            guild_id: t.guild_id,
            channel_id: t.channel_id,
            name: t.name.clone(),
            kind: channel_type::name(t.kind),
            parent_id: t.parent_id,
            outcome: Outcome::Interrupted,
            reason: None,
            new: 0,
            updated: 0,
            already_present: 0,
            pages: 0,
            last_message_id: 0,
        };
        let result = self.page_through(&t, &mut report).await;
        let state = match result {
            Ok(outcome) => {
                report.outcome = outcome;
                match outcome {
                    Outcome::Complete | Outcome::UpToDate => Some(ChannelState::Complete),
                    _ => None,
                }
            }
            Err(e) => {
                let (outcome, state) = match &e {
                    LoadError::Api(ApiError::Forbidden { .. }) => (Outcome::Forbidden, ChannelState::Forbidden),
                    LoadError::Api(ApiError::NotFound { .. }) => (Outcome::Gone, ChannelState::Gone),
                    _ => (Outcome::Failed, ChannelState::Failed),
                };
                report.outcome = outcome;
                report.reason = Some(e.to_string());
                let fatal = match &e {
                    LoadError::Api(api) => api.is_fatal(),
                    _ => true,
                };
                if fatal {
                    self.fail(e);
                    None
                } else {
                    Some(state)
                }
            }
        };
        if let Some(state) = state {
            let reason = report.reason.clone();
            let (g, c) = (t.guild_id, t.channel_id);
            if let Err(e) = self.store.call(move |s| s.mark_channel(g, c, state, reason.as_deref())).await {
                self.fail(e.into());
            }
        }
        (self.progress)(LoadEvent::ChannelDone(report.clone()));
        report
    }

    /// Pages one channel from its checkpoint to the end.
    async fn page_through(&self, t: &ChannelToLoad, report: &mut ChannelReport) -> Result<Outcome, LoadError> {
        if let Some(reason) = &t.forbidden {
            report.reason = Some(reason.clone());
            let (g, c, r) = (t.guild_id, t.channel_id, reason.clone());
            self.store.call(move |s| s.mark_channel(g, c, ChannelState::Forbidden, Some(&r))).await?;
            return Ok(Outcome::Forbidden);
        }
        let id = t.channel_id;
        let checkpoint = self.store.call(move |s| s.checkpoint(id)).await?;
        let mut after = checkpoint.as_ref().map_or(0, |c| c.last_message_id);
        report.last_message_id = after;
        // The channel object names its newest message: nothing newer, nothing to ask.
        if checkpoint.is_some() && t.last_message_id.is_some_and(|last| last <= after) {
            return Ok(Outcome::UpToDate);
        }
        let from = if after == 0 { t.channel_id } else { after };
        loop {
            if self.stop.is_cancelled() {
                return Ok(Outcome::Interrupted);
            }
            let page = tokio::select! {
                _ = self.stop.cancelled() => return Ok(Outcome::Interrupted),
                page = self.client.messages_after(t.channel_id, after, PAGE_SIZE) => page?,
            };
            report.pages += 1;
            let full = page.len() >= PAGE_SIZE as usize;
            let page = oldest_first(page, after);
            if page.is_empty() {
                return Ok(if report.new + report.updated + report.already_present == 0 {
                    Outcome::UpToDate
                } else {
                    Outcome::Complete
                });
            }
            check_not_blank(t, &page)?;
            let last = page.last().map_or(after, |m| m.value.id);
            // A short page is the end; so is reaching the newest message the
            // channel listing named (saves asking for an empty page).
            let end = !full || t.last_message_id.is_some_and(|newest| last >= newest);
            let (g, c) = (t.guild_id, t.channel_id);
            // Once fetched, a page is written even if a stop arrives meanwhile:
            // it lands with its checkpoint, whole.
            let counts: PageCounts = self.store.call(move |s| s.write_page(g, c, &page, end)).await?;
            report.new += counts.new;
            report.updated += counts.updated;
            report.already_present += counts.unchanged;
            report.last_message_id = last;
            after = last;
            (self.progress)(LoadEvent::Page {
                channel_id: t.channel_id,
                new: counts.new,
                updated: counts.updated,
                last_message_id: last,
                from,
                newest: t.last_message_id,
            });
            if end {
                return Ok(Outcome::Complete);
            }
        }
    }
}

/// How far through a channel's history a run is, from 0 to 1: the time of
/// the last stored message between the run's start and the newest message.
pub fn channel_fraction(from: u64, last: u64, newest: Option<u64>) -> f64 {
    let Some(newest) = newest else { return 0.0 };
    let ms = |id: u64| snowflake::timestamp(id).timestamp_millis() as f64;
    let span = ms(newest) - ms(from);
    if span <= 0.0 {
        return 1.0;
    }
    ((ms(last) - ms(from)) / span).clamp(0.0, 1.0)
}

/// Puts a page in id order and drops anything at or before `after` or repeated.
fn oldest_first(mut page: Vec<Raw<Message>>, after: u64) -> Vec<Raw<Message>> {
    page.retain(|m| m.value.id > after);
    page.sort_unstable_by_key(|m| m.value.id);
    page.dedup_by_key(|m| m.value.id);
    page
}

fn check_not_blank(t: &ChannelToLoad, page: &[Raw<Message>]) -> Result<(), LoadError> {
    let ordinary: Vec<&Message> = page
        .iter()
        .map(|m| &m.value)
        .filter(|m| !m.author.bot && m.webhook_id.is_none() && message_type::is_typed(m.kind))
        .collect();
    if ordinary.len() >= BLANK_PAGE_EVIDENCE && ordinary.iter().all(|m| m.is_blank()) {
        return Err(LoadError::MissingIntent(format!(
            "A page of {} messages in #{} ({}) came back without any content; it was not stored.",
            ordinary.len(),
            t.name,
            t.channel_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: u64) -> Raw<Message> {
        serde_json::from_value(serde_json::json!({
            "id": id.to_string(), "channel_id": "1", "content": "x", "timestamp": "2024-01-01T00:00:00+00:00",
            "author": {"id": "2", "username": "u"}
        }))
        .unwrap()
    }

    #[test]
    fn a_channel_fraction_is_time_through_its_history() {
        let at = |ms: i64| snowflake::from_timestamp(chrono::DateTime::from_timestamp_millis(ms).unwrap());
        let (from, newest) = (at(1_600_000_000_000), at(1_600_000_100_000));
        assert_eq!(channel_fraction(from, from, Some(newest)), 0.0);
        assert!((channel_fraction(from, at(1_600_000_025_000), Some(newest)) - 0.25).abs() < 1e-6);
        assert_eq!(channel_fraction(from, newest + 5, Some(newest)), 1.0);
        // Nothing named by Discord: no fraction to claim; a newest at the start is done.
        assert_eq!(channel_fraction(from, newest, None), 0.0);
        assert_eq!(channel_fraction(newest, newest, Some(from)), 1.0);
    }

    #[test]
    fn pages_are_put_oldest_first_without_repeats() {
        let page = vec![raw(30), raw(20), raw(20), raw(10), raw(5)];
        let ids: Vec<u64> = oldest_first(page, 5).iter().map(|m| m.value.id).collect();
        assert_eq!(ids, vec![10, 20, 30]);
    }

    #[test]
    fn a_blank_page_of_human_messages_means_no_intent() {
        let t = ChannelToLoad {
            guild_id: 1,
            channel_id: 1,
            name: "g".into(),
            kind: 0,
            parent_id: None,
            last_message_id: None,
            forbidden: None,
        };
        let blank = |id: u64| -> Raw<Message> {
            let mut m = raw(id);
            m.value.content.clear();
            m
        };
        let page: Vec<_> = (1..=12).map(blank).collect();
        assert!(matches!(check_not_blank(&t, &page), Err(LoadError::MissingIntent(_))));
        let mut page: Vec<_> = (1..=12).map(blank).collect();
        page.push(raw(13));
        assert!(check_not_blank(&t, &page).is_ok());
        let few: Vec<_> = (1..=3).map(blank).collect();
        assert!(check_not_blank(&t, &few).is_ok());
    }
}
