//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use discord_indexer::discord::model::channel_type;
use discord_indexer::discord::{Client, ClientOptions, Token};
use discord_indexer::embed::tiny::{self, TinySpec};
use discord_indexer::load::{self, LoadError, LoadOptions, LoadSummary};
use discord_indexer::snowflake;
use discord_indexer::store::Store;
use fake_discord::{Access, FakeDiscord, Limits, World, WorldSpec};
use tokio_util::sync::CancellationToken;

/// Channels of the standard world the bot may not read.
pub const UNREADABLE: [&str; 4] = ["secret", "stale-perms", "deleted", "no-history"];

/// (id, content, edited_at) of one message, as the store writes them.
pub type Row = (u64, String, Option<String>);

pub fn standard_world() -> World {
    World::generate(&WorldSpec::standard())
}

/// Test limits: Discord's shape (5 per window per channel), a short window,
/// and archived-thread pages of 2 so that thread paging is exercised.
pub fn fast_limits() -> Limits {
    Limits { per_route: 5, window: Duration::from_millis(50), global_per_second: 1000, archived_page_size: 2 }
}

pub async fn start(world: World, limits: Limits) -> FakeDiscord {
    FakeDiscord::start(world, limits).await.expect("fake server starts")
}

/// A client with quick retries, pointed at the fake server.
pub fn client(fake: &FakeDiscord) -> Client {
    client_with_token(fake, &fake.token())
}

pub fn client_with_token(fake: &FakeDiscord, token: &str) -> Client {
    let mut o = ClientOptions::new(fake.base_url(), Token::new(token));
    o.retry_base = Duration::from_millis(10);
    o.retry_cap = Duration::from_millis(100);
    o.request_timeout = Duration::from_secs(10);
    // Fault plans hit requests by global count; with retries this generous no
    // interleaving of workers can make one channel fail every try.
    o.max_tries = 12;
    Client::new(o).expect("client builds")
}

pub fn guild_id(fake: &FakeDiscord) -> u64 {
    fake.world().guilds[0].id
}

pub async fn run_load(fake: &FakeDiscord, store: &Store, concurrency: usize) -> Result<LoadSummary, LoadError> {
    let options = LoadOptions { guilds: vec![guild_id(fake)], channels: vec![], concurrency };
    load::load(&client(fake), store, &options, &|_| {}, &CancellationToken::new()).await
}

/// A scratch directory holding a data directory (`data`, opened as `store`)
/// with `guild` loaded from `fake`, and a models directory (`models`) with a
/// tiny random BERT named `tiny`.
pub struct Loaded {
    pub _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub models: PathBuf,
    pub store: Store,
    pub guild: u64,
    pub fake: FakeDiscord,
}

/// Loads `world`'s first guild from a fake server and writes the tiny model.
pub async fn loaded(world: World) -> Loaded {
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = dir.path().join("models");
    let store = Store::open(&data).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    tiny::write(&models.join("tiny"), &TinySpec::default()).unwrap();
    Loaded { guild: guild_id(&fake), _dir: dir, data, models, store, fake }
}

/// What a complete load must store: every readable channel's messages.
pub fn ground_truth(world: &World) -> BTreeMap<u64, Vec<Row>> {
    let mut truth = BTreeMap::new();
    for g in &world.guilds {
        for c in &g.channels {
            if !channel_type::holds_messages(c.kind)
                || UNREADABLE.contains(&c.name.as_str())
                || c.access != Access::Open
            {
                continue;
            }
            let rows = c
                .messages
                .iter()
                .map(|m| {
                    (
                        m.id,
                        world.content(m),
                        m.edited_ms.map(|ms| snowflake::format_time(snowflake::timestamp(ms << 22))),
                    )
                })
                .collect();
            truth.insert(c.id, rows);
        }
    }
    truth
}

/// What the archive holds, in the same shape, read through the SQLite contract.
pub fn stored(db: &Path) -> BTreeMap<u64, Vec<Row>> {
    let conn = rusqlite::Connection::open(db).expect("archive opens");
    let mut stmt =
        conn.prepare("SELECT channel_id, id, content, edited_at FROM messages ORDER BY channel_id, id").unwrap();
    let mut out: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?, r.get(3)?))
        })
        .unwrap();
    for row in rows {
        let (channel, id, content, edited) = row.unwrap();
        out.entry(channel).or_default().push((id, content, edited));
    }
    out
}

/// Every channel's checkpoint.
pub fn checkpoints(db: &Path) -> BTreeMap<u64, u64> {
    let conn = rusqlite::Connection::open(db).expect("archive opens");
    let mut stmt = conn.prepare("SELECT channel_id, last_message_id FROM checkpoints").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// The invariant a crash must never break: each channel holds exactly the
/// ground truth up to its checkpoint, no more, no less, no duplicates.
pub fn assert_prefix_consistent(db: &Path, truth: &BTreeMap<u64, Vec<Row>>) {
    let stored = stored(db);
    let checkpoints = checkpoints(db);
    for (channel, rows) in &stored {
        let cp = checkpoints.get(channel).copied().unwrap_or(0);
        let expected: Vec<Row> = truth[channel].iter().filter(|r| r.0 <= cp).cloned().collect();
        assert_eq!(rows, &expected, "channel {channel} is not exactly the history up to its checkpoint {cp}");
    }
    for (channel, cp) in &checkpoints {
        if *cp > 0 {
            assert!(stored.contains_key(channel), "checkpoint {cp} for channel {channel} without messages");
        }
    }
}

/// `models/all-MiniLM-L6-v2` when installed (`scripts/fetch-model.sh`). When it
/// is not, the test says it is skipped, unless REQUIRE_MODELS is set (CI), which
/// makes a missing model a failure.
pub fn installed_minilm(test: &str) -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("REQUIRE_MODELS").is_none(),
        "models/all-MiniLM-L6-v2 is missing but REQUIRE_MODELS is set"
    );
    eprintln!("SKIPPED {test}: run scripts/fetch-model.sh all-MiniLM-L6-v2");
    None
}

/// A tmpfs of `size` at a new temporary directory, unmounted when dropped;
/// None where mounting is not permitted (not root).
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn mount(size: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    pub fn resize(&self, size: u64) {
        self.remount(&format!("remount,size={size}"));
    }

    /// Remounts with these options (`remount,ro`, `remount,rw`).
    pub fn remount(&self, options: &str) {
        let ok = std::process::Command::new("mount").args(["-o", options]).arg(self.0.path()).status();
        assert!(ok.unwrap().success(), "mount -o {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// Runs a command off the async runtime: its exit code, stdout and stderr.
pub async fn run(mut c: std::process::Command) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
