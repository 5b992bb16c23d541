//! Measures `ask` latency (permissions + embedding + vector search + keyword
//! search + fusion) on an embedded store of N points.
//!
//! Builds (once per directory) a guild of 100 channels with 3 messages per
//! chunk (so 3N messages in the archive and its FTS5 index) and N points whose
//! vectors are clustered around real all-MiniLM-L6-v2 embeddings (embedding N
//! chunks for real would take hours at this scale), then asks the retrieval
//! fixture's questions with the real model, as the operator and as a member
//! who may read 80 of the 100 channels. Prints one JSON line.
//!
//! `cargo run --release --example bench_ask -- N DIR MODELS_DIR [QUERIES]`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use discord_indexer::discord::model::Channel;
use discord_indexer::discord::model::{Guild, Message, Raw};
use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::search::{Mode, Query, SearchOptions, Searcher, Timings, Viewer};
use discord_indexer::store::{ChunkRecord, GuildFacts, NewIndex, Store};
use discord_indexer::vector::{Backend, ChunkPayload, Point};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GUILD: u64 = 900_000_000_000_000_001;
const STAFF_ROLE: u64 = 900_000_000_000_000_002;
const USER: u64 = 900_000_000_000_000_003;
const CHANNELS: u64 = 100;
const MODEL: &str = "all-MiniLM-L6-v2";
const PER_CHUNK: u64 = 3;

const COMMON: &str = "the a to and is it i you that of in for on this we have with be not are but just can so \
    what if do was my at or all about like from now there they will one out how get up when know think need \
    yes no me our some would time by any also then see more should could still did make work why which us \
    thanks ok sure maybe today tomorrow yesterday week again please fix fixed broken error issue bug build \
    deploy test tests release branch main merge review pr config server client database query cache logs \
    timeout restart update version install docker image pod cluster node memory cpu disk network dns api \
    key keys token cert login user users team meeting call lunch coffee office home remote weekend friday";

fn text(rng: &mut StdRng, vocab: &[&str], fixture: &[String]) -> String {
    let n = rng.gen_range(5..16);
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        let roll: f64 = rng.gen();
        if roll < 0.75 {
            // Zipf-like over the common words.
            let r: f64 = rng.gen();
            let i = ((vocab.len() as f64).powf(r) - 1.0) as usize;
            words.push(vocab[i.min(vocab.len() - 1)].to_owned());
        } else if roll < 0.93 {
            let s = &fixture[rng.gen_range(0..fixture.len())];
            words.push(s.clone());
        } else {
            words.push(format!("zq{}", rng.gen_range(0..50_000)));
        }
    }
    words.join(" ")
}

fn message(id: u64, channel: u64, author: u64, content: &str) -> Raw<Message> {
    let json = serde_json::json!({
        "id": id.to_string(), "channel_id": channel.to_string(),
        "author": {"id": author.to_string(), "username": format!("user{author}"), "global_name": format!("User {author}"),
                   "discriminator": "0", "avatar": null},
        "content": content, "timestamp": "2024-05-01T12:00:00.000000+00:00", "edited_timestamp": null,
        "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0,
    });
    serde_json::from_str(&json.to_string()).expect("valid message")
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

async fn build(n: u64, dir: &std::path::Path, embedder: &Embedder, fixture_words: &[String], fixture_texts: &[String]) {
    let started = Instant::now();
    let store = Store::open(dir).expect("store");
    let guild: Raw<Guild> = serde_json::from_str(
        &serde_json::json!({"id": GUILD.to_string(), "name": "Bench", "owner_id": "1", "roles": [
            {"id": GUILD.to_string(), "name": "@everyone", "permissions": ((1u64 << 10) | (1 << 16)).to_string(), "position": 0},
            {"id": STAFF_ROLE.to_string(), "name": "Staff", "permissions": "0", "position": 1}]})
        .to_string(),
    )
    .expect("guild");
    let channels: Vec<Raw<Channel>> = (0..CHANNELS)
        .map(|c| {
            let overwrites = if c < 20 {
                serde_json::json!([{"id": GUILD.to_string(), "type": 0, "allow": "0", "deny": (1u64 << 10).to_string()},
                                   {"id": STAFF_ROLE.to_string(), "type": 0, "allow": (1u64 << 10).to_string(), "deny": "0"}])
            } else {
                serde_json::json!([])
            };
            serde_json::from_str(
                &serde_json::json!({"id": (c + 1).to_string(), "guild_id": GUILD.to_string(), "type": 0,
                                    "name": format!("channel-{c}"), "permission_overwrites": overwrites})
                .to_string(),
            )
            .expect("channel")
        })
        .collect();
    store.record_guild(&GuildFacts { guild: &guild, channels: &channels, bot_member: None }).expect("guild saved");

    // Centers: real embeddings of fixture-like texts.
    let mut rng = StdRng::seed_from_u64(5);
    let center_texts: Vec<String> = (0..256)
        .map(|i| {
            if i < fixture_texts.len() {
                fixture_texts[i].clone()
            } else {
                text(&mut rng, &COMMON.split_whitespace().collect::<Vec<_>>(), fixture_words)
            }
        })
        .collect();
    let refs: Vec<&str> = center_texts.iter().map(String::as_str).collect();
    let (centers, _) = embedder.embed(&refs, 16).expect("centers");

    let backend = Backend::new(dir, None, None).expect("backend");
    let collection = backend.open(GUILD, MODEL, 384).await.expect("collection");
    let name = backend.collection_name(GUILD, MODEL);
    store
        .begin_index(
            &NewIndex {
                guild: GUILD,
                model: MODEL,
                key: MODEL,
                backend: "edge",
                collection: &name,
                dim: 384,
                chunking: "{}",
            },
            true,
        )
        .expect("index record");
    let vocab: Vec<&str> = COMMON.split_whitespace().collect();
    let mut pages: Vec<Vec<Raw<Message>>> = (0..CHANNELS).map(|_| Vec::new()).collect();
    let mut points = Vec::new();
    let mut records = Vec::new();
    let base_ms: u64 = 100_000_000_000;
    let mut written_points = 0u64;
    for i in 0..n {
        let channel = 1 + i % CHANNELS;
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        for j in 0..PER_CHUNK {
            let id = ((base_ms + i * 60_000 + j * 1000) << 22) | (channel & 0x3FF);
            let author = 10 + rng.gen_range(0..40);
            let content = text(&mut rng, &vocab, fixture_words);
            lines.push(format!("User {author}: {content}"));
            pages[(channel - 1) as usize].push(message(id, channel, author, &content));
            ids.push(id);
        }
        let c = &centers[rng.gen_range(0..centers.len())];
        let mut v: Vec<f32> = c.iter().map(|x| x + rng.gen_range(-0.08f32..0.08)).collect();
        normalize(&mut v);
        let chunk_id = discord_indexer::chunk::chunk_id(channel, ids[0], 0);
        points.push(Point {
            id: chunk_id,
            vector: v,
            payload: ChunkPayload {
                guild_id: GUILD,
                channel_id: channel,
                channel_name: format!("channel-{}", channel - 1),
                author_names: vec!["User".into()],
                first_message_id: ids[0],
                last_message_id: ids[2],
                start: "2024-05-01T12:00:00Z".into(),
                end: "2024-05-01T12:02:00Z".into(),
                text: lines.join("\n"),
                message_ids: ids.clone(),
                ..Default::default()
            },
        });
        records.push(ChunkRecord {
            chunk_id,
            channel_id: channel,
            first_message_id: ids[0],
            last_message_id: ids[2],
            hash: 0,
            parts: 0,
        });
        let page = &mut pages[(channel - 1) as usize];
        if page.len() >= 99 {
            store.write_page(GUILD, channel, &std::mem::take(page), false).expect("page");
        }
        if points.len() >= 2000 {
            written_points += points.len() as u64;
            collection.upsert(std::mem::take(&mut points)).await.expect("upsert");
            store.record_chunks(GUILD, MODEL, &std::mem::take(&mut records)).expect("records");
            if written_points.is_multiple_of(100_000) {
                collection.persist().await.expect("persist");
                eprintln!("{written_points} points, {:.0}s", started.elapsed().as_secs_f64());
            }
        }
    }
    for (c, page) in pages.into_iter().enumerate() {
        if !page.is_empty() {
            store.write_page(GUILD, c as u64 + 1, &page, true).expect("page");
        }
    }
    collection.upsert(points).await.expect("upsert");
    store.record_chunks(GUILD, MODEL, &records).expect("records");
    let t = Instant::now();
    collection.finish().await.expect("optimize");
    eprintln!("optimize (HNSW) {:.0}s", t.elapsed().as_secs_f64());
    store.complete_index(GUILD, MODEL, store.version().expect("version")).expect("complete");
    store.activate_index(GUILD, MODEL).expect("activate");
    eprintln!(
        "built {n} points / {} messages in {:.0}s; HNSW covers {}",
        n * PER_CHUNK,
        started.elapsed().as_secs_f64(),
        collection.indexed_vectors().await.expect("info")
    );
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(t: &[Timings]) -> serde_json::Value {
    let col = |f: fn(&Timings) -> f64| -> Vec<f64> { t.iter().map(f).collect() };
    let mut total = col(|t| t.total_ms);
    serde_json::json!({
        "p50_ms": pct(&mut total, 0.5), "p99_ms": pct(&mut total, 0.99), "max_ms": pct(&mut total, 1.0),
        "p50_access_ms": pct(&mut col(|t| t.access_ms), 0.5),
        "p50_embed_ms": pct(&mut col(|t| t.embed_ms), 0.5), "p99_embed_ms": pct(&mut col(|t| t.embed_ms), 0.99),
        "p50_vector_ms": pct(&mut col(|t| t.vector_ms), 0.5), "p99_vector_ms": pct(&mut col(|t| t.vector_ms), 0.99),
        "p50_keyword_ms": pct(&mut col(|t| t.keyword_ms), 0.5), "p99_keyword_ms": pct(&mut col(|t| t.keyword_ms), 0.99),
        "p50_fuse_ms": pct(&mut col(|t| t.fuse_ms), 0.5), "p99_fuse_ms": pct(&mut col(|t| t.fuse_ms), 0.99),
    })
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().expect("N").parse().expect("N is a number");
    let dir: PathBuf = args.next().expect("DIR").into();
    let models: PathBuf = args.next().expect("MODELS_DIR").into();
    let queries: usize = args.next().map(|q| q.parse().expect("QUERIES is a number")).unwrap_or(200);

    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/retrieval.json"))
            .expect("fixture"),
    )
    .expect("fixture json");
    let fixture_texts: Vec<String> = fixture["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .flat_map(|c| {
            c["messages"].as_array().expect("messages").iter().map(|m| m["text"].as_str().expect("text").to_owned())
        })
        .collect();
    let mut fixture_words: Vec<String> = fixture_texts
        .iter()
        .flat_map(|t| t.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()))
        .filter(|w| w.len() > 2)
        .collect();
    fixture_words.sort();
    fixture_words.dedup();
    let questions: Vec<String> = fixture["questions"]
        .as_array()
        .expect("questions")
        .iter()
        .map(|q| q["question"].as_str().expect("q").to_owned())
        .collect();

    let embedder = Arc::new(
        Embedder::load(ModelInfo::find(&models, MODEL).expect("model"), candle_core::Device::Cpu).expect("model loads"),
    );
    let marker = dir.join(format!("built-{n}"));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        build(n, &dir, &embedder, &fixture_words, &fixture_texts).await;
        std::fs::write(&marker, "").expect("marker");
    }

    let store = Store::open(&dir).expect("store");
    store.save_member(GUILD, USER, Some(&[])).expect("member");
    let options = SearchOptions { permissions_max_age: Duration::from_secs(86_400), ..SearchOptions::default() };
    let searcher =
        Searcher::new(store, Backend::new(&dir, None, None).expect("backend"), models.clone(), None, options);
    let ask = |q: &str, viewer: Viewer, mode: Mode| Query {
        text: q.to_owned(),
        guilds: vec![GUILD],
        viewer,
        limit: 5,
        mode,
        filters: Default::default(),
    };
    let t = Instant::now();
    searcher.ask(&ask(&questions[0], Viewer::Operator, Mode::Hybrid)).await.expect("ask");
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    // Warm up: every question once in each mode (page cache, SQLite cache).
    for q in &questions {
        for mode in [Mode::Hybrid, Mode::Keyword] {
            searcher.ask(&ask(q, Viewer::User(USER), mode)).await.expect("ask");
        }
    }
    if std::env::var_os("BENCH_ASK_VERBOSE").is_some() {
        for q in &questions {
            let a = searcher.ask(&ask(q, Viewer::User(USER), Mode::Keyword)).await.expect("ask");
            eprintln!("{:7.1} ms keyword  {q:?}", a.timings.keyword_ms);
        }
    }
    let mut out =
        serde_json::json!({"points": n, "messages": n * PER_CHUNK, "queries": queries, "first_ask_ms": cold_ms});
    for (label, viewer, mode) in [
        ("hybrid_operator", Viewer::Operator, Mode::Hybrid),
        ("hybrid_member", Viewer::User(USER), Mode::Hybrid),
        ("vector_member", Viewer::User(USER), Mode::Vector),
        ("keyword_member", Viewer::User(USER), Mode::Keyword),
    ] {
        let mut timings = Vec::new();
        for i in 0..queries {
            let a = searcher.ask(&ask(&questions[i % questions.len()], viewer, mode)).await.expect("ask");
            assert!(
                viewer == Viewer::Operator || a.results.iter().all(|r| r.channel_id > 20),
                "member sees only readable channels"
            );
            timings.push(a.timings);
        }
        out[label] = summary(&timings);
    }
    println!("{out}");
}
