//! What the rate limiter knows, shared through a small file with every other
//! process that uses the same data directory (a `load` beside the bot, two
//! `load`s) and with the next run after a crash or kill. Discord's limits
//! belong to the bot token, not to a process: without this, two processes
//! each spend the whole budget, and a rerun forgets the buckets its killed
//! predecessor emptied.
//!
//! The file (`<data-dir>/ratelimits.json`) holds, in wall-clock milliseconds:
//! the buckets known to be partly spent, each route's bucket, a global pause,
//! and the global-window slots of every process (in flight, or completed
//! within the window). Every decision is one read-modify-write under an
//! exclusive `flock`, so two processes never both take the last slot. The
//! new state is written over the old in one write and the file then cut to
//! its length, and a reader takes the first JSON value it finds, so a process
//! killed between the two leaves a readable file. A file that still cannot be
//! parsed (killed within a write that spans pages, or damaged) may have hidden
//! a full window: it reads as a global pause of one window, which costs a
//! second and never provokes a 429. Slots of a process that died in flight
//! count as completed when that is noticed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One bucket as every process sees it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedBucket {
    pub limit: u32,
    pub remaining: u32,
    pub reset_at: u64,
}

/// A global-window slot: a request that left at `left` and, once answered, completed at `done`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedSlot {
    pub pid: u32,
    /// Which limiter of that process (a process may hold several clients).
    pub owner: u64,
    pub id: u64,
    pub left: u64,
    pub done: Option<u64>,
}

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shared {
    /// Route template → Discord's bucket hash.
    #[serde(default)]
    pub bucket_of: HashMap<String, String>,
    /// `"<hash>:<major>"` → state; dropped once reset.
    #[serde(default)]
    pub buckets: HashMap<String, SharedBucket>,
    #[serde(default)]
    pub paused_until: Option<u64>,
    #[serde(default)]
    pub slots: Vec<SharedSlot>,
    /// `"<route template>:<major>"` → the limiter with a request in flight
    /// there: requests on one route and major parameter go one at a time
    /// across processes too, so each sees the headers of the last.
    #[serde(default)]
    pub busy: HashMap<String, Holder>,
}

/// Who holds a route, since when.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub owner: u64,
    pub since: u64,
}

impl Shared {
    pub fn bucket_key(hash: &str, major: u64) -> String {
        format!("{hash}:{major}")
    }

    pub fn route_key(template: &str, major: u64) -> String {
        format!("{template}:{major}")
    }

    /// Forgets what no longer constrains anyone at `now`: reset buckets, a
    /// past pause, slots completed more than `period` ago, and marks slots
    /// of dead processes (or older than `stale`, in flight) as completed now.
    pub fn prune(&mut self, now: u64, period: Duration, stale: Duration) {
        let period = period.as_millis() as u64;
        self.buckets.retain(|_, b| b.reset_at > now);
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
        }
        for s in &mut self.slots {
            if s.done.is_none() && (now.saturating_sub(s.left) > stale.as_millis() as u64 || !alive(s.pid)) {
                s.done = Some(now);
            }
        }
        self.slots.retain(|s| s.done.is_none_or(|d| now.saturating_sub(d) < period));
        self.busy.retain(|_, h| now.saturating_sub(h.since) <= stale.as_millis() as u64 && alive(h.pid));
    }

    /// Slots in the window held by other limiters than `owner` of this process.
    pub fn others(&self, owner: u64) -> Vec<SharedSlot> {
        let pid = std::process::id();
        self.slots.iter().filter(|s| !(s.pid == pid && s.owner == owner)).copied().collect()
    }
}

/// The shared file of one data directory.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: std::sync::Mutex<File>,
    /// How long to hold back when the file cannot be parsed: one global window.
    unreadable_pause: Duration,
}

impl Ledger {
    pub const FILE: &'static str = "ratelimits.json";

    /// Opens (creating) the ledger in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Ledger> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::FILE);
        let file = File::options().read(true).write(true).create(true).truncate(false).open(&path)?;
        Ok(Ledger { path, file: std::sync::Mutex::new(file), unreadable_pause: Duration::from_secs(1) })
    }

    /// Sets the pause that an unparsable file stands for (the global window's length).
    pub fn with_unreadable_pause(mut self, pause: Duration) -> Ledger {
        self.unreadable_pause = pause;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the shared state under the file's exclusive lock, and
    /// writes back what it leaves. I/O errors leave the decision to `f` on
    /// an empty state and are logged once per call (a ledger is a courtesy).
    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: &File = &guard;
        let _lock = FileLock::exclusive(file);
        let mut bytes = Vec::new();
        let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes));
        // An unreadable file is rewritten by this call whatever `f` does.
        let mut repair = false;
        let mut shared: Shared = match read {
            Ok(_) if bytes.trim_ascii().is_empty() => Shared::default(),
            Ok(_) => match serde_json::Deserializer::from_slice(&bytes).into_iter::<Shared>().next() {
                Some(Ok(shared)) => shared,
                _ => {
                    tracing::debug!(path = %self.path.display(), "the rate-limit ledger is unreadable; pausing one window");
                    repair = true;
                    let until = now_ms() + self.unreadable_pause.as_millis() as u64;
                    Shared { paused_until: Some(until), ..Shared::default() }
                }
            },
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "cannot read the rate-limit ledger: {e}");
                Shared::default()
            }
        };
        let before = shared.clone();
        let out = f(&mut shared);
        if repair || shared != before {
            let json = serde_json::to_vec(&shared).expect("ledger serializes");
            let written = overwrite(file, &json).and_then(|()| file.set_len(json.len() as u64));
            if let Err(e) = written {
                tracing::debug!(path = %self.path.display(), "cannot write the rate-limit ledger: {e}");
            }
        }
        out
    }
}

/// Writes `bytes` at the file's start in one call.
#[cfg(unix)]
fn overwrite(file: &File, bytes: &[u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, 0)
}

/// Writes `bytes` at the file's start (no positioned write here: seek, then write).
#[cfg(not(unix))]
fn overwrite(mut file: &File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)
}

/// An exclusive `flock` on an open file, released when dropped (the file
/// outlives it: the ledger holds it).
struct FileLock(#[cfg_attr(not(unix), allow(dead_code))] i32);

impl FileLock {
    fn exclusive(file: &File) -> FileLock {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd as _;
            let fd = file.as_raw_fd();
            // SAFETY: flock on a descriptor this process holds open.
            while unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            FileLock(fd)
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            FileLock(0)
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: as above; the descriptor is still open.
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
        }
    }
}

/// Whether a process is still running (on other systems: assumed so).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_prunes_what_no_longer_binds() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let me = std::process::id();
        ledger.with(|s| {
            s.bucket_of.insert("GET /channels/{}/messages".into(), "b1".into());
            s.buckets.insert(Shared::bucket_key("b1", 7), SharedBucket { limit: 5, remaining: 0, reset_at: 2_000 });
            s.buckets.insert(Shared::bucket_key("b1", 8), SharedBucket { limit: 5, remaining: 0, reset_at: 500 });
            s.paused_until = Some(900);
            s.slots.push(SharedSlot { pid: me, owner: 1, id: 1, left: 100, done: Some(200) });
            s.slots.push(SharedSlot { pid: me, owner: 1, id: 2, left: 950, done: Some(990) });
            s.slots.push(SharedSlot { pid: me, owner: 2, id: 1, left: 990, done: None });
            // No such process: its request in flight counts as completed when noticed.
            s.slots.push(SharedSlot { pid: u32::MAX - 7, owner: 3, id: 1, left: 990, done: None });
        });
        let again = Ledger::open(dir.path()).unwrap();
        let mut s = again.with(|s| s.clone());
        assert_eq!(s.bucket_of["GET /channels/{}/messages"], "b1");
        s.prune(1_250, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(s.buckets.keys().collect::<Vec<_>>(), ["b1:7"]);
        assert_eq!(s.paused_until, None);
        let ids: Vec<(u64, u64, Option<u64>)> = s.slots.iter().map(|x| (x.owner, x.id, x.done)).collect();
        assert_eq!(ids, [(1, 2, Some(990)), (2, 1, None), (3, 1, Some(1_250))]);
        assert_eq!(s.others(2).len(), 2, "a limiter's own slots are not others'");
        // A shorter state written over a longer one (the process killed
        // before the file was cut) still reads as the new state.
        let shorter = serde_json::to_string(&Shared { paused_until: Some(7), ..Shared::default() }).unwrap();
        let longer = std::fs::read_to_string(dir.path().join(Ledger::FILE)).unwrap();
        assert!(longer.len() > shorter.len());
        std::fs::write(dir.path().join(Ledger::FILE), format!("{shorter}{}", &longer[shorter.len()..])).unwrap();
        assert_eq!(Ledger::open(dir.path()).unwrap().with(|s| s.paused_until), Some(7));
        // A garbled file may have hidden a full window: it reads as a pause of one.
        std::fs::write(dir.path().join(Ledger::FILE), b"{ garbage").unwrap();
        let before = now_ms();
        let pause = Duration::from_millis(1_300);
        let read = Ledger::open(dir.path()).unwrap().with_unreadable_pause(pause).with(|s| s.clone());
        let until = read.paused_until.expect("a pause");
        assert!(until >= before + 1_300 && until <= now_ms() + 1_300, "{until} {before}");
        assert_eq!(Shared { paused_until: None, ..read }, Shared::default());
        // ... and is repaired by that first decision.
        let text = std::fs::read_to_string(dir.path().join(Ledger::FILE)).unwrap();
        assert!(serde_json::from_str::<Shared>(&text).is_ok(), "{text}");
    }
}
