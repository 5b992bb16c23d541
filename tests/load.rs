//! Stage one against the fake Discord server, in process.

use std::time::Duration;

use discord_indexer::discord::ApiError;
use discord_indexer::load::{LoadError, Outcome};
use discord_indexer::store::Store;
use fake_discord::{Fault, FaultKind, Limits};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_equals_the_ground_truth_and_a_rerun_asks_almost_nothing() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let summary = run_load(&fake, &store, 4).await.unwrap();
    assert!(summary.ok, "{summary:#?}");
    let truth = ground_truth(&fake.world());
    let db = dir.path().join("archive.db");
    assert_eq!(stored(&db), truth);
    assert!(truth.values().map(Vec::len).sum::<usize>() > 3000);
    // Unreadable channels are reported as skipped, with the reason.
    let outcome = |name: &str| summary.channels.iter().find(|c| c.name == name).map(|c| c.outcome);
    assert_eq!(outcome("secret"), Some(Outcome::Forbidden));
    assert_eq!(outcome("no-history"), Some(Outcome::Forbidden));
    assert_eq!(outcome("stale-perms"), Some(Outcome::Forbidden));
    assert_eq!(outcome("deleted"), Some(Outcome::Gone));
    // Threads of every kind were found, archived ones through several pages.
    for name in [
        "old migration",
        "q3 retro",
        "tiny archived",
        "incident 42",
        "mods only",
        "Old question",
        "How do I rotate keys?",
    ] {
        assert_eq!(outcome(name), Some(Outcome::Complete), "{name}");
    }
    // The bot never asked for what its permissions said it cannot read.
    let secret = fake.world().guilds[0].channel_named("secret").id;
    let no_history = fake.world().guilds[0].channel_named("no-history").id;
    let requests = fake.requests();
    assert!(!requests.iter().any(|r| r.path.contains(&secret.to_string()) || r.path.contains(&no_history.to_string())));
    assert_eq!(requests.iter().filter(|r| r.provoked_429()).count(), 0, "the client overran a rate limit");
    // Pages were asked oldest first: `after` only grows per channel.
    let mut last_after = std::collections::HashMap::new();
    for r in requests.iter().filter(|r| r.path.ends_with("/messages")) {
        let after: u64 = r.query("after").unwrap().parse().unwrap();
        assert_eq!(r.query("limit"), Some("100"));
        let prev = last_after.insert(r.path.clone(), after);
        assert!(prev.is_none_or(|p| p < after), "{} went backwards", r.path);
    }

    // A rerun over an unchanged server: no message page is needed for loaded
    // channels (each one's last_message_id equals its checkpoint), and nothing is written.
    fake.clear_log();
    let changes_before = total_rows(&db);
    let again = run_load(&fake, &store, 4).await.unwrap();
    assert!(again.ok);
    assert_eq!(again.new + again.updated, 0);
    assert!(again.channels.iter().all(|c| matches!(c.outcome, Outcome::UpToDate | Outcome::Forbidden | Outcome::Gone)));
    // Only the channels that answered 403/404 last time are asked again (the
    // permissions or the channel may have come back); each once.
    let (stale, deleted) = {
        let w = fake.world();
        (w.guilds[0].channel_named("stale-perms").id, w.guilds[0].channel_named("deleted").id)
    };
    let mut asked: Vec<String> =
        fake.requests().iter().filter(|r| r.path.ends_with("/messages")).map(|r| r.path.clone()).collect();
    asked.sort();
    let mut expected =
        vec![format!("/api/v10/channels/{stale}/messages"), format!("/api/v10/channels/{deleted}/messages")];
    expected.sort();
    assert_eq!(asked, expected);
    assert_eq!(total_rows(&db), changes_before);
    assert_eq!(stored(&db), truth);
}

fn total_rows(db: &std::path::Path) -> (i64, String) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let n = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    let loaded = conn
        .query_row("SELECT group_concat(loaded_at) FROM checkpoints", [], |r| r.get::<_, Option<String>>(0))
        .unwrap();
    (n, loaded.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_messages_are_appended_on_the_next_run() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    run_load(&fake, &store, 4).await.unwrap();
    // New messages arrive in #general.
    {
        let mut world = fake.world();
        let general = world.guilds[0].channel_named("general").id;
        let ch = world.channel_mut(general).unwrap();
        let last = ch.messages.last().unwrap().clone();
        for i in 1..=150u64 {
            let mut m = last.clone();
            m.id = last.id + (i << 22);
            m.reply_to = None;
            m.kind = 0;
            m.content = Some(format!("new message {i}"));
            ch.messages.push(m);
        }
    }
    fake.clear_log();
    let summary = run_load(&fake, &store, 4).await.unwrap();
    assert_eq!(summary.new, 150);
    let general = summary.channels.iter().find(|c| c.name == "general").unwrap();
    assert_eq!((general.outcome, general.new, general.pages), (Outcome::Complete, 150, 2));
    assert_eq!(stored(&dir.path().join("archive.db")), ground_truth(&fake.world()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_429s_5xx_and_dropped_connections_still_end_in_the_ground_truth() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_faults(vec![
        Fault::always(FaultKind::RateLimit { retry_after: Duration::from_millis(30), global: false })
            .on("/messages")
            .every(7),
        Fault::always(FaultKind::RateLimit { retry_after: Duration::from_millis(50), global: true })
            .on("/messages")
            .after(20)
            .times(2),
        Fault::always(FaultKind::Status(503)).on("/messages").every(5).after(2),
        Fault::always(FaultKind::Status(502)).on("/threads/").times(2),
        Fault::always(FaultKind::Drop).on("/messages").every(11).after(4),
        Fault::always(FaultKind::Delay(Duration::from_millis(40))).every(13),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let summary = run_load(&fake, &store, 4).await.unwrap();
    assert!(summary.ok, "{summary:#?}");
    assert_eq!(stored(&dir.path().join("archive.db")), ground_truth(&fake.world()));
    let requests = fake.requests();
    let injected = requests.iter().filter(|r| r.outcome != "ok" && !r.provoked_429()).count();
    assert!(injected > 20, "the fault plan hit only {injected} requests");
    assert!(summary.requests.retries > 10);
    // The bound we hold: obeying retry_after and the headers, the client
    // provokes no 429 of its own even while faults disturb its timing.
    let provoked = requests.iter().filter(|r| r.provoked_429()).count();
    assert_eq!(provoked, 0, "provoked 429s: {provoked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_is_respected_across_channels() {
    // 20 requests per second for the bot, buckets generous: 16 channels must share.
    let limits =
        Limits { per_route: 50, window: Duration::from_millis(100), global_per_second: 20, archived_page_size: 100 };
    let fake = start(fake_discord::World::generate(&fake_discord::WorldSpec::plain(16, 250)), limits).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut client_opts = discord_indexer::discord::ClientOptions::new(
        fake.base_url(),
        discord_indexer::discord::Token::new(fake.token()),
    );
    client_opts.global_per_second = 20;
    let client = discord_indexer::discord::Client::new(client_opts).unwrap();
    let options =
        discord_indexer::load::LoadOptions { guilds: vec![guild_id(&fake)], channels: vec![], concurrency: 16 };
    let summary = discord_indexer::load::load(&client, &store, &options, &|_| {}, &Default::default()).await.unwrap();
    assert!(summary.ok);
    let requests = fake.requests();
    assert!(requests.len() >= 16 * 3);
    // A request holds its global slot until a second after its answer, so
    // however the machine delays requests, none is counted in the wrong second.
    let provoked = requests.iter().filter(|r| r.provoked_429()).count();
    assert_eq!(provoked, 0, "{provoked} global 429s provoked");
    assert_eq!(stored(&dir.path().join("archive.db")), ground_truth(&fake.world()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_fast_and_writes_no_messages() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let options =
        discord_indexer::load::LoadOptions { guilds: vec![guild_id(&fake)], channels: vec![], concurrency: 4 };
    let bad = client_with_token(&fake, "not-the-token");
    let err = discord_indexer::load::load(&bad, &store, &options, &|_| {}, &Default::default()).await.unwrap_err();
    assert!(matches!(err, LoadError::Api(ApiError::Unauthorized)), "{err}");
    assert_eq!(fake.request_count(), 1, "a 401 must stop everything at once");
    assert!(stored(&dir.path().join("archive.db")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_run_stops_every_worker() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_faults(vec![Fault::always(FaultKind::Unauthorized).on("/messages").after(6)]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = run_load(&fake, &store, 4).await.unwrap_err();
    assert!(matches!(err, LoadError::Api(ApiError::Unauthorized)), "{err}");
    let after_401 = fake.requests().iter().filter(|r| r.status == 401).count();
    assert!(after_401 <= 4, "workers kept asking after a 401: {after_401}");
    assert_prefix_consistent(&dir.path().join("archive.db"), &ground_truth(&fake.world()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_message_content_intent_is_named_and_nothing_is_stored() {
    let mut world = standard_world();
    world.app_flags = 0;
    let fake = start(world, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = run_load(&fake, &store, 4).await.unwrap_err();
    assert!(matches!(err, LoadError::MissingIntent(_)));
    assert!(err.to_string().contains("MESSAGE_CONTENT"));
    assert!(stored(&dir.path().join("archive.db")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_pages_are_refused_even_when_the_flags_look_right() {
    // The application claims the intent, but content comes back empty (as when
    // the intent is revoked mid-run): the loader must not store blank history.
    let fake = start(standard_world(), fast_limits()).await;
    for c in &mut fake.world().guilds[0].channels {
        for m in &mut c.messages {
            m.content = Some(String::new());
            m.attachments = 0;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = run_load(&fake, &store, 2).await.unwrap_err();
    assert!(matches!(err, LoadError::MissingIntent(_)), "{err}");
    let stored = stored(&dir.path().join("archive.db"));
    // Small threads may have too few messages to be evidence; big channels must not land.
    let general = fake.world().guilds[0].channel_named("general").id;
    assert!(!stored.contains_key(&general));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_guild_is_a_failed_guild_not_a_crash() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let options = discord_indexer::load::LoadOptions { guilds: vec![42], channels: vec![], concurrency: 4 };
    let summary =
        discord_indexer::load::load(&client(&fake), &store, &options, &|_| {}, &Default::default()).await.unwrap();
    assert!(!summary.ok);
    assert_eq!(summary.guilds[0].error.as_deref(), Some("unknown guild, or the bot is not a member of it"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_can_be_loaded_one_at_a_time() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (help, thread) = {
        let w = fake.world();
        (w.guilds[0].channel_named("help").id, w.guilds[0].channel_named("old migration").id)
    };
    // Without --guild: the channel names its guild.
    let options = discord_indexer::load::LoadOptions { guilds: vec![], channels: vec![help, thread], concurrency: 2 };
    let summary =
        discord_indexer::load::load(&client(&fake), &store, &options, &|_| {}, &Default::default()).await.unwrap();
    assert!(summary.ok);
    let stored = stored(&dir.path().join("archive.db"));
    let truth = ground_truth(&fake.world());
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), {
        let mut k = vec![help, thread];
        k.sort();
        k
    });
    assert_eq!(stored[&help], truth[&help]);
    assert_eq!(stored[&thread], truth[&thread]);
    let options =
        discord_indexer::load::LoadOptions { guilds: vec![guild_id(&fake)], channels: vec![123], concurrency: 2 };
    let err =
        discord_indexer::load::load(&client(&fake), &store, &options, &|_| {}, &Default::default()).await.unwrap_err();
    assert!(matches!(err, LoadError::UnknownChannel(123)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_gives_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Nothing listens on port 1.
    let mut o =
        discord_indexer::discord::ClientOptions::new("http://127.0.0.1:1", discord_indexer::discord::Token::new("t"));
    o.retry_base = Duration::from_millis(5);
    o.max_tries = 3;
    let client = discord_indexer::discord::Client::new(o).unwrap();
    let options = discord_indexer::load::LoadOptions { guilds: vec![1], channels: vec![], concurrency: 1 };
    let err = discord_indexer::load::load(&client, &store, &options, &|_| {}, &Default::default()).await.unwrap_err();
    // Nothing has ever answered: said at once, with the URL and the setting,
    // rather than after the retries.
    assert!(matches!(err, LoadError::Api(ApiError::Unreachable { .. })), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cannot reach the Discord API at http://127.0.0.1:1/api/v10"), "{msg}");
    assert!(msg.contains("connection refused") && msg.contains("DISCORD_API_BASE"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_keeps_failing_is_reported_and_the_rerun_finishes_it() {
    let fake = start(standard_world(), fast_limits()).await;
    let help = fake.world().guilds[0].channel_named("help").id;
    fake.set_faults(vec![Fault::always(FaultKind::Status(500)).on(&format!("/channels/{help}/messages")).after(3)]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let summary = run_load(&fake, &store, 4).await.unwrap();
    assert!(!summary.ok);
    let report = summary.channels.iter().find(|c| c.channel_id == help).unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.reason.as_deref().unwrap().contains("gave up after 12 tries"), "{report:?}");
    assert_eq!(report.new, 300, "the pages before the failure are kept");
    assert!(summary.channels.iter().filter(|c| c.channel_id != help).all(|c| c.outcome.is_ok()));
    assert_eq!(store.checkpoint(help).unwrap().unwrap().state, discord_indexer::store::ChannelState::Failed);
    let db = dir.path().join("archive.db");
    assert_prefix_consistent(&db, &ground_truth(&fake.world()));
    fake.set_faults(vec![]);
    let again = run_load(&fake, &store, 4).await.unwrap();
    assert!(again.ok);
    assert_eq!(stored(&db), ground_truth(&fake.world()));
}

/// The shared rate-limit file says "pause for a year" (a clock stepped back,
/// a stale or edited file): a load waits no longer than the bound, then runs
/// to the end; and a stop (what Ctrl-C and SIGTERM do) ends such a wait at
/// once, before any request leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_far_ahead_in_the_shared_file_is_bounded_and_a_stop_ends_it() {
    use discord_indexer::discord::{ledger, Client, ClientOptions, Token};
    use discord_indexer::load::LoadOptions;
    use tokio_util::sync::CancellationToken;

    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let year_ahead = ledger::now_ms() + 365 * 24 * 3_600_000;
    let plant = || {
        let text = format!(r#"{{"paused_until":{year_ahead}}}"#);
        std::fs::write(dir.path().join(ledger::Ledger::FILE), text).unwrap();
    };
    let options = |stop: Option<CancellationToken>, max_wait: Duration| {
        let mut o = ClientOptions::new(fake.base_url(), Token::new(fake.token()));
        o.retry_base = Duration::from_millis(10);
        o.retry_cap = Duration::from_millis(100);
        o.ledger_dir = Some(dir.path().to_owned());
        o.max_wait = max_wait;
        o.stop = stop;
        o
    };
    let load_options = LoadOptions { guilds: vec![guild_id(&fake)], channels: vec![], concurrency: 4 };

    // Bounded: with the bound at 300 ms, the load waits that long, once.
    plant();
    let client = Client::new(options(None, Duration::from_millis(300))).unwrap();
    let never = CancellationToken::new();
    let run = discord_indexer::load::load(&client, &store, &load_options, &|_| {}, &never);
    let summary = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the wait is bounded").unwrap();
    assert!(summary.ok, "{summary:#?}");
    assert!(summary.requests.waited_ms >= 250, "{:?}", summary.requests);
    assert_eq!(stored(&dir.path().join("archive.db")), ground_truth(&fake.world()));

    // Stopped: at the default bound (minutes), the stop ends the wait.
    plant();
    fake.clear_log();
    let stop = CancellationToken::new();
    let client = Client::new(options(Some(stop.clone()), discord_indexer::discord::ratelimit::MAX_WAIT)).unwrap();
    let run = tokio::spawn({
        let (client, store, stop) = (client.clone(), store.clone(), stop.clone());
        async move { discord_indexer::load::load(&client, &store, &load_options, &|_| {}, &stop).await }
    });
    // Once the first request is held back (a condition, not a guess at timing):
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.stats().waiting == 0 {
        assert!(std::time::Instant::now() < deadline, "the load never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the stop ended the wait").unwrap();
    assert!(matches!(ended, Err(LoadError::Api(ApiError::Stopped))), "{ended:?}");
    assert!(fake.requests().is_empty(), "no request left during the pause");
}

/// The command itself, as the tester ran it: a load held back by a year-long
/// pause in the shared file says so on stderr, and SIGTERM ends the wait (it
/// used to outlast `timeout 60` by many minutes).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_load_waiting_on_the_shared_file() {
    use std::io::BufRead as _;
    use std::process::Stdio;

    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let year_ahead = discord_indexer::discord::ledger::now_ms() + 365 * 24 * 3_600_000;
    std::fs::write(dir.path().join("ratelimits.json"), format!(r#"{{"paused_until":{year_ahead}}}"#)).unwrap();
    let mut c = crate::cli::load_cmd(&fake, dir.path());
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    /// Kills the child if the test ends early (a failed assertion).
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(c.spawn().unwrap());
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (told, lines) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) if line.contains("waiting 600.0 s") => return (Some(line), lines),
                Ok(_) => {}
                Err(_) => return (None, lines),
            }
        }
    })
    .await
    .unwrap();
    let told = told.expect("the long wait is said on stderr");
    assert!(told.contains("ratelimits.json") && told.contains("clock may have been set back"), "{told}");

    let kill = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
    .await
    .unwrap();
    let status = status.expect("SIGTERM ended the wait");
    let rest: Vec<String> = lines.try_iter().collect();
    // It stops on its own, saying why (or, had the signal come before its
    // handler was installed, the signal's default action ends it: no hang either way).
    if status.code().is_some() {
        assert!(rest.iter().any(|l| l.contains("stopped while waiting")), "{status:?} {rest:#?}");
    }
    assert!(fake.requests().is_empty(), "no request left during the pause");
}

/// The same with nobody reading stderr any more (a closed pipe): printing the
/// notice must not break the handler (`eprintln!` panicked there). `--quiet`
/// keeps the log from writing to the closed pipe before the signal does.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_waiting_load_even_with_stderr_closed() {
    use std::process::Stdio;

    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ratelimits.json");
    let year_ahead = discord_indexer::discord::ledger::now_ms() + 365 * 24 * 3_600_000;
    std::fs::write(&file, format!(r#"{{"paused_until":{year_ahead}}}"#)).unwrap();
    let mut c = crate::cli::load_cmd(&fake, dir.path());
    c.arg("--quiet").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stderr.take());
    // The run has read the file once it wrote the pause back, bounded.
    let bounded = || {
        let text = std::fs::read(&file).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        value["paused_until"].as_u64().is_some_and(|p| p < year_ahead)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !bounded() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the load never read the shared file");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let ended = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })
    .await
    .unwrap();
    let status = ended.expect("SIGTERM ended the wait");
    // On its own, not by a panic (101) of the signal's handler.
    assert_ne!(status.code(), Some(101), "{status:?}");
    assert!(fake.requests().is_empty(), "no request left during the pause");
}

/// Rows of the tables a load writes (guilds, channels, messages,
/// checkpoints, load runs): all zero when nothing was written.
fn written_rows(db: &std::path::Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(db).expect("archive opens");
    ["guilds", "channels", "messages", "checkpoints", "load_runs"]
        .iter()
        .map(|t| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).unwrap())
        .sum()
}

/// `load` with DISCORD_API_BASE on a port nothing listens on: a clear error
/// naming the URL and the setting, printed once, exit 2, within seconds (it
/// used to retry for 66 to 120 s), and nothing written.
#[test]
fn a_closed_api_base_fails_in_seconds_naming_discord_api_base() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = crate::cli::bin();
    c.env("DISCORD_TOKEN", "some-token").env("DISCORD_API_BASE", &base);
    c.args(["load", "--guild", "1", "--data-dir"]).arg(&data);
    let started = std::time::Instant::now();
    let out = c.output().expect("binary runs");
    let took = started.elapsed();
    let stderr = crate::cli::text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Discord API at {base}/api/v10 (connection refused)")),
        "{stderr}"
    );
    assert!(stderr.contains("check DISCORD_API_BASE"), "{stderr}");
    assert_eq!(stderr.matches("cannot reach").count(), 1, "said once: {stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(written_rows(&data.join("archive.db")), 0);
}

/// An API base without a scheme (or with another than http/https) is refused
/// before anything is opened, with a message that names DISCORD_API_BASE and
/// shows a well-formed base; not the URL parser's "relative URL without a base".
#[test]
fn an_api_base_without_a_scheme_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (bad, expect) in [
        ("127.0.0.1:3000", "DISCORD_API_BASE \"127.0.0.1:3000\" has no scheme"),
        ("localhost:3000/api", "DISCORD_API_BASE \"localhost:3000/api\" has no scheme"),
        ("ftp://127.0.0.1:3000", "only http:// and https:// are supported"),
    ] {
        let mut c = crate::cli::bin();
        c.env("DISCORD_TOKEN", "some-token").env("DISCORD_API_BASE", bad);
        c.args(["load", "--guild", "1", "--data-dir"]).arg(&data);
        let out = c.output().expect("binary runs");
        let stderr = crate::cli::text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(expect) && stderr.contains("DISCORD_API_BASE"), "{bad}: {stderr}");
        assert!(stderr.contains("e.g. http://"), "{bad}: an example: {stderr}");
        assert!(!stderr.contains("relative URL"), "{bad}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{bad}: {stderr}");
        assert!(!data.exists(), "{bad}: nothing is opened");
    }
}
