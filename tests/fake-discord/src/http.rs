//! The fake server's HTTP side: routing, rate limits, faults and recording.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cdn::{unix_now, FileCache};
use super::outbox::{parse_body, Outbox};
use super::wire::{
    channel_json, effective_overwrites, error, guild_json, guild_permissions, json_response, member_json, message_json,
    roles_json, user_json, Resp,
};
use super::world::{Access, FakeChannel, FakeGuild, World};
use super::{Fault, FaultKind, Limits, Recorded};
use discord_indexer::discord::model::channel_type;
use discord_indexer::snowflake;

pub(super) struct State {
    pub world: Mutex<World>,
    pub limits: Mutex<Limits>,
    /// (fault, matched, applied)
    pub faults: Mutex<Vec<(Fault, u64, u64)>>,
    pub log: Mutex<Vec<Recorded>>,
    pub seq: AtomicU64,
    pub held: AtomicU64,
    pub release: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    started: Instant,
    buckets: Mutex<HashMap<(&'static str, u64), Window>>,
    global: Mutex<VecDeque<Instant>>,
    /// Where `GET /gateway` sends clients.
    pub gateway_url: String,
    /// What bots sent (interaction responses, messages, commands).
    pub outbox: Mutex<Outbox>,
    /// Rendered attachment files.
    files: FileCache,
}

struct Window {
    count: u32,
    ends: Instant,
}

impl State {
    pub fn new(world: World, limits: Limits, shutdown: CancellationToken, gateway_url: String) -> Self {
        State {
            world: Mutex::new(world),
            limits: Mutex::new(limits),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            held: AtomicU64::new(0),
            release: Mutex::new(CancellationToken::new()),
            shutdown,
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            global: Mutex::new(VecDeque::new()),
            gateway_url,
            outbox: Mutex::default(),
            files: FileCache::default(),
        }
    }
}

pub(super) async fn serve(listener: TcpListener, state: std::sync::Arc<State>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { handle(&state, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Why a request is answered with a closed connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault plan")
    }
}

impl std::error::Error for Dropped {}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().filter(|(k, _)| !k.is_empty()).collect())
        .unwrap_or_default()
}

async fn handle(state: &State, req: Request<Incoming>) -> Result<Resp, Dropped> {
    let seq = state.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let arrived = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query());
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = parse_body(content_type.as_deref(), &bytes);
    let mut record = Recorded {
        seq,
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        status: 0,
        at_ms: arrived.duration_since(state.started).as_secs_f64() * 1000.0,
        outcome: "ok",
        authorized: auth.is_some(),
    };
    let result = answer(state, &method, &path, &query, body, auth.as_deref(), arrived, &mut record).await;
    record.status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    state.log.lock().unwrap().push(record);
    result
}

fn fault_for(state: &State, path: &str) -> Option<FaultKind> {
    let mut faults = state.faults.lock().unwrap();
    let mut hit = None;
    for (fault, matched, applied) in faults.iter_mut() {
        if fault.path_contains.as_deref().is_some_and(|p| !path.contains(p)) {
            continue;
        }
        *matched += 1;
        let n = *matched;
        if hit.is_none()
            && n > fault.skip
            && (n - fault.skip - 1) % fault.every == 0
            && fault.times.is_none_or(|t| *applied < t)
        {
            *applied += 1;
            hit = Some(fault.kind.clone());
        }
    }
    hit
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &State,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Value,
    auth: Option<&str>,
    arrived: Instant,
    record: &mut Recorded,
) -> Result<Resp, Dropped> {
    // The CDN: no token, no rate limits, but faults apply.
    if let Some(rest) = path.strip_prefix("/attachments/") {
        if let Some(faulted) = apply_fault(state, path, "cdn", record).await {
            return faulted;
        }
        return Ok(cdn(state, method, rest, query));
    }
    let Some(rest) = path.strip_prefix("/api/v10").or_else(|| path.strip_prefix("/api/v9")) else {
        return Ok(error(404, 0, "404: Not Found"));
    };
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let (template, major) = route_of(&segments);
    if let Some(faulted) = apply_fault(state, path, template, record).await {
        return faulted;
    }
    // `GET /gateway` needs no token (`/gateway/bot` does).
    if segments == ["gateway"] {
        return Ok(json_response(200, &json!({"url": state.gateway_url})));
    }
    // Interaction responses and their webhooks are authorised by the interaction token.
    if matches!(segments.first(), Some(&"interactions" | &"webhooks")) {
        let world = state.world.lock().unwrap();
        if let Some(resp) = state.outbox.lock().unwrap().tokenless(&world, method, &segments, body) {
            return Ok(resp);
        }
        return Ok(error(404, 0, "404: Not Found"));
    }
    if auth != Some(&format!("Bot {}", state.world.lock().unwrap().token)) {
        return Ok(error(401, 0, "401: Unauthorized"));
    }
    let limits = state.limits.lock().unwrap().clone();
    // The global limit: a sliding one-second window over arrivals.
    {
        let mut global = state.global.lock().unwrap();
        while global.front().is_some_and(|t| arrived.duration_since(*t) >= Duration::from_secs(1)) {
            global.pop_front();
        }
        if global.len() >= limits.global_per_second as usize {
            record.outcome = "global-429";
            let retry = (global[0] + Duration::from_secs(1)).saturating_duration_since(arrived);
            return Ok(too_many(retry, true, template));
        }
        global.push_back(arrived);
    }
    // The route's bucket: a fixed window that starts with its first request.
    let (remaining, reset_after) = {
        let mut buckets = state.buckets.lock().unwrap();
        let w = buckets.entry((template, major)).or_insert(Window { count: 0, ends: arrived });
        if arrived >= w.ends {
            *w = Window { count: 0, ends: arrived + limits.window };
        }
        let reset_after = w.ends - arrived;
        if w.count >= limits.per_route {
            record.outcome = "bucket-429";
            let mut resp = too_many(reset_after, false, template);
            add_bucket_headers(&mut resp, template, limits.per_route, 0, reset_after);
            return Ok(resp);
        }
        w.count += 1;
        (limits.per_route - w.count, reset_after)
    };
    let mut resp = {
        let world = state.world.lock().unwrap();
        match segments.as_slice() {
            ["gateway", "bot"] => json_response(
                200,
                &json!({"url": state.gateway_url, "shards": 1,
                        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
            ),
            ["attachments", "refresh-urls"] if method == "POST" => refresh_urls(&world, &body, record),
            ["attachments", "refresh-urls"] => error(405, 0, "405: Method Not Allowed"),
            _ if method != "GET" => state.outbox.lock().unwrap().authorized(&world, method, &segments, body),
            _ => route(&world, &limits, &segments, query),
        }
    };
    add_bucket_headers(&mut resp, template, limits.per_route, remaining, reset_after);
    Ok(resp)
}

/// Applies the fault plan to a request: `Some` answer when a fault decides
/// it, `None` when it goes on (at once, or after a delay or hold).
async fn apply_fault(
    state: &State,
    path: &str,
    template: &str,
    record: &mut Recorded,
) -> Option<Result<Resp, Dropped>> {
    match fault_for(state, path) {
        None => {}
        Some(FaultKind::Delay(d)) => {
            record.outcome = "delay";
            tokio::time::sleep(d).await;
        }
        Some(FaultKind::Hold) => {
            record.outcome = "hold";
            let release = state.release.lock().unwrap().clone();
            state.held.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = release.cancelled() => {}
                _ = state.shutdown.cancelled() => {}
            }
            state.held.fetch_sub(1, Ordering::SeqCst);
        }
        Some(FaultKind::Drop) => {
            record.outcome = "drop";
            return Some(Err(Dropped));
        }
        Some(FaultKind::Unauthorized) => {
            record.outcome = "unauthorized";
            return Some(Ok(error(401, 0, "401: Unauthorized")));
        }
        Some(FaultKind::Status(status)) => {
            record.outcome = "status";
            let body = json!({"message": format!("{status}: injected"), "code": 0});
            return Some(Ok(json_response(status, &body)));
        }
        Some(FaultKind::RateLimit { retry_after, global }) => {
            record.outcome = "injected-429";
            return Some(Ok(too_many(retry_after, global, template)));
        }
    }
    None
}

/// `GET /attachments/{channel}/{attachment}/{filename}?ex=&is=&hm=`: the
/// file, typed as Discord was told; 404 for an expired or badly signed
/// link and for attachments that do not exist (or no longer do).
fn cdn(state: &State, method: &str, rest: &str, query: &[(String, String)]) -> Resp {
    let gone = || {
        Response::builder()
            .status(404)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"This content is no longer available.")))
            .expect("valid response")
    };
    if method != "GET" && method != "HEAD" {
        return error(405, 0, "405: Method Not Allowed");
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let [channel, attachment, filename] = parts.as_slice() else { return gone() };
    let (Ok(channel), Ok(attachment)) = (channel.parse::<u64>(), attachment.parse::<u64>()) else { return gone() };
    let file = {
        let world = state.world.lock().unwrap();
        if !world.links.accepts(channel, attachment, query, unix_now()) {
            return gone();
        }
        match (world.channel(channel), world.find_attachment(channel, attachment)) {
            (Some((_, c)), Some(a)) if c.access != Access::Gone && a.file.filename == *filename => a.file,
            _ => return gone(),
        }
    };
    // Rendered without holding the world.
    let bytes = state.files.bytes(attachment, &file);
    Response::builder()
        .status(200)
        .header("content-type", file.content_type)
        .header("content-length", bytes.len())
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

/// `POST /attachments/refresh-urls`: a fresh link (a day long) for each of
/// this fake's attachment links, in order; other URLs come back unchanged.
fn refresh_urls(world: &World, body: &Value, record: &mut Recorded) -> Resp {
    let Some(urls) = body.get("attachment_urls").and_then(Value::as_array) else {
        return error(400, 50035, "Invalid Form Body: attachment_urls is required");
    };
    record.query.push(("urls".into(), urls.len().to_string()));
    if urls.len() > 50 {
        return error(400, 50035, "Invalid Form Body: attachment_urls must have at most 50 items");
    }
    let Some(urls) = urls.iter().map(Value::as_str).collect::<Option<Vec<&str>>>() else {
        return error(400, 50035, "Invalid Form Body: attachment_urls must be strings");
    };
    let now = unix_now();
    let refreshed: Vec<Value> = urls
        .into_iter()
        .map(|url| {
            let fresh = world
                .links
                .parse(url)
                .filter(|(channel, attachment, name)| {
                    world.find_attachment(*channel, *attachment).is_some_and(|a| a.file.filename == *name)
                })
                .map(|(channel, attachment, name)| world.links.fresh_url(channel, attachment, &name, now));
            json!({"original": url, "refreshed": fresh.unwrap_or_else(|| url.to_owned())})
        })
        .collect();
    json_response(200, &json!({"refreshed_urls": refreshed}))
}

/// The rate-limit identity of a path: its template and major parameter.
fn route_of(seg: &[&str]) -> (&'static str, u64) {
    let id = |i: usize| seg.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    match seg {
        ["channels", _, "messages"] => ("GET /channels/{}/messages", id(1)),
        ["channels", _, "threads", "archived", _] => ("GET /channels/{}/threads/archived", id(1)),
        ["channels", _] => ("GET /channels/{}", id(1)),
        ["channels", _, "thread-members", _] => ("GET /channels/{}/thread-members/{}", id(1)),
        ["guilds", _, "channels"] => ("GET /guilds/{}/channels", id(1)),
        ["guilds", _, "threads", "active"] => ("GET /guilds/{}/threads/active", id(1)),
        ["guilds", _, "members", _] => ("GET /guilds/{}/members/{}", id(1)),
        ["guilds", _, "roles"] => ("GET /guilds/{}/roles", id(1)),
        ["guilds", _] => ("GET /guilds/{}", id(1)),
        ["attachments", "refresh-urls"] => ("POST /attachments/refresh-urls", 0),
        _ => ("other", 0),
    }
}

fn bucket_hash(template: &str) -> String {
    // A stable opaque id per template, like Discord's.
    let h = template.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

fn add_bucket_headers(resp: &mut Resp, template: &str, limit: u32, remaining: u32, reset_after: Duration) {
    // Round the wait up to the millisecond, as Discord does, so a client that
    // waits exactly this long never arrives early.
    let after_ms = reset_after.as_micros().div_ceil(1000) as f64 / 1000.0;
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() + after_ms;
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", limit.into());
    h.insert("x-ratelimit-remaining", remaining.into());
    h.insert("x-ratelimit-reset", format!("{reset:.3}").parse().expect("header"));
    h.insert("x-ratelimit-reset-after", format!("{after_ms:.3}").parse().expect("header"));
    h.insert("x-ratelimit-bucket", bucket_hash(template).parse().expect("header"));
}

fn too_many(retry_after: Duration, global: bool, template: &str) -> Resp {
    let secs = retry_after.as_micros().div_ceil(1000) as f64 / 1000.0;
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": secs,
        "global": global,
    });
    let mut resp = json_response(429, &body);
    let h = resp.headers_mut();
    h.insert("retry-after", (secs.ceil() as u64).into());
    h.insert("x-ratelimit-scope", if global { "global" } else { "user" }.parse().expect("header"));
    if global {
        h.insert("x-ratelimit-global", "true".parse().expect("header"));
    } else {
        h.insert("x-ratelimit-bucket", bucket_hash(template).parse().expect("header"));
    }
    resp
}

fn route(world: &World, limits: &Limits, seg: &[&str], query: &[(String, String)]) -> Resp {
    let id = |i: usize| seg.get(i).and_then(|s| s.parse::<u64>().ok());
    let q = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    match seg {
        ["users", "@me"] => json_response(200, &user_json(world, world.bot_user)),
        ["applications", "@me"] | ["oauth2", "applications", "@me"] => json_response(
            200,
            &json!({"id": world.application_id.to_string(), "name": "indexer", "flags": world.app_flags,
                    "bot_public": false, "owner": user_json(world, 1)}),
        ),
        ["guilds", _, rest @ ..] => {
            let Some(guild) = id(1).and_then(|g| world.guild(g)) else {
                return error(404, 10004, "Unknown Guild");
            };
            match rest {
                [] => json_response(200, &guild_json(guild)),
                ["roles"] => json_response(200, &Value::Array(roles_json(guild))),
                ["channels"] => json_response(
                    200,
                    &Value::Array(
                        guild.channels.iter().filter(|c| !c.is_thread()).map(|c| channel_json(guild, c)).collect(),
                    ),
                ),
                ["members", user] => match member_json(world, guild, user.parse().unwrap_or(0)) {
                    Some(member) => json_response(200, &member),
                    None => error(404, 10007, "Unknown Member"),
                },
                ["threads", "active"] => {
                    let threads: Vec<Value> = guild
                        .channels
                        .iter()
                        .filter(|c| c.is_thread() && c.archived_at_ms.is_none() && c.access != Access::Gone)
                        .map(|c| channel_json(guild, c))
                        .collect();
                    json_response(200, &json!({"threads": threads, "members": []}))
                }
                _ => error(404, 0, "404: Not Found"),
            }
        }
        ["channels", _, rest @ ..] => {
            let Some((guild, channel)) = id(1).and_then(|c| world.channel(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            match channel.access {
                Access::Gone => return error(404, 10003, "Unknown Channel"),
                Access::Forbidden => return error(403, 50001, "Missing Access"),
                Access::Open => {}
            }
            match rest {
                [] => json_response(200, &channel_json(guild, channel)),
                ["messages"] => messages(world, guild, channel, q("limit"), q("before"), q("after"), q("around")),
                ["thread-members", user] if channel.is_thread() => match user.parse::<u64>() {
                    Ok(user) if channel.members.contains(&user) => json_response(
                        200,
                        &json!({"id": channel.id.to_string(), "user_id": user.to_string(),
                                "join_timestamp": "2024-01-01T00:00:00.000000+00:00", "flags": 0}),
                    ),
                    _ => error(404, 10007, "Unknown Member"),
                },
                ["threads", "archived", kind @ ("public" | "private")] => {
                    let private = *kind == "private";
                    let limit = q("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50).clamp(2, 100);
                    let limit = limit.min(limits.archived_page_size);
                    let before = q("before").and_then(|b| chrono::DateTime::parse_from_rfc3339(b).ok());
                    let mut threads: Vec<&FakeChannel> = guild
                        .channels
                        .iter()
                        .filter(|c| c.parent_id == Some(channel.id) && c.archived_at_ms.is_some())
                        .filter(|c| (c.kind == channel_type::PRIVATE_THREAD) == private)
                        .filter(|c| {
                            before.is_none_or(|b| {
                                archive_ms(c)
                                    < (b.timestamp_millis() as u64).saturating_sub(snowflake::DISCORD_EPOCH_MS)
                            })
                        })
                        .collect();
                    threads.sort_by_key(|c| std::cmp::Reverse(archive_ms(c)));
                    let has_more = threads.len() > limit;
                    threads.truncate(limit);
                    let threads: Vec<Value> = threads.into_iter().map(|c| channel_json(guild, c)).collect();
                    json_response(200, &json!({"threads": threads, "members": [], "has_more": has_more}))
                }
                _ => error(404, 0, "404: Not Found"),
            }
        }
        _ => error(404, 0, "404: Not Found"),
    }
}

fn archive_ms(c: &FakeChannel) -> u64 {
    c.archived_at_ms.unwrap_or(0)
}

fn messages(
    world: &World,
    guild: &FakeGuild,
    ch: &FakeChannel,
    limit: Option<&str>,
    before: Option<&str>,
    after: Option<&str>,
    around: Option<&str>,
) -> Resp {
    if !channel_type::holds_messages(ch.kind) {
        return error(400, 50024, "Cannot execute action on this channel type");
    }
    let limit = match limit.map(str::parse::<usize>) {
        None => 50,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        _ => return error(400, 50035, "Invalid Form Body"),
    };
    let parse = |v: Option<&str>| v.map(|s| s.parse::<u64>().map_err(|_| ()));
    let (before, after, around) = match (parse(before), parse(after), parse(around)) {
        (Some(Err(())), ..) | (_, Some(Err(())), _) | (.., Some(Err(()))) => {
            return error(400, 50035, "Invalid Form Body")
        }
        (b, a, r) => (b.map(Result::unwrap), a.map(Result::unwrap), r.map(Result::unwrap)),
    };
    // Without Read Message History Discord answers an empty list, not an error.
    let bot = world.bot();
    let roles = guild.members.get(&bot.id).cloned().unwrap_or_default();
    let perms = guild_permissions(guild).in_channel(bot.id, &roles, &effective_overwrites(guild, ch));
    if perms & discord_indexer::permissions::READ_MESSAGE_HISTORY == 0 {
        return json_response(200, &json!([]));
    }
    let msgs = &ch.messages;
    let range = match (before, after, around) {
        (None, None, None) => msgs.len().saturating_sub(limit)..msgs.len(),
        (Some(b), None, None) => {
            let end = msgs.partition_point(|m| m.id < b);
            end.saturating_sub(limit)..end
        }
        (None, Some(a), None) => {
            let start = msgs.partition_point(|m| m.id <= a);
            start..(start + limit).min(msgs.len())
        }
        (None, None, Some(r)) => {
            let mid = msgs.partition_point(|m| m.id < r);
            let start = mid.saturating_sub(limit / 2);
            start..(start + limit).min(msgs.len())
        }
        _ => return error(400, 50035, "Invalid Form Body: only one of before, after, around"),
    };
    // Newest first, always, also with `after`.
    let page: Vec<Value> = msgs[range].iter().rev().map(|m| message_json(world, guild, ch, m, true)).collect();
    json_response(200, &Value::Array(page))
}
