//! Live indexing, measured through the bot against the loopback fake Discord
//! server: how long a message posted takes to be found by meaning (a DM
//! `/ask` in vector mode), at a steady rate and after a burst, and how long
//! a deleted message takes to stop being found.
//!
//! The guild is the fake server's standard one (about 3,300 messages),
//! loaded and indexed with all-MiniLM-L6-v2 before the bot starts; the bot
//! runs with its default live indexing (a run a second after a change, or at
//! once for 64 changes). Then:
//!
//! 1. **Steady**: `RATE` messages a second for `STEADY` seconds, spread over
//!    three channels; every two seconds one of them, already found, is
//!    deleted.
//! 2. **Burst**: `BURST` messages posted at once into one channel.
//!
//! Each message carries a unique tag (`ref123z`) before its text, and is
//! "found" when a vector-mode `/ask` with its text, limited to its channel,
//! shows the tag. One poller asks without pause: for the oldest message not
//! yet found, or, once that is found, for one further on (doubling the step
//! while it finds, halving it while it does not). A live run indexes every
//! change stored before it began, so a message counts as found at the first
//! answer that shows it or a message posted after it: an upper bound, within
//! one poll. A deleted message counts as gone when an `/ask` for its text no
//! longer shows its tag. Prints one JSON line.
//!
//! `cargo run --release --example bench_live -- MODELS_DIR [RATE] [STEADY] [BURST] [LINES]`
//!
//! LINES: a file of message texts, one a line (scripts/bench-live.sh writes
//! real chat lines from a DiscordChatExporter dataset); without it, random
//! words, which a semantic model cannot tell apart well.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/bot_bench.rs"]
mod bot_bench;

use discord_indexer::bot::{self, BotOptions};
use fake_discord::{FakeDiscord, Invocation, Limits, World, WorldSpec};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "all-MiniLM-L6-v2";
const WORDS: &str = "account alert archive backup balance banner border branch bridge budget buffer cable cache \
    camera canvas carbon castle cellar channel chapter circle client cloud cluster coffee column comet compass \
    copper cotton crystal cursor dealer debate delta desert device dinner docker domain dragon drawer engine \
    export fabric falcon feature ferry filter finger forest fossil garden gather ginger glacier gravel guitar \
    hammer harbor helmet hollow island jacket jungle kernel kettle ladder lantern laptop launch lemon letter \
    locker magnet marble market meadow mirror module monkey mortar motion napkin needle network noodle ocean \
    office orange oyster paddle palace parcel pepper pillow pilot planet plaster pocket portal powder puzzle \
    rabbit radar random reader record ribbon rocket router saddle salmon sandal schema screen season signal \
    silver socket spider spiral stable statue sticker stream sugar summit tablet teapot temple thread ticket \
    timber tomato tunnel turtle update valley velvet violin wallet walrus window winter wizard yellow zipper";

/// One posted message.
struct Posted {
    id: u64,
    channel: u64,
    text: String,
    tag: String,
    at: Instant,
    found: Option<Instant>,
}

fn percentiles(mut s: Vec<f64>) -> Value {
    if s.is_empty() {
        return json!({"n": 0});
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    json!({"n": s.len(), "p50_s": at(0.5), "p95_s": at(0.95), "max_s": at(1.0)})
}

/// The last message of a phase: one that its own text surely finds, so
/// that the poll always ends (see [`poll`]).
fn sentinel(i: usize) -> (String, String) {
    let tag = format!("ref{i}z");
    (format!("{tag} sentinel: the purple elephant juggles seventeen tangerines on the lighthouse roof"), tag)
}

fn memory_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Bench {
    fake: FakeDiscord,
    user: u64,
    vector: Value,
    /// Every `/ask` the poller made: when, and how long it took.
    asks: Vec<(Instant, f64)>,
}

impl Bench {
    /// One DM `/ask` in vector mode within `channel`; its answer text, less
    /// the question it repeats.
    async fn ask(&mut self, channel: u64, question: &str) -> String {
        let options =
            [("question", json!(question)), ("channel", json!(channel.to_string())), ("mode", self.vector.clone())];
        let token = self.fake.invoke(&Invocation::dm(self.user, "ask", &options));
        let started = Instant::now();
        loop {
            if let Some(t) = self
                .fake
                .replies(&token)
                .iter()
                .map(|s| s.text())
                .find(|t| t.contains("Results for") || t.contains("Nothing"))
            {
                self.asks.push((started, started.elapsed().as_secs_f64()));
                // The results, without the title that repeats the question.
                return t.lines().filter(|l| !l.starts_with("Results for:")).collect::<Vec<_>>().join("\n");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "an /ask went unanswered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `/status` in `channel`: its text.
    async fn status(&self, channel: u64) -> String {
        let token = self.fake.invoke(&Invocation::in_channel(self.user, channel, "status", &[]));
        loop {
            if let Some(t) =
                self.fake.replies(&token).iter().map(|s| s.text()).find(|t| t.to_lowercase().contains("running"))
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A number after `label` in `text` ("... 812 changes" → 812 for " changes").
fn number_before(text: &str, label: &str) -> f64 {
    let at = text.find(label).unwrap_or_else(|| panic!("{label:?} in {text}"));
    let head = &text[..at];
    let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |i| i + 1);
    head[start..].parse().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let models = Path::new(args.get(1).map(String::as_str).unwrap_or("models")).to_path_buf();
    let rate: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20.0);
    let steady_secs: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(180.0);
    let burst: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let lines_file = args.get(5).cloned();
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let limits =
        Limits { per_route: 50, window: Duration::from_millis(50), global_per_second: 5000, archived_page_size: 100 };
    let fake = FakeDiscord::start(world, limits).await?;
    let channels: Vec<u64> =
        ["general", "help", "dev-0"].iter().map(|n| fake.world().guilds[0].channel_named(n).id).collect();
    let prepared = bot_bench::prepare(&fake, Path::new("target/bench-live"), &models, MODEL).await?;
    eprintln!(
        "archive: {} messages, {} chunks indexed in {:.1}s",
        prepared.messages, prepared.chunks, prepared.index_seconds
    );
    let settings = prepared.settings;
    let bot_options = BotOptions { ask_cooldown: Duration::ZERO, ..BotOptions::default() };
    let live_delay = bot_options.live_delay;
    let stop = CancellationToken::new();
    let task = tokio::spawn(bot::run(settings, bot_options, stop.clone()));
    let started = Instant::now();
    while fake.registered_command_id("ask").is_none() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the bot never registered its commands");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vector = {
        let commands = fake.registered_commands();
        let ask =
            commands.iter().flat_map(|(_, c)| c.as_array().cloned().unwrap_or_default()).find(|c| c["name"] == "ask");
        let ask = ask.ok_or_else(|| anyhow::anyhow!("/ask is registered"))?;
        let mode = ask["options"].as_array().into_iter().flatten().find(|o| o["name"] == "mode").cloned();
        let mode = mode.ok_or_else(|| anyhow::anyhow!("/ask has a mode option"))?;
        let choice = mode["choices"].as_array().into_iter().flatten().find(|c| c["name"] == "vector").cloned();
        choice.ok_or_else(|| anyhow::anyhow!("/ask mode offers vector"))?["value"].clone()
    };
    let mut b = Bench { fake, user: cast.staff, vector, asks: Vec::new() };
    // The catch-up that every session begins with.
    while !b.status(channels[0]).await.contains("No job running") {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_start = memory_mb("VmRSS:");
    // Real chat lines when a file of them is given (one a line), else random words.
    let lines: Vec<String> = match &lines_file {
        Some(f) => std::fs::read_to_string(f)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let text = |i: usize, rng: &mut rand::rngs::StdRng| -> (String, String) {
        // The tag leads, so that a snippet of the line always shows it.
        let tag = format!("ref{i}z");
        let body = match lines.get(i % lines.len().max(1)) {
            Some(line) => line.clone(),
            None => (0..7).map(|_| words[rng.gen_range(0..words.len())]).collect::<Vec<_>>().join(" "),
        };
        (format!("{tag} {body}"), tag)
    };

    // 1. Steady: RATE a second for STEADY seconds; a deletion every two seconds.
    let mut posted: Vec<Posted> = Vec::new();
    let mut deleted: Vec<(usize, Instant, Option<Instant>)> = Vec::new();
    let steady_n = (rate * steady_secs) as usize;
    let t0 = Instant::now();
    let mut step = 1usize;
    let mut misses = 0usize;
    let mut next_delete = t0 + Duration::from_secs(5);
    let phase_end = |posted: &Vec<Posted>, n: usize| posted.len() >= n && posted.iter().all(|p| p.found.is_some());
    let mut steady_asks = 0;
    while !(phase_end(&posted, steady_n) && deleted.iter().all(|d| d.2.is_some())) {
        if t0.elapsed() > Duration::from_secs_f64(steady_secs + 120.0) {
            let lo = posted.iter().position(|p| p.found.is_none());
            let open: Vec<usize> = deleted.iter().filter(|d| d.2.is_none()).map(|d| d.0).collect();
            let (i, p) =
                (open.first().copied().or(lo).unwrap_or(0), &posted[open.first().copied().or(lo).unwrap_or(0)]);
            let answer = b.ask(p.channel, &p.text.clone()).await;
            eprintln!("message #{i}: id {} in channel {}", p.id, p.channel);
            panic!(
                "the steady phase never settled: {} of {} found, #{i} ({:?}, {} s old), deletions not \
                 gone {open:?}; /status: {}\nits /ask: {answer}",
                posted.iter().filter(|p| p.found.is_some()).count(),
                posted.len(),
                p.text,
                p.at.elapsed().as_secs(),
                b.status(channels[0]).await
            );
        }
        // Post what is due by now.
        let due = ((t0.elapsed().as_secs_f64() * rate) as usize).min(steady_n);
        while posted.len() < due {
            let i = posted.len();
            let channel = channels[i % channels.len()];
            let (t, tag) = if i + 1 == steady_n { sentinel(i) } else { text(i, &mut rng) };
            let id = b.fake.post_message(channel, cast.plain, &t);
            posted.push(Posted { id, channel, text: t, tag, at: Instant::now(), found: None });
        }
        // Delete one found message every two seconds (while posting).
        if Instant::now() >= next_delete && posted.len() < steady_n {
            next_delete += Duration::from_secs(2);
            let candidates: Vec<usize> =
                (0..posted.len()).filter(|&i| posted[i].found.is_some() && !deleted.iter().any(|d| d.0 == i)).collect();
            if !candidates.is_empty() {
                // Only one that an /ask of its own finds: "gone" must mean gone.
                let i = candidates[rng.gen_range(0..candidates.len())];
                let (channel, question, tag) = (posted[i].channel, posted[i].text.clone(), posted[i].tag.clone());
                if b.ask(channel, &question).await.contains(&tag) {
                    b.fake.delete_message(channel, posted[i].id);
                    deleted.push((i, Instant::now(), None));
                }
            }
        }
        poll(&mut b, &mut posted, &mut step, &mut misses).await;
        for d in deleted.iter_mut().filter(|d| d.2.is_none()) {
            let p = &posted[d.0];
            let (channel, question, tag) = (p.channel, p.text.clone(), p.tag.clone());
            if !b.ask(channel, &question).await.contains(&tag) {
                d.2 = Some(Instant::now());
            }
        }
        steady_asks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let steady_latency: Vec<f64> = posted.iter().map(|p| (p.found.unwrap() - p.at).as_secs_f64()).collect();
    let delete_latency: Vec<f64> = deleted.iter().map(|d| (d.2.unwrap() - d.1).as_secs_f64()).collect();
    let steady_ask_ms: Vec<f64> = b.asks.iter().map(|a| a.1 * 1000.0).collect();
    let status = b.status(channels[0]).await;
    let (changes, tokens) = (number_before(&status, " changes,"), number_before(&status, " tokens a change"));
    let (chunks_steady, runs_steady) = (number_before(&status, " chunks embedded"), number_before(&status, "s in all"));
    let rss_steady = memory_mb("VmRSS:");

    // 2. A burst into one channel, all at once.
    let first = posted.len();
    let burst_start = Instant::now();
    let asks_before = b.asks.len();
    for j in 0..burst {
        let i = first + j;
        let (t, tag) = if j + 1 == burst { sentinel(i) } else { text(i, &mut rng) };
        let id = b.fake.post_message(channels[0], cast.plain, &t);
        posted.push(Posted { id, channel: channels[0], text: t, tag, at: Instant::now(), found: None });
    }
    let posting = burst_start.elapsed().as_secs_f64();
    let mut peak_rss = memory_mb("VmRSS:");
    step = 1;
    misses = 0;
    while !posted.iter().all(|p| p.found.is_some()) {
        assert!(burst_start.elapsed() < Duration::from_secs(1800), "the burst never became searchable");
        poll(&mut b, &mut posted, &mut step, &mut misses).await;
        peak_rss = peak_rss.max(memory_mb("VmRSS:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst_all = burst_start.elapsed().as_secs_f64();
    let burst_latency: Vec<f64> = posted[first..].iter().map(|p| (p.found.unwrap() - p.at).as_secs_f64()).collect();
    let burst_ask_ms: Vec<f64> = b.asks[asks_before..].iter().map(|a| a.1 * 1000.0).collect();
    // Wait for the last run to end, then read what the burst cost.
    let status = loop {
        let s = b.status(channels[0]).await;
        if s.contains("No job running") && !s.contains("not indexed yet") {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runs_burst = number_before(&status, "s in all") - runs_steady;
    let chunks_burst = number_before(&status, " chunks embedded") - chunks_steady;

    // A check of the method: a sample of messages, each asked for by itself.
    let mut sample_found = 0;
    let sample: Vec<usize> =
        (0..100).map(|_| rng.gen_range(0..posted.len())).filter(|i| !deleted.iter().any(|d| d.0 == *i)).collect();
    for &i in &sample {
        let (channel, question, tag) = (posted[i].channel, posted[i].text.clone(), posted[i].tag.clone());
        if b.ask(channel, &question).await.contains(&tag) {
            sample_found += 1;
        }
    }

    stop.cancel();
    let _ = task.await;
    println!(
        "{}",
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "model": MODEL,
            "live_delay_ms": live_delay.map(|d| d.as_millis() as u64),
            "archive_messages": prepared.messages,
            "rate_per_s": rate,
            "steady": {"messages": steady_n, "latency": percentiles(steady_latency), "polls": steady_asks,
                       "ask": percentiles(steady_ask_ms.iter().map(|m| m / 1000.0).collect())},
            "deletes": {"latency": percentiles(delete_latency)},
            "work": {"changes": changes, "tokens_per_change": tokens, "chunks_per_change": chunks_steady / changes.max(1.0),
                     "run_s_per_change": runs_steady / changes.max(1.0)},
            "burst": {"messages": burst, "posting_s": posting, "all_searchable_s": burst_all,
                      "run_s": runs_burst, "chunks": chunks_burst,
                      "latency": percentiles(burst_latency),
                      "ask": percentiles(burst_ask_ms.iter().map(|m| m / 1000.0).collect())},
            "sample": {"asked": sample.len(), "found": sample_found},
            "memory_mb": {"start": rss_start, "after_steady": rss_steady, "peak_during_burst": peak_rss,
                          "high_water": memory_mb("VmHWM:")},
        })
    );
    Ok(())
}

/// One poll: the oldest message not yet found, or one `step` further on
/// (the step doubles while answers find, halves while they do not). A
/// message that its own text does not find (a short or generic line) would
/// hold the oldest place for ever: after each miss there, the next poll tries
/// one message further on, alternately (a later message found vouches for it).
async fn poll(b: &mut Bench, posted: &mut [Posted], step: &mut usize, misses: &mut usize) {
    let Some(lo) = posted.iter().position(|p| p.found.is_none()) else { return };
    let ahead = if *step == 1 && *misses % 2 == 1 { (*misses).div_ceil(2).min(64) } else { 0 };
    let at = (lo + *step - 1 + ahead).min(posted.len() - 1);
    let (channel, question, tag) = (posted[at].channel, posted[at].text.clone(), posted[at].tag.clone());
    let answer = b.ask(channel, &question).await;
    if answer.contains(&tag) {
        let now = Instant::now();
        for p in &mut posted[lo..=at] {
            p.found.get_or_insert(now);
        }
        *step = (*step * 2).min(4096);
        *misses = 0;
    } else {
        *step = (*step / 2).max(1);
        if *step == 1 {
            *misses += 1;
        }
    }
}
