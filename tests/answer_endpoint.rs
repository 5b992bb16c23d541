//! The OpenAI-compatible chat endpoint against a real server: llama.cpp's,
//! as llama-cpp-python serves it (`scripts/setup-llama-server.sh` installs
//! it), with SmolLM2-135M-Instruct (`scripts/fetch-model.sh smollm2`). Each
//! test starts its own server on a free port of 127.0.0.1 and kills it when
//! done. Without the server these tests say they are skipped, unless
//! REQUIRE_LLAMA_SERVER is set, which makes that a failure. The server is
//! found through LLAMA_SERVER_PYTHON (its venv's python), else in the venv
//! the setup script makes by default.
//!
//! llama-cpp-python's server serves its one model whatever name a request
//! gives, so an unknown model cannot be shown there; a wrong API path (a 404
//! of its own) stands in for the refusals.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use discord_indexer::answer::endpoint::{Endpoint, EndpointOptions};
use discord_indexer::answer::{AnswerError, ChatMessage, Finish, GenerateRequest, Generation, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SKIPPED: &str = "skipped: llama-cpp-python server not installed (scripts/setup-llama-server.sh)";
const KEY_ENV: &str = "DISCORD_INDEXER_TEST_ANSWER_KEY";

/// The venv python that runs the server, when it is installed.
fn server_python() -> Option<PathBuf> {
    let python = match std::env::var_os("LLAMA_SERVER_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = match std::env::var_os("XDG_CACHE_HOME") {
                Some(c) if Path::new(&c).is_absolute() => PathBuf::from(c),
                _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
            };
            cache.join("discord-indexer/llama-server-venv/bin/python")
        }
    };
    python.is_file().then_some(python)
}

/// The server's python and the model, or None (the test is skipped) when
/// either is missing and REQUIRE_LLAMA_SERVER is not set.
fn installed(test: &str) -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var_os("REQUIRE_LLAMA_SERVER").is_some();
    let Some(python) = server_python() else {
        assert!(!required, "REQUIRE_LLAMA_SERVER is set but the llama-cpp-python server is not installed");
        eprintln!("{SKIPPED} [{test}]");
        return None;
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(MODEL_FILE);
    if !model.is_file() {
        assert!(!required, "REQUIRE_LLAMA_SERVER is set but models/{MODEL_FILE} is missing");
        eprintln!("skipped: models/{MODEL_FILE} not installed (scripts/fetch-model.sh smollm2) [{test}]");
        return None;
    }
    Some((python, model))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A llama-cpp-python server on 127.0.0.1, killed when dropped.
struct Server {
    child: Child,
    /// The API's base: `http://127.0.0.1:PORT/v1`.
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(python: &Path, model: &Path, api_key: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let port = free_port();
        let mut command = Command::new(python);
        command
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048", "--verbose", "False"])
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap());
        if let Some(key) = api_key {
            command.args(["--api_key", key]);
        }
        let child = command.spawn().expect("the llama-cpp-python server starts");
        let mut server = Server { child, url: format!("http://127.0.0.1:{port}/v1"), log, _dir: dir };
        server.wait_ready(api_key).await;
        server
    }

    /// Waits until `/v1/models` answers (the model is loaded by then).
    async fn wait_ready(&mut self, api_key: Option<&str>) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the llama-cpp-python server exited ({status}):\n{}", self.log_text());
            }
            let mut call = http.get(format!("{}/models", self.url)).timeout(Duration::from_secs(2));
            if let Some(key) = api_key {
                call = call.bearer_auth(key);
            }
            if let Ok(r) = call.send().await {
                if r.status().is_success() {
                    eprintln!("llama-cpp-python server ready in {:.1} s", started.elapsed().as_secs_f64());
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the llama-cpp-python server did not answer within 120 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn options(&self) -> EndpointOptions {
        let mut o = EndpointOptions::new(&self.url, "smollm2");
        o.context_window = 2048;
        o.timeout = Duration::from_secs(60);
        o.connect_timeout = Duration::from_secs(2);
        o
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn messages(question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: Role::System, content: "You are a helpful assistant. Answer briefly.".into() },
        ChatMessage { role: Role::User, content: question.into() },
    ]
}

fn greedy(question: &str, max_tokens: usize) -> GenerateRequest {
    GenerateRequest { messages: messages(question), max_tokens, temperature: 0.0, seed: 7 }
}

/// Generates, collecting the streamed pieces.
async fn generate(endpoint: &Endpoint, request: &GenerateRequest) -> Result<(Generation, Vec<String>), AnswerError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = endpoint.generate(request, Some(&tx), &CancellationToken::new()).await?;
    drop(tx);
    let mut pieces = Vec::new();
    while let Some(p) = rx.recv().await {
        pieces.push(p);
    }
    Ok((out, pieces))
}

fn endpoint_error(result: Result<impl std::fmt::Debug, AnswerError>) -> String {
    match result {
        Err(AnswerError::Endpoint(message)) => message,
        other => panic!("expected an endpoint error, got {other:?}"),
    }
}

/// Runs without a server: nothing listens on the port.
#[tokio::test]
async fn an_endpoint_that_is_down_fails_fast_naming_the_setting() {
    let url = format!("http://127.0.0.1:{}/v1", free_port());
    let endpoint = Endpoint::new(EndpointOptions::new(&url, "smollm2")).unwrap();
    let started = Instant::now();
    let message = endpoint_error(endpoint.generate(&greedy("Hi", 8), None, &CancellationToken::new()).await);
    let took = started.elapsed();
    assert!(message.contains(&url) && message.contains("connection refused"), "{message}");
    assert!(message.contains("check [answer] endpoint"), "{message}");
    // Tried twice (one retry after a short pause), and still quick.
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn llama_server_streams_answers() {
    let Some((python, model)) = installed("llama_server_streams_answers") else { return };
    let server = Server::start(&python, &model, None).await;
    let endpoint = Endpoint::new(server.options()).unwrap();
    assert_eq!((endpoint.name(), endpoint.context_window()), ("smollm2".to_string(), 2048));

    // Greedy and streamed: the pieces are the text, and the stats are filled.
    let request = greedy("What is the capital of France?", 48);
    let (out, pieces) = generate(&endpoint, &request).await.unwrap();
    eprintln!("{:?} {:?}", out.text, out.stats);
    assert!(!out.text.trim().is_empty());
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), out.text);
    assert!(matches!(out.finish, Finish::Stop | Finish::Length), "{:?}", out.finish);
    let s = &out.stats;
    assert!(s.generated_tokens >= pieces.len() && s.generated_tokens <= 48, "{s:?}");
    assert!(s.prompt_tokens > 0 && s.prompt_tokens_per_s > 0.0, "{s:?}");
    assert!(s.first_token_ms > 0.0 && s.total_ms >= s.first_token_ms && s.tokens_per_s > 0.0, "{s:?}");

    // The same prompt, greedy: the same answer.
    let (again, _) = generate(&endpoint, &request).await.unwrap();
    assert_eq!(again.text, out.text);

    // The prompt's estimate is above what the server's tokenizer and chat
    // template make of it (asked without streaming, which reports usage).
    let usage: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.url))
        .json(&serde_json::json!({
            "model": "smollm2",
            "messages": request.messages,
            "max_tokens": 1,
            "temperature": 0.0,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let real = usage["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    eprintln!("estimated {} prompt tokens for {real}", s.prompt_tokens);
    assert!(s.prompt_tokens >= real, "estimated {} < {real} prompt tokens", s.prompt_tokens);
    let text = "Café naïve — 東京 🙂 at 12:45 on 2024-03-09, isn't it? https://example.com/a?b=c\n  Indented: \
                x=[1,2,3]; lmaooooo, hahahaha!!!";
    let raw: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/extras/tokenize/count", server.url.trim_end_matches("/v1")))
        .json(&serde_json::json!({ "input": text }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let real = raw["count"].as_u64().unwrap() as usize;
    eprintln!("estimated {} tokens for {real} ({text:?})", endpoint.count_tokens(text));
    assert!(endpoint.count_tokens(text) >= real, "estimated {} < {real}: {text:?}", endpoint.count_tokens(text));

    // max_tokens reached: Length.
    let (short, _) = generate(&endpoint, &greedy("Tell me about the history of Rome.", 4)).await.unwrap();
    assert_eq!(short.finish, Finish::Length);
    assert!(short.stats.generated_tokens > 0 && short.stats.generated_tokens <= 4, "{:?}", short.stats);

    // A wrong API path: the server's own 404, naming the setting.
    let mut wrong = server.options();
    wrong.url = server.url.replace("/v1", "/v2");
    let message = endpoint_error(generate(&Endpoint::new(wrong).unwrap(), &request).await);
    assert!(message.contains("404") && message.contains("/v2/chat/completions"), "{message}");
    assert!(message.contains("check [answer] endpoint"), "{message}");

    // A prompt longer than the server's window: llama-cpp-python answers a
    // streamed request with an empty stream (a 400 only when not streamed).
    let too_long = greedy(&"word ".repeat(3000), 8);
    let message = endpoint_error(generate(&endpoint, &too_long).await);
    assert!(message.contains("check [answer] context_tokens (2048 tokens)"), "{message}");

    // Cancelled mid-stream: it returns at once with the text so far.
    let long = greedy("Write a long story about a dragon who learns to bake bread.", 1000);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(p) = rx.recv().await {
                seen.push(p);
                if seen.len() == 5 {
                    cancel.cancel();
                    return (seen, Instant::now());
                }
            }
            panic!("the stream ended before 5 pieces: {seen:?}");
        })
    };
    let out = endpoint.generate(&long, Some(&tx), &cancel).await.unwrap();
    let returned = Instant::now();
    let (seen, cancelled_at) = watcher.await.unwrap();
    assert_eq!(out.finish, Finish::Cancelled);
    assert!(returned - cancelled_at < Duration::from_millis(500), "{:?}", returned - cancelled_at);
    assert!(out.text.starts_with(&seen.concat()), "{:?} {seen:?}", out.text);
    assert!(out.stats.generated_tokens >= 5 && out.stats.generated_tokens < 1000, "{:?}", out.stats);

    // The whole-generation limit.
    let mut hasty = server.options();
    hasty.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let message = endpoint_error(Endpoint::new(hasty).unwrap().generate(&long, None, &CancellationToken::new()).await);
    assert!(message.contains("did not finish within 0.3 s ([answer] timeout_secs)"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // The server still answers after both were cut off.
    let (after, _) = generate(&endpoint, &greedy("Say hello.", 8)).await.unwrap();
    assert!(!after.text.is_empty());
}

#[tokio::test]
async fn llama_server_gets_the_key_as_a_bearer_token() {
    let Some((python, model)) = installed("llama_server_gets_the_key_as_a_bearer_token") else { return };
    let key = "sk-test-9f3c1e7a";
    let server = Server::start(&python, &model, Some(key)).await;
    let request = greedy("Say hello.", 4);

    let mut right = server.options();
    right.api_key = Some(key.into());
    right.api_key_env = Some(KEY_ENV.into());
    assert!(!format!("{right:?}").contains(key), "{right:?}");
    let endpoint = Endpoint::new(right.clone()).unwrap();
    assert!(!format!("{endpoint:?}").contains(key), "{endpoint:?}");
    let (out, _) = generate(&endpoint, &request).await.unwrap();
    assert!(!out.text.is_empty());

    let mut wrong = right.clone();
    wrong.api_key = Some("sk-wrong".into());
    let message = endpoint_error(generate(&Endpoint::new(wrong).unwrap(), &request).await);
    assert!(message.contains(&format!("refused the key in ${KEY_ENV}")) && message.contains("401"), "{message}");
    assert!(!message.contains("sk-wrong") && !message.contains(key), "{message}");

    let mut none = right;
    none.api_key = None;
    let message = endpoint_error(generate(&Endpoint::new(none).unwrap(), &request).await);
    assert!(message.contains("wants a key") && message.contains("[answer] api_key_env"), "{message}");
}
