use super::*;
use crate::embed::tiny;
use crate::embed::{Embedder, Pooling};

/// A message id at `minute` minutes after Discord's epoch (ids order by time).
fn at(minute: u64, n: u64) -> u64 {
    ((minute * 60_000) << 22) | n
}

fn row(id: u64, channel: u64, author: u64, content: &str, reply_to: Option<u64>) -> ConversationRow {
    ConversationRow { id, channel_id: channel, author_id: author, content: content.into(), reply_to }
}

#[test]
fn pairs_are_replies_or_turns_between_people() {
    let long = |s: &str| format!("{s} with enough words to count");
    let rows = vec![
        row(at(0, 1), 1, 10, &long("question one"), None),
        // A turn: another person within 15 minutes.
        row(at(5, 2), 1, 11, &long("answer one"), None),
        // The same person again: no pair.
        row(at(6, 3), 1, 11, &long("more from the same person"), None),
        // After a silence of 20 minutes: no pair.
        row(at(26, 4), 1, 10, &long("much later"), None),
        // Too short to pair, either side.
        row(at(27, 5), 1, 12, "ok", None),
        row(at(28, 6), 1, 10, &long("after a short one"), None),
        // A reply pairs with what it answers, however far back.
        row(at(90, 7), 1, 13, &long("replying to the first"), Some(at(0, 1))),
        // Another channel: consecutive rows of different channels never pair,
        // and a reply to another channel's message does not either.
        row(at(91, 8), 2, 14, &long("other channel"), Some(at(0, 1))),
        row(at(92, 9), 2, 15, &long("answer in channel two"), None),
    ];
    let got = pairs(&rows);
    let expected = vec![
        (long("question one"), long("answer one")),
        (long("question one"), long("replying to the first")),
        (long("other channel"), long("answer in channel two")),
    ];
    assert_eq!(got, expected);
}

#[test]
fn names_must_be_plain_and_new() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    for bad in ["", ".hidden", "a/b", "../up", "x.partial", "sp ace"] {
        assert!(matches!(target_dir(dir.path(), bad), Err(AdaptError::BadName(_))), "{bad:?}");
    }
    assert!(matches!(target_dir(dir.path(), "taken"), Err(AdaptError::Exists(_))));
    assert_eq!(target_dir(dir.path(), "minilm-ours_2.1").unwrap(), dir.path().join("minilm-ours_2.1"));
}

#[test]
fn settings_no_run_can_use_are_refused() {
    let ok = Settings::default();
    assert!(ok.check().is_ok());
    for bad in [
        Settings { epochs: 0, ..ok.clone() },
        Settings { batch: 1, ..ok.clone() },
        Settings { learning_rate: f64::NAN, ..ok.clone() },
        Settings { learning_rate: 0.0, ..ok.clone() },
        Settings { max_tokens: 2, ..ok.clone() },
        Settings { max_pairs: 8, ..ok.clone() },
    ] {
        assert!(matches!(bad.check(), Err(AdaptError::BadSetting(_))), "{bad:?}");
    }
}

fn tiny_model(dir: &Path) -> ModelInfo {
    tiny::write(&dir.join("tiny"), &tiny::TinySpec { pooling: Pooling::Mean, ..Default::default() }).unwrap();
    ModelInfo::read(&dir.join("tiny")).unwrap()
}

/// Eight pairs in the tiny model's vocabulary, each side distinct.
fn tiny_pairs() -> Vec<(String, String)> {
    [
        ("the staging deploy is broken", "try a helm rollout again"),
        ("notary keys rotation today", "the signing cert is in vault"),
        ("postgres replica is slow", "check the connection pool"),
        ("cargo build linker errors", "clear the ci cache"),
        ("who can review the pull", "i can take it now"),
        ("the nightly job failed", "restart it after the config change"),
        ("tls certificates expired", "our token moved to the new runbook"),
        ("canary pods timeout 30s", "put the logs on the agenda"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[test]
fn training_lowers_the_loss_and_saves_a_model_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_model(dir.path());
    let mut model = Trainable::load(base.clone(), 64, 7, Device::Cpu).unwrap();
    let mut pairs = tiny_pairs();
    let settings = Settings { epochs: 40, batch: 8, learning_rate: 3e-3, max_pairs: 8, ..Settings::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let steps = std::cell::Cell::new(0);
    let losses =
        train(&mut model, &mut pairs, &settings, &mut rng, &|s| steps.set(s.step), &AtomicBool::new(false)).unwrap();
    assert_eq!((losses.len(), steps.get()), (40, 40));
    assert!(losses.iter().all(|l| l.is_finite()));
    let (first, last) = (losses[..5].iter().sum::<f32>() / 5.0, losses[35..].iter().sum::<f32>() / 5.0);
    // ln 8 = 2.08 is guessing among the batch; trained, each finds its partner.
    assert!(first > 1.0 && last < first / 2.0, "loss {first} -> {last}");

    let out = dir.path().join("adapted");
    model.save(&out).unwrap();
    let info = ModelInfo::read(&out).unwrap();
    assert_eq!((info.dim, info.pooling, info.max_tokens), (base.dim, base.pooling, base.max_tokens));
    let before = Embedder::load(base, Device::Cpu).unwrap();
    let after = Embedder::load(info, Device::Cpu).unwrap();
    let owned: Vec<String> = tiny_pairs().into_iter().flat_map(|(a, b)| [a, b]).collect();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (v0, _) = before.embed(&texts, 16).unwrap();
    let (v1, _) = after.embed(&texts, 16).unwrap();
    assert!(v0 != v1, "the saved weights are the trained ones");
    // Each first message is now nearest its own partner among the answers.
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for i in 0..8 {
        let best = (0..8).max_by(|&x, &y| cos(&v1[2 * i], &v1[2 * x + 1]).total_cmp(&cos(&v1[2 * i], &v1[2 * y + 1])));
        assert_eq!(best, Some(i), "pair {i}");
    }
}

#[test]
fn a_stop_ends_training_before_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Trainable::load(tiny_model(dir.path()), 64, 1, Device::Cpu).unwrap();
    let settings = Settings { batch: 4, max_pairs: 8, ..Settings::default() };
    let stop = AtomicBool::new(false);
    let result = train(
        &mut model,
        &mut tiny_pairs(),
        &settings,
        &mut rand::rngs::StdRng::seed_from_u64(1),
        &|_| stop.store(true, Ordering::Relaxed),
        &stop,
    );
    assert!(matches!(result, Err(AdaptError::Interrupted)));
}
