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
//!
//! The file is advice from other processes, not an order, so nothing in it is
//! believed beyond what Discord itself could ask for (see [`Shared::bound`]):
//! - A pause or a bucket reset is at most `max_ahead` (10 minutes by default,
//!   [`super::ratelimit::MAX_WAIT`]) away; one further ahead (written by a
//!   process whose clock was ahead, read after the clock was stepped back, or
//!   simply edited) counts as that bound, and is written back as such. Times
//!   of past events (a request left, completed, took a route) are at most now.
//! - At most [`MAX_BYTES`] are read: a larger file (a reader must re-parse it
//!   on every request) is unreadable, and is started afresh. Each map keeps at
//!   most [`MAX_KEYS`] keys of at most [`MAX_KEY_LEN`] bytes, expired ones
//!   dropped first, so what this process writes stays well under that size.
//! - Only a regular file is used: a symlink (to `/dev/zero`, say), a FIFO, a
//!   device or a directory in its place is refused with a warning, never read
//!   or written through, and the process decides alone until it is fixed.
//! - The file is found by its path on every decision: if it was deleted or
//!   replaced, this process follows (re-creating it), so two processes never
//!   coordinate through two different files.
//! - The lock is waited for at most [`LOCK_PATIENCE`] (a decision holds it for
//!   a moment): a process stopped while holding it costs this one a decision
//!   made alone (warned), never a hang.
//!
//! None of this is a security boundary against someone who may write the data
//! directory; it keeps a damaged, stale or hostile file from stopping a run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most of the file that is read. A real ledger holds a few kilobytes
/// (buckets live seconds, routes are a handful); past this it is not one.
pub const MAX_BYTES: u64 = 1 << 20;

/// The most keys kept in each of the file's maps (and slots in its window).
/// With keys of at most [`MAX_KEY_LEN`] bytes, the four at their fullest
/// serialize to well under [`MAX_BYTES`] (about 0.75 MiB).
pub const MAX_KEYS: usize = 1024;

/// The longest key kept: route templates, bucket hashes and ids are far shorter.
pub const MAX_KEY_LEN: usize = 128;

/// The longest this process waits for another to release the file's lock.
pub const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A source of wall-clock milliseconds (tests drive one from tokio's paused clock).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

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

    /// Makes what was read believable at `now` (see the module docs): a
    /// pause or reset further than `max_ahead` away counts as `max_ahead`
    /// away, past events are no later than now, what has expired is dropped,
    /// and each map keeps at most [`MAX_KEYS`] keys of at most [`MAX_KEY_LEN`]
    /// bytes (the most recent first).
    pub fn bound(&mut self, now: u64, max_ahead: Duration) {
        let latest = now.saturating_add(max_ahead.as_millis() as u64);
        self.paused_until = self.paused_until.filter(|&p| p > now).map(|p| p.min(latest));
        self.buckets.retain(|k, b| b.reset_at > now && k.len() <= MAX_KEY_LEN);
        for b in self.buckets.values_mut() {
            b.reset_at = b.reset_at.min(latest);
        }
        self.bucket_of.retain(|k, v| k.len() <= MAX_KEY_LEN && v.len() <= MAX_KEY_LEN);
        self.busy.retain(|k, _| k.len() <= MAX_KEY_LEN);
        for h in self.busy.values_mut() {
            h.since = h.since.min(now);
        }
        for s in &mut self.slots {
            s.left = s.left.min(now);
            s.done = s.done.map(|d| d.min(now));
        }
        keep_latest(&mut self.buckets, |b| b.reset_at);
        keep_latest(&mut self.busy, |h| h.since);
        // Route templates carry no time: any of them will do.
        keep_latest(&mut self.bucket_of, |_| 0);
        if self.slots.len() > MAX_KEYS {
            self.slots.sort_by_key(|s| std::cmp::Reverse(s.done.unwrap_or(u64::MAX).max(s.left)));
            self.slots.truncate(MAX_KEYS);
        }
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

/// Keeps the [`MAX_KEYS`] entries of `map` with the greatest `time`.
fn keep_latest<V>(map: &mut HashMap<String, V>, time: impl Fn(&V) -> u64) {
    if map.len() <= MAX_KEYS {
        return;
    }
    let mut times: Vec<u64> = map.values().map(&time).collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let cut = times[MAX_KEYS - 1];
    // Ties at the cut: keep the first that come.
    let mut above = times.iter().filter(|&&t| t > cut).count();
    map.retain(|_, v| {
        let t = time(v);
        if t > cut {
            return true;
        }
        if t == cut && above < MAX_KEYS {
            above += 1;
            return true;
        }
        false
    });
}

/// Why the file could not be used for a decision (each is warned about once
/// in a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    NotRegular,
    LockHeld,
    TooLarge,
    Io,
}

/// The shared file of one data directory.
pub struct Ledger {
    path: PathBuf,
    /// The file as last opened, checked against the path on every decision.
    file: Mutex<Option<File>>,
    /// How long to hold back when the file cannot be parsed: one global window.
    unreadable_pause: Duration,
    /// The furthest ahead a pause or a reset is believed.
    max_ahead: Duration,
    clock: WallClock,
    /// Set when the lock was not had within [`LOCK_PATIENCE`]: until it is
    /// had again, a decision tries once and does not wait.
    stuck: AtomicBool,
    /// The trouble last warned about, until a decision goes through.
    warned: Mutex<Option<Trouble>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).field("max_ahead", &self.max_ahead).finish_non_exhaustive()
    }
}

impl Ledger {
    pub const FILE: &'static str = "ratelimits.json";

    /// Opens (creating) the ledger in `dir`. Fails if the file there is not
    /// a regular file (a symbolic link, a pipe, a device, a directory).
    pub fn open(dir: &Path) -> std::io::Result<Ledger> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::FILE);
        let file = open_regular(&path)?;
        Ok(Ledger {
            path,
            file: Mutex::new(Some(file)),
            unreadable_pause: Duration::from_secs(1),
            max_ahead: super::ratelimit::MAX_WAIT,
            clock: Arc::new(now_ms),
            stuck: AtomicBool::new(false),
            warned: Mutex::new(None),
        })
    }

    /// Sets the pause that an unparsable file stands for (the global window's length).
    pub fn with_unreadable_pause(mut self, pause: Duration) -> Ledger {
        self.unreadable_pause = pause;
        self
    }

    /// Sets the furthest ahead a pause or bucket reset read from the file is believed.
    pub fn with_max_ahead(mut self, max_ahead: Duration) -> Ledger {
        self.max_ahead = max_ahead;
        self
    }

    /// Reads the wall clock from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: WallClock) -> Ledger {
        self.clock = clock;
        self
    }

    /// The wall clock the file's times are in, in milliseconds.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the shared state under the file's exclusive lock, and
    /// writes back what it leaves (with what [`Shared::bound`] corrected).
    /// When the file cannot be used (not a regular file, locked too long,
    /// I/O errors), `f` decides on an empty state, nothing is written, and
    /// the trouble is warned about once (a ledger is a courtesy).
    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut cached = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let lock = match self.lock(&mut cached) {
            Ok(lock) => lock,
            Err((trouble, why)) => {
                self.warn(trouble, &why);
                return f(&mut Shared::default());
            }
        };
        let mut file: &File = cached.as_ref().expect("a locked ledger is open");
        let now = self.now();
        let mut bytes = Vec::new();
        let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.take(MAX_BYTES + 1).read_to_end(&mut bytes));
        let paused = |why: &str| {
            tracing::debug!(path = %self.path.display(), "the rate-limit ledger {why}; pausing one window");
            Shared { paused_until: Some(now + self.unreadable_pause.as_millis() as u64), ..Shared::default() }
        };
        // An unreadable file is rewritten by this call whatever `f` does.
        let mut repair = false;
        let mut shared: Shared = match read {
            Ok(_) if bytes.len() as u64 > MAX_BYTES => {
                self.warn(Trouble::TooLarge, &format!("it is larger than {MAX_BYTES} bytes, which no real one is"));
                repair = true;
                paused("is too large")
            }
            Ok(_) if bytes.trim_ascii().is_empty() => Shared::default(),
            Ok(_) => match serde_json::Deserializer::from_slice(&bytes).into_iter::<Shared>().next() {
                Some(Ok(shared)) => shared,
                _ => {
                    repair = true;
                    paused("is unreadable")
                }
            },
            Err(e) => {
                drop(lock);
                self.warn(Trouble::Io, &format!("cannot read it: {e}"));
                return f(&mut Shared::default());
            }
        };
        let before = shared.clone();
        shared.bound(now, self.max_ahead);
        let out = f(&mut shared);
        if repair || shared != before {
            let json = serde_json::to_vec(&shared).expect("ledger serializes");
            let written = overwrite(file, &json).and_then(|()| file.set_len(json.len() as u64));
            if let Err(e) = written {
                drop(lock);
                self.warn(Trouble::Io, &format!("cannot write it: {e}"));
                return out;
            }
        }
        drop(lock);
        *self.warned.lock().unwrap_or_else(|e| e.into_inner()) = None;
        out
    }

    /// Locks the file the path names now (opening it again if it was
    /// deleted or replaced since the last decision).
    fn lock(&self, cached: &mut Option<File>) -> Result<FileLock, (Trouble, String)> {
        let trouble = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::InvalidInput => (Trouble::NotRegular, e.to_string()),
            _ => (Trouble::Io, e.to_string()),
        };
        // Each round follows one replacement; more in a row is not a ledger in use.
        for _ in 0..3 {
            let file = match cached {
                Some(file) => file,
                None => cached.insert(open_regular(&self.path).map_err(trouble)?),
            };
            let patience = if self.stuck.load(Ordering::Relaxed) { Duration::ZERO } else { LOCK_PATIENCE };
            let lock = match FileLock::exclusive(file, patience) {
                Ok(lock) => lock,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.stuck.store(true, Ordering::Relaxed);
                    let why = format!(
                        "another process has held its lock for over {} ms (one stopped while using this data \
                         directory?)",
                        LOCK_PATIENCE.as_millis()
                    );
                    return Err((Trouble::LockHeld, why));
                }
                Err(e) => return Err((Trouble::Io, format!("cannot lock it: {e}"))),
            };
            self.stuck.store(false, Ordering::Relaxed);
            match names(&self.path, file) {
                Ok(true) => return Ok(lock),
                Ok(false) => {
                    drop(lock);
                    *cached = None;
                }
                Err(e) => {
                    drop(lock);
                    *cached = None;
                    return Err(trouble(e));
                }
            }
        }
        Err((Trouble::Io, "it keeps being replaced".into()))
    }

    /// Says once (until a decision goes through again) why the file is not used.
    fn warn(&self, trouble: Trouble, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if *warned == Some(trouble) {
            return;
        }
        *warned = Some(trouble);
        let path = self.path.display();
        match trouble {
            Trouble::TooLarge => tracing::warn!("the shared rate-limit file {path}: {why}; starting it afresh"),
            Trouble::NotRegular | Trouble::LockHeld | Trouble::Io => tracing::warn!(
                "the shared rate-limit file {path} is not used: {why}; this process keeps its own rate limits meanwhile"
            ),
        }
    }
}

/// The error for a path that is there but is not a regular file.
fn not_regular() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "not a regular file (a symbolic link, a pipe, a device or a directory?)",
    )
}

/// Opens (creating) the regular file at `path`, refusing anything else, and
/// without following a symbolic link or blocking on a FIFO.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = File::options();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    {
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
            return Err(not_regular());
        }
    }
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        #[cfg(unix)]
        Some(libc::ELOOP) | Some(libc::EISDIR) | Some(libc::ENXIO) => not_regular(),
        _ => e,
    })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Whether `path` still names the open `file` (false once it was deleted or
/// replaced); an error when it names something other than a regular file.
fn names(path: &Path, file: &File) -> std::io::Result<bool> {
    let on_disk = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !on_disk.file_type().is_file() {
        return Err(not_regular());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let open = file.metadata()?;
        Ok(open.dev() == on_disk.dev() && open.ino() == on_disk.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(true)
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
    /// Takes the lock, waiting at most `patience` for another holder to
    /// release it (`WouldBlock` then). Non-blocking tries with short sleeps:
    /// a blocking `flock` could not be given up.
    fn exclusive(file: &File, patience: Duration) -> std::io::Result<FileLock> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd as _;
            let fd = file.as_raw_fd();
            let deadline = std::time::Instant::now() + patience;
            let mut nap = Duration::from_millis(1);
            loop {
                // SAFETY: flock on a descriptor this process holds open.
                if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return Ok(FileLock(fd));
                }
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            return Err(e);
                        }
                        std::thread::sleep(nap.min(left));
                        nap = (nap * 2).min(Duration::from_millis(20));
                    }
                    _ => return Err(e),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (file, patience);
            Ok(FileLock(0))
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

    /// A wall clock that stands still at `ms`.
    fn at(ms: u64) -> WallClock {
        Arc::new(move || ms)
    }

    #[test]
    fn state_round_trips_and_prunes_what_no_longer_binds() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap().with_clock(at(100));
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
        let again = Ledger::open(dir.path()).unwrap().with_clock(at(1_000));
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
        assert_eq!(Ledger::open(dir.path()).unwrap().with_clock(at(5)).with(|s| s.paused_until), Some(7));
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

    fn on_disk(dir: &Path) -> Shared {
        serde_json::from_slice(&std::fs::read(dir.join(Ledger::FILE)).unwrap()).unwrap()
    }

    /// A pause or reset a year ahead (a stepped-back clock, or an edit)
    /// counts as the bound, and is written back as such; times of past
    /// events are never in the future.
    #[test]
    fn times_far_ahead_are_believed_only_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let year = 365 * 24 * 3_600_000;
        let mut planted = Shared { paused_until: Some(now + year), ..Shared::default() };
        planted.buckets.insert("b1:7".into(), SharedBucket { limit: 5, remaining: 0, reset_at: now + year });
        planted.busy.insert("GET /channels/{}/messages:7".into(), Holder { pid: 1, owner: 9, since: now + year });
        planted.slots.push(SharedSlot { pid: 1, owner: 9, id: 1, left: now + year, done: Some(u64::MAX) });
        std::fs::write(dir.path().join(Ledger::FILE), serde_json::to_vec(&planted).unwrap()).unwrap();

        let max = Duration::from_secs(600);
        let ledger = Ledger::open(dir.path()).unwrap().with_clock(at(now)).with_max_ahead(max);
        let read = ledger.with(|s| s.clone());
        let latest = now + 600_000;
        assert_eq!(read.paused_until, Some(latest));
        assert_eq!(read.buckets["b1:7"].reset_at, latest);
        assert_eq!(read.busy["GET /channels/{}/messages:7"].since, now);
        assert_eq!((read.slots[0].left, read.slots[0].done), (now, Some(now)));
        assert_eq!(on_disk(dir.path()), read, "the bounded values are written back");
        // Read again later, the written-back bound has aged like any pause.
        let later = Ledger::open(dir.path()).unwrap().with_clock(at(now + 599_000)).with_max_ahead(max);
        assert_eq!(later.with(|s| s.paused_until), Some(latest));
    }

    /// A valid file with many thousands of keys is pruned by the next
    /// decision: expired keys go, and each map keeps the most recent.
    #[test]
    fn expired_and_excess_keys_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let mut planted = Shared::default();
        for i in 0..4_000u64 {
            // Half expired, half resetting later and later.
            let reset_at = if i % 2 == 0 { now - 1 - i } else { now + i };
            planted.buckets.insert(format!("b{i}:1"), SharedBucket { limit: 5, remaining: 0, reset_at });
            planted.bucket_of.insert(format!("GET /route/{i}"), format!("b{i}"));
        }
        planted.bucket_of.insert("x".repeat(MAX_KEY_LEN + 1), "b".into());
        std::fs::write(dir.path().join(Ledger::FILE), serde_json::to_vec(&planted).unwrap()).unwrap();

        Ledger::open(dir.path()).unwrap().with_clock(at(now)).with(|_| ());
        let kept = on_disk(dir.path());
        assert_eq!(kept.buckets.len(), MAX_KEYS);
        assert!(
            kept.buckets.values().all(|b| b.reset_at > now + 4_000 - 2 * MAX_KEYS as u64 - 1),
            "the latest are kept"
        );
        assert_eq!(kept.bucket_of.len(), MAX_KEYS);
        assert!(kept.bucket_of.keys().all(|k| k.len() <= MAX_KEY_LEN));
        // At their fullest, the maps still fit the read cap.
        let mut full = Shared::default();
        let key = |i: usize| format!("{i:0>width$}", width = MAX_KEY_LEN);
        for i in 0..MAX_KEYS {
            let far = u64::MAX;
            full.bucket_of.insert(key(i), key(i));
            full.buckets.insert(key(i), SharedBucket { limit: u32::MAX, remaining: u32::MAX, reset_at: far });
            full.busy.insert(key(i), Holder { pid: u32::MAX, owner: u64::MAX, since: far });
            full.slots.push(SharedSlot { pid: u32::MAX, owner: u64::MAX, id: far, left: far, done: Some(far) });
        }
        assert!((serde_json::to_vec(&full).unwrap().len() as u64) < MAX_BYTES);
    }

    /// A file past the size cap is not parsed (whatever it holds): it reads as
    /// an unreadable one, and the decision starts it afresh.
    #[test]
    fn a_file_past_the_size_cap_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let mut planted = Shared::default();
        for i in 0..30_000 {
            planted.bucket_of.insert(format!("GET /route/{i}"), format!("{i:0>64}"));
        }
        let text = serde_json::to_vec(&planted).unwrap();
        assert!(text.len() as u64 > 2 * MAX_BYTES);
        std::fs::write(dir.path().join(Ledger::FILE), text).unwrap();
        let pause = Duration::from_millis(1_000);
        let read =
            Ledger::open(dir.path()).unwrap().with_clock(at(now)).with_unreadable_pause(pause).with(|s| s.clone());
        // (Compared in short: the whole state would print megabytes.)
        assert_eq!((read.paused_until, read.bucket_of.len()), (Some(now + 1_000), 0));
        assert_eq!(read, Shared { paused_until: Some(now + 1_000), ..Shared::default() });
        assert!(std::fs::metadata(dir.path().join(Ledger::FILE)).unwrap().len() < 100);
        assert_eq!(on_disk(dir.path()), read);
    }

    /// A symbolic link (to `/dev/zero`, to another file), a FIFO or a
    /// directory in the file's place is refused, never read or written through.
    #[cfg(unix)]
    #[test]
    fn only_a_regular_file_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Ledger::FILE);
        let victim = dir.path().join("victim.json");
        let far = Shared { paused_until: Some(u64::MAX / 2), ..Shared::default() };
        let far_text = serde_json::to_vec(&far).unwrap();
        std::fs::write(&victim, &far_text).unwrap();

        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = Ledger::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(Ledger::open(dir.path()).is_err());
        std::fs::remove_file(&path).unwrap();
        let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; creates a FIFO in our own temp dir.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(Ledger::open(dir.path()).is_err());
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(Ledger::open(dir.path()).is_err());
        std::fs::remove_dir(&path).unwrap();

        // Replaced while in use: this decision is made alone, on an empty
        // state, and nothing is written through the link.
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.with(|s| s.paused_until = Some(now_ms() + 5_000));
        for target in [victim.as_path(), Path::new("/dev/zero")] {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(target, &path).unwrap();
            let seen = ledger.with(|s| {
                let seen = s.clone();
                s.paused_until = Some(1);
                seen
            });
            assert_eq!(seen, Shared::default());
            assert_eq!(std::fs::read(&victim).unwrap(), far_text);
        }
        // Once a regular file is back, it is used again.
        std::fs::remove_file(&path).unwrap();
        ledger.with(|s| s.paused_until = Some(now_ms() + 5_000));
        assert!(on_disk(dir.path()).paused_until.is_some());
    }

    /// Two processes keep one file when it is deleted or replaced under them:
    /// each finds it by its path again (re-creating it if gone).
    #[test]
    fn a_deleted_or_replaced_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Ledger::FILE);
        let a = Ledger::open(dir.path()).unwrap();
        let soon = now_ms() + 60_000;
        a.with(|s| s.paused_until = Some(soon));
        std::fs::remove_file(&path).unwrap();
        // A process started after the deletion.
        let b = Ledger::open(dir.path()).unwrap();
        b.with(|s| s.bucket_of.insert("GET /x".into(), "bx".into()));
        assert_eq!(a.with(|s| s.bucket_of.get("GET /x").cloned()), Some("bx".to_owned()));
        // Deleted again: the next decision, of either, re-creates it for both.
        std::fs::remove_file(&path).unwrap();
        a.with(|s| s.paused_until = Some(soon));
        assert!(path.is_file());
        assert_eq!(b.with(|s| s.paused_until), Some(soon));
        // Replaced (renamed over): both read the new one.
        let other = dir.path().join("other.json");
        std::fs::write(&other, br#"{"bucket_of":{"GET /y":"by"}}"#).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(a.with(|s| s.bucket_of.get("GET /y").cloned()), Some("by".to_owned()));
        assert_eq!(b.with(|s| s.bucket_of.get("GET /y").cloned()), Some("by".to_owned()));
    }

    /// A lock held on and on (a process stopped while holding it) costs a
    /// decision made alone, not a hang; later ones do not wait for it again.
    #[cfg(unix)]
    #[test]
    fn a_lock_held_forever_is_not_waited_for_forever() {
        use std::os::unix::io::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
        ledger.with(|s| s.paused_until = Some(now_ms() + 60_000));
        // flock belongs to the open file: another open conflicts, even here.
        let holder = File::open(dir.path().join(Ledger::FILE)).unwrap();
        // SAFETY: flock on a descriptor this test holds open.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let l = ledger.clone();
        std::thread::spawn(move || {
            let first = l.with(|s| std::mem::replace(s, Shared { paused_until: Some(1), ..Shared::default() }));
            let second = l.with(|s| s.clone());
            tx.send((first, second)).unwrap();
        });
        let (first, second) = rx.recv_timeout(Duration::from_secs(60)).expect("the decisions did not wait forever");
        assert_eq!((first, second), (Shared::default(), Shared::default()));
        assert!(on_disk(dir.path()).paused_until.is_some_and(|p| p > 1), "nothing written without the lock");
        drop(holder);
        assert!(ledger.with(|s| s.paused_until).is_some_and(|p| p > 1), "used again once released");
    }
}
