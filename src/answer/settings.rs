//! The `[answer]` section of the config file: which chat model writes
//! answers (a GGUF file in the models directory, or an OpenAI-compatible
//! endpoint), and how much it reads and writes; defaults and checks in one
//! place.

use std::time::Duration;

use anyhow::bail;

use crate::config::Secret;

/// The endpoint's window when `context_tokens` does not say.
pub const DEFAULT_ENDPOINT_CONTEXT: usize = 4096;
/// Most tokens an answer may have when `max_answer_tokens` does not say.
pub const DEFAULT_MAX_ANSWER_TOKENS: usize = 200;
/// How many of the top results the model reads when `results` does not say.
pub const DEFAULT_RESULTS: usize = 5;
/// The longest question when `max_question_chars` does not say.
pub const DEFAULT_MAX_QUESTION_CHARS: usize = 500;
/// How long one answer may take (an endpoint's whole request; in the bot, any answer from its turn) when `timeout_secs` does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// The smallest window an answer is written in: the rules, a question and
/// one result must fit beside the answer.
pub const MIN_CONTEXT_TOKENS: usize = 512;

/// The `[answer]` table as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSection {
    model: Option<String>,
    endpoint: Option<String>,
    endpoint_model: Option<String>,
    api_key_env: Option<String>,
    context_tokens: Option<usize>,
    max_answer_tokens: Option<usize>,
    results: Option<usize>,
    max_question_chars: Option<usize>,
    timeout_secs: Option<u64>,
}

impl std::fmt::Debug for AnswerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSection")
            .field("model", &self.model)
            .field("endpoint", &self.endpoint)
            .field("endpoint_model", &self.endpoint_model)
            .finish_non_exhaustive()
    }
}

/// An OpenAI-compatible endpoint and the model it serves.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// The base URL (`http://127.0.0.1:11434/v1`), without a trailing slash.
    pub url: String,
    /// The model name the endpoint serves.
    pub model: String,
    /// The variable `api_key_env` names, when set.
    pub api_key_env: Option<String>,
    /// Its value, read when the settings were resolved (None: not set or
    /// empty; never printed).
    pub api_key: Option<Secret>,
}

/// How answers are written.
#[derive(Debug, Clone)]
pub struct AnswerSettings {
    /// A GGUF file in the models directory, by name, with or without
    /// `.gguf` (or a path to one); None: the only one there.
    pub model: Option<String>,
    /// An endpoint, used instead of the embedded model when set.
    pub endpoint: Option<EndpointSettings>,
    /// `context_tokens` as written: the endpoint's window (default
    /// [`DEFAULT_ENDPOINT_CONTEXT`]); for the embedded model a cap on the
    /// window its file gives.
    pub context_tokens: Option<usize>,
    /// Most tokens an answer may have.
    pub max_answer_tokens: usize,
    /// How many of the top results the model reads.
    pub results: usize,
    /// The longest question, in characters.
    pub max_question_chars: usize,
    /// How long one answer may take: an endpoint's whole request; in the bot, any answer from its turn in line.
    pub timeout: Duration,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        AnswerSection::default().resolve(|_| None).expect("the defaults are valid")
    }
}

impl AnswerSettings {
    /// The window answers are written in for a model whose own is `model`
    /// tokens (0: unknown): the endpoint's setting, else the model's capped
    /// by `context_tokens` when set.
    pub fn window(&self, model: usize) -> usize {
        window(model, self.context_tokens)
    }
}

/// The window answers are written in for a model whose own is `model`
/// tokens (0: unknown) with `context_tokens` set to `cap`.
pub fn window(model: usize, cap: Option<usize>) -> usize {
    match (model, cap) {
        (0, cap) => cap.unwrap_or(DEFAULT_ENDPOINT_CONTEXT),
        (m, Some(cap)) => m.min(cap),
        (m, None) => m,
    }
}

impl AnswerSection {
    /// The settings this section gives, its defaults filled in; a value no
    /// answer can be written with is an error that names its key. `env`
    /// reads the variable `api_key_env` names.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<AnswerSettings> {
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let model = nonempty(self.model);
        let endpoint = match nonempty(self.endpoint) {
            Some(url) => {
                let url = check_endpoint(&url).map_err(|e| anyhow::anyhow!("[answer] endpoint {e}"))?;
                let Some(model) = nonempty(self.endpoint_model) else {
                    bail!(
                        "[answer] endpoint_model is required with endpoint: the name of the model {url} serves \
                         (e.g. `ollama list` names them)"
                    );
                };
                let api_key_env = nonempty(self.api_key_env);
                if let Some(name) = &api_key_env {
                    if name.contains('=') || name.chars().any(char::is_whitespace) {
                        bail!(
                            "[answer] api_key_env is the name of an environment variable that holds the key \
                             (e.g. \"OPENAI_API_KEY\"), not the key"
                        );
                    }
                }
                let api_key = api_key_env.as_deref().and_then(&env).filter(|k| !k.trim().is_empty()).map(Secret);
                Some(EndpointSettings { url, model, api_key_env, api_key })
            }
            None => None,
        };
        if let Some(n) = self.context_tokens {
            if n < MIN_CONTEXT_TOKENS {
                bail!("[answer] context_tokens must be at least {MIN_CONTEXT_TOKENS}");
            }
        }
        let max_answer_tokens = self.max_answer_tokens.unwrap_or(DEFAULT_MAX_ANSWER_TOKENS);
        if max_answer_tokens < 16 {
            bail!("[answer] max_answer_tokens must be at least 16");
        }
        let window = self.context_tokens.unwrap_or(DEFAULT_ENDPOINT_CONTEXT);
        if max_answer_tokens > window / 2 {
            bail!(
                "[answer] max_answer_tokens ({max_answer_tokens}) must be at most half of context_tokens ({window}): \
                 the rest is for the results the answer is written from"
            );
        }
        let results = self.results.unwrap_or(DEFAULT_RESULTS);
        if !(1..=50).contains(&results) {
            bail!("[answer] results must be between 1 and 50");
        }
        let max_question_chars = self.max_question_chars.unwrap_or(DEFAULT_MAX_QUESTION_CHARS);
        if max_question_chars == 0 {
            bail!("[answer] max_question_chars must be at least 1");
        }
        let timeout = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout == 0 {
            bail!("[answer] timeout_secs must be at least 1");
        }
        Ok(AnswerSettings {
            model,
            endpoint,
            context_tokens: self.context_tokens,
            max_answer_tokens,
            results,
            max_question_chars,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// An endpoint's base URL, checked (http or https, with a host), without a
/// trailing slash; the error says what is wrong and shows a good one.
fn check_endpoint(url: &str) -> Result<String, String> {
    const EXAMPLE: &str = "e.g. http://127.0.0.1:11434/v1 (Ollama) or http://127.0.0.1:8080/v1 (llama.cpp's server)";
    let url = url.trim().trim_end_matches('/');
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(url.to_owned()),
        Ok(u) if url.contains("://") => {
            Err(format!("{url:?}: only http:// and https:// are supported, not {}://; {EXAMPLE}", u.scheme()))
        }
        _ if !url.contains("://") => Err(format!("{url:?} has no scheme: write it with http:// in front, {EXAMPLE}")),
        Err(e) => Err(format!("{url:?} is not a valid URL ({e}); {EXAMPLE}")),
        Ok(_) => Err(format!("{url:?} has no host; {EXAMPLE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<AnswerSettings> {
        let section: AnswerSection = toml::from_str(toml)?;
        section.resolve(env)
    }

    #[test]
    fn defaults() {
        let s = resolve("", |_| None).unwrap();
        assert_eq!((s.model, s.endpoint.is_none(), s.context_tokens), (None, true, None));
        assert_eq!((s.max_answer_tokens, s.results, s.max_question_chars), (200, 5, 500));
        assert_eq!(s.timeout, Duration::from_secs(120));
        let s = AnswerSettings::default();
        // The embedded model's window is its own unless capped; an endpoint's is the setting's.
        assert_eq!((s.window(8192), s.window(0)), (8192, 4096));
        let s = resolve("context_tokens = 2048", |_| None).unwrap();
        assert_eq!((s.window(8192), s.window(1024), s.window(0)), (2048, 1024, 2048));
    }

    #[test]
    fn an_endpoint_needs_its_model_and_reads_its_key_from_the_named_variable() {
        let s = resolve(
            "endpoint = \" http://127.0.0.1:11434/v1/ \"\nendpoint_model = \"qwen2.5:3b\"\napi_key_env = \"MY_KEY\"",
            |k| (k == "MY_KEY").then(|| "sk-secret".to_owned()),
        )
        .unwrap();
        let e = s.endpoint.unwrap();
        assert_eq!((e.url.as_str(), e.model.as_str()), ("http://127.0.0.1:11434/v1", "qwen2.5:3b"));
        assert_eq!(e.api_key, Some(Secret("sk-secret".into())));
        assert!(!format!("{e:?}").contains("sk-secret"));
        // Unset or empty: no key (the endpoint may not need one).
        let s = resolve("endpoint = \"http://h/v1\"\nendpoint_model = \"m\"\napi_key_env = \"MY_KEY\"", |_| {
            Some(" ".into())
        })
        .unwrap();
        assert_eq!(s.endpoint.unwrap().api_key, None);

        let err = resolve("endpoint = \"http://h/v1\"", |_| None).unwrap_err().to_string();
        assert!(err.contains("[answer] endpoint_model is required with endpoint"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        for (toml, expect) in [
            (
                "endpoint = \"127.0.0.1:11434/v1\"\nendpoint_model = \"m\"",
                "[answer] endpoint \"127.0.0.1:11434/v1\" has no scheme",
            ),
            ("endpoint = \"ftp://h/v1\"\nendpoint_model = \"m\"", "only http:// and https://"),
            (
                "endpoint = \"http://h\"\nendpoint_model = \"m\"\napi_key_env = \"sk-123 456\"",
                "[answer] api_key_env is the name",
            ),
            ("context_tokens = 100", "[answer] context_tokens must be at least 512"),
            ("max_answer_tokens = 0", "[answer] max_answer_tokens must be at least 16"),
            (
                "max_answer_tokens = 3000",
                "[answer] max_answer_tokens (3000) must be at most half of context_tokens (4096)",
            ),
            ("results = 0", "[answer] results must be between 1 and 50"),
            ("max_question_chars = 0", "[answer] max_question_chars must be at least 1"),
            ("timeout_secs = 0", "[answer] timeout_secs must be at least 1"),
        ] {
            let err = resolve(toml, |_| None).unwrap_err().to_string();
            assert!(err.contains(expect), "{toml}: {err}");
        }
        assert!(resolve("modle = \"x\"", |_| None).unwrap_err().to_string().contains("unknown field"));
    }
}
