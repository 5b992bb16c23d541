//! The parts that need no weights: the tokenizer from GGUF metadata, the
//! chat template, finding and checking model files. Real weights (SmolLM2)
//! are tested in `tests/answer_gguf.rs`.

use std::borrow::Cow;

use candle_core::quantized::gguf_file::{self, Content, Value, VersionedMagic};

use super::template::{self, ChatTemplate, Part};
use super::tokenizer::{ChatTokenizer, TextStream};
use super::*;
use crate::answer::Role;

fn strings(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|s| Value::String((*s).into())).collect())
}

/// A byte-level BPE vocabulary of a few words, ChatML's control tokens and
/// the two bytes of `é` (`Ã` = 0xC3, `©` = 0xA9 in byte-level characters).
const TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "h",
    "e",
    "l",
    "o",
    "he",
    "ll",
    "hell",
    "hello",
    "Ġ",
    "Ġhello",
    "Ã",
    "©",
    "<",
    "|",
    "i",
    "m",
    "_",
    "n",
    "d",
    ">",
    "Ċ",
];

fn metadata() -> Vec<(&'static str, Value)> {
    let mut types = vec![Value::I32(1); TOKENS.len()];
    for t in &mut types[..3] {
        *t = Value::I32(3);
    }
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.context_length", Value::U32(8192)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(TOKENS)),
        ("tokenizer.ggml.merges", strings(&["h e", "l l", "he ll", "hell o", "Ġ hello"])),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ]
}

fn content(metadata: Vec<(&'static str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    }
}

fn tokenizer() -> ChatTokenizer {
    ChatTokenizer::from_gguf(&content(metadata())).unwrap()
}

#[test]
fn control_tokens_are_single_tokens_in_the_template_and_text_in_contents() {
    let t = tokenizer();
    assert_eq!(t.encode_template("<|im_start|>hello hello<|im_end|>").unwrap(), [1, 10, 12, 2]);
    let plain = t.encode_plain("<|im_end|>").unwrap();
    assert!(!plain.is_empty() && !plain.contains(&2), "{plain:?}");
    assert_eq!(t.decode(&plain).unwrap(), "<|im_end|>");
    // Control tokens are left out of decoded text, and end an answer.
    assert_eq!(t.decode(&[1, 10, 12, 2]).unwrap(), "hello hello");
    assert!(t.stop.contains(&2) && t.stop.contains(&0) && !t.stop.contains(&10));
    assert_eq!((t.bos, t.eos, t.add_bos), (Some(1), Some(2), false));
}

#[test]
fn other_tokenizers_are_refused_by_name() {
    let mut md = metadata();
    md[2].1 = Value::String("llama".into());
    let err = ChatTokenizer::from_gguf(&content(md)).err().unwrap();
    assert!(err.contains("\"llama\"") && err.contains("tokenizer.ggml.model"), "{err}");
}

#[test]
fn streamed_text_waits_for_whole_characters() {
    let t = tokenizer();
    let mut s = TextStream::new();
    assert_eq!(s.push(&t, 10).unwrap().as_deref(), Some("hello"));
    assert_eq!(s.push(&t, 13).unwrap(), None, "the first byte of é");
    assert_eq!(s.push(&t, 14).unwrap().as_deref(), Some("é"));
    assert_eq!(s.push(&t, 12).unwrap().as_deref(), Some(" hello"));
    assert_eq!(s.push(&t, 13).unwrap(), None);
    assert_eq!(s.finish(&t).unwrap().as_deref(), Some("\u{FFFD}"), "an unfinished character at the end");
    assert_eq!(s.text(), "helloé hello\u{FFFD}");
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: Role::System, content: "Be brief.".into() },
        ChatMessage { role: Role::User, content: "hi <|im_end|>\u{E000}0\u{E001}".into() },
    ]
}

#[test]
fn chatml_puts_contents_apart_from_the_template_text() {
    let t = ChatTemplate::new(template::CHATML, "<|im_start|>".into(), "<|im_end|>".into()).unwrap();
    let m = messages();
    let rendered = t.render(&m).unwrap();
    let contents: Vec<Cow<'_, str>> = m.iter().map(|m| template::clean(&m.content)).collect();
    // The markers a content held are taken out: it cannot pose as another.
    assert_eq!(contents[1], "hi <|im_end|>0");
    assert_eq!(
        template::parts(&rendered, &contents),
        [
            Part::Template("<|im_start|>system\n"),
            Part::Content("Be brief."),
            Part::Template("<|im_end|>\n<|im_start|>user\n"),
            Part::Content("hi <|im_end|>0"),
            Part::Template("<|im_end|>\n<|im_start|>assistant\n"),
        ]
    );
}

#[test]
fn templates_may_call_python_methods_and_raise() {
    let source = "{{ bos_token }}{% for m in messages %}{{ m['content'].strip() | length }},{% endfor %}\
                  {{ '  a b  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'a,b,c'.split(',', 1) | join('+') }}|\
                  {{ 'abc'.startswith(('x', 'a')) }}|{{ 'AbC'.lower() }}|{{ {'k': 1}.items() | list | length }}|\
                  {{ {'k': 1}.get('z', 'none') }}";
    let t = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
    assert_eq!(t.render(&messages()).unwrap(), "<s>3,3,a b|axx|a+b,c|True|abc|1|none");
    let t =
        ChatTemplate::new("{{ raise_exception('only user and assistant') }}", String::new(), String::new()).unwrap();
    assert!(t.render(&messages()).unwrap_err().contains("only user and assistant"));
    assert!(ChatTemplate::new("{% for %}", String::new(), String::new()).err().unwrap().contains("does not parse"));
}

/// A GGUF file of `metadata` and one small F32 tensor.
fn write_gguf(path: &Path, metadata: &[(&str, Value)]) {
    let tensor = candle_core::quantized::QTensor::quantize(
        &Tensor::zeros((4, 32), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &[("token_embd.weight", &tensor)]).unwrap();
}

#[test]
fn model_files_are_checked_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("tiny.gguf");
    write_gguf(&good, &metadata());
    let info = inspect(&good).unwrap();
    assert_eq!(info.name, "tiny");
    assert_eq!((info.architecture.as_str(), info.parameters), ("llama", 128));
    assert_eq!((info.context_length, info.context_window, info.quantization.as_str()), (8192, MAX_WINDOW, "F32"));
    assert!(!info.chat_template);

    let mut md = metadata();
    md[0].1 = Value::String("gemma3".into());
    let other = dir.path().join("other.gguf");
    write_gguf(&other, &md);
    let err = inspect(&other).unwrap_err().to_string();
    assert!(err.contains("\"gemma3\"") && err.contains("not supported") && err.contains("other.gguf"), "{err}");

    // A truncated download.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let err = inspect(&cut).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&cut, b"not gguf").unwrap();
    assert!(inspect(&cut).unwrap_err().to_string().contains("not a GGUF file"));

    let listed: Vec<(String, bool)> = installed(dir.path()).into_iter().map(|(n, r)| (n, r.is_ok())).collect();
    assert_eq!(listed, [("cut".into(), false), ("other".into(), false), ("tiny".into(), true)]);
}

#[test]
fn a_chat_model_is_found_by_file_name_or_alone() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("my models");
    let err = find(&models, None).unwrap_err().to_string();
    for part in ["no chat model", "does not exist", "scripts/fetch-model.sh smollm2 '"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    std::fs::create_dir_all(models.join("all-MiniLM-L6-v2")).unwrap();
    std::fs::write(models.join("Small.Q4_1.gguf"), b"").unwrap();
    assert_eq!(find(&models, None).unwrap(), models.join("Small.Q4_1.gguf"));
    for name in ["Small.Q4_1", "Small.Q4_1.gguf", "small.q4_1"] {
        assert_eq!(find(&models, Some(name)).unwrap(), models.join("Small.Q4_1.gguf"), "{name}");
    }
    let err = find(&models, Some("big")).unwrap_err().to_string();
    for part in ["no chat model \"big\"", "installed: Small.Q4_1.gguf", &models.display().to_string()] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    std::fs::write(models.join("Other.gguf"), b"").unwrap();
    let err = find(&models, None).unwrap_err().to_string();
    assert!(err.contains("several chat models") && err.contains("Other.gguf, Small.Q4_1.gguf"), "{err}");
    // A path names a file anywhere.
    let path = models.join("Other.gguf");
    assert_eq!(find(Path::new("/nowhere"), Some(path.to_str().unwrap())).unwrap(), path);
}

/// A GGUF file of a one-block model of `architecture` with random weights
/// and the tokenizer above: the loading and generating code for each
/// architecture, run without real weights.
fn write_random_model(path: &Path, architecture: &str) {
    let (vocab, hidden, ffn, heads, kv_heads) = (TOKENS.len(), 32usize, 64usize, 4u32, 2u32);
    let head_dim = hidden / heads as usize;
    let mut md = metadata();
    md[0].1 = Value::String(architecture.into());
    md[1].0 = if architecture == "llama" { "llama.context_length" } else { "qwen2.context_length" };
    let key = |k: &str| Box::leak(format!("{architecture}.{k}").into_boxed_str()) as &str;
    md.extend([
        (key("attention.head_count"), Value::U32(heads)),
        (key("attention.head_count_kv"), Value::U32(kv_heads)),
        (key("block_count"), Value::U32(1)),
        (key("embedding_length"), Value::U32(hidden as u32)),
        (key("rope.dimension_count"), Value::U32(head_dim as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
    ]);
    let kv = head_dim * kv_heads as usize;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![vocab, hidden]),
        ("output_norm.weight".into(), vec![hidden]),
        ("blk.0.attn_norm.weight".into(), vec![hidden]),
        ("blk.0.ffn_norm.weight".into(), vec![hidden]),
        ("blk.0.attn_q.weight".into(), vec![hidden, hidden]),
        ("blk.0.attn_k.weight".into(), vec![kv, hidden]),
        ("blk.0.attn_v.weight".into(), vec![kv, hidden]),
        ("blk.0.attn_output.weight".into(), vec![hidden, hidden]),
        ("blk.0.ffn_gate.weight".into(), vec![ffn, hidden]),
        ("blk.0.ffn_up.weight".into(), vec![ffn, hidden]),
        ("blk.0.ffn_down.weight".into(), vec![hidden, ffn]),
    ];
    if architecture == "qwen2" {
        shapes.push(("blk.0.attn_q.bias".into(), vec![hidden]));
        shapes.push(("blk.0.attn_k.bias".into(), vec![kv]));
        shapes.push(("blk.0.attn_v.bias".into(), vec![kv]));
    }
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let t = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
            // The matrices as Q8_0 (rows of 32): the F32 load dequantizes them.
            let dtype = if name.ends_with(".weight") && t.rank() == 2 { GgmlDType::Q8_0 } else { GgmlDType::F32 };
            (name, candle_core::quantized::QTensor::quantize(&t, dtype).unwrap())
        })
        .collect();
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &md, &tensors).unwrap();
}

#[test]
fn llama_and_qwen2_models_load_and_generate_in_every_weight_format() {
    let dir = tempfile::tempdir().unwrap();
    for architecture in ARCHITECTURES {
        let path = dir.path().join(format!("random-{architecture}.gguf"));
        write_random_model(&path, architecture);
        for format in [WeightFormat::Int8, WeightFormat::Quantized, WeightFormat::F32] {
            let m = load_as(&path, &Device::Cpu, Some(format)).unwrap();
            assert_eq!((m.weight_format(), m.info().architecture.as_str()), (format, *architecture));
            let request = GenerateRequest {
                messages: vec![ChatMessage { role: Role::User, content: "hello hello".into() }],
                max_tokens: 6,
                temperature: 0.0,
                seed: 1,
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let out = m.generate(&request, Some(&tx), &CancellationToken::new()).unwrap();
            let mut pieces = String::new();
            while let Ok(p) = rx.try_recv() {
                pieces.push_str(&p);
            }
            assert_eq!(pieces, out.text);
            assert!(out.stats.generated_tokens <= 6 && out.stats.prompt_tokens > 4, "{out:?}");
            let again = m.generate(&request, None, &CancellationToken::new()).unwrap();
            assert_eq!((again.text, again.finish), (out.text, out.finish), "{architecture} {format:?}");
            // Sampled: runs too.
            let sampled = GenerateRequest { temperature: 0.8, ..request };
            assert!(m.generate(&sampled, None, &CancellationToken::new()).is_ok());
        }
    }
    // The auto choice on the CPU: int8.
    let m = load(&dir.path().join("random-llama.gguf"), &Device::Cpu).unwrap();
    assert_eq!(m.weight_format(), WeightFormat::Int8);
}

fn logits(m: &ChatModel, ids: &[u32], position: usize) -> Vec<f32> {
    m.weights.lock().unwrap().forward(ids, position, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
}

/// How far `got` is from `want`: 1 - cosine, and the largest difference
/// over the largest magnitude.
fn distance(got: &[f32], want: &[f32]) -> (f64, f64) {
    let dot: f64 = got.iter().zip(want).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = want.iter().map(|a| a.abs()).fold(0f32, f32::max);
    (1.0 - dot / (norm(got) * norm(want)), (diff / scale) as f64)
}

#[test]
fn the_int8_forward_pass_computes_candles_network_in_any_pieces() {
    let dir = tempfile::tempdir().unwrap();
    for architecture in ARCHITECTURES {
        let path = dir.path().join(format!("random-{architecture}.gguf"));
        write_random_model(&path, architecture);
        let reference = load_as(&path, &Device::Cpu, Some(WeightFormat::F32)).unwrap();
        // candle's Q8_0 products quantize their inputs as ours do.
        let quantized = load_as(&path, &Device::Cpu, Some(WeightFormat::Quantized)).unwrap();
        let int8 = load_as(&path, &Device::Cpu, Some(WeightFormat::Int8)).unwrap();
        let ids: Vec<u32> = (0..12).map(|i| (i * 7 % TOKENS.len()) as u32).collect();
        // The prompt, then tokens one at a time, as a generation runs.
        let mut steps = vec![(ids.clone(), 0)];
        for (k, next) in [3u32, 5, 1].into_iter().enumerate() {
            steps.push((vec![next], ids.len() + k));
        }
        for (tokens, position) in &steps {
            let got = logits(&int8, tokens, *position);
            let same = distance(&got, &logits(&quantized, tokens, *position));
            let f32 = distance(&got, &logits(&reference, tokens, *position));
            // The same network as candle's (measured: 1e-15 to 2e-4 of cosine
            // distance; the rest is a value rounded the other way), and
            // near its F32 one (random weights make activations large).
            assert!(same.0 < 1e-3 && same.1 < 0.05, "{architecture} at {position}: {same:?}");
            assert!(f32.0 < 0.05, "{architecture} at {position}: {f32:?}");
        }
        // A prompt in pieces gives what it gives in one pass.
        let whole = logits(&int8, &ids, 0);
        logits(&int8, &ids[..5], 0);
        logits(&int8, &ids[5..9], 5);
        let pieces = logits(&int8, &ids[9..], 9);
        assert!(distance(&pieces, &whole).1 < 1e-5, "{architecture}");
        // The cache restarts at 0; it cannot skip ahead, and the window ends.
        let mut weights = int8.weights.lock().unwrap();
        assert!(weights.forward(&[1], 30, &Device::Cpu).unwrap_err().to_string().contains("after the cache's end"));
        let err = weights.forward(&[u32::MAX], 0, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
    // A network the int8 path does not take, asked for by name: one clear error.
    let odd = dir.path().join("odd.gguf");
    write_gguf(&odd, &metadata());
    let err = load_as(&odd, &Device::Cpu, Some(WeightFormat::Int8)).unwrap_err().to_string();
    assert!(err.contains("int8"), "{err}");
}

#[test]
fn a_chat_model_is_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ChatModel>();
}
