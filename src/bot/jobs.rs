//! Background jobs the bot runs for a guild (a load, an index, a catch-up),
//! at most one per guild at a time, and the progress message that reports on
//! one.
//!
//! A slash command's own response can be edited through its interaction
//! token for 15 minutes only. [`Progress`] edits that response while the
//! token is young and then continues in an ordinary channel message (which
//! the bot may edit for ever), saying so in the original response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serenity::all::{
    ChannelId, CommandInteraction, CreateMessage, EditInteractionResponse, EditMessage, Http, MessageId,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::format::redact;
use super::Bot;
use crate::index::{IndexEvent, IndexSummary};
use crate::load::{LoadEvent, LoadOptions, LoadSummary, Outcome};

/// What kind of job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Load,
    Index,
    Reindex,
    CatchUp,
    NewChannels,
    /// Stage two following live changes ([`super::follow`]): gives way to
    /// any other job ([`Jobs::claim`]).
    Live,
}

impl JobKind {
    pub fn describe(self) -> &'static str {
        match self {
            JobKind::Load => "a load",
            JobKind::Index => "an index update",
            JobKind::Reindex => "a re-index",
            JobKind::CatchUp => "a catch-up load",
            JobKind::NewChannels => "a load of new channels",
            JobKind::Live => "live indexing",
        }
    }
}

/// A running job: what it is, since when, and its latest progress line.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub kind: JobKind,
    pub started: Instant,
    status: Arc<Mutex<String>>,
    /// Stops the job, for one that gives way to others.
    pub stop: Option<CancellationToken>,
}

impl JobInfo {
    /// The latest progress line ("" before the first).
    pub fn status(&self) -> String {
        self.status.lock().unwrap().clone()
    }

    pub fn set_status(&self, line: String) {
        *self.status.lock().unwrap() = line;
    }
}

/// The jobs running now, by guild.
#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<u64, JobInfo>>,
    /// Guilds where a [`Jobs::claim`] waits for a live run to stop, and how
    /// many: no new live run starts there meanwhile.
    claiming: Mutex<HashMap<u64, (JobKind, usize)>>,
    /// A slot was freed.
    freed: Notify,
}

/// Holds a guild's job slot; frees it when dropped.
pub struct JobSlot {
    jobs: Arc<Jobs>,
    guild: u64,
    pub info: JobInfo,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        self.jobs.running.lock().unwrap().remove(&self.guild);
        self.jobs.freed.notify_waiters();
    }
}

/// Marks a guild as claimed while a [`Jobs::claim`] waits.
struct Claiming<'a> {
    jobs: &'a Jobs,
    guild: u64,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        let mut claiming = self.jobs.claiming.lock().unwrap();
        if let Some((_, n)) = claiming.get_mut(&self.guild) {
            *n -= 1;
            if *n == 0 {
                claiming.remove(&self.guild);
            }
        }
    }
}

impl JobSlot {
    pub fn set_status(&self, line: String) {
        self.info.set_status(line);
    }
}

/// How long a command waits for a live run to stop before it answers (it
/// stops at once while embedding, after the write in progress otherwise):
/// within the 3 seconds Discord gives a command to answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// How long anyone waits for a live run that was told to stop: it stops
/// after the step in progress, so only a stuck store takes this long.
pub const LIVE_STOPS_WITHIN: Duration = Duration::from_secs(300);

impl Jobs {
    /// Takes the guild's slot, or says what already runs there.
    pub fn start(self: &Arc<Self>, guild: u64, kind: JobKind) -> Result<JobSlot, JobInfo> {
        self.start_with(guild, kind, None)
    }

    /// [`Jobs::start`] for a job that others may stop ([`JobInfo::stop`]):
    /// its token is a child of `parent`.
    pub fn start_stoppable(
        self: &Arc<Self>,
        guild: u64,
        kind: JobKind,
        parent: &CancellationToken,
    ) -> Result<JobSlot, JobInfo> {
        self.start_with(guild, kind, Some(parent.child_token()))
    }

    fn start_with(
        self: &Arc<Self>,
        guild: u64,
        kind: JobKind,
        stop: Option<CancellationToken>,
    ) -> Result<JobSlot, JobInfo> {
        let mut running = self.running.lock().unwrap();
        if let Some(existing) = running.get(&guild) {
            return Err(existing.clone());
        }
        if kind == JobKind::Live {
            if let Some(&(claimer, _)) = self.claiming.lock().unwrap().get(&guild) {
                // A command waits for the slot: it comes first.
                return Err(JobInfo { kind: claimer, started: Instant::now(), status: Arc::default(), stop: None });
            }
        }
        let info = JobInfo { kind, started: Instant::now(), status: Arc::default(), stop };
        running.insert(guild, info.clone());
        Ok(JobSlot { jobs: self.clone(), guild, info })
    }

    /// Takes the guild's slot for a job someone asked for: a live run there
    /// is stopped and waited for, up to `patience` (its changes wait for the
    /// next run, or are taken by this job), and no new live run starts while
    /// this waits; any other job is said at once. After `patience`, the live
    /// run is said, and it stays told to stop.
    pub async fn claim(self: &Arc<Self>, guild: u64, kind: JobKind, patience: Duration) -> Result<JobSlot, JobInfo> {
        let deadline = tokio::time::Instant::now() + patience;
        let _claiming = {
            let mut claiming = self.claiming.lock().unwrap();
            claiming.entry(guild).or_insert((kind, 0)).1 += 1;
            Claiming { jobs: self, guild }
        };
        loop {
            // Registered before the slot is tried, so that a slot freed in
            // between still wakes this.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.start(guild, kind) {
                Err(info) if info.kind == JobKind::Live && tokio::time::Instant::now() < deadline => {
                    if let Some(stop) = &info.stop {
                        stop.cancel();
                    }
                    let _ = tokio::time::timeout_at(deadline, freed).await;
                }
                result => return result,
            }
        }
    }

    pub fn get(&self, guild: u64) -> Option<JobInfo> {
        self.running.lock().unwrap().get(&guild).cloned()
    }
}

/// One progress message for a long job started by a slash command.
pub struct Progress {
    http: Arc<Http>,
    interaction: CommandInteraction,
    answered: Instant,
    /// How long the interaction token may be used to edit the response.
    token_ttl: Duration,
    continued: Option<(ChannelId, MessageId)>,
}

impl Progress {
    /// Call it right after answering the interaction: the token's clock starts then.
    pub fn new(http: Arc<Http>, interaction: CommandInteraction, token_ttl: Duration) -> Self {
        Progress { http, interaction, answered: Instant::now(), token_ttl, continued: None }
    }

    /// Shows `text` as the job's current state.
    pub async fn show(&mut self, text: &str) {
        if let Err(e) = self.try_show(text).await {
            tracing::warn!(error = %redact(&e.to_string()), "could not update the progress message");
        }
    }

    async fn try_show(&mut self, text: &str) -> serenity::Result<()> {
        if self.continued.is_none() && self.answered.elapsed() < self.token_ttl {
            self.interaction.edit_response(&self.http, EditInteractionResponse::new().content(text)).await?;
            return Ok(());
        }
        match self.continued {
            Some((channel, message)) => {
                channel.edit_message(&self.http, message, EditMessage::new().content(text)).await?;
            }
            None => {
                let channel = self.interaction.channel_id;
                let message = channel.send_message(&self.http, CreateMessage::new().content(text)).await?;
                self.continued = Some((channel, message.id));
                // The token may already be dead; this is a courtesy.
                let note = format!(
                    "This job runs longer than an interaction can be updated: progress continues in {}.",
                    message.link()
                );
                let _ = self.interaction.edit_response(&self.http, EditInteractionResponse::new().content(note)).await;
            }
        }
        Ok(())
    }
}

/// Stage one for a guild (or some of its channels), as the CLI runs it.
/// Channels it finishes count as caught up for live capture if the gateway
/// session is still `session`. `status` gets a progress line now and then.
pub async fn load(
    bot: &Bot,
    guild: u64,
    channels: Vec<u64>,
    session: u64,
    status: &(dyn Fn(String) + Send + Sync),
) -> anyhow::Result<LoadSummary> {
    let options = LoadOptions { guilds: vec![guild], channels, concurrency: bot.settings.load.concurrency };
    let started = Instant::now();
    let counts = Mutex::new((0usize, 0usize, 0u64)); // channels total, done, new messages
    let on_event = |e: LoadEvent| {
        let mut c = counts.lock().unwrap();
        match e {
            LoadEvent::Discovered { channels, .. } => c.0 += channels,
            LoadEvent::Page { new, .. } => c.2 += new,
            LoadEvent::ChannelDone(report) => {
                c.1 += 1;
                let complete = matches!(report.outcome, Outcome::Complete | Outcome::UpToDate);
                bot.live.loaded(session, started, report.channel_id, complete);
            }
        }
        let rate = c.2 as f64 / started.elapsed().as_secs_f64().max(0.001);
        status(format!("{}/{} channels, {} new messages ({rate:.0}/s)", c.1, c.0, c.2));
    };
    let result = crate::load::load(&bot.client, &bot.store, &options, &on_event, &bot.shutdown).await;
    // What the load stored, the active index takes next (live indexing).
    let stored = match &result {
        Ok(s) => s.new + s.updated,
        Err(_) => counts.lock().unwrap().2,
    };
    if stored > 0 {
        bot.follow.changed(guild, stored);
    }
    let mut summary = result?;
    // Then the attachment files, as the CLI fetches them.
    let on_files = |done: u64, total: u64| status(format!("attachment files: {done}/{total}"));
    crate::load::fetch_files(&bot.client, &bot.store, &mut summary, &bot.settings.load.files, &on_files, &bot.shutdown)
        .await?;
    Ok(summary)
}

/// Stage two for a guild with a model: incremental, as the CLI runs it;
/// `activate` makes the model the guild's active one when the index is
/// complete.
pub async fn index(
    bot: &Bot,
    guild: u64,
    model: &str,
    activate: bool,
    status: &(dyn Fn(String) + Send + Sync),
) -> anyhow::Result<IndexSummary> {
    index_until(bot, guild, model, activate, status, &bot.shutdown).await
}

/// [`index`], stopped by `stop` (a child of the bot's shutdown, or it).
pub async fn index_until(
    bot: &Bot,
    guild: u64,
    model: &str,
    activate: bool,
    status: &(dyn Fn(String) + Send + Sync),
    stop: &CancellationToken,
) -> anyhow::Result<IndexSummary> {
    // The searcher's copy: one model in memory for questions and indexing.
    let embedder = bot.searcher.model(model).await?;
    let mut options = bot.settings.index.options(guild);
    options.activate = activate || bot.store.call(move |s| s.active_model(guild)).await?.is_none();
    let started = Instant::now();
    let tally = Mutex::new(crate::index::Tally::default());
    let on_event = |e: IndexEvent| {
        let mut t = tally.lock().unwrap();
        t.update(&e);
        match e {
            IndexEvent::Planned { channels, messages, resumed } => {
                let resuming =
                    if resumed > 0 { format!("resuming: {resumed} chunks already stored; ") } else { String::new() };
                status(format!("{resuming}{channels} changed channels, about {messages} messages to read"));
            }
            IndexEvent::Progress { .. } => {
                let rate = t.done as f64 / started.elapsed().as_secs_f64().max(0.001);
                status(format!(
                    "{}/{} messages embedded ({rate:.0}/s), {} chunks, {} removed",
                    t.done,
                    t.total(),
                    t.embedded,
                    t.deleted
                ));
            }
        }
    };
    // The searcher's open collections are the same shards (one per directory
    // per process), so it sees the new points without reopening.
    Ok(crate::index::index(&bot.store, &bot.backend, embedder, &options, &on_event, stop).await?)
}

/// Runs a job in the background, holding the guild's slot: `run` to
/// completion while a separate task shows `title (elapsed): status` every
/// few seconds (so a slow edit never holds the job up), then the summary.
pub fn spawn<T: Send + 'static>(
    bot: Arc<Bot>,
    slot: JobSlot,
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
                        let text = format!("{title} ({}): {line}", super::format::human_duration(started.elapsed()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_guild() {
        let jobs = Arc::new(Jobs::default());
        let slot = jobs.start(1, JobKind::Load).unwrap();
        let Err(busy) = jobs.start(1, JobKind::Index) else { panic!("a second job started") };
        assert_eq!(busy.kind, JobKind::Load);
        assert!(jobs.start(2, JobKind::Index).is_ok(), "other guilds are free");
        slot.set_status("3/10 channels".into());
        assert_eq!(jobs.get(1).unwrap().status(), "3/10 channels");
        drop(slot);
        assert!(jobs.get(1).is_none());
        assert!(jobs.start(1, JobKind::Index).is_ok());
    }

    #[tokio::test]
    async fn a_claim_stops_a_live_run_and_waits_for_its_slot_but_not_for_other_jobs() {
        let jobs = Arc::new(Jobs::default());
        let shutdown = CancellationToken::new();
        let live = jobs.start_stoppable(1, JobKind::Live, &shutdown).unwrap();
        let stop = live.info.stop.clone().unwrap();
        // The live run notices its stop and lets go of the slot.
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(live);
        });
        let slot = jobs.claim(1, JobKind::Reindex, ANSWER_WITHIN).await.expect("the live run gives way");
        assert_eq!(jobs.get(1).unwrap().kind, JobKind::Reindex);
        assert!(!shutdown.is_cancelled(), "only the live run was stopped");

        let Err(busy) = jobs.claim(1, JobKind::Load, ANSWER_WITHIN).await else {
            panic!("a command's job was taken over")
        };
        assert_eq!(busy.kind, JobKind::Reindex);
        drop(slot);
    }

    #[tokio::test]
    async fn no_live_run_starts_while_a_claim_waits_and_a_slow_stop_is_waited_for() {
        let jobs = Arc::new(Jobs::default());
        let shutdown = CancellationToken::new();
        let live = jobs.start_stoppable(1, JobKind::Live, &shutdown).unwrap();
        let stop = live.info.stop.clone().unwrap();
        // A run that ends only well after it was told to stop (a long write).
        let (seen, mut saw) = tokio::sync::oneshot::channel();
        let blocked = jobs.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(live);
            // The slot is free, but the claim waits for it: a new live run
            // cannot take it first.
            let again = blocked.start_stoppable(1, JobKind::Live, &CancellationToken::new()).map(|_| ());
            let _ = seen.send(again.map_err(|i| i.kind));
        });
        let slot = jobs.claim(1, JobKind::Index, Duration::from_secs(60)).await.expect("the live run gives way");
        assert_eq!(jobs.get(1).unwrap().kind, JobKind::Index);
        let again = tokio::time::timeout(Duration::from_secs(5), &mut saw).await.unwrap().unwrap();
        assert_eq!(again, Err(JobKind::Index), "the waiting claim came first");
        drop(slot);
        assert!(jobs.claiming.lock().unwrap().is_empty(), "the claim is forgotten");
        assert!(jobs.start_stoppable(1, JobKind::Live, &shutdown).is_ok(), "live runs start again");

        // A claim with too little patience says the live run, which stays told to stop.
        let live = jobs.start_stoppable(2, JobKind::Live, &shutdown).unwrap();
        let Err(running) = jobs.claim(2, JobKind::Load, Duration::from_millis(50)).await else {
            panic!("the slot was taken from a run that had not stopped")
        };
        assert_eq!(running.kind, JobKind::Live);
        assert!(live.info.stop.as_ref().unwrap().is_cancelled());
    }
}
