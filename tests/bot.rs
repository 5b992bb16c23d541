//! The bot end to end: the real `bot::run` (poise, serenity's gateway and
//! HTTP clients) against the fake server's gateway and REST API, with a real
//! archive, real qdrant-edge collections and a real (tiny) BERT model.
//! Slash commands arrive as INTERACTION_CREATE; the tests read what the bot
//! sent back from the fake server's record.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use discord_indexer::bot::{self, BotOptions};
use discord_indexer::config::Settings;
use discord_indexer::discord::Token;
use discord_indexer::embed::tiny::{self, TinySpec};
use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::index::{self, IndexOptions};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;
use fake_discord::{AccessCast, FakeDiscord, Fault, FaultKind, Invocation, Sent, World, WorldSpec};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::search::matrix;
use crate::util::*;

/// Generous: these are upper bounds for conditions that become true, not sleeps.
const PATIENCE: Duration = Duration::from_secs(90);

struct Harness {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    models: PathBuf,
    fake: FakeDiscord,
    guild: u64,
    cast: AccessCast,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Harness {
    /// A test that fails leaves the bot running until its runtime ends:
    /// keep the data directory for it (and for whoever reads the failure),
    /// so that its store still has a disk to flush to.
    fn drop(&mut self) {
        self.stop.cancel();
        if self.task.is_some() && std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("the bot was still running; its data is kept in {}", dir.keep().display());
            }
        }
    }
}

/// A world with the permission matrix and a staff-only secret, served by the fake server.
async fn world_with_secret() -> (FakeDiscord, AccessCast) {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let staff_room = world.guilds[0].channel_named("staff-room").id;
    world.post(staff_room, cast.staff, "the zanzibar vault combination is kept in the blue binder");
    (start(world, fast_limits()).await, cast)
}

impl Harness {
    /// An empty archive and two tiny models; no bot yet.
    async fn new() -> Harness {
        let (fake, cast) = world_with_secret().await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let models = dir.path().join("models");
        tiny::write(&models.join("tiny"), &TinySpec::default()).unwrap();
        tiny::write(&models.join("tiny-b"), &TinySpec { seed: 11, ..TinySpec::default() }).unwrap();
        let guild = guild_id(&fake);
        Harness { dir: Some(dir), data, models, fake, guild, cast, stop: CancellationToken::new(), task: None }
    }

    /// A loaded and indexed archive with the bot running on the default test options.
    async fn indexed_with_bot() -> Harness {
        let mut h = Harness::new().await;
        h.preload().await;
        h.start_bot(options()).await;
        h
    }

    /// Loads and indexes (tiny, active) through the library, as the CLI would have.
    async fn preload(&self) {
        let store = Store::open(&self.data).unwrap();
        assert!(run_load(&self.fake, &store, 4).await.unwrap().ok);
        let embedder =
            Arc::new(Embedder::load(ModelInfo::find(&self.models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
        let mut options = IndexOptions::new(self.guild);
        options.activate = true;
        let backend = Backend::new(&self.data, None, None).unwrap();
        index::index(&store, &backend, embedder, &options, &|_| {}, &CancellationToken::new()).await.unwrap();
    }

    fn settings(&self) -> Settings {
        let config = self.data.with_file_name("empty.toml");
        std::fs::write(&config, "").unwrap();
        let mut s = Settings::resolve(Some(&config), Some(self.data.clone()), None).unwrap();
        s.token = Some(Token::new(self.fake.token()));
        s.api_base = self.fake.base_url();
        s.index.models_dir = self.models.clone();
        s.index.model = "tiny".into();
        s.load.concurrency = 4;
        s
    }

    /// Starts the bot and waits until it has registered its commands and
    /// finished the catch-up every new session begins with (`/status` says
    /// when no job runs).
    async fn start_bot(&mut self, options: BotOptions) {
        self.start_bot_with(options, self.settings()).await;
    }

    /// [`start_bot`](Self::start_bot) with these settings.
    async fn start_bot_with(&mut self, options: BotOptions, settings: Settings) {
        self.stop = CancellationToken::new();
        let before = self.fake.registered_commands().len();
        self.task = Some(tokio::spawn(bot::run(settings, options, self.stop.clone())));
        wait_for("the bot registers its commands", || {
            (self.fake.registered_commands().len() > before || self.fake.registered_command_id("ask").is_some())
                .then_some(())
        })
        .await;
        let general = self.channel("general");
        let started = Instant::now();
        loop {
            let (text, _) = self
                .command(Invocation::in_channel(self.cast.plain, general, "status", &[]), |t| {
                    t.to_lowercase().contains("running")
                })
                .await;
            if text.contains("No job running") {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "the catch-up never finished: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the bot; it must have answered every command without an error of its own.
    async fn stop_bot(&mut self) {
        let errors: Vec<String> = self.fake.sent().iter().map(Sent::text).filter(|t| t.starts_with("Sorry,")).collect();
        assert!(errors.is_empty(), "the bot answered with errors: {errors:?}");
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(PATIENCE, task).await.expect("the bot stops").unwrap();
            result.expect("the bot stopped cleanly");
        }
    }

    fn db(&self) -> PathBuf {
        self.data.join("archive.db")
    }

    fn channel(&self, name: &str) -> u64 {
        self.fake.world().guilds[0].channel_named(name).id
    }

    /// Invokes a command and waits for a reply under its token whose text satisfies `done`.
    async fn command(&self, inv: Invocation, done: impl Fn(&str) -> bool) -> (String, Vec<Sent>) {
        let token = self.fake.invoke(&inv);
        let what = format!("/{} by {} to finish", inv.command, inv.user);
        let started = Instant::now();
        let text = loop {
            if let Some(t) = self.all_replies(&token).into_iter().map(|s| s.text()).find(|t| done(t)) {
                break t;
            }
            // The bot's own errors ("Sorry, /x failed: ...") are never what a test waits for.
            if let Some(failed) = self.all_replies(&token).iter().map(Sent::text).find(|t| t.starts_with("Sorry,")) {
                panic!("{what}: the bot answered with an error: {failed}");
            }
            let so_far: Vec<String> = self.all_replies(&token).iter().map(Sent::text).collect();
            assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}; replies so far: {so_far:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (text, self.all_replies(&token))
    }

    /// What was sent under an interaction token, plus channel messages the
    /// bot continued in from it (long jobs).
    fn all_replies(&self, token: &str) -> Vec<Sent> {
        let mine = self.fake.replies(token);
        let continued: Vec<u64> = self
            .fake
            .sent()
            .into_iter()
            .filter(|s| s.method == "POST" && s.channel.is_some() && s.token.is_none())
            .filter_map(|s| s.message_id)
            .collect();
        let mut out = mine;
        out.extend(self.fake.sent().into_iter().filter(|s| s.message_id.is_some_and(|m| continued.contains(&m))));
        out
    }

    fn ask(&self, user: u64, question: &str) -> Invocation {
        Invocation::dm(user, "ask", &[("question", json!(question))])
    }
}

/// The real binary, pointed at the harness's fake server, archive and models.
fn cli(h: &Harness, args: &[&str]) -> std::process::Command {
    cli_at(h, &h.data, args)
}

/// [`cli`] with another archive.
fn cli_at(h: &Harness, data: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
    c.env_remove("QDRANT_URL")
        .env("DISCORD_TOKEN", h.fake.token())
        .env("DISCORD_API_BASE", h.fake.base_url())
        .env("DISCORD_INDEXER_MODELS_DIR", &h.models)
        .args(["--data-dir", data.to_str().unwrap()])
        .args(args);
    c
}

/// A `discord-indexer bot` process; killed if a test ends before it exits.
struct BotProcess {
    child: std::process::Child,
    stderr: PathBuf,
}

impl BotProcess {
    fn spawn(h: &Harness, name: &str) -> BotProcess {
        BotProcess::spawn_with(h, name, &[])
    }

    /// [`BotProcess::spawn`] with these environment variables.
    fn spawn_with(h: &Harness, name: &str, env: &[(&str, &str)]) -> BotProcess {
        let (out, err) = (h.data.with_file_name(format!("{name}.out")), h.data.with_file_name(format!("{name}.err")));
        // Files, not pipes: nothing reads a pipe while the bot runs.
        let child = cli(h, &["bot"])
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        BotProcess { child, stderr: err }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn terminate(&self) {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
    }

    /// Its exit code and stderr once it exits, which must be within `bound`
    /// (a bound for something that happens, not a sleep).
    async fn exit_within(&mut self, bound: Duration, what: &str) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.stderr());
            }
            if started.elapsed() > bound {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: still running after {bound:?}; stderr:\n{}", tail(&self.stderr()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str) -> String {
    text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect()
}

/// How long a stopped or refused bot may take to exit: generous, an upper bound.
const PROMPTLY: Duration = Duration::from_secs(20);

fn options() -> BotOptions {
    BotOptions {
        progress_every: Duration::from_millis(100),
        ask_cooldown: Duration::ZERO,
        // Tests run stage two on demand (/index), not on the timer, and not
        // live (but the tests of live indexing).
        index_every: Duration::from_secs(3600),
        live_delay: None,
        ..BotOptions::default()
    }
}

/// Polls `f` until it gives a value (every 50 ms, up to [`PATIENCE`]).
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The channel ids in the jump links of an answer.
fn linked_channels(text: &str, guild: u64) -> BTreeSet<u64> {
    let prefix = format!("https://discord.com/channels/{guild}/");
    text.split(&prefix).skip(1).filter_map(|rest| rest.split('/').next()?.parse().ok()).collect()
}

fn ephemeral(sent: &[Sent]) -> bool {
    sent.iter().any(|s| s.body["data"]["flags"].as_u64().is_some_and(|f| f & 64 != 0))
}

fn message_row(db: &Path, id: u64) -> Option<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT content, edited_at FROM messages WHERE id = ?1", [id as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok()
}

fn checkpoint(db: &Path, channel: u64) -> u64 {
    checkpoints(db).get(&channel).copied().unwrap_or(0)
}

fn is_answer(t: &str) -> bool {
    t.contains("Results for") || t.contains("Nothing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ask_in_a_dm_answers_each_user_with_only_what_they_may_read() {
    let mut h = Harness::indexed_with_bot().await;
    let names: std::collections::HashMap<u64, String> =
        h.fake.world().guilds[0].channels.iter().map(|c| (c.id, c.name.clone())).collect();
    let staff_room = h.channel("staff-room");

    for (who, user, readable) in matrix(&h.cast) {
        let (text, _) = h.command(h.ask(user, "zanzibar vault combination"), is_answer).await;
        let linked = linked_channels(&text, h.guild);
        for c in &linked {
            assert!(
                readable.contains(names[c].as_str()),
                "{who} was shown #{} which they may not read:\n{text}",
                names[c]
            );
        }
        let may_see_secret = readable.contains("staff-room");
        assert_eq!(
            text.contains("blue binder"),
            may_see_secret,
            "{who}: the staff-only answer must be found exactly when they may read it:\n{text}"
        );
        if may_see_secret {
            assert!(linked.contains(&staff_room), "{who}: the jump link leads to #staff-room:\n{text}");
        }
        if readable.is_empty() {
            assert!(text.contains("Nothing you can read matches"), "{who}: {text}");
        } else {
            assert!(!linked.is_empty(), "{who} gets results with jump links:\n{text}");
        }
    }

    // In a server channel /ask is refused, privately, and nothing is searched.
    let general = h.channel("general");
    let inv = Invocation::in_channel(h.cast.admin, general, "ask", &[("question", json!("zanzibar vault"))]);
    let (text, sent) = h.command(inv, |t| t.contains("direct message")).await;
    assert!(!text.contains("blue binder"));
    assert!(ephemeral(&sent), "the refusal is only shown to the asker");

    // A server the user does not name exactly is a clear answer.
    let inv = Invocation::dm(h.cast.plain, "ask", &[("question", json!("anything")), ("server", json!("nope"))]);
    let (text, _) = h.command(inv, |t| t.contains("No indexed server")).await;
    assert!(text.contains("nope"));
    // ... the same as for a server the user is not in (nobody can probe which servers are indexed).
    let name = h.fake.world().guilds[0].name.clone();
    let inv = Invocation::dm(h.cast.outsider, "ask", &[("question", json!("zanzibar")), ("server", json!(name))]);
    let (text, _) = h.command(inv, |t| t.contains("No indexed server")).await;
    assert_eq!(text, format!("No indexed server you are in is called {name}."));
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_and_reindex_need_manage_server_and_report_to_the_end() {
    let mut h = Harness::new().await;
    h.start_bot(options()).await;
    let general = h.channel("general");
    let registered = h.fake.registered_commands();
    let commands = registered[0].1.as_array().unwrap().clone();
    for name in ["load", "index", "reindex"] {
        let c = commands.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["default_member_permissions"], json!("32"), "/{name} is declared for Manage Server");
    }
    let ask = commands.iter().find(|c| c["name"] == "ask").unwrap();
    assert_eq!(ask["contexts"], json!([1]), "/ask is registered for DMs only");

    // Without Manage Server: refused, and nothing is loaded.
    let (text, sent) =
        h.command(Invocation::in_channel(h.cast.plain, general, "load", &[]), |t| t.contains("Manage Server")).await;
    assert!(text.contains("/load needs the Manage Server permission"), "{text}");
    assert!(ephemeral(&sent));
    let (text, _) = h
        .command(Invocation::in_channel(h.cast.staff, general, "reindex", &[("model", json!("tiny-b"))]), |t| {
            t.contains("Manage Server")
        })
        .await;
    assert!(text.contains("/reindex needs"), "{text}");
    assert!(Store::open(&h.data).unwrap().guilds().unwrap().is_empty(), "a refused /load stores nothing");

    // With it: the load runs in the background; a second /load meanwhile is told so.
    h.fake.set_faults(vec![Fault { path_contains: Some("/messages".into()), ..Fault::always(FaultKind::Hold) }]);
    let first = h.fake.invoke(&Invocation::in_channel(h.cast.admin, general, "load", &[]));
    wait_for("the load to reach the messages", || (h.fake.held() > 0).then_some(())).await;
    let (text, sent) =
        h.command(Invocation::in_channel(h.cast.owner, general, "load", &[]), |t| t.contains("already running")).await;
    assert!(text.starts_with("A load of this server is already running"), "{text}");
    assert!(ephemeral(&sent));
    h.fake.set_faults(vec![]);
    h.fake.release_held();
    let done = wait_for("the load's final summary", || {
        h.all_replies(&first).into_iter().map(|s| s.text()).find(|t| t.starts_with("Load finished"))
    })
    .await;
    assert!(done.contains("new messages"), "{done}");
    let edits = h.all_replies(&first).iter().filter(|s| s.method == "PATCH").count();
    assert!(edits >= 1, "the progress message is edited in place");
    assert_eq!(stored(&h.db()), ground_truth(&h.fake.world()), "the load stored every readable message");

    // Model choices come from the installed models, as the user types.
    let token = h.fake.invoke(&Invocation::autocomplete(h.cast.admin, general, "reindex", "model", "tin"));
    let choices = wait_for("autocomplete choices", || {
        h.fake.replies(&token).into_iter().find(|s| s.body["type"] == 8).map(|s| s.body["data"]["choices"].clone())
    })
    .await;
    let names: Vec<&str> = choices.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tiny", "tiny-b"]);

    // /index builds the first index (active); /reindex builds another model's and switches.
    let (text, _) = h
        .command(Invocation::in_channel(h.cast.admin, general, "index", &[]), |t| t.starts_with("Index finished"))
        .await;
    assert!(text.contains("chunks searchable with tiny (active)"), "{text}");
    let (text, _) = h
        .command(Invocation::in_channel(h.cast.admin, general, "reindex", &[("model", json!("tiny-b"))]), |t| {
            t.starts_with("Index finished")
        })
        .await;
    assert!(text.contains("with tiny-b (switched from tiny)"), "{text}");
    assert_eq!(Store::open(&h.data).unwrap().active_model(h.guild).unwrap().as_deref(), Some("tiny-b"));
    let (text, _) = h
        .command(Invocation::in_channel(h.cast.admin, general, "reindex", &[("model", json!("no-such-model"))]), |t| {
            t.contains("Cannot use model")
        })
        .await;
    assert!(text.contains("no-such-model"), "{text}");

    // /status says what is there, for anyone in the server.
    let (text, _) =
        h.command(Invocation::in_channel(h.cast.plain, general, "status", &[]), |t| t.contains("Archive")).await;
    assert!(text.contains("tiny-b (active)") && text.contains("No job running"), "{text}");
    // Times as Discord's timestamp markup, shown in each reader's own time zone.
    assert!(text.contains("updated <t:") && !text.contains("T0") && !text.contains("Z."), "{text}");
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_jobs_continue_in_a_channel_message() {
    let mut h = Harness::new().await;
    h.preload().await;
    // As if every interaction token had expired at once; commands registered in the guild only.
    h.start_bot(BotOptions { interaction_ttl: Duration::ZERO, dev_guild: Some(h.guild), ..options() }).await;
    let registered: Vec<u64> = h.fake.registered_commands().iter().map(|(g, _)| *g).collect();
    assert_eq!(registered, [h.guild], "--dev-guild registers in that guild, not globally");
    let general = h.channel("general");
    let token = h.fake.invoke(&Invocation::in_channel(h.cast.admin, general, "load", &[]));
    let done = wait_for("the summary in a channel message", || {
        h.fake
            .sent()
            .into_iter()
            .filter(|s| s.channel == Some(general) && s.token.is_none())
            .map(|s| s.text())
            .find(|t| t.starts_with("Load finished"))
    })
    .await;
    assert!(done.contains("0 new messages"), "already loaded: {done}");
    // The pointer is written once the channel message exists, so after it.
    wait_for("the original response to point to the channel message", || {
        h.fake.replies(&token).iter().map(Sent::text).any(|t| t.contains("progress continues in")).then_some(())
    })
    .await;
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_messages_reach_the_archive_and_then_search() {
    let mut h = Harness::indexed_with_bot().await;
    let general = h.channel("general");
    let db = h.db();

    let id = h.fake.post_message(general, h.cast.plain, "the quokka deployment runbook lives in the wiki");
    wait_for("the new message in SQLite", || message_row(&db, id)).await;
    wait_for("the checkpoint to cover it", || (checkpoint(&db, general) == id).then_some(())).await;

    h.fake.edit_message(general, id, "the quokka deployment runbook moved to the handbook");
    let (content, edited) =
        wait_for("the edit in SQLite", || message_row(&db, id).filter(|(c, _)| c.contains("handbook"))).await;
    assert!(content.ends_with("handbook") && edited.is_some());

    // A direct message to the bot is never stored.
    let dm = json!({"id": (id + 7).to_string(), "channel_id": "99", "author": {"id": h.cast.plain.to_string(),
        "username": "someone", "discriminator": "0", "avatar": null}, "content": "quokka secrets by DM",
        "timestamp": "2026-11-22T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
        "pinned": false, "type": 0});
    h.fake.dispatch("MESSAGE_CREATE", dm);
    let later = h.fake.post_message(general, h.cast.staff, "unrelated chatter");
    wait_for("a later message", || message_row(&db, later)).await;
    assert!(message_row(&db, id + 7).is_none(), "DMs are not stored");

    // A new thread is picked up with its first messages, and followed live.
    let before = h.fake.request_count();
    let thread = h.fake.start_thread(general, h.cast.plain, "quokka questions");
    let first = h.fake.post_message(thread, h.cast.plain, "does the quokka runbook cover rollbacks?");
    wait_for("the new thread's first message in SQLite", || message_row(&db, first)).await;
    wait_for("the new thread's checkpoint", || (checkpoint(&db, thread) == first).then_some(())).await;
    let archive_walks =
        h.fake.requests().iter().filter(|r| r.seq > before && r.path.contains("/threads/archived")).count();
    assert_eq!(archive_walks, 0, "a new thread is loaded without listing every archived thread");
    let second = h.fake.post_message(thread, h.cast.staff, "it does, section four");
    wait_for("a live reply in the new thread", || message_row(&db, second)).await;
    wait_for("... and its checkpoint", || (checkpoint(&db, thread) == second).then_some(())).await;

    // After stage two catches up (/index), search finds the edited text.
    let admin_index = || Invocation::in_channel(h.cast.admin, general, "index", &[]);
    h.command(admin_index(), |t| t.starts_with("Index finished")).await;
    let (text, _) = h.command(h.ask(h.cast.plain, "quokka deployment runbook handbook"), is_answer).await;
    assert!(text.contains("moved to the handbook"), "{text}");
    assert!(!text.contains("quokka secrets"), "{text}");

    h.fake.delete_message(general, id);
    wait_for("the delete in SQLite", || message_row(&db, id).is_none().then_some(())).await;
    h.command(admin_index(), |t| t.starts_with("Index finished")).await;
    let (text, _) = h.command(h.ask(h.cast.plain, "quokka deployment runbook handbook"), is_answer).await;
    assert!(!text.contains("runbook moved"), "a deleted message is not found any more:\n{text}");
    h.stop_bot().await;
}

/// The value Discord sends for the choice `name` of a command's option, as
/// the bot registered it.
fn choice(h: &Harness, command: &str, option: &str, name: &str) -> serde_json::Value {
    let commands = h.fake.registered_commands();
    let cmd = commands
        .iter()
        .flat_map(|(_, c)| c.as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == command)
        .unwrap_or_else(|| panic!("/{command} is registered"));
    let opt = cmd["options"].as_array().unwrap().iter().find(|o| o["name"] == option).unwrap().clone();
    let found = opt["choices"].as_array().unwrap().iter().find(|c| c["name"] == name).map(|c| c["value"].clone());
    found.unwrap_or_else(|| panic!("/{command} {option} offers {name}: {opt}"))
}

/// Asks (as `user`, in vector mode, within `channel`) until the answer
/// satisfies `done`; the answer.
async fn ask_until(
    h: &Harness,
    user: u64,
    channel: u64,
    question: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let ask = Invocation::dm(
            user,
            "ask",
            &[
                ("question", json!(question)),
                ("channel", json!(channel.to_string())),
                ("mode", choice(h, "ask", "mode", "vector")),
            ],
        );
        let (text, _) = h.command(ask, is_answer).await;
        if done(&text) {
            return text;
        }
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}; the last answer:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_indexing_finds_new_edited_and_deleted_messages_by_meaning_without_an_index_run() {
    let mut h = Harness::new().await;
    h.preload().await;
    // The timer is an hour away and no /index is run: only live indexing can do it.
    h.start_bot(BotOptions { live_delay: Some(Duration::from_millis(200)), ..options() }).await;
    let general = h.channel("general");
    let (status, _) =
        h.command(Invocation::in_channel(h.cast.plain, general, "status", &[]), |t| t.contains("Live")).await;
    assert!(status.contains("**Live indexing**: on"), "{status}");

    // A new thread: its first message comes with the thread's load, the rest live.
    let thread = h.fake.start_thread(general, h.cast.plain, "wombat logistics");
    let first = h.fake.post_message(thread, h.cast.plain, "the wombat convoy leaves from dock seven at dawn");
    let text = ask_until(&h, h.cast.plain, thread, "wombat convoy", "the new message, by vector search", |t| {
        t.contains("dock seven")
    })
    .await;
    assert!(text.contains("Results for"), "{text}");
    h.fake.post_message(thread, h.cast.staff, "marmot supplies wait in hangar two");
    ask_until(&h, h.cast.plain, thread, "marmot supplies", "a live reply", |t| t.contains("hangar two")).await;

    // An edit replaces the text that vector search finds.
    h.fake.edit_message(thread, first, "the wombat convoy now leaves from dock nine at noon");
    ask_until(&h, h.cast.plain, thread, "wombat convoy", "the edit", |t| {
        t.contains("dock nine") && !t.contains("dock seven")
    })
    .await;
    // A deletion: no search mode finds the message any more; its neighbour stays.
    h.fake.delete_message(thread, first);
    let text =
        ask_until(&h, h.cast.plain, thread, "wombat convoy dock", "the deletion", |t| !t.contains("dock nine")).await;
    assert!(text.contains("hangar two"), "the rest of the thread is still found:\n{text}");
    for mode in ["keyword", "hybrid"] {
        let ask = Invocation::dm(
            h.cast.plain,
            "ask",
            &[("question", json!("wombat convoy dock nine")), ("mode", choice(&h, "ask", "mode", mode))],
        );
        let (text, _) = h.command(ask, is_answer).await;
        assert!(!text.contains("leaves from dock nine"), "{mode}: a deleted message is not found:\n{text}");
    }

    // A burst, and a command that needs the guild's slot meanwhile: a live
    // run gives way to it rather than answering "busy".
    for i in 0..150 {
        h.fake.post_message(general, h.cast.staff, &format!("burst line {i} about the numbat rollout"));
    }
    let admin_index = Invocation::in_channel(h.cast.admin, general, "index", &[]);
    h.command(admin_index, |t| t.starts_with("Index finished")).await;
    let (status, _) =
        h.command(Invocation::in_channel(h.cast.plain, general, "status", &[]), |t| t.contains("Live")).await;
    assert!(status.contains("changes") && status.contains("runs"), "live indexing counts its work:\n{status}");

    // Once the live runs are done, a full `index` finds nothing left to do.
    let db = h.db();
    wait_for("every burst line in SQLite", || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM messages WHERE content LIKE 'burst line %'", [], |r| r.get(0))
            .unwrap();
        (n == 150).then_some(())
    })
    .await;
    let started = Instant::now();
    loop {
        let (text, _) = h
            .command(Invocation::in_channel(h.cast.plain, general, "status", &[]), |t| {
                t.to_lowercase().contains("running")
            })
            .await;
        if text.contains("No job running") && !text.contains("not indexed yet") {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "live indexing never caught up with the burst: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.stop_bot().await;
    let store = Store::open(&h.data).unwrap();
    let embedder =
        Arc::new(Embedder::load(ModelInfo::find(&h.models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
    let backend = Backend::new(&h.data, None, None).unwrap();
    let s = index::index(&store, &backend, embedder, &IndexOptions::new(h.guild), &|_| {}, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((s.embedded, s.deleted, s.repaired), (0, 0, 0), "live indexing left nothing undone: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_made_private_is_hidden_from_the_next_ask_not_after_the_permissions_age() {
    let mut h = Harness::indexed_with_bot().await;
    let general = h.channel("general");
    let id = h.fake.post_message(general, h.cast.staff, "the narwhal budget spreadsheet lives on the shared drive");
    wait_for("the message in SQLite", || message_row(&h.db(), id)).await;
    h.command(Invocation::in_channel(h.cast.admin, general, "index", &[]), |t| t.starts_with("Index finished")).await;
    let keyword = |h: &Harness| {
        Invocation::dm(
            h.cast.plain,
            "ask",
            &[("question", json!("narwhal budget spreadsheet")), ("mode", choice(h, "ask", "mode", "keyword"))],
        )
    };
    let (text, _) = h.command(keyword(&h), is_answer).await;
    assert!(text.contains("shared drive"), "a member reads #general:\n{text}");

    // Someone hides #general from @everyone. The stored permissions are a
    // minute old, well within the allowed age (10 minutes): without the
    // event, search would still use them.
    let everyone = discord_indexer::permissions::Overwrite {
        id: h.guild,
        kind: discord_indexer::permissions::OverwriteKind::Role,
        allow: 0,
        deny: discord_indexer::permissions::VIEW_CHANNEL,
    };
    h.fake.set_overwrites(general, vec![everyone]);
    let started = Instant::now();
    loop {
        let (text, _) = h.command(keyword(&h), is_answer).await;
        if !text.contains("shared drive") {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "#general is still shown after it was made private:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bot_killed_during_a_live_index_run_resumes_exact() {
    let h = Harness::new().await;
    h.preload().await;
    let general = h.channel("general");
    // The first live run aborts the process right after storing its points,
    // before the manifest records them: the worst moment.
    let mut bot = BotProcess::spawn_with(&h, "crashing", &[("DISCORD_INDEXER_FAILPOINT", "index-after-upsert:1")]);
    let db = h.db();
    wait_for("the bot process registers its commands", || h.fake.registered_command_id("ask")).await;
    for i in 0..20 {
        h.fake.post_message(general, h.cast.plain, &format!("echidna survey note {i}: the burrows face north"));
    }
    let (code, stderr) = bot.exit_within(PATIENCE, "the crash at the failpoint").await;
    assert_ne!(code, Some(0), "the bot crashed:\n{}", tail(&stderr));
    assert!(stderr.contains("failpoint index-after-upsert:1"), "{}", tail(&stderr));

    // A rerun of stage two ends with what an uninterrupted run stores.
    let guild = h.guild.to_string();
    let index = |data: &Path, rebuild: bool| -> serde_json::Value {
        let mut args = vec!["index", "--guild", &guild, "--model", "tiny", "--json"];
        if rebuild {
            args.push("--rebuild");
        }
        let out = cli_at(&h, data, &args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // One summary per guild.
        v.as_array().map_or(v.clone(), |a| a[0].clone())
    };
    let resumed = index(&h.data, false);
    assert!(resumed["embedded"].as_u64().unwrap() > 0, "the rerun stored what the crash lost: {resumed}");
    let fresh_dir = h.data.with_file_name("fresh");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    let fresh_db = fresh_dir.join("archive.db");
    rusqlite::Connection::open(&db).unwrap().execute("VACUUM INTO ?1", [fresh_db.to_str().unwrap()]).unwrap();
    let fresh = index(&fresh_dir, true);
    assert_eq!(resumed["points"], fresh["points"], "as many points as a fresh build: {resumed} {fresh}");
    let manifest = |db: &Path| -> Vec<(i64, i64)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut q =
            conn.prepare("SELECT chunk_id, hash FROM index_chunks WHERE model = 'tiny' ORDER BY chunk_id").unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let chunks = manifest(&db);
    assert_eq!(chunks, manifest(&fresh_db), "the same chunks as a fresh build");
    assert!(chunks.len() > 1, "chunks were compared");
    assert_eq!(index(&h.data, false)["embedded"], 0, "and nothing is left to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bot_resumes_after_a_dropped_connection_and_catches_up_after_a_lost_session() {
    let mut h = Harness::indexed_with_bot().await;
    let general = h.channel("general");
    let db = h.db();
    let identifies = || h.fake.gateway_received().iter().filter(|p| p["op"] == 2).count();
    let resumes = || h.fake.gateway_received().iter().filter(|p| p["op"] == 6).count();
    assert_eq!(identifies(), 1);

    // The server drops the connection; events meanwhile are replayed on RESUME.
    h.fake.close_gateway(4000);
    let during = h.fake.post_message(general, h.cast.plain, "posted while the connection was down");
    wait_for("a RESUME", || (resumes() >= 1).then_some(())).await;
    wait_for("the replayed message in SQLite", || message_row(&db, during)).await;
    assert_eq!(identifies(), 1, "resumed, not a new session");

    // The session is lost: what happened meanwhile only a load can recover.
    h.fake.invalidate_gateway_sessions();
    h.fake.close_gateway(4000);
    let unseen = h.fake.post_message_unseen(general, h.cast.staff, "posted while the bot had no session");
    let thread = h.channel("release planning");
    let unseen_in_thread = h.fake.post_message_unseen(thread, h.cast.plain, "a thread reply nobody streamed");
    wait_for("a new IDENTIFY", || (identifies() >= 2).then_some(())).await;
    wait_for("the catch-up to recover the gap", || message_row(&db, unseen)).await;
    wait_for("... in threads too", || message_row(&db, unseen_in_thread)).await;
    wait_for("checkpoints at the newest messages", || {
        (checkpoint(&db, general) == unseen && checkpoint(&db, thread) == unseen_in_thread).then_some(())
    })
    .await;

    // And live capture goes on in the new session.
    let after = h.fake.post_message(general, h.cast.plain, "back to normal");
    wait_for("a live message in the new session", || message_row(&db, after)).await;
    wait_for("its checkpoint", || (checkpoint(&db, general) == after).then_some(())).await;
    assert_prefix_consistent(&db, &ground_truth(&h.fake.world()));
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_one_clear_error() {
    let h = Harness::new().await;
    let mut settings = h.settings();
    settings.token = Some(Token::new("not-the-token"));
    let err = bot::run(settings, options(), CancellationToken::new()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("cannot start the bot") && text.to_lowercase().contains("token"), "{text}");
    assert!(!text.contains("not-the-token"), "the token is never printed: {text}");
    assert!(h.fake.gateway_received().is_empty(), "no gateway connection with a refused token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bot_command_answers_never_prints_the_token_and_stops_on_sigterm() {
    let h = Harness::new().await;
    // Loaded and indexed by the CLI, as an operator would before starting the bot
    // (in other processes: an embedded collection is opened by one process at a time).
    let cli = |args: &[&str]| cli(&h, args);
    let guild = h.guild.to_string();
    for args in [vec!["load", "--guild", &guild], vec!["index", "--guild", &guild, "--model", "tiny", "--activate"]] {
        let mut c = cli(&args);
        let status = tokio::task::spawn_blocking(move || c.output().unwrap().status).await.unwrap();
        assert!(status.success(), "{args:?}");
    }
    let (out_path, err_path) = (h.data.with_file_name("stdout.txt"), h.data.with_file_name("stderr.txt"));
    let mut child = cli(&["-vv", "bot", "--ask-cooldown", "600"])
        .env("RUST_LOG", "trace")
        // Files, not pipes: nothing reads a pipe while the bot runs, and trace logging fills one.
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    wait_for("the bot process registers its commands", || h.fake.registered_command_id("ask")).await;
    let (text, _) = h.command(h.ask(h.cast.staff, "zanzibar vault combination"), is_answer).await;
    assert!(text.contains("blue binder"), "{text}");
    // The cooldown is per user.
    let (text, sent) = h.command(h.ask(h.cast.staff, "again"), |t| t.contains("wait")).await;
    assert!(text.starts_with("Please wait") && ephemeral(&sent), "{text}");
    let (text, _) = h.command(h.ask(h.cast.plain, "zanzibar vault combination"), is_answer).await;
    assert!(!text.contains("blue binder"), "{text}");

    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let (stdout, stderr) = (std::fs::read_to_string(&out_path).unwrap(), std::fs::read_to_string(&err_path).unwrap());
    let tail: String = stderr.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop:\n{tail}");
    assert!(stderr.contains("slash commands registered"), "the log is there at -vv");
    let token = h.fake.token();
    assert!(!stdout.contains(&token) && !stderr.contains(&token), "the token never appears, even at trace level");
    for sent in h.fake.sent() {
        if let Some(t) = sent.token {
            assert!(!stderr.contains(&t), "interaction tokens never appear in the log");
        }
    }
    assert!(!stderr.contains("ERROR"), "no errors:\n{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_bot_while_the_gateway_refuses_it_and_each_retry_is_said_in_words() {
    let h = Harness::new().await;
    h.fake.refuse_gateway(Some((503, "The gateway is over capacity, try again later")));
    let mut bot = BotProcess::spawn(&h, "refused");
    // A first try and a retry: the bot is in its retry loop, not starting.
    wait_for("two refused gateway handshakes", || (h.fake.gateway_refusals() >= 2).then_some(())).await;
    bot.terminate();
    let (code, stderr) = bot.exit_within(PROMPTLY, "SIGTERM while the gateway refuses").await;
    assert_eq!(code, Some(0), "a stop is a clean exit:\n{}", tail(&stderr));
    let retries: Vec<&str> = stderr.lines().filter(|l| l.contains("retrying in")).collect();
    assert!(!retries.is_empty(), "each retry is said:\n{}", tail(&stderr));
    for line in &retries {
        assert!(line.contains("503") && line.contains("over capacity"), "in Discord's words: {line}");
    }
    assert!(!stderr.contains("[123, 34"), "no byte arrays:\n{}", tail(&stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_bot_while_it_cannot_reconnect() {
    let h = Harness::new().await;
    let mut bot = BotProcess::spawn(&h, "reconnecting");
    wait_for("the bot process registers its commands", || h.fake.registered_command_id("ask")).await;
    h.fake.refuse_gateway(Some((503, "The gateway is over capacity, try again later")));
    h.fake.close_gateway(4000);
    // Resumes fail, then serenity starts a new shard, which fails and waits in
    // its queue: no shard runs, and a stop must not wait for one.
    wait_for("four refused reconnections", || (h.fake.gateway_refusals() >= 4).then_some(())).await;
    bot.terminate();
    let (code, stderr) = bot.exit_within(PROMPTLY, "SIGTERM while reconnecting").await;
    assert_eq!(code, Some(0), "a stop is a clean exit:\n{}", tail(&stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_refuses_for_good_ends_the_bot_with_discords_answer() {
    let h = Harness::new().await;
    type Case<'a> = (&'a str, &'a dyn Fn(&FakeDiscord), &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "the WebSocket handshake answers 403",
            &|f| f.refuse_gateway(Some((403, "This address may not open gateway connections"))),
            &["403", "This address may not open gateway connections"],
        ),
        (
            "GET /gateway/bot answers 401",
            &|f| f.set_faults(vec![Fault::always(FaultKind::Unauthorized).on("/gateway")]),
            &["401", "/gateway"],
        ),
        (
            "IDENTIFY is closed with 4014",
            &|f| f.close_gateway_on_identify(Some((4014, "Disallowed intent(s)."))),
            &["Message Content Intent"],
        ),
        (
            "IDENTIFY is closed with 4004",
            &|f| f.close_gateway_on_identify(Some((4004, "Authentication failed."))),
            &["4004", "token"],
        ),
    ];
    for (what, refuse, said) in cases {
        refuse(&h.fake);
        let mut bot = BotProcess::spawn(&h, "fatal");
        let (code, stderr) = bot.exit_within(PROMPTLY, what).await;
        assert_eq!(code, Some(2), "{what}: a refusal for good is exit 2:\n{}", tail(&stderr));
        let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{what}: {stderr}"));
        for words in said {
            assert!(error.contains(words), "{what}: the error says {words:?}: {error}");
        }
        assert!(!stderr.contains("[123, 34"), "{what}: no byte arrays:\n{}", tail(&stderr));
        assert!(!stderr.contains(&h.fake.token()), "{what}: the token is never printed");
        // Back to a gateway that accepts.
        h.fake.refuse_gateway(None);
        h.fake.set_faults(vec![]);
        h.fake.close_gateway_on_identify(None);
    }
}

// Answers: `/ask` writes a short answer from the results with a chat model
// (SmolLM2-135M-Instruct, installed by `scripts/fetch-model.sh smollm2`; CI
// sets REQUIRE_MODELS=1, which makes a missing model a failure), one at a
// time, in a fair line, stoppable, within the `[answer]` limits.

/// How long an answer may take here: generous (two CPU cores, several bots).
const ANSWER_PATIENCE: Duration = Duration::from_secs(300);

/// SmolLM2's GGUF file when installed; else the test says it is skipped
/// (unless REQUIRE_MODELS is set).
fn smollm2(test: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var_os("REQUIRE_MODELS").is_none(), "{} is missing but REQUIRE_MODELS is set", path.display());
    eprintln!("SKIPPED {test}: run scripts/fetch-model.sh smollm2");
    None
}

impl Harness {
    /// An indexed archive and the bot answering with `model`, kept small for
    /// two CPU cores: a short window, answers of `max_answer_tokens`, each
    /// within `timeout_secs`.
    async fn answering(model: &Path, max_answer_tokens: usize, timeout_secs: u64) -> Harness {
        let mut h = Harness::new().await;
        h.preload().await;
        let mut settings = h.settings();
        settings.answer.model = Some(model.display().to_string());
        settings.answer.context_tokens = Some(768);
        settings.answer.max_answer_tokens = max_answer_tokens;
        settings.answer.timeout = Duration::from_secs(timeout_secs);
        h.start_bot_with(options(), settings).await;
        h
    }

    /// The contents an `/ask`'s message was given, edit after edit.
    fn contents(&self, token: &str) -> Vec<String> {
        self.fake.replies(token).iter().filter_map(|s| s.body["content"].as_str().map(str::to_owned)).collect()
    }

    /// Waits until some content of `token`'s message satisfies `done`; returns it.
    async fn content_where(&self, token: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let contents = self.contents(token);
            if let Some(c) = contents.iter().find(|c| done(c)) {
                return c.clone();
            }
            assert!(!contents.iter().any(|c| c.starts_with("Sorry,")), "{what}: the bot failed: {contents:?}");
            assert!(started.elapsed() < ANSWER_PATIENCE, "timed out waiting for {what}; contents so far: {contents:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The answer's last state: the first content that is no longer "Writing an answer…".
    async fn final_answer(&self, token: &str, what: &str) -> String {
        self.content_where(token, what, |c| !c.starts_with("Writing an answer")).await
    }

    /// The custom id of the Stop button on `token`'s message.
    fn stop_id(&self, token: &str) -> String {
        let sent = self.fake.replies(token);
        let button = sent.iter().map(|s| &s.body["components"][0]["components"][0]).find(|b| b["label"] == "Stop");
        button.and_then(|b| b["custom_id"].as_str()).expect("a Stop button").to_owned()
    }

    /// Presses Stop on `token`'s message as `user`; returns the press's token.
    fn press_stop(&self, user: u64, token: &str) -> String {
        self.fake.press_button(user, token, &self.stop_id(token)).expect("the message exists")
    }
}

/// The jump links in a text.
fn jump_links(text: &str) -> BTreeSet<String> {
    text.split("(https://discord.com/channels/")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|path| format!("https://discord.com/channels/{path}"))
        .collect()
}

/// Where in everything the bot sent the first message of `token` whose content satisfies `f` is.
fn sent_index(h: &Harness, token: &str, f: impl Fn(&str) -> bool) -> Option<usize> {
    h.fake.sent().iter().position(|s| s.token.as_deref() == Some(token) && s.body["content"].as_str().is_some_and(&f))
}

/// Holds every edit of these `/ask`s' messages until [`FakeDiscord::release_held`].
fn hold_edits(h: &Harness, tokens: &[&str]) {
    h.fake.set_faults(
        tokens
            .iter()
            .map(|t| Fault { path_contains: Some(format!("{t}/messages")), ..Fault::always(FaultKind::Hold) })
            .collect(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ask_shows_the_results_at_once_and_edits_in_an_answer_that_cites_them() {
    let Some(model) = smollm2("ask_shows_the_results_at_once_and_edits_in_an_answer_that_cites_them") else { return };
    let mut h = Harness::answering(&model, 24, 120).await;
    let commands = h.fake.registered_commands()[0].1.clone();
    let ask = commands.as_array().unwrap().iter().find(|c| c["name"] == "ask").unwrap().clone();
    let option = ask["options"].as_array().unwrap().iter().find(|o| o["name"] == "answer").unwrap().clone();
    assert_eq!(option["type"], 5, "a boolean option");
    assert!(option["description"].as_str().unwrap().contains("(default: yes)"), "{option}");

    let token = h.fake.invoke(&h.ask(h.cast.staff, "where is the zanzibar vault combination kept?"));
    let answer = h.final_answer(&token, "the answer").await;
    let sent = h.fake.replies(&token);
    // The results first, at once, with the answer's first state and a Stop button.
    let first = sent.iter().find(|s| s.method == "PATCH").expect("the results");
    let results = first.text();
    assert!(results.contains("Results for") && results.contains("blue binder"), "{results}");
    assert_eq!(first.body["content"], "Writing an answer…");
    assert_eq!(first.body["components"][0]["components"][0]["label"], "Stop");
    // Then the answer, edited in: its citations link to results listed; the button is gone.
    let listed = jump_links(&results);
    assert!(!listed.is_empty(), "{results}");
    if answer.starts_with("**Answer** (SmolLM2-135M-Instruct.Q4_1):") {
        let cited = jump_links(&answer);
        assert!(
            !cited.is_empty() && cited.is_subset(&listed),
            "citations link to listed results:\n{answer}\n{results}"
        );
    } else {
        assert!(answer.starts_with("No answer found in the messages you can read."), "{answer}");
    }
    let last = sent.iter().rev().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(last.body["content"].as_str(), Some(answer.as_str()), "the answer is the last edit");
    assert_eq!(last.body["components"], json!([]), "no Stop button on a finished answer");
    assert!(!h.contents(&token).iter().any(|c| c.starts_with("Writing an answer… (you are")), "nobody was ahead");

    // answer:false: the results alone, as without a chat model.
    let inv = Invocation::dm(
        h.cast.plain,
        "ask",
        &[("question", json!("zanzibar vault combination")), ("answer", json!(false))],
    );
    let (_, sent) = h.command(inv, is_answer).await;
    assert!(!sent.iter().any(|s| s.text().contains("Writing an answer")), "no answer asked for, none written");

    // A question longer than [answer] max_question_chars: the results, and why there is no answer.
    let long = "zanzibar vault ".repeat(40);
    let (text, _) = h.command(h.ask(h.cast.staff, &long), |t| t.contains("No answer")).await;
    assert!(text.contains("No answer: the question is 599 characters") && text.contains("at most 500"), "{text}");
    assert!(text.contains("Results for"), "{text}");
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_are_written_one_at_a_time_in_a_fair_line_that_people_can_leave() {
    let Some(model) = smollm2("answers_are_written_one_at_a_time_in_a_fair_line_that_people_can_leave") else {
        return;
    };
    let mut h = Harness::answering(&model, 24, 120).await;
    let question = "zanzibar vault combination";
    let (a_user, b_user, c_user) = (h.cast.staff, h.cast.plain, h.cast.admin);
    let a = h.fake.invoke(&h.ask(a_user, question));
    h.content_where(&a, "the first answer to start", |c| c == "Writing an answer…").await;
    // Its edits wait: it holds its turn until released.
    hold_edits(&h, &[&a]);

    let b = h.fake.invoke(&h.ask(b_user, question));
    h.content_where(&b, "the second's place", |c| c == "Writing an answer… (you are number 2 in line)").await;
    let c = h.fake.invoke(&h.ask(c_user, question));
    h.content_where(&c, "the third's place", |c| c.ends_with("(you are number 3 in line)")).await;

    // Only the asker's Stop counts.
    let press = h.press_stop(b_user, &c);
    let reply = wait_for("the refusal", || h.fake.replies(&press).into_iter().find(|s| s.body["type"] == 4)).await;
    assert_eq!(reply.text(), "Only the person who asked can stop this answer.");
    assert!(ephemeral(&[reply]));
    // A waiting request that is stopped leaves the line.
    let press = h.press_stop(c_user, &c);
    h.content_where(&c, "the stop", |c| c == "Stopped: no answer was written.").await;
    // The press is acknowledged; the message says the rest.
    wait_for("the press acknowledged", || h.fake.replies(&press).into_iter().find(|s| s.body["type"] == 6)).await;
    assert_eq!(h.fake.replies(&c).last().unwrap().body["components"], json!([]));

    // Asking again while waiting: the newer question takes the earlier one's place.
    let b2 = h.fake.invoke(&h.ask(b_user, "where is the zanzibar vault combination kept?"));
    h.content_where(&b, "the replaced request", |c| c.contains("your newer question took this one's place")).await;
    h.content_where(&b2, "the newer question's place", |c| c.ends_with("(you are number 2 in line)")).await;
    // ... and the stopped one asking again goes to the end of the line.
    let c2 = h.fake.invoke(&h.ask(c_user, question));
    h.content_where(&c2, "the new request's place", |c| c.ends_with("(you are number 3 in line)")).await;
    assert!(!h.contents(&b2).iter().any(|c| c.starts_with("Writing an answer…\n")), "nothing of b2 written yet");

    // The first answer goes on, then the second; c2 moves up, and its turn will wait on its first edit.
    h.fake.set_faults(vec![]);
    h.fake.release_held();
    h.content_where(&b2, "the second answer's turn", |c| c == "Writing an answer…").await;
    h.content_where(&c2, "c2 moving up", |c| c.ends_with("(you are number 2 in line)")).await;
    hold_edits(&h, &[&c2]);
    let first = h.final_answer(&a, "the first answer").await;
    let second = h.final_answer(&b2, "the second answer").await;
    for answer in [&first, &second] {
        assert!(
            answer.starts_with("**Answer**") || answer.starts_with("No answer found in the messages you can read."),
            "{answer}"
        );
    }
    let a_done = sent_index(&h, &a, |c| c == first).unwrap();
    let b2_turn = sent_index(&h, &b2, |c| c == "Writing an answer…").unwrap();
    assert!(a_done < b2_turn, "the second answer is written after the first");
    assert!(h.contents(&b).last().unwrap().contains("newer question"), "the replaced request is not answered");

    // A running answer stops when asked (here before its first token).
    wait_for("c2's turn, its first edit held", || (h.fake.held() > 0).then_some(())).await;
    let press = h.press_stop(c_user, &c2);
    wait_for("the press acknowledged", || h.fake.replies(&press).into_iter().find(|s| s.body["type"] == 6)).await;
    h.fake.set_faults(vec![]);
    h.fake.release_held();
    let stopped = h.final_answer(&c2, "the stopped answer").await;
    assert_eq!(stopped, "Stopped: no answer was written.");
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_that_runs_out_of_time_ends_with_a_note() {
    let Some(model) = smollm2("an_answer_that_runs_out_of_time_ends_with_a_note") else { return };
    // Long answers, so that even a fast machine cannot finish one within the second.
    let mut h = Harness::answering(&model, 200, 1).await;
    let token = h.fake.invoke(&h.ask(h.cast.staff, "where is the zanzibar vault combination kept?"));
    let answer = h.final_answer(&token, "the answer").await;
    assert!(
        answer == "No answer: the time limit (1s) ran out before one was written."
            || (answer.starts_with("**Answer**")
                && answer.ends_with("\n_Stopped at the time limit (1s): the answer may be incomplete._")),
        "{answer}"
    );
    h.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_chat_model_ask_shows_results_and_says_how_to_turn_answers_on() {
    let mut h = Harness::indexed_with_bot().await;
    let commands = h.fake.registered_commands()[0].1.clone();
    let ask = commands.as_array().unwrap().iter().find(|c| c["name"] == "ask").unwrap().clone();
    let option = ask["options"].as_array().unwrap().iter().find(|o| o["name"] == "answer").unwrap().clone();
    assert!(option["description"].as_str().unwrap().contains("scripts/fetch-model.sh smollm2"), "{option}");

    // By default: the results, as ever.
    let (_, sent) = h.command(h.ask(h.cast.staff, "zanzibar vault combination"), is_answer).await;
    assert!(!sent.iter().any(|s| s.text().contains("Writing an answer") || s.text().contains("Answers are off")));
    // Asked for: the results, and how answers are turned on.
    let inv = Invocation::dm(
        h.cast.staff,
        "ask",
        &[("question", json!("zanzibar vault combination")), ("answer", json!(true))],
    );
    let (text, _) = h.command(inv, is_answer).await;
    assert!(text.contains("blue binder"), "{text}");
    assert!(
        text.contains("Answers are off")
            && text.contains("scripts/fetch-model.sh smollm2")
            && text.contains("[answer] endpoint"),
        "{text}"
    );
    h.stop_bot().await;
}

/// A fake OpenAI-compatible chat endpoint on 127.0.0.1: it records each
/// request's body and streams `reply` in pieces of a few characters, `pause`
/// apart (server-sent events).
struct FakeChat {
    url: String,
    requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl FakeChat {
    async fn start(reply: &'static str, pause: Duration) -> FakeChat {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, length) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..i]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            break (i + 4, length);
                        }
                    };
                    while buffer.len() < head_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    recorded
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap());
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                    let _ = socket.write_all(head.as_bytes()).await;
                    let chars: Vec<char> = reply.chars().collect();
                    for piece in chars.chunks(4).map(|c| c.iter().collect::<String>()) {
                        let event =
                            json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
                        if socket.write_all(format!("data: {event}\n\n").as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                        tokio::time::sleep(pause).await;
                    }
                    let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                    let _ = socket.write_all(format!("data: {end}\n\ndata: [DONE]\n\n").as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeChat { url, requests }
    }

    /// What each request gave the model: its messages' text, joined.
    fn prompts(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        let text = |r: &serde_json::Value| {
            r["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
        };
        requests.iter().map(text).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_streams_into_the_message_written_from_only_the_askers_results() {
    let chat = FakeChat::start(
        "The combination is kept in the blue binder [1], says the staff room.",
        Duration::from_millis(60),
    )
    .await;
    let mut h = Harness::new().await;
    h.preload().await;
    let mut settings = h.settings();
    settings.answer.endpoint = Some(discord_indexer::answer::settings::EndpointSettings {
        url: chat.url.clone(),
        model: "fake-chat".into(),
        api_key_env: None,
        api_key: None,
    });
    h.start_bot_with(BotOptions { answer_edit_every: Duration::from_millis(200), ..options() }, settings).await;

    let token = h.fake.invoke(&h.ask(h.cast.staff, "zanzibar vault combination"));
    let answer = h.final_answer(&token, "the staff member's answer").await;
    let results = h.fake.replies(&token).iter().find(|s| s.method == "PATCH").unwrap().text();
    // The first result's link: the first in the text (a result's name starts
    // with `#` for a channel and `🧵` for a thread, so the text is not cut
    // at names).
    let first_result = results
        .split("[Jump to the message](")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(str::to_owned)
        .unwrap();
    assert_eq!(
        answer,
        format!("**Answer** (fake-chat):\nThe combination is kept in the blue binder [1]({first_result}), says the staff room.")
    );
    // Edited in as it was written: the text so far, a few times (not per piece).
    let streamed: Vec<String> =
        h.contents(&token).into_iter().filter(|c| c.starts_with("Writing an answer…\n")).collect();
    assert!(!streamed.is_empty(), "{:?}", h.contents(&token));
    assert!(streamed.len() < 17, "edited about every 200 ms, not per piece: {streamed:?}");
    let whole = "Writing an answer…\nThe combination is kept in the blue binder [1], says the staff room.";
    assert!(streamed.iter().all(|c| whole.starts_with(c.as_str())), "the text so far: {streamed:?}");

    // The model reads what the asker may read, and nothing else.
    let token = h.fake.invoke(&h.ask(h.cast.plain, "zanzibar vault combination"));
    h.final_answer(&token, "the plain member's answer").await;
    let prompts = chat.prompts();
    assert_eq!(prompts.len(), 2);
    assert!(prompts[0].contains("blue binder"), "the staff member's results are in their prompt");
    assert!(!prompts[1].contains("blue binder") && !prompts[1].contains("zanzibar vault combination is kept"));
    let plain_results = h.fake.replies(&token).iter().find(|s| s.method == "PATCH").unwrap().text();
    assert!(!plain_results.contains("blue binder"), "{plain_results}");
    h.stop_bot().await;
}
