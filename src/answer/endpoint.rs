//! An OpenAI-compatible chat endpoint: Ollama (`http://127.0.0.1:11434/v1`),
//! llama.cpp's server (`llama-server`, or llama-cpp-python's), vLLM,
//! LM Studio, or a hosted API.
//!
//! A generation is one `POST {endpoint}/chat/completions` with
//! `"stream": true`; the server's events (`data: {...}` lines, ended by
//! `data: [DONE]`) are read as they come, and each piece of text is passed on
//! at once. A server that answers with one JSON body instead is accepted too.
//! `stream_options.include_usage` asks for the token counts; where a server
//! leaves them out (llama-cpp-python's server does), the pieces are counted
//! as tokens and the prompt is estimated (see [`Endpoint::count_tokens`]).
//! The speeds are measured here: the time to the first piece covers the
//! request and the prompt's processing, and the rate of writing is taken
//! from the first piece to the last (llama.cpp's `llama-server` reports its
//! own `timings`, which are used instead). An answer that came whole has no
//! time to its first token (0), and its rate includes the prompt.
//!
//! Failures name the setting to look at: `[answer] endpoint` when the server
//! cannot be reached or has no such API, `[answer] endpoint_model` when it has
//! no such model, the key's environment variable (`[answer] api_key_env`)
//! when it refuses the key, `[answer] context_tokens` when the prompt may
//! not fit, `[answer] timeout_secs` when the whole generation takes too long.
//! A failure to connect (or a kept-alive connection found closed, or closed
//! before the first event), or a 5xx answer, is tried once more before any
//! text was written, never after. The key is sent as `Authorization:
//! Bearer`, and appears in no message, log line or `Debug`.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AnswerError, ChatMessage, Finish, GenerateRequest, Generation, GenerationStats};

/// Tokens assumed when no setting says how many the model attends to.
pub const DEFAULT_CONTEXT_WINDOW: usize = 4096;

/// Tokens [`Endpoint::count_tokens`] adds to each text for the markers a chat
/// template puts around a message (`<|im_start|>user\n`, `<|im_end|>\n`).
pub const MESSAGE_OVERHEAD_TOKENS: usize = 4;

/// How long to wait before the one retry.
const RETRY_DELAY: Duration = Duration::from_millis(300);

/// Most of a server's error text quoted in a message.
const QUOTE_CHARS: usize = 300;

/// What an [`Endpoint`] is made from: the `[answer]` settings.
#[derive(Clone)]
pub struct EndpointOptions {
    /// The API's base, the part before `/chat/completions`:
    /// `http://127.0.0.1:11434/v1` (`[answer] endpoint`).
    pub url: String,
    /// The model the server is asked for (`[answer] endpoint_model`).
    pub model: String,
    /// The key sent as `Authorization: Bearer`, read from the environment;
    /// never logged, never in `Debug`. `None` or empty: no key is sent.
    pub api_key: Option<String>,
    /// The name of the environment variable the key was read from
    /// (`[answer] api_key_env`), for messages; never the key itself.
    pub api_key_env: Option<String>,
    /// Tokens the model attends to, prompt and answer together
    /// (`[answer] context_tokens`; 0: [`DEFAULT_CONTEXT_WINDOW`]).
    pub context_window: usize,
    /// A whole generation's limit, from the request to the last token
    /// (`[answer] timeout_secs`).
    pub timeout: Duration,
    /// The limit on making a connection.
    pub connect_timeout: Duration,
}

impl EndpointOptions {
    /// Options for `model` at `url`, without a key, with a 4096-token window,
    /// a 120 s limit on a generation and 5 s on connecting.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> EndpointOptions {
        EndpointOptions {
            url: url.into(),
            model: model.into(),
            api_key: None,
            api_key_env: None,
            context_window: DEFAULT_CONTEXT_WINDOW,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for EndpointOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointOptions")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &redacted(&self.api_key))
            .field("api_key_env", &self.api_key_env)
            .field("context_window", &self.context_window)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

fn redacted(key: &Option<String>) -> Option<&'static str> {
    key.as_ref().map(|_| "<redacted>")
}

/// An OpenAI-compatible chat endpoint and the model it serves.
pub struct Endpoint {
    http: reqwest::Client,
    /// The base as set, without a trailing `/`, for messages.
    base: String,
    /// `{base}/chat/completions`.
    completions: Url,
    model: String,
    /// `Bearer KEY`, marked sensitive.
    authorization: Option<HeaderValue>,
    api_key_env: Option<String>,
    context_window: usize,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.base)
            .field("model", &self.model)
            .field("api_key", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("context_window", &self.context_window)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks the options (a URL, a model name) and makes the HTTP client;
    /// nothing is sent until [`Endpoint::generate`].
    pub fn new(options: EndpointOptions) -> Result<Endpoint, AnswerError> {
        let base = options.url.trim().trim_end_matches('/');
        // The whole URL of the call is accepted for the base too.
        let base = base.strip_suffix("/chat/completions").unwrap_or(base).to_string();
        let parsed = Url::parse(&base).map_err(|e| {
            AnswerError::Endpoint(format!(
                "[answer] endpoint {:?} is not a URL ({e}); give the API's base, like http://127.0.0.1:11434/v1",
                options.url
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(AnswerError::Endpoint(format!(
                "[answer] endpoint {:?} is not an http:// or https:// URL; give the API's base, like http://127.0.0.1:11434/v1",
                options.url
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(AnswerError::Endpoint(format!(
                "[answer] endpoint {:?} has a query or fragment; give the API's base, like http://127.0.0.1:11434/v1",
                options.url
            )));
        }
        let completions = Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| AnswerError::Endpoint(format!("[answer] endpoint {:?} is not a URL ({e})", options.url)))?;
        let model = options.model.trim().to_string();
        if model.is_empty() {
            return Err(AnswerError::Endpoint(format!(
                "no model named for the answer endpoint {base}: set [answer] endpoint_model"
            )));
        }
        let authorization = match options.api_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    AnswerError::Endpoint(format!(
                        "the key in {} holds characters an HTTP header cannot carry",
                        key_source(&options.api_key_env)
                    ))
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("discord-indexer/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout);
        if is_loopback(&parsed) {
            // A proxy set for the outside world is no way to reach this machine.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| AnswerError::Endpoint(format!("cannot make an HTTP client: {e}")))?;
        Ok(Endpoint {
            http,
            base,
            completions,
            model,
            authorization,
            api_key_env: options.api_key_env,
            context_window: if options.context_window == 0 { DEFAULT_CONTEXT_WINDOW } else { options.context_window },
            timeout: options.timeout,
            connect_timeout: options.connect_timeout,
        })
    }

    /// The model's name, as the server is asked for it.
    pub fn name(&self) -> String {
        self.model.clone()
    }

    /// The API's base, as set (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Tokens the model attends to, as set (the server is not asked).
    pub fn context_window(&self) -> usize {
        self.context_window
    }

    /// A safe over-estimate of the tokens `text` takes as one message's
    /// content: the server's tokenizer is not at hand, so this assumes a
    /// poor one. Each run of letters counts a token per 3 letters (rounded
    /// up; common English words are 1 token, rare ones about 1 per 4
    /// letters); each digit, punctuation mark or symbol counts 1 (many
    /// tokenizers split numbers into single digits); a single space counts
    /// nothing (it joins the word or number after it), other whitespace 1 a character;
    /// each other character counts its UTF-8 bytes (the byte fallback of
    /// byte-level tokenizers). [`MESSAGE_OVERHEAD_TOKENS`] are added for
    /// the chat template's markers around a message, so the counts of a
    /// request's messages add up to more than its prompt. English prose
    /// comes out at about a token per 3 characters, a third to a half over
    /// common tokenizers (which take about 4).
    pub fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS
    }

    /// Writes a reply to `request.messages`: see [`super::Generator::generate`].
    pub async fn generate(
        &self,
        request: &GenerateRequest,
        pieces: Option<&UnboundedSender<String>>,
        cancel: &CancellationToken,
    ) -> Result<Generation, AnswerError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let cancelled_early = |start: Instant| Generation {
            text: String::new(),
            finish: Finish::Cancelled,
            stats: GenerationStats { total_ms: ms(start.elapsed()), ..GenerationStats::default() },
        };
        if cancel.is_cancelled() {
            return Ok(cancelled_early(start));
        }
        let mut body = self.body(request, true);
        let mut retried = false;
        let mut without_stream_options = false;
        loop {
            let error = match self.send(&body, deadline, cancel).await {
                Sent::Answer(response) => {
                    let event_stream = response
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.to_ascii_lowercase().contains("text/event-stream"));
                    let mut read = Reader::new(start, pieces);
                    match self.read(response, event_stream, &mut read, deadline, cancel).await {
                        Ok(finish) => return Ok(read.finish(finish, || self.estimate_prompt(&request.messages))),
                        // The connection broke before the first event (a
                        // server closing a kept-alive connection as it is
                        // reused does that): nothing was written yet.
                        Err(error) if read.broken && read.events == 0 && read.count == 0 && !retried => {
                            tracing::debug!("{error}; trying once more");
                            error
                        }
                        Err(error) => return Err(error),
                    }
                }
                Sent::Cancelled => return Ok(cancelled_early(start)),
                Sent::Refused(status, text) => {
                    if !without_stream_options
                        && matches!(status.as_u16(), 400 | 422)
                        && text.contains("stream_options")
                    {
                        // A server that refuses to be asked for usage: ask again without.
                        tracing::debug!("{} refused stream_options; asking without", self.base);
                        without_stream_options = true;
                        body = self.body(request, false);
                        continue;
                    }
                    let error = self.status_error(status, &text);
                    if !status.is_server_error() || retried {
                        return Err(error);
                    }
                    tracing::debug!("{} answered {status}; trying once more", self.base);
                    error
                }
                // Not connected, or a kept-alive connection the server had
                // closed: nothing was answered, so asking again is safe.
                Sent::Failed(e) if !e.is_timeout() && !retried => {
                    tracing::debug!("cannot reach {}: {}; trying once more", self.base, transport_cause(&e));
                    self.transport_error(&e)
                }
                Sent::Failed(e) => return Err(self.transport_error(&e)),
                Sent::TooSlow => return Err(self.too_slow()),
            };
            retried = true;
            if Instant::now() + RETRY_DELAY >= deadline {
                return Err(error);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(cancelled_early(start)),
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }

    /// Sends the request, and reads the body of a refusal.
    async fn send(&self, body: &Value, deadline: Instant, cancel: &CancellationToken) -> Sent {
        let mut call = self
            .http
            .post(self.completions.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream, application/json")
            .json(body);
        if let Some(auth) = &self.authorization {
            call = call.header(AUTHORIZATION, auth.clone());
        }
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Sent::Cancelled,
            _ = tokio::time::sleep_until(deadline) => return Sent::TooSlow,
            r = call.send() => r,
        };
        match outcome {
            Ok(response) if response.status().is_success() => Sent::Answer(response),
            Ok(response) => {
                let status = response.status();
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Sent::Cancelled,
                    text = self.read_error_body(response, deadline) => Sent::Refused(status, text),
                }
            }
            Err(e) => Sent::Failed(e),
        }
    }

    /// The request's JSON body.
    fn body(&self, request: &GenerateRequest, stream_options: bool) -> Value {
        let messages: Vec<Value> =
            request.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            // Every server's integer type holds 31 bits, and none takes them
            // for "a random seed" (llama.cpp does so with 0xFFFFFFFF and -1).
            "seed": request.seed & 0x7fff_ffff,
            "stream": true,
        });
        if stream_options {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// Reads the answer into `read`: server-sent events, or one JSON body.
    async fn read(
        &self,
        mut response: reqwest::Response,
        event_stream: bool,
        read: &mut Reader<'_>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Finish, AnswerError> {
        // Undecided until the body's first byte when the type says neither.
        let mut sse = event_stream.then_some(true);
        let mut buffer: Vec<u8> = Vec::new();
        let mut done = false;
        loop {
            let chunk = tokio::select! {
                biased;
                // Dropping the response closes the connection, which stops the server.
                _ = cancel.cancelled() => return Ok(Finish::Cancelled),
                _ = tokio::time::sleep_until(deadline) => return Err(self.too_slow()),
                c = response.chunk() => c,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    read.broken = true;
                    return Err(AnswerError::Generate(format!(
                        "the answer endpoint {} broke off its answer ({})",
                        self.base,
                        transport_cause(&e)
                    )));
                }
            };
            buffer.extend_from_slice(&chunk);
            if sse.is_none() {
                match buffer.iter().find(|b| !b.is_ascii_whitespace()) {
                    None => continue,
                    Some(b'{') => sse = Some(false),
                    Some(_) => sse = Some(true),
                }
            }
            if sse == Some(true) {
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if self.event_line(&line, read)? {
                        done = true;
                    }
                    if done {
                        break;
                    }
                }
                if done {
                    break;
                }
            }
        }
        match sse {
            Some(true) => {
                if !done && !buffer.is_empty() {
                    // The last line, without its newline.
                    let line = std::mem::take(&mut buffer);
                    done = self.event_line(&line, read)?;
                }
                match read.finish_reason {
                    Some(finish) => Ok(finish),
                    None if done => Ok(Finish::Stop),
                    // llama-cpp-python's server does this with a prompt longer than its window.
                    None if read.events == 0 => Err(AnswerError::Endpoint(format!(
                        "the answer endpoint {} sent no answer (its stream was empty); a prompt longer than the \
                         model's window does that: check [answer] context_tokens ({} tokens) against the server's",
                        self.base, self.context_window
                    ))),
                    None => Err(AnswerError::Generate(format!(
                        "the answer endpoint {} closed its stream before the answer ended",
                        self.base
                    ))),
                }
            }
            // One JSON body (or nothing at all).
            _ => self.json_body(&buffer, read),
        }
    }

    /// Takes an answer that came as one JSON body, not streamed.
    fn json_body(&self, body: &[u8], read: &mut Reader<'_>) -> Result<Finish, AnswerError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            AnswerError::Generate(format!(
                "the answer endpoint {} sent something that is not a chat completion ({e}): {}",
                self.base,
                quote(&String::from_utf8_lossy(body))
            ))
        })?;
        if let Some(message) = error_message(&value) {
            return Err(self.server_reported(&message));
        }
        let completion: Completion = serde_json::from_value(value).map_err(|e| {
            AnswerError::Generate(format!(
                "the answer endpoint {} sent something that is not a chat completion ({e})",
                self.base
            ))
        })?;
        let (text, reason) = match completion.choices.into_iter().next() {
            Some(c) => (c.message.and_then(|m| m.content).unwrap_or_default(), c.finish_reason),
            None => (String::new(), None),
        };
        read.streamed = false;
        read.piece(text);
        read.usage(completion.usage, completion.timings);
        let finish = finish_of(reason.as_deref());
        read.finish_reason = Some(finish);
        Ok(finish)
    }

    /// Takes one line of an event stream; true at `data: [DONE]`.
    fn event_line(&self, line: &[u8], read: &mut Reader<'_>) -> Result<bool, AnswerError> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        // Comments (`: ping`), `event:`, `id:`, `retry:` and the blank lines
        // between events say nothing here.
        let Some(data) = line.strip_prefix("data:") else { return Ok(false) };
        let data = data.strip_prefix(' ').unwrap_or(data).trim();
        if data.is_empty() {
            return Ok(false);
        }
        if data == "[DONE]" {
            return Ok(true);
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            AnswerError::Generate(format!(
                "the answer endpoint {} sent an event that is not JSON ({e}): {}",
                self.base,
                quote(data)
            ))
        })?;
        read.events += 1;
        if let Some(message) = error_message(&value) {
            return Err(self.server_reported(&message));
        }
        let chunk: Chunk = serde_json::from_value(value).map_err(|e| {
            AnswerError::Generate(format!(
                "the answer endpoint {} sent an event that is not a chat completion chunk ({e}): {}",
                self.base,
                quote(data)
            ))
        })?;
        for choice in chunk.choices.into_iter().take(1) {
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                read.piece(text);
            }
            if let Some(reason) = choice.finish_reason {
                read.finish_reason = Some(finish_of(Some(&reason)));
            }
        }
        read.usage(chunk.usage, chunk.timings);
        Ok(false)
    }

    /// The error body of a refusal, cut short; empty when it cannot be read in time.
    async fn read_error_body(&self, response: reqwest::Response, deadline: Instant) -> String {
        let limit = deadline.min(Instant::now() + Duration::from_secs(5));
        match tokio::time::timeout_at(limit, response.bytes()).await {
            Ok(Ok(bytes)) => {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(16 * 1024)]).into_owned();
                match serde_json::from_str::<Value>(&text).ok().and_then(|v| error_message(&v)) {
                    Some(message) => message,
                    None => text.trim().to_string(),
                }
            }
            _ => String::new(),
        }
    }

    fn status_error(&self, status: StatusCode, text: &str) -> AnswerError {
        let base = &self.base;
        let said = if text.is_empty() { status.to_string() } else { format!("{status}: {}", quote(text)) };
        let lower = text.to_lowercase();
        let about_model = lower.contains("model")
            && (lower.contains(&self.model.to_lowercase())
                || lower.contains("not found")
                || lower.contains("does not exist")
                || lower.contains("no such"));
        let message = match status.as_u16() {
            401 | 403 => match &self.authorization {
                Some(_) => format!(
                    "the answer endpoint {base} refused the key in {} ({said}); check the key, or [answer] api_key_env",
                    key_source(&self.api_key_env)
                ),
                None => format!(
                    "the answer endpoint {base} wants a key ({said}); set [answer] api_key_env to the name of an \
                     environment variable that holds it"
                ),
            },
            400..=499 if about_model => format!(
                "the answer endpoint {base} has no model {:?} ({said}); check [answer] endpoint_model",
                self.model
            ),
            404 | 405 => format!(
                "the answer endpoint {base} has no chat API at {} ({said}); check [answer] endpoint: it is the \
                 API's base, like http://127.0.0.1:11434/v1",
                self.completions
            ),
            400..=499 if lower.contains("context") || lower.contains("too long") || lower.contains("exceed") => {
                format!(
                    "the answer endpoint {base} refused the request ({said}); the model's window may be smaller \
                     than [answer] context_tokens ({} tokens)",
                    self.context_window
                )
            }
            _ if status.is_server_error() => format!("the answer endpoint {base} failed ({said})"),
            _ => format!("the answer endpoint {base} refused the request ({said})"),
        };
        AnswerError::Endpoint(message)
    }

    fn transport_error(&self, e: &reqwest::Error) -> AnswerError {
        let base = &self.base;
        if e.is_connect() {
            let why = if e.is_timeout() {
                format!("no connection within {} s", self.connect_timeout.as_secs_f64())
            } else {
                crate::net::connect_failure(e)
            };
            AnswerError::Endpoint(format!(
                "the answer endpoint {base} cannot be reached ({why}); check [answer] endpoint"
            ))
        } else {
            AnswerError::Endpoint(format!(
                "the answer endpoint {base} did not answer ({}); check [answer] endpoint",
                transport_cause(e)
            ))
        }
    }

    fn too_slow(&self) -> AnswerError {
        AnswerError::Endpoint(format!(
            "the answer endpoint {} did not finish within {} s ([answer] timeout_secs); a smaller model, or fewer \
             results, answers sooner",
            self.base,
            self.timeout.as_secs_f64()
        ))
    }

    fn server_reported(&self, message: &str) -> AnswerError {
        AnswerError::Generate(format!("the answer endpoint {} reported an error: {}", self.base, quote(message)))
    }

    fn estimate_prompt(&self, messages: &[ChatMessage]) -> usize {
        messages.iter().map(|m| self.count_tokens(&m.content)).sum::<usize>() + MESSAGE_OVERHEAD_TOKENS
    }
}

/// How a request went, up to its answer's first byte.
enum Sent {
    Answer(reqwest::Response),
    /// Not a success: the status, and the server's message.
    Refused(StatusCode, String),
    Failed(reqwest::Error),
    Cancelled,
    TooSlow,
}

/// What has been read of an answer, and when.
struct Reader<'a> {
    start: Instant,
    pieces: Option<&'a UnboundedSender<String>>,
    text: String,
    /// Pieces with text: the token count when the server gives none.
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    finish_reason: Option<Finish>,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
    /// llama.cpp's server's own timings: (prompt tokens/s, generated tokens/s).
    speeds: Option<(f64, f64)>,
    /// False when the answer came whole: when its first token was written is unknown.
    streamed: bool,
    /// Events read (`data: {...}` lines).
    events: usize,
    /// The connection broke while the answer was read.
    broken: bool,
}

impl<'a> Reader<'a> {
    fn new(start: Instant, pieces: Option<&'a UnboundedSender<String>>) -> Reader<'a> {
        Reader {
            start,
            pieces,
            text: String::new(),
            count: 0,
            first: None,
            last: None,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            speeds: None,
            streamed: true,
            events: 0,
            broken: false,
        }
    }

    fn piece(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.count += 1;
        self.text.push_str(&text);
        if let Some(pieces) = self.pieces {
            // A receiver that went away stops nothing: the text is returned too.
            let _ = pieces.send(text);
        }
    }

    fn usage(&mut self, usage: Option<Usage>, timings: Option<Timings>) {
        if let Some(u) = usage {
            self.prompt_tokens = u.prompt_tokens.or(self.prompt_tokens);
            self.completion_tokens = u.completion_tokens.or(self.completion_tokens);
        }
        if let Some(t) = timings {
            if let (Some(p), Some(g)) = (t.prompt_per_second, t.predicted_per_second) {
                if p.is_finite() && g.is_finite() && p > 0.0 && g > 0.0 {
                    self.speeds = Some((p, g));
                }
            }
        }
    }

    fn finish(self, finish: Finish, estimate_prompt: impl FnOnce() -> usize) -> Generation {
        let total = self.start.elapsed();
        let prompt_tokens = self.prompt_tokens.unwrap_or_else(estimate_prompt);
        let generated_tokens = match finish {
            // Usage arrives last: a cancelled stream has only its pieces.
            Finish::Cancelled => self.completion_tokens.unwrap_or(0).max(self.count),
            _ => self.completion_tokens.unwrap_or(self.count),
        };
        let (first, last) = if self.streamed { (self.first, self.last) } else { (None, None) };
        let first_token_ms = first.map(|f| ms(f - self.start)).unwrap_or(0.0);
        let prompt_tokens_per_s = match (self.speeds, first_token_ms > 0.0) {
            (Some((p, _)), _) => p,
            (None, true) => prompt_tokens as f64 / (first_token_ms / 1000.0),
            (None, false) => 0.0,
        };
        let tokens_per_s = match (self.speeds, first, last) {
            (Some((_, g)), _, _) => g,
            (None, Some(first), Some(last)) if last > first && generated_tokens > 1 => {
                (generated_tokens - 1) as f64 / (last - first).as_secs_f64()
            }
            // Not streamed: prompt processing included, so a lower bound.
            (None, None, _) if !self.streamed && generated_tokens > 0 && !total.is_zero() => {
                generated_tokens as f64 / total.as_secs_f64()
            }
            _ => 0.0,
        };
        Generation {
            text: self.text,
            finish,
            stats: GenerationStats {
                prompt_tokens,
                generated_tokens,
                first_token_ms,
                prompt_tokens_per_s,
                tokens_per_s,
                total_ms: ms(total),
            },
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn finish_of(reason: Option<&str>) -> Finish {
    match reason {
        Some("length") => Finish::Length,
        _ => Finish::Stop,
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
}

/// llama.cpp's `llama-server` adds these to its last event.
#[derive(Deserialize)]
struct Timings {
    prompt_per_second: Option<f64>,
    predicted_per_second: Option<f64>,
}

/// The message of `{"error": {"message": ...}}`, `{"error": "..."}`,
/// `{"detail": ...}` or `{"message": ...}` (OpenAI, Ollama, FastAPI).
fn error_message(value: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match value.get("error") {
        Some(Value::Object(e)) => {
            e.get("message").and_then(text).or_else(|| Some(Value::Object(e.clone()).to_string()))
        }
        Some(Value::Null) | None => {
            if value.get("choices").is_some() {
                None
            } else {
                value.get("detail").and_then(text).or_else(|| value.get("message").and_then(text))
            }
        }
        Some(other) => text(other),
    }
}

fn key_source(env: &Option<String>) -> String {
    match env {
        Some(name) if !name.is_empty() => format!("${name}"),
        _ => "the variable [answer] api_key_env names".to_string(),
    }
}

/// `text` on one line, cut to [`QUOTE_CHARS`].
fn quote(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The innermost cause of a failure after connecting.
fn transport_cause(e: &reqwest::Error) -> String {
    let mut innermost = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        innermost = err.to_string();
        source = err.source();
    }
    innermost
}

/// The estimate behind [`Endpoint::count_tokens`], without the per-message
/// markers.
fn estimate_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut letters = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphabetic() {
            letters += 1;
            continue;
        }
        tokens += letters.div_ceil(3);
        letters = 0;
        if c == ' ' {
            // The space before a word or number joins it; others are tokens of their own.
            if !chars.peek().is_some_and(|n| n.is_ascii_alphanumeric()) {
                tokens += 1;
            }
            continue;
        }
        tokens += if c.is_ascii() { 1 } else { c.len_utf8() };
    }
    tokens + letters.div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint, AnswerError> {
        Endpoint::new(EndpointOptions::new(url, "m"))
    }

    #[test]
    fn estimates_stay_above_common_tokenizers() {
        assert_eq!(estimate_tokens(""), 0);
        // Hello , world ! How are you ? (GPT-style: 8 tokens)
        assert_eq!(estimate_tokens("Hello, world! How are you?"), 10);
        // Digits one each: many tokenizers split numbers into digits.
        assert_eq!(estimate_tokens("1234567890"), 10);
        // Byte fallback for what is not ASCII.
        assert_eq!(estimate_tokens("日本"), 6);
        assert_eq!(estimate_tokens("a  b"), 3);
        // 27 for 78 characters (GPT-style: 18).
        let prose = "The quick brown fox jumps over the lazy dog, and then it runs into the forest.";
        let estimate = estimate_tokens(prose);
        assert!(estimate >= prose.len() / 4 && estimate <= prose.len() / 2, "{estimate}");
        let e = endpoint("http://127.0.0.1:1/v1").unwrap();
        assert_eq!(e.count_tokens(""), MESSAGE_OVERHEAD_TOKENS);
    }

    #[test]
    fn urls_are_checked_and_named() {
        let e = endpoint("http://127.0.0.1:11434/v1/").unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:11434/v1");
        assert_eq!(e.completions.as_str(), "http://127.0.0.1:11434/v1/chat/completions");
        let e = endpoint("http://localhost:8080/v1/chat/completions").unwrap();
        assert_eq!(e.completions.as_str(), "http://localhost:8080/v1/chat/completions");
        for bad in ["127.0.0.1:11434", "ftp://x/v1", "not a url", "http://x/v1?a=b"] {
            let err = endpoint(bad).unwrap_err().to_string();
            assert!(err.contains("[answer] endpoint"), "{err}");
        }
        let err = Endpoint::new(EndpointOptions::new("http://x/v1", " ")).unwrap_err().to_string();
        assert!(err.contains("[answer] endpoint_model"), "{err}");
    }

    #[test]
    fn keys_never_print() {
        let mut o = EndpointOptions::new("http://127.0.0.1:1/v1", "m");
        o.api_key = Some("sk-secret-123".into());
        o.api_key_env = Some("ANSWER_KEY".into());
        assert!(!format!("{o:?}").contains("secret"));
        let e = Endpoint::new(o).unwrap();
        let shown = format!("{e:?}");
        assert!(!shown.contains("secret") && shown.contains("<redacted>"), "{shown}");
        let err = e.status_error(StatusCode::UNAUTHORIZED, "Invalid API key").to_string();
        assert!(err.contains("$ANSWER_KEY") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn refusals_name_the_setting() {
        let e = Endpoint::new(EndpointOptions::new("http://127.0.0.1:1/v1", "qwen9")).unwrap();
        let err = e.status_error(StatusCode::NOT_FOUND, r#"model "qwen9" not found, try pulling it first"#);
        assert!(err.to_string().contains("[answer] endpoint_model"), "{err}");
        let err = e.status_error(StatusCode::NOT_FOUND, "Not Found");
        assert!(err.to_string().contains("[answer] endpoint:"), "{err}");
        let err = e.status_error(StatusCode::UNAUTHORIZED, "");
        assert!(err.to_string().contains("[answer] api_key_env"), "{err}");
        let err = e.status_error(StatusCode::BAD_REQUEST, "prompt exceeds the context size");
        assert!(err.to_string().contains("[answer] context_tokens"), "{err}");
    }

    #[test]
    fn server_errors_are_read_from_common_shapes() {
        let m = |s: &str| error_message(&serde_json::from_str(s).unwrap());
        assert_eq!(m(r#"{"error":{"message":"boom","type":"x"}}"#).as_deref(), Some("boom"));
        assert_eq!(m(r#"{"error":"boom"}"#).as_deref(), Some("boom"));
        assert_eq!(m(r#"{"detail":"Not Found"}"#).as_deref(), Some("Not Found"));
        assert_eq!(m(r#"{"choices":[],"error":null}"#), None);
        assert_eq!(m(r#"{"choices":[{"delta":{"content":"x"}}]}"#), None);
    }

    /// Lines as llama-cpp-python's server sends them, and an OpenAI-style
    /// last event with usage and no choices.
    #[test]
    fn events_are_read_line_by_line() {
        let e = endpoint("http://127.0.0.1:1/v1").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut read = Reader::new(Instant::now(), Some(&tx));
        let lines = [
            r#"data: {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": null, "finish_reason": null}]}"#,
            "",
            ": ping",
            r#"data: {"id": "c", "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": null}]}"#,
            r#"data:{"id": "c", "choices": [{"index": 0, "delta": {"content": "is"}, "finish_reason": null}]}"#,
            r#"data: {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}"#,
            r#"data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}"#,
        ];
        for line in lines {
            assert!(!e.event_line(format!("{line}\r\n").as_bytes(), &mut read).unwrap());
        }
        assert!(e.event_line(b"data: [DONE]\n", &mut read).unwrap());
        assert_eq!(rx.try_recv().unwrap(), "Par");
        assert_eq!(rx.try_recv().unwrap(), "is");
        let g = read.finish(Finish::Length, || unreachable!("usage was given"));
        assert_eq!((g.text.as_str(), g.finish), ("Paris", Finish::Length));
        assert_eq!((g.stats.prompt_tokens, g.stats.generated_tokens), (12, 2));

        let mut read = Reader::new(Instant::now(), None);
        let err = e.event_line(br#"data: {"error": {"message": "out of memory"}}"#, &mut read).unwrap_err();
        assert!(matches!(err, AnswerError::Generate(_)) && err.to_string().contains("out of memory"), "{err}");
    }

    /// A body as llama-cpp-python's server answers `"stream": false`.
    #[test]
    fn answers_that_come_whole_are_taken() {
        let e = endpoint("http://127.0.0.1:1/v1").unwrap();
        let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"content":"Hello! How can I","role":"assistant"},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":31,"completion_tokens":5,"total_tokens":36}}"#;
        let mut read = Reader::new(Instant::now(), None);
        assert_eq!(e.json_body(body, &mut read).unwrap(), Finish::Length);
        let g = read.finish(Finish::Length, || 0);
        assert_eq!(g.text, "Hello! How can I");
        assert_eq!((g.stats.prompt_tokens, g.stats.generated_tokens), (31, 5));
        assert_eq!(g.stats.first_token_ms, 0.0);
        let mut read = Reader::new(Instant::now(), None);
        let err = e.json_body(b"<html>bad gateway</html>", &mut read).unwrap_err();
        assert!(err.to_string().contains("not a chat completion"), "{err}");
    }
}
