//! What the bot runs on its own: the catch-up load and index of every loaded
//! guild when a gateway session begins, the load of channels that appeared,
//! the timer that moves checkpoints of settled live messages, and the timer
//! that keeps active indexes current. Each job holds its guild's slot
//! ([`super::jobs::Jobs`]), so it never runs beside a command's job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jobs::{self, JobKind};
use super::Bot;
use crate::load::Outcome;

/// Loads the channels queued for a guild, in one load that waits for the
/// guild's job slot (the queue fills meanwhile).
pub fn load_new_channels(bot: Arc<Bot>, guild: u64) {
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
        match bot.jobs.claim(guild, kind, jobs::LIVE_STOPS_WITHIN).await {
            Ok(slot) => return Some(slot),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Fills the gap since each loaded guild's checkpoints, then indexes what
/// changed, holding the guild's job slot throughout.
pub(super) async fn catch_up(bot: Arc<Bot>, session: u64) {
    let guilds = match bot.store.call(|s| s.loaded_guilds()).await {
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
    let Ok(Some(model)) = bot.store.call(move |s| s.active_model(guild)).await else { return };
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
                if let Err(e) = b.store.call(move |s| s.advance_checkpoint(channel, id)).await {
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
            let Ok(active) = bot.store.call(|s| s.active_indexes()).await else { continue };
            for a in active {
                // A guild busy with another job is indexed at the next tick (or by that job).
                if let Ok(slot) = bot.jobs.start(a.guild_id, JobKind::Index) {
                    index_active(&bot, a.guild_id, &slot).await;
                }
            }
        }
    });
}
