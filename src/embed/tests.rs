use super::*;

fn tiny(pooling: Pooling) -> (tempfile::TempDir, Embedder) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    tiny::write(&path, &tiny::TinySpec { pooling, ..Default::default() }).unwrap();
    let info = ModelInfo::read(&path).unwrap();
    (dir, Embedder::load(info, Device::Cpu).unwrap())
}

#[test]
fn reads_model_info_without_loading_weights() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write(&dir.path().join("m"), &tiny::TinySpec { pooling: Pooling::Cls, ..Default::default() }).unwrap();
    let info = ModelInfo::find(dir.path(), "m").unwrap();
    assert_eq!((info.dim, info.pooling, info.max_tokens), (32, Pooling::Cls, 128));
    let err = ModelInfo::find(dir.path(), "nope").unwrap_err();
    assert!(err.to_string().contains("installed: m"), "{err}");
}

#[test]
fn pooling_is_read_as_flags_or_as_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    tiny::write(&path, &tiny::TinySpec { pooling: Pooling::Cls, ..Default::default() }).unwrap();
    let pooling_file = path.join("1_Pooling/config.json");
    for (config, expected) in [
        (r#"{"word_embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": true}"#, Some(Pooling::Mean)),
        (r#"{"word_embedding_dimension": 32, "pooling_mode": "cls"}"#, Some(Pooling::Cls)),
        (r#"{"pooling_mode_mean_tokens": true}"#, Some(Pooling::Mean)),
        (r#"{"pooling_mode": "max"}"#, None),
        (r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#, None),
    ] {
        std::fs::write(&pooling_file, config).unwrap();
        match (ModelInfo::read(&path), expected) {
            (Ok(info), Some(p)) => assert_eq!(info.pooling, p, "{config}"),
            (Err(e), None) => assert!(e.to_string().contains("only CLS or mean pooling"), "{config}: {e}"),
            (got, _) => panic!("{config}: {:?}", got.map(|i| i.pooling)),
        }
    }
}

#[test]
fn vectors_are_normalised_deterministic_and_independent_of_batching() {
    let (_d, e) = tiny(Pooling::Mean);
    let texts = ["has anyone looked at the staging deploy?", "ok", "the notary keys rotation is broken again today"];
    let (all, tokens) = e.embed(&texts, 8).unwrap();
    assert!(tokens >= 3 * 3);
    for v in &all {
        assert_eq!(v.len(), 32);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5 && v.iter().all(|x| x.is_finite()));
    }
    // One at a time (no padding) gives the same vectors as a padded batch.
    for (i, t) in texts.iter().enumerate() {
        let (one, _) = e.embed(&[t], 1).unwrap();
        let cos: f32 = one[0].iter().zip(&all[i]).map(|(a, b)| a * b).sum();
        assert!(cos > 1.0 - 1e-5, "text {i}: cosine {cos}");
    }
}

#[test]
fn the_gpu_tensor_path_matches_the_cpu_encoder_in_f32_and_half_precision() {
    // The GPU's padded batches, run on the CPU: the same vectors as the packed
    // CPU encoder in F32, and finite, close vectors in half precision (whose
    // padding mask must not overflow into NaN).
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let (dir, cpu) = tiny(pooling);
        let info = ModelInfo::read(&dir.path().join("tiny")).unwrap();
        let texts = [
            "has anyone looked at the staging deploy?",
            "ok",
            "the notary keys rotation is broken again today, see the runbook in ops",
            "",
        ];
        let (want, want_tokens) = cpu.embed(&texts, 64).unwrap();
        // (candle's CPU backend has no BF16 matrix product: BF16 is checked on a GPU only.)
        for (precision, min_cos) in [(Precision::F32, 1.0 - 1e-5), (Precision::F16, 0.999)] {
            let tensor = Embedder::load_inner(info.clone(), Device::Cpu, precision, true).unwrap();
            // Batches of 3 and 1: padded rows beside short texts.
            let (got, tokens) = tensor.embed(&texts, 3).unwrap();
            assert_eq!(tokens, want_tokens, "{precision:?}: padding is not counted as tokens");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g.iter().all(|x| x.is_finite()), "{pooling:?} {precision:?} text {i}: not finite");
                let cos: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                assert!(cos > min_cos, "{pooling:?} {precision:?} text {i}: cosine {cos}");
            }
        }
    }
    let (dir, _) = tiny(Pooling::Mean);
    let info = ModelInfo::read(&dir.path().join("tiny")).unwrap();
    let err = Embedder::load_as(info, Device::Cpu, Precision::F16).unwrap_err();
    assert!(err.to_string().contains("needs a GPU"), "{err}");
}

#[test]
fn int8_on_the_cpu_is_close_to_f32_and_refused_on_the_tensor_path() {
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let (dir, f32s) = tiny(pooling);
        let info = ModelInfo::read(&dir.path().join("tiny")).unwrap();
        let int8 = Embedder::load_as(info.clone(), Device::Cpu, Precision::Int8).unwrap();
        assert_eq!(int8.precision(), Precision::Int8);
        let texts = ["has anyone looked at the staging deploy?", "ok", "the notary keys rotation is broken again"];
        let (want, want_tokens) = f32s.embed(&texts, 8).unwrap();
        let (got, tokens) = int8.embed(&texts, 8).unwrap();
        assert_eq!(tokens, want_tokens);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let cos: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            assert!(cos > 0.99 && cos < 1.0 - 1e-7, "{pooling:?} text {i}: cosine {cos} (int8, not f32)");
        }
        let err = Embedder::load_inner(info, Device::Cpu, Precision::Int8, true).unwrap_err();
        assert!(err.to_string().contains("int8 is the CPU encoder's"), "{err}");
    }
}

#[test]
fn cls_and_mean_pooling_differ() {
    let (_a, mean) = tiny(Pooling::Mean);
    let (_b, cls) = tiny(Pooling::Cls);
    let t = ["how do we handle the rollout now?"];
    let (m, _) = mean.embed(&t, 1).unwrap();
    let (c, _) = cls.embed(&t, 1).unwrap();
    let cos: f32 = m[0].iter().zip(&c[0]).map(|(a, b)| a * b).sum();
    assert!(cos < 0.999);
}

#[test]
fn long_inputs_are_counted_untruncated() {
    let (_d, e) = tiny(Pooling::Mean);
    let long = "the build is broken ".repeat(100);
    assert_eq!(e.count_tokens(&long), 402);
    assert_eq!(e.count_content_tokens(&long), 400);
    assert_eq!(e.special_tokens(), 2);
}

#[test]
fn broken_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    tiny::write(&m, &tiny::TinySpec::default()).unwrap();
    std::fs::remove_file(m.join("1_Pooling/config.json")).unwrap();
    assert!(matches!(ModelInfo::read(&m), Err(ModelError::MissingFile { file: "1_Pooling/config.json", .. })));
    tiny::write(&m, &tiny::TinySpec::default()).unwrap();
    std::fs::write(m.join("config.json"), "{ not json").unwrap();
    let err = ModelInfo::read(&m).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    // Cheap checks when the directory is read (what `models` lists): an empty,
    // garbage or truncated weights file, a tokenizer that is not JSON.
    let weights = m.join("model.safetensors");
    for damage in ["empty", "garbage", "truncated"] {
        tiny::write(&m, &tiny::TinySpec::default()).unwrap();
        let bytes = std::fs::read(&weights).unwrap();
        let damaged = match damage {
            "empty" => Vec::new(),
            "garbage" => b"garbage".to_vec(),
            _ => bytes[..bytes.len() - 100].to_vec(),
        };
        std::fs::write(&weights, damaged).unwrap();
        let err = ModelInfo::read(&m).unwrap_err();
        assert!(err.to_string().contains("model.safetensors"), "{damage}: {err}");
    }
    tiny::write(&m, &tiny::TinySpec::default()).unwrap();
    std::fs::write(m.join("tokenizer.json"), "{ \"truncated\": ").unwrap();
    let err = ModelInfo::read(&m).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    tiny::write(&m, &tiny::TinySpec::default()).unwrap();
    ModelInfo::read(&m).expect("an intact model reads");
}

#[test]
fn the_training_forward_without_dropout_computes_what_inference_does() {
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let (dir, e) = tiny(pooling);
        let texts =
            ["has anyone looked at the staging deploy?", "ok", "the notary keys rotation is broken again today"];
        let (expected, _) = e.embed(&texts, 8).unwrap();
        let mut t =
            train::Trainable::load(ModelInfo::read(&dir.path().join("tiny")).unwrap(), 128, 0, Device::Cpu).unwrap();
        t.disable_dropout();
        let got = t.embed(&texts).unwrap().to_vec2::<f32>().unwrap();
        for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
            let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(cos > 1.0 - 1e-5, "{pooling:?} text {i}: cosine {cos}");
        }
        // With dropout the vectors move (training noise), and stay unit length.
        let mut noisy =
            train::Trainable::load(ModelInfo::read(&dir.path().join("tiny")).unwrap(), 128, 0, Device::Cpu).unwrap();
        let v = noisy.embed(&texts).unwrap().to_vec2::<f32>().unwrap();
        assert!(v != got);
        assert!(v.iter().all(|r| (r.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-4));
    }
}

/// A fixture directory that `scripts/reference-prompts-rerank.py` made.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap()
}

/// Prompts are read from `config_sentence_transformers.json`, picked as
/// sentence-transformers picks them, and a prompted text embeds exactly as
/// sentence-transformers' `encode(prompt_name=...)` gives it.
#[test]
fn prompts_are_read_and_embed_as_sentence_transformers_does() {
    let info = ModelInfo::read(&fixture("tiny-prompts")).unwrap();
    assert_eq!(info.prompts, Prompts { query: "query: ".into(), document: "passage: ".into() });
    let reference = reference("tiny-prompts");
    let e = Embedder::load(info.clone(), Device::Cpu).unwrap();
    let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let mut worst = 0f32;
    for (name, prompt) in [("query", &info.prompts.query), ("document", &info.prompts.document)] {
        let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        let (got, _) = e.embed(&refs, 4).unwrap();
        for (g, want) in got.iter().zip(reference["vectors"][name].as_array().unwrap()) {
            for (a, b) in g.iter().zip(want.as_array().unwrap()) {
                worst = worst.max((a - b.as_f64().unwrap() as f32).abs());
            }
        }
    }
    assert!(worst < 1e-4, "largest difference to sentence-transformers: {worst}");

    // Which prompt is which, as sentence-transformers picks them.
    let pick = |json: &str| serde_json::from_str::<SentenceTransformersConfig>(json).unwrap().prompts();
    let both = |q: &str, d: &str| Prompts { query: q.into(), document: d.into() };
    assert_eq!(pick(r#"{"prompts": {"query": "q: ", "passage": "p: "}}"#), both("q: ", "p: "));
    assert_eq!(pick(r#"{"prompts": {"query": "q: ", "corpus": "c: ", "document": "d: "}}"#), both("q: ", "d: "));
    assert_eq!(pick(r#"{"prompts": {"x": "x: "}, "default_prompt_name": "x"}"#), both("x: ", "x: "));
    assert_eq!(pick(r#"{"__version__": {"sentence_transformers": "2.2.2"}}"#), Prompts::default());
}

/// The cross-encoder's scores are transformers' logits for the same pairs
/// (questions and passages of every length, an empty side, a pair cut to
/// the model's length).
#[test]
fn reranker_scores_are_transformers_logits() {
    let reference = reference("tiny-reranker");
    let info = rerank::RerankerInfo::find(&fixture(""), "TINY-reranker").unwrap();
    assert_eq!(info.max_tokens, 128);
    let reranker = rerank::Reranker::load(info, Precision::F32).unwrap();
    let pairs = reference["pairs"].as_array().unwrap();
    let logits = reference["logits"].as_array().unwrap();
    let mut worst = 0f32;
    for (pair, want) in pairs.iter().zip(logits) {
        let (q, p) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let got = reranker.score(q, &[p, "a second passage beside it", p]).unwrap();
        assert_eq!(got[0], got[2], "a pair scores the same wherever it is in a batch");
        worst = worst.max((got[0] - want.as_f64().unwrap() as f32).abs());
    }
    assert!(worst < 1e-4, "largest difference to transformers: {worst}");
    // All passages in one call, as a search scores them.
    let q = pairs[0][0].as_str().unwrap();
    let together: Vec<&str> = pairs.iter().map(|p| p[1].as_str().unwrap()).collect();
    let one_by_one: Vec<f32> = together.iter().map(|p| reranker.score(q, &[p]).unwrap()[0]).collect();
    let all = reranker.score(q, &together).unwrap();
    for (a, b) in all.iter().zip(&one_by_one) {
        assert!((a - b).abs() < 1e-5, "{all:?} vs {one_by_one:?}");
    }
    assert_eq!(reranker.score(q, &[]).unwrap(), Vec::<f32>::new());
}

/// What is not a one-label BERT cross-encoder is refused with the reason;
/// an embedding model is not a reranker.
#[test]
fn a_model_that_is_not_a_cross_encoder_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("r");
    std::fs::create_dir(&copy).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-reranker").join(f), copy.join(f)).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("config.json")).unwrap()).unwrap();
    for (change, expected) in [
        (serde_json::json!({"num_labels": 3}), "one label"),
        (serde_json::json!({"architectures": ["XLMRobertaForSequenceClassification"]}), "not a BERT cross-encoder"),
        (serde_json::json!({"architectures": ["BertModel"]}), "not a BERT cross-encoder"),
    ] {
        let mut c = config.clone();
        for (k, v) in change.as_object().unwrap() {
            c[k] = v.clone();
        }
        std::fs::write(copy.join("config.json"), c.to_string()).unwrap();
        let err = rerank::RerankerInfo::read(&copy).unwrap_err().to_string();
        assert!(err.contains(expected), "{change}: {err}");
    }
    let err = rerank::RerankerInfo::read(&fixture("tiny-prompts")).unwrap_err().to_string();
    assert!(err.contains("not a BERT cross-encoder"), "{err}");
    let err = rerank::RerankerInfo::find(dir.path(), "nope").unwrap_err().to_string();
    assert!(err.contains("no reranker \"nope\"") && err.contains("fetch-model.sh"), "{err}");
}
