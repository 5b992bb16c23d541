//! Answers: a short answer written by a chat model from the results a search
//! returned for the asker, each claim citing a result (`[1]`, `[2]`).
//!
//! The model sees only those results, which the search already limited to
//! what the asker may read; chat text goes into the prompt as quoted data,
//! cut to a token budget the model's window allows, best results first.
//! What the model writes is checked in code: citations of results that do
//! not exist are dropped, and an answer that cites nothing is not shown as
//! an answer.
//!
//! - [`answer`]: the one way an answer is written (the CLI's `ask --answer`,
//!   the bot's): a prompt from the top results, a generation, its citations
//!   checked.
//! - [`prompt`]: the prompt: fixed rules, the results as numbered sources
//!   quoted as data (a key no chat text holds marks where each begins and
//!   ends), the question; cut to the window's budget, best results first.
//! - [`cite`]: the citations in what the model wrote, checked against the
//!   sources, as it is written (what is streamed is the checked text).
//! - [`settings`]: the `[answer]` section of the config file.
//! - [`Generator`]: one interface over two backends:
//!   - [`gguf`]: a GGUF chat model run in process through candle's
//!     quantized llama (CPU or CUDA), its tokenizer and chat template read
//!     from the file;
//!   - [`endpoint`]: an OpenAI-compatible chat endpoint (Ollama, llama.cpp's
//!     server, vLLM, LM Studio), streamed.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::search::SearchResult;

pub mod cite;
pub mod endpoint;
pub mod gguf;
pub mod prompt;
pub mod settings;

pub use settings::{AnswerSection, AnswerSettings};

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What a generation is asked.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub messages: Vec<ChatMessage>,
    /// Most new tokens.
    pub max_tokens: usize,
    /// 0: greedy (the same answer for the same prompt); else sampled with `seed`.
    pub temperature: f64,
    pub seed: u64,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` were written.
    Length,
    /// Stopped by the caller (Ctrl-C, a person cancelling).
    Cancelled,
}

/// How long a generation took, and how fast it went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerationStats {
    /// Tokens of the prompt (as the backend counted them).
    pub prompt_tokens: usize,
    /// Tokens written.
    pub generated_tokens: usize,
    /// From the request to the first token written (prompt processing included).
    pub first_token_ms: f64,
    /// Prompt tokens per second of prompt processing.
    pub prompt_tokens_per_s: f64,
    /// Tokens written per second after the first.
    pub tokens_per_s: f64,
    /// The whole generation.
    pub total_ms: f64,
}

/// What a model wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    pub finish: Finish,
    pub stats: GenerationStats,
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The embedded model is missing or cannot be loaded; the message says
    /// where it was looked for and how to install one.
    #[error("{0}")]
    Model(String),
    /// The endpoint is unreachable or refused; the message names the setting.
    #[error("{0}")]
    Endpoint(String),
    #[error("writing the answer failed: {0}")]
    Generate(String),
}

/// A chat model: in process, or behind an OpenAI-compatible endpoint.
#[derive(Clone)]
pub enum Generator {
    Embedded(Arc<gguf::ChatModel>),
    Endpoint(Arc<endpoint::Endpoint>),
}

impl Generator {
    /// The model's name, as shown to people.
    pub fn name(&self) -> String {
        match self {
            Generator::Embedded(m) => m.name(),
            Generator::Endpoint(e) => e.name(),
        }
    }

    /// Tokens the model can attend to: prompt and answer together.
    pub fn context_window(&self) -> usize {
        match self {
            Generator::Embedded(m) => m.context_window(),
            Generator::Endpoint(e) => e.context_window(),
        }
    }

    /// A text's tokens: exact for the embedded model, a safe over-estimate
    /// for an endpoint (whose tokenizer is not at hand).
    pub fn count_tokens(&self, text: &str) -> usize {
        match self {
            Generator::Embedded(m) => m.count_tokens(text),
            Generator::Endpoint(e) => e.count_tokens(text),
        }
    }

    /// Writes a reply to `request.messages`. Each piece of text is sent to
    /// `pieces` as it is written (when given); `cancel` ends the generation
    /// early with [`Finish::Cancelled`] and what was written so far.
    pub async fn generate(
        &self,
        request: GenerateRequest,
        pieces: Option<UnboundedSender<String>>,
        cancel: CancellationToken,
    ) -> Result<Generation, AnswerError> {
        match self {
            Generator::Embedded(m) => {
                let m = m.clone();
                crate::blocking::run(move || m.generate(&request, pieces.as_ref(), &cancel)).await
            }
            Generator::Endpoint(e) => e.generate(&request, pieces.as_ref(), &cancel).await,
        }
    }
}

impl Generator {
    /// The chat model `settings` name: the `[answer] endpoint` when set,
    /// else the GGUF file `[answer] model` names in the models directory
    /// (the only one there when unnamed), loaded (blocking: seconds for a
    /// large model). The error says what to set or install.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Generator, AnswerError> {
        let a = &settings.answer;
        if let Some(e) = &a.endpoint {
            if let (Some(name), None) = (&e.api_key_env, &e.api_key) {
                return Err(AnswerError::Endpoint(format!(
                    "[answer] api_key_env names {name}, which is not set in the environment: set it to the \
                     endpoint's key, or remove api_key_env for an endpoint without one"
                )));
            }
            let options = endpoint::EndpointOptions {
                url: e.url.clone(),
                model: e.model.clone(),
                api_key: e.api_key.as_ref().map(|k| k.0.clone()),
                api_key_env: e.api_key_env.clone(),
                context_window: a.window(0),
                timeout: a.timeout,
                connect_timeout: a.timeout.min(CONNECT_TIMEOUT),
            };
            return Ok(Generator::Endpoint(Arc::new(endpoint::Endpoint::new(options)?)));
        }
        let path = gguf::find(&settings.index.models_dir, a.model.as_deref())?;
        Ok(Generator::Embedded(Arc::new(gguf::load(&path, &crate::embed::device())?)))
    }
}

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How an answer is written (from the `[answer]` settings).
#[derive(Debug, Clone)]
pub struct AnswerOptions {
    /// How many of the top results the model reads (at most).
    pub results: usize,
    /// Most tokens of the answer.
    pub max_answer_tokens: usize,
    /// A cap on the model's window (an endpoint's window is its own setting).
    pub context_tokens: Option<usize>,
    /// The longest question, in characters.
    pub max_question_chars: usize,
}

impl From<&AnswerSettings> for AnswerOptions {
    fn from(s: &AnswerSettings) -> Self {
        AnswerOptions {
            results: s.results,
            max_answer_tokens: s.max_answer_tokens,
            context_tokens: s.context_tokens,
            max_question_chars: s.max_question_chars,
        }
    }
}

impl Default for AnswerOptions {
    fn default() -> Self {
        AnswerOptions::from(&AnswerSettings::default())
    }
}

/// What a person is told when the model's text cites none of the sources.
pub const NOT_FOUND: &str = "no answer found in the messages you can read";

/// A source the answer cites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citation {
    /// The result's 1-based position in the results listed.
    pub result: usize,
    /// The result's messages.
    #[serde(serialize_with = "serialize_ids")]
    pub message_ids: Vec<u64>,
    /// The jump link of the message the result is about.
    pub link: String,
}

fn serialize_ids<S: serde::Serializer>(ids: &[u64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(u64::to_string))
}

/// A checked answer.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// Whether the model's text cites a source; when not, there is no answer
    /// (the asker is told [`NOT_FOUND`]).
    pub found: bool,
    /// The text, with only citations of the sources (`[n]` is the n-th
    /// result listed), when found.
    pub text: Option<String>,
    /// The sources cited, by position.
    pub citations: Vec<Citation>,
    /// The results the model read (1-based positions): the top ones that fit
    /// its window.
    pub sources: Vec<usize>,
    /// Of the top results it was to read, how many did not fit.
    pub left_out: usize,
    /// Whether the last source was cut to fit.
    pub cut: bool,
    /// Citations of results that were not sources, dropped from the text.
    pub dropped_citations: usize,
    /// Why the generation ended (`stop` also when there was nothing to read).
    pub finish: Finish,
    /// The model that wrote it.
    pub model: String,
    /// The model's own text, before the check.
    #[serde(skip)]
    pub raw: String,
    #[serde(skip)]
    pub stats: GenerationStats,
    /// The prompt's tokens as counted for the budget.
    #[serde(skip)]
    pub prompt_tokens: usize,
}

/// Whether `question` may be answered: not empty, and at most `max_chars`
/// characters; the error is the message for the asker.
pub fn check_question(question: &str, max_chars: usize) -> Result<(), String> {
    let question = question.trim();
    let n = question.chars().count();
    if n == 0 {
        return Err("the question is empty".into());
    }
    if n > max_chars {
        return Err(format!("the question is {n} characters; at most {max_chars}"));
    }
    Ok(())
}

/// Writes a short answer to `question` from `results` (a search's results,
/// best first, all of them readable by the asker: nothing else reaches the
/// model), and checks it.
///
/// The model reads the top `options.results` that fit its window (see
/// [`prompt::build`]). What it writes is checked in code ([`cite`]):
/// citations of results that were not sources are dropped, and a text left
/// citing nothing is no answer. `pieces` gets the checked text as it is
/// written: nothing until the first valid citation, so a text that never
/// cites is never shown. `cancel` ends the generation early
/// ([`Finish::Cancelled`]) with what was written. A question longer than
/// `options.max_question_chars` is refused before any work.
pub async fn answer(
    generator: &Generator,
    question: &str,
    results: &[SearchResult],
    options: &AnswerOptions,
    pieces: Option<UnboundedSender<String>>,
    cancel: CancellationToken,
) -> Result<Written, AnswerError> {
    check_question(question, options.max_question_chars).map_err(AnswerError::Generate)?;
    let top = &results[..results.len().min(options.results)];
    let window = settings::window(generator.context_window(), options.context_tokens);
    let mut budget = prompt::Budget { window, answer: options.max_answer_tokens };
    let count = |t: &str| generator.count_tokens(t);
    let mut prompt = prompt::build(question, top, budget, &count);
    // The embedded model counts the prompt exactly, its chat template
    // applied: the budget gives up what the template took beyond its allowance.
    if let Some(exact) = exact_tokens(generator, &prompt.messages) {
        let over = (exact + budget.answer).saturating_sub(window);
        if over > 0 {
            budget.window = budget.window.saturating_sub(over);
            prompt = prompt::build(question, top, budget, &count);
        }
    }
    let valid: Vec<usize> = prompt.used.iter().map(|i| i + 1).collect();
    let mut written = Written {
        found: false,
        text: None,
        citations: Vec::new(),
        sources: valid.clone(),
        left_out: prompt.left_out,
        cut: prompt.cut,
        dropped_citations: 0,
        finish: Finish::Stop,
        model: generator.name(),
        raw: String::new(),
        stats: GenerationStats::default(),
        prompt_tokens: prompt.tokens,
    };
    if valid.is_empty() {
        // Nothing the asker may read was found (or fits): nothing to ask the model.
        return Ok(written);
    }
    let request = prompt::request(&prompt, options.max_answer_tokens);
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut cleaner = cite::Cleaner::new(&valid);
    let send = |text: String| {
        if let (Some(p), false) = (&pieces, text.is_empty()) {
            let _ = p.send(text);
        }
    };
    let forward = async {
        while let Some(piece) = raw_rx.recv().await {
            send(cleaner.push(&piece));
        }
    };
    let (generation, ()) = tokio::join!(generator.generate(request, Some(raw_tx), cancel), forward);
    let generation = generation?;
    send(cleaner.finish().0);
    // The whole text is the one checked (the pieces should add up to it).
    let checked = cite::check(&generation.text, &valid);
    written.found = checked.found();
    written.citations = checked
        .cited
        .iter()
        .map(|&n| {
            let r = &results[n - 1];
            Citation { result: n, message_ids: r.message_ids.clone(), link: r.jump_url.clone() }
        })
        .collect();
    written.text = written.found.then_some(checked.text);
    written.dropped_citations = checked.dropped;
    written.finish = generation.finish;
    written.raw = generation.text;
    written.stats = generation.stats;
    Ok(written)
}

/// The tokens of `messages` as the model reads them, its chat template
/// applied, where the model can say (the embedded one).
fn exact_tokens(generator: &Generator, messages: &[ChatMessage]) -> Option<usize> {
    match generator {
        Generator::Embedded(m) => m.prompt_tokens(messages).ok().map(|ids| ids.len()),
        Generator::Endpoint(_) => None,
    }
}
