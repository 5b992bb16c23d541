//! A GGUF chat model run in process: candle's quantized llama (SmolLM2,
//! Llama 3.x) or qwen2 (Qwen2, Qwen2.5), on the CPU or a CUDA GPU, its
//! tokenizer and chat template read from the file itself.
//!
//! Chat models live in the models directory beside the embedding models, one
//! `.gguf` file each (`scripts/fetch-model.sh smollm2` installs SmolLM2-135M
//! Instruct). One generation at a time per loaded model: the model's key and
//! value cache is its state, behind a mutex.
//!
//! A prompt goes through the model in pieces of [`PROMPT_PIECE`] tokens on
//! the int8 path (in one forward pass through candle's models, which take
//! several tokens at once only from position 0), then the answer token by
//! token. The window is the model's trained context, at most
//! [`MAX_WINDOW`] tokens: candle's quantized llama has rotary tables for 4096
//! positions, and the prompt's attention scores grow with its square.
//!
//! On a CPU, the network runs on our own forward pass over int8 weights
//! ([`cpu`], [`kernels::q8`]: [`WeightFormat::Int8`]), a byte a weight with kernels
//! chosen at run time: candle's quantized CPU kernels are scalar code unless
//! the build enables AVX2 (and Q4_1 has none at all), and as F32 a token
//! reads four bytes a weight. candle's models remain for GPUs, for networks
//! the int8 path does not take (mixtures of experts, rows that are not whole
//! blocks of 32) and as the reference the int8 path is tested against.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::{AnswerError, ChatMessage, Finish, GenerateRequest, Generation, GenerationStats};
use template::{ChatTemplate, Part};
use tokenizer::{md_int, md_str, ChatTokenizer, TextStream};

mod cpu;
mod template;
mod tokenizer;

/// The most tokens (prompt and answer together) a model is given, whatever
/// its trained context: candle's quantized llama has rotary tables for 4096
/// positions, and the prompt's one forward pass holds attention scores of
/// heads × prompt² floats.
pub const MAX_WINDOW: usize = 4096;

/// The architectures (`general.architecture`) that load.
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2"];

/// How to install a chat model, for errors and listings.
pub const FETCH_HINT: &str = "scripts/fetch-model.sh smollm2";

/// On a CPU, [`load`] dequantizes weights to F32, when the int8 path does
/// not take the network, if they take at most this much as F32 (a model of up
/// to 500M parameters).
pub const AUTO_F32_MAX_BYTES: u64 = 2_000_000_000;

/// Prompt tokens the int8 path takes in one forward pass: a long prompt is
/// cut into pieces, and can be stopped between them.
pub const PROMPT_PIECE: usize = 256;

/// How a loaded model holds its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Int8 blocks (Q8_0), run by our own CPU forward pass ([`cpu`]): a byte
    /// a weight, kernels for AVX-512 VNNI and AVX2 chosen at run time. The
    /// CPU's default for the networks it takes.
    Int8,
    /// As the file stores them (Q4_1, Q4_K_M, ...): the least memory; on a
    /// CPU, candle's kernels for them are scalar unless the build enables AVX2.
    Quantized,
    /// Dequantized to F32 at load: 4 bytes a weight; on a CPU the matrix
    /// products run on SIMD kernels chosen at run time (prompts go several
    /// times faster).
    F32,
}

impl WeightFormat {
    /// What [`load`] chooses for the network in `ct`: on a CPU, int8 when
    /// [`cpu`] runs it, else F32 for a model of at most
    /// [`AUTO_F32_MAX_BYTES`] as F32; else (a GPU) the file's own.
    fn auto(info: &ChatModelInfo, ct: &Content, device: &Device) -> WeightFormat {
        if device.is_cpu() && cpu::supported(ct).is_ok() {
            WeightFormat::Int8
        } else if device.is_cpu() && info.parameters.saturating_mul(4) <= AUTO_F32_MAX_BYTES {
            WeightFormat::F32
        } else {
            WeightFormat::Quantized
        }
    }
}

/// What a GGUF chat model file says about itself (read without its weights).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatModelInfo {
    /// The file name without `.gguf`.
    pub name: String,
    pub path: PathBuf,
    /// `general.architecture`: `llama`, `qwen2`.
    pub architecture: String,
    /// Weights, counted from the tensors' shapes.
    pub parameters: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// The context it was trained for (`<arch>.context_length`).
    pub context_length: usize,
    /// Tokens it is given here: the context, at most [`MAX_WINDOW`].
    pub context_window: usize,
    /// `Q4_1`, `Q4_K_M`, `F16`, ... (`general.file_type`, else the weights' most common type).
    pub quantization: String,
    /// Whether the file carries a chat template (else ChatML is used).
    pub chat_template: bool,
}

impl ChatModelInfo {
    /// `135M`, `1.2B` (a count below a million).
    pub fn parameters_label(&self) -> String {
        let p = self.parameters as f64;
        if p >= 1e9 {
            format!("{:.1}B", p / 1e9)
        } else if p >= 1e6 {
            format!("{:.0}M", p / 1e6)
        } else {
            self.parameters.to_string()
        }
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) names.
fn file_type_name(t: i64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn read_content(path: &Path) -> Result<(std::fs::File, Content), AnswerError> {
    let bad = |e: String| AnswerError::Model(format!("chat model {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let content = Content::read(&mut file).map_err(|e| {
        bad(format!(
            "not a GGUF file candle reads ({e}); quantizations candle loads: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, \
             Q8_0 and the K-quants (Q2_K to Q6_K), not the IQ ones"
        ))
    })?;
    Ok((file, content))
}

/// Reads and checks a GGUF chat model's metadata (not its weights): a
/// supported architecture and tokenizer, and a file as long as its tensors
/// need (a truncated download fails here).
pub fn inspect(path: &Path) -> Result<ChatModelInfo, AnswerError> {
    let (file, ct) = read_content(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    info(path, &ct, bytes).map_err(|e| AnswerError::Model(format!("chat model {}: {e}", path.display())))
}

fn info(path: &Path, ct: &Content, bytes: u64) -> Result<ChatModelInfo, String> {
    let architecture = md_str(ct, "general.architecture").ok_or("no general.architecture in its metadata")?;
    if !ARCHITECTURES.contains(&architecture) {
        return Err(format!(
            "its architecture {architecture:?} (general.architecture) is not supported; supported: llama (SmolLM2, \
             Llama 3.x) and qwen2 (Qwen2, Qwen2.5)"
        ));
    }
    match md_str(ct, "tokenizer.ggml.model") {
        Some("gpt2") => {}
        Some(other) => {
            return Err(format!(
                "its tokenizer is {other:?} (tokenizer.ggml.model); only byte-level BPE (\"gpt2\": SmolLM2, Llama 3, \
                 Qwen2) is supported"
            ))
        }
        None => return Err("it has no tokenizer (no tokenizer.ggml.model)".into()),
    }
    let mut parameters = 0u64;
    let mut end = 0u64;
    let mut by_type: HashMap<GgmlDType, u64> = HashMap::new();
    for t in ct.tensor_infos.values() {
        let n = t.shape.elem_count() as u64;
        parameters += n;
        *by_type.entry(t.ggml_dtype).or_default() += n;
        let size = n / t.ggml_dtype.block_size() as u64 * t.ggml_dtype.type_size() as u64;
        end = end.max(ct.tensor_data_offset + t.offset + size);
    }
    if end > bytes {
        return Err(format!(
            "truncated: its tensors need {end} bytes, the file has {bytes}; fetch it again ({FETCH_HINT})"
        ));
    }
    let quantization = match md_int(ct, "general.file_type").and_then(file_type_name) {
        Some(name) => name.to_owned(),
        None => by_type.iter().max_by_key(|(_, n)| **n).map(|(t, _)| format!("{t:?}")).unwrap_or_default(),
    };
    let context_length =
        md_int(ct, &format!("{architecture}.context_length")).filter(|&n| n > 0).unwrap_or(2048) as usize;
    Ok(ChatModelInfo {
        name: model_name(path),
        path: path.into(),
        architecture: architecture.into(),
        parameters,
        bytes,
        context_length,
        context_window: context_length.min(MAX_WINDOW),
        quantization,
        chat_template: md_str(ct, "tokenizer.chat_template").is_some(),
    })
}

/// A model's name: its file name without `.gguf`.
fn model_name(path: &Path) -> String {
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.strip_suffix(".gguf").map(str::to_owned).unwrap_or(file)
}

/// The `.gguf` files in `models_dir`, by name.
fn gguf_files(models_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(models_dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf") && !n.starts_with('.'))
        .filter(|n| models_dir.join(n).is_file())
        .collect();
    names.sort();
    names
}

/// Every chat model (`*.gguf`) in `models_dir`, by name, with its info or why it is unusable.
pub fn installed(models_dir: &Path) -> Vec<(String, Result<ChatModelInfo, AnswerError>)> {
    gguf_files(models_dir).into_iter().map(|f| (model_name(Path::new(&f)), inspect(&models_dir.join(&f)))).collect()
}

/// Finds a chat model in `models_dir`: `name` is its file name, with or
/// without `.gguf` (any case when only one fits), or a path to a `.gguf`
/// file; without a name, the only `.gguf` file there. The error says where
/// it looked, what is there, and how to install one.
pub fn find(models_dir: &Path, name: Option<&str>) -> Result<PathBuf, AnswerError> {
    let files = gguf_files(models_dir);
    let dir_arg = crate::embed::shell_word(&models_dir.display().to_string());
    let installed = match &files[..] {
        [] if !models_dir.is_dir() => format!("installed: none; {} does not exist", models_dir.display()),
        [] => "installed: none".into(),
        names => format!("installed: {}", names.join(", ")),
    };
    let missing = |what: String| {
        AnswerError::Model(format!(
            "{what} in {} ({installed}). Models are looked for in {}. Install one there with {FETCH_HINT} {dir_arg} \
             (from a checkout of discord-indexer; SmolLM2-135M-Instruct, 98 MB), or copy a GGUF chat model (llama or \
             qwen2 architecture, e.g. a Llama 3.2 or Qwen2.5 Instruct .gguf) into it",
            models_dir.display(),
            crate::config::models_dir_rule(),
        ))
    };
    match name {
        Some(name) => {
            let path = Path::new(name);
            if name.contains(['/', '\\']) {
                if path.is_file() {
                    return Ok(path.into());
                }
                return Err(AnswerError::Model(format!("no chat model file {}", path.display())));
            }
            for file in [name.to_owned(), format!("{name}.gguf")] {
                if !name.is_empty() && models_dir.join(&file).is_file() {
                    return Ok(models_dir.join(file));
                }
            }
            let same: Vec<&String> = files
                .iter()
                .filter(|f| f.eq_ignore_ascii_case(name) || model_name(Path::new(f)).eq_ignore_ascii_case(name))
                .collect();
            match same[..] {
                [only] => Ok(models_dir.join(only)),
                _ => Err(missing(format!("no chat model {name:?}"))),
            }
        }
        None => match &files[..] {
            [only] => Ok(models_dir.join(only)),
            [] => Err(missing("no chat model (a .gguf file)".into())),
            names => Err(AnswerError::Model(format!(
                "several chat models in {}: {}; name the one to use (its file name, with or without .gguf)",
                models_dir.display(),
                names.join(", ")
            ))),
        },
    }
}

/// Loads a GGUF chat model onto `device` (the CPU, or a CUDA GPU in a build
/// with the `cuda` feature: [`crate::embed::device`]), its weights as
/// [`WeightFormat::auto`] chooses.
pub fn load(path: &Path, device: &Device) -> Result<ChatModel, AnswerError> {
    load_as(path, device, None)
}

/// [`load`], its weights held as `format` (None: [`WeightFormat::auto`]).
pub fn load_as(path: &Path, device: &Device, format: Option<WeightFormat>) -> Result<ChatModel, AnswerError> {
    let started = Instant::now();
    let (mut file, ct) = read_content(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bad = |e: String| AnswerError::Model(format!("chat model {}: {e}", path.display()));
    let info = info(path, &ct, bytes).map_err(bad)?;
    let tokenizer = ChatTokenizer::from_gguf(&ct).map_err(bad)?;
    let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token(id)).unwrap_or_default().to_owned();
    let source = md_str(&ct, "tokenizer.chat_template").unwrap_or(template::CHATML);
    let template = ChatTemplate::new(source, token_text(tokenizer.bos), token_text(tokenizer.eos)).map_err(bad)?;
    let format = format.unwrap_or_else(|| WeightFormat::auto(&info, &ct, device));
    if format == WeightFormat::Int8 {
        if !device.is_cpu() {
            return Err(bad("int8 weights run on the CPU only".into()));
        }
        if let Err(why) = cpu::supported(&ct) {
            return Err(bad(format!("the int8 path does not run this network: {why}")));
        }
    }
    let architecture = info.architecture.clone();
    let weights = |ct: Content, mut reader: &mut dyn ReadSeek| match architecture.as_str() {
        "llama" => quantized_llama::ModelWeights::from_gguf(ct, &mut reader, device).map(Weights::Llama),
        _ => quantized_qwen2::ModelWeights::from_gguf(ct, &mut reader, device).map(Weights::Qwen2),
    };
    let weights = match format {
        WeightFormat::Int8 => cpu::CpuModel::load(&ct, &mut file, info.context_window).map(Weights::Cpu),
        WeightFormat::Quantized => weights(ct, &mut file),
        WeightFormat::F32 => {
            let (f32_ct, mut reader) = AsF32::new(ct, &mut file);
            weights(f32_ct, &mut reader)
        }
    }
    .map_err(|e| bad(format!("its weights do not load: {e}")))?;
    let held = match &weights {
        Weights::Cpu(m) => format!("{:?}, {} MB", format, m.weight_bytes() / 1_000_000),
        _ => format!("{format:?}"),
    };
    tracing::info!(
        "chat model {} loaded in {:.1}s: {} {}, {} parameters ({held} in memory), {} tokens of context, on {}",
        info.name,
        started.elapsed().as_secs_f64(),
        info.architecture,
        info.quantization,
        info.parameters_label(),
        info.context_window,
        crate::embed::device_name(device)
    );
    Ok(ChatModel { info, format, device: device.clone(), weights: Mutex::new(weights), tokenizer, template })
}

trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

/// A GGUF file's tensors as F32, each dequantized when candle reads it: the
/// tensors of a [`Content`] that says F32, laid out one after the other, over
/// the file that holds them quantized.
struct AsF32<'a> {
    source: Content,
    file: &'a mut std::fs::File,
    /// Each tensor's start in the F32 layout, its length in bytes, its name; by start.
    layout: Vec<(u64, u64, String)>,
    position: u64,
    /// The tensor read last (its index in `layout`) and its F32 bytes.
    current: Option<(usize, Vec<u8>)>,
}

impl<'a> AsF32<'a> {
    fn new(source: Content, file: &'a mut std::fs::File) -> (Content, AsF32<'a>) {
        let mut names: Vec<&String> = source.tensor_infos.keys().collect();
        names.sort();
        let mut layout = Vec::with_capacity(names.len());
        let mut infos = HashMap::new();
        let mut offset = 0u64;
        for name in names {
            let shape = source.tensor_infos[name].shape.clone();
            let bytes = shape.elem_count() as u64 * 4;
            layout.push((offset, bytes, name.clone()));
            infos.insert(name.clone(), gguf_file::TensorInfo { ggml_dtype: GgmlDType::F32, shape, offset });
            offset += bytes;
        }
        let content = Content {
            magic: source.magic,
            metadata: source.metadata.clone(),
            tensor_infos: infos,
            tensor_data_offset: 0,
        };
        (content, AsF32 { source, file, layout, position: 0, current: None })
    }

    /// The F32 bytes of tensor `index` of the layout.
    fn load(&mut self, index: usize) -> candle_core::Result<Vec<u8>> {
        let name = &self.layout[index].2;
        let values = self.source.tensor(self.file, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        // As GGUF's F32 bytes (candle's own copy: fast in a debug build too).
        Ok(candle_core::quantized::QTensor::quantize(&values, GgmlDType::F32)?.data()?.into_owned())
    }
}

impl std::io::Read for AsF32<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.layout.partition_point(|(start, _, _)| *start <= self.position);
        let Some(index) = at.checked_sub(1) else { return Ok(0) };
        let (start, len, _) = self.layout[index];
        if self.position >= start + len {
            return Ok(0);
        }
        if self.current.as_ref().map(|(i, _)| *i) != Some(index) {
            let bytes = self.load(index).map_err(std::io::Error::other)?;
            self.current = Some((index, bytes));
        }
        let bytes = &self.current.as_ref().expect("loaded").1;
        let from = (self.position - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for AsF32<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let end = self.layout.last().map(|(s, l, _)| s + l).unwrap_or(0);
        let to = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::Current(d) => self.position.checked_add_signed(d),
            std::io::SeekFrom::End(d) => end.checked_add_signed(d),
        };
        self.position = to.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.position)
    }
}

/// The network, with its key and value cache.
enum Weights {
    Cpu(cpu::CpuModel),
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
}

impl Weights {
    /// Next-token logits after `ids`, which start at `position` (0: a new
    /// sequence, the cache restarts). candle's models take several tokens
    /// only from position 0.
    fn forward(&mut self, ids: &[u32], position: usize, device: &Device) -> candle_core::Result<Tensor> {
        let input = Tensor::new(ids, device)?.unsqueeze(0)?;
        let logits = match self {
            Weights::Cpu(m) => {
                let logits = m.forward(ids, position).map_err(candle_core::Error::msg)?;
                let n = logits.len();
                return Tensor::from_vec(logits, n, &Device::Cpu);
            }
            Weights::Llama(m) => m.forward(&input, position)?,
            Weights::Qwen2(m) => m.forward(&input, position)?,
        };
        logits.squeeze(0)?.to_dtype(DType::F32)
    }

    /// Prompt tokens a forward pass takes (the rest follow from where it ended).
    fn prompt_piece(&self, prompt: usize) -> usize {
        match self {
            Weights::Cpu(_) => PROMPT_PIECE,
            _ => prompt,
        }
    }
}

/// A GGUF chat model, loaded once; one generation at a time.
pub struct ChatModel {
    info: ChatModelInfo,
    format: WeightFormat,
    device: Device,
    weights: Mutex<Weights>,
    tokenizer: ChatTokenizer,
    template: ChatTemplate,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel").field("info", &self.info).finish_non_exhaustive()
    }
}

impl ChatModel {
    pub fn name(&self) -> String {
        self.info.name.clone()
    }

    /// What the file says about the model.
    pub fn info(&self) -> &ChatModelInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How the weights are held in memory.
    pub fn weight_format(&self) -> WeightFormat {
        self.format
    }

    /// Tokens the model attends to, prompt and answer together.
    pub fn context_window(&self) -> usize {
        self.info.context_window
    }

    /// Tokens of `text` as a message's content (control tokens' text is plain text there).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode_plain(&template::clean(text)).map(|ids| ids.len()).unwrap_or(usize::MAX)
    }

    /// Tokens of a text as the model's own text: `<|im_start|>` is one token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, AnswerError> {
        self.tokenizer.encode_template(text).map_err(AnswerError::Generate)
    }

    /// The text of tokens, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, AnswerError> {
        self.tokenizer.decode(ids).map_err(AnswerError::Generate)
    }

    /// The id of a token's text (`<|im_end|>`), when it is one token.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.id(token)
    }

    /// The tokens that end an answer (end of sequence, end of turn, other control tokens).
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokenizer.stop.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The prompt for `messages` as text: the chat template rendered, the
    /// assistant's turn begun.
    pub fn prompt_text(&self, messages: &[ChatMessage]) -> Result<String, AnswerError> {
        let contents: Vec<Cow<'_, str>> = messages.iter().map(|m| template::clean(&m.content)).collect();
        let rendered = self.template.render(messages).map_err(AnswerError::Generate)?;
        Ok(template::parts(&rendered, &contents)
            .into_iter()
            .map(|p| match p {
                Part::Template(t) | Part::Content(t) => t,
            })
            .collect())
    }

    /// The prompt's tokens for `messages`: the template's text with its
    /// control tokens, the contents as plain text.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, AnswerError> {
        let contents: Vec<Cow<'_, str>> = messages.iter().map(|m| template::clean(&m.content)).collect();
        let rendered = self.template.render(messages).map_err(AnswerError::Generate)?;
        let mut ids = Vec::new();
        for part in template::parts(&rendered, &contents) {
            let more = match part {
                Part::Template(t) => self.tokenizer.encode_template(t),
                Part::Content(t) => self.tokenizer.encode_plain(t),
            };
            ids.extend(more.map_err(AnswerError::Generate)?);
        }
        if let (true, Some(bos)) = (self.tokenizer.add_bos, self.tokenizer.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Writes the assistant's reply to `request.messages` (blocking: run it on
    /// the blocking pool). Pieces of text go to `pieces` as soon as they are
    /// whole characters, and make the returned text; `cancel` is looked at
    /// between tokens and between the prompt's pieces. A prompt
    /// that leaves no room in the window is an error (nothing is cut here);
    /// the answer stops at `max_tokens` or the window's end, whichever is first.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        pieces: Option<&UnboundedSender<String>>,
        cancel: &CancellationToken,
    ) -> Result<Generation, AnswerError> {
        let started = Instant::now();
        let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1e3;
        let prompt = self.prompt_tokens(&request.messages)?;
        let window = self.context_window();
        if prompt.len() >= window {
            return Err(AnswerError::Generate(format!(
                "the prompt is {} tokens, and {} takes {window} at most, prompt and answer together: shorten the \
                 prompt",
                prompt.len(),
                self.info.name
            )));
        }
        let mut stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
        // One generation at a time: wait for the model, cancellably.
        let mut weights = loop {
            match self.weights.try_lock() {
                Ok(w) => break w,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if cancel.is_cancelled() => {
                    stats.total_ms = ms(Instant::now());
                    return Ok(Generation { text: String::new(), finish: Finish::Cancelled, stats });
                }
                Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        if cancel.is_cancelled() || request.max_tokens == 0 {
            stats.total_ms = ms(Instant::now());
            let finish = if cancel.is_cancelled() { Finish::Cancelled } else { Finish::Length };
            return Ok(Generation { text: String::new(), finish, stats });
        }
        // Sampled as llama.cpp does by default: among the 40 likeliest tokens,
        // the fewest that make 95% of the probability.
        let sampling = if request.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            Sampling::TopKThenTopP { k: 40, p: 0.95, temperature: request.temperature }
        };
        let mut sampler = LogitsProcessor::from_sampling(request.seed, sampling);
        // The last position the model can take is window - 1.
        let max_tokens = request.max_tokens.min(window - prompt.len());
        let failed = |e: candle_core::Error| AnswerError::Generate(format!("{}: {e}", self.info.name));
        let send = |piece: Option<String>| {
            if let (Some(piece), Some(to)) = (piece, pieces) {
                let _ = to.send(piece);
            }
        };

        let prompt_started = Instant::now();
        let piece = weights.prompt_piece(prompt.len()).max(1);
        let mut logits = None;
        for (i, part) in prompt.chunks(piece).enumerate() {
            if i > 0 && cancel.is_cancelled() {
                stats.total_ms = ms(Instant::now());
                return Ok(Generation { text: String::new(), finish: Finish::Cancelled, stats });
            }
            logits = Some(weights.forward(part, i * piece, &self.device).map_err(failed)?);
        }
        let logits = logits.ok_or_else(|| AnswerError::Generate("an empty prompt".into()))?;
        let mut next = sampler.sample(&logits).map_err(failed)?;
        let first = Instant::now();
        stats.first_token_ms = ms(first);
        stats.prompt_tokens_per_s = prompt.len() as f64 / first.duration_since(prompt_started).as_secs_f64();
        let mut stream = TextStream::new();
        let mut sampled = 1;
        let mut last = first;
        let finish = loop {
            if self.tokenizer.stop.contains(&next) {
                break Finish::Stop;
            }
            stats.generated_tokens += 1;
            send(stream.push(&self.tokenizer, next).map_err(AnswerError::Generate)?);
            if stats.generated_tokens >= max_tokens {
                break Finish::Length;
            }
            if cancel.is_cancelled() {
                break Finish::Cancelled;
            }
            let position = prompt.len() + stats.generated_tokens - 1;
            let logits = weights.forward(&[next], position, &self.device).map_err(failed)?;
            next = sampler.sample(&logits).map_err(failed)?;
            sampled += 1;
            last = Instant::now();
        };
        drop(weights);
        send(stream.finish(&self.tokenizer).map_err(AnswerError::Generate)?);
        let decoding = last.duration_since(first).as_secs_f64();
        stats.tokens_per_s = if sampled > 1 && decoding > 0.0 { (sampled - 1) as f64 / decoding } else { 0.0 };
        stats.total_ms = ms(Instant::now());
        Ok(Generation { text: stream.text().to_owned(), finish, stats })
    }
}

#[cfg(test)]
mod tests;
