//! Measures the archive's write path: `N` generated messages (default 1M),
//! written as Discord pages of 100 through `Store::write_page`, each page with
//! its checkpoint in one transaction, as the loader does. Only the writes are
//! timed; building the JSON is not. Prints one JSON line.
//!
//! `cargo run --release --example bench_store -- [N] [DATA_DIR]`

use std::time::{Duration, Instant};

use discord_indexer::discord::model::{Message, Raw};
use discord_indexer::store::Store;

const CHANNELS: u64 = 10;

fn page(channel: u64, first: u64) -> Vec<Raw<Message>> {
    (0..100u64)
        .map(|i| {
            let id = ((first + i) << 22) | channel;
            let author = 1000 + (id % 40);
            let json = serde_json::json!({
                "id": id.to_string(), "channel_id": channel.to_string(),
                "author": {"id": author.to_string(), "username": format!("user{author}"), "global_name": format!("User {author}"),
                           "discriminator": "0", "avatar": null, "public_flags": 0},
                "content": format!("message {id}: has anyone looked at the staging deploy? the logs say timeout after {}s", id % 60),
                "timestamp": "2024-05-01T12:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
                "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                "components": [], "pinned": false, "type": 0, "flags": 0,
            });
            serde_json::from_value(json).expect("valid message")
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|a| a.parse().expect("N is a number")).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = args.next().map(Into::into).unwrap_or_else(|| tmp.path().to_path_buf());
    let store = Store::open(&dir).expect("store opens");
    let mut spent = Duration::ZERO;
    let pages = n / 100;
    for p in 0..pages {
        let channel = 1 + p % CHANNELS;
        let batch = page(channel, 1_000_000 + p * 100);
        let t = Instant::now();
        store.write_page(7, channel, &batch, false).expect("page written");
        spent += t.elapsed();
    }
    let bytes = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "messages": pages * 100,
            "write_seconds": spent.as_secs_f64(),
            "messages_per_second": (pages * 100) as f64 / spent.as_secs_f64(),
            "archive_bytes": bytes,
        })
    );
}
