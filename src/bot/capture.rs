//! Live capture: gateway events into the archive, kept consistent with the
//! checkpoints stage one keeps.
//!
//! - MESSAGE_CREATE and MESSAGE_UPDATE in channels the archive holds are
//!   stored as the same rows a load writes (an edit replaces the stored copy
//!   only if it is newer). MESSAGE_DELETE removes the message and leaves a
//!   tombstone, so stage two drops it and a late MESSAGE_CREATE for it (the
//!   handlers run concurrently) cannot bring it back. Direct messages are
//!   never stored.
//! - THREAD_CREATE and CHANNEL_CREATE in a loaded guild start a load of the
//!   new channel, which picks it up with its first messages.
//! - Every new gateway session (READY, not RESUMED) starts a catch-up load of
//!   every loaded guild: events from before the session may be lost, so the
//!   gap since each checkpoint is filled by stage one before live events are
//!   relied on.
//!
//! A channel's checkpoint says "everything up to here is stored". A live
//! message may move it only when the channel was caught up by a load in the
//! current session (so nothing before it is missing). Serenity runs event
//! handlers concurrently, so a later message can be stored before an earlier
//! one; the checkpoint therefore moves a little later ([`SETTLE`]), to the
//! newest message whose handler finished that long ago. A crash in between
//! only means the next catch-up reads those messages again.
//!
//! Stage two follows on a timer (and on `/index`): see [`start_background`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use serenity::all::{FullEvent, Http};

use super::jobs::{self, JobKind};
use super::Bot;
use crate::discord::model::{Message, Raw};

/// How long after a live message was stored its channel's checkpoint may move to it.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What live capture knows about the current gateway session.
#[derive(Default)]
pub struct Live {
    /// Gateway sessions begun (READY events).
    pub sessions: AtomicU64,
    /// Channels a load caught up during the current session.
    caught_up: Mutex<HashSet<u64>>,
    /// Live messages stored in caught-up channels: (channel, id, when stored).
    pending: Mutex<Vec<(u64, u64, Instant)>>,
    /// Messages stored, edited or deleted from gateway events.
    pub events_stored: AtomicU64,
}

impl Live {
    pub fn session(&self) -> u64 {
        self.sessions.load(Ordering::SeqCst)
    }

    /// A load that began in `session` finished this channel.
    pub fn caught_up(&self, session: u64, channel: u64) {
        if self.session() == session {
            self.caught_up.lock().unwrap().insert(channel);
        }
    }

    pub fn is_caught_up(&self, channel: u64) -> bool {
        self.caught_up.lock().unwrap().contains(&channel)
    }

    fn new_session(&self) {
        let mut caught_up = self.caught_up.lock().unwrap();
        self.sessions.fetch_add(1, Ordering::SeqCst);
        caught_up.clear();
        self.pending.lock().unwrap().clear();
    }

    /// Channel → newest settled message id, taken off the pending list.
    fn settled(&self, now: Instant) -> HashMap<u64, u64> {
        let mut pending = self.pending.lock().unwrap();
        let caught_up = self.caught_up.lock().unwrap();
        let mut out = HashMap::new();
        pending.retain(|&(channel, id, at)| {
            if now.duration_since(at) < SETTLE {
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
}

/// The framework's event handler.
pub async fn on_event(ctx: &serenity::all::Context, event: &FullEvent, bot: &Arc<Bot>) -> Result<(), super::Error> {
    match event {
        FullEvent::Ready { data_about_bot } => {
            *bot.me.lock().unwrap() = Some(data_about_bot.user.id.get());
            bot.live.new_session();
            tracing::info!(session = bot.live.session(), "gateway session began: catching up");
            let (bot, http) = (bot.clone(), ctx.http.clone());
            tokio::spawn(async move { catch_up(bot, http).await });
        }
        FullEvent::Resume { .. } => tracing::info!("gateway session resumed"),
        FullEvent::Message { new_message } => {
            if let Some(guild) = new_message.guild_id {
                store_live(bot, guild.get(), serde_json::to_value(new_message)?)?;
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
                    store_live(bot, guild.get(), value)?;
                }
            }
        }
        FullEvent::MessageDelete { channel_id, deleted_message_id, guild_id: Some(guild) } => {
            delete_live(bot, guild.get(), channel_id.get(), &[deleted_message_id.get()])?;
        }
        FullEvent::MessageDeleteBulk { channel_id, multiple_deleted_messages_ids, guild_id: Some(guild) } => {
            let ids: Vec<u64> = multiple_deleted_messages_ids.iter().map(|m| m.get()).collect();
            delete_live(bot, guild.get(), channel_id.get(), &ids)?;
        }
        FullEvent::ThreadCreate { thread } => new_channel(bot, ctx, thread.guild_id.get(), thread.id.get()),
        FullEvent::ChannelCreate { channel } => new_channel(bot, ctx, channel.guild_id.get(), channel.id.get()),
        _ => {}
    }
    Ok(())
}

/// Stores a message event of a channel the archive holds.
fn store_live(bot: &Bot, guild: u64, mut value: Value) -> anyhow::Result<()> {
    // Serenity writes absent fields as null; the archive's model wants them absent.
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let raw: Raw<Message> = serde_json::from_str(&value.to_string())?;
    let channel = raw.value.channel_id;
    if bot.store.channel_guild(channel)? != Some(guild) {
        tracing::debug!(channel, "message in a channel the archive does not hold: left to the next load");
        return Ok(());
    }
    let counts = bot.store.write_live(guild, &raw)?;
    if counts.new + counts.updated > 0 {
        bot.live.events_stored.fetch_add(1, Ordering::Relaxed);
    }
    if bot.live.is_caught_up(channel) {
        bot.live.pending.lock().unwrap().push((channel, raw.value.id, Instant::now()));
    }
    Ok(())
}

fn delete_live(bot: &Bot, guild: u64, channel: u64, ids: &[u64]) -> anyhow::Result<()> {
    if bot.store.channel_guild(channel)? != Some(guild) {
        return Ok(());
    }
    bot.store.delete_seen(guild, channel, ids)?;
    bot.live.events_stored.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A channel or thread appeared in a guild the archive holds: load it.
fn new_channel(bot: &Arc<Bot>, ctx: &serenity::all::Context, guild: u64, channel: u64) {
    if !bot.store.loaded_guilds().is_ok_and(|g| g.contains(&guild)) {
        return;
    }
    let (bot, _http) = (bot.clone(), ctx.http.clone());
    tokio::spawn(async move {
        let session = bot.live.session();
        match jobs::load(&bot, guild, vec![channel], session, &|_| {}).await {
            Ok(s) => tracing::info!(guild, channel, new = s.new, "new channel loaded"),
            Err(e) => tracing::warn!(guild, channel, error = %e, "could not load a new channel"),
        }
    });
}

/// Fills the gap since each loaded guild's checkpoints, then indexes what changed.
async fn catch_up(bot: Arc<Bot>, _http: Arc<Http>) {
    let session = bot.live.session();
    let guilds = match bot.store.loaded_guilds() {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the archive to catch up");
            return;
        }
    };
    for guild in guilds {
        // A job already running there (a /load) is waited for: it may predate this session.
        let slot = loop {
            if bot.shutdown.is_cancelled() || bot.live.session() != session {
                return;
            }
            match bot.jobs.start(guild, JobKind::CatchUp) {
                Ok(slot) => break slot,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
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
                tracing::warn!(guild, error = %e, "catch-up load failed; live messages are stored but checkpoints wait for the next load")
            }
        }
        drop(slot);
        index_if_active(&bot, guild).await;
    }
}

/// Stage two for a guild with an active index, if no other job runs there.
pub async fn index_if_active(bot: &Arc<Bot>, guild: u64) {
    let Ok(Some(model)) = bot.store.active_model(guild) else { return };
    let Ok(slot) = bot.jobs.start(guild, JobKind::Index) else { return };
    match jobs::index(bot, guild, &model, false, &|line| slot.set_status(line)).await {
        Ok(s) if s.embedded + s.deleted > 0 => {
            tracing::info!(guild, model, embedded = s.embedded, deleted = s.deleted, "index caught up")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(guild, model, error = %e, "index catch-up failed"),
    }
}

/// Starts the bot's timers: checkpoints of settled live messages, and stage two.
pub fn start_background(_http: Arc<Http>, bot: Arc<Bot>) {
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
                index_if_active(&bot, r.guild_id).await;
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
        live.new_session();
        let s = live.session();
        live.caught_up(s, 10);
        live.caught_up(s - 1, 20); // a load from an older session does not count
        let t0 = Instant::now();
        live.pending.lock().unwrap().extend([(10, 5, t0), (10, 7, t0), (20, 9, t0)]);
        assert!(live.settled(t0).is_empty(), "too fresh");
        let later = t0 + SETTLE;
        assert_eq!(live.settled(later), HashMap::from([(10, 7)]));
        assert!(live.pending.lock().unwrap().is_empty());
        live.new_session();
        assert!(!live.is_caught_up(10), "a new session starts over");
    }
}
