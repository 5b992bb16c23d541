//! The start of the bot benchmarks (bench_bot, bench_live): the fake
//! server's first guild loaded and indexed with `model` before the bot
//! starts, as an operator would, and the bot's settings for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use discord_indexer::config::Settings;
use discord_indexer::discord::{Client, ClientOptions, Token};
use discord_indexer::embed::{device, Embedder, ModelInfo};
use discord_indexer::index::{self, IndexOptions};
use discord_indexer::load::{self, LoadOptions};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;
use fake_discord::FakeDiscord;
use tokio_util::sync::CancellationToken;

/// What [`prepare`] made.
pub struct Prepared {
    /// The bot's settings: the archive in `dir/data`, the fake server, the model.
    pub settings: Settings,
    /// Messages loaded, and chunks indexed.
    pub messages: u64,
    pub chunks: u64,
    pub index_seconds: f64,
}

/// Loads and indexes the fake server's first guild into `dir/data` (made
/// afresh; not a temporary directory: the bot's collections are flushed as
/// the runtime shuts down, after `main` returns).
pub async fn prepare(fake: &FakeDiscord, dir: &Path, models: &Path, model: &str) -> anyhow::Result<Prepared> {
    let guild = fake.world().guilds[0].id;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    let store = Store::open(&data)?;
    let client = Client::new(ClientOptions::new(fake.base_url(), Token::new(fake.token())))?;
    let options = LoadOptions { guilds: vec![guild], channels: vec![], concurrency: 8 };
    let loaded = load::load(&client, &store, &options, &|_| {}, &CancellationToken::new()).await?;
    let info = ModelInfo::find(models, model)?;
    let embedder = Arc::new(tokio::task::spawn_blocking(move || Embedder::load(info, device())).await??);
    let mut index_options = IndexOptions::new(guild);
    index_options.activate = true;
    let backend = Backend::new(&data, None, None)?;
    let built = Instant::now();
    let summary = index::index(&store, &backend, embedder, &index_options, &|_| {}, &CancellationToken::new()).await?;
    let index_seconds = built.elapsed().as_secs_f64();
    drop((store, backend));

    let config = dir.join("empty.toml");
    std::fs::write(&config, "")?;
    let mut settings = Settings::resolve(Some(&config), Some(data), None)?;
    settings.token = Some(Token::new(fake.token()));
    settings.api_base = fake.base_url();
    settings.index.models_dir = models.to_path_buf();
    settings.index.model = model.into();
    Ok(Prepared { settings, messages: loaded.new, chunks: summary.chunks, index_seconds })
}
