//! The embedded chat model with real weights: SmolLM2-135M-Instruct (Q4_1
//! GGUF, installed by `scripts/fetch-model.sh smollm2`; CI sets
//! REQUIRE_MODELS=1, which makes a missing model a failure). Its tokenizer
//! and chat template from the file, greedy generation, streaming,
//! cancellation and the window.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use discord_indexer::answer::gguf::{self, ChatModel};
use discord_indexer::answer::{ChatMessage, Finish, GenerateRequest, Generation, Generator, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2, loaded once for all the tests here (generations take turns).
fn smollm2(test: &str) -> Option<Arc<ChatModel>> {
    static MODEL: OnceLock<Arc<ChatModel>> = OnceLock::new();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(FILE);
    if !path.is_file() {
        assert!(std::env::var_os("REQUIRE_MODELS").is_none(), "models/{FILE} is missing but REQUIRE_MODELS is set");
        eprintln!("skipped {test}: SmolLM2 not installed (run scripts/fetch-model.sh smollm2)");
        return None;
    }
    Some(MODEL.get_or_init(|| Arc::new(gguf::load(&path, &candle_core::Device::Cpu).unwrap())).clone())
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage { role: Role::User, content: text.into() }]
}

fn greedy(messages: Vec<ChatMessage>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest { messages, max_tokens, temperature: 0.0, seed: 0 }
}

/// Generates, collecting the streamed pieces.
fn generate(model: &ChatModel, request: &GenerateRequest) -> (Generation, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = model.generate(request, Some(&tx), &CancellationToken::new()).unwrap();
    drop(tx);
    let mut pieces = Vec::new();
    while let Ok(p) = rx.try_recv() {
        pieces.push(p);
    }
    (out, pieces)
}

#[test]
fn smollm2_loads_with_its_tokenizer_and_chat_template() {
    let Some(m) = smollm2("smollm2_loads_with_its_tokenizer_and_chat_template") else { return };
    let info = m.info();
    assert_eq!(m.name(), "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!((info.architecture.as_str(), info.quantization.as_str()), ("llama", "Q4_1"));
    assert_eq!(info.parameters_label(), "135M");
    assert_eq!((info.context_length, m.context_window()), (8192, gguf::MAX_WINDOW));
    assert!(info.chat_template);

    assert_eq!((m.token_id("<|im_start|>"), m.token_id("<|im_end|>")), (Some(1), Some(2)));
    assert!(m.stop_tokens().contains(&2), "<|im_end|> ends an answer");
    let text = "Café naïve — 東京 🙂 at 12:45, isn't it?\n  Indented.";
    let ids = m.encode(text).unwrap();
    assert_eq!(m.decode(&ids).unwrap(), text);
    assert_eq!(m.count_tokens(text), ids.len());
    assert_eq!(m.encode("<|im_start|>user\nHi<|im_end|>").unwrap(), [1, 4093, 198, 26843, 2]);

    let messages = vec![
        ChatMessage { role: Role::System, content: "Answer from the results.".into() },
        ChatMessage { role: Role::User, content: "[1] alice: ends with <|im_end|>".into() },
    ];
    assert_eq!(
        m.prompt_text(&messages).unwrap(),
        "<|im_start|>system\nAnswer from the results.<|im_end|>\n<|im_start|>user\n[1] alice: ends with \
         <|im_end|><|im_end|>\n<|im_start|>assistant\n"
    );
    let prompt = m.prompt_tokens(&messages).unwrap();
    assert_eq!(prompt[0], 1);
    // The chat's `<|im_end|>` is text: the template's two turns end, not three.
    assert_eq!(prompt.iter().filter(|&&t| t == 2).count(), 2, "{prompt:?}");
    assert_eq!(
        m.decode(&prompt).unwrap(),
        "system\nAnswer from the results.\nuser\n[1] alice: ends with <|im_end|>\nassistant\n"
    );
    // Without a system message the template adds SmolLM's own.
    assert!(m.prompt_text(&user("Hi")).unwrap().starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
}

#[test]
fn greedy_generation_answers_streams_and_is_the_same_twice() {
    let Some(m) = smollm2("greedy_generation_answers_streams_and_is_the_same_twice") else { return };
    let request = greedy(user("What is the capital of France? Answer in one word."), 24);
    let (first, pieces) = generate(&m, &request);
    eprintln!("{:?} {:?} {:?}", first.text, first.finish, first.stats);
    assert!(!first.text.trim().is_empty());
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    assert!(matches!(first.finish, Finish::Stop | Finish::Length), "{:?}", first.finish);
    assert_eq!(pieces.concat(), first.text, "the pieces are the text");
    let s = &first.stats;
    assert_eq!(s.prompt_tokens, m.prompt_tokens(&request.messages).unwrap().len());
    assert!(s.generated_tokens > 0 && s.generated_tokens <= 24, "{s:?}");
    assert!(s.first_token_ms > 0.0 && s.total_ms >= s.first_token_ms, "{s:?}");
    assert!(s.prompt_tokens_per_s > 0.0, "{s:?}");
    assert!(s.generated_tokens < 2 || s.tokens_per_s > 0.0, "{s:?}");

    let (second, _) = generate(&m, &request);
    assert_eq!((second.text.as_str(), second.finish), (first.text.as_str(), first.finish), "greedy is deterministic");
}

#[test]
fn max_tokens_ends_a_long_answer() {
    let Some(m) = smollm2("max_tokens_ends_a_long_answer") else { return };
    let (out, pieces) = generate(&m, &greedy(user("Write a long story about a dragon and a knight."), 12));
    assert_eq!((out.finish, out.stats.generated_tokens), (Finish::Length, 12), "{out:?}");
    assert_eq!(pieces.concat(), out.text);
    assert_eq!(m.count_tokens(&out.text), 12, "{:?}", out.text);
    let (none, _) = generate(&m, &greedy(user("Hi"), 0));
    assert_eq!((none.text.as_str(), none.finish), ("", Finish::Length));
}

#[test]
fn cancelling_after_the_first_piece_stops_the_generation() {
    let Some(m) = smollm2("cancelling_after_the_first_piece_stops_the_generation") else { return };
    let request = greedy(user("Write a long story about a dragon and a knight."), 200);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = {
        let (m, cancel, request) = (m.clone(), cancel.clone(), request.clone());
        std::thread::spawn(move || m.generate(&request, Some(&tx), &cancel).unwrap())
    };
    let first = rx.blocking_recv().expect("a first piece");
    cancel.cancel();
    let cancelled_at = Instant::now();
    let out = worker.join().unwrap();
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    assert_eq!(out.finish, Finish::Cancelled, "{out:?}");
    assert!(out.stats.generated_tokens < 20, "stopped within a few tokens: {:?}", out.stats);
    assert!(out.text.starts_with(&first), "the text so far is kept: {:?}", out.text);

    // Cancelled before it starts: nothing written.
    let out = m.generate(&request, None, &cancel).unwrap();
    assert_eq!((out.text.as_str(), out.finish, out.stats.generated_tokens), ("", Finish::Cancelled, 0));
}

#[test]
fn a_prompt_longer_than_the_window_is_refused() {
    let Some(m) = smollm2("a_prompt_longer_than_the_window_is_refused") else { return };
    let long = "the quick brown fox jumps over the lazy dog ".repeat(500);
    assert!(m.count_tokens(&long) > m.context_window());
    let started = Instant::now();
    let err = m.generate(&greedy(user(&long), 8), None, &CancellationToken::new()).unwrap_err().to_string();
    assert!(err.contains("prompt is") && err.contains("4096") && err.contains("shorten"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused before running the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_through_the_generator_take_turns() {
    let Some(m) = smollm2("generations_through_the_generator_take_turns") else { return };
    let g = Generator::Embedded(m);
    assert_eq!(g.name(), "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(g.context_window(), 4096);
    let ask = |q: &str| g.generate(greedy(user(q), 8), None, CancellationToken::new());
    let (a, b) = tokio::join!(ask("Say hello."), ask("Count to three."));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.text.is_empty() && !b.text.is_empty(), "{a:?} {b:?}");
    // Each as it is alone: the other's cache did not leak into it.
    assert_eq!(a.text, ask("Say hello.").await.unwrap().text);
}

#[test]
fn a_missing_chat_model_names_the_directory_and_how_to_install_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = gguf::find(dir.path(), None).unwrap_err().to_string();
    for part in [
        format!("no chat model (a .gguf file) in {} (installed: none)", dir.path().display()),
        format!("scripts/fetch-model.sh smollm2 {}", dir.path().display()),
    ] {
        assert!(err.contains(&part), "{part:?} in {err}");
    }
    let err = gguf::find(dir.path(), Some("SmolLM2")).unwrap_err().to_string();
    assert!(err.contains("no chat model \"SmolLM2\""), "{err}");

    // The checkout's models/ when installed: found alone or by name.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if models.join(FILE).is_file() {
        assert_eq!(gguf::find(&models, Some("SmolLM2-135M-Instruct.Q4_1")).unwrap(), models.join(FILE));
    }
}

/// A GGUF file of `architecture` with a tokenizer and one small tensor (no real weights).
fn write_gguf(path: &Path, architecture: &str) {
    use candle_core::quantized::gguf_file::{self, Value};
    let strings = |l: &[&str]| Value::Array(l.iter().map(|s| Value::String((*s).into())).collect());
    let md = [
        ("general.architecture", Value::String(architecture.into())),
        ("general.file_type", Value::U32(3)),
        ("llama.context_length", Value::U32(2048)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&["<|endoftext|>", "a", "b", "ab"])),
        ("tokenizer.ggml.merges", strings(&["a b"])),
    ];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let zeros = candle_core::Tensor::zeros((2, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let tensor = candle_core::quantized::QTensor::quantize(&zeros, candle_core::quantized::GgmlDType::F32).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &[("token_embd.weight", &tensor)]).unwrap();
}

#[test]
fn the_models_command_lists_chat_models_apart_from_embedding_models() {
    let dir = tempfile::tempdir().unwrap();
    write_gguf(&dir.path().join("Tiny.gguf"), "llama");
    write_gguf(&dir.path().join("Other.gguf"), "gemma3");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_discord-indexer"))
            .arg("--models-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (out, _) = run(&["models", "--chat", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!((list[0]["name"].as_str(), list[0]["ok"].as_bool()), (Some("Other"), Some(false)));
    assert!(list[0]["error"].as_str().unwrap().contains("\"gemma3\""), "{list}");
    let tiny = &list[1];
    assert_eq!((tiny["name"].as_str(), tiny["ok"].as_bool()), (Some("Tiny"), Some(true)));
    assert_eq!((tiny["architecture"].as_str(), tiny["quantization"].as_str()), (Some("llama"), Some("Q4_1")));
    assert_eq!((tiny["context_length"].as_u64(), tiny["context_window"].as_u64()), (Some(2048), Some(2048)));
    assert_eq!(tiny["parameters"].as_u64(), Some(64));

    // The embedding models' array is as it was: chat models are not in it.
    let (out, err) = run(&["models", "--json"]);
    assert_eq!(out.trim(), "[]");
    assert!(err.contains("no embedding models in") && err.contains("2 chat model(s)"), "{err}");
    let (out, _) = run(&["models"]);
    assert!(out.contains("Tiny: chat model, llama, 64 parameters, Q4_1, 2048 tokens of context"), "{out}");
    assert!(out.contains("Other: unusable chat model:") && out.contains("gemma3"), "{out}");
}
