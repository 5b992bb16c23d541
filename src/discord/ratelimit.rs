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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::ledger::{now_ms, Holder, Ledger, Shared, SharedBucket, SharedSlot};

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
        let secs = |name: &str| {
            text(name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        };
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
    paused_until: Mutex<Option<Instant>>,
    /// Serializes requests on one route and major parameter.
    routes: Mutex<HashMap<RouteKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Which bucket a route belongs to, learned from `X-RateLimit-Bucket`.
    bucket_of: Mutex<HashMap<&'static str, String>>,
    buckets: Mutex<HashMap<(String, u64), BucketState>>,
    /// The ledger shared with other processes, if any.
    shared: Option<SharedBook>,
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
            let (pid, done) = (std::process::id(), now_ms());
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
            stats: Stats::default(),
        }
    }

    /// Shares this limiter's knowledge through `ledger` (see the module
    /// docs); `stale`: the longest a request can be in flight.
    pub fn with_ledger(mut self, ledger: Ledger, stale: Duration) -> Self {
        let period = self.global.get_mut().unwrap().period;
        let ledger = ledger.with_unreadable_pause(period);
        self.shared = Some(SharedBook { ledger, owner: rand::random(), period, stale });
        self
    }

    fn bucket_key(&self, key: &RouteKey) -> Option<(String, u64)> {
        let hash = self.bucket_of.lock().unwrap().get(key.template)?.clone();
        Some((hash, key.major))
    }

    /// How long a request on `key` must still wait; if none, reserves its
    /// place and returns its global slot (in the ledger too, when shared).
    fn check(&self, key: &RouteKey, now: Instant) -> Result<u64, Duration> {
        let Some(book) = &self.shared else { return self.check_here(key, now, &[]) };
        book.ledger.with(|shared| {
            let clocks = Clocks { now, now_ms: now_ms() };
            shared.prune(clocks.now_ms, book.period, book.stale);
            let route = Shared::route_key(key.template, key.major);
            let pid = std::process::id();
            if shared.busy.get(&route).is_some_and(|h| !(h.pid == pid && h.owner == book.owner)) {
                return Err(IN_FLIGHT_POLL);
            }
            self.merge(shared, key, clocks);
            let others: Vec<Option<Instant>> =
                shared.others(book.owner).iter().map(|s| s.done.map(|d| clocks.instant(d))).collect();
            let slot = self.check_here(key, now, &others)?;
            shared.slots.push(SharedSlot { pid, owner: book.owner, id: slot, left: clocks.now_ms, done: None });
            shared.busy.insert(route, Holder { pid, owner: book.owner, since: clocks.now_ms });
            if let Some((hash, major)) = self.bucket_key(key) {
                if let Some(b) = self.buckets.lock().unwrap().get(&(hash.clone(), major)) {
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
    fn merge(&self, shared: &Shared, key: &RouteKey, clocks: Clocks) {
        if let Some(until) = shared.paused_until {
            let until = clocks.instant(until);
            let mut paused = self.paused_until.lock().unwrap();
            if paused.is_none_or(|p| p < until) {
                *paused = Some(until);
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
        self.buckets.lock().unwrap().insert((hash, major), theirs);
    }

    /// [`Self::check`] on this process's knowledge, counting `others`' global slots.
    fn check_here(&self, key: &RouteKey, now: Instant, others: &[Option<Instant>]) -> Result<u64, Duration> {
        if let Some(until) = *self.paused_until.lock().unwrap() {
            if now < until {
                return Err(until - now);
            }
        }
        let bucket = self.bucket_key(key);
        if let Some(bucket) = &bucket {
            if let Some(wait) = self.buckets.lock().unwrap().get(bucket).and_then(|s| s.wait(now)) {
                return Err(wait);
            }
        }
        let slot = self.global.lock().unwrap().try_acquire_besides(now, others)?;
        if let Some(bucket) = bucket {
            if let Some(state) = self.buckets.lock().unwrap().get_mut(&bucket) {
                state.reserve(now);
            }
        }
        Ok(slot)
    }

    /// Waits until a request on `key` may leave and returns the permit to send it.
    pub async fn acquire(self: &Arc<Self>, key: RouteKey) -> Permit {
        let lock = self.routes.lock().unwrap().entry(key.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        let start = Instant::now();
        let mut waited = false;
        let slot = loop {
            match self.check(&key, Instant::now()) {
                Ok(slot) => break slot,
                Err(wait) => {
                    if !waited {
                        waited = true;
                        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        if waited {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            self.stats.waited_ms.fetch_add(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Permit { key, slot, limiter: self.clone(), _guard: guard }
    }

    /// Records what an answer's headers say about the permit's bucket.
    pub fn update(&self, permit: &Permit, headers: &Headers, now: Instant) {
        let Some(state) = headers.state(now) else { return };
        let hash = headers.bucket.clone().unwrap_or_else(|| permit.key.template.to_owned());
        self.bucket_of.lock().unwrap().insert(permit.key.template, hash.clone());
        self.share(&permit.key, &hash, &state, now);
        self.buckets.lock().unwrap().insert((hash, permit.key.major), state);
    }

    /// Records a bucket's state (the freshest: from an answer) in the ledger.
    fn share(&self, key: &RouteKey, hash: &str, state: &BucketState, now: Instant) {
        let Some(book) = &self.shared else { return };
        let clocks = Clocks { now, now_ms: now_ms() };
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
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .or(headers.retry_after)
            .unwrap_or(Duration::from_secs(1));
        let global = body_global || headers.global || headers.scope.as_deref() == Some("global");
        if global {
            let until = now + retry;
            let mut paused = self.paused_until.lock().unwrap();
            if paused.is_none_or(|p| p < until) {
                *paused = Some(until);
            }
            drop(paused);
            if let Some(book) = &self.shared {
                let until = Clocks { now, now_ms: now_ms() }.ms(until);
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
            self.buckets.lock().unwrap().insert((hash, permit.key.major), state);
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
        let permit = limiter.acquire(key.clone()).await;
        let h = emptied_bucket("2");
        let t = Instant::now();
        limiter.update(&permit, &h, t);
        drop(permit);
        // Another channel's bucket is separate: no wait.
        let other = limiter.acquire(RouteKey { major: 8, ..key.clone() }).await;
        assert_eq!(Instant::now(), t);
        drop(other);
        let _p = limiter.acquire(key).await;
        assert_eq!(Instant::now() - t, Duration::from_secs(2));
        assert!(limiter.stats.snapshot().waited_ms >= 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_global_429_pauses_every_route() {
        let limiter = Arc::new(RateLimiter::new(50, Duration::ZERO));
        let a = RouteKey { template: "GET /channels/{}/messages", major: 1 };
        let permit = limiter.acquire(a.clone()).await;
        let t = Instant::now();
        let got = limiter.on_429(&permit, &Headers::parse(&HeaderMap::new()), Some(1.5), true, t);
        assert_eq!(got, Backoff429::Global(Duration::from_millis(1500)));
        drop(permit);
        let _b = limiter.acquire(RouteKey { template: "GET /guilds/{}", major: 2 }).await;
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
            drop(a.acquire(RouteKey { template: "GET /channels/{}", major }).await);
        }
        // The window is full with a's four: b's first waits for one to age out.
        drop(b.acquire(RouteKey { template: "GET /channels/{}", major: 9 }).await);
        assert!(t.elapsed() >= Duration::from_millis(990), "{:?}", t.elapsed());

        // A bucket that a's answer emptied holds b back until it resets.
        let key = RouteKey { template: "GET /channels/{}/messages", major: 7 };
        let permit = a.acquire(key.clone()).await;
        let h = emptied_bucket("0.6");
        a.update(&permit, &h, Instant::now());
        drop(permit);
        drop(a);
        let t = std::time::Instant::now();
        drop(b.acquire(key.clone()).await);
        assert!(t.elapsed() >= Duration::from_millis(500), "{:?}", t.elapsed());

        // A global 429 one of them met pauses a limiter that starts afterwards.
        let permit = b.acquire(RouteKey { template: "GET /guilds/{}", major: 1 }).await;
        b.on_429(&permit, &Headers::parse(&HeaderMap::new()), Some(0.5), true, Instant::now());
        drop(permit);
        let c = shared();
        let t = std::time::Instant::now();
        drop(c.acquire(RouteKey { template: "GET /guilds/{}", major: 2 }).await);
        assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn global_limit_spreads_requests() {
        let limiter = Arc::new(RateLimiter::new(4, Duration::ZERO));
        let t = Instant::now();
        for major in 0..8 {
            drop(limiter.acquire(RouteKey { template: "GET /channels/{}", major }).await);
        }
        // 4 go at once, the next 4 one second later.
        assert_eq!(Instant::now() - t, Duration::from_secs(1));
    }
}
