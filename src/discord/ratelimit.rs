//! Client-side rate limiting that reads Discord's headers instead of guessing.
//!
//! Three rules decide when a request may leave:
//! 1. **Per bucket.** Each route (method + template) and its major parameter
//!    (channel or guild id) maps to a bucket that Discord names in
//!    `X-RateLimit-Bucket`. After every answer the bucket's `remaining` and
//!    `reset_after` are recorded; a request whose bucket is known to be empty
//!    waits until the bucket resets, so the loader waits *before* it would be
//!    refused instead of provoking a 429. Requests on one route and major
//!    parameter are serialized, so each one sees the headers of the last.
//! 2. **Global.** At most `global_per_second` requests in any second. A
//!    request holds its slot from the moment it leaves until one second after
//!    its answer arrived. Discord counts a request when it arrives, which is
//!    after it left and before its answer came back, so no second of Discord's
//!    can see more than the limit, however long requests are delayed on the way
//!    (a slower machine or network costs throughput, never a 429).
//! 3. **429.** A 429 is obeyed exactly: `retry_after` from the body (or the
//!    `Retry-After` header) empties the bucket until then, and a global 429
//!    pauses every request of the process.
//!
//! With a [`Ledger`] (the CLI and the bot use one in their data directory),
//! all three are shared with the other processes using it, and with the next
//! run: each decision first merges what the others recorded, and records its
//! own reservation, under the ledger's lock.
//!
//! Every wait is bounded and can be stopped:
//! - No wait is longer than [`MAX_WAIT`] (10 minutes), whoever asks for it: a
//!   header, a 429's `retry_after`, or the shared file (which may be stale,
//!   written before the clock was stepped back, or edited). Discord's own
//!   waits are seconds, and its longest per-route windows minutes; a wait
//!   cut short by the bound costs at most one more 429, which is obeyed.
//! - A wait longer than [`LONG_WAIT`] is logged at the default level: how
//!   long, on which route, and why (a global pause, the route's bucket,
//!   another process's request; and whether the shared file said so).
//! - A wait ends at once when the limiter's stop token is cancelled (the
//!   first Ctrl-C or SIGTERM, see [`super::stop_waiting`]): [`RateLimiter::acquire`]
//!   then gives [`Stopped`] instead of a permit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ledger::{Holder, Ledger, Shared, SharedBucket, SharedSlot};

/// The longest any one wait may be (see the module docs): 10 minutes, the
/// longest window Discord documents for a route (two channel renames per ten
/// minutes); the waits it announces for the routes this client uses are
/// seconds.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Waits longer than this are logged, with their reason.
pub const LONG_WAIT: Duration = Duration::from_secs(3);

/// A wait was cut short by the limiter's stop token (Ctrl-C, SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Who said that a wait is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Discord, in an answer to this limiter.
    Answer,
    /// The shared file: another process (or a stale or edited file).
    Ledger,
}

/// Why a request cannot leave yet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    /// A global 429 paused every request.
    Paused(Origin),
    /// The route's bucket is spent until it resets.
    Bucket(String, Origin),
    /// The global window is full.
    Window,
    /// Another process has a request in flight on this route.
    Busy,
}

/// How long a request must still wait, and why.
#[derive(Debug, Clone, PartialEq)]
struct Wait {
    time: Duration,
    why: Why,
}

impl Wait {
    fn new(time: Duration, why: Why) -> Wait {
        Wait { time, why }
    }
}

/// What is known of one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketState {
    pub limit: u32,
    pub remaining: u32,
    pub reset_at: Instant,
}

impl BucketState {
    /// How long a request must wait before it may use this bucket.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        (self.remaining == 0 && now < self.reset_at).then(|| self.reset_at - now)
    }

    /// Counts a request that is about to leave. A window that has passed is
    /// full again.
    pub fn reserve(&mut self, now: Instant) {
        if now >= self.reset_at {
            self.remaining = self.limit;
        }
        self.remaining = self.remaining.saturating_sub(1);
    }
}

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers {
    pub bucket: Option<String>,
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
    pub retry_after: Option<Duration>,
    pub global: bool,
    pub scope: Option<String>,
}

impl Headers {
    pub fn parse(h: &HeaderMap) -> Headers {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let secs = |name: &str| text(name).and_then(|v| v.parse::<f64>().ok()).and_then(seconds);
        Headers {
            bucket: text("x-ratelimit-bucket").map(str::to_owned),
            limit: text("x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: text("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: secs("x-ratelimit-reset-after"),
            retry_after: secs("retry-after"),
            global: text("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            scope: text("x-ratelimit-scope").map(str::to_owned),
        }
    }

    /// The bucket state these headers describe, as seen at `now`.
    pub fn state(&self, now: Instant) -> Option<BucketState> {
        let remaining = self.remaining?;
        let reset_after = self.reset_after?;
        Some(BucketState { limit: self.limit.unwrap_or(remaining + 1).max(1), remaining, reset_at: now + reset_after })
    }
}

/// Seconds as Discord writes them, as a wait of at most [`MAX_WAIT`] (a
/// value past it would also overflow a `Duration`); `None` if not a number
/// of seconds.
fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())))
}

/// At most `limit` requests in any `period`, where a request counts from when
/// it leaves until `period` after it completes (see the module docs).
#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    period: Duration,
    /// (slot id, completion time; `None` while in flight)
    slots: Vec<(u64, Option<Instant>)>,
    next_id: u64,
}

/// How often to look again when every slot is held by a request in flight.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(5);

impl SlidingWindow {
    pub fn new(limit: u32, period: Duration) -> Self {
        SlidingWindow { limit: limit.max(1) as usize, period, slots: Vec::new(), next_id: 0 }
    }

    /// Takes a slot now (returning its id), or says how long until one may be free.
    pub fn try_acquire(&mut self, now: Instant) -> Result<u64, Duration> {
        self.try_acquire_besides(now, &[])
    }

    /// [`Self::try_acquire`], counting also `others`: slots of other
    /// processes in the window (their completion times; `None` in flight).
    pub fn try_acquire_besides(&mut self, now: Instant, others: &[Option<Instant>]) -> Result<u64, Duration> {
        let period = self.period;
        let live = |done: &Option<Instant>| done.is_none_or(|t| now.saturating_duration_since(t) < period);
        self.slots.retain(|(_, done)| live(done));
        let others: Vec<Option<Instant>> = others.iter().copied().filter(live).collect();
        if self.slots.len() + others.len() < self.limit {
            self.next_id += 1;
            self.slots.push((self.next_id, None));
            return Ok(self.next_id);
        }
        let free_at = self.slots.iter().map(|(_, done)| *done).chain(others).flatten().min();
        Err(free_at.map_or(IN_FLIGHT_POLL, |t| (t + period).saturating_duration_since(now)))
    }

    /// Records that the request holding `slot` completed at `at`.
    pub fn complete(&mut self, slot: u64, at: Instant) {
        if let Some(s) = self.slots.iter_mut().find(|(id, _)| *id == slot) {
            s.1 = Some(at);
        }
    }
}

/// Counters that progress displays read while a load runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
    pub waited_ms: AtomicU64,
    /// Requests currently held back by a rate limit.
    pub waiting: AtomicI64,
    /// Requests currently waiting to be retried after a failure.
    pub retrying: AtomicI64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            waited_ms: self.waited_ms.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed).max(0) as u64,
            retrying: self.retrying.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Requests repeated after a 5xx, timeout or dropped connection.
    pub retries: u64,
    /// Total time requests spent waiting for a rate limit.
    pub waited_ms: u64,
    /// Requests waiting on a rate limit now.
    pub waiting: u64,
    /// Requests waiting to be retried after a failure now.
    pub retrying: u64,
}

/// Identifies one rate-limited resource: a route template and its major parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub template: &'static str,
    pub major: u64,
}

/// The shared limiter of one client.
#[derive(Debug)]
pub struct RateLimiter {
    global: Mutex<SlidingWindow>,
    paused_until: Mutex<Option<(Instant, Origin)>>,
    /// Serializes requests on one route and major parameter.
    routes: Mutex<HashMap<RouteKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Which bucket a route belongs to, learned from `X-RateLimit-Bucket`.
    bucket_of: Mutex<HashMap<&'static str, String>>,
    buckets: Mutex<HashMap<(String, u64), (BucketState, Origin)>>,
    /// The ledger shared with other processes, if any.
    shared: Option<SharedBook>,
    /// Ends every wait when cancelled.
    stop: CancellationToken,
    /// The longest one wait may be.
    max_wait: Duration,
    pub stats: Stats,
}

/// A limiter's place in a [`Ledger`].
#[derive(Debug)]
struct SharedBook {
    ledger: Ledger,
    /// Tells this limiter's slots from other limiters' of the same process.
    owner: u64,
    /// The global window's length.
    period: Duration,
    /// A slot in flight longer than this belongs to a request that died.
    stale: Duration,
}

/// Converts between the limiter's clock and the ledger's wall clock, as read together.
#[derive(Clone, Copy)]
struct Clocks {
    now: Instant,
    now_ms: u64,
}

impl Clocks {
    fn instant(self, ms: u64) -> Instant {
        if ms >= self.now_ms {
            self.now + Duration::from_millis(ms - self.now_ms)
        } else {
            self.now.checked_sub(Duration::from_millis(self.now_ms - ms)).unwrap_or(self.now)
        }
    }

    fn ms(self, t: Instant) -> u64 {
        if t >= self.now {
            self.now_ms + (t - self.now).as_millis() as u64
        } else {
            self.now_ms.saturating_sub((self.now - t).as_millis() as u64)
        }
    }
}

/// Held while a request is in flight. Dropping it (once the answer, or the
/// failure, is in) releases the route and starts its global slot's last second.
pub struct Permit {
    key: RouteKey,
    slot: u64,
    limiter: Arc<RateLimiter>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        self.limiter.global.lock().unwrap().complete(self.slot, now);
        if let Some(book) = &self.limiter.shared {
            let (pid, done) = (std::process::id(), book.ledger.now());
            let route = Shared::route_key(self.key.template, self.key.major);
            book.ledger.with(|s| {
                if let Some(slot) =
                    s.slots.iter_mut().find(|x| x.pid == pid && x.owner == book.owner && x.id == self.slot)
                {
                    slot.done = Some(done);
                }
                if s.busy.get(&route).is_some_and(|h| h.pid == pid && h.owner == book.owner) {
                    s.busy.remove(&route);
                }
            });
        }
    }
}

/// Counts a request in [`Stats::waiting`] while it waits, and its wait in
/// `waited_ms` once it is over (however it ends).
struct WaitingCount<'a> {
    stats: &'a Stats,
    start: Instant,
}

impl<'a> WaitingCount<'a> {
    fn new(stats: &'a Stats, start: Instant) -> Self {
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        WaitingCount { stats, start }
    }
}

impl Drop for WaitingCount<'_> {
    fn drop(&mut self) {
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats.waited_ms.fetch_add(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// How a 429 is to be obeyed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff429 {
    Route(Duration),
    Global(Duration),
}

impl RateLimiter {
    /// `global_per_second` requests per second, counted over `1 s + margin`
    /// (the margin only guards against timer rounding).
    pub fn new(global_per_second: u32, margin: Duration) -> Self {
        RateLimiter {
            global: Mutex::new(SlidingWindow::new(global_per_second, Duration::from_secs(1) + margin)),
            paused_until: Mutex::new(None),
            routes: Mutex::new(HashMap::new()),
            bucket_of: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            shared: None,
            stop: CancellationToken::new(),
            max_wait: MAX_WAIT,
            stats: Stats::default(),
        }
    }

    /// Shares this limiter's knowledge through `ledger` (see the module
    /// docs); `stale`: the longest a request can be in flight.
    pub fn with_ledger(mut self, ledger: Ledger, stale: Duration) -> Self {
        let period = self.global.get_mut().unwrap().period;
        let ledger = ledger.with_unreadable_pause(period).with_max_ahead(self.max_wait);
        self.shared = Some(SharedBook { ledger, owner: rand::random(), period, stale });
        self
    }

    /// Ends every wait of this limiter, and refuses those to come, once
    /// `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Makes `max_wait` the longest any one wait may be (default [`MAX_WAIT`]).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        if let Some(book) = self.shared.take() {
            self.shared = Some(SharedBook { ledger: book.ledger.with_max_ahead(max_wait), ..book });
        }
        self
    }

    fn bucket_key(&self, key: &RouteKey) -> Option<(String, u64)> {
        let hash = self.bucket_of.lock().unwrap().get(key.template)?.clone();
        Some((hash, key.major))
    }

    /// How long a request on `key` must still wait; if none, reserves its
    /// place and returns its global slot (in the ledger too, when shared).
    fn check(&self, key: &RouteKey, now: Instant) -> Result<u64, Wait> {
        let Some(book) = &self.shared else { return self.check_here(key, now, &[]) };
        book.ledger.with(|shared| {
            let clocks = Clocks { now, now_ms: book.ledger.now() };
            shared.prune(clocks.now_ms, book.period, book.stale);
            let route = Shared::route_key(key.template, key.major);
            let pid = std::process::id();
            if shared.busy.get(&route).is_some_and(|h| !(h.pid == pid && h.owner == book.owner)) {
                return Err(Wait::new(IN_FLIGHT_POLL, Why::Busy));
            }
            self.merge(shared, key, clocks);
            let others: Vec<Option<Instant>> =
                shared.others(book.owner).iter().map(|s| s.done.map(|d| clocks.instant(d))).collect();
            let slot = self.check_here(key, now, &others)?;
            shared.slots.push(SharedSlot { pid, owner: book.owner, id: slot, left: clocks.now_ms, done: None });
            shared.busy.insert(route, Holder { pid, owner: book.owner, since: clocks.now_ms });
            if let Some((hash, major)) = self.bucket_key(key) {
                if let Some((b, _)) = self.buckets.lock().unwrap().get(&(hash.clone(), major)) {
                    let bucket =
                        SharedBucket { limit: b.limit, remaining: b.remaining, reset_at: clocks.ms(b.reset_at) };
                    shared.buckets.insert(Shared::bucket_key(&hash, major), bucket);
                }
            }
            Ok(slot)
        })
    }

    /// Takes in what other processes recorded that bears on `key`: its
    /// route's bucket, that bucket's state when more spent than ours, and a
    /// global pause.
    /// The ledger has already bounded what it holds ([`Shared::bound`]).
    fn merge(&self, shared: &Shared, key: &RouteKey, clocks: Clocks) {
        if let Some(until) = shared.paused_until {
            let until = clocks.instant(until);
            let mut paused = self.paused_until.lock().unwrap();
            if paused.is_none_or(|(p, _)| p < until) {
                *paused = Some((until, Origin::Ledger));
            }
        }
        if self.bucket_key(key).is_none() {
            if let Some(hash) = shared.bucket_of.get(key.template) {
                self.bucket_of.lock().unwrap().insert(key.template, hash.clone());
            }
        }
        let Some((hash, major)) = self.bucket_key(key) else { return };
        // Every reservation and every answer is written to the ledger, one
        // request per route at a time: its state is the latest there is.
        let Some(theirs) = shared.buckets.get(&Shared::bucket_key(&hash, major)) else { return };
        let theirs =
            BucketState { limit: theirs.limit, remaining: theirs.remaining, reset_at: clocks.instant(theirs.reset_at) };
        let mut buckets = self.buckets.lock().unwrap();
        // Our own state comes back from the file as we wrote it (to the
        // millisecond): then it is still ours; otherwise another process's.
        let origin = match buckets.get(&(hash.clone(), major)) {
            Some((ours, origin))
                if ours.limit == theirs.limit
                    && ours.remaining == theirs.remaining
                    && ours.reset_at.max(theirs.reset_at) - ours.reset_at.min(theirs.reset_at)
                        <= Duration::from_millis(1) =>
            {
                *origin
            }
            _ => Origin::Ledger,
        };
        buckets.insert((hash, major), (theirs, origin));
    }

    /// [`Self::check`] on this process's knowledge, counting `others`' global slots.
    fn check_here(&self, key: &RouteKey, now: Instant, others: &[Option<Instant>]) -> Result<u64, Wait> {
        if let Some((until, origin)) = *self.paused_until.lock().unwrap() {
            if now < until {
                return Err(Wait::new((until - now).min(self.max_wait), Why::Paused(origin)));
            }
        }
        let bucket = self.bucket_key(key);
        if let Some(bucket) = &bucket {
            if let Some((state, origin)) = self.buckets.lock().unwrap().get(bucket) {
                if let Some(wait) = state.wait(now) {
                    return Err(Wait::new(wait.min(self.max_wait), Why::Bucket(bucket.0.clone(), *origin)));
                }
            }
        }
        let slot =
            self.global.lock().unwrap().try_acquire_besides(now, others).map_err(|w| Wait::new(w, Why::Window))?;
        if let Some(bucket) = bucket {
            if let Some((state, _)) = self.buckets.lock().unwrap().get_mut(&bucket) {
                state.reserve(now);
            }
        }
        Ok(slot)
    }

    /// Waits until a request on `key` may leave and returns the permit to
    /// send it; [`Stopped`] if the stop token is cancelled while it must
    /// wait (a request that need not wait still goes).
    pub async fn acquire(self: &Arc<Self>, key: RouteKey) -> Result<Permit, Stopped> {
        let lock = self.routes.lock().unwrap().entry(key.clone()).or_default().clone();
        let guard = tokio::select! {
            biased;
            guard = lock.lock_owned() => guard,
            _ = self.stop.cancelled() => return Err(Stopped),
        };
        let start = Instant::now();
        let mut waiting: Option<WaitingCount<'_>> = None;
        // The last reason logged: each is said once per request.
        let mut told: Option<Why> = None;
        let slot = loop {
            let wait = match self.check(&key, Instant::now()) {
                Ok(slot) => break slot,
                Err(wait) => wait,
            };
            waiting.get_or_insert_with(|| WaitingCount::new(&self.stats, start));
            let so_far = start.elapsed();
            if (wait.time >= LONG_WAIT || so_far + wait.time >= LONG_WAIT) && told.as_ref() != Some(&wait.why) {
                self.tell(&key, &wait, so_far);
                told = Some(wait.why.clone());
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Err(Stopped),
                _ = tokio::time::sleep(wait.time) => {}
            }
        };
        drop(waiting);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Permit { key, slot, limiter: self.clone(), _guard: guard })
    }

    /// Logs a long wait: how long, on which route, and why.
    fn tell(&self, key: &RouteKey, wait: &Wait, so_far: Duration) {
        let file = || self.shared.as_ref().map_or_else(String::new, |b| b.ledger.path().display().to_string());
        let from_file = |what: &str| {
            format!(
                "{what}, as recorded in {} by another process using this data directory (if none is running, the \
                 system clock may have been set back; no wait is believed beyond {} s)",
                file(),
                self.max_wait.as_secs()
            )
        };
        let why = match &wait.why {
            Why::Paused(Origin::Answer) => "Discord answered 429 with a global rate limit: every request pauses".into(),
            Why::Paused(Origin::Ledger) => from_file("a global rate-limit pause"),
            Why::Bucket(hash, Origin::Answer) => {
                format!("its rate-limit bucket {hash} is spent until it resets (Discord's rate-limit headers)")
            }
            Why::Bucket(hash, Origin::Ledger) => from_file(&format!("its rate-limit bucket {hash} is spent")),
            Why::Window => {
                let limit = self.global.lock().unwrap().limit;
                format!("the global limit of {limit} requests per second is taken by requests in flight")
            }
            Why::Busy => format!("another process using {} has a request in flight on this route", file()),
        };
        let route = match key.major {
            0 => key.template.to_owned(),
            major => format!("{} (major id {major})", key.template),
        };
        if wait.time >= LONG_WAIT {
            tracing::warn!("waiting {:.1} s before the next Discord request {route}: {why}", wait.time.as_secs_f64());
        } else {
            tracing::warn!(
                "still waiting after {:.1} s to send the Discord request {route}: {why}",
                so_far.as_secs_f64()
            );
        }
    }

    /// Records what an answer's headers say about the permit's bucket.
    pub fn update(&self, permit: &Permit, headers: &Headers, now: Instant) {
        let Some(mut state) = headers.state(now) else { return };
        state.reset_at = state.reset_at.min(now + self.max_wait);
        let hash = headers.bucket.clone().unwrap_or_else(|| permit.key.template.to_owned());
        self.bucket_of.lock().unwrap().insert(permit.key.template, hash.clone());
        self.share(&permit.key, &hash, &state, now);
        self.buckets.lock().unwrap().insert((hash, permit.key.major), (state, Origin::Answer));
    }

    /// Records a bucket's state (the freshest: from an answer) in the ledger.
    fn share(&self, key: &RouteKey, hash: &str, state: &BucketState, now: Instant) {
        let Some(book) = &self.shared else { return };
        let clocks = Clocks { now, now_ms: book.ledger.now() };
        let bucket =
            SharedBucket { limit: state.limit, remaining: state.remaining, reset_at: clocks.ms(state.reset_at) };
        book.ledger.with(|s| {
            s.bucket_of.insert(key.template.to_owned(), hash.to_owned());
            s.buckets.insert(Shared::bucket_key(hash, key.major), bucket);
        });
    }

    /// Obeys a 429: decides whom it stops and for how long.
    pub fn on_429(
        &self,
        permit: &Permit,
        headers: &Headers,
        body_retry_after: Option<f64>,
        body_global: bool,
        now: Instant,
    ) -> Backoff429 {
        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let retry = body_retry_after
            .and_then(seconds)
            .or(headers.retry_after)
            .unwrap_or(Duration::from_secs(1))
            .min(self.max_wait);
        let global = body_global || headers.global || headers.scope.as_deref() == Some("global");
        if global {
            let until = now + retry;
            let mut paused = self.paused_until.lock().unwrap();
            if paused.is_none_or(|(p, _)| p < until) {
                *paused = Some((until, Origin::Answer));
            }
            drop(paused);
            if let Some(book) = &self.shared {
                let until = Clocks { now, now_ms: book.ledger.now() }.ms(until);
                book.ledger.with(|s| s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until))));
            }
            Backoff429::Global(retry)
        } else {
            let hash = headers
                .bucket
                .clone()
                .or_else(|| self.bucket_key(&permit.key).map(|(h, _)| h))
                .unwrap_or_else(|| permit.key.template.to_owned());
            self.bucket_of.lock().unwrap().insert(permit.key.template, hash.clone());
            let limit = headers.limit.unwrap_or(1).max(1);
            let state = BucketState { limit, remaining: 0, reset_at: now + retry };
            self.share(&permit.key, &hash, &state, now);
            self.buckets.lock().unwrap().insert((hash, permit.key.major), (state, Origin::Answer));
            Backoff429::Route(retry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_empty_bucket_waits_until_its_reset_and_not_longer() {
        let now = Instant::now();
        let s = BucketState { limit: 5, remaining: 0, reset_at: now + Duration::from_millis(300) };
        assert_eq!(s.wait(now), Some(Duration::from_millis(300)));
        assert_eq!(s.wait(now + Duration::from_millis(300)), None);
        let s = BucketState { remaining: 1, ..s };
        assert_eq!(s.wait(now), None);
    }

    #[test]
    fn reserving_counts_down_and_refills_after_reset() {
        let now = Instant::now();
        let mut s = BucketState { limit: 2, remaining: 1, reset_at: now + Duration::from_secs(1) };
        s.reserve(now);
        assert_eq!(s.remaining, 0);
        assert!(s.wait(now).is_some());
        s.reserve(now + Duration::from_secs(2));
        assert_eq!(s.remaining, 1);
    }

    #[test]
    fn parses_discord_headers() {
        let h = Headers::parse(&headers(&[
            ("X-RateLimit-Limit", "5"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset-After", "0.250"),
            ("X-RateLimit-Bucket", "abcd"),
            ("Retry-After", "1"),
            ("X-RateLimit-Scope", "user"),
        ]));
        assert_eq!(h.limit, Some(5));
        assert_eq!(h.remaining, Some(0));
        assert_eq!(h.reset_after, Some(Duration::from_millis(250)));
        assert_eq!(h.bucket.as_deref(), Some("abcd"));
        assert_eq!(h.retry_after, Some(Duration::from_secs(1)));
        assert!(!h.global);
        let now = Instant::now();
        let s = h.state(now).unwrap();
        assert_eq!(s.wait(now), Some(Duration::from_millis(250)));
        // Answers without rate-limit headers leave the state alone.
        assert_eq!(Headers::parse(&HeaderMap::new()).state(now), None);
    }

    #[test]
    fn sliding_window_admits_limit_per_period() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(1));
        let slots: Vec<u64> = (0..3).map(|_| w.try_acquire(t0).unwrap()).collect();
        // All three in flight: nothing frees until one completes.
        assert_eq!(w.try_acquire(t0 + Duration::from_secs(5)), Err(IN_FLIGHT_POLL));
        // A slot frees one period after its request *completed*, not after it left.
        w.complete(slots[0], t0 + Duration::from_millis(200));
        assert_eq!(w.try_acquire(t0 + Duration::from_millis(400)), Err(Duration::from_millis(800)));
        assert!(w.try_acquire(t0 + Duration::from_millis(1200)).is_ok());
    }

    /// An answer that empties bucket `b1` (5 requests) until `reset_after` seconds pass.
    fn emptied_bucket(reset_after: &str) -> Headers {
        Headers::parse(&headers(&[
            ("X-RateLimit-Limit", "5"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset-After", reset_after),
            ("X-RateLimit-Bucket", "b1"),
        ]))
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_an_empty_bucket_then_goes() {
        let limiter = Arc::new(RateLimiter::new(50, Duration::ZERO));
        let key = RouteKey { template: "GET /channels/{}/messages", major: 7 };
        let permit = limiter.acquire(key.clone()).await.unwrap();
        let h = emptied_bucket("2");
        let t = Instant::now();
        limiter.update(&permit, &h, t);
        drop(permit);
        // Another channel's bucket is separate: no wait.
        let other = limiter.acquire(RouteKey { major: 8, ..key.clone() }).await.unwrap();
        assert_eq!(Instant::now(), t);
        drop(other);
        let _p = limiter.acquire(key).await.unwrap();
        assert_eq!(Instant::now() - t, Duration::from_secs(2));
        assert!(limiter.stats.snapshot().waited_ms >= 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_global_429_pauses_every_route() {
        let limiter = Arc::new(RateLimiter::new(50, Duration::ZERO));
        let a = RouteKey { template: "GET /channels/{}/messages", major: 1 };
        let permit = limiter.acquire(a.clone()).await.unwrap();
        let t = Instant::now();
        let got = limiter.on_429(&permit, &Headers::parse(&HeaderMap::new()), Some(1.5), true, t);
        assert_eq!(got, Backoff429::Global(Duration::from_millis(1500)));
        drop(permit);
        let _b = limiter.acquire(RouteKey { template: "GET /guilds/{}", major: 2 }).await.unwrap();
        assert_eq!(Instant::now() - t, Duration::from_millis(1500));
    }

    /// Two limiters on one ledger (as two processes on one data directory):
    /// the global window and the buckets are theirs together, and a limiter
    /// started after another stopped knows what it had spent. Real time: the
    /// ledger keeps wall-clock times.
    #[tokio::test]
    async fn limiters_sharing_a_ledger_share_the_window_and_the_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let shared = || {
            Arc::new(
                RateLimiter::new(4, Duration::ZERO)
                    .with_ledger(Ledger::open(dir.path()).unwrap(), Duration::from_secs(30)),
            )
        };
        let (a, b) = (shared(), shared());
        let t = std::time::Instant::now();
        for major in 0..4 {
            drop(a.acquire(RouteKey { template: "GET /channels/{}", major }).await.unwrap());
        }
        // The window is full with a's four: b's first waits for one to age out.
        drop(b.acquire(RouteKey { template: "GET /channels/{}", major: 9 }).await.unwrap());
        assert!(t.elapsed() >= Duration::from_millis(990), "{:?}", t.elapsed());

        // A bucket that a's answer emptied holds b back until it resets.
        let key = RouteKey { template: "GET /channels/{}/messages", major: 7 };
        let permit = a.acquire(key.clone()).await.unwrap();
        let h = emptied_bucket("0.6");
        a.update(&permit, &h, Instant::now());
        drop(permit);
        drop(a);
        let t = std::time::Instant::now();
        drop(b.acquire(key.clone()).await.unwrap());
        assert!(t.elapsed() >= Duration::from_millis(500), "{:?}", t.elapsed());

        // A global 429 one of them met pauses a limiter that starts afterwards.
        let permit = b.acquire(RouteKey { template: "GET /guilds/{}", major: 1 }).await.unwrap();
        b.on_429(&permit, &Headers::parse(&HeaderMap::new()), Some(0.5), true, Instant::now());
        drop(permit);
        let c = shared();
        let t = std::time::Instant::now();
        drop(c.acquire(RouteKey { template: "GET /guilds/{}", major: 2 }).await.unwrap());
        assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn global_limit_spreads_requests() {
        let limiter = Arc::new(RateLimiter::new(4, Duration::ZERO));
        let t = Instant::now();
        for major in 0..8 {
            drop(limiter.acquire(RouteKey { template: "GET /channels/{}", major }).await.unwrap());
        }
        // 4 go at once, the next 4 one second later.
        assert_eq!(Instant::now() - t, Duration::from_secs(1));
    }

    /// Captures what is logged at warn level on this thread (tests run on
    /// a current-thread runtime: spawned tasks log here too).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;
        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    impl Logs {
        fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
            let logs = Logs::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .finish();
            (logs, tracing::subscriber::set_default(subscriber))
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// A wall clock for the ledger that moves with tokio's (paused) clock.
    fn wall_from(base: u64) -> super::super::ledger::WallClock {
        let start = Instant::now();
        Arc::new(move || base + start.elapsed().as_millis() as u64)
    }

    const BASE_MS: u64 = 1_700_000_000_000;
    const YEAR_MS: u64 = 365 * 24 * 3_600_000;

    /// A limiter on a ledger in `dir` whose file says `planted`, on tokio's clock.
    fn planted(dir: &std::path::Path, planted: &Shared, stop: &CancellationToken) -> Arc<RateLimiter> {
        std::fs::write(dir.join(Ledger::FILE), serde_json::to_vec(planted).unwrap()).unwrap();
        let ledger = Ledger::open(dir).unwrap().with_clock(wall_from(BASE_MS));
        Arc::new(
            RateLimiter::new(50, Duration::ZERO).with_ledger(ledger, Duration::from_secs(30)).with_stop(stop.clone()),
        )
    }

    /// The shared file says "pause for a year" (a clock stepped back, or an
    /// edit): the wait is the bound, said at the default level with its
    /// reason, and a stop ends it at once.
    #[tokio::test(start_paused = true)]
    async fn a_pause_far_ahead_in_the_shared_file_is_bounded_told_and_stoppable() {
        let (logs, _guard) = Logs::capture();
        let dir = tempfile::tempdir().unwrap();
        let year = Shared { paused_until: Some(BASE_MS + YEAR_MS), ..Shared::default() };
        let key = RouteKey { template: "GET /users/@me", major: 0 };

        let stop = CancellationToken::new();
        let limiter = planted(dir.path(), &year, &stop);
        let t = Instant::now();
        drop(limiter.acquire(key.clone()).await.unwrap());
        let waited = Instant::now() - t;
        assert!(waited >= MAX_WAIT && waited < MAX_WAIT + Duration::from_secs(1), "{waited:?}");
        let told = logs.text();
        assert!(told.contains("waiting 600.0 s") && told.contains("GET /users/@me"), "{told}");
        assert!(told.contains("global rate-limit pause") && told.contains(Ledger::FILE), "{told}");
        assert!(told.contains("clock may have been set back"), "{told}");

        // Again, stopped five seconds into the wait.
        let limiter = planted(dir.path(), &year, &stop);
        let t = Instant::now();
        let waiting = tokio::spawn({
            let (limiter, key) = (limiter.clone(), key.clone());
            async move { limiter.acquire(key).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(limiter.stats.snapshot().waiting, 1);
        stop.cancel();
        assert_eq!(waiting.await.unwrap(), Err(Stopped));
        let waited = Instant::now() - t;
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}: not at once");
        assert_eq!(limiter.stats.snapshot().waiting, 0);
        // Once stopped, a wait ends before it starts.
        let t = Instant::now();
        assert_eq!(limiter.acquire(key).await.map(drop), Err(Stopped));
        assert_eq!(Instant::now(), t);
        // A request that need not wait still goes.
        let free = Arc::new(RateLimiter::new(50, Duration::ZERO).with_stop(stop.clone()));
        assert!(free.acquire(RouteKey { template: "GET /guilds/{}", major: 1 }).await.is_ok());
    }

    /// A route marked busy "since next year" by a live process (pid 1) is
    /// waited for only until such a request would be stale, and the wait
    /// is told once it has lasted a few seconds.
    #[tokio::test(start_paused = true)]
    async fn a_route_busy_from_the_future_is_waited_for_only_until_stale() {
        let (logs, _guard) = Logs::capture();
        let dir = tempfile::tempdir().unwrap();
        let key = RouteKey { template: "GET /channels/{}/messages", major: 7 };
        let mut busy = Shared::default();
        let holder = Holder { pid: 1, owner: 9, since: BASE_MS + YEAR_MS };
        busy.busy.insert(Shared::route_key(key.template, key.major), holder);
        let limiter = planted(dir.path(), &busy, &CancellationToken::new());
        let t = Instant::now();
        drop(limiter.acquire(key).await.unwrap());
        let waited = Instant::now() - t;
        assert!(waited > Duration::from_secs(30) && waited < Duration::from_secs(31), "{waited:?}");
        let told = logs.text();
        assert_eq!(told.matches("still waiting").count(), 1, "{told}");
        assert!(told.contains("another process using") && told.contains("request in flight"), "{told}");
    }

    /// Whatever Discord (or something in its place) announces, no wait is
    /// longer than the bound, and no number of seconds panics.
    #[tokio::test(start_paused = true)]
    async fn waits_announced_by_answers_are_bounded_too() {
        let h = Headers::parse(&headers(&[
            ("X-RateLimit-Limit", "5"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset-After", "1e30"),
            ("Retry-After", "1e300"),
        ]));
        assert_eq!((h.reset_after, h.retry_after), (Some(MAX_WAIT), Some(MAX_WAIT)));
        let limiter = Arc::new(RateLimiter::new(50, Duration::ZERO).with_max_wait(Duration::from_secs(60)));
        let key = RouteKey { template: "GET /channels/{}/messages", major: 7 };
        let permit = limiter.acquire(key.clone()).await.unwrap();
        let t = Instant::now();
        limiter.update(&permit, &h, t);
        assert_eq!(limiter.on_429(&permit, &h, Some(1e30), true, t), Backoff429::Global(Duration::from_secs(60)));
        drop(permit);
        drop(limiter.acquire(key).await.unwrap());
        let waited = Instant::now() - t;
        assert!(waited >= Duration::from_secs(60) && waited < Duration::from_secs(61), "{waited:?}");
    }
}
