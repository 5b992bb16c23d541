//! Live capture: gateway events into the archive, kept consistent with the
//! checkpoints stage one keeps.
//!
//! - MESSAGE_CREATE and MESSAGE_UPDATE in loaded channels (those with a
//!   checkpoint) are stored as the rows a load writes (an edit replaces the
//!   stored copy only if it is newer). MESSAGE_DELETE removes the message and
//!   leaves a tombstone, so stage two drops it and a late MESSAGE_CREATE for
//!   it (the handlers run concurrently) cannot bring it back. Direct messages
//!   and the bot's own messages are never stored live. Reactions an edit
//!   event does not carry are kept. The `raw` column holds the event as
//!   serenity re-serialises it (fields serenity does not model are missing
//!   until a later edit is loaded).
//! - THREAD_CREATE and CHANNEL_CREATE in a loaded guild queue the new
//!   channel for a load, which picks it up with its first messages.
//! - Every new gateway session (READY, not RESUMED) starts a catch-up load of
//!   every loaded guild: events from before the session may be lost, so the
//!   gap since each checkpoint is filled by stage one before live events are
//!   relied on.
//!
//! A channel's checkpoint says "everything up to here is stored". A live
//! message may move it only when a load caught the channel up in the current
//! session, so nothing before it is missing. Serenity runs event handlers
//! concurrently, so a later message can be stored before an earlier one: the
//! checkpoint moves later, to the newest message stored at least [`SETTLE`]
//! ago, and only while no handler for that channel is running. A failed write
//! takes the channel out of the caught-up set (its checkpoint then waits for
//! the next load). A crash in between only means the next catch-up reads
//! those messages again.
//!
//! Stage two follows on a timer (and on `/index`): see [`start_background`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use serenity::all::FullEvent;

use super::jobs::{self, JobKind};
use super::Bot;
use crate::discord::model::{channel_type, Message, Raw};
use crate::load::Outcome;

/// How long after a live message was stored its channel's checkpoint may move to it.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What live capture knows about the current gateway session.
#[derive(Default)]
pub struct Live {
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    /// Gateway sessions begun (READY events).
    session: u64,
    /// Channels a load caught up during the current session.
    caught_up: HashSet<u64>,
    /// Live messages stored in caught-up channels: (channel, id, when stored).
    pending: Vec<(u64, u64, Instant)>,
    /// Event handlers writing to a channel right now.
    writing: HashMap<u64, usize>,
    /// New channels waiting for a load, per guild.
    new_channels: HashMap<u64, HashSet<u64>>,
    /// When a live message of a channel was last lost (a failed write, an
    /// unreadable event, a channel not loaded yet): a load that began before
    /// that cannot vouch for the channel.
    tainted: HashMap<u64, Instant>,
}

impl Live {
    pub fn session(&self) -> u64 {
        self.state.lock().unwrap().session
    }

    /// A load that began in `session` at `started` finished this channel,
    /// completely (`complete`: every message up to now is stored) or not.
    pub fn loaded(&self, session: u64, started: Instant, channel: u64, complete: bool) {
        let mut s = self.state.lock().unwrap();
        let tainted = s.tainted.get(&channel).is_some_and(|t| *t >= started);
        if complete && !tainted && s.session == session {
            s.caught_up.insert(channel);
        } else {
            s.caught_up.remove(&channel);
            s.pending.retain(|p| p.0 != channel);
        }
    }

    pub fn is_caught_up(&self, channel: u64) -> bool {
        self.state.lock().unwrap().caught_up.contains(&channel)
    }

    /// A live message of this channel was not stored: only a load that
    /// begins after now may vouch for the channel again.
    fn taint(&self, channel: u64) {
        let mut s = self.state.lock().unwrap();
        s.tainted.insert(channel, Instant::now());
        s.caught_up.remove(&channel);
        s.pending.retain(|p| p.0 != channel);
    }

    fn new_session(&self) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.session += 1;
        s.caught_up.clear();
        s.pending.clear();
        s.tainted.clear();
        // Loads queued in the old session are dropped; the catch-up covers them.
        s.new_channels.clear();
        s.session
    }

    fn begin_write(&self, channel: u64) {
        *self.state.lock().unwrap().writing.entry(channel).or_default() += 1;
    }

    /// Ends a handler's write: `Ok(Some(id))` stored a message, `Ok(None)`
    /// stored nothing that matters (an edit), `Err` lost one.
    fn end_write(&self, channel: u64, stored: Result<Option<u64>, ()>) {
        {
            let mut s = self.state.lock().unwrap();
            if let Some(n) = s.writing.get_mut(&channel) {
                *n -= 1;
                if *n == 0 {
                    s.writing.remove(&channel);
                }
            }
            if let Ok(Some(id)) = stored {
                if s.caught_up.contains(&channel) {
                    s.pending.push((channel, id, Instant::now()));
                }
            }
        }
        if stored.is_err() {
            self.taint(channel);
        }
    }

    /// Channel → newest settled message id, taken off the pending list.
    fn settled(&self, now: Instant) -> HashMap<u64, u64> {
        let mut s = self.state.lock().unwrap();
        let LiveState { pending, caught_up, writing, .. } = &mut *s;
        let mut out = HashMap::new();
        pending.retain(|&(channel, id, at)| {
            if now.duration_since(at) < SETTLE || writing.contains_key(&channel) {
                return true;
            }
            if caught_up.contains(&channel) {
                let e = out.entry(channel).or_insert(id);
                *e = (*e).max(id);
            }
            false
        });
        out
    }

    /// Queues a new channel of a guild; true if the guild had none queued.
    fn queue_new_channel(&self, guild: u64, channel: u64) -> bool {
        let mut s = self.state.lock().unwrap();
        let set = s.new_channels.entry(guild).or_default();
        set.insert(channel);
        set.len() == 1
    }

    fn take_new_channels(&self, guild: u64) -> Vec<u64> {
        self.state.lock().unwrap().new_channels.remove(&guild).map(|s| s.into_iter().collect()).unwrap_or_default()
    }
}

/// The framework's event handler.
pub async fn on_event(_ctx: &serenity::all::Context, event: &FullEvent, bot: &Arc<Bot>) -> Result<(), super::Error> {
    match event {
        FullEvent::Ready { data_about_bot } => {
            *bot.me.lock().unwrap() = Some(data_about_bot.user.id.get());
            let session = bot.live.new_session();
            tracing::info!(session, "gateway session began: catching up");
            tokio::spawn(catch_up(bot.clone(), session));
        }
        FullEvent::Resume { .. } => tracing::info!("gateway session resumed"),
        FullEvent::Message { new_message } => {
            if let Some(guild) = new_message.guild_id {
                store_live(bot, guild.get(), serde_json::to_value(new_message)?, false).await;
            }
        }
        FullEvent::MessageUpdate { event, .. } => {
            if let Some(guild) = event.guild_id {
                let value = serde_json::to_value(event)?;
                // Embed unfurls and other partial updates carry no text or edit time: nothing to store.
                let full = ["author", "content", "edited_timestamp", "timestamp"]
                    .iter()
                    .all(|k| value.get(*k).is_some_and(|v| !v.is_null()));
                if full {
                    store_live(bot, guild.get(), value, true).await;
                }
            }
        }
        FullEvent::MessageDelete { channel_id, deleted_message_id, guild_id: Some(guild) } => {
            delete_live(bot, guild.get(), channel_id.get(), vec![deleted_message_id.get()]).await;
        }
        FullEvent::MessageDeleteBulk { channel_id, multiple_deleted_messages_ids, guild_id: Some(guild) } => {
            let ids = multiple_deleted_messages_ids.iter().map(|m| m.get()).collect();
            delete_live(bot, guild.get(), channel_id.get(), ids).await;
        }
        FullEvent::ThreadCreate { thread } => {
            new_channel(bot, thread.guild_id.get(), thread.id.get(), u8::from(thread.kind))
        }
        FullEvent::ChannelCreate { channel } => {
            new_channel(bot, channel.guild_id.get(), channel.id.get(), u8::from(channel.kind))
        }
        _ => {}
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Stores a message event (`edit`: MESSAGE_UPDATE) of a loaded channel.
async fn store_live(bot: &Arc<Bot>, guild: u64, mut value: Value, edit: bool) {
    // Serenity writes absent fields as null; the archive's model wants them absent.
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let raw: Raw<Message> = match serde_json::from_str(&value.to_string()) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(error = %e, "a message event could not be read; the next load fetches it");
            if let Some(channel) = value["channel_id"].as_str().and_then(|c| c.parse().ok()) {
                bot.live.taint(channel);
            }
            return;
        }
    };
    // The bot edits its progress messages every few seconds: those edits are
    // left to loads (its new messages are stored, as loads store them).
    if edit && Some(raw.value.author.id) == *bot.me.lock().unwrap() {
        return;
    }
    let (channel, id) = (raw.value.channel_id, raw.value.id);
    let keep_reactions = value.get("reactions").is_none();
    bot.live.begin_write(channel);
    let store = bot.store.clone();
    let result = blocking(move || {
        if store.loaded_channel_guild(channel)? != Some(guild) {
            // Not loaded (yet): a load that is running may have passed it already.
            return Ok(Err(()));
        }
        store.write_live(guild, &raw, keep_reactions)?;
        Ok(Ok(if edit { None } else { Some(id) }))
    })
    .await;
    match result {
        Ok(stored) => bot.live.end_write(channel, stored),
        Err(e) => {
            tracing::warn!(channel, error = %e, "a live message could not be stored; the next load fetches it");
            bot.live.end_write(channel, Err(()));
        }
    }
}

async fn delete_live(bot: &Arc<Bot>, guild: u64, channel: u64, ids: Vec<u64>) {
    let store = bot.store.clone();
    let result = blocking(move || {
        if store.loaded_channel_guild(channel)? == Some(guild) {
            store.delete_seen(guild, channel, &ids)?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = result {
        // A missed delete leaves a message that Discord no longer has; the archive keeps it.
        tracing::warn!(channel, error = %e, "a deletion could not be recorded");
    }
}

/// A channel or thread appeared: queue it for a load if its guild is loaded;
/// one load per guild takes what is queued.
fn new_channel(bot: &Arc<Bot>, guild: u64, channel: u64, kind: u8) {
    if !channel_type::holds_messages(kind) {
        return;
    }
    // Threads and forum posts follow their guild (a forum holds no messages, so it has no checkpoint).
    let loaded = bot.store.loaded_guilds().is_ok_and(|g| g.contains(&guild));
    if !loaded || !bot.live.queue_new_channel(guild, channel) {
        return;
    }
    let bot = bot.clone();
    tokio::spawn(async move {
        let session = bot.live.session();
        let Some(slot) = wait_for_slot(&bot, guild, JobKind::NewChannels, session).await else {
            bot.live.take_new_channels(guild);
            return;
        };
        let mut channels = bot.live.take_new_channels(guild);
        // A reply that arrives while a new thread is being loaded may be missed
        // by the load (it taints the thread); a second load, from the
        // checkpoint, vouches for it.
        for _attempt in 0..3 {
            if channels.is_empty() {
                break;
            }
            match jobs::load(&bot, guild, channels.clone(), session, &|line| slot.set_status(line)).await {
                Ok(s) => {
                    tracing::info!(guild, ?channels, new = s.new, "new channels loaded");
                    channels = s
                        .channels
                        .iter()
                        .filter(|c| matches!(c.outcome, Outcome::Complete | Outcome::UpToDate))
                        .map(|c| c.channel_id)
                        .filter(|c| !bot.live.is_caught_up(*c))
                        .collect();
                }
                // Deleted before its turn: load the others.
                Err(e) => match e.downcast_ref::<crate::load::LoadError>() {
                    Some(crate::load::LoadError::UnknownChannel(gone)) => {
                        let gone = *gone;
                        channels.retain(|c| *c != gone);
                    }
                    _ => {
                        tracing::warn!(guild, ?channels, error = %format!("{e:#}"), "could not load new channels");
                        channels.clear();
                    }
                },
            }
        }
    });
}

/// Waits for the guild's job slot (another job may run there); `None` if
/// the bot stops or the gateway session changes meanwhile.
async fn wait_for_slot(bot: &Arc<Bot>, guild: u64, kind: JobKind, session: u64) -> Option<jobs::JobSlot> {
    loop {
        if bot.shutdown.is_cancelled() || bot.live.session() != session {
            return None;
        }
        match bot.jobs.start(guild, kind) {
            Ok(slot) => return Some(slot),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Fills the gap since each loaded guild's checkpoints, then indexes what
/// changed, holding the guild's job slot throughout.
async fn catch_up(bot: Arc<Bot>, session: u64) {
    let guilds = match bot.store.loaded_guilds() {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the archive to catch up");
            return;
        }
    };
    for guild in guilds {
        let Some(slot) = wait_for_slot(&bot, guild, JobKind::CatchUp, session).await else { return };
        let started = Instant::now();
        match jobs::load(&bot, guild, Vec::new(), session, &|line| slot.set_status(line)).await {
            Ok(s) => tracing::info!(
                guild,
                new = s.new,
                updated = s.updated,
                seconds = started.elapsed().as_secs_f64(),
                "caught up"
            ),
            Err(e) => {
                tracing::warn!(guild, error = %format!("{e:#}"), "catch-up load failed; live messages are stored but checkpoints wait for the next load")
            }
        }
        index_active(&bot, guild, &slot).await;
    }
}

/// Stage two for a guild with an active index, in a job slot the caller holds.
async fn index_active(bot: &Arc<Bot>, guild: u64, slot: &jobs::JobSlot) {
    let Ok(Some(model)) = bot.store.active_model(guild) else { return };
    match jobs::index(bot, guild, &model, false, &|line| slot.set_status(line)).await {
        Ok(s) if s.embedded + s.deleted > 0 => {
            tracing::info!(guild, model, embedded = s.embedded, deleted = s.deleted, "index caught up")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(guild, model, error = %format!("{e:#}"), "index catch-up failed"),
    }
}

/// Starts the bot's timers: checkpoints of settled live messages, and stage two.
pub fn start_background(bot: Arc<Bot>) {
    let b = bot.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = b.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (channel, id) in b.live.settled(Instant::now()) {
                if let Err(e) = b.store.advance_checkpoint(channel, id) {
                    tracing::warn!(channel, error = %e, "could not move a checkpoint");
                }
            }
        }
    });
    tokio::spawn(async move {
        let every = bot.options.index_every;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = bot.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(records) = bot.store.index_records(None) else { continue };
            for r in records.into_iter().filter(|r| r.active) {
                // A guild busy with another job is indexed at the next tick (or by that job).
                if let Ok(slot) = bot.jobs.start(r.guild_id, JobKind::Index) {
                    index_active(&bot, r.guild_id, &slot).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_move_only_for_caught_up_channels_and_settled_messages() {
        let live = Live::default();
        let s = live.new_session();
        let started = Instant::now();
        live.loaded(s, started, 10, true);
        live.loaded(s - 1, started, 20, true); // a load from an older session does not count
        for (channel, id) in [(10, 5), (10, 7), (20, 9)] {
            live.begin_write(channel);
            live.end_write(channel, Ok(Some(id)));
        }
        let t0 = Instant::now();
        assert!(live.settled(t0).is_empty(), "too fresh");
        let later = t0 + SETTLE + Duration::from_millis(10);
        assert_eq!(live.settled(later), HashMap::from([(10, 7)]), "channel 20 is not caught up");
        assert!(live.state.lock().unwrap().pending.is_empty());

        // A handler still writing holds its channel back.
        live.begin_write(10);
        live.begin_write(10);
        live.end_write(10, Ok(Some(8)));
        assert!(live.settled(later + SETTLE * 2).is_empty(), "another write to #10 is running");
        live.end_write(10, Ok(Some(9)));
        assert_eq!(live.settled(Instant::now() + SETTLE * 2), HashMap::from([(10, 9)]));

        // A failed write stops live checkpoints for the channel until a load.
        live.begin_write(10);
        live.end_write(10, Ok(Some(11)));
        live.begin_write(10);
        live.end_write(10, Err(()));
        live.begin_write(10);
        live.end_write(10, Ok(Some(12)));
        assert!(live.settled(Instant::now() + SETTLE * 2).is_empty());

        // A load that began before the loss cannot vouch; one that began after can.
        live.loaded(s, started, 10, true);
        assert!(!live.state.lock().unwrap().caught_up.contains(&10));
        live.loaded(s, Instant::now(), 10, true);
        assert!(live.state.lock().unwrap().caught_up.contains(&10));
        live.loaded(s, Instant::now(), 10, false);
        assert!(!live.state.lock().unwrap().caught_up.contains(&10), "an unfinished load takes it back");

        live.loaded(s, Instant::now(), 10, true);
        let s2 = live.new_session();
        assert!(s2 > s);
        live.loaded(s, Instant::now(), 10, true);
        live.begin_write(10);
        live.end_write(10, Ok(Some(13)));
        assert!(live.settled(Instant::now() + SETTLE * 2).is_empty(), "a new session starts over");
    }

    #[test]
    fn new_channels_are_batched_per_guild() {
        let live = Live::default();
        assert!(live.queue_new_channel(1, 10), "the first queues a load");
        assert!(!live.queue_new_channel(1, 11), "the next ride along");
        assert!(live.queue_new_channel(2, 20));
        let mut taken = live.take_new_channels(1);
        taken.sort();
        assert_eq!(taken, [10, 11]);
        assert!(live.queue_new_channel(1, 12), "after the load took them, a new one queues again");
    }
}
