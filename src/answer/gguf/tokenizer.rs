//! A chat model's tokenizer, built from its GGUF metadata: byte-level BPE
//! (`tokenizer.ggml.model` = `gpt2`, what SmolLM2, Llama 3 and Qwen2 use)
//! from `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`, the text split
//! before BPE as `tokenizer.ggml.pre` names (as llama.cpp does), and the
//! control tokens (`<|im_start|>`, `<|eot_id|>`, ...) as special tokens.
//!
//! Two tokenizers over one vocabulary: the template's own text, where a
//! control token's text is that token, and message contents, where it is
//! plain text: chat that contains `<|im_end|>` cannot end a turn.

use std::collections::HashSet;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// GPT-2's split before BPE (what `ByteLevel` with `use_regex` does).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (numbers in runs of up to three digits).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (each digit alone).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_UNKNOWN: i64 = 2;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// An integer of any of GGUF's integer types.
pub(super) fn int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

pub(super) fn md_int(ct: &Content, key: &str) -> Option<i64> {
    ct.metadata.get(key).and_then(int)
}

pub(super) fn md_str<'a>(ct: &'a Content, key: &str) -> Option<&'a str> {
    ct.metadata.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
}

fn md_bool(ct: &Content, key: &str) -> Option<bool> {
    ct.metadata.get(key).and_then(|v| v.to_bool().ok())
}

fn md_id(ct: &Content, key: &str, vocab: usize) -> Option<u32> {
    md_int(ct, key).filter(|&id| id >= 0 && (id as usize) < vocab).map(|id| id as u32)
}

fn md_strings<'a>(ct: &'a Content, key: &str) -> Result<Vec<&'a str>, String> {
    let list = ct.metadata.get(key).ok_or_else(|| format!("no {key}"))?;
    let list = list.to_vec().map_err(|_| format!("{key} is not a list"))?;
    list.iter().map(|v| v.to_string().map(String::as_str).map_err(|_| format!("{key} holds a non-string"))).collect()
}

/// A chat model's tokenizer and its special tokens.
pub(super) struct ChatTokenizer {
    /// Control tokens' text is the control token (the chat template's text).
    template: Tokenizer,
    /// Control tokens' text is plain text (message contents, counting).
    plain: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether a prompt starts with `bos` (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end the answer: end of sequence, end of turn, and any
    /// other control token (never part of an answer's text).
    pub stop: HashSet<u32>,
    /// Every token's text, by id (`bos_token` and `eos_token` of the template).
    tokens: Vec<String>,
}

impl ChatTokenizer {
    /// Builds the tokenizer that `ct`'s metadata describes.
    pub fn from_gguf(ct: &Content) -> Result<ChatTokenizer, String> {
        match md_str(ct, "tokenizer.ggml.model") {
            Some("gpt2") => {}
            Some(other) => {
                return Err(format!(
                    "its tokenizer is {other:?} (tokenizer.ggml.model); only byte-level BPE (\"gpt2\": SmolLM2, \
                     Llama 3, Qwen2) is supported"
                ))
            }
            None => return Err("it has no tokenizer (no tokenizer.ggml.model)".into()),
        }
        let tokens = md_strings(ct, "tokenizer.ggml.tokens")?;
        let merges = md_strings(ct, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| "tokenizer.ggml.token_type is not a list".to_owned())?
                .iter()
                .map(|t| int(t).unwrap_or(1))
                .collect(),
            None => Vec::new(),
        };
        let mut vocab = Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            // A text twice (rare): the first id keeps it.
            vocab.entry((*t).to_owned()).or_insert(id as u32);
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect::<Option<_>>()
            .ok_or("a merge in tokenizer.ggml.merges is not two tokens")?;
        let pre = md_str(ct, "tokenizer.ggml.pre").unwrap_or("default");
        let byte_level = |use_regex: bool| ByteLevel::new(false, false, use_regex);
        let split = |pattern: &str| {
            Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
                .map(PreTokenizerWrapper::from)
                .map_err(|e| e.to_string())
        };
        let (pre_tokenizer, ignore_merges, nfc): (PreTokenizerWrapper, bool, bool) = match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => {
                (Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false).into()]).into(), true, false)
            }
            "qwen2" | "deepseek-r1-qwen" => {
                (Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false).into()]).into(), false, true)
            }
            "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => {
                (Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into(), false, false)
            }
            "default" | "gpt-2" | "gpt2" | "phi-2" | "olmo" => (byte_level(true).into(), false, false),
            other => {
                tracing::warn!(
                    "tokenizer.ggml.pre {other:?} is not known here; splitting text as GPT-2 does \
                     (tokens may differ slightly from the model's own)"
                );
                (Sequence::new(vec![split(GPT2_SPLIT)?, byte_level(false).into()]).into(), false, false)
            }
        };
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| format!("its BPE vocabulary does not build: {e}"))?;
        let mut template = Tokenizer::new(bpe);
        template.with_pre_tokenizer(Some(pre_tokenizer));
        template.with_decoder(Some(ByteLevel::default()));
        if nfc {
            template.with_normalizer(Some(NFC));
        }
        let vocab_size = tokens.len();
        let bos = md_id(ct, "tokenizer.ggml.bos_token_id", vocab_size);
        let eos = md_id(ct, "tokenizer.ggml.eos_token_id", vocab_size);
        let mut special = Vec::new();
        let mut user = Vec::new();
        let mut stop: HashSet<u32> = HashSet::new();
        for (id, (t, kind)) in tokens.iter().zip(types.iter().copied().chain(std::iter::repeat(1))).enumerate() {
            match kind {
                TOKEN_CONTROL | TOKEN_UNKNOWN => {
                    special.push(AddedToken::from(*t, true));
                    stop.insert(id as u32);
                }
                TOKEN_USER_DEFINED => user.push(AddedToken::from(*t, false).normalized(false)),
                _ => {}
            }
        }
        for id in [bos, eos].into_iter().flatten() {
            let t = tokens[id as usize];
            if !special.iter().any(|s| s.content == t) {
                special.push(AddedToken::from(t, true));
            }
        }
        // End of sequence, and end of turn where the file names it apart.
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop.extend(md_id(ct, key, vocab_size));
        }
        // Without token types: the usual end-of-turn tokens, where the vocabulary has them.
        if types.is_empty() {
            for t in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>"] {
                if let Some(id) = tokens.iter().position(|x| *x == t) {
                    special.push(AddedToken::from(t, true));
                    stop.insert(id as u32);
                }
            }
        }
        template.add_tokens(&user);
        template.add_special_tokens(&special);
        let mut plain = template.clone();
        plain.set_encode_special_tokens(true);
        let add_bos = md_bool(ct, "tokenizer.ggml.add_bos_token").unwrap_or(false) && bos.is_some();
        Ok(ChatTokenizer {
            template,
            plain,
            bos,
            eos,
            add_bos,
            stop,
            tokens: tokens.into_iter().map(str::to_owned).collect(),
        })
    }

    /// A token's text as the vocabulary holds it (`<|im_start|>`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token's text, when it is one token (`<|im_start|>`).
    pub fn id(&self, token: &str) -> Option<u32> {
        self.template.token_to_id(token)
    }

    /// Tokens of a text whose control tokens' text is a control token (the
    /// chat template's own text).
    pub fn encode_template(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.template.encode_fast(text, false).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    /// Tokens of a text taken as plain text, control tokens' text included.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.plain.encode_fast(text, false).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    /// The text of tokens, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.template.decode(ids, true).map_err(|e| e.to_string())
    }
}

/// Text of a growing list of tokens, given out as soon as it is whole UTF-8
/// (a character may take several byte-level tokens).
pub(super) struct TextStream {
    ids: Vec<u32>,
    /// The text given out so far.
    text: String,
}

impl TextStream {
    pub fn new() -> TextStream {
        TextStream { ids: Vec::new(), text: String::new() }
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &ChatTokenizer, id: u32) -> Result<Option<String>, String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        // An unfinished character decodes as U+FFFD: wait for its other bytes.
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        Ok(self.advance(text))
    }

    /// The text not given out yet, unfinished characters included.
    pub fn finish(&mut self, tokenizer: &ChatTokenizer) -> Result<Option<String>, String> {
        let text = tokenizer.decode(&self.ids)?;
        Ok(self.advance(text))
    }

    fn advance(&mut self, text: String) -> Option<String> {
        // Byte-level decoding of more tokens extends the text it had.
        let piece = text.strip_prefix(self.text.as_str())?.to_owned();
        self.text = text;
        (!piece.is_empty()).then_some(piece)
    }

    /// The text given out so far: every piece, in order.
    pub fn text(&self) -> &str {
        &self.text
    }
}
