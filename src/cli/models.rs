//! `discord-indexer models`: the embedding models installed in the models
//! directory (`--models-dir`, see [`crate::config::models_dir_rule`]).

use super::exit;
use crate::config::Settings;
use crate::embed::installed;

/// List installed models with their dimension, pooling and input limit, and
/// say which models directory was read and why that one (on stderr).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let models = installed(&settings.index.models_dir);
    let dir = settings.index.models_dir.display();
    let from = settings.index.models_dir_from.describe();
    if !models.is_empty() {
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
            say!("{}", none_installed(settings));
        }
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    if models.is_empty() {
        out!("{}", none_installed(settings));
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
    if !models.is_empty() {
        say!(
            "checked: files present, configs and tokenizer readable, weights as long as their header says; \
             the weights' values are unverified until a model is loaded"
        );
    }
    Ok(exit::OK)
}

/// Where models were looked for when there are none, and how to install one.
fn none_installed(settings: &Settings) -> String {
    let dir = &settings.index.models_dir;
    let missing = if dir.is_dir() { "" } else { ", which does not exist" };
    format!(
        "no models in {}{missing} ({}). Models are looked for in {}. Install one there with \
         scripts/fetch-model.sh all-MiniLM-L6-v2 {} (from a checkout of discord-indexer)",
        dir.display(),
        settings.index.models_dir_from.describe(),
        crate::config::models_dir_rule(),
        crate::embed::shell_word(&dir.display().to_string()),
    )
}
