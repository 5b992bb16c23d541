//! `discord-indexer index`: stage two from the command line.

use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;

use super::{exit, shutdown_on_signal};
use crate::config::Settings;
use crate::embed::{device, device_name, Embedder, ModelInfo};
use crate::index::{self, IndexError, IndexEvent, IndexSummary};
use crate::store::Store;

/// Chunk, embed and store a loaded guild's history in its vector collection.
///
/// Reruns only embed what changed in the archive since the last run. Another
/// `--model` builds a second collection beside the first; `--activate` makes
/// it the one search uses once it is complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guild id (as loaded); repeat for several.
    #[arg(long = "guild", value_name = "ID", required = true, value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
    /// Model directory name under models/ (default: [index] model, else all-MiniLM-L6-v2).
    #[arg(long)]
    pub model: Option<String>,
    /// Drop this model's collection for the guild and build it again.
    #[arg(long)]
    pub rebuild: bool,
    /// Make this model the guild's active one when the index is complete.
    #[arg(long)]
    pub activate: bool,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&settings.data_dir)?;
    let name = args.model.clone().unwrap_or_else(|| settings.model.clone());
    let info = ModelInfo::find(&settings.models_dir, &name)?;
    let device = device();
    let backend = settings.backend()?;
    tracing::info!(model = %info.name, device = device_name(&device), "loading model");
    let embedder = Arc::new(crate::blocking::run(move || Embedder::load(info, device)).await?);
    if !json {
        say!(
            "model {} ({} dimensions, {:?} pooling, {} tokens) on {}; store: {}",
            embedder.info.name,
            embedder.info.dim,
            embedder.info.pooling,
            embedder.info.max_tokens,
            device_name(embedder.device()),
            backend.kind()
        );
    }
    let shutdown = shutdown_on_signal();
    let mut summaries = Vec::new();
    for guild in args.guilds {
        let mut options = settings.index_options(guild);
        options.rebuild = args.rebuild;
        options.activate = args.activate;
        let view = View::new();
        let result = index::index(&store, &backend, embedder.clone(), &options, &|e| view.on_event(e), &shutdown).await;
        view.bar.finish_and_clear();
        match result {
            Ok(summary) => {
                if !json {
                    print_summary(&summary);
                }
                summaries.push(summary);
            }
            Err(IndexError::Interrupted) => {
                eprintln!("interrupted: rerun the same command to continue");
                return Ok(exit::INTERRUPTED);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(exit::OK)
}

struct View {
    bar: ProgressBar,
    started: Instant,
    planned: std::sync::atomic::AtomicU64,
}

impl View {
    fn new() -> Self {
        let bar = super::progress_bar(None, "{spinner} [{elapsed_precise}] {msg}");
        View { bar, started: Instant::now(), planned: Default::default() }
    }

    fn on_event(&self, e: IndexEvent) {
        match e {
            IndexEvent::Planned { channels, messages } => {
                self.planned.store(messages, std::sync::atomic::Ordering::Relaxed);
                self.bar.set_message(format!("{channels} channels changed, about {messages} messages to read"));
            }
            IndexEvent::Progress { messages, embedded, deleted, tokens } => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let planned = self.planned.load(std::sync::atomic::Ordering::Relaxed).max(messages).max(1);
                let eta = secs * (planned - messages) as f64 / messages.max(1) as f64;
                self.bar.set_message(format!(
                    "{messages}/{planned} messages, {embedded} chunks embedded ({:.1}/s, {:.0} tokens/s), {deleted} removed, ETA {:.0}s",
                    embedded as f64 / secs,
                    tokens as f64 / secs,
                    eta
                ));
            }
        }
    }
}

fn print_summary(s: &IndexSummary) {
    out!(
        "guild {} with {}: {} chunks embedded, {} unchanged, {} removed ({} tokens) from {} messages in {} changed channels; \
         {} points in {} ({}), {} in the HNSW index; {:.1}s{}{}",
        s.guild_id,
        s.model,
        s.embedded,
        s.unchanged,
        s.deleted,
        s.tokens,
        s.messages,
        s.channels,
        s.points,
        s.collection,
        s.backend,
        s.indexed_vectors,
        s.seconds,
        if s.active { "; active" } else { "" },
        if s.repaired > 0 { format!("; {} chunks the vector store had lost were embedded again", s.repaired) } else { String::new() }
    );
}
