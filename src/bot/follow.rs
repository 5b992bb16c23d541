//! Live indexing: stage two following the gateway, so that a message posted,
//! edited or deleted is found (or no longer found) by meaning within seconds.
//!
//! Live capture ([`super::capture`]) reports each change it stores for a
//! guild here. A run of stage two for that guild starts when its oldest
//! unindexed change is [`BotOptions::live_delay`](super::BotOptions) old or
//! [`LIVE_BATCH`] changes wait, whichever comes first. A run is the ordinary
//! incremental `index` of the guild's active model (the same rules and
//! manifest, only the channels that changed): it takes every change stored
//! before it began, and the changes that arrive while it runs wait for the
//! next run, which takes them all at once. So under a burst the runs grow
//! and latency rises gracefully, nothing is dropped, and nothing is held in
//! memory but a count per guild (the changes themselves are in the archive).
//! A crash or stop anywhere leaves what it leaves for `index`: the next run,
//! or the catch-up when the bot starts, redoes exactly what is unrecorded.
//!
//! A live run holds the guild's job slot like any job, but gives it up when a
//! command asks for it ([`super::jobs::Jobs::claim`]): the run stops between
//! steps, and its changes wait for the next run. Questions are not held up
//! by a run: a bulk forward pass pauses before its next layer while a
//! question is embedded ([`crate::embed::Embedder::embed_question`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::jobs::{self, JobKind};
use super::Bot;
use crate::index::IndexError;

/// Changes that start a run at once, without waiting for the delay.
pub const LIVE_BATCH: u64 = 64;

/// How long a run waits before trying again for a slot another job holds.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// A guild's changes not yet taken by a run.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When the oldest of them was stored.
    since: Instant,
    changes: u64,
    /// Not before this (the slot was busy).
    not_before: Option<Instant>,
}

/// What live indexing has done for a guild since the bot started (for `/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStats {
    pub runs: u64,
    /// Changes reported by live capture.
    pub changes: u64,
    /// Chunks embedded, and their tokens.
    pub chunks: u64,
    pub tokens: u64,
    /// Chunks' points deleted.
    pub deleted: u64,
    /// Seconds in runs altogether (their wall time: runs never overlap).
    pub run_seconds: f64,
}

/// The guilds with changes waiting, and what runs did.
#[derive(Default)]
pub struct Follow {
    pending: Mutex<HashMap<u64, Pending>>,
    /// Changes taken by a run that has not ended, by guild.
    taken: Mutex<HashMap<u64, u64>>,
    wake: Notify,
    stats: Mutex<HashMap<u64, LiveStats>>,
}

impl Follow {
    /// Live capture stored `changes` changes of `guild`.
    pub fn changed(&self, guild: u64, changes: u64) {
        let now = Instant::now();
        self.pending.lock().unwrap().entry(guild).and_modify(|p| p.changes += changes).or_insert(Pending {
            since: now,
            changes,
            not_before: None,
        });
        self.stats.lock().unwrap().entry(guild).or_default().changes += changes;
        self.wake.notify_one();
    }

    /// Changes of `guild` not indexed yet: waiting, or taken by a run that
    /// has not ended.
    pub fn unindexed(&self, guild: u64) -> u64 {
        let waiting = self.pending.lock().unwrap().get(&guild).map_or(0, |p| p.changes);
        waiting + self.taken.lock().unwrap().get(&guild).copied().unwrap_or(0)
    }

    pub fn stats(&self, guild: u64) -> LiveStats {
        self.stats.lock().unwrap().get(&guild).copied().unwrap_or_default()
    }

    /// Takes the guilds due for a run now; says when the next one will be.
    fn take_due(&self, now: Instant, delay: Duration) -> (Vec<(u64, Pending)>, Option<Instant>) {
        let mut pending = self.pending.lock().unwrap();
        let mut next: Option<Instant> = None;
        let due: Vec<u64> = pending
            .iter()
            .filter_map(|(&guild, p)| {
                let at = if p.changes >= LIVE_BATCH { p.since } else { p.since + delay };
                let at = p.not_before.map_or(at, |n| at.max(n));
                if at <= now {
                    Some(guild)
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    None
                }
            })
            .collect();
        let due: Vec<(u64, Pending)> =
            due.into_iter().map(|g| (g, pending.remove(&g).expect("due guild is pending"))).collect();
        let mut taken = self.taken.lock().unwrap();
        for (guild, p) in &due {
            taken.insert(*guild, p.changes);
        }
        (due, next)
    }

    /// A run took its changes in.
    fn ended(&self, guild: u64) {
        self.taken.lock().unwrap().remove(&guild);
    }

    /// Puts a run's changes back (it could not run, or was stopped), merged
    /// with any that arrived meanwhile.
    fn put_back(&self, guild: u64, mut taken: Pending, not_before: Option<Instant>) {
        let mut pending = self.pending.lock().unwrap();
        self.taken.lock().unwrap().remove(&guild);
        if let Some(p) = pending.get(&guild) {
            taken.changes += p.changes;
        }
        taken.not_before = not_before;
        pending.insert(guild, taken);
        self.wake.notify_one();
    }
}

/// Starts following live changes with stage two (when `live_delay` is set).
pub fn start(bot: Arc<Bot>) {
    let Some(delay) = bot.options.live_delay else { return };
    tokio::spawn(async move {
        loop {
            let (due, next) = bot.follow.take_due(Instant::now(), delay);
            for (guild, taken) in &due {
                run(&bot, *guild, *taken).await;
            }
            if !due.is_empty() {
                continue;
            }
            let sleep = next.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = bot.shutdown.cancelled() => return,
                () = bot.follow.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    });
}

/// One live run for a guild: its active index, brought up to date.
async fn run(bot: &Arc<Bot>, guild: u64, taken: Pending) {
    let model = match bot.store.call(move |s| s.active_model(guild)).await {
        Ok(Some(model)) => model,
        // No index to follow: search has only keywords here, which see the archive.
        Ok(None) => return bot.follow.ended(guild),
        Err(e) => {
            tracing::warn!(guild, error = %e, "live indexing cannot read the archive");
            return bot.follow.put_back(guild, taken, Some(Instant::now() + BUSY_RETRY));
        }
    };
    let slot = match bot.jobs.start_stoppable(guild, JobKind::Live, &bot.shutdown) {
        Ok(slot) => slot,
        // Another job (whose own run of stage two may well cover these changes).
        Err(_) => return bot.follow.put_back(guild, taken, Some(Instant::now() + BUSY_RETRY)),
    };
    let stop = slot.info.stop.clone().expect("a live job can be stopped");
    let started = Instant::now();
    let result = jobs::index_until(bot, guild, &model, false, &|line| slot.set_status(line), &stop).await;
    drop(slot);
    match result {
        Ok(s) => {
            bot.follow.ended(guild);
            let mut stats = bot.follow.stats.lock().unwrap();
            let stats = stats.entry(guild).or_default();
            stats.runs += 1;
            stats.chunks += s.embedded;
            stats.tokens += s.tokens;
            stats.deleted += s.deleted;
            stats.run_seconds += started.elapsed().as_secs_f64();
            tracing::debug!(
                guild,
                model,
                changes = taken.changes,
                embedded = s.embedded,
                deleted = s.deleted,
                lag = taken.since.elapsed().as_secs_f64(),
                "live index run"
            );
        }
        // Stopped for a command, or the bot stops: the changes wait.
        Err(e) if matches!(e.downcast_ref::<IndexError>(), Some(IndexError::Interrupted)) => {
            bot.follow.put_back(guild, taken, Some(Instant::now() + BUSY_RETRY));
        }
        Err(e) => {
            // The timer and the next change try again; say it once per run.
            tracing::warn!(guild, model, error = %format!("{e:#}"), "live index run failed");
            bot.follow.put_back(guild, taken, Some(Instant::now() + Duration::from_secs(10)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guild_is_due_after_the_delay_or_at_once_with_a_full_batch() {
        let f = Follow::default();
        let delay = Duration::from_secs(1);
        f.changed(1, 1);
        let now = Instant::now();
        let (due, next) = f.take_due(now, delay);
        assert!(due.is_empty());
        assert!(next.is_some_and(|n| n > now && n <= now + delay));
        let (due, _) = f.take_due(now + delay, delay);
        assert_eq!(due.iter().map(|(g, p)| (*g, p.changes)).collect::<Vec<_>>(), [(1, 1)]);

        f.changed(2, LIVE_BATCH);
        let (due, next) = f.take_due(Instant::now(), delay);
        assert_eq!(due.iter().map(|(g, _)| *g).collect::<Vec<_>>(), [2]);
        assert!(next.is_none(), "nothing else waits");
        assert_eq!((f.stats(1).changes, f.stats(2).changes, f.stats(3).changes), (1, LIVE_BATCH, 0));
    }

    #[test]
    fn changes_put_back_keep_their_age_and_merge_with_new_ones() {
        let f = Follow::default();
        let delay = Duration::from_millis(10);
        f.changed(7, 3);
        let later = Instant::now() + delay;
        let (mut due, _) = f.take_due(later, delay);
        let (guild, taken) = due.pop().unwrap();
        f.changed(7, 2);
        let retry = later + Duration::from_secs(5);
        f.put_back(guild, taken, Some(retry));
        let (due, next) = f.take_due(later + delay, delay);
        assert!(due.is_empty(), "not before the retry time");
        assert_eq!(next, Some(retry));
        let (due, _) = f.take_due(retry, delay);
        let (_, p) = due[0];
        assert_eq!((p.changes, p.since), (5, taken.since));
        assert_eq!(f.unindexed(7), 5, "taken by a run, not indexed yet");
        f.ended(7);
        assert_eq!(f.unindexed(7), 0);
    }
}
