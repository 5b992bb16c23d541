//! Prompt-processing and generation speed of the embedded chat model (a GGUF
//! file run in process: int8 by default, candle's F32 or quantized models on
//! request), on answer prompts of realistic sizes. Prints one
//! JSON object; scripts/bench-answer.sh runs llama.cpp on the same prompt
//! tokens (written with `--tokens-dir`) and compares.
//!
//! Each prompt is built as `ask --answer` builds one ([`prompt::build`]):
//! the rules, then chat messages quoted as numbered sources, then the
//! question. The sources are consecutive messages of the komodo-dev chat
//! archive (DiscordChatExporter CSV, `--chat DIR`), else generated chat text;
//! they fill the prompt to about each `--sizes` tokens. Generation is greedy
//! (as answers are); the question asks for a long answer so that it runs to
//! `--gen` tokens, and the tokens written are reported (the model may stop
//! sooner).
//!
//! ```text
//! bench_answer [--model GGUF] [--models-dir DIR] [--format auto|int8|f32|quantized|all]
//!              [--int8-kernel vnni|avx2|portable]
//!              [--sizes 500,1500] [--gen 128] [--runs 3] [--warmup 1]
//!              [--chat DIR] [--tokens-dir DIR]
//! ```
//!
//! `--format all` (the default) measures the default (int8 on a CPU), then
//! candle's models with F32 weights and with the file's own; `--int8-kernel`
//! makes the int8 products use another kernel than the best the CPU runs.
//!
//! Threads: RAYON_NUM_THREADS (the int8 products, candle's matrix products
//! and quantized kernels use rayon's global pool and read it), else one per
//! core.

#[path = "common/flags.rs"]
mod flags;

use std::path::{Path, PathBuf};
use std::time::Instant;

use discord_indexer::answer::gguf::{self, ChatModel, WeightFormat};
use discord_indexer::answer::prompt::{self, Budget};
use discord_indexer::answer::{Finish, GenerateRequest};
use discord_indexer::search::SearchResult;
use kernels::q8::Kernel;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Asks for a long answer, so that greedy generation runs to `--gen` tokens.
const QUESTION: &str = "What problems did people report in these messages, and how were they solved? \
    Go through every source in order and explain each problem and its fix in detail, citing the sources.";

/// Messages per source (a search result's chunk).
const PER_SOURCE: usize = 4;

/// Characters of a message, at most.
const MAX_CHARS: usize = 240;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| flags::take(&mut args, flag);
    let models_dir = PathBuf::from(take("--models-dir")?.unwrap_or_else(|| "models".into()));
    let model = take("--model")?;
    let format = take("--format")?.unwrap_or_else(|| "all".into());
    let kernel = match take("--int8-kernel")?.as_deref() {
        None => Kernel::get(),
        Some(name) => {
            let Some(&wanted) = Kernel::available().iter().find(|k| k.name() == name) else {
                let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
                anyhow::bail!("--int8-kernel {name}: this CPU runs {}", names.join(", "));
            };
            Kernel::prefer(wanted)
        }
    };
    let sizes: Vec<usize> = take("--sizes")?
        .unwrap_or_else(|| "500,1500".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let gen: usize = take("--gen")?.map(|v| v.parse()).transpose()?.unwrap_or(128);
    let runs: usize = take("--runs")?.map(|v| v.parse()).transpose()?.unwrap_or(3).max(1);
    let warmup: usize = take("--warmup")?.map(|v| v.parse()).transpose()?.unwrap_or(1);
    let chat_dir = take("--chat")?.map(PathBuf::from);
    let tokens_dir = take("--tokens-dir")?.map(PathBuf::from);
    if !args.is_empty() {
        anyhow::bail!("unexpected arguments {args:?}; see the doc comment of examples/bench_answer.rs");
    }
    let formats: Vec<Option<WeightFormat>> = match format.as_str() {
        "auto" => vec![None],
        "int8" => vec![Some(WeightFormat::Int8)],
        "f32" => vec![Some(WeightFormat::F32)],
        "quantized" => vec![Some(WeightFormat::Quantized)],
        "all" => vec![None, Some(WeightFormat::F32), Some(WeightFormat::Quantized)],
        other => anyhow::bail!("--format {other}: auto, int8, f32, quantized or all"),
    };

    let path = gguf::find(&models_dir, model.as_deref())?;
    let info = gguf::inspect(&path)?;
    let device = candle_core::Device::Cpu;
    let (messages, source) = match &chat_dir {
        Some(dir) => (read_chat(dir)?, format!("chat messages of {}", dir.display())),
        None => (generated_chat(), "generated chat text".to_owned()),
    };
    let results = as_results(&messages);

    // The prompts are built with the first model loaded (the tokenizer is the file's, whatever the format).
    let mut prompts: Vec<(usize, Vec<discord_indexer::answer::ChatMessage>, Vec<u32>)> = Vec::new();
    let mut out_formats = Vec::new();
    for format in formats {
        let started = Instant::now();
        let model = gguf::load_as(&path, &device, format)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        if prompts.is_empty() {
            for &size in &sizes {
                let (messages, ids) = build_prompt(&model, &results, size, gen)?;
                if let Some(dir) = &tokens_dir {
                    std::fs::create_dir_all(dir)?;
                    let text = model.prompt_text(&messages)?;
                    let body = json!({ "size": size, "tokens": ids, "text": text });
                    std::fs::write(dir.join(format!("prompt-{size}.json")), serde_json::to_string(&body)?)?;
                }
                prompts.push((size, messages, ids));
            }
        }
        let mut out_prompts = Vec::new();
        for (size, messages, ids) in &prompts {
            let request = GenerateRequest { messages: messages.clone(), max_tokens: gen, temperature: 0.0, seed: 0 };
            let cancel = CancellationToken::new();
            for _ in 0..warmup {
                model.generate(&request, None, &cancel)?;
            }
            let mut timed = Vec::new();
            for _ in 0..runs {
                let g = model.generate(&request, None, &cancel)?;
                let s = &g.stats;
                timed.push(json!({
                    "prompt_tokens": s.prompt_tokens,
                    "generated_tokens": s.generated_tokens,
                    "finish": g.finish,
                    "first_token_ms": s.first_token_ms,
                    "prompt_tokens_per_s": s.prompt_tokens_per_s,
                    "tokens_per_s": s.tokens_per_s,
                    "total_ms": s.total_ms,
                    "text": g.text,
                }));
                if g.finish == Finish::Stop && s.generated_tokens < gen {
                    eprintln!(
                        "bench_answer: the model stopped after {} of {gen} tokens (prompt ~{size})",
                        s.generated_tokens
                    );
                }
            }
            let field = |name: &str| median(timed.iter().map(|r| r[name].as_f64().unwrap_or(0.0)).collect());
            out_prompts.push(json!({
                "size": size,
                "prompt_tokens": ids.len(),
                "generated_tokens": timed.iter().map(|r| r["generated_tokens"].as_u64().unwrap_or(0)).min(),
                "prompt_tokens_per_s": field("prompt_tokens_per_s"),
                "tokens_per_s": field("tokens_per_s"),
                "first_token_ms": field("first_token_ms"),
                "total_ms": field("total_ms"),
                "runs": timed,
            }));
        }
        out_formats.push(json!({
            "format": model.weight_format(),
            "requested": format.map_or("auto", |f| match f {
                WeightFormat::Int8 => "int8",
                WeightFormat::F32 => "f32",
                WeightFormat::Quantized => "quantized",
            }),
            "load_ms": load_ms,
            "int8_kernel": (model.weight_format() == WeightFormat::Int8).then(|| kernel.name()),
            "prompts": out_prompts,
        }));
    }

    let body = json!({
        "model": info.name,
        "architecture": info.architecture,
        "quantization": info.quantization,
        "parameters": info.parameters,
        "device": "cpu",
        "threads": rayon::current_num_threads(),
        "rayon_num_threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "gen": gen,
        "runs": runs,
        "warmup": warmup,
        "source": source,
        "formats": out_formats,
    });
    println!("{}", serde_json::to_string(&body)?);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// An answer prompt of about `size` tokens (the chat template applied), as
/// `ask --answer` builds it: the window is `size` plus the answer's tokens.
fn build_prompt(
    model: &ChatModel,
    results: &[SearchResult],
    size: usize,
    gen: usize,
) -> anyhow::Result<(Vec<discord_indexer::answer::ChatMessage>, Vec<u32>)> {
    if size + gen > model.context_window() {
        anyhow::bail!(
            "a prompt of {size} tokens and {gen} more do not fit the model's {} tokens",
            model.context_window()
        );
    }
    let count = |t: &str| model.count_tokens(t);
    let mut budget = Budget { window: size + gen, answer: gen };
    // Shrinks the budget until the exact prompt (its template applied) fits the size.
    loop {
        let p = prompt::build(QUESTION, results, budget, &count);
        let ids = model.prompt_tokens(&p.messages)?;
        if ids.len() <= size || budget.window <= gen + 64 {
            return Ok((p.messages, ids));
        }
        budget.window -= (ids.len() - size).max(8);
    }
}

/// `Author: content` lines, by channel: a DiscordChatExporter CSV archive
/// (each channel a folder of numbered part files), as komodo-dev is.
fn read_chat(dir: &Path) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let mut channels: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    channels.sort();
    let mut out = Vec::new();
    for channel in channels {
        let name = channel.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut parts: Vec<(u32, PathBuf)> = std::fs::read_dir(&channel)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let p = e.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "csv").then_some((n, p))
            })
            .collect();
        parts.sort();
        // The first part of each channel is plenty for a few prompts.
        if let Some((_, part)) = parts.first() {
            let text = std::fs::read_to_string(part)?;
            for row in csv_rows(&text).into_iter().skip(1) {
                if row.len() >= 4 && !row[3].trim().is_empty() {
                    let author = row[1].split('#').next().unwrap_or(&row[1]).to_owned();
                    out.push((name.clone(), author, row[2].clone(), row[3].clone()));
                }
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("no chat messages in {}", dir.display());
    }
    Ok(out)
}

/// The rows of a `;`-separated CSV whose fields are quoted (`""` inside).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ';') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                if !field.is_empty() {
                    row.push(std::mem::take(&mut field));
                }
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !row.is_empty() || !field.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Chat text when no archive is given: support-channel lines.
fn generated_chat() -> Vec<(String, String, String, String)> {
    let authors = ["alice", "bob", "chen", "dana", "erin"];
    let lines = [
        "the deploy is stuck again, same as last week",
        "it fails on start, the log says ERR_NOTARY_KEY_EXPIRED at block 1234",
        "the notary key rotated on Monday, I'll update the secret in the vault",
        "did you restart the daemon after pulling the latest dev branch?",
        "yes, twice, and the miner still finds no blocks since the update",
        "check that you have enough UTXOs, about 700 helps avoid double spends",
        "the wallet balance changes before the swap finishes, is that expected?",
        "run it with RUST_LOG=debug, it prints which key it could not read",
    ];
    (0..400)
        .map(|i| {
            (
                "support".to_owned(),
                authors[i % authors.len()].to_owned(),
                format!("{:02}-Jun-18 0{}:{:02} AM", 1 + i / 40, 1 + i % 8, i % 60),
                format!("{} ({i})", lines[(i * 3) % lines.len()]),
            )
        })
        .collect()
}

/// A message cut to [`MAX_CHARS`] characters (a pasted log would take a small prompt alone).
fn shorten(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Consecutive messages as search results, [`PER_SOURCE`] each.
fn as_results(messages: &[(String, String, String, String)]) -> Vec<SearchResult> {
    messages
        .chunks(PER_SOURCE)
        .enumerate()
        .map(|(i, chunk)| {
            let mut authors: Vec<String> = Vec::new();
            for (_, a, _, _) in chunk {
                if !authors.contains(a) {
                    authors.push(a.clone());
                }
            }
            let text: Vec<String> = chunk.iter().map(|(_, a, _, c)| format!("{a}: {}", shorten(c.trim()))).collect();
            let id = 1_000_000_000_000_000_000 + i as u64 * 100;
            SearchResult {
                guild_id: 1,
                channel_id: 2,
                channel_name: chunk[0].0.clone(),
                parent_id: None,
                is_thread: false,
                message_ids: (0..chunk.len() as u64).map(|k| id + k).collect(),
                message_id: id,
                time: "2018-06-12T01:27:00+00:00".into(),
                jump_url: format!("https://discord.com/channels/1/2/{id}"),
                start: "2018-06-12T01:27:00+00:00".into(),
                end: "2018-06-12T01:36:00+00:00".into(),
                authors,
                score: 1.0 / (i + 1) as f64,
                vector_score: None,
                vector_rank: Some(i + 1),
                keyword_rank: None,
                rerank_score: None,
                text: text.join("\n"),
                model: "all-MiniLM-L6-v2".into(),
                chunk_id: i as u64,
            }
        })
        .collect()
}
