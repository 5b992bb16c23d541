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
/// tiny random BERT named `tiny`; its vectors in the embedded store, or on
/// `qdrant` when there is one ([`Loaded::on_server`]).
pub struct Loaded {
    pub _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub models: PathBuf,
    pub store: Store,
    pub guild: u64,
    pub fake: FakeDiscord,
    pub qdrant: Option<QdrantServer>,
    /// With `qdrant`: the collection layout (`[qdrant] layout`).
    pub layout: discord_indexer::vector::Layout,
}

impl Loaded {
    /// The same, its vectors on a Qdrant server of its own; None (the test
    /// is skipped) without a server binary ([`QdrantServer::binary`]).
    pub async fn on_server(mut self, test: &str) -> Option<Loaded> {
        self.qdrant = Some(QdrantServer::start(test).await?);
        Some(self)
    }

    /// [`Loaded::on_server`], in the layout where guilds share collections.
    pub async fn on_shared_server(self, test: &str) -> Option<Loaded> {
        let mut s = self.on_server(test).await?;
        s.layout = discord_indexer::vector::Layout::Shared;
        std::fs::write(s._dir.path().join("shared.toml"), "[qdrant]\nlayout = \"shared\"\n").unwrap();
        Some(s)
    }

    /// The server's URL when the vectors live on one.
    pub fn qdrant_url(&self) -> Option<String> {
        self.qdrant.as_ref().map(QdrantServer::url)
    }

    /// The vector backend the test's vectors live in.
    pub fn backend(&self) -> discord_indexer::vector::Backend {
        let options = discord_indexer::vector::ServerOptions { layout: self.layout, ..Default::default() };
        discord_indexer::vector::Backend::with_options(&self.data, self.qdrant_url().as_deref(), None, options).unwrap()
    }

    /// The binary, pointed at this data directory, models directory and
    /// vector backend (QDRANT_URL set or removed), without a Discord token.
    pub fn cli(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
        match self.qdrant_url() {
            Some(url) => c.env("QDRANT_URL", url),
            None => c.env_remove("QDRANT_URL"),
        };
        if self.layout == discord_indexer::vector::Layout::Shared {
            c.arg("--config").arg(self._dir.path().join("shared.toml"));
        }
        c.env_remove("QDRANT_API_KEY")
            .env_remove("DISCORD_TOKEN")
            .env("DISCORD_INDEXER_MODELS_DIR", &self.models)
            .arg("--data-dir")
            .arg(&self.data);
        c
    }
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
    Loaded { guild: guild_id(&fake), _dir: dir, data, models, store, fake, qdrant: None, layout: Default::default() }
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

/// A real Qdrant server started for one test: its own free loopback ports and
/// a temporary storage folder; killed when dropped. The binary is found as
/// `scripts/qdrant-server.sh` finds it (QDRANT_BIN, ../shared/qdrant/qdrant
/// beside the checkout, `qdrant` on the PATH).
pub struct QdrantServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub http: u16,
    pub grpc: u16,
    /// In a cluster: this node's peer-to-peer port, and the first node's (to join).
    p2p: Option<(u16, Option<u16>)>,
    child: Option<std::process::Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl QdrantServer {
    /// The server binary, or None (the test says it is skipped) unless
    /// REQUIRE_QDRANT is set (CI, when a binary is at hand), which makes a
    /// missing one a failure.
    pub fn binary(test: &str) -> Option<PathBuf> {
        let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/qdrant/qdrant");
        let on_path = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("qdrant")).find(|f| f.is_file()));
        let found =
            std::env::var_os("QDRANT_BIN").map(PathBuf::from).or(beside.is_file().then_some(beside)).or(on_path);
        if found.is_none() {
            assert!(std::env::var_os("REQUIRE_QDRANT").is_none(), "no Qdrant server binary, but REQUIRE_QDRANT is set");
            eprintln!("SKIPPED {test}: no Qdrant server binary (set QDRANT_BIN; see scripts/qdrant-server.sh)");
        }
        found
    }

    /// A server that answers, or None when there is no binary ([`Self::binary`]).
    pub async fn start(test: &str) -> Option<QdrantServer> {
        let bin = Self::binary(test)?;
        Some(Self::node(bin, None).await)
    }

    /// A node on free ports; tried again on other ports should one of them
    /// be taken between finding it free and the server binding it.
    async fn node(bin: PathBuf, p2p: Option<(u16, Option<u16>)>) -> QdrantServer {
        let mut last = String::new();
        for _ in 0..3 {
            let (http, grpc) = (free_port(), free_port());
            let mut server =
                QdrantServer { bin: bin.clone(), dir: tempfile::tempdir().unwrap(), http, grpc, p2p, child: None };
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// A cluster of `n` nodes on loopback (peer to peer), every node a
    /// member and a leader elected; None without a binary.
    pub async fn cluster(test: &str, n: usize) -> Option<Vec<QdrantServer>> {
        let bin = Self::binary(test)?;
        let first = free_port();
        let mut nodes = vec![Self::node(bin.clone(), Some((first, None))).await];
        for _ in 1..n {
            nodes.push(Self::node(bin.clone(), Some((free_port(), Some(first)))).await);
        }
        let url = format!("http://127.0.0.1:{}/cluster", nodes[0].http);
        for _ in 0..600 {
            let state: Option<serde_json::Value> = match reqwest::get(&url).await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let r = state.as_ref().map(|s| &s["result"]);
            if r.is_some_and(|r| {
                r["peers"].as_object().is_some_and(|p| p.len() == n) && !r["raft_info"]["leader"].is_null()
            }) {
                return Some(nodes);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the cluster of {n} did not form in 30 s");
    }

    /// The gRPC URL discord-indexer is given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Ends the server at once (SIGKILL), as a crash or a lost machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same ports and storage, and waits
    /// until it answers.
    pub async fn restart(&mut self) {
        if let Err(e) = self.launch().await {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it answers; why not, else.
    async fn launch(&mut self) -> Result<(), String> {
        self.kill();
        let storage = self.dir.path().join("storage");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        let mut command = std::process::Command::new(&self.bin);
        if let Some((p2p, first)) = self.p2p {
            command.env("QDRANT__CLUSTER__ENABLED", "true").env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string());
            command.arg(format!("--uri=http://127.0.0.1:{p2p}"));
            if let Some(first) = first {
                command.arg(format!("--bootstrap=http://127.0.0.1:{first}"));
            }
        }
        let child = command
            .current_dir(self.dir.path())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", &storage)
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", self.dir.path().join("snapshots"))
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the Qdrant server starts");
        self.child = Some(child);
        let ready = format!("http://127.0.0.1:{}/readyz", self.http);
        for _ in 0..600 {
            if reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
                return Err(format!("the Qdrant server exited ({status}): {log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the Qdrant server did not answer in 30 s".into())
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        self.kill();
    }
}
