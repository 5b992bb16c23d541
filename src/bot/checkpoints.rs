//! The live-checkpoint rules: when a live message may move its channel's
//! checkpoint.
//!
//! A channel's checkpoint says "everything up to here is stored". A live
//! message may move it only when a load caught the channel up in the current
//! gateway session, so nothing before it is missing. Serenity runs event
//! handlers concurrently, so a later message can be stored before an earlier
//! one: the checkpoint moves later, to the newest message stored at least
//! [`SETTLE`] ago, and only while no handler for that channel is running. A
//! live message that could not be stored (a failed write, an unreadable
//! event, a channel not loaded yet) "taints" its channel: only a load that
//! began after that may vouch for it again. A crash in between only means the
//! next catch-up reads those messages again.
//!
//! [`Live`] also holds the queue of new channels waiting for a load, which a
//! new session clears with everything else.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    pub(super) fn taint(&self, channel: u64) {
        let mut s = self.state.lock().unwrap();
        s.tainted.insert(channel, Instant::now());
        s.caught_up.remove(&channel);
        s.pending.retain(|p| p.0 != channel);
    }

    pub(super) fn new_session(&self) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.session += 1;
        s.caught_up.clear();
        s.pending.clear();
        s.tainted.clear();
        // Loads queued in the old session are dropped; the catch-up covers them.
        s.new_channels.clear();
        s.session
    }

    pub(super) fn begin_write(&self, channel: u64) {
        *self.state.lock().unwrap().writing.entry(channel).or_default() += 1;
    }

    /// Ends a handler's write: `Ok(Some(id))` stored a message, `Ok(None)`
    /// stored nothing that matters (an edit), `Err` lost one.
    pub(super) fn end_write(&self, channel: u64, stored: Result<Option<u64>, ()>) {
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
    pub(super) fn settled(&self, now: Instant) -> HashMap<u64, u64> {
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
    pub(super) fn queue_new_channel(&self, guild: u64, channel: u64) -> bool {
        let mut s = self.state.lock().unwrap();
        let set = s.new_channels.entry(guild).or_default();
        set.insert(channel);
        set.len() == 1
    }

    pub(super) fn take_new_channels(&self, guild: u64) -> Vec<u64> {
        self.state.lock().unwrap().new_channels.remove(&guild).map(|s| s.into_iter().collect()).unwrap_or_default()
    }
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
