//! `discord-indexer models`: the embedding models installed under models/.

use super::exit;
use crate::config::Settings;
use crate::embed::installed;

/// List installed models with their dimension, pooling and input limit.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let models = installed(&settings.models_dir);
    if json {
        let list: Vec<serde_json::Value> = models
            .iter()
            .map(|(name, r)| match r {
                Ok(info) => serde_json::json!({"name": name, "ok": true, "dim": info.dim, "pooling": info.pooling,
                                               "max_tokens": info.max_tokens, "bytes": info.weights_bytes,
                                               "default": *name == settings.model,
                                               "verified": "files, configs, tokenizer JSON, weights' length"}),
                Err(e) => serde_json::json!({"name": name, "ok": false, "error": e.to_string()}),
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    if models.is_empty() {
        out!(
            "no models in {}: install one with scripts/fetch-model.sh all-MiniLM-L6-v2",
            settings.models_dir.display()
        );
    }
    for (name, r) in &models {
        let default = if *name == settings.model { " (default)" } else { "" };
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
