//! Test equipment: a faithful fake Discord (REST, gateway) on loopback, for
//! discord-indexer's tests, benchmarks and demo (the `fake-discord` binary).
//! It is not part of the program users install.
//!
//! It serves a generated [`World`] with Discord's semantics: newest-first
//! message pages with `before`/`after`/`around`/`limit`, thread listings
//! (active, archived public/private with ISO 8601 `before` paging), permission
//! errors with Discord's codes, `X-RateLimit-*` headers with per-route,
//! per-major-parameter buckets and a global limit, and 429s with
//! `retry_after` when a client overruns them. A [`Fault`] plan injects 429s,
//! 5xx, dropped connections, slow answers, held requests and 401s. Every
//! request is recorded so tests can assert on the client's behaviour.
//!
//! Attachments have files, served like Discord's CDN by the same server
//! (`/attachments/{channel}/{attachment}/{name}`, no token, not rate limited,
//! faults apply) behind signed links that expire ([`cdn`]: screenshots with
//! text for OCR, photos, and broken, mistyped, oversize and bomb files); `POST
//! /api/v10/attachments/refresh-urls` gives fresh links, as Discord does.

pub mod cdn;
pub mod dce;
mod gateway;
mod http;
mod live;
mod outbox;
mod wire;
pub mod world;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use cdn::{attachment_file, file_bytes, unique_word, FakeAttachment, FakeFile, FakeKind};
pub use live::Invocation;
pub use outbox::Sent;
pub use world::{Access, AccessCast, FakeChannel, FakeGuild, FakeMessage, FakeUser, World, WorldSpec};

/// The rate limits the fake server enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests per bucket window, per route and major parameter.
    pub per_route: u32,
    pub window: Duration,
    /// Requests per second for the whole bot (sliding one-second window).
    pub global_per_second: u32,
    /// Largest page of archived threads the server returns (Discord: 100).
    pub archived_page_size: usize,
}

impl Default for Limits {
    /// Discord-like limits, scaled so tests stay fast: 5 requests per 100 ms
    /// per channel, 50 requests per second overall.
    fn default() -> Self {
        Limits { per_route: 5, window: Duration::from_millis(100), global_per_second: 50, archived_page_size: 100 }
    }
}

/// What a fault does to a request it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and a Discord-style JSON error.
    Status(u16),
    /// A 429 with this `retry_after`, global or for the route's bucket.
    RateLimit { retry_after: Duration, global: bool },
    /// Close the connection without answering.
    Drop,
    /// Answer normally, after this delay.
    Delay(Duration),
    /// Do not answer until [`FakeDiscord::release_held`] (or shutdown).
    Hold,
    /// 401 Unauthorized, as for a revoked token.
    Unauthorized,
}

/// A rule of the fault plan: among the requests whose path contains
/// `path_contains` (all, if `None`), skip the first `skip`, then hit every
/// `every`-th one, at most `times` times.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub path_contains: Option<String>,
    pub skip: u64,
    pub every: u64,
    pub times: Option<u64>,
}

impl Fault {
    /// A fault that hits every matching request.
    pub fn always(kind: FaultKind) -> Fault {
        Fault { kind, path_contains: None, skip: 0, every: 1, times: None }
    }

    pub fn on(mut self, path_contains: &str) -> Fault {
        self.path_contains = Some(path_contains.into());
        self
    }

    pub fn every(mut self, n: u64) -> Fault {
        self.every = n.max(1);
        self
    }

    pub fn after(mut self, skip: u64) -> Fault {
        self.skip = skip;
        self
    }

    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// 1-based arrival order.
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub status: u16,
    /// Milliseconds since the server started.
    pub at_ms: f64,
    /// "ok", "bucket-429" (client overran a bucket), "global-429" (overran the
    /// global limit), or the injected fault's name.
    pub outcome: &'static str,
    /// Whether the request had an `Authorization` header (the CDN needs none).
    pub authorized: bool,
}

impl Recorded {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A 429 the client provoked by overrunning a limit (not an injected one).
    pub fn provoked_429(&self) -> bool {
        matches!(self.outcome, "bucket-429" | "global-429")
    }
}

/// Heartbeat interval the fake gateway asks for (short, so tests see heartbeats).
pub const HEARTBEAT_MS: u64 = 1_000;

/// A running fake server.
pub struct FakeDiscord {
    addr: SocketAddr,
    state: Arc<http::State>,
    gateway: Arc<gateway::Gateway>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeDiscord {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start(world: World, limits: Limits) -> std::io::Result<FakeDiscord> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"), world, limits).await
    }

    pub async fn start_on(addr: SocketAddr, mut world: World, limits: Limits) -> std::io::Result<FakeDiscord> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Attachment links point here, signed with this server's own secret.
        world.links = cdn::Links::served(format!("http://{addr}"), rand::random(), cdn::unix_now());
        let shutdown = CancellationToken::new();
        let (gateway, gateway_listener) = gateway::Gateway::bind(HEARTBEAT_MS).await?;
        let state = Arc::new(http::State::new(world, limits, shutdown.clone(), gateway.url.clone()));
        gateway.serve(gateway_listener, state.clone(), shutdown.clone());
        let task = tokio::spawn(http::serve(listener, state.clone(), shutdown.clone()));
        Ok(FakeDiscord { addr, state, gateway, shutdown, task: Some(task) })
    }

    /// The gateway's `ws://` URL (also what `GET /gateway` answers).
    pub fn gateway_url(&self) -> String {
        self.gateway.url.clone()
    }

    /// Sends a dispatch event (`MESSAGE_CREATE`, `INTERACTION_CREATE`, ...) to
    /// every gateway session; sessions without a connection get it on RESUME.
    pub fn dispatch(&self, event: &str, data: serde_json::Value) {
        self.gateway.dispatch(event, data);
    }

    /// Closes every gateway connection with this close code (4000: unknown
    /// error, resumable); sessions can RESUME.
    pub fn close_gateway(&self, code: u16) {
        self.gateway.close_all(code);
    }

    /// Gateway sessions identified so far.
    pub fn gateway_sessions(&self) -> usize {
        self.gateway.sessions()
    }

    /// Every payload gateway clients sent, in order.
    pub fn gateway_received(&self) -> Vec<serde_json::Value> {
        self.gateway.received.lock().unwrap().clone()
    }

    /// The base URL to give the client (`DISCORD_API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one token this server accepts.
    pub fn token(&self) -> String {
        self.world().token.clone()
    }

    /// The world, for reading ground truth or changing it mid-test.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.state.world.lock().unwrap()
    }

    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap() = faults.into_iter().map(|f| (f, 0, 0)).collect();
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.state.limits.lock().unwrap() = limits;
    }

    /// How long the attachment links in messages last from now on (default:
    /// a day). Links stay the same for that long, then new ones are issued.
    /// Zero or negative: messages carry links that expired `-secs` seconds
    /// ago (issued a day before that). Refreshed links always last a day.
    pub fn set_link_lifetime(&self, secs: i64) {
        self.world().links.set_lifetime(secs, cdn::unix_now());
    }

    /// The link to an attachment as messages carry it now (`None` if no
    /// message in that channel has it).
    pub fn attachment_url(&self, channel_id: u64, attachment_id: u64) -> Option<String> {
        let world = self.world();
        let a = world.find_attachment(channel_id, attachment_id)?;
        Some(world.attachment_url(channel_id, attachment_id, &a.file.filename))
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> u64 {
        self.state.seq.load(Ordering::SeqCst)
    }

    /// Number of requests currently held by a `Hold` fault.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets held requests answer.
    pub fn release_held(&self) {
        let mut release = self.state.release.lock().unwrap();
        release.cancel();
        *release = CancellationToken::new();
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Waits (polling, bounded by `timeout`) until `cond` holds for the server.
    pub async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&FakeDiscord) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cond(self)
    }

    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
