//! What reranking costs a question: on an imported and indexed guild, asks
//! every question of a `queries.tsv` as the operator (hybrid, 5 results)
//! without and with the reranker, and times the cross-encoder alone on each
//! question's first `RERANK` (30) chunks. Prints p50/p95 of each and writes
//! the scored pairs (question, chunk texts, our scores) as JSON for the peer
//! (sentence-transformers' CrossEncoder) to time and check.
//! `scripts/bench-rerank.sh` drives it.
//!
//! Usage: bench_rerank DATA_DIR MODELS_DIR QUERIES GUILD RERANKER PAIRS_OUT

use std::path::PathBuf;
use std::time::Instant;

use discord_indexer::embed::rerank::{Reranker, RerankerInfo};
use discord_indexer::embed::Precision;
use discord_indexer::search::{Mode, Query, SearchOptions, Searcher, Viewer, RERANK_CANDIDATES};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(label: &str, mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&ms, 0.5), percentile(&ms, 0.95));
    println!("{label:<44} p50 {p50:>7.1} ms   p95 {p95:>7.1} ms   ({} questions)", ms.len());
    serde_json::json!({"p50_ms": p50, "p95_ms": p95})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 7, "usage: bench_rerank DATA_DIR MODELS_DIR QUERIES GUILD RERANKER PAIRS_OUT");
    let (data, models) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let guild: u64 = args[4].parse()?;
    let (name, out) = (&args[5], &args[6]);
    let depth: usize = std::env::var("RERANK").ok().and_then(|v| v.parse().ok()).unwrap_or(RERANK_CANDIDATES);
    // PRECISION=int8: the cross-encoder in int8 ([search] rerank_precision).
    let precision: Precision =
        std::env::var("PRECISION").unwrap_or_else(|_| "f32".into()).parse().map_err(anyhow::Error::msg)?;
    let questions: Vec<String> = std::fs::read_to_string(&args[3])?
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    let ask = |text: &str, limit: usize| Query {
        text: text.to_owned(),
        guilds: vec![guild],
        viewer: Viewer::Operator,
        limit,
        mode: Mode::Hybrid,
        filters: Default::default(),
    };
    let searcher = |reranker: Option<String>, snippet_chars: usize| -> anyhow::Result<Searcher> {
        let options = SearchOptions {
            reranker,
            rerank_candidates: depth,
            rerank_precision: precision,
            snippet_chars,
            ..SearchOptions::default()
        };
        Ok(Searcher::new(Store::open_existing(&data)?, Backend::new(&data, None, None)?, models.clone(), None, options))
    };

    // Each question's first chunks, whole (what the reranker reads).
    let whole = searcher(None, 1_000_000)?;
    let mut pairs = Vec::new();
    for q in &questions {
        let texts: Vec<String> = whole.ask(&ask(q, depth)).await?.results.into_iter().map(|r| r.text).collect();
        pairs.push((q.clone(), texts));
    }
    let reranker = Reranker::load(RerankerInfo::find(&models, name)?, precision)?;
    let counts: Vec<usize> = pairs.iter().map(|(_, t)| t.len()).collect();
    println!(
        "{} questions, {} chunks each (mean), reranker {name} in {} (max {} tokens), {} threads",
        questions.len(),
        counts.iter().sum::<usize>() / counts.len().max(1),
        precision.name(),
        reranker.info.max_tokens,
        rayon::current_num_threads()
    );
    // Warm up (page in the weights).
    let (q, t) = &pairs[0];
    reranker.score(q, &t.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut score_ms = Vec::new();
    let mut scored = Vec::new();
    for (q, texts) in &pairs {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let t = Instant::now();
        let scores = reranker.score(q, &refs)?;
        score_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        scored.push(serde_json::json!({"question": q, "texts": texts, "scores": scores}));
    }
    let mut report = serde_json::Map::new();
    report.insert("rerank_only".into(), summary(&format!("cross-encoder alone, {depth} chunks"), score_ms));

    for (label, key, reranked) in [
        ("ask, hybrid, 5 results".to_owned(), "ask_plain", None),
        (format!("ask, hybrid, 5 results, reranking {depth}"), "ask_reranked", Some(name.clone())),
    ] {
        let s = searcher(reranked, SearchOptions::default().snippet_chars)?;
        s.ask(&ask(&questions[0], 5)).await?;
        let mut ms = Vec::new();
        for q in &questions {
            let t = Instant::now();
            s.ask(&ask(q, 5)).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        report.insert(key.into(), summary(&label, ms));
    }
    std::fs::write(out, serde_json::to_string(&scored)?)?;
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}
