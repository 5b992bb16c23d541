//! Retrieval quality on a dataset of real chat: asks every question of a
//! `queries.tsv` (`question<TAB>channel<TAB>target content`, the target
//! escaped as `\\`, `\t`, `\n`, `\r`; see shared dev sets) against an
//! imported and indexed guild, as the operator, in each mode, and scores
//! where the target message's chunk ranks: R@1, R@5, R@10 and MRR@10, overall
//! and per kind of question (the file's thirds: paraphrase, keyword, support).
//! Prints a table and one JSON line. `scripts/eval-retrieval.sh` drives it.
//!
//! With `EVAL_DETAIL=FILE`, it also writes one JSON line per question and
//! mode: the target's rank among the 50 candidates each list brings, its
//! chunk, and the whole ranked list with each chunk's cosine,
//! IDF-weighted coverage of the question (as fusion weighs it) and text, so
//! that a fusion rule or a reranker can be tried on the lists without asking
//! again.
//!
//! `cargo run --release --example eval_retrieval -- DATA_DIR MODELS_DIR QUERIES GUILD`

use std::path::PathBuf;
use std::time::Instant;

use discord_indexer::search::{Mode, Query, SearchOptions, Searcher, Viewer};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;

const KINDS: [&str; 3] = ["paraphrase", "keyword", "support"];

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[derive(Default, Clone)]
struct Score {
    n: usize,
    r1: usize,
    r5: usize,
    r10: usize,
    rr: f64,
}

impl Score {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1;
        if let Some(r) = rank {
            self.r1 += (r <= 1) as usize;
            self.r5 += (r <= 5) as usize;
            self.r10 += (r <= 10) as usize;
            if r <= 10 {
                self.rr += 1.0 / r as f64;
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let n = self.n.max(1) as f64;
        serde_json::json!({"n": self.n, "r1": self.r1 as f64 / n, "r5": self.r5 as f64 / n,
                           "r10": self.r10 as f64 / n, "mrr10": self.rr / n})
    }

    fn row(&self, label: &str) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "{label:<22} {:>5.2} {:>5.2} {:>5.2} {:>7.3}",
            self.r1 as f64 / n,
            self.r5 as f64 / n,
            self.r10 as f64 / n,
            self.rr / n
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 5, "usage: eval_retrieval DATA_DIR MODELS_DIR QUERIES GUILD");
    let (data, models, queries) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]), &args[3]);
    let guild: u64 = args[4].parse()?;
    let store = Store::open_existing(&data)?;
    let lines: Vec<(String, String, String)> = std::fs::read_to_string(queries)?
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let q = f.next().unwrap_or_default().to_owned();
            let c = f.next().unwrap_or_default().to_owned();
            (q, c, unescape(f.next().unwrap_or_default()))
        })
        .collect();
    anyhow::ensure!(!lines.is_empty(), "no questions in {queries}");
    let conn = store.conn()?;
    let mut targets = Vec::new();
    for (q, _, target) in &lines {
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM messages WHERE guild_id = ?1 AND content = ?2")?
            .query_map(rusqlite::params![guild as i64, target], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(ids.len() == 1, "{} messages hold the target of {q:?}", ids.len());
        targets.push(ids[0] as u64);
    }
    let messages: i64 =
        conn.query_row("SELECT count(*) FROM messages WHERE guild_id = ?1", [guild as i64], |r| r.get(0))?;
    // A chunk's own point and one per part.
    let points: i64 = conn.query_row(
        "SELECT count(*) + coalesce(sum(c.parts), 0) FROM index_chunks c
         JOIN active_indexes a ON a.guild_id = c.guild_id AND a.model = c.model WHERE c.guild_id = ?1",
        [guild as i64],
        |r| r.get(0),
    )?;
    drop(conn);

    // RERANKER=NAME: the first results reordered by this cross-encoder (a directory under models/).
    let mut options =
        SearchOptions { reranker: std::env::var("RERANKER").ok().filter(|r| !r.is_empty()), ..Default::default() };
    // With EVAL_DETAIL: each question's terms and their IDF, as search weighs them, once.
    let mut question_idf = Vec::new();
    if std::env::var_os("EVAL_DETAIL").is_some() {
        // Whole chunk texts, to weigh coverage as fusion does.
        options.snippet_chars = 1_000_000;
        let archive = store.message_count()?;
        for (question, _, _) in &lines {
            let terms = discord_indexer::search::text::terms(question);
            let idf = discord_indexer::search::term_idf(&store, &terms, archive)?;
            question_idf.push((terms, idf));
        }
    }
    let searcher = Searcher::new(store, Backend::new(&data, None, None)?, models, None, options);
    let per_kind = lines.len().div_ceil(3);
    let mut report = serde_json::Map::new();
    let mut table = vec![format!("{:<22} {:>5} {:>5} {:>5} {:>7}", "mode / kind", "R@1", "R@5", "R@10", "MRR@10")];
    let mut misses = Vec::new();
    // EVAL_DETAIL=FILE: one JSON line per question and mode, with the target's rank to 50.
    let mut detail = match std::env::var_os("EVAL_DETAIL") {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    for (mode, name) in [(Mode::Vector, "vector"), (Mode::Keyword, "keyword"), (Mode::Hybrid, "hybrid")] {
        let mut all = Score::default();
        let mut kinds = vec![Score::default(); 3];
        let mut latencies = Vec::new();
        for (i, ((question, _, _), target)) in lines.iter().zip(&targets).enumerate() {
            let q = Query {
                text: question.clone(),
                guilds: vec![guild],
                viewer: Viewer::Operator,
                limit: 10,
                mode,
                filters: Default::default(),
            };
            let started = Instant::now();
            let answer = searcher.ask(&q).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            let rank = answer.results.iter().position(|r| r.message_ids.contains(target)).map(|p| p + 1);
            if let Some(detail) = detail.as_mut() {
                // How deep the target is (up to 50, the depth of each list), for reading one question's misses.
                let deep = Query { limit: 50, ..q.clone() };
                let deep = searcher.ask(&deep).await?;
                let deep_rank = deep.results.iter().position(|r| r.message_ids.contains(target)).map(|p| p + 1);
                let (terms, idf) = &question_idf[i];
                let list: Vec<serde_json::Value> = deep
                    .results
                    .iter()
                    .map(|r| {
                        serde_json::json!({"chunk": r.chunk_id, "score": r.score, "cos": r.vector_score,
                            "cov": discord_indexer::search::text::coverage(&r.text, terms, idf),
                            "target": r.message_ids.contains(target), "n": r.message_ids.len(), "text": r.text})
                    })
                    .collect();
                let hit = deep.results.iter().find(|r| r.message_ids.contains(target)).map(|r| serde_json::json!({"score": r.score, "vector_score": r.vector_score, "vector_rank": r.vector_rank, "keyword_rank": r.keyword_rank, "text": r.text}));
                use std::io::Write;
                writeln!(
                    detail,
                    "{}",
                    serde_json::json!({"i": i, "mode": name, "question": question, "rank": deep_rank, "rank10": rank, "hit": hit, "list": list})
                )?;
            }
            all.add(rank);
            kinds[(i / per_kind).min(2)].add(rank);
            if mode == Mode::Hybrid && rank.is_none_or(|r| r > 5) {
                misses.push(format!("  {:>4}  {question}", rank.map_or("-".into(), |r| r.to_string())));
            }
        }
        latencies.sort_by(f64::total_cmp);
        let p50 = latencies[latencies.len() / 2];
        let p95 = latencies[(latencies.len() * 95 / 100).min(latencies.len() - 1)];
        table.push(all.row(name));
        for (k, s) in KINDS.iter().zip(&kinds) {
            table.push(s.row(&format!("  {k}")));
        }
        let mut entry = all.json();
        entry["ask_ms_p50"] = p50.into();
        entry["ask_ms_p95"] = p95.into();
        for (k, s) in KINDS.iter().zip(&kinds) {
            entry[*k] = s.json();
        }
        report.insert(name.into(), entry);
    }
    report.insert("questions".into(), lines.len().into());
    report.insert("messages".into(), messages.into());
    report.insert("points".into(), points.into());
    report.insert("points_per_message".into(), (points as f64 / messages.max(1) as f64).into());
    for line in &table {
        println!("{line}");
    }
    println!("hybrid misses (rank > 5):");
    for m in &misses {
        println!("{m}");
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}
