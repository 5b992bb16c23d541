//! Embedding throughput with candle on chunk texts cut from a real archive,
//! or on texts from a file. Writes the texts it cut (JSON lines) so another
//! embedder can be measured on exactly the same input (scripts/bench-index.sh
//! runs sentence-transformers on them). Prints one JSON line.
//!
//! ```text
//! bench_embed [OPTIONS] DATA_DIR MODEL_DIR N TEXTS_OUT [BATCH]   cut N chunk texts from an archive
//! bench_embed [OPTIONS] --texts TEXTS_JSONL MODEL_DIR [BATCH]     embed the texts of a file
//!   --precision f32|f16|bf16   the encoder's number type (half precision on a GPU)
//!   --repeat R                 time R passes over the texts (a GPU needs more work to time)
//!   --vectors OUT              write each text's vector (JSON lines), for parity checks
//!   --cpu                      embed on the CPU even in a CUDA build
//! ```

#[path = "common/flags.rs"]
mod flags;

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use discord_indexer::chunk::{ChunkRules, Chunker};
use discord_indexer::embed::{device_name, Embedder, ModelInfo, Precision};
use discord_indexer::store::Store;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| flags::take(&mut args, flag);
    let precision: Precision =
        take("--precision")?.map(|p| p.parse()).transpose().map_err(anyhow::Error::msg)?.unwrap_or_default();
    let repeat: usize = take("--repeat")?.map(|r| r.parse()).transpose()?.unwrap_or(1).max(1);
    let vectors_out = take("--vectors")?;
    let texts_in = take("--texts")?;
    let cpu = args.iter().position(|a| a == "--cpu").map(|i| args.remove(i)).is_some();
    let device = if cpu { candle_core::Device::Cpu } else { discord_indexer::embed::device() };

    let (embedder, texts, batch) = if let Some(path) = texts_in {
        let [model, rest @ ..] = args.as_slice() else {
            anyhow::bail!("usage: bench_embed [OPTIONS] --texts TEXTS_JSONL MODEL_DIR [BATCH]");
        };
        let embedder = Embedder::load_as(ModelInfo::read(Path::new(model))?, device, precision)?;
        let batch = rest.first().map(|b| b.parse()).transpose()?.unwrap_or_else(|| embedder.default_batch());
        let mut texts = Vec::new();
        for line in std::io::BufReader::new(std::fs::File::open(&path)?).lines() {
            texts.push(serde_json::from_str::<String>(&line?)?);
        }
        (embedder, texts, batch)
    } else {
        let [data, model, n, out, rest @ ..] = args.as_slice() else {
            anyhow::bail!("usage: bench_embed [OPTIONS] DATA_DIR MODEL_DIR N TEXTS_OUT [BATCH]");
        };
        let embedder = Embedder::load_as(ModelInfo::read(Path::new(model))?, device, precision)?;
        let batch = rest.first().map(|b| b.parse()).transpose()?.unwrap_or_else(|| embedder.default_batch());
        let texts = cut_texts(Path::new(data), &embedder, n.parse()?)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
        for t in &texts {
            writeln!(f, "{}", serde_json::to_string(t)?)?;
        }
        f.flush()?;
        (embedder, texts, batch)
    };

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Warm up (allocations, page cache, GPU kernels), then measure.
    if let Some(out) = vectors_out {
        let (vectors, _) = embedder.embed(&refs, batch)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
        for v in &vectors {
            writeln!(f, "{}", serde_json::to_string(v)?)?;
        }
        f.flush()?;
    } else {
        embedder.embed(&refs[..refs.len().min(batch)], batch)?;
    }
    let timed: Vec<&str> = std::iter::repeat_n(refs.iter().copied(), repeat).flatten().collect();
    let t = Instant::now();
    let (_, tokens) = embedder.embed(&timed, batch)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"embedder": "candle", "device": device_name(embedder.device()),
                           "precision": embedder.precision().name(), "texts": timed.len(), "tokens": tokens,
                           "seconds": secs, "chunks_per_second": timed.len() as f64 / secs,
                           "tokens_per_second": tokens as f64 / secs, "batch": batch,
                           "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)})
    );
    Ok(())
}

/// Chunks the archive's channels in turn until `n` texts are collected.
fn cut_texts(data: &Path, embedder: &Embedder, n: usize) -> anyhow::Result<Vec<String>> {
    let store = Store::open_existing(data)?;
    let settings =
        ChunkRules { max_tokens: embedder.info.max_tokens - embedder.special_tokens(), ..Default::default() };
    let count = |t: &str| embedder.count_content_tokens(t);
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
    Ok(texts)
}
