//! Search on a real archive loaded from the fake server, real qdrant-edge
//! collections and real models: permissions (a matrix of users and channels),
//! bad input, the CLI, and retrieval quality with all-MiniLM-L6-v2.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use discord_indexer::chunk::part_id;
use discord_indexer::embed::tiny::{self, TinySpec};
use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::index::{self, IndexOptions};
use discord_indexer::search::filters::{FilterError, FilterRequest};
use discord_indexer::search::{
    Answer, Filters, Mode, Query, SearchError, SearchOptions, SearchResult, Searcher, Viewer,
};
use discord_indexer::snowflake;
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;
use fake_discord::{AccessCast, Fault, FaultKind, World, WorldSpec};
use tokio_util::sync::CancellationToken;

use crate::util::*;

type Setup = Loaded;

/// Loads `world` from the fake server ([`loaded`]) and indexes it with
/// `model` (the tiny random BERT when None), active.
async fn setup(world: World, model: Option<&Path>) -> Setup {
    index_it(loaded(world).await, model).await
}

/// The same, its vectors on a Qdrant server of its own; None (skipped)
/// without a server binary.
async fn setup_on_server(world: World, test: &str) -> Option<Setup> {
    Some(index_it(loaded(world).await.on_server(test).await?, None).await)
}

/// The same, in collections every guild shares.
async fn setup_on_shared_server(world: World, test: &str) -> Option<Setup> {
    Some(index_it(loaded(world).await.on_shared_server(test).await?, None).await)
}

async fn index_it(s: Setup, model: Option<&Path>) -> Setup {
    let name = match model {
        Some(path) => {
            std::os::unix::fs::symlink(path, s.models.join("real")).unwrap();
            "real"
        }
        None => "tiny",
    };
    let embedder =
        Arc::new(Embedder::load(ModelInfo::find(&s.models, name).unwrap(), candle_core::Device::Cpu).unwrap());
    let mut options = IndexOptions::new(s.guild);
    options.activate = true;
    index::index(&s.store, &s.backend(), embedder, &options, &|_| {}, &CancellationToken::new()).await.unwrap();
    s
}

impl Setup {
    fn searcher(&self, with_client: bool, max_age: Duration) -> Searcher {
        let options = SearchOptions { permissions_max_age: max_age, ..SearchOptions::default() };
        Searcher::new(
            self.store.clone(),
            self.backend(),
            self.models.clone(),
            with_client.then(|| client(&self.fake)),
            options,
        )
    }

    fn query(&self, text: &str, viewer: Viewer, limit: usize, mode: Mode) -> Query {
        Query { text: text.into(), guilds: vec![self.guild], viewer, limit, mode, filters: Default::default() }
    }

    /// chunk id → (channel, message ids), from the manifest and the points.
    async fn chunks(&self) -> BTreeMap<u64, (u64, Vec<u64>)> {
        let model = self.store.active_model(self.guild).unwrap().unwrap();
        let collection = self.backend().open_existing(self.guild, &model).await.unwrap().unwrap();
        let conn = rusqlite::Connection::open(self.data.join("archive.db")).unwrap();
        let ids: Vec<u64> = conn
            .prepare("SELECT chunk_id FROM index_chunks WHERE guild_id = ?1")
            .unwrap()
            .query_map([self.guild as i64], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap() as u64)
            .collect();
        collection.payloads(ids).await.unwrap().into_iter().map(|(id, p)| (id, (p.channel_id, p.message_ids))).collect()
    }

    fn channel_ids(&self, names: &BTreeSet<&str>) -> BTreeSet<u64> {
        let world = self.fake.world();
        let ids: BTreeSet<u64> =
            world.guilds[0].channels.iter().filter(|c| names.contains(c.name.as_str())).map(|c| c.id).collect();
        assert_eq!(ids.len(), names.len(), "every expected channel exists");
        ids
    }
}

fn chunk_ids(a: &Answer) -> BTreeSet<u64> {
    a.results.iter().map(|r| r.chunk_id).collect()
}

/// Channels with history that every member may read.
pub(crate) const PUBLIC: &[&str] = &[
    "general",
    "help",
    "dev-0",
    "announcements",
    "Lounge",
    "release planning",
    "build failures",
    "old migration",
    "q3 retro",
    "tiny archived",
    "How do I rotate keys?",
    "Install fails on ARM",
    "Feature request: dark mode",
    "Old question",
    "not-for-denied",
];
pub(crate) const PRIVATE_THREADS: &[&str] = &["mods only", "incident 42", "private plans"];
pub(crate) const GATED: &[&str] = &["staff-room", "staff chat", "admins-only", "history-hidden"];

/// What each kind of user may read, written out by hand from the rules.
pub(crate) fn matrix(cast: &AccessCast) -> Vec<(&'static str, u64, BTreeSet<&'static str>)> {
    let public: BTreeSet<&str> = PUBLIC.iter().copied().collect();
    let with = |extra: &[&'static str]| -> BTreeSet<&'static str> { public.iter().chain(extra).copied().collect() };
    let everything = with(&[PRIVATE_THREADS, GATED].concat());
    vec![
        ("owner", cast.owner, everything.clone()),
        ("administrator", cast.admin, everything),
        ("moderator (Manage Threads)", cast.moderator, with(PRIVATE_THREADS)),
        ("staff role", cast.staff, with(&["staff-room", "staff chat", "history-hidden"])),
        ("member overwrite deny", cast.denied, public.iter().copied().filter(|c| *c != "not-for-denied").collect()),
        ("private thread member", cast.thread_member, with(&["private plans"])),
        ("no roles", cast.plain, public.clone()),
        ("not a member", cast.outsider, BTreeSet::new()),
    ]
}

/// For every kind of user: every result is readable by them, and every
/// readable chunk (vector: all of them; keyword: all that match) is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_finds_exactly_what_they_may_read() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    each_user_finds_exactly_what_they_may_read_on(setup(world, None).await, cast).await
}

/// The same on a real Qdrant server: 0 leaks there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_finds_exactly_what_they_may_read_on_a_qdrant_server() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let test = "each_user_finds_exactly_what_they_may_read_on_a_qdrant_server";
    if let Some(s) = setup_on_server(world, test).await {
        each_user_finds_exactly_what_they_may_read_on(s, cast).await
    }
}

/// The same in a collection every guild shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_finds_exactly_what_they_may_read_in_shared_collections() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let test = "each_user_finds_exactly_what_they_may_read_in_shared_collections";
    if let Some(s) = setup_on_shared_server(world, test).await {
        each_user_finds_exactly_what_they_may_read_on(s, cast).await
    }
}

async fn each_user_finds_exactly_what_they_may_read_on(s: Setup, cast: AccessCast) {
    let searcher = s.searcher(true, Duration::from_secs(600));
    let chunks = s.chunks().await;
    // Messages whose text has the keyword (the stemmer also matches "restarts", "restarting").
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    let matching: BTreeSet<u64> = conn
        .prepare("SELECT id FROM messages WHERE lower(content) LIKE '%restart%'")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as u64)
        .collect();
    assert!(!matching.is_empty());

    for (who, user, names) in matrix(&cast) {
        let readable = s.channel_ids(&names);
        let expected_all: BTreeSet<u64> =
            chunks.iter().filter(|(_, (c, _))| readable.contains(c)).map(|(id, _)| *id).collect();
        let expected_matching: BTreeSet<u64> = chunks
            .iter()
            .filter(|(_, (c, m))| readable.contains(c) && m.iter().any(|m| matching.contains(m)))
            .map(|(id, _)| *id)
            .collect();
        if !names.is_empty() {
            assert!(!expected_matching.is_empty() && expected_matching.len() < expected_all.len(), "{who}");
        }
        for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
            let answer = searcher.ask(&s.query("restart", Viewer::User(user), 100_000, mode)).await.unwrap();
            for r in &answer.results {
                assert!(readable.contains(&r.channel_id), "{who} ({mode:?}) was shown #{}", r.channel_name);
            }
            let found = chunk_ids(&answer);
            let expected = match mode {
                Mode::Vector | Mode::Hybrid => &expected_all,
                Mode::Keyword => &expected_matching,
            };
            assert_eq!(&found, expected, "{who} ({mode:?}): found {} of {} chunks", found.len(), expected.len());
        }
        // A small limit is filled from what the user may read, not emptied by what they may not.
        let answer = searcher.ask(&s.query("restart", Viewer::User(user), 5, Mode::Hybrid)).await.unwrap();
        assert_eq!(answer.results.len(), expected_all.len().min(5), "{who}");
        if names.is_empty() {
            assert!(answer.notes.iter().any(|n| n.contains("not a member")), "{:?}", answer.notes);
            assert_eq!(answer.not_member, [s.guild], "{who}");
        } else {
            assert!(answer.not_member.is_empty(), "{who}");
        }
    }
    // The operator sees every chunk.
    let answer = searcher.ask(&s.query("restart", Viewer::Operator, 100_000, Mode::Vector)).await.unwrap();
    assert_eq!(chunk_ids(&answer), chunks.keys().copied().collect());
}

/// With a cross-encoder reranking, every user still gets exactly the chunks
/// they may read, and the first results come in the reranker's order: it
/// reorders what the permission filter let through and reads nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reranking_reorders_only_what_each_user_may_read() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let s = setup(world, None).await;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-reranker");
    std::os::unix::fs::symlink(fixture, s.models.join("tiny-reranker")).unwrap();
    let plain = s.searcher(true, Duration::from_secs(600));
    let options =
        SearchOptions { reranker: Some("tiny-reranker".into()), rerank_candidates: 8, ..SearchOptions::default() };
    let reranked = Searcher::new(s.store.clone(), s.backend(), s.models.clone(), Some(client(&s.fake)), options);
    for (who, user, names) in matrix(&cast) {
        let readable = s.channel_ids(&names);
        for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
            let q = s.query("restart the deploy", Viewer::User(user), 100_000, mode);
            let (before, after) = (plain.ask(&q).await.unwrap(), reranked.ask(&q).await.unwrap());
            assert_eq!(chunk_ids(&after), chunk_ids(&before), "{who} ({mode:?}): the same chunks");
            for r in &after.results {
                assert!(readable.contains(&r.channel_id), "{who} ({mode:?}) was shown #{}", r.channel_name);
            }
            // Every result was scored (100,000 asked for: all of them), best first.
            let scores: Vec<f32> = after.results.iter().map(|r| r.rerank_score.expect("reranked")).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{who} ({mode:?}): {scores:?}");
            assert!(before.results.iter().all(|r| r.rerank_score.is_none()));
        }
        // A small limit: the first 8 fused results are scored, the best 3 shown.
        let q = s.query("restart the deploy", Viewer::User(user), 3, Mode::Hybrid);
        let (before, after) = (plain.ask(&q).await.unwrap(), reranked.ask(&q).await.unwrap());
        assert_eq!(after.results.len(), before.results.len(), "{who}");
        let scores: Vec<f32> = after.results.iter().map(|r| r.rerank_score.expect("reranked")).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{who}: {scores:?}");
        assert!(after.results.iter().all(|r| readable.contains(&r.channel_id)), "{who}");
    }
    // A reranker that is not installed is one clear error, before any search.
    let options = SearchOptions { reranker: Some("nope".into()), ..SearchOptions::default() };
    let missing = Searcher::new(s.store.clone(), s.backend(), s.models.clone(), None, options);
    let err = missing.ask(&s.query("restart", Viewer::Operator, 5, Mode::Hybrid)).await.unwrap_err().to_string();
    assert!(err.contains("reranker nope") && err.contains("fetch-model.sh"), "{err}");

    // The command line (the embedded store is closed here first: one process at a time holds it):
    // --rerank NAME, the score in the JSON and the text, and `models` lists rerankers apart.
    drop((plain, reranked, missing));
    let g = s.guild.to_string();
    let mut c = bin(&s);
    c.args(["ask", "restart the deploy", "--guild", &g, "--json", "--limit", "3", "--rerank", "tiny-reranker"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!results.is_empty() && results.iter().all(|r| r["rerank_score"].is_number()), "{out}");
    let mut c = bin(&s);
    c.args(["ask", "restart the deploy", "--guild", &g, "--rerank", "tiny-reranker"]);
    let (code, out, err) = run(c).await;
    assert!(code == Some(0) && out.contains("reranked "), "{out}{err}");
    let mut c = bin(&s);
    c.args(["ask", "restart", "--guild", &g, "--rerank", "nope"]);
    let (code, _, err) = run(c).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("reranker nope"), "{err}");
    assert_eq!(err.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    let mut c = bin(&s);
    c.arg("models");
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tiny-reranker: reranker") && !out.contains("tiny-reranker: unusable"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_refreshed_when_stale_and_never_guessed() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let s = setup(world, None).await;
    let staff_room = s.channel_ids(&BTreeSet::from(["staff-room"]));
    let sees_staff_room = |a: &Answer| a.results.iter().any(|r| staff_room.contains(&r.channel_id));

    // Stage one keeps roles, overwrites and the bot's own member record.
    let bot = s.fake.world().bot().id;
    let stored = s.store.member(s.guild, bot).unwrap().expect("the bot's member record is stored");
    assert_eq!(stored.roles.map(|r| r.len()), Some(1));
    assert!(s.store.guild_access(s.guild).unwrap().unwrap().synced_at.is_some());

    // Fresh facts: no request to Discord is needed for roles and overwrites.
    let searcher = s.searcher(true, Duration::from_secs(600));
    let answer = searcher.ask(&s.query("restart", Viewer::User(cast.staff), 100_000, Mode::Vector)).await.unwrap();
    assert!(sees_staff_room(&answer));

    // Discord takes the Staff role away: once the stored facts are stale, it shows.
    let staff_role = {
        let mut world = s.fake.world();
        let g = &mut world.guilds[0];
        let role = g.roles.iter().find(|r| r.name == "Staff").unwrap().id;
        g.members.insert(cast.staff, vec![]);
        role
    };
    let answer = searcher.ask(&s.query("restart", Viewer::User(cast.staff), 100_000, Mode::Vector)).await.unwrap();
    assert!(sees_staff_room(&answer), "within the allowed age the stored roles are used");
    let stale = s.searcher(true, Duration::ZERO);
    let answer = stale.ask(&s.query("restart", Viewer::User(cast.staff), 100_000, Mode::Vector)).await.unwrap();
    assert!(!sees_staff_room(&answer), "the refreshed roles no longer include Staff");
    // And an overwrite change at Discord reaches search the same way.
    {
        let mut world = s.fake.world();
        let g = &mut world.guilds[0];
        g.members.insert(cast.staff, vec![staff_role]);
        let room = g.channels.iter_mut().find(|c| c.name == "staff-room").unwrap();
        room.overwrites.retain(|o| o.id != staff_role);
    }
    let answer = stale.ask(&s.query("restart", Viewer::User(cast.staff), 100_000, Mode::Vector)).await.unwrap();
    assert!(!sees_staff_room(&answer), "the refreshed overwrites hide staff-room");

    // Stale facts and no way to refresh them: nothing, with a clear error.
    let offline = s.searcher(false, Duration::ZERO);
    let err = offline.ask(&s.query("restart", Viewer::User(cast.plain), 5, Mode::Hybrid)).await.unwrap_err();
    assert!(matches!(err, SearchError::Access(_)), "{err}");
    assert!(err.to_string().contains("showing nothing") && err.to_string().contains("DISCORD_TOKEN"), "{err}");
    // Discord failing: nothing either.
    s.fake.set_faults(vec![Fault::always(FaultKind::Status(500)).on("/members/")]);
    let err = stale.ask(&s.query("restart", Viewer::User(cast.plain), 5, Mode::Hybrid)).await.unwrap_err();
    assert!(err.to_string().contains("reading the user's roles failed"), "{err}");
    s.fake.set_faults(vec![]);
    // A private thread whose membership cannot be checked is left out, and said so.
    s.fake.set_faults(vec![Fault::always(FaultKind::Status(500)).on("/thread-members/")]);
    let answer = stale.ask(&s.query("restart", Viewer::User(cast.thread_member), 100_000, Mode::Vector)).await.unwrap();
    let private = s.channel_ids(&BTreeSet::from(["private plans"]));
    assert!(!answer.results.iter().any(|r| private.contains(&r.channel_id)));
    assert!(answer.notes.iter().any(|n| n.contains("private thread")), "{:?}", answer.notes);
    s.fake.set_faults(vec![]);
    // The operator needs no Discord at all.
    let answer = offline.ask(&s.query("restart", Viewer::Operator, 5, Mode::Hybrid)).await.unwrap();
    assert_eq!(answer.results.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_questions_and_guilds_get_one_clear_error() {
    let s = setup(World::generate(&WorldSpec::plain(2, 150)), None).await;
    let searcher = s.searcher(false, Duration::from_secs(600));
    let ask = |text: &str, guilds: Vec<u64>| Query {
        text: text.into(),
        guilds,
        viewer: Viewer::Operator,
        limit: 5,
        mode: Mode::Hybrid,
        filters: Default::default(),
    };
    let err = searcher.ask(&ask("   ", vec![s.guild])).await.unwrap_err();
    assert!(matches!(err, SearchError::EmptyQuestion));
    let err = searcher.ask(&ask("restart", vec![])).await.unwrap_err();
    assert!(matches!(err, SearchError::NoGuilds));
    let err = searcher.ask(&ask("restart", vec![s.guild, 42])).await.unwrap_err();
    assert!(matches!(err, SearchError::UnknownGuild(42)), "{err}");
    // A guild in the archive without an index.
    s.store.activate_index(s.guild, "tiny").unwrap();
    s.store.conn().unwrap().execute("DELETE FROM active_indexes", []).unwrap();
    let err = searcher.ask(&ask("restart", vec![s.guild])).await.unwrap_err();
    assert!(matches!(err, SearchError::NoIndex(_)), "{err}");
    assert!(err.to_string().contains("discord-indexer index --guild"), "{err}");
    s.store.activate_index(s.guild, "tiny").unwrap();
    // The active model is gone from disk.
    std::fs::remove_dir_all(s.models.join("tiny")).unwrap();
    // A vector search fails and says where models were looked for; a hybrid
    // one answers from the keyword index alone, with a note that says why.
    let err = searcher.ask(&Query { mode: Mode::Vector, ..ask("restart", vec![s.guild]) }).await.unwrap_err();
    assert!(err.to_string().contains("no model \"tiny\""), "{err}");
    let answer = searcher.ask(&ask("restart", vec![s.guild])).await.unwrap();
    assert_eq!(answer.results.len(), 5);
    assert!(answer.results.iter().all(|r| r.vector_rank.is_none() && r.keyword_rank.is_some()));
    assert_eq!(answer.notes.len(), 1, "{:?}", answer.notes);
    assert!(answer.notes[0].contains("keyword results only") && answer.notes[0].contains("no model \"tiny\""));
    // Keyword search needs no model.
    let answer = searcher.ask(&Query { mode: Mode::Keyword, ..ask("restart", vec![s.guild]) }).await.unwrap();
    assert_eq!(answer.results.len(), 5);
    // Questions that are all punctuation or FTS syntax are not errors.
    for q in ["\"", "NEAR(", "a OR b AND", "* ^ -", "'); DROP TABLE messages; --"] {
        searcher.ask(&Query { mode: Mode::Keyword, ..ask(q, vec![s.guild]) }).await.unwrap();
    }
}

fn bin(s: &Setup) -> Command {
    s.cli()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ask_command_prints_results_for_people_and_scripts() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let s = setup(world, None).await;
    let g = s.guild.to_string();

    let mut c = bin(&s);
    c.args(["ask", "restart the helm chart", "--guild", &g, "--json", "--limit", "3"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("searched as the operator"), "{err}");
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert_eq!(r["guild_id"], g.as_str());
        let channel = r["channel_id"].as_str().unwrap();
        let ids: Vec<&str> = r["message_ids"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert!(!ids.is_empty());
        // The link and time are of the message the result is about; the chunk's span stays.
        let message = r["message_id"].as_str().unwrap();
        assert!(ids.contains(&message), "{r}");
        assert_eq!(r["jump_url"], format!("https://discord.com/channels/{g}/{channel}/{message}"));
        let time = |id: &str| snowflake::format_time(snowflake::timestamp(id.parse().unwrap()));
        assert_eq!((&r["time"], &r["start"]), (&time(message).into(), &time(ids[0]).into()), "{r}");
        assert!(r["score"].as_f64().unwrap() > 0.0);
        assert!(!r["text"].as_str().unwrap().is_empty());
        assert!(!r["authors"].as_array().unwrap().is_empty());
    }

    // Filters by name: a channel (`#` allowed), an author, a span of dates.
    let general = s.channel_ids(&["general"].into_iter().collect());
    let mut c = bin(&s);
    c.args(["ask", "restart", "--guild", &g, "--json", "--limit", "1000", "--channel", "#General"]);
    c.args(["--after", "2000-01-01", "--before", "2100-01-01 00:00"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!results.is_empty());
    for r in &results {
        let (channel, parent) = (r["channel_id"].as_str().unwrap(), r["parent_id"].as_str().unwrap_or_default());
        assert!(general.iter().any(|c| c.to_string() == channel || c.to_string() == parent), "{r}");
    }
    let author = results[0]["authors"][0].as_str().unwrap().to_owned();
    let mut c = bin(&s);
    c.args(["ask", "restart", "--guild", &g, "--json", "--limit", "1000", "--author", &author]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(
        !results.is_empty()
            && results.iter().all(|r| r["authors"].as_array().unwrap().contains(&author.clone().into()))
    );

    // Text output, all guilds by default.
    let mut c = bin(&s);
    c.args(["ask", "restart the helm chart"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1. ") && out.contains("https://discord.com/channels/"), "{out}");
    assert!(err.contains("searched as the operator"), "{err}");
    // --quiet: the same results, nothing else on stderr.
    let mut c = bin(&s);
    c.args(["ask", "restart the helm chart", "--quiet"]);
    let (code, quiet_out, err) = run(c).await;
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert_eq!(quiet_out, out);

    // As a user, through the fake Discord for their roles.
    let mut c = bin(&s);
    c.env("DISCORD_TOKEN", s.fake.token()).env("DISCORD_API_BASE", s.fake.base_url());
    c.args(["ask", "restart", "--guild", &g, "--json", "--limit", "1000", "--as-user", &cast.plain.to_string()]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains(&s.fake.token()));
    let banner = err.lines().find(|l| l.starts_with("searched as ")).unwrap_or_else(|| panic!("a banner: {err}"));
    assert!(banner.contains(&format!("user {}", cast.plain)), "{banner}");
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    let public = s.channel_ids(&PUBLIC.iter().copied().collect());
    assert!(!results.as_array().unwrap().is_empty());
    for r in results.as_array().unwrap() {
        assert!(public.contains(&r["channel_id"].as_str().unwrap().parse().unwrap()), "{r}");
    }

    // Bad input: one message, exit 2.
    for (args, expect) in [
        (vec!["ask", "  ", "--guild", &g], "the question is empty"),
        (vec!["ask", "x", "--guild", "42"], "guild 42 is not in the archive"),
        (vec!["ask", "x", "--guild", &g, "--as-user", "7"], "no DISCORD_TOKEN"),
        (vec!["ask", "x", "--guild", &g, "--channel", "no-such-channel"], "no channel named \"no-such-channel\""),
        (vec!["ask", "x", "--guild", &g, "--author", "nobody-at-all"], "no user named \"nobody-at-all\""),
        (vec!["ask", "x", "--guild", &g, "--after", "2024-05-02", "--before", "2024-05-01"], "must be earlier"),
        (vec!["ask", "x", "--guild", &g, "--after", "yesterday"], "not a date"),
    ] {
        let mut c = bin(&s);
        c.args(&args);
        let (code, _, err) = run(c).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("searched as"), "bad input comes before any banner: {err}");
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    }
}

/// The asker's filters (channels with their threads, authors, a time span)
/// narrow both searches exactly, and only within what the viewer may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_both_searches_exactly() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    filters_narrow_both_searches_exactly_on(setup(world, None).await, cast).await
}

/// The same on a real Qdrant server: the filters run inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_both_searches_exactly_on_a_qdrant_server() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    if let Some(s) = setup_on_server(world, "filters_narrow_both_searches_exactly_on_a_qdrant_server").await {
        filters_narrow_both_searches_exactly_on(s, cast).await
    }
}

async fn filters_narrow_both_searches_exactly_on(s: Setup, cast: AccessCast) {
    let searcher = s.searcher(true, Duration::from_secs(600));
    let collection = s.backend().open_existing(s.guild, "tiny").await.unwrap().unwrap();
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    let rows = |sql: &str| -> Vec<(u64, u64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // Each chunk: its channel, messages and authors, and the first message of each of its points.
    struct Chunk {
        channel: u64,
        messages: Vec<u64>,
        authors: Vec<u64>,
        starts: Vec<u64>,
    }
    let manifest = rows("SELECT chunk_id, parts FROM index_chunks");
    let mut chunks: BTreeMap<u64, Chunk> = BTreeMap::new();
    for (id, p) in collection.payloads(manifest.iter().map(|m| m.0).collect()).await.unwrap() {
        let c = Chunk {
            channel: p.channel_id,
            messages: p.message_ids,
            authors: p.author_ids,
            starts: vec![p.first_message_id],
        };
        chunks.insert(id, c);
    }
    let parts: Vec<u64> = manifest.iter().flat_map(|&(c, n)| (0..n as u32).map(move |i| part_id(c, i))).collect();
    for (_, p) in collection.payloads(parts).await.unwrap() {
        chunks.get_mut(&p.part_of).unwrap().starts.push(p.first_message_id);
    }
    let parent: BTreeMap<u64, u64> = rows("SELECT id, parent_id FROM channels").into_iter().collect();
    let matching: BTreeMap<u64, u64> =
        rows("SELECT id, author_id FROM messages WHERE lower(content) LIKE '%restart%'").into_iter().collect();
    // The channel with the most threads, the most frequent author, the median chunk start.
    let channel = rows(
        "SELECT parent_id, count(*) FROM channels WHERE type IN (10, 11, 12) GROUP BY parent_id ORDER BY 2 DESC LIMIT 1",
    )[0]
    .0;
    assert!(chunks.values().any(|k| parent.get(&k.channel) == Some(&channel)), "its threads have chunks");
    let mut by_author: BTreeMap<u64, usize> = BTreeMap::new();
    for k in chunks.values() {
        for a in &k.authors {
            *by_author.entry(*a).or_default() += 1;
        }
    }
    let author = *by_author.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let mut starts: Vec<u64> = chunks.values().map(|k| k.starts[0]).collect();
    starts.sort_unstable();
    let bound = starts[starts.len() / 2];

    // Whether a chunk (m = 0) or its matching message m passes the filter.
    let (parent_of, author_of) = (&parent, &matching);
    type Keep<'a> = Box<dyn Fn(&Chunk, u64) -> bool + 'a>;
    let cases: Vec<(&str, Filters, Keep)> = vec![
        (
            "channel and its threads",
            Filters { channels: vec![channel], ..Default::default() },
            Box::new(move |k: &Chunk, _| k.channel == channel || parent_of.get(&k.channel) == Some(&channel)),
        ),
        (
            "author",
            Filters { authors: vec![author], ..Default::default() },
            Box::new(move |k: &Chunk, m| if m == 0 { k.authors.contains(&author) } else { author_of[&m] == author }),
        ),
        (
            "after",
            Filters { after: Some(bound), ..Default::default() },
            Box::new(move |k: &Chunk, m| if m == 0 { k.starts.iter().any(|&s| s >= bound) } else { m >= bound }),
        ),
        (
            "before",
            Filters { before: Some(bound), ..Default::default() },
            Box::new(move |k: &Chunk, m| if m == 0 { k.starts.iter().any(|&s| s < bound) } else { m < bound }),
        ),
    ];
    let staff = matrix(&cast).into_iter().find(|(who, ..)| *who == "staff role").unwrap();
    let viewers = [(Viewer::Operator, None), (Viewer::User(staff.1), Some(s.channel_ids(&staff.2)))];
    for (label, filters, keep) in &cases {
        for (viewer, readable) in &viewers {
            let may_read = |c: u64| readable.as_ref().is_none_or(|r| r.contains(&c));
            // Vector: every chunk (or part) the filter lets through; keyword: the
            // chunks of the matching messages it lets through; hybrid: both.
            let vector: BTreeSet<u64> =
                chunks.iter().filter(|(_, k)| may_read(k.channel) && keep(k, 0)).map(|(id, _)| *id).collect();
            let keyword: BTreeSet<u64> = chunks
                .iter()
                .filter(|(_, k)| {
                    may_read(k.channel) && k.messages.iter().any(|m| matching.contains_key(m) && keep(k, *m))
                })
                .map(|(id, _)| *id)
                .collect();
            assert!(!vector.is_empty() && vector.len() < chunks.len(), "{label}: the filter must select some");
            for (mode, expected) in
                [(Mode::Vector, vector.clone()), (Mode::Keyword, keyword.clone()), (Mode::Hybrid, &vector | &keyword)]
            {
                let q = Query { filters: filters.clone(), ..s.query("restart", *viewer, 100_000, mode) };
                let found = chunk_ids(&searcher.ask(&q).await.unwrap());
                assert_eq!(found, expected, "{label}, {viewer:?}, {mode:?}");
            }
        }
    }
}

/// Retrieval quality with the real all-MiniLM-L6-v2 (installed by
/// scripts/fetch-model.sh; CI sets REQUIRE_MODELS=1): fixture conversations
/// among generated chatter, and questions with known answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_questions_find_their_conversations() {
    let Some(model) = installed_minilm("known_questions_find_their_conversations") else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/retrieval.json")).unwrap()).unwrap();
    let mut world = World::generate(&WorldSpec::plain(2, 300));
    let conversations: Vec<Vec<(usize, String)>> = fixture["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["author"].as_u64().unwrap() as usize, m["text"].as_str().unwrap().to_owned()))
                .collect()
        })
        .collect();
    let (_, ids) = world.add_conversations("office", "2025-02-01T09:00:00Z", &conversations);
    let names: Vec<&str> =
        fixture["conversations"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let answer_of: BTreeMap<&str, BTreeSet<u64>> =
        names.iter().zip(&ids).map(|(n, ids)| (*n, ids.iter().copied().collect())).collect();
    let s = setup(world, Some(&model)).await;
    let searcher = s.searcher(false, Duration::from_secs(600));

    let questions = fixture["questions"].as_array().unwrap();
    let mut found: BTreeMap<(Mode, &str), usize> = BTreeMap::new();
    let mut first: BTreeMap<Mode, usize> = BTreeMap::new();
    let mut misses = Vec::new();
    for q in questions {
        let (text, answer, kind) =
            (q["question"].as_str().unwrap(), q["answer"].as_str().unwrap(), q["kind"].as_str().unwrap());
        for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
            let a = searcher.ask(&s.query(text, Viewer::Operator, 5, mode)).await.unwrap();
            let is_answer = |r: &SearchResult| r.message_ids.iter().any(|m| answer_of[answer].contains(m));
            if a.results.first().is_some_and(is_answer) {
                *first.entry(mode).or_default() += 1;
            } else if mode == Mode::Hybrid {
                let top = &a.results[0];
                misses.push(format!(
                    "Hybrid's first answer to {text:?} is another chunk (vector rank {:?}, keyword rank {:?}): {:?}",
                    top.vector_rank, top.keyword_rank, top.text
                ));
            }
            if a.results.iter().any(is_answer) {
                *found.entry((mode, kind)).or_default() += 1;
            } else {
                misses.push(format!("{mode:?} missed {text:?}"));
            }
        }
    }
    let n = |kind: &str| questions.iter().filter(|q| q["kind"] == kind).count();
    let got = |mode: Mode, kind: &str| found.get(&(mode, kind)).copied().unwrap_or(0);
    let report = format!("recall@5 {found:?}\nrecall@1 {first:?}\n{}", misses.join("\n"));
    eprintln!("{report}");
    // Exact strings are the keyword path's job, paraphrases the vector path's.
    assert_eq!(got(Mode::Keyword, "exact"), n("exact"), "{report}");
    assert!(got(Mode::Vector, "paraphrase") >= n("paraphrase") - 1, "{report}");
    // Hybrid finds every answer, so at least as many as either path alone, and ranks as well first.
    assert_eq!(got(Mode::Hybrid, "exact") + got(Mode::Hybrid, "paraphrase"), questions.len(), "{report}");
    for mode in [Mode::Vector, Mode::Keyword] {
        assert!(first.get(&Mode::Hybrid) >= first.get(&mode), "{report}");
    }
}

/// Two generated guilds loaded into one archive from the fake server, a
/// member of both, and the tiny model.
struct TwoGuilds {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    models: std::path::PathBuf,
    store: Store,
    fake: fake_discord::FakeDiscord,
    first: u64,
    second: u64,
    member: u64,
}

async fn two_guilds() -> TwoGuilds {
    let mut world = World::generate(&WorldSpec::plain(2, 150));
    let first = world.guilds[0].id;
    let second = world.add_guild_from(World::generate(&WorldSpec { seed: 8, ..WorldSpec::plain(2, 150) }));
    let member = world.users[7].id;
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, models) = (dir.path().join("data"), dir.path().join("models"));
    let store = Store::open(&data).unwrap();
    let options = discord_indexer::load::LoadOptions { guilds: vec![first, second], channels: vec![], concurrency: 4 };
    let summary = discord_indexer::load::load(&client(&fake), &store, &options, &|_| {}, &CancellationToken::new())
        .await
        .unwrap();
    assert!(summary.ok);
    tiny::write(&models.join("tiny"), &TinySpec::default()).unwrap();
    TwoGuilds { _dir: dir, data, models, store, fake, first, second, member }
}

/// Two guilds in one archive: one question searches both, results merged by score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_guilds_are_searched_together() {
    let TwoGuilds { _dir, data, models, store, fake, first, second, member } = two_guilds().await;
    let backend = Backend::new(&data, None, None).unwrap();
    let searcher =
        Searcher::new(store.clone(), backend.clone(), models.clone(), Some(client(&fake)), SearchOptions::default());
    let ask = |viewer, limit, mode| Query {
        text: "restart the staging deploy".into(),
        guilds: vec![first, second],
        viewer,
        limit,
        mode,
        filters: Default::default(),
    };
    let mut chunks = 0;
    for guild in [first, second] {
        if guild == second {
            // One guild without an index: a clear error naming it.
            let err = searcher.ask(&ask(Viewer::Operator, 5, Mode::Hybrid)).await.unwrap_err();
            assert!(matches!(err, SearchError::NoIndex(g) if g == second), "{err}");
        }
        let embedder =
            Arc::new(Embedder::load(ModelInfo::find(&models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
        let mut o = IndexOptions::new(guild);
        o.activate = true;
        chunks +=
            index::index(&store, &backend, embedder, &o, &|_| {}, &CancellationToken::new()).await.unwrap().chunks;
    }
    // Every chunk once: parts stand for their chunks.
    let all = searcher.ask(&ask(Viewer::Operator, 100_000, Mode::Vector)).await.unwrap();
    assert_eq!(all.results.len() as u64, chunks);
    assert_eq!(all.searched, vec![first.min(second), first.max(second)]);
    let guilds: BTreeSet<u64> = all.results.iter().map(|r| r.guild_id).collect();
    assert_eq!(guilds, BTreeSet::from([first, second]));
    assert!(all.results.windows(2).all(|w| w[0].score >= w[1].score), "merged by score");
    for r in &all.results {
        assert!(r.jump_url.starts_with(&format!("https://discord.com/channels/{}/", r.guild_id)));
    }
    // Hybrid, as a member of both: the top results may come from either guild, the keyword list spans both.
    let top = searcher.ask(&ask(Viewer::User(member), 20, Mode::Keyword)).await.unwrap();
    let guilds: BTreeSet<u64> = top.results.iter().map(|r| r.guild_id).collect();
    assert_eq!(guilds.len(), 2, "keyword hits from both guilds");
    let hybrid = searcher.ask(&ask(Viewer::User(member), 20, Mode::Hybrid)).await.unwrap();
    assert_eq!(hybrid.results.len(), 20);
    assert!(hybrid.results.windows(2).all(|w| w[0].score >= w[1].score));
}

/// The shared layout (`[qdrant] layout = "shared"`): two guilds in one
/// collection per model. A search of one guild returns only that guild's
/// points, in every mode and for the operator and a member of both; each
/// guild counts only its own points; dropping one guild's index leaves the
/// other's whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guilds_sharing_a_collection_never_see_each_other() {
    use discord_indexer::vector::{Layout, ServerOptions};
    let Some(server) = QdrantServer::start("guilds_sharing_a_collection_never_see_each_other").await else { return };
    let TwoGuilds { _dir, data, models, store, fake, first, second, member } = two_guilds().await;
    let layout = ServerOptions { layout: Layout::Shared, ..Default::default() };
    let backend = Backend::with_options(&data, Some(&server.url()), None, layout).unwrap();
    assert_eq!(backend.collection_name(first, "tiny"), backend.collection_name(second, "tiny"));
    let embedder =
        Arc::new(Embedder::load(ModelInfo::find(&models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
    let mut points = BTreeMap::new();
    for guild in [first, second] {
        let mut o = IndexOptions::new(guild);
        o.activate = true;
        let s = index::index(&store, &backend, embedder.clone(), &o, &|_| {}, &CancellationToken::new()).await.unwrap();
        assert_eq!(s.points, s.chunks + s.parts);
        points.insert(guild, (s.chunks, s.points));
    }
    let searcher =
        Searcher::new(store.clone(), backend.clone(), models.clone(), Some(client(&fake)), SearchOptions::default());
    for guild in [first, second] {
        let collection = backend.open_existing(guild, "tiny").await.unwrap().unwrap();
        assert_eq!(collection.count().await.unwrap(), points[&guild].1, "each guild counts its own points");
        for viewer in [Viewer::Operator, Viewer::User(member)] {
            for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
                let q = Query {
                    text: "restart the staging deploy".into(),
                    guilds: vec![guild],
                    viewer,
                    limit: 100_000,
                    mode,
                    filters: Default::default(),
                };
                let answer = searcher.ask(&q).await.unwrap();
                assert!(!answer.results.is_empty(), "{guild} {mode:?}");
                assert!(answer.results.iter().all(|r| r.guild_id == guild), "{mode:?}: another guild's point");
                if mode == Mode::Vector && viewer == Viewer::Operator {
                    assert_eq!(answer.results.len() as u64, points[&guild].0, "every chunk of the guild, no other");
                }
            }
        }
    }
    // One guild's index dropped: the other's points stay, whole.
    backend.drop_collection(first, "tiny").await.unwrap();
    assert!(backend.open_existing(first, "tiny").await.unwrap().is_none());
    let rest = backend.open_existing(second, "tiny").await.unwrap().unwrap();
    assert_eq!(rest.count().await.unwrap(), points[&second].1);
}

/// A damaged embedded store (here: a truncated vector file, on which
/// qdrant-edge panics) is one error naming the store and the way out, not a
/// crash; the rebuild it names makes search work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_vector_store_is_one_clear_error_and_a_rebuild_repairs_it() {
    let s = setup(World::generate(&WorldSpec::plain(2, 60)), None).await;
    let g = s.guild.to_string();
    let segments = s.data.join("qdrant").join(&g).join("tiny").join("segments");
    let mut damaged = 0;
    for segment in std::fs::read_dir(&segments).unwrap() {
        let file = segment.unwrap().path().join("vector_storage-chunk/vectors/chunk_0.mmap");
        if file.exists() {
            std::fs::File::options().write(true).open(&file).unwrap().set_len(0).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no vector file under {}", segments.display());

    let mut c = bin(&s);
    c.args(["ask", "restart the deploy", "--guild", &g]);
    let (code, _, err) = run(c).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("is damaged") && errors[0].contains(&format!("index --guild {g} --model tiny --rebuild")),
        "{err}"
    );
    // `status` says so too (not "? points"), with a non-zero exit.
    let mut c = bin(&s);
    c.args(["status"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(out.contains("is damaged") && out.contains(&format!("index --guild {g} --model tiny --rebuild")), "{out}");

    let mut c = bin(&s);
    c.args(["index", "--guild", &g, "--model", "tiny", "--rebuild"]);
    let (code, _, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert_ask_answers(&s).await;
}

/// `ask` over the CLI exits 0 with some results (after a repair).
async fn assert_ask_answers(s: &Setup) {
    let mut c = bin(s);
    c.args(["ask", "restart the deploy", "--guild", &s.guild.to_string(), "--json"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap().is_empty());
}

/// A store that silently lost points (its id trackers truncated: every point
/// gone, no panic): `status` says so, `ask` refuses to answer from what is
/// left, and a plain `index` re-embeds exactly what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_points_is_reported_and_index_re_embeds_them() {
    let s = setup(World::generate(&WorldSpec::plain(2, 60)), None).await;
    let g = s.guild.to_string();
    let status = |s: &Setup| {
        let mut c = bin(s);
        c.args(["status", "--json"]);
        c
    };
    let (code, out, err) = run(status(&s)).await;
    assert_eq!(code, Some(0), "{err}");
    let before: serde_json::Value = serde_json::from_str(&out).unwrap();
    let index = &before["guilds"][0]["indexes"][0];
    let expected = index["points"].as_u64().unwrap();
    assert_eq!(expected, index["chunks"].as_u64().unwrap() + index["parts"].as_u64().unwrap());
    assert!(index.get("problem").is_none(), "{index}");

    let segments = s.data.join("qdrant").join(&g).join("tiny").join("segments");
    let mut truncated = 0;
    for segment in std::fs::read_dir(&segments).unwrap() {
        let segment = segment.unwrap().path();
        for file in ["mutable_id_tracker.mappings", "mutable_id_tracker.versions"].map(|f| segment.join(f)) {
            if file.exists() {
                std::fs::File::options().write(true).open(&file).unwrap().set_len(0).unwrap();
                truncated += 1;
            }
        }
    }
    assert!(truncated > 0, "no id tracker under {}", segments.display());

    let (code, out, err) = run(status(&s)).await;
    assert_eq!(code, Some(1), "a damaged index is worth a non-zero exit: {err}");
    let damaged: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problem = damaged["guilds"][0]["indexes"][0]["problem"].as_str().unwrap_or_default().to_owned();
    assert!(problem.starts_with("damaged") && problem.contains(&format!("of the {expected} points")), "{damaged}");

    let mut c = bin(&s);
    c.args(["ask", "restart the deploy", "--guild", &g]);
    let (code, out, err) = run(c).await;
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(
        err.contains("is damaged: the vector store holds 0 of")
            && err.contains(&format!("index --guild {g} --model tiny")),
        "{err}"
    );

    // A plain rerun (not --rebuild) finds what is missing and embeds it again.
    let mut c = bin(&s);
    c.args(["index", "--guild", &g, "--model", "tiny", "--json"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary = if summary.is_array() { summary[0].clone() } else { summary };
    assert_eq!(summary["points"].as_u64(), Some(expected), "{summary}");
    assert_eq!(summary["repaired"].as_u64(), index["chunks"].as_u64(), "every chunk had lost its point: {summary}");
    let (code, out, err) = run(status(&s)).await;
    assert_eq!(code, Some(0), "{err}");
    let after: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(after["guilds"][0]["indexes"][0].get("problem").is_none(), "{after}");
    assert_ask_answers(&s).await;
}

/// Random bytes over the stored vectors (no panic, no lost point): the
/// sampled read-back at open notices, `ask` refuses to answer from them,
/// `status` says so, and a plain `index` re-embeds every damaged chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_vectors_are_noticed_and_index_re_embeds_them() {
    let s = setup(World::generate(&WorldSpec::plain(2, 60)), None).await;
    let g = s.guild.to_string();
    let segments = s.data.join("qdrant").join(&g).join("tiny").join("segments");
    let mut garbled = 0;
    for segment in std::fs::read_dir(&segments).unwrap() {
        let file = segment.unwrap().path().join("vector_storage-chunk/vectors/chunk_0.mmap");
        if file.exists() {
            let len = std::fs::metadata(&file).unwrap().len() as usize;
            let noise: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            std::fs::write(&file, noise).unwrap();
            garbled += 1;
        }
    }
    assert!(garbled > 0, "no vector file under {}", segments.display());

    let mut c = bin(&s);
    c.args(["ask", "restart the deploy", "--guild", &g]);
    let (code, out, err) = run(c).await;
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(err.contains("sampled vectors are missing or corrupted"), "{err}");
    let mut c = bin(&s);
    c.args(["status"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(out.contains("damaged") && out.contains("corrupted"), "{out}");

    let mut c = bin(&s);
    c.args(["index", "--guild", &g, "--model", "tiny", "--json"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(summary[0]["repaired"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary[0]["points"],
        serde_json::json!(summary[0]["chunks"].as_u64().unwrap() + summary[0]["parts"].as_u64().unwrap())
    );
    assert_ask_answers(&s).await;
    let mut c = bin(&s);
    c.args(["status"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{out}{err}");
}

/// Right after `load`, before any index: keyword search answers with single
/// messages (the keyword index is written by `load`), as the operator and
/// within a member's permissions; the other modes say an index is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_search_works_before_any_index() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    assert!(run_load(&fake, &store, 4).await.unwrap().ok);
    let guild = guild_id(&fake);
    let searcher = Searcher::new(
        store.clone(),
        Backend::new(&data, None, None).unwrap(),
        dir.path().join("models"),
        Some(client(&fake)),
        SearchOptions::default(),
    );
    let ask = |viewer, mode| Query {
        text: "restart".into(),
        guilds: vec![guild],
        viewer,
        limit: 1000,
        mode,
        filters: Default::default(),
    };
    let conn = rusqlite::Connection::open(data.join("archive.db")).unwrap();
    let matching: BTreeMap<u64, u64> = conn
        .prepare(
            "SELECT m.id, m.channel_id FROM messages m JOIN users u ON u.id = m.author_id
             WHERE lower(m.content) LIKE '%restart%' AND u.bot = 0 AND m.type IN (0, 19, 21)",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let answer = searcher.ask(&ask(Viewer::Operator, Mode::Keyword)).await.unwrap();
    let found: BTreeMap<u64, u64> = answer.results.iter().map(|r| (r.message_ids[0], r.channel_id)).collect();
    assert_eq!(found, matching, "every matching message, each a result of its own");
    for r in &answer.results {
        assert_eq!(r.message_ids.len(), 1);
        assert!(r.text.to_lowercase().contains("restart") && !r.authors.is_empty() && !r.channel_name.is_empty());
        assert_eq!(r.jump_url, format!("https://discord.com/channels/{guild}/{}/{}", r.channel_id, r.message_ids[0]));
    }
    // A member sees only the matching messages of what they may read.
    let (_, plain, names) = matrix(&cast).into_iter().find(|(who, ..)| *who == "no roles").unwrap();
    let world = fake.world().clone();
    let readable: BTreeSet<u64> =
        world.guilds[0].channels.iter().filter(|c| names.contains(c.name.as_str())).map(|c| c.id).collect();
    let answer = searcher.ask(&ask(Viewer::User(plain), Mode::Keyword)).await.unwrap();
    let expected: BTreeSet<u64> = matching.iter().filter(|(_, c)| readable.contains(c)).map(|(m, _)| *m).collect();
    assert!(!expected.is_empty() && expected.len() < matching.len());
    assert_eq!(answer.results.iter().map(|r| r.message_ids[0]).collect::<BTreeSet<_>>(), expected);
    // Vector and hybrid search need an index.
    for mode in [Mode::Vector, Mode::Hybrid] {
        let err = searcher.ask(&ask(Viewer::Operator, mode)).await.unwrap_err();
        assert!(matches!(err, SearchError::NoIndex(g) if g == guild), "{err}");
        assert!(err.to_string().contains("--mode keyword"), "{err}");
    }
    // The CLI finds the loaded guild by itself in keyword mode.
    let mut c = Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
    c.env_remove("QDRANT_URL").env_remove("DISCORD_TOKEN").arg("--data-dir").arg(&data);
    c.args(["ask", "restart", "--mode", "keyword", "--json", "--limit", "3"]);
    let (code, out, err) = run(c).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap().len(), 3);
}

/// A question that names a thread's or forum post's title finds the post
/// through the keyword path, though no message says the words; a member who
/// may not read a private thread does not find it by its title either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_and_forum_post_titles_are_keyword_searchable() {
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let rename = |world: &mut World, from: &str, to: &str| {
        let c = world.guilds[0].channels.iter_mut().find(|c| c.name == from).unwrap();
        c.name = to.into();
        c.id
    };
    let post = rename(&mut world, "Old question", "Quillfeather rollout checklist");
    let private = rename(&mut world, "mods only", "Wintergreen escalation");
    let s = setup(world, None).await;
    let first = |channel: u64| -> u64 {
        let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
        conn.query_row("SELECT min(id) FROM messages WHERE channel_id = ?1", [channel as i64], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    {
        let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages WHERE lower(content) LIKE '%quillfeather%' OR lower(content) LIKE '%wintergreen%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "only the titles hold the words");
    }
    let searcher = s.searcher(true, Duration::from_secs(600));
    // Keyword: first; hybrid (a random tiny model on the vector side): among the results.
    for mode in [Mode::Keyword, Mode::Hybrid] {
        let a = searcher.ask(&s.query("quillfeather checklist", Viewer::Operator, 5, mode)).await.unwrap();
        let hit = a.results.iter().position(|r| r.channel_id == post && r.message_ids.contains(&first(post)));
        assert!(hit.is_some(), "{mode:?} found the post by its first message: {:?}", a.results);
        let a = searcher.ask(&s.query("wintergreen escalation", Viewer::Operator, 5, mode)).await.unwrap();
        let private_hit = a.results.iter().position(|r| r.channel_id == private);
        assert!(private_hit.is_some(), "{mode:?}");
        if mode == Mode::Keyword {
            assert_eq!((hit, private_hit), (Some(0), Some(0)));
        }
    }
    let a = searcher.ask(&s.query("wintergreen escalation", Viewer::User(cast.plain), 5, Mode::Keyword)).await.unwrap();
    assert!(a.results.iter().all(|r| r.channel_id != private), "a member without access never gets it");
    // The title index follows renames (as a load writes them).
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    conn.execute("UPDATE channels SET name = 'Plain title' WHERE id = ?1", [post as i64]).unwrap();
    let a = searcher.ask(&s.query("quillfeather", Viewer::Operator, 5, Mode::Keyword)).await.unwrap();
    assert!(a.results.iter().all(|r| r.channel_id != post), "the old title no longer matches");
}

/// A read-only data directory (a mounted snapshot, a backup): `status` and
/// `ask` work; commands that write say the archive is read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_still_answers() {
    let s = setup(World::generate(&WorldSpec::plain(2, 60)), None).await;
    let Some(disk) = Tmpfs::mount(256 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.0.path().join("data");
    // As a closed archive leaves it: no -wal or -shm file beside it.
    std::fs::create_dir(&data).unwrap();
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    conn.execute("VACUUM INTO ?1", [data.join("archive.db").to_str().unwrap()]).unwrap();
    let copy = std::process::Command::new("cp").arg("-a").arg(s.data.join("qdrant")).arg(&data).status().unwrap();
    assert!(copy.success());
    disk.remount("remount,ro");
    let g = s.guild.to_string();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
        c.env_remove("QDRANT_URL").env("DISCORD_INDEXER_MODELS_DIR", &s.models).arg("--data-dir").arg(&data);
        c.args(args);
        c
    };
    let (code, out, err) = run(cmd(&["status"])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("complete"), "{out}");
    for mode in ["hybrid", "keyword", "vector"] {
        let (code, out, err) = run(cmd(&["ask", "restart the deploy", "--guild", &g, "--mode", mode, "--json"])).await;
        assert_eq!(code, Some(0), "{mode}: {err}");
        assert!(!serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap().is_empty(), "{mode}");
    }
    let (code, _, err) = run(cmd(&["index", "--guild", &g, "--model", "tiny"])).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
}

/// A small world with a channel of these conversations (user index, text;
/// see `add_conversations`), indexed with the tiny model; each
/// conversation's message ids.
async fn setup_with(conversations: &[Vec<(usize, String)>]) -> (Setup, Vec<Vec<u64>>) {
    let mut world = World::generate(&WorldSpec::plain(2, 60));
    let (_, ids) = world.add_conversations("long-reads", "2025-02-01T09:00:00Z", conversations);
    (setup(world, None).await, ids)
}

fn conversation(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    lines.iter().map(|(who, text)| (*who, text.to_string())).collect()
}

/// A message too long for one chunk is cut into pieces, each a chunk: it is
/// one result (the best-ranked piece; the limit is filled from the rest), and
/// a keyword hit shows the piece that holds the word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_is_one_result_showing_the_piece_that_matched() {
    let mut words: Vec<String> = (0..450).map(|i| format!("filler{i}")).collect();
    words[400] = "zanzibarquux".into();
    let long = words.join(" ");
    let (s, ids) = setup_with(&[conversation(&[
        (1, "here is the design doc, pasted below"),
        (2, &long),
        (3, "that is a lot to read"),
    ])])
    .await;
    let long = ids[0][1];
    let chunks = s.chunks().await;
    let pieces = chunks.values().filter(|(_, m)| *m == [long]).count();
    assert!(pieces >= 3, "the long message is cut into pieces: {pieces}");
    let searcher = s.searcher(false, Duration::from_secs(600));
    let holding = |a: &Answer| -> Vec<SearchResult> {
        a.results.iter().filter(|r| r.message_ids.contains(&long)).cloned().collect()
    };
    for mode in [Mode::Keyword, Mode::Hybrid] {
        let a = searcher.ask(&s.query("zanzibarquux", Viewer::Operator, 5, mode)).await.unwrap();
        let found = holding(&a);
        assert_eq!(found.len(), 1, "{mode:?}: the message once");
        assert!(found[0].text.contains("zanzibarquux"), "{mode:?} shows the piece that matched: {}", found[0].text);
        assert_eq!(serde_json::to_value(&found[0]).unwrap()["message_id"], long.to_string());
    }
    for mode in [Mode::Vector, Mode::Hybrid] {
        let all = searcher.ask(&s.query("the design doc", Viewer::Operator, 100_000, mode)).await.unwrap();
        let few = searcher.ask(&s.query("the design doc", Viewer::Operator, 10, mode)).await.unwrap();
        for a in [&all, &few] {
            let mut seen = BTreeSet::new();
            for m in a.results.iter().flat_map(|r| &r.message_ids) {
                assert!(seen.insert(*m), "{mode:?}: message {m} in two results");
            }
        }
        assert_eq!(holding(&all).len(), 1, "{mode:?}");
        assert_eq!(all.results.len(), chunks.len() - (pieces - 1), "{mode:?}: every other chunk");
        assert_eq!(few.results.len(), 10, "{mode:?}: the limit filled from the rest");
    }
}

/// A result is about one of its messages, the one that best matches: its
/// link and time are that message's (the chunk's span stays), its line is
/// marked in the text; with an author filter, it is that author's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_link_to_the_message_that_matches() {
    let (s, ids) = setup_with(&[
        conversation(&[
            (1, "has anyone seen the deploy logs today"),
            (2, "not yet, looking now"),
            (3, "the staging box restarted twice"),
            (4, "found it: quokkaflux rotation failed at midnight"),
            (5, "thanks, I will file a ticket"),
        ]),
        conversation(&[
            (1, "morning all"),
            (2, "who owns the billing service these days"),
            (1, "I think the payments team"),
            (3, "they moved it last month"),
            (2, "my wombatgrease patch is waiting for review"),
            (1, "I will ping them"),
        ]),
    ])
    .await;
    let searcher = s.searcher(false, Duration::from_secs(600));
    let time = |m: u64| snowflake::format_time(snowflake::timestamp(m));
    let about = |a: &Answer, m: u64| -> SearchResult {
        a.results.iter().find(|r| r.message_ids.contains(&m)).cloned().unwrap_or_else(|| panic!("no result has {m}"))
    };
    let check = |r: &SearchResult, m: u64, label: &str| {
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["message_id"], m.to_string(), "{label}: {}", r.text);
        assert_eq!(json["time"], time(m), "{label}");
        assert_eq!(r.jump_url, format!("https://discord.com/channels/{}/{}/{m}", r.guild_id, r.channel_id), "{label}");
        assert_eq!(
            (r.start.as_str(), r.end.as_str()),
            (time(r.message_ids[0]).as_str(), time(*r.message_ids.last().unwrap()).as_str())
        );
        let marked: Vec<&str> = r.text.lines().filter(|l| l.starts_with("» ")).collect();
        assert_eq!(marked.len(), 1, "{label}: one line marked: {}", r.text);
        marked[0].to_owned()
    };
    let (first, second) = (&ids[0], &ids[1]);
    // Keyword and hybrid: the message that matched (not the chunk's first).
    for mode in [Mode::Keyword, Mode::Hybrid] {
        let a = searcher.ask(&s.query("quokkaflux rotation", Viewer::Operator, 5, mode)).await.unwrap();
        let line = check(&about(&a, first[3]), first[3], &format!("{mode:?}"));
        assert!(line.contains("quokkaflux rotation failed"), "{line}");
    }
    // Vector: the line holding the question's words.
    let a = searcher.ask(&s.query("wombatgrease patch", Viewer::Operator, 100_000, Mode::Vector)).await.unwrap();
    check(&about(&a, second[4]), second[4], "vector");
    // An author filter: that author's line, in every result.
    let conn = rusqlite::Connection::open(s.data.join("archive.db")).unwrap();
    let author_of = |m: u64| -> u64 {
        conn.query_row("SELECT author_id FROM messages WHERE id = ?1", [m as i64], |r| r.get::<_, i64>(0)).unwrap()
            as u64
    };
    let carol = author_of(second[3]);
    assert_ne!(author_of(second[0]), carol);
    for mode in [Mode::Vector, Mode::Hybrid] {
        let q = Query {
            filters: Filters { authors: vec![carol], ..Default::default() },
            ..s.query("billing service", Viewer::Operator, 100_000, mode)
        };
        let a = searcher.ask(&q).await.unwrap();
        assert!(!a.results.is_empty());
        for r in &a.results {
            let message = serde_json::to_value(r).unwrap()["message_id"].as_str().map(|m| m.parse().unwrap());
            assert_eq!(message.map(author_of), Some(carol), "{mode:?}: {}", r.text);
        }
        check(&about(&a, second[3]), second[3], &format!("{mode:?} by author"));
    }
}

/// Channel and author names as people write them: any case, without emoji
/// or decoration, a unique prefix, ids and mentions; unknown ids are errors
/// as unknown names are. The operator is told the candidates and the closest
/// names; anyone else (the bot) gets every channel a name matches, and
/// errors that name nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_author_names_resolve_as_people_write_them() {
    let mut world = World::generate(&WorldSpec::plain(3, 60));
    let mut rename = |from: &str, to: &str| {
        let c = world.guilds[0].channels.iter_mut().find(|c| c.name == from).unwrap();
        c.name = to.into();
        c.id
    };
    let eth = rename("dev-0", "👾agentic-ethereum-chat");
    let ops = rename("help", "agentic-ops");
    world.users[5].global_name = Some("Pascal | ETHGlobal".into());
    world.users[6].global_name = Some("Pascale".into());
    let (eve, farah) = (world.users[5].id, world.users[6].id);
    let s = loaded(world).await;
    let guilds = [s.guild];
    let request = |channels: &[&str], authors: &[&str]| FilterRequest {
        channels: channels.iter().map(|c| c.to_string()).collect(),
        authors: authors.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    for operator in [false, true] {
        let resolve = |r: FilterRequest| {
            if operator {
                r.resolve_for_operator(&s.store, &guilds)
            } else {
                r.resolve(&s.store, &guilds)
            }
        };
        for name in [
            "agentic-ethereum-chat",
            "#Agentic Ethereum",
            "👾agentic-ethereum-chat",
            &format!("<#{eth}>"),
            &eth.to_string(),
        ] {
            assert_eq!(resolve(request(&[name], &[])).unwrap().channels, [eth], "{name} (operator: {operator})");
        }
        for name in ["Pascal | ETHGlobal", "pascal-ethglobal", "@PASCAL ETH", "eve", &format!("<@{eve}>")] {
            assert_eq!(resolve(request(&[], &[name])).unwrap().authors, [eve], "{name} (operator: {operator})");
        }
        for (r, channel) in [
            (request(&["12345"], &[]), true),
            (request(&["no-such-channel"], &[]), true),
            (request(&[], &["12345"]), false),
            (request(&[], &["nobody-at-all"]), false),
        ] {
            match resolve(r) {
                Err(FilterError::NoChannel(_)) if channel => {}
                Err(FilterError::NoUser(_)) if !channel => {}
                other => panic!("an unknown name or id is an error (operator: {operator}): {other:?}"),
            }
        }
    }
    // The operator: a prefix of several names is refused, naming them; an unknown name lists the closest.
    let told = |r: FilterRequest| r.resolve_for_operator(&s.store, &guilds).unwrap_err().to_string();
    let err = told(request(&["agentic"], &[]));
    assert!(err.contains("#agentic-ops") && err.contains("#👾agentic-ethereum-chat"), "{err}");
    let err = told(request(&[], &["pasc"]));
    assert!(err.contains("Pascal | ETHGlobal (@eve)") && err.contains("Pascale (@farah)"), "{err}");
    let err = told(request(&["agentic-etherium-chat"], &[]));
    assert!(
        err.contains("no channel named \"agentic-etherium-chat\"") && err.contains("#👾agentic-ethereum-chat"),
        "{err}"
    );
    let err = told(request(&[], &["pascall"]));
    assert!(err.contains("no user named \"pascall\"") && err.contains("Pascale (@farah)"), "{err}");
    // Anyone else: every channel or user a name matches (the search reads only what they may), errors naming nothing.
    let f = request(&["agentic"], &["pasc"]).resolve(&s.store, &guilds).unwrap();
    assert_eq!(
        (f.channels, f.authors),
        (
            {
                let mut c = vec![eth, ops];
                c.sort();
                c
            },
            {
                let mut a = vec![eve, farah];
                a.sort();
                a
            }
        )
    );
    let err = request(&["agentic-etherium-chat"], &[]).resolve(&s.store, &guilds).unwrap_err();
    assert!(matches!(err, FilterError::NoChannel(_)) && !err.to_string().contains('#'), "{err}");
    let err = request(&[], &["pascall"]).resolve(&s.store, &guilds).unwrap_err();
    assert!(matches!(err, FilterError::NoUser(_)) && !err.to_string().contains("Pascal"), "{err}");
}
