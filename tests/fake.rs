//! The fake server itself behaves like Discord where the loader can tell.

use std::time::Duration;

use fake_discord::Limits;
use serde_json::Value;

use crate::util::*;

async fn get(base: &str, token: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v10{path}"))
        .header("authorization", format!("Bot {token}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn message_pages_are_newest_first_in_every_direction() {
    let limits = Limits { per_route: 1000, ..fast_limits() };
    let fake = start(standard_world(), limits).await;
    let (base, token) = (fake.base_url(), fake.token());
    let (channel, all): (u64, Vec<u64>) = {
        let w = fake.world();
        let c = w.guilds[0].channel_named("general");
        (c.id, c.messages.iter().map(|m| m.id).collect())
    };
    let newest_first = |ids: &[u64]| ids.windows(2).all(|w| w[0] > w[1]);
    // No cursor: the newest `limit`.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=10")).await;
    let got = ids(&page);
    assert!(newest_first(&got));
    assert_eq!(got, all.iter().rev().take(10).copied().collect::<Vec<_>>());
    // after: the `limit` oldest after X, still newest first.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=5&after={}", all[3])).await;
    assert_eq!(ids(&page), vec![all[8], all[7], all[6], all[5], all[4]]);
    // after a deleted (or any) snowflake works too.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=2&after={}", all[3] + 1)).await;
    assert_eq!(ids(&page), vec![all[5], all[4]]);
    // before: the `limit` newest before X.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=3&before={}", all[10])).await;
    assert_eq!(ids(&page), vec![all[9], all[8], all[7]]);
    // around: both sides of X.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=4&around={}", all[20])).await;
    assert_eq!(ids(&page), vec![all[21], all[20], all[19], all[18]]);
    // Default limit 50; bad input is Discord's 400.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages")).await;
    assert_eq!(ids(&page).len(), 50);
    let (status, _, body) = get(&base, &token, &format!("/channels/{channel}/messages?limit=101")).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(50035)));
    // REST messages carry no guild_id; replies carry the referenced message.
    let (_, _, page) = get(&base, &token, &format!("/channels/{channel}/messages?limit=100&after=0")).await;
    let reply = page.as_array().unwrap().iter().find(|m| m["type"] == 19).expect("a reply in the first 100");
    assert!(reply.get("guild_id").is_none());
    assert_eq!(reply["referenced_message"]["id"], reply["message_reference"]["message_id"]);
}

#[tokio::test]
async fn errors_use_discord_codes() {
    let fake = start(standard_world(), Limits { per_route: 1000, ..fast_limits() }).await;
    let (base, token) = (fake.base_url(), fake.token());
    let (stale, deleted) = {
        let w = fake.world();
        (w.guilds[0].channel_named("stale-perms").id, w.guilds[0].channel_named("deleted").id)
    };
    let (status, _, body) = get(&base, &token, &format!("/channels/{stale}/messages")).await;
    assert_eq!((status, body["code"].as_u64()), (403, Some(50001)));
    let (status, _, body) = get(&base, &token, &format!("/channels/{deleted}/messages")).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(10003)));
    let (status, _, body) = get(&base, &token, "/guilds/1").await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(10004)));
    let (status, _, _) = get(&base, "wrong", "/users/@me").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn buckets_count_per_channel_and_overruns_get_429_with_retry_after() {
    let limits =
        Limits { per_route: 3, window: Duration::from_secs(30), global_per_second: 1000, archived_page_size: 100 };
    let fake = start(standard_world(), limits).await;
    let (base, token) = (fake.base_url(), fake.token());
    let (a, b) = {
        let w = fake.world();
        (w.guilds[0].channel_named("general").id, w.guilds[0].channel_named("help").id)
    };
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, h, _) = get(&base, &token, &format!("/channels/{a}/messages?limit=1")).await;
        assert_eq!(status, 200);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert!(h.contains_key("x-ratelimit-bucket") && h.contains_key("x-ratelimit-reset"));
        let after: f64 = h["x-ratelimit-reset-after"].to_str().unwrap().parse().unwrap();
        assert!(after > 0.0 && after <= 30.0);
        remaining.push(h["x-ratelimit-remaining"].to_str().unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let (status, h, body) = get(&base, &token, &format!("/channels/{a}/messages?limit=1")).await;
    assert_eq!(status, 429);
    assert_eq!(h["x-ratelimit-scope"], "user");
    assert!(h.contains_key("retry-after"));
    assert!(body["retry_after"].as_f64().unwrap() > 0.0 && body["global"] == false);
    // Another channel's bucket is untouched.
    let (status, h, _) = get(&base, &token, &format!("/channels/{b}/messages?limit=1")).await;
    assert_eq!((status, h["x-ratelimit-remaining"].to_str().unwrap()), (200, "2"));
    let provoked: Vec<_> = fake.requests().into_iter().filter(|r| r.provoked_429()).collect();
    assert_eq!(provoked.len(), 1);
}

#[tokio::test]
async fn archived_threads_page_by_archive_time() {
    let fake = start(standard_world(), Limits { per_route: 1000, ..fast_limits() }).await;
    let (base, token) = (fake.base_url(), fake.token());
    let general = fake.world().guilds[0].channel_named("general").id;
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let q = before.as_ref().map(|b| format!("&before={}", urlencode(b))).unwrap_or_default();
        let (status, _, body) =
            get(&base, &token, &format!("/channels/{general}/threads/archived/public?limit=100{q}")).await;
        assert_eq!(status, 200);
        let threads = body["threads"].as_array().unwrap();
        assert!(threads.len() <= 2, "the test limits pages to 2");
        for t in threads {
            assert_eq!(t["thread_metadata"]["archived"], true);
            seen.push(t["name"].as_str().unwrap().to_owned());
        }
        if body["has_more"] != true {
            break;
        }
        before = threads.last().map(|t| t["thread_metadata"]["archive_timestamp"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["old migration", "q3 retro", "tiny archived"]);
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

mod gateway {
    use futures::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    use crate::util::*;

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    async fn next(ws: &mut Ws) -> Option<Value> {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.expect("gateway answers") {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn send(ws: &mut Ws, v: Value) {
        ws.send(Message::Text(v.to_string())).await.unwrap();
    }

    /// The gateway speaks Discord's protocol: HELLO, IDENTIFY → READY and
    /// GUILD_CREATE, heartbeats, dispatches, and RESUME after a close.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identify_dispatch_close_and_resume() {
        let fake = start(standard_world(), fast_limits()).await;
        let url: Value =
            reqwest::get(format!("{}/api/v10/gateway", fake.base_url())).await.unwrap().json().await.unwrap();
        let url = url["url"].as_str().unwrap().to_owned();
        assert_eq!(url, fake.gateway_url());
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?v=10&encoding=json")).await.unwrap();
        let hello = next(&mut ws).await.unwrap();
        assert_eq!(hello["op"], 10);
        assert!(hello["d"]["heartbeat_interval"].as_u64().unwrap() > 0);
        send(&mut ws, json!({"op": 2, "d": {"token": fake.token(), "intents": 33281, "properties": {}}})).await;
        let ready = next(&mut ws).await.unwrap();
        assert_eq!((ready["op"].as_u64(), ready["t"].as_str(), ready["s"].as_u64()), (Some(0), Some("READY"), Some(1)));
        let session = ready["d"]["session_id"].as_str().unwrap().to_owned();
        let created = next(&mut ws).await.unwrap();
        assert_eq!(created["t"], "GUILD_CREATE");
        assert_eq!(created["d"]["id"], guild_id(&fake).to_string());
        assert!(!created["d"]["channels"].as_array().unwrap().is_empty());
        send(&mut ws, json!({"op": 1, "d": 2})).await;
        assert_eq!(next(&mut ws).await.unwrap()["op"], 11);
        fake.dispatch("MESSAGE_CREATE", json!({"id": "1", "content": "hello"}));
        let event = next(&mut ws).await.unwrap();
        assert_eq!((event["t"].as_str(), event["s"].as_u64()), (Some("MESSAGE_CREATE"), Some(3)));

        // The server closes the connection; an event arrives meanwhile; RESUME replays it.
        fake.close_gateway(4000);
        assert!(next(&mut ws).await.is_none(), "the connection is closed");
        fake.dispatch("MESSAGE_DELETE", json!({"id": "1"}));
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap()["op"], 10);
        send(&mut ws, json!({"op": 6, "d": {"token": fake.token(), "session_id": session, "seq": 3}})).await;
        let missed = next(&mut ws).await.unwrap();
        assert_eq!((missed["t"].as_str(), missed["s"].as_u64()), (Some("MESSAGE_DELETE"), Some(4)));
        assert_eq!(next(&mut ws).await.unwrap()["t"], "RESUMED");

        // An unknown session cannot resume; a bad token cannot identify.
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        next(&mut ws).await.unwrap();
        send(&mut ws, json!({"op": 6, "d": {"token": fake.token(), "session_id": "nope", "seq": 1}})).await;
        assert_eq!(next(&mut ws).await.unwrap()["op"], 9);
        send(&mut ws, json!({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})).await;
        assert!(next(&mut ws).await.is_none(), "closed with 4004");
        assert_eq!(fake.gateway_sessions(), 1);
        assert!(!format!("{:?}", fake.gateway_received()).is_empty());
    }
}
