//! Writes a tiny random-weight BERT sentence-transformers directory (config,
//! safetensors, a word-level tokenizer, pooling config). Tests use it to run
//! the real loading and embedding code without downloading a model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::Pooling;

/// The shape of a tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub pooling: Pooling,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            hidden: 32,
            layers: 2,
            heads: 4,
            intermediate: 64,
            max_positions: 128,
            pooling: Pooling::Mean,
            seed: 1,
        }
    }
}

const SPECIALS: [&str; 4] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];

/// Words the tokenizer knows; everything else is [UNK].
const WORDS: &str = "a an the is are was be to of and or in on at for with it this that i you we they he she \
    has have had do does did not no yes ok can could should would will how what why when where who which \
    anyone looked again broken question about heads up changed today handle now someone review needs restart \
    after config change fixed yesterday pull main idea ask help works me latest version moved new runbook \
    let put agenda take logs say timeout 30s try clearing staging deploy helm chart rollout canary pods \
    release branch notary keys key rotation signing cert vault token our tls certificates arm build cargo \
    check ci cache linker errors nightly job postgres replica migration script slow queries connection pool \
    vacuum dark mode settings page mobile layout font rendering onboarding flow retro thursday sync planning \
    doc offsite call rota finished tests passed error message rotate replying";

/// Writes a tiny model into `dir` (created if needed).
pub fn write(dir: &Path, spec: &TinySpec) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("1_Pooling"))?;
    let mut vocab: Vec<&str> = SPECIALS.to_vec();
    for w in WORDS.split_whitespace() {
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    for p in [".", ",", "?", "!", ":", "#", "(", ")", "\"", "…", "'"] {
        vocab.push(p);
    }
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": vocab.len(), "hidden_size": spec.hidden, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "intermediate_size": spec.intermediate, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": spec.max_positions, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        serde_json::to_string_pretty(&json!({
            "word_embedding_dimension": spec.hidden,
            "pooling_mode_cls_token": spec.pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": spec.pooling == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }))?,
    )?;
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        json!({"max_seq_length": spec.max_positions, "do_lower_case": false}).to_string(),
    )?;
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tokenizer_json(&vocab))?)?;

    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut random = |name: String, shape: &[usize]| -> anyhow::Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.2f32..0.2)).collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    };
    let (h, i) = (spec.hidden, spec.intermediate);
    random("embeddings.word_embeddings.weight".into(), &[vocab.len(), h])?;
    random("embeddings.position_embeddings.weight".into(), &[spec.max_positions, h])?;
    random("embeddings.token_type_embeddings.weight".into(), &[2, h])?;
    for l in 0..spec.layers {
        let p = format!("encoder.layer.{l}");
        for name in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            random(format!("{p}.{name}.weight"), &[h, h])?;
            random(format!("{p}.{name}.bias"), &[h])?;
        }
        random(format!("{p}.intermediate.dense.weight"), &[i, h])?;
        random(format!("{p}.intermediate.dense.bias"), &[i])?;
        random(format!("{p}.output.dense.weight"), &[h, i])?;
        random(format!("{p}.output.dense.bias"), &[h])?;
    }
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for l in 0..spec.layers {
        norms.push(format!("encoder.layer.{l}.attention.output.LayerNorm"));
        norms.push(format!("encoder.layer.{l}.output.LayerNorm"));
    }
    for n in norms {
        tensors.insert(format!("{n}.weight"), Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?);
        tensors.insert(format!("{n}.bias"), Tensor::zeros(h, candle_core::DType::F32, &Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

fn tokenizer_json(vocab: &[&str]) -> serde_json::Value {
    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
            },
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": "[UNK]"},
    })
}
