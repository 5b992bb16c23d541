//! `discord-indexer adapt`: a copy of an embedding model fine-tuned on one
//! guild's own message pairs (see [`crate::adapt`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{exit, shutdown_on_signal};
use crate::adapt::{self, AdaptError, Request, Settings};
use crate::config::Settings as Config;
use crate::embed::{device, device_name, ModelInfo};
use crate::store::Store;

/// Fine-tune a copy of a model on a guild's own conversations, as a new model.
///
/// Learns from pairs of messages (a reply and what it answers, or two
/// consecutive messages by different people within 15 minutes), so that
/// search learns the server's vocabulary; it needs at least 256 such pairs
/// (a few thousand messages of conversation). The archive is only read. Then
/// `index --guild ID --model NAME --activate` builds its index beside the
/// active one and switches when complete. The new model learns from every
/// archived channel, private ones included: keep it as private as the archive.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guild id (as loaded or imported).
    #[arg(long, value_name = "ID", value_parser = super::discord_id)]
    pub guild: u64,
    /// The new model's name (a new directory in the models directory).
    #[arg(long)]
    pub name: String,
    /// The model to start from (default: [index] model, else all-MiniLM-L6-v2).
    #[arg(long)]
    pub base: Option<String>,
    /// Passes over the pairs.
    #[arg(long, default_value_t = Settings::default().epochs)]
    pub epochs: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = Settings::default().batch)]
    pub batch: usize,
    /// AdamW's learning rate.
    #[arg(long, default_value_t = Settings::default().learning_rate)]
    pub learning_rate: f64,
    /// Train on at most this many pairs (a random sample when there are more).
    #[arg(long, default_value_t = Settings::default().max_pairs)]
    pub max_pairs: usize,
    /// Inputs are cut at this many tokens while training.
    #[arg(long, default_value_t = Settings::default().max_tokens)]
    pub max_tokens: usize,
    /// Seeds the order of pairs, the sample and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub async fn run(args: Args, config: &Config, json: bool) -> anyhow::Result<u8> {
    let settings = Settings {
        epochs: args.epochs,
        batch: args.batch,
        learning_rate: args.learning_rate,
        max_tokens: args.max_tokens,
        seed: args.seed,
        max_pairs: args.max_pairs,
    };
    settings.check()?;
    // Name and base first: a mistake there is reported before the archive is read.
    adapt::target_dir(&config.index.models_dir, &args.name)?;
    let base = ModelInfo::find(&config.index.models_dir, args.base.as_deref().unwrap_or(&config.index.model))?;
    let store = Store::open_existing(&config.data_dir)?;
    if !store.has_guild(args.guild)? {
        return Err(AdaptError::UnknownGuild(args.guild).into());
    }
    let device = device();
    if !json {
        say!(
            "adapting {} to guild {} on {} (learning from every archived channel: keep {} as private as the archive)",
            base.name,
            args.guild,
            device_name(&device),
            config.index.models_dir.join(&args.name).display()
        );
    }
    let request =
        Request { guild: args.guild, base, models_dir: config.index.models_dir.clone(), name: args.name, settings };
    let shutdown = shutdown_on_signal("stopping: no model will be written (Ctrl-C again to quit at once)");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.cancelled().await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let bar = super::progress_bar(
        Some(1),
        "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps (ETA {eta})  {msg}",
    );
    let view = bar.clone();
    let result = crate::blocking::run(move || {
        adapt::adapt(
            &store,
            request,
            device,
            &|s| {
                view.set_length(s.steps as u64);
                view.set_position(s.step as u64);
                view.set_message(format!("loss {:.3}", s.loss));
            },
            &stop,
        )
    })
    .await;
    watcher.abort();
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!(
                    "installed {}: {} adapted to guild {} on {} of its {} message pairs, {} steps in {:.0}s \
                     (loss {:.3} -> {:.3})",
                    config.index.models_dir.join(&report.model).display(),
                    report.base,
                    report.guild,
                    report.pairs,
                    report.pairs_found,
                    report.steps,
                    report.seconds,
                    report.loss_first_tenth,
                    report.loss_last_tenth
                );
                say!("next: discord-indexer index --guild {} --model {} --activate", report.guild, report.model);
            }
            Ok(exit::OK)
        }
        Err(AdaptError::Interrupted) => {
            eprintln!("interrupted: no model was written");
            Ok(exit::INTERRUPTED)
        }
        Err(e) => Err(e.into()),
    }
}
