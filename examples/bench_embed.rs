//! Embedding throughput with candle on chunk texts cut from a real archive.
//! Writes the texts it used (JSON lines) so another embedder can be measured
//! on exactly the same input (scripts/bench-index.sh runs
//! sentence-transformers on them). Prints one JSON line.
//!
//! `cargo run --release --example bench_embed -- DATA_DIR MODEL_DIR N TEXTS_OUT [BATCH]`

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use discord_indexer::chunk::{ChunkRules, Chunker};
use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::store::Store;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, model, n, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench_embed DATA_DIR MODEL_DIR N TEXTS_OUT [BATCH]");
    };
    let n: usize = n.parse()?;
    let batch: usize = rest.first().map(|b| b.parse()).transpose()?.unwrap_or(32);
    let store = Store::open_existing(Path::new(data))?;
    let embedder = Embedder::load(ModelInfo::read(Path::new(model))?, discord_indexer::embed::device())?;
    let settings =
        ChunkRules { max_tokens: embedder.info.max_tokens - embedder.special_tokens(), ..Default::default() };
    let count = |t: &str| embedder.count_content_tokens(t);
    // Chunk channels in turn until N texts are collected.
    let mut texts = Vec::new();
    let channels: Vec<u64> = {
        let conn = store.conn()?;
        let mut stmt = conn.prepare("SELECT DISTINCT channel_id FROM messages ORDER BY channel_id")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        rows.map(|r| r.map(|v| v as u64)).collect::<Result<_, _>>()?
    };
    'outer: for channel in channels {
        let quote = |id: u64| store.quote(id, channel).ok().flatten();
        let mut chunker = Chunker::new(&settings, &count, &quote);
        for m in store.chat_messages(channel, 0, usize::MAX >> 1)? {
            for c in chunker.push(m) {
                texts.push(c.text);
                if texts.len() >= n {
                    break 'outer;
                }
            }
        }
        texts.extend(chunker.finish().map(|c| c.text));
    }
    texts.truncate(n);
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for t in &texts {
        writeln!(f, "{}", serde_json::to_string(t)?)?;
    }
    f.flush()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Warm up (allocations, page cache), then measure.
    embedder.embed(&refs[..refs.len().min(batch)], batch)?;
    let t = Instant::now();
    let (_, tokens) = embedder.embed(&refs, batch)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"embedder": "candle", "texts": texts.len(), "tokens": tokens, "seconds": secs,
                           "chunks_per_second": texts.len() as f64 / secs, "tokens_per_second": tokens as f64 / secs,
                           "batch": batch, "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)})
    );
    Ok(())
}
