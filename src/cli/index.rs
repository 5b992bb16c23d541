//! `discord-indexer index`: stage two from the command line.

use std::sync::Arc;

use indicatif::ProgressBar;

use super::{exit, shutdown_on_signal};
use crate::config::Settings;
use crate::embed::{device, device_name, Embedder, ModelInfo};
use crate::index::{self, IndexError, IndexEvent, IndexSummary};
use crate::store::Store;

/// Chunk, embed and store a loaded guild's history in its vector collection.
///
/// Reruns only embed what changed in the archive since the last run. A
/// guild's first complete index is the one search uses. Another `--model`
/// builds a second collection beside it; `--activate` makes that one the one
/// search uses once it is complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guild id (as loaded); repeat for several.
    #[arg(long = "guild", value_name = "ID", required = true, value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
    /// Model directory name in the models directory (default: [index] model, else all-MiniLM-L6-v2).
    #[arg(long)]
    pub model: Option<String>,
    /// Build this model's index again from the archive. A complete index is
    /// rebuilt beside the current one, which search keeps using until the new
    /// one is complete and takes its place.
    #[arg(long)]
    pub rebuild: bool,
    /// Make this model the guild's active one (the one search uses) when the
    /// index is complete. A guild's first index becomes active without it.
    #[arg(long)]
    pub activate: bool,
    /// Read image files again whose stored text an older OCR engine read
    /// (after upgrading Tesseract or its language data).
    #[arg(long)]
    pub reread_images: bool,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    // The model first: a missing one is reported before the archive is read.
    let name = args.model.clone().unwrap_or_else(|| settings.index.model.clone());
    let info = ModelInfo::find(&settings.index.models_dir, &name)?;
    let store = Store::open_existing(&settings.data_dir)?;
    let device = device();
    let backend = settings.backend()?;
    tracing::info!(model = %info.name, device = device_name(&device), "loading model");
    let precision = settings.index.precision;
    let embedder = Arc::new(crate::blocking::run(move || Embedder::load_as(info, device, precision)).await?);
    if !json {
        say!(
            "model {} ({} dimensions, {:?} pooling, {} tokens) on {} ({}); store: {}",
            embedder.info.name,
            embedder.info.dim,
            embedder.info.pooling,
            embedder.info.max_tokens,
            device_name(embedder.device()),
            embedder.precision().name(),
            backend.kind()
        );
    }
    let shutdown = shutdown_on_signal("stopping: the chunks stored so far are kept (Ctrl-C again to quit at once)");
    let mut summaries = Vec::new();
    for guild in args.guilds {
        let mut options = settings.index.options(guild);
        options.rebuild = args.rebuild;
        options.activate = args.activate;
        options.images.reread = args.reread_images;
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

/// The terminal view of a run: messages to embed against messages embedded,
/// with indicatif's rate and ETA (steadied over the run's recent pace).
struct View {
    bar: ProgressBar,
    tally: std::sync::Mutex<index::Tally>,
}

impl View {
    fn new() -> Self {
        // No total (and no ETA) until the run knows what it will read.
        let bar = super::progress_bar(None, "{spinner} [{elapsed_precise}] finding what changed  {msg}");
        View { bar, tally: Default::default() }
    }

    fn on_event(&self, e: IndexEvent) {
        let mut t = self.tally.lock().unwrap();
        t.update(&e);
        match e {
            IndexEvent::Planned { channels, messages, resumed } => {
                self.bar.set_style(super::bar_style(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} messages ({rate}, ETA {eta})  {msg}",
                ));
                if resumed > 0 {
                    self.bar
                        .suspend(|| say!("resuming: {resumed} chunks already stored by the interrupted run are kept"));
                }
                self.bar.set_message(format!("{channels} channels changed, about {messages} messages to read"));
            }
            IndexEvent::Progress { embedded, deleted, .. } => {
                let removed = if deleted > 0 { format!(", {deleted} removed") } else { String::new() };
                self.bar.set_message(format!("{embedded} chunks embedded{removed}"));
            }
        }
        // Never 0: indicatif draws an empty total as a full bar.
        self.bar.set_length(t.total().max(1));
        self.bar.set_position(t.done);
    }
}

fn print_summary(s: &IndexSummary) {
    let i = &s.images;
    if i.read > 0 {
        out!(
            "guild {}: text read from {} image files ({} with text, {} not decodable) in {:.1}s; {} messages changed with it",
            s.guild_id,
            i.read,
            i.with_text,
            i.undecodable,
            i.seconds,
            i.messages
        );
    }
    if let Some(why) = &i.unavailable {
        out!("guild {}: {} image files not read: {why}", s.guild_id, i.unread);
    }
    out!(
        "guild {} with {}: {} chunks embedded, {} unchanged, {} removed ({} tokens) from {} messages in {} changed channels; \
         {} points in {} ({}), {}; {:.1}s{}{}",
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
        if s.indexed_vectors > 0 {
            format!("{} in the HNSW graph", s.indexed_vectors)
        } else {
            "searched exhaustively (fast at this size; an HNSW graph is built once the collection is large)".into()
        },
        s.seconds,
        if s.active {
            "; search uses it".to_owned()
        } else {
            format!(
                "; search still uses the guild's active index (switch with `discord-indexer activate --guild {} --model {}`)",
                s.guild_id, s.model
            )
        },
        if s.repaired > 0 { format!("; {} chunks the vector store had lost were embedded again", s.repaired) } else { String::new() }
    );
}
