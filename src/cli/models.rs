//! `discord-indexer models`: the embedding models installed in the models
//! directory (`--models-dir`, see [`crate::config::models_dir_rule`]), and
//! the chat models (`*.gguf`) that write answers.

use super::exit;
use crate::answer::gguf;
use crate::config::Settings;
use crate::embed::installed;

/// List installed models with their dimension, pooling and input limit, then
/// the chat models (GGUF files, for answers), and say which models directory
/// was read and why that one (on stderr).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the chat models (GGUF files, for answers): their architecture,
    /// size, context and quantization. With --json, their array (without it,
    /// --json gives the embedding models' array).
    #[arg(long)]
    pub chat: bool,
}

pub fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    if args.chat {
        return run_chat(settings, json);
    }
    let models = installed(&settings.index.models_dir);
    let chat = gguf::installed(&settings.index.models_dir);
    let rerankers = crate::embed::rerank::installed(&settings.index.models_dir);
    let dir = settings.index.models_dir.display();
    let from = settings.index.models_dir_from.describe();
    if !models.is_empty() || !chat.is_empty() {
        say!("models in {dir} ({from})");
    }
    if json {
        let list: Vec<serde_json::Value> = models
            .iter()
            .map(|(name, r)| match r {
                Ok(info) => serde_json::json!({"name": name, "ok": true, "dir": info.dir, "dim": info.dim, "pooling": info.pooling,
                                               "max_tokens": info.max_tokens, "bytes": info.weights_bytes,
                                               "default": *name == settings.index.model,
                                               "verified": "files, configs, tokenizer JSON, weights' length"}),
                Err(e) => serde_json::json!({"name": name, "ok": false, "dir": settings.index.models_dir.join(name),
                                             "error": e.to_string()}),
            })
            .collect();
        if models.is_empty() {
            say!("{}", none_installed(settings, chat.is_empty()));
        }
        if !chat.is_empty() {
            say!("and {} chat model(s), which `models --chat --json` lists", chat.len());
        }
        if !rerankers.is_empty() {
            let names: Vec<&str> = rerankers.iter().map(|r| r.name.as_str()).collect();
            say!("and reranker(s) (for [search] reranker): {}", names.join(", "));
        }
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    if models.is_empty() {
        out!("{}", none_installed(settings, chat.is_empty()));
    }
    for (name, r) in &models {
        let default = if *name == settings.index.model { " (default)" } else { "" };
        match r {
            Ok(i) => out!(
                "{name}{default}: {} dimensions, {:?} pooling, {} tokens, {:.0} MB",
                i.dim,
                i.pooling,
                i.max_tokens,
                i.weights_bytes as f64 / 1e6
            ),
            Err(e) => out!("{name}: unusable: {e}"),
        }
    }
    for (name, r) in &chat {
        out!("{}", chat_line(name, r));
    }
    for r in &rerankers {
        out!(
            "{}: reranker (cross-encoder for [search] reranker), {} tokens, {:.0} MB",
            r.name,
            r.max_tokens,
            r.weights_bytes as f64 / 1e6
        );
    }
    if !models.is_empty() {
        say!(
            "checked: files present, configs and tokenizer readable, weights as long as their header says; \
             the weights' values are unverified until a model is loaded"
        );
    }
    if chat.is_empty() {
        say!("no chat model (for answers) in {dir}: install one with {} {}", gguf::FETCH_HINT, dir_arg(settings));
    }
    Ok(exit::OK)
}

/// `models --chat`: the chat models alone.
fn run_chat(settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let models = gguf::installed(&settings.index.models_dir);
    let dir = settings.index.models_dir.display();
    let from = settings.index.models_dir_from.describe();
    if models.is_empty() {
        let none = gguf::find(&settings.index.models_dir, None).err().map(|e| e.to_string()).unwrap_or_default();
        if json {
            say!("{none}");
            out!("[]");
        } else {
            out!("{none}");
        }
        return Ok(exit::OK);
    }
    say!("chat models in {dir} ({from})");
    if json {
        let list: Vec<serde_json::Value> = models
            .iter()
            .map(|(name, r)| match r {
                Ok(i) => serde_json::json!({"name": name, "ok": true, "path": i.path, "architecture": i.architecture,
                                            "parameters": i.parameters, "bytes": i.bytes,
                                            "context_length": i.context_length, "context_window": i.context_window,
                                            "quantization": i.quantization, "chat_template": i.chat_template}),
                Err(e) => serde_json::json!({"name": name, "ok": false,
                                             "path": settings.index.models_dir.join(format!("{name}.gguf")),
                                             "error": e.to_string()}),
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    for (name, r) in &models {
        out!("{}", chat_line(name, r));
    }
    Ok(exit::OK)
}

/// One chat model in the text listing.
fn chat_line(name: &str, r: &Result<gguf::ChatModelInfo, crate::answer::AnswerError>) -> String {
    match r {
        Ok(i) => {
            let used = if i.context_window < i.context_length {
                format!("{} of {} tokens of context used", i.context_window, i.context_length)
            } else {
                format!("{} tokens of context", i.context_window)
            };
            let template = if i.chat_template { "" } else { ", no chat template (ChatML is used)" };
            format!(
                "{name}: chat model, {}, {} parameters, {}, {used}, {:.0} MB{template}",
                i.architecture,
                i.parameters_label(),
                i.quantization,
                i.bytes as f64 / 1e6
            )
        }
        Err(e) => format!("{name}: unusable chat model: {e}"),
    }
}

fn dir_arg(settings: &Settings) -> String {
    crate::embed::shell_word(&settings.index.models_dir.display().to_string())
}

/// Where models were looked for when there are none (`no_chat`: not even
/// chat models), and how to install one.
fn none_installed(settings: &Settings, no_chat: bool) -> String {
    let dir = &settings.index.models_dir;
    let missing = if dir.is_dir() { "" } else { ", which does not exist" };
    let what = if no_chat { "models" } else { "embedding models" };
    format!(
        "no {what} in {}{missing} ({}). Models are looked for in {}. Install one there with \
         scripts/fetch-model.sh all-MiniLM-L6-v2 {} (from a checkout of discord-indexer)",
        dir.display(),
        settings.index.models_dir_from.describe(),
        crate::config::models_dir_rule(),
        crate::embed::shell_word(&dir.display().to_string()),
    )
}
