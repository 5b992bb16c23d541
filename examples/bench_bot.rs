//! Measures the bot against the loopback fake Discord server (gateway and
//! REST): how long a message takes from the gateway event to its row in
//! SQLite, how many a burst stores per second, and how long a DM `/ask`
//! takes from INTERACTION_CREATE to the answer the bot sends back.
//!
//! The guild is the fake server's standard one with the permission matrix
//! (about 3,300 messages), loaded and indexed with the model in MODELS_DIR
//! (all-MiniLM-L6-v2) before the bot starts. Prints one JSON line.
//!
//! `cargo run --release --example bench_bot -- MODELS_DIR [MESSAGES] [BURST] [ASKS]`

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/bot_bench.rs"]
mod bot_bench;

use discord_indexer::bot::{self, BotOptions};
use fake_discord::{FakeDiscord, Invocation, Limits, World, WorldSpec};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const MODEL: &str = "all-MiniLM-L6-v2";
const QUESTIONS: [&str; 5] = [
    "how do I rotate the signing keys",
    "the build fails on ARM",
    "who reviews the helm chart",
    "dark mode feature request",
    "slow queries after the migration",
];

fn stored(db: &Path, id: u64) -> bool {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT 1 FROM messages WHERE id = ?1", [id as i64], |_| Ok(())).is_ok()
}

fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    json!({"n": ms.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let models = Path::new(args.get(1).map(String::as_str).unwrap_or("models")).to_path_buf();
    let n_messages: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let burst: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let asks: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);

    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let limits =
        Limits { per_route: 5, window: Duration::from_millis(50), global_per_second: 1000, archived_page_size: 100 };
    let fake = FakeDiscord::start(world, limits).await?;
    let general = fake.world().guilds[0].channel_named("general").id;
    let dir = Path::new("target/bench-bot");
    let db = dir.join("data/archive.db");
    let prepared = bot_bench::prepare(&fake, dir, &models, MODEL).await?;
    eprintln!("indexed {} chunks in {:.1}s", prepared.chunks, prepared.index_seconds);
    let settings = prepared.settings;
    // Live capture alone (live indexing: bench_live).
    let bot_options = BotOptions {
        ask_cooldown: Duration::ZERO,
        index_every: Duration::from_secs(3600),
        live_delay: None,
        ..BotOptions::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(bot::run(settings, bot_options, stop.clone()));
    until(Duration::from_secs(120), || fake.registered_command_id("ask").is_some()).await;
    // Wait for the start-up catch-up (load and index) to end: /status says so.
    loop {
        let token = fake.invoke(&Invocation::in_channel(cast.plain, general, "status", &[]));
        until(Duration::from_secs(120), || fake.replies(&token).iter().any(|s| s.text().contains("unning"))).await;
        if fake.replies(&token).iter().any(|s| s.text().contains("No job running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. One message at a time: gateway event → row in SQLite.
    let mut latencies = Vec::new();
    for i in 0..n_messages {
        let id = fake.post_message(general, cast.plain, &format!("live message number {i} about the release"));
        latencies.push(until(Duration::from_secs(30), || stored(&db, id)).await.as_secs_f64() * 1000.0);
    }
    // 2. A burst: everything at once, until the last is stored.
    let started = Instant::now();
    let mut last = 0;
    for i in 0..burst {
        last = fake.post_message(general, cast.staff, &format!("burst message {i}"));
    }
    // Handlers run concurrently: the last may land before others.
    let count = || -> i64 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT count(*) FROM messages WHERE content LIKE 'burst message %'", [], |r| r.get(0)).unwrap()
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(120),
        until(Duration::from_secs(120), || stored(&db, last) && count() == burst as i64),
    )
    .await;
    let burst_secs = started.elapsed().as_secs_f64();
    let burst_stored = count();

    // 3. DM /ask, as a member who may not read every channel.
    let mut ask_ms = Vec::new();
    for i in 0..asks {
        let q = QUESTIONS[i % QUESTIONS.len()];
        let token = fake.invoke(&Invocation::dm(cast.staff, "ask", &[("question", json!(q))]));
        let took = until(Duration::from_secs(60), || {
            fake.replies(&token).iter().any(|s| s.text().contains("Results for") || s.text().contains("Nothing"))
        })
        .await;
        ask_ms.push(took.as_secs_f64() * 1000.0);
    }

    stop.cancel();
    let _ = task.await;
    println!(
        "{}",
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "archive_messages": prepared.messages,
            "capture": percentiles(latencies),
            "burst": {"messages": burst, "stored": burst_stored, "seconds": burst_secs,
                      "per_second": burst_stored as f64 / burst_secs},
            "ask": percentiles(ask_ms),
        })
    );
    Ok(())
}
