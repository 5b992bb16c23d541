//! The two layouts of a Qdrant server (`[qdrant] layout`) with many guilds:
//! a collection per guild against one collection shared by every guild (the
//! guild a tenant key). Fills `--guilds` guilds of `--points` points each
//! (random unit vectors of `--dim` dimensions, payloads as stage two writes
//! them) through the same client code stage two uses, waits until the server
//! has indexed them (every collection's status green, as its REST API at
//! `--http` says), then times `--queries` searches of random guilds, each
//! limited to its guild. Prints one JSON line: the time to create and fill,
//! to settle, search p50/p99, and the server's memory (the resident size of
//! the process whose pid `QDRANT_NODES` names first, as
//! scripts/qdrant-server.sh sets it).
//!
//! ```text
//! bench_layout --url GRPC_URL --http REST_URL --layout per-guild|shared [--guilds 1000] [--points 1000]
//!              [--dim 384] [--queries 500] [--seed 1] [--batch 256]
//! ```
//!
//! `--batch` is the points handed to one `upsert` call (stage two hands it
//! a whole embedded batch, which the client sends as requests of 256, four
//! at a time).
//!
//! ```text
//! ```

#[path = "common/flags.rs"]
mod flags;

use std::time::{Duration, Instant};

use discord_indexer::vector::{Backend, ChunkPayload, Layout, Point, SearchFilter, ServerOptions};
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| flags::take(&mut args, flag);
    let url = take("--url")?.ok_or_else(|| anyhow::anyhow!("--url GRPC_URL is needed"))?;
    let http = take("--http")?.ok_or_else(|| anyhow::anyhow!("--http REST_URL is needed"))?;
    let layout = match take("--layout")?.as_deref() {
        Some("per-guild") => Layout::PerGuild,
        Some("shared") => Layout::Shared,
        other => anyhow::bail!("--layout per-guild|shared, not {other:?}"),
    };
    let number = |v: Option<String>, default: usize| -> anyhow::Result<usize> {
        Ok(v.map(|v| v.parse()).transpose()?.unwrap_or(default))
    };
    let guilds = number(take("--guilds")?, 1000)?.max(1);
    let points = number(take("--points")?, 1000)?.max(1);
    let dim = number(take("--dim")?, 384)?.max(1);
    let queries = number(take("--queries")?, 500)?.max(1);
    let seed = number(take("--seed")?, 1)? as u64;
    let step = number(take("--batch")?, 256)?.max(1);
    if !args.is_empty() {
        anyhow::bail!("unexpected arguments {args:?}; see the doc comment of examples/bench_layout.rs");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let options = ServerOptions { layout, ..Default::default() };
    let backend = Backend::with_options(std::path::Path::new("."), Some(&url), None, options)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vector = |rng: &mut rand::rngs::StdRng| -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    };
    let guild_id = |g: usize| 100_000_000_000_000_000 + g as u64;

    // Create and fill, a guild at a time, in steps of `--batch` points.
    let started = Instant::now();
    runtime.block_on(async {
        for g in 0..guilds {
            let guild = guild_id(g);
            let collection = backend.open(guild, "bench", dim).await?;
            let mut batch = Vec::with_capacity(step);
            for i in 0..points {
                let first = guild * 4 + i as u64 * 10;
                let payload = ChunkPayload {
                    guild_id: guild,
                    channel_id: guild + 1 + (i % 8) as u64,
                    channel_name: "general".into(),
                    author_ids: vec![7, 8],
                    author_names: vec!["a".into(), "b".into()],
                    message_ids: vec![first, first + 1, first + 2],
                    first_message_id: first,
                    last_message_id: first + 2,
                    text: "a few lines of conversation, about as long as a chunk's".into(),
                    ..Default::default()
                };
                let id = discord_indexer::chunk::chunk_id(payload.channel_id, first, 0);
                batch.push(Point { id, vector: vector(&mut rng), payload });
                if batch.len() == step || i + 1 == points {
                    collection.upsert(std::mem::take(&mut batch)).await?;
                }
            }
        }
        anyhow::Ok(())
    })?;
    let filled = started.elapsed();

    // Settle: until the server has optimized and indexed what it will (every
    // collection's status green, twice half a second apart), at most 20 minutes.
    let settle = Instant::now();
    let names: Vec<String> = {
        let mut n: Vec<String> = (0..guilds).map(|g| backend.collection_name(guild_id(g), "bench")).collect();
        n.dedup();
        n
    };
    let mut indexed = 0u64;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut green_before = false;
        while settle.elapsed() < Duration::from_secs(1200) {
            let mut green = true;
            indexed = 0;
            for name in &names {
                let info: serde_json::Value =
                    client.get(format!("{http}/collections/{name}")).send().await?.json().await?;
                green &= info["result"]["status"] == "green";
                indexed += info["result"]["indexed_vectors_count"].as_u64().unwrap_or(0);
            }
            if green && green_before {
                break;
            }
            green_before = green;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(())
    })?;
    let settled = settle.elapsed();

    // Searches of random guilds, each limited to its guild.
    let mut took = Vec::with_capacity(queries);
    runtime.block_on(async {
        let mut open = std::collections::HashMap::new();
        for _ in 0..queries {
            let g = rng.gen_range(0..guilds);
            let collection = match open.entry(g) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(backend.open_existing(guild_id(g), "bench").await?.expect("filled"))
                }
            };
            let q = vector(&mut rng);
            let t = Instant::now();
            let hits = collection.search(q, SearchFilter::default(), 10).await?;
            took.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(hits.len() == 10.min(points), "{} hits", hits.len());
            anyhow::ensure!(hits.iter().all(|h| h.payload.guild_id == guild_id(g)), "another guild's point");
        }
        anyhow::Ok(())
    })?;
    took.sort_by(f64::total_cmp);
    let pct = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    let rss_kb = std::env::var("QDRANT_NODES").ok().and_then(|nodes| {
        let pid = nodes.split_whitespace().next()?.split(':').next()?.to_owned();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    let body = serde_json::json!({
        "layout": match layout { Layout::PerGuild => "per-guild", Layout::Shared => "shared" },
        "guilds": guilds,
        "points_per_guild": points,
        "dim": dim,
        "batch": step,
        "collections": names.len(),
        "fill_s": filled.as_secs_f64(),
        "points_per_s": (guilds * points) as f64 / filled.as_secs_f64(),
        "settle_s": settled.as_secs_f64(),
        "indexed_vectors": indexed,
        "queries": queries,
        "search_p50_ms": pct(0.5),
        "search_p99_ms": pct(0.99),
        "server_rss_mb": rss_kb.map(|kb| kb as f64 / 1024.0),
    });
    println!("{body}");
    Ok(())
}
