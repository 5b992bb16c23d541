//! A small Discord REST client: the one path every request takes, against
//! Discord or against the loopback fake server (only the base URL differs).
//!
//! It owns authentication, the rate limiter (see [`ratelimit`]), retries and
//! the translation of Discord's answers into [`ApiError`]. It knows nothing of
//! the store.
//!
//! Retry schedule for transient failures (5xx, timeouts, dropped connections):
//! attempt `n` (1-based) waits `d/2 + rand(0..d/2)` with `d = min(cap, base·2^(n-1))`
//! ("equal jitter"), for at most `max_tries` attempts in all, and no longer
//! than `patience` from the first (a retry that would start later is not
//! made). Each retry is logged at the default level with what failed, and
//! counted while it waits (`Stats::retrying`) for progress displays. 429s are not
//! failures: they wait exactly what Discord asks and are retried (at most
//! `max_429` times in a row, a guard against a server that never relents).
//!
//! Until the API base has answered once (any HTTP status), a request that
//! cannot connect at all (connection refused, no such host, network
//! unreachable) is tried once more after a short pause and then fails with
//! [`ApiError::Unreachable`], naming the URL and `DISCORD_API_BASE`: a wrong
//! base is said in a second, not after minutes of retries. Once it has
//! answered, connection failures are transient like any other (a blip in the
//! middle of a load is retried on the schedule above). The base itself is
//! checked when the client is made ([`check_api_base`]).
//!
//! No wait is longer than `max_wait` (see [`ratelimit`]), and every wait, for
//! a rate limit or before a retry, ends when the client's stop token is
//! cancelled: by default the process's, which the first Ctrl-C or SIGTERM
//! cancels ([`stop_waiting`]). The request then fails with
//! [`ApiError::Stopped`]; a request that need not wait still goes.

pub mod cdn;
pub mod ledger;
pub mod model;
pub mod ratelimit;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use model::{Application, Channel, ErrorBody, Guild, Member, Message, RateLimitBody, Raw, ThreadList, User};
use ratelimit::{Headers, RateLimiter, RouteKey, StatsSnapshot};

/// Discord's production API base.
pub const DEFAULT_API_BASE: &str = "https://discord.com";
/// The path every request's route follows, after the API base.
pub const API_PATH: &str = "/api/v10";
/// An API base to show in messages about a malformed one (the fake server's shape).
const EXAMPLE_API_BASE: &str = "http://127.0.0.1:3000";
/// The longest pause before the one retry of a first request that could not connect.
const FIRST_CONNECT_RETRY: Duration = Duration::from_millis(500);
/// A first request whose connection failed only after this long (a connect
/// timeout) is not tried again.
const FIRST_CONNECT_QUICK: Duration = Duration::from_secs(2);

/// Checks an API base (`DISCORD_API_BASE`, `api_base`): an absolute
/// `http://` or `https://` URL with a host, such as `https://discord.com` or
/// `http://127.0.0.1:3000`. Returns it trimmed, without trailing slashes.
/// The error says what is wrong with the value, quoted first, and shows a
/// well-formed base: the caller puts the name of the setting in front.
pub fn check_api_base(base: &str) -> Result<String, String> {
    let base = base.trim().trim_end_matches('/');
    let example = |e: &str| format!("e.g. {e} (Discord itself: {DEFAULT_API_BASE})");
    if base.is_empty() {
        return Err(format!("is empty: an API base is an http:// or https:// URL, {}", example(EXAMPLE_API_BASE)));
    }
    let has_scheme = base.contains("://");
    match reqwest::Url::parse(base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(base.to_owned()),
        _ if !has_scheme => {
            // The same with a scheme, when that is a URL.
            let with = format!("http://{base}");
            let with = match reqwest::Url::parse(&with) {
                Ok(url) if url.has_host() => with,
                _ => EXAMPLE_API_BASE.to_owned(),
            };
            Err(format!("{base:?} has no scheme: write it with http:// or https:// in front, {}", example(&with)))
        }
        Ok(url) => Err(format!(
            "{base:?}: only http:// and https:// are supported, not {}://; {}",
            url.scheme(),
            example(EXAMPLE_API_BASE)
        )),
        Err(e) => Err(format!("{base:?} is not a valid URL ({e}); {}", example(EXAMPLE_API_BASE))),
    }
}

/// Messages per page: Discord's maximum.
pub const PAGE_SIZE: u8 = 100;
/// Links per `POST /attachments/refresh-urls`: Discord's maximum.
pub const REFRESH_BATCH: usize = 50;

/// The stop token of every client made without one of its own.
static STOP: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// Ends every rate-limit wait and retry pause of this process's clients (and
/// those to come): the first Ctrl-C or SIGTERM calls it (see
/// `cli::shutdown_on_signal`), so that no wait outlasts a stop.
pub fn stop_waiting() {
    STOP.cancel();
}

/// A bot token. Never printed: `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        let token = token.into();
        let token = token.trim();
        Token(token.strip_prefix("Bot ").unwrap_or(token).to_owned())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn header(&self) -> String {
        format!("Bot {}", self.0)
    }

    /// The token itself, for the one library that needs it (the bot's
    /// gateway and interaction client). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client behaves: all limits Discord does not announce in headers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub api_base: String,
    pub token: Token,
    /// Requests per second for the whole bot (Discord: 50).
    pub global_per_second: u32,
    /// Added to the one-second global window (guards against timer rounding).
    pub global_margin: Duration,
    pub request_timeout: Duration,
    pub max_tries: u32,
    /// How long a request keeps being retried after transient failures.
    pub patience: Duration,
    /// Where to share rate-limit knowledge with other processes and later
    /// runs (a data directory; see [`ledger`]). `None`: this process only.
    pub ledger_dir: Option<std::path::PathBuf>,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_429: u32,
    /// The longest any one rate-limit wait may be, whatever a header, a 429
    /// or the shared file asks for (see [`ratelimit::MAX_WAIT`]).
    pub max_wait: Duration,
    /// Cancelled: every wait ends and the request fails with
    /// [`ApiError::Stopped`]. `None`: the process's ([`stop_waiting`]).
    pub stop: Option<CancellationToken>,
}

impl ClientOptions {
    pub fn new(api_base: impl Into<String>, token: Token) -> Self {
        ClientOptions {
            api_base: api_base.into(),
            token,
            global_per_second: 50,
            global_margin: Duration::from_millis(2),
            request_timeout: Duration::from_secs(30),
            max_tries: 10,
            patience: Duration::from_secs(120),
            ledger_dir: None,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(20),
            max_429: 20,
            max_wait: ratelimit::MAX_WAIT,
            stop: None,
        }
    }
}

/// Why a request did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the token is wrong or revoked. Fatal for every request.
    #[error("Discord rejected the bot token (401 Unauthorized); check DISCORD_TOKEN")]
    Unauthorized,
    /// 403 with Discord's JSON body: this bot may not do this (50001, 50013, ...).
    #[error("forbidden: {message} (code {code})")]
    Forbidden { code: u64, message: String },
    /// 403/429 with a non-JSON body: Cloudflare has banned this IP for a while,
    /// after too many invalid requests. Fatal.
    #[error("Discord's edge refused the request (HTTP {status}, not a Discord answer): this IP is probably temporarily banned after too many invalid requests; wait an hour")]
    Banned { status: u16 },
    /// 404: unknown channel, guild, member... (10003, 10004, ...).
    #[error("not found: {message} (code {code})")]
    NotFound { code: u64, message: String },
    /// Transient failures that did not go away.
    #[error("gave up after {tries} tries: {last}")]
    GaveUp { tries: u32, last: String },
    /// Any other status.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The answer was not the JSON we expected.
    #[error("malformed answer: {0}")]
    Decode(String),
    /// The base URL or request could not be built.
    #[error("bad request setup: {0}")]
    Setup(String),
    /// The API base is not a usable URL (no scheme, another scheme than
    /// http or https): the whole message, naming the setting.
    #[error("{0}")]
    BadApiBase(String),
    /// The client's first request could not connect (connection refused, no
    /// such host, network unreachable), nor its one quick retry: the API base
    /// is wrong, or the network is down. Fatal.
    #[error(
        "cannot reach the Discord API at {url} ({reason}); check DISCORD_API_BASE (unset means Discord itself) and your network"
    )]
    Unreachable { url: String, reason: String },
    /// A stop (Ctrl-C, SIGTERM) ended the request's wait for a rate limit or a retry.
    #[error("stopped while waiting to send a Discord request (rate limit or retry)")]
    Stopped,
}

impl ApiError {
    /// Errors after which no further request can succeed (after a stop,
    /// none that has to wait).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized
                | ApiError::Banned { .. }
                | ApiError::Setup(_)
                | ApiError::BadApiBase(_)
                | ApiError::Unreachable { .. }
                | ApiError::Stopped
        )
    }
}

/// A route: its template (the rate-limit identity), its major parameter and the concrete path.
#[derive(Debug, Clone)]
pub struct Route {
    key: RouteKey,
    path: String,
}

impl Route {
    fn new(template: &'static str, major: u64, path: String) -> Self {
        Route { key: RouteKey { template, major }, path }
    }
}

/// The Discord REST client. Cheap to clone; clones share the rate limiter.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    limiter: Arc<RateLimiter>,
    /// Whether the API base has answered a request (any status) since this
    /// client (or a clone) was made: until then a failure to connect is
    /// said at once (see the module's documentation).
    answered: Arc<AtomicBool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("api_base", &self.options.api_base).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client, ApiError> {
        let base = check_api_base(&options.api_base)
            .map_err(|e| ApiError::BadApiBase(format!("the API base (DISCORD_API_BASE) {e}")))?;
        if options.token.is_empty() {
            return Err(ApiError::Setup("no bot token: set DISCORD_TOKEN or `token` in discord-indexer.toml".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "DiscordBot (https://github.com/discord-indexer/discord-indexer, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Setup(e.to_string()))?;
        let stop = options.stop.clone().unwrap_or_else(|| STOP.clone());
        let mut limiter = RateLimiter::new(options.global_per_second, options.global_margin)
            .with_max_wait(options.max_wait)
            .with_stop(stop.clone());
        if let Some(dir) = &options.ledger_dir {
            match ledger::Ledger::open(dir) {
                Ok(l) => limiter = limiter.with_ledger(l, options.request_timeout + Duration::from_secs(5)),
                Err(e) => tracing::warn!(
                    "cannot share rate limits through {}: {e}; this process keeps its own",
                    dir.join(ledger::Ledger::FILE).display()
                ),
            }
        }
        let limiter = Arc::new(limiter);
        Ok(Client {
            http,
            options: Arc::new(ClientOptions { api_base: base, stop: Some(stop), ..options }),
            limiter,
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.limiter.stats.snapshot()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let o = &self.options;
        let d = o.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(o.retry_cap);
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// Sends a GET and returns the body of a 2xx answer, after rate limits and retries.
    pub async fn get_bytes(&self, route: &Route, query: &[(&str, String)]) -> Result<Bytes, ApiError> {
        self.send(reqwest::Method::GET, route, query, None).await
    }

    /// Sends a request (with a JSON body, if any) and returns the body of a
    /// 2xx answer, after rate limits and retries.
    async fn send(
        &self,
        method: reqwest::Method,
        route: &Route,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, ApiError> {
        let url = format!("{}{API_PATH}{}", self.options.api_base, route.path);
        let (mut tries, mut limited) = (0u32, 0u32);
        let started = Instant::now();
        loop {
            let Ok(permit) = self.limiter.acquire(route.key.clone()).await else {
                return Err(stopped().await);
            };
            let mut request = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .header(reqwest::header::AUTHORIZATION, self.options.token.header());
            if let Some(body) = body {
                request = request.json(body);
            }
            let sent = request.send().await;
            let failure = match sent {
                // Nothing has ever answered: a wrong base or no network,
                // said now rather than after minutes of retries.
                Err(e) if e.is_connect() && !self.answered.load(Ordering::Relaxed) => {
                    drop(permit);
                    tries += 1;
                    let elapsed = started.elapsed();
                    if tries >= 2 || elapsed >= FIRST_CONNECT_QUICK {
                        return Err(ApiError::Unreachable {
                            url: format!("{}{API_PATH}", self.options.api_base),
                            reason: crate::net::connect_failure(&e),
                        });
                    }
                    let wait = self.backoff(1).min(FIRST_CONNECT_RETRY);
                    self.limiter.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "Discord request {} could not connect ({}); one more try in {:.1}s",
                        route.path,
                        crate::net::connect_failure(&e),
                        wait.as_secs_f64()
                    );
                    if self.pause(wait).await {
                        return Err(stopped().await);
                    }
                    continue;
                }
                Err(e) => transport_error(&e),
                Ok(resp) => {
                    self.answered.store(true, Ordering::Relaxed);
                    let now = Instant::now();
                    let headers = Headers::parse(resp.headers());
                    self.limiter.update(&permit, &headers, now);
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => match resp.bytes().await {
                            Ok(body) => return Ok(body),
                            Err(e) => transport_error(&e),
                        },
                        429 => {
                            let body = resp.bytes().await.unwrap_or_default();
                            let Ok(parsed) = serde_json::from_slice::<RateLimitBody>(&body) else {
                                return Err(ApiError::Banned { status });
                            };
                            limited += 1;
                            if limited > self.options.max_429 {
                                return Err(ApiError::GaveUp { tries: limited, last: "429 Too Many Requests".into() });
                            }
                            let wait =
                                self.limiter.on_429(&permit, &headers, Some(parsed.retry_after), parsed.global, now);
                            tracing::debug!(route = route.key.template, major = route.key.major, ?wait, "429");
                            continue;
                        }
                        401 => return Err(ApiError::Unauthorized),
                        403 => {
                            let body = resp.bytes().await.unwrap_or_default();
                            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                                Ok(e) => ApiError::Forbidden { code: e.code, message: e.message },
                                Err(_) => ApiError::Banned { status },
                            });
                        }
                        404 => {
                            let e = resp.json::<ErrorBody>().await.unwrap_or_default();
                            return Err(ApiError::NotFound { code: e.code, message: e.message });
                        }
                        500 | 502 | 503 | 504 => format!("HTTP {status}"),
                        _ => {
                            let body = resp.text().await.unwrap_or_default();
                            return Err(ApiError::Status { status, body: body.chars().take(300).collect() });
                        }
                    }
                }
            };
            drop(permit);
            tries += 1;
            let wait = self.backoff(tries);
            let patience = self.options.patience;
            if tries >= self.options.max_tries || started.elapsed() + wait > patience {
                return Err(ApiError::GaveUp {
                    tries,
                    last: format!(
                        "{failure} (for {:.0}s; [load] patience_secs is {})",
                        started.elapsed().as_secs_f64(),
                        patience.as_secs()
                    ),
                });
            }
            let stats = &self.limiter.stats;
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "Discord request {} failed ({failure}); retrying in {:.1}s (try {} of at most {}, giving up after {}s)",
                route.path,
                wait.as_secs_f64(),
                tries + 1,
                self.options.max_tries,
                patience.as_secs()
            );
            stats.retrying.fetch_add(1, Ordering::Relaxed);
            let stopped_early = self.pause(wait).await;
            stats.retrying.fetch_sub(1, Ordering::Relaxed);
            if stopped_early {
                return Err(stopped().await);
            }
        }
    }

    /// Sleeps `wait` before a retry; true when the stop token ended it early.
    async fn pause(&self, wait: Duration) -> bool {
        let stop = self.options.stop.as_ref().expect("Client::new sets it");
        tokio::select! {
            biased;
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }

    async fn get<T: DeserializeOwned>(&self, route: Route, query: &[(&str, String)]) -> Result<T, ApiError> {
        let body = self.get_bytes(&route, query).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(format!("{}: {e}", route.path)))
    }

    pub async fn current_user(&self) -> Result<User, ApiError> {
        self.get(Route::new("GET /users/@me", 0, "/users/@me".into()), &[]).await
    }

    pub async fn current_application(&self) -> Result<Application, ApiError> {
        self.get(Route::new("GET /applications/@me", 0, "/applications/@me".into()), &[]).await
    }

    pub async fn guild(&self, guild: u64) -> Result<Raw<Guild>, ApiError> {
        self.get(Route::new("GET /guilds/{}", guild, format!("/guilds/{guild}")), &[]).await
    }

    pub async fn channel(&self, channel: u64) -> Result<Raw<Channel>, ApiError> {
        self.get(Route::new("GET /channels/{}", channel, format!("/channels/{channel}")), &[]).await
    }

    pub async fn guild_channels(&self, guild: u64) -> Result<Vec<Raw<Channel>>, ApiError> {
        self.get(Route::new("GET /guilds/{}/channels", guild, format!("/guilds/{guild}/channels")), &[]).await
    }

    pub async fn guild_member(&self, guild: u64, user: u64) -> Result<Member, ApiError> {
        let path = format!("/guilds/{guild}/members/{user}");
        self.get(Route::new("GET /guilds/{}/members/{}", guild, path), &[]).await
    }

    /// Whether a user is a member of a thread (Discord answers 404 when not).
    pub async fn is_thread_member(&self, thread: u64, user: u64) -> Result<bool, ApiError> {
        let path = format!("/channels/{thread}/thread-members/{user}");
        let route = Route::new("GET /channels/{}/thread-members/{}", thread, path);
        match self.get::<serde::de::IgnoredAny>(route, &[]).await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn active_threads(&self, guild: u64) -> Result<ThreadList, ApiError> {
        let path = format!("/guilds/{guild}/threads/active");
        self.get(Route::new("GET /guilds/{}/threads/active", guild, path), &[]).await
    }

    /// One page of a channel's archived threads, newest archived first.
    /// `before` is an ISO 8601 archive timestamp.
    pub async fn archived_threads(
        &self,
        channel: u64,
        private: bool,
        before: Option<&str>,
    ) -> Result<ThreadList, ApiError> {
        let (template, kind) = if private {
            ("GET /channels/{}/threads/archived/private", "private")
        } else {
            ("GET /channels/{}/threads/archived/public", "public")
        };
        let mut query = vec![("limit", "100".to_owned())];
        if let Some(before) = before {
            query.push(("before", before.to_owned()));
        }
        let path = format!("/channels/{channel}/threads/archived/{kind}");
        self.get(Route::new(template, channel, path), &query).await
    }

    /// Fresh signed links for attachment links (Discord's CDN links expire):
    /// `POST /attachments/refresh-urls`, at most [`REFRESH_BATCH`] at a time.
    /// Returns (original, refreshed) pairs; a link Discord does not renew is
    /// left out.
    pub async fn refresh_urls(&self, urls: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        assert!(urls.len() <= REFRESH_BATCH, "at most {REFRESH_BATCH} links per request");
        let route = Route::new("POST /attachments/refresh-urls", 0, "/attachments/refresh-urls".into());
        let body = serde_json::json!({ "attachment_urls": urls });
        let answer = self.send(reqwest::Method::POST, &route, &[], Some(&body)).await?;
        let parsed: model::RefreshedUrls =
            serde_json::from_slice(&answer).map_err(|e| ApiError::Decode(format!("/attachments/refresh-urls: {e}")))?;
        Ok(parsed.refreshed_urls.into_iter().map(|r| (r.original, r.refreshed)).collect())
    }

    /// The API base this client talks to (its host may also serve attachment
    /// files, as the fake server's does).
    pub fn api_base(&self) -> &str {
        &self.options.api_base
    }

    /// Up to `limit` messages with ids greater than `after`, **as Discord
    /// sends them (newest first)**. Callers sort.
    pub async fn messages_after(&self, channel: u64, after: u64, limit: u8) -> Result<Vec<Raw<Message>>, ApiError> {
        let query = [("limit", limit.to_string()), ("after", after.to_string())];
        let path = format!("/channels/{channel}/messages");
        self.get(Route::new("GET /channels/{}/messages", channel, path), &query).await
    }
}

/// [`ApiError::Stopped`], after yielding once: a caller that races the
/// request against its own stop token (`select!` on both, cancelled by the
/// same signal) then sees its token first, and stops as it planned instead
/// of handling an error.
async fn stopped() -> ApiError {
    tokio::task::yield_now().await;
    ApiError::Stopped
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("could not connect: {e}")
    } else {
        format!("connection failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints() {
        let t = Token::new("Bot abc.def.ghi");
        assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <redacted>");
        assert_eq!(t.header(), "Bot abc.def.ghi");
        let o = ClientOptions::new("http://x", t);
        assert!(!format!("{o:?}").contains("abc"));
    }

    #[test]
    fn api_bases_need_an_http_scheme_and_a_host() {
        assert_eq!(check_api_base("https://discord.com/").unwrap(), "https://discord.com");
        assert_eq!(check_api_base(" http://127.0.0.1:3000 ").unwrap(), "http://127.0.0.1:3000");
        for bad in ["127.0.0.1:3000", "localhost:3000/api", "discord.com"] {
            let err = check_api_base(bad).unwrap_err();
            assert!(err.starts_with(&format!("{bad:?} has no scheme")), "{err}");
            assert!(err.contains(&format!("e.g. http://{bad} (Discord itself: {DEFAULT_API_BASE})")), "{err}");
        }
        let err = check_api_base("a b").unwrap_err();
        assert!(err.contains(&format!("e.g. {EXAMPLE_API_BASE}")), "{err}");
        let err = check_api_base("ftp://127.0.0.1:3000").unwrap_err();
        assert!(err.contains("only http:// and https://") && err.contains("ftp://"), "{err}");
        assert!(check_api_base("").unwrap_err().starts_with("is empty"));
        assert!(check_api_base("http://").is_err());
        let err = Client::new(ClientOptions::new("localhost:3000", Token::new("t"))).unwrap_err();
        assert!(matches!(err, ApiError::BadApiBase(_)) && err.is_fatal());
        let err = err.to_string();
        assert!(err.contains("DISCORD_API_BASE") && !err.contains("relative URL"), "{err}");
    }

    /// A port nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A first request that cannot connect fails in about a second, naming
    /// the URL and the setting, whatever the retry settings.
    #[tokio::test]
    async fn a_first_request_that_cannot_connect_fails_at_once() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let c = Client::new(ClientOptions::new(base.clone(), Token::new("t"))).unwrap();
        let t = std::time::Instant::now();
        let err = c.current_user().await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(err.is_fatal());
        let ApiError::Unreachable { url, reason } = &err else { panic!("{err:?}") };
        assert_eq!((url.as_str(), reason.as_str()), (format!("{base}/api/v10").as_str(), "connection refused"));
        let text = err.to_string();
        assert!(text.contains("DISCORD_API_BASE") && text.contains(&base), "{text}");
        assert_eq!(c.stats().retries, 1, "one quick retry");
    }

    /// Once the base has answered, a connection that fails is a blip: retried
    /// on the usual schedule.
    #[tokio::test]
    async fn after_an_answer_connection_failures_are_retried() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            let body = r#"{"id":"1","username":"bot"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            // The listener closes here: later connections are refused.
        });
        let mut o = ClientOptions::new(base, Token::new("t"));
        (o.retry_base, o.retry_cap, o.max_tries) = (Duration::from_millis(5), Duration::from_millis(20), 4);
        let c = Client::new(o).unwrap();
        let _ = c.get_bytes(&Route::new("GET /users/@me", 0, "/users/@me".into()), &[]).await.unwrap();
        server.await.unwrap();
        let err = c.current_user().await.unwrap_err();
        assert!(matches!(&err, ApiError::GaveUp { tries: 4, .. }), "{err:?}");
        assert!(err.to_string().contains("could not connect"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut o = ClientOptions::new("http://127.0.0.1:1", Token::new("t"));
        o.retry_base = Duration::from_millis(100);
        o.retry_cap = Duration::from_millis(1000);
        let c = Client::new(o).unwrap();
        for _ in 0..50 {
            let b1 = c.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = c.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b10 = c.backoff(10);
            assert!(b10 >= Duration::from_millis(500) && b10 <= Duration::from_millis(1000));
        }
    }
}
