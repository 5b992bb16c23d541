//! Attachment files end to end: fetched from the fake server's CDN (signed,
//! expiring links; a refresh endpoint), stored by hash, read by the real
//! Tesseract, and found by what is written inside the images, by those
//! who may read them only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::index::{self, IndexOptions, IndexSummary};
use discord_indexer::load::files::{self, FileOptions, FileSummary};
use discord_indexer::search::{Mode, Query, SearchOptions, Searcher, Viewer};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;
use fake_discord::{attachment_file, file_bytes, FakeDiscord, FakeKind, Fault, FaultKind};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::cli::{bin, load_cmd, output, text};
use crate::util::*;

async fn fetch(fake: &FakeDiscord, store: &Store) -> FileSummary {
    files::fetch_files(
        &client(fake),
        store,
        &[guild_id(fake)],
        &FileOptions::default(),
        &|_, _| {},
        &CancellationToken::new(),
    )
    .await
    .expect("files fetched")
}

/// (attachment id → (fetch state, sha256)) as the archive records them.
fn recorded(db: &Path) -> BTreeMap<u64, (Option<String>, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, fetch_state, sha256 FROM attachments").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, (r.get(1)?, r.get(2)?)))).unwrap();
    rows.map(Result::unwrap).collect()
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What each kind of file must become.
fn expected_state(kind: &FakeKind) -> &'static str {
    match kind {
        FakeKind::Text(_) | FakeKind::Photo => "stored",
        FakeKind::Broken => "broken",
        FakeKind::NotImage => "not_image",
        FakeKind::Oversize | FakeKind::Bomb => "too_large",
    }
}

/// Every recorded file is on disk under its hash with exactly its bytes,
/// every file on disk is recorded, and nothing half-written is left.
fn assert_files_consistent(data: &Path) {
    let rows = recorded(&data.join("archive.db"));
    let mut hashes = BTreeSet::new();
    for (id, (state, hash)) in &rows {
        let want = expected_state(&attachment_file(*id).kind);
        assert_eq!(state.as_deref(), Some(want), "attachment {id}");
        if let Some(hash) = hash {
            let bytes = std::fs::read(data.join("attachments").join(&hash[..2]).join(hash)).unwrap();
            assert_eq!(&sha256(&bytes), hash);
            assert_eq!(bytes, file_bytes(*id), "attachment {id}'s stored bytes are the CDN's");
            hashes.insert(hash.clone());
        }
    }
    let mut on_disk = BTreeSet::new();
    for entry in walk(&data.join("attachments")) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let folder = entry.parent().and_then(|p| p.file_name()).unwrap_or_default();
        assert!(folder != "tmp", "a temporary file was left: {}", entry.display());
        on_disk.insert(name);
    }
    assert_eq!(on_disk, hashes, "the files on disk are exactly the recorded ones, once each");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_fetched_once_by_hash_and_bad_files_are_reported() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    let rows = recorded(&dir.path().join("archive.db"));
    let kinds: BTreeSet<&str> = rows.keys().map(|&id| attachment_file(id).kind.name()).collect();
    assert_eq!(kinds.len(), 6, "the loaded channels hold every kind of file: {kinds:?}");

    fake.clear_log();
    let summary = fetch(&fake, &store).await;
    assert!(summary.ok(), "{summary:?}");
    let count = |want: &str| rows.keys().filter(|&&id| expected_state(&attachment_file(id).kind) == want).count();
    assert_eq!(summary.stored as usize, count("stored"));
    assert_eq!(summary.broken as usize, count("broken"));
    assert_eq!(summary.not_image as usize, count("not_image"));
    assert_eq!(summary.too_large as usize, count("too_large"));
    assert_eq!(summary.problems.len(), count("broken") + count("not_image") + count("too_large"));
    assert_files_consistent(dir.path());

    let cdn: Vec<_> = fake.requests().into_iter().filter(|r| r.path.starts_with("/attachments/")).collect();
    assert!(cdn.iter().all(|r| !r.authorized), "the bot token never goes to the CDN");
    for r in &cdn {
        let id: u64 = r.path.split('/').nth(3).unwrap().parse().unwrap();
        assert!(
            !matches!(attachment_file(id).kind, FakeKind::Oversize),
            "a file announced over the cap is not downloaded"
        );
    }

    // A rerun fetches nothing; the same bytes are never written twice.
    fake.clear_log();
    let again = fetch(&fake, &store).await;
    assert_eq!((again.wanted, again.stored), (0, 0), "{again:?}");
    assert!(fake.requests().iter().all(|r| !r.path.starts_with("/attachments/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_are_renewed_through_the_refresh_endpoint() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_link_lifetime(-3600);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    fake.clear_log();
    let summary = fetch(&fake, &store).await;
    assert!(summary.ok() && summary.stored > 0, "{summary:?}");
    let log = fake.requests();
    let refreshes: Vec<_> = log.iter().filter(|r| r.path == "/api/v10/attachments/refresh-urls").collect();
    assert!(!refreshes.is_empty() && refreshes.iter().all(|r| r.method == "POST" && r.status == 200), "{log:?}");
    let fetched = summary.stored + summary.broken + summary.not_image + summary.too_large;
    assert!(summary.refreshed >= fetched - summary.too_large, "{summary:?}");
    assert!(refreshes.len() as u64 >= summary.refreshed.div_ceil(50));
    // Every download used a fresh link: none was refused as expired.
    let cdn: Vec<_> = log.iter().filter(|r| r.path.starts_with("/attachments/")).collect();
    assert!(!cdn.is_empty() && cdn.iter().all(|r| r.status == 200), "{cdn:?}");
    assert_files_consistent(dir.path());
}

/// SIGKILL while downloads hang, then a rerun: every file present exactly
/// once, nothing half-written recorded. And a crash at the worst moment
/// (file written, not yet recorded) is caught up the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fetch_resumes_with_every_file_once() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    // Three downloads go through, then every download hangs.
    fake.set_faults(vec![Fault::always(FaultKind::Hold).on("/attachments/").after(3)]);
    let mut child = load_cmd(&fake, dir.path()).stdout(std::process::Stdio::null()).spawn().unwrap();
    assert!(fake.wait_until(Duration::from_secs(60), |f| f.held() > 0).await, "downloads reached the hold");
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = recorded(&dir.path().join("archive.db"));
    let stored = rows.values().filter(|(s, _)| s.as_deref() == Some("stored")).count();
    assert!(stored <= 3, "only completed downloads are recorded ({stored})");
    fake.set_faults(vec![]);
    fake.release_held();

    // Crash after a file is written but before it is recorded.
    let mut c = load_cmd(&fake, dir.path());
    c.env("DISCORD_INDEXER_FAILPOINT", "file-before-record:2");
    let out = output(c).await;
    assert_ne!(out.status.code(), Some(0), "the failpoint aborted the run");

    let out = output(load_cmd(&fake, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("attachment files:"), "{}", text(&out.stdout));
    assert_files_consistent(dir.path());
}

/// Loads and fetches the standard guild with its access matrix, indexes it
/// with all-MiniLM-L6-v2 (text read from images by Tesseract), active.
struct Indexed {
    _dir: tempfile::TempDir,
    data: PathBuf,
    models: PathBuf,
    store: Store,
    guild: u64,
    fake: FakeDiscord,
    cast: Option<fake_discord::AccessCast>,
}

async fn indexed(model: &Path) -> (Indexed, IndexSummary) {
    let mut world = standard_world();
    let cast = world.add_access_matrix();
    // A screenshot in a channel a plain member may not read, for certain.
    let bots: Vec<bool> = world.users.iter().map(|u| u.bot).collect();
    let gated = world.guilds[0].channels.iter_mut().find(|c| c.name == "staff-room").expect("a gated channel");
    let m = gated
        .messages
        .iter_mut()
        .find(|m| {
            m.kind == 0
                && !m.webhook
                && !bots[m.author as usize]
                && matches!(attachment_file(m.id + 1).kind, FakeKind::Text(_))
        })
        .expect("a message to attach a screenshot to");
    m.attachments = 1;
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(model, models.join("real")).unwrap();
    let store = Store::open(&data).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    assert!(fetch(&fake, &store).await.ok());
    let s = Indexed { guild: guild_id(&fake), _dir: dir, data, models, store, fake, cast: Some(cast) };
    let summary = s.index().await;
    (s, summary)
}

impl Indexed {
    async fn index(&self) -> IndexSummary {
        let embedder =
            Arc::new(Embedder::load(ModelInfo::find(&self.models, "real").unwrap(), candle_core::Device::Cpu).unwrap());
        let mut options = IndexOptions::new(self.guild);
        options.activate = true;
        let backend = Backend::new(&self.data, None, None).unwrap();
        index::index(&self.store, &backend, embedder, &options, &|_| {}, &CancellationToken::new()).await.unwrap()
    }

    fn searcher(&self) -> Searcher {
        Searcher::new(
            self.store.clone(),
            Backend::new(&self.data, None, None).unwrap(),
            self.models.clone(),
            Some(client(&self.fake)),
            SearchOptions { permissions_max_age: Duration::from_secs(3600), ..SearchOptions::default() },
        )
    }

    /// Message ids in the results of a question, asked as `viewer`.
    async fn ask(&self, question: &str, viewer: Viewer, mode: Mode) -> Vec<Vec<u64>> {
        let q = Query {
            text: question.into(),
            guilds: vec![self.guild],
            viewer,
            limit: 5,
            mode,
            filters: Default::default(),
        };
        let answer = self.searcher().ask(&q).await.unwrap();
        answer.results.iter().map(|r| r.message_ids.clone()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_only_inside_an_image_is_found_by_every_search_and_read_once() {
    let Some(model) = installed_minilm("text_only_inside_an_image_is_found_by_every_search_and_read_once") else {
        return;
    };
    let (s, first) = indexed(&model).await;
    assert!(first.images.unavailable.is_none(), "Tesseract is installed (scripts/setup-ocr.sh): {:?}", first.images);
    let rows = recorded(&s.data.join("archive.db"));
    let stored: Vec<u64> =
        rows.iter().filter(|(_, (state, _))| state.as_deref() == Some("stored")).map(|(&id, _)| id).collect();
    let distinct: BTreeSet<&String> = rows.values().filter_map(|(_, h)| h.as_ref()).collect();
    assert_eq!(first.images.read as usize, distinct.len(), "each stored image file read once: {:?}", first.images);

    // What was read: screenshots' words (exactly the unique ones), photos nothing.
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    let read = |id: u64| -> String {
        conn.query_row(
            "SELECT t.text FROM image_texts t JOIN attachments a ON a.sha256 = t.sha256 WHERE a.id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut screenshots = Vec::new();
    for &id in &stored {
        match attachment_file(id).kind {
            FakeKind::Text(_) => {
                let word = fake_discord::unique_word(id);
                assert!(read(id).contains(&word), "OCR of {id} read {:?}, not {word}", read(id));
                screenshots.push(id);
            }
            FakeKind::Photo => assert_eq!(read(id), "", "a photo without text adds no text"),
            _ => {}
        }
    }

    // A screenshot in a channel every member reads, and one in a channel a
    // plain member may not read.
    let channel_of = |id: u64| -> String {
        conn.query_row(
            "SELECT c.name FROM attachments a JOIN messages m ON m.id = a.message_id JOIN channels c ON c.id = m.channel_id
             WHERE a.id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .unwrap()
    };
    let message_of = |id: u64| -> u64 {
        conn.query_row("SELECT message_id FROM attachments WHERE id = ?1", [id as i64], |r| r.get::<_, i64>(0)).unwrap()
            as u64
    };
    let public = screenshots.iter().copied().find(|&id| crate::search::PUBLIC.contains(&channel_of(id).as_str()));
    let public = public.expect("a screenshot in a public channel");
    let word = fake_discord::unique_word(public);
    let cast = s.cast.unwrap();
    let member = Viewer::User(cast.plain);
    for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
        let found = s.ask(&word, member, mode).await;
        assert!(
            found.iter().take(5).any(|ids| ids.contains(&message_of(public))),
            "{mode:?} search for {word:?} finds the message whose image says it: {found:?}"
        );
    }

    let gated = screenshots.iter().copied().find(|&id| crate::search::GATED.contains(&channel_of(id).as_str()));
    {
        let gated = gated.expect("a screenshot in a gated channel");
        let word = fake_discord::unique_word(gated);
        for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
            let found = s.ask(&word, member, mode).await;
            assert!(
                found.iter().all(|ids| !ids.contains(&message_of(gated))),
                "a member who cannot read the channel never gets its image text ({mode:?})"
            );
            let by_owner = s.ask(&word, Viewer::User(cast.owner), Mode::Keyword).await;
            assert!(by_owner.iter().any(|ids| ids.contains(&message_of(gated))), "the owner may read it");
        }
    }

    // A rerun, and another run after new files: nothing is read twice.
    let again = s.index().await;
    assert_eq!((again.images.read, again.embedded), (0, 0), "{:?}", again.images);
    drop(conn);
    let mut c = bin();
    c.args(["index", "--guild", &s.guild.to_string(), "--model", "real", "--json", "--data-dir"])
        .arg(&s.data)
        .env("DISCORD_INDEXER_MODELS_DIR", &s.models);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["images"]["read"], 0, "the CLI's rerun reads no image again");
}

/// Image text that arrives later (the file fetched by a later load)
/// re-embeds only the chunks of the messages that show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_text_arriving_later_re_embeds_only_its_chunks() {
    let Some(model) = installed_minilm("image_text_arriving_later_re_embeds_only_its_chunks") else { return };
    let world = standard_world();
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&model, models.join("real")).unwrap();
    let store = Store::open(&data).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    let s = Indexed { guild: guild_id(&fake), _dir: dir, data, models, store, cast: None, fake };
    let before = s.index().await;
    assert_eq!(before.images.read, 0, "no file fetched yet");
    assert!(fetch(&s.fake, &s.store).await.ok());
    let after = s.index().await;
    assert!(after.images.read > 0 && after.images.messages > 0, "{:?}", after.images);
    assert!(after.embedded > 0, "chunks of messages with image text are embedded again");
    // A longer line can move the cut between a chunk and the next one of the
    // same conversation, so a message may re-embed a neighbour too; nothing
    // else is embedded again.
    assert!(
        after.embedded <= after.images.messages * 2 && after.embedded < before.embedded / 2,
        "only their chunks: {} embedded for {} messages (of {} chunks)",
        after.embedded,
        after.images.messages,
        before.embedded
    );
}
