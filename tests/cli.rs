//! The `discord-indexer` binary: exit codes, JSON output, real kills and signals.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fake_discord::{FakeDiscord, Fault, FaultKind};

use crate::util::*;

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
    c.env_remove("DISCORD_TOKEN")
        .env_remove("DISCORD_API_BASE")
        .env_remove("DISCORD_INDEXER_DATA_DIR")
        .env_remove("RUST_LOG");
    c
}

pub(crate) fn load_cmd(fake: &FakeDiscord, data: &Path) -> Command {
    let mut c = bin();
    c.env("DISCORD_TOKEN", fake.token())
        .env("DISCORD_API_BASE", fake.base_url())
        .args(["load", "--guild", &guild_id(fake).to_string(), "--data-dir"])
        .arg(data);
    c
}

/// Runs a command to completion off the async runtime (the fake server lives on it).
pub(crate) async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("binary runs")).await.unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_status_print_json_for_scripts() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = load_cmd(&fake, dir.path());
    c.arg("--json");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(summary["ok"], true);
    let truth = ground_truth(&fake.world());
    let total: usize = truth.values().map(Vec::len).sum();
    assert_eq!(summary["new"], total);
    let secret = summary["channels"].as_array().unwrap().iter().find(|c| c["name"] == "secret").unwrap();
    assert_eq!(secret["outcome"], "forbidden");
    assert!(secret["channel_id"].is_string(), "snowflakes are strings in JSON");

    let mut c = bin();
    c.args(["status", "--json", "--data-dir"]).arg(dir.path());
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let guild = &status["guilds"][0];
    assert_eq!(guild["messages"], total);
    assert_eq!(guild["last_load_outcome"], "ok");
    let states: Vec<&str> =
        guild["channels"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"complete") && states.contains(&"forbidden") && states.contains(&"gone"));

    // A rerun on an unchanged server: up-to-date channels are one line, not one each
    // (listed with -v; the forbidden and gone ones are still named).
    let out = output(load_cmd(&fake, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("channels up to date (list them with -v)") && printed.contains("#secret"), "{printed}");
    assert!(!printed.lines().any(|l| l.ends_with(" up to date")), "{printed}");
    assert!(!printed.contains("forbidden: forbidden"), "each cause once: {printed}");
    let mut c = load_cmd(&fake, dir.path());
    c.arg("-v");
    let out = output(c).await;
    let printed = text(&out.stdout);
    assert!(printed.contains("#general") && printed.contains("up to date"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_output_even_in_debug_logs() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_faults(vec![Fault::always(FaultKind::Status(500)).on("/messages").times(2)]);
    let dir = tempfile::tempdir().unwrap();
    let mut c = load_cmd(&fake, dir.path());
    c.args(["-vv", "--json"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    let token = fake.token();
    assert!(!text(&out.stderr).is_empty(), "debug logging produced nothing");
    assert!(!text(&out.stderr).contains(&token) && !text(&out.stdout).contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_message_and_a_nonzero_exit() {
    let fake = start(standard_world(), fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();

    // A bad token: exit 2, says so, never echoes it, stores no messages.
    let mut c = load_cmd(&fake, dir.path());
    c.env("DISCORD_TOKEN", "wrong-secret-token");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("rejected the bot token") && !err.contains("wrong-secret-token"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");

    // No token at all.
    let mut c = load_cmd(&fake, dir.path());
    c.env_remove("DISCORD_TOKEN");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("DISCORD_TOKEN"));

    // An unknown guild: bad input, nothing done (exit 2); beside a known one, a partial run (exit 1).
    let mut c = bin();
    c.env("DISCORD_TOKEN", fake.token()).env("DISCORD_API_BASE", fake.base_url());
    c.args(["load", "--guild", "42", "--data-dir"]).arg(dir.path());
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("unknown guild"), "{}", text(&out.stdout));
    let mut c = load_cmd(&fake, dir.path());
    c.args(["--guild", "42"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // Nothing asked for.
    let mut c = bin();
    c.args(["load", "--data-dir"]).arg(dir.path());
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to load"));

    // A corrupt archive is refused and left as it was.
    let bad = tempfile::tempdir().unwrap();
    let junk = vec![7u8; 4096];
    std::fs::write(bad.path().join("archive.db"), &junk).unwrap();
    let out = output(load_cmd(&fake, bad.path())).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a readable SQLite archive"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(bad.path().join("archive.db")).unwrap(), junk);

    // status without an archive.
    let empty = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.args(["status", "--data-dir"]).arg(empty.path());
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no archive"));
    assert!(!empty.path().join("archive.db").exists());
    // For scripts, --json on a new data directory is an empty result (exit 0), and creates nothing.
    for (args, expected) in
        [(["status", "--json"], serde_json::json!({"guilds": []})), (["guilds", "--json"], serde_json::json!([]))]
    {
        let mut c = bin();
        c.args(args).arg("--data-dir").arg(empty.path());
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), expected);
    }
    assert!(!empty.path().join("archive.db").exists());

    // An archive path that is a directory is named as such, by readers and by load.
    let odd = tempfile::tempdir().unwrap();
    std::fs::create_dir(odd.path().join("archive.db")).unwrap();
    for args in [&["status"][..], &["guilds"][..]] {
        let mut c = bin();
        c.args(args).arg("--data-dir").arg(odd.path());
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("is not an archive file (it is a directory"), "{}", text(&out.stderr));
    }
    let out = output(load_cmd(&fake, odd.path())).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not an archive file"), "{}", text(&out.stderr));

    // activate and drop-index: an unknown guild, and a model the guild has no index with.
    let guild = fake.world().guilds[0].id.to_string();
    for command in ["activate", "drop-index"] {
        let mut c = bin();
        c.args([command, "--guild", "5", "--model", "all-MiniLM-L6-v2", "--data-dir"]).arg(dir.path());
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("guild 5 is not in the archive"), "{}", text(&out.stderr));
        let mut c = bin();
        c.args([command, "--guild", &guild, "--model", "nope", "--data-dir"]).arg(dir.path());
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("has no index with model nope; `discord-indexer models` lists"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Kills the loader (SIGKILL) while a message request hangs, at several
/// points; each time the archive is exactly a prefix of the truth, and the
/// next run starts every channel from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_load_resumes_exactly() {
    let fake = start(standard_world(), fast_limits()).await;
    let truth = ground_truth(&fake.world());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("archive.db");
    let mut kills = 0;
    for hold_after in [2u64, 7, 15, 30] {
        let before = if db.exists() { checkpoints(&db) } else { Default::default() };
        fake.clear_log();
        fake.set_faults(vec![Fault::always(FaultKind::Hold).on("/messages").after(hold_after)]);
        let mut c = load_cmd(&fake, dir.path());
        c.args(["--concurrency", "3"]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let held = fake.wait_until(Duration::from_secs(60), |f| f.held() >= 1).await;
        child.kill().unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
        fake.release_held();
        if !held {
            // The load finished before reaching the hold: nothing left to kill.
            assert!(status.success());
            break;
        }
        kills += 1;
        assert_prefix_consistent(&db, &truth);
        assert_resumed_from(&fake, &before);
    }
    assert!(kills >= 3, "only {kills} kills happened mid-load");
    let before = checkpoints(&db);
    fake.set_faults(vec![]);
    fake.clear_log();
    let out = output(load_cmd(&fake, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_resumed_from(&fake, &before);
    assert_eq!(stored(&db), truth);
}

/// The first message request of each channel in the run just logged starts at
/// the checkpoint the archive had before the run.
fn assert_resumed_from(fake: &FakeDiscord, before: &std::collections::BTreeMap<u64, u64>) {
    let mut seen = std::collections::HashSet::new();
    for r in fake.requests().iter().filter(|r| r.path.ends_with("/messages")) {
        let channel: u64 = r.path.split('/').nth(4).unwrap().parse().unwrap();
        if seen.insert(channel) {
            let after: u64 = r.query("after").unwrap().parse().unwrap();
            assert_eq!(
                after,
                before.get(&channel).copied().unwrap_or(0),
                "channel {channel} did not resume at its checkpoint"
            );
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_exit_130() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_faults(vec![Fault::always(FaultKind::Hold).on("/messages").after(5)]);
    let dir = tempfile::tempdir().unwrap();
    let mut c = load_cmd(&fake, dir.path());
    c.arg("--json").stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(fake.wait_until(Duration::from_secs(60), |f| f.held() >= 1).await);
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    fake.release_held();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a summary is still printed");
    assert_eq!(summary["interrupted"], true);
    assert_prefix_consistent(&dir.path().join("archive.db"), &ground_truth(&fake.world()));
}

#[tokio::test]
async fn the_version_names_the_optional_features_built_in() {
    let mut c = bin();
    c.arg("--version");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    let version = text(&out.stdout);
    assert!(version.starts_with(&format!("discord-indexer {}", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains(if cfg!(feature = "cuda") { "features: cuda" } else { "features: none" }), "{version}");
}

#[tokio::test]
async fn completions_cover_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut c = bin();
        c.args(["completions", shell]);
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["load", "import", "index", "ask", "status", "channel", "after"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let mut c = bin();
    c.args(["completions", "tcsh"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad input");
    assert!(text(&out.stderr).contains("bash"), "and the known ones are listed");
}

#[tokio::test]
async fn manual_pages_cover_every_subcommand() {
    let mut c = bin();
    c.arg("man");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH discord-indexer 1"), "{page}");
    for word in ["load", "import", "index", "ask", "status"] {
        assert!(page.contains(word), "the page lists {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.args(["man", "--dir"]).arg(dir.path().join("man1"));
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in ["discord-indexer", "discord-indexer-load", "discord-indexer-ask", "discord-indexer-index"] {
        let page = std::fs::read_to_string(dir.path().join("man1").join(format!("{name}.1"))).unwrap();
        assert!(page.contains(".SH OPTIONS") || page.contains(".SH SYNOPSIS"), "{name}: {page}");
    }
    assert!(std::fs::read_to_string(dir.path().join("man1/discord-indexer-ask.1")).unwrap().contains("as\\-user"));
}

/// A request that keeps failing is retried for `[load] patience_secs`, each
/// retry said at the default log level, then given up with the setting named;
/// the rest of the guild loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_said_and_patience_is_a_setting() {
    let fake = start(standard_world(), fast_limits()).await;
    let help = fake.world().guilds[0].channel_named("help").id;
    fake.set_faults(vec![Fault::always(FaultKind::Status(503)).on(&format!("/channels/{help}/messages"))]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[load]\npatience_secs = 2\nrequest_timeout_secs = 5\n").unwrap();
    let mut c = load_cmd(&fake, &dir.path().join("data"));
    c.arg("--config").arg(&config);
    let out = output(c).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "one channel failed, the rest loaded: {stdout}{stderr}");
    let retries = stderr.lines().filter(|l| l.contains("HTTP 503") && l.contains("retrying in")).count();
    assert!(retries >= 1, "each retry is said: {stderr}");
    assert!(stderr.contains(&format!("/channels/{help}/messages")), "{stderr}");
    assert!(stdout.contains("patience_secs is 2"), "the give-up names the setting: {stdout}");
    assert!(!stderr.contains(&fake.token()) && !stdout.contains(&fake.token()));

    std::fs::write(&config, "[load]\npatience_secs = 0\n").unwrap();
    let mut c = load_cmd(&fake, &dir.path().join("data"));
    c.arg("--config").arg(&config);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("patience_secs must be at least 1"), "{}", text(&out.stderr));
}

/// Discord's limits belong to the token: two `load`s with one token at once
/// (on one data directory), and a rerun right after a kill, provoke no 429
/// between them, because they share what they know through the data
/// directory's rate-limit ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_token_share_its_rate_limits() {
    let fake = start(standard_world(), fake_discord::Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let spawn = |data: &Path| {
        let mut c = load_cmd(&fake, data);
        c.arg("--json").stdout(Stdio::null()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(dir.path()), spawn(dir.path()));
    let (a, b) = tokio::task::spawn_blocking(move || (a.wait_with_output().unwrap(), b.wait_with_output().unwrap()))
        .await
        .unwrap();
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{}{}", text(&a.stderr), text(&b.stderr));
    let log = fake.requests();
    let provoked: Vec<String> = log
        .iter()
        .filter(|r| r.provoked_429())
        .map(|r| {
            let same: Vec<String> = log
                .iter()
                .filter(|o| o.path == r.path && (o.at_ms - r.at_ms).abs() < 300.0)
                .map(|o| format!("{:.1}ms {} {:?}", o.at_ms, o.outcome, o.query))
                .collect();
            format!("{} {} at {:.1}ms; same route nearby: {same:?}", r.outcome, r.path, r.at_ms)
        })
        .collect();
    assert!(provoked.is_empty(), "two processes with one token provoked 429s: {provoked:#?}");
    assert_eq!(stored(&dir.path().join("archive.db")), ground_truth(&fake.world()));

    // Killed mid-run, then run again at once (against a server of its own, so
    // that only these two runs count): the rerun knows what the first spent.
    let fake = start(standard_world(), fake_discord::Limits::default()).await;
    let again = tempfile::tempdir().unwrap();
    let mut first = {
        let mut c = load_cmd(&fake, again.path());
        c.arg("--json").stdout(Stdio::null()).stderr(Stdio::null());
        c.spawn().unwrap()
    };
    assert!(fake.wait_until(Duration::from_secs(60), |f| f.request_count() >= 40).await);
    first.kill().unwrap();
    first.wait().unwrap();
    let out = output({
        let mut c = load_cmd(&fake, again.path());
        c.arg("--json");
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let provoked: Vec<String> = fake.requests().iter().filter(|r| r.provoked_429()).map(|r| format!("{r:?}")).collect();
    assert!(provoked.is_empty(), "the killed run and its rerun provoked 429s: {provoked:?}");
}

/// Runs `c` with its stdout on a pseudo-terminal (stderr, where progress bars
/// draw with escape sequences of their own, is discarded); returns the exit
/// code and what the terminal received.
#[cfg(unix)]
fn on_terminal(mut c: Command) -> (Option<i32>, Vec<u8>) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the out-parameters.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors are fresh and owned here from now on.
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    c.stdin(Stdio::null()).stdout(slave).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    drop(c);
    let code = child.wait().unwrap().code();
    // Everything is in the terminal's buffer now; read it without blocking forever.
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    (code, seen)
}

/// Names and text from Discord or an export reach a terminal shown, not
/// obeyed (an escape sequence could retitle the window, clear the screen or
/// hide lines); JSON and pipes get them exactly.
#[cfg(unix)]
#[test]
fn control_characters_from_chat_are_shown_not_obeyed_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.json");
    let evil = "\u{1b}]0;pwned\u{7}gen\u{1b}[2Jeral";
    std::fs::write(
        &export,
        serde_json::json!({
            "guild": {"id": "900000000000000001", "name": "Guild\u{1b}[31m", "iconUrl": ""},
            "channel": {"id": "900000000000000010", "type": "GuildTextChat", "categoryId": null, "category": "",
                        "name": evil, "topic": null},
            "messages": [{"id": "1100000000000000000", "type": "Default", "timestamp": "2023-05-16T20:50:18+00:00",
                "timestampEdited": null, "isPinned": false, "content": "zebra \u{1b}[8mhidden\u{1b}[0m",
                "author": {"id": "500", "name": "ann\u{1b}[1m", "discriminator": "0000", "nickname": null,
                           "isBot": false, "avatarUrl": ""},
                "attachments": [], "embeds": [], "stickers": [], "reactions": [], "mentions": []}]
        })
        .to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    // (`ask` prints through the same writer as `status`.)
    for args in [vec!["import", export.to_str().unwrap()], vec!["status"]] {
        let mut c = bin();
        c.args(&args).arg("--data-dir").arg(&data);
        let (code, seen) = on_terminal(c);
        let seen = text(&seen);
        assert!(!seen.contains('\u{1b}'), "{args:?} printed a raw escape: {seen:?}");
        assert_eq!(code, Some(0), "{args:?}: {seen}");
        assert!(seen.contains(r"\u{1b}"), "{args:?} shows the escape: {seen}");
    }
    // Into a pipe, and as JSON, the text stays exactly what was stored.
    let mut c = bin();
    c.args(["status", "--json", "--data-dir"]).arg(&data);
    let out = c.output().unwrap();
    assert!(text(&out.stdout).contains(r"\u001b]0;pwned"), "{}", text(&out.stdout));
}

/// A load whose attachment files could not all be fetched is a partial run,
/// in its exit code and in the run `status` reports, never "ok".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_files_failed_is_recorded_as_partial() {
    let fake = start(standard_world(), fast_limits()).await;
    fake.set_faults(vec![Fault::always(FaultKind::Status(500)).on("/attachments/")]);
    let dir = tempfile::tempdir().unwrap();
    let mut c = load_cmd(&fake, dir.path());
    c.arg("--json");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], false);
    assert!(summary["files"]["failed"].as_u64().unwrap() > 0, "{summary}");

    let mut c = bin();
    c.args(["status", "--json", "--data-dir"]).arg(dir.path());
    let out = output(c).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["guilds"][0]["last_load_outcome"], "partial", "{status}");
}

/// `status` as text is for people: every time in one format, a channel's
/// checkpoint as the time of the message it reached (the id stays in JSON),
/// an index build stopped part-way as how far it got and the command that
/// finishes it, and a complete index as up to date or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_text_shows_times_and_how_far_an_index_build_got() {
    use discord_indexer::embed::{Embedder, ModelInfo};
    use discord_indexer::index::{self, IndexError, IndexEvent, IndexOptions};
    use discord_indexer::snowflake;
    use discord_indexer::vector::Backend;
    use tokio_util::sync::CancellationToken;

    let s = loaded(standard_world()).await;
    let g = s.guild.to_string();
    // A build stopped once a batch is stored, as Ctrl-C stops one (see tests/index.rs).
    let stop = CancellationToken::new();
    let on_event = |e: IndexEvent| {
        if matches!(e, IndexEvent::Progress { embedded, .. } if embedded > 0) {
            stop.cancel();
        }
    };
    let mut options = IndexOptions::new(s.guild);
    options.flush_chunks = Some(8);
    let embedder = std::sync::Arc::new(
        Embedder::load(ModelInfo::find(&s.models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap(),
    );
    let backend = Backend::new(&s.data, None, None).unwrap();
    let err = index::index(&s.store, &backend, embedder, &options, &on_event, &stop).await.unwrap_err();
    assert!(matches!(err, IndexError::Interrupted), "{err}");
    drop(backend);

    let run = |args: &[&str]| {
        let mut c = bin();
        c.env_remove("QDRANT_URL")
            .env("DISCORD_INDEXER_MODELS_DIR", &s.models)
            .args(args)
            .arg("--data-dir")
            .arg(&s.data);
        output(c)
    };
    let out = run(&["status"]).await;
    let printed = text(&out.stdout);
    eprintln!("{printed}");
    assert_eq!(out.status.code(), Some(0), "{printed}{}", text(&out.stderr));

    // Times: one format, to the minute, in UTC; nothing in the store's RFC 3339.
    let minute = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    assert!(
        !printed.as_bytes().windows(3).any(|w| w[0].is_ascii_digit() && w[1] == b'T' && w[2].is_ascii_digit()),
        "{printed}"
    );
    let guild_line = printed.lines().next().unwrap();
    let last_load = guild_line.split("last load ").nth(1).unwrap_or_else(|| panic!("{guild_line}"));
    assert!(
        last_load.len() > 20 && last_load.as_bytes()[4] == b'-' && last_load[16..].starts_with(" UTC"),
        "{guild_line}"
    );
    // Checkpoints: the time of the message reached, never the raw id; the
    // only long number left is the guild's id (which commands take).
    let checkpoints = checkpoints(&s.data.join("archive.db"));
    let general = s.fake.world().guilds[0].channels.iter().find(|c| c.name == "general").unwrap().id;
    let line = printed.lines().find(|l| l.contains("#general ")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains(&format!("loaded up to {}", minute(snowflake::timestamp(checkpoints[&general])))), "{line}");
    for word in printed.split(|c: char| !c.is_ascii_digit()).filter(|w| (17..=19).contains(&w.len())) {
        assert_eq!(word, g, "a raw id in the text: {printed}");
    }
    // The stopped build: how many messages are embedded, of how many, and what finishes it.
    let line = printed.lines().find(|l| l.contains("index tiny")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains("building: ") && line.contains("messages embedded so far"), "{line}");
    assert!(printed.contains(&format!("`discord-indexer index --guild {g} --model tiny` resumes it")), "{printed}");
    assert!(!printed.contains(" 0 chunks") && !printed.contains("parts"), "{printed}");

    // JSON keeps the exact fields, and adds what the text shows.
    let out = run(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let guild = &status["guilds"][0];
    let channel = guild["channels"].as_array().unwrap().iter().find(|c| c["name"] == "general").unwrap();
    assert_eq!(channel["last_message_id"], checkpoints[&general].to_string());
    assert_eq!(channel["checkpoint_at"], snowflake::format_time(snowflake::timestamp(checkpoints[&general])));
    let index = &guild["indexes"][0];
    assert_eq!((index["state"].as_str(), index["chunks"].as_u64()), (Some("building"), Some(0)));
    let (embedded, stored) = (index["messages_embedded"].as_u64().unwrap(), index["stored_chunks"].as_u64().unwrap());
    assert!(embedded > 0 && embedded < guild["messages"].as_u64().unwrap() && stored > 0, "{index}");
    assert!(line.contains(&format!("building: {embedded} of ~{} messages", guild["messages"])), "{line}");

    // Finished, it is up to date; a deletion since makes it not.
    let out = run(&["index", "--guild", &g, "--model", "tiny"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["status"]).await;
    let printed = text(&out.stdout);
    eprintln!("{printed}");
    let line = printed.lines().find(|l| l.contains("index tiny")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains("complete, up to date"), "{line}");
    let middle: i64 = rusqlite::Connection::open(s.data.join("archive.db"))
        .unwrap()
        .query_row(
            "SELECT id FROM messages WHERE channel_id = ?1 ORDER BY id LIMIT 1 OFFSET 10",
            [general as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(s.store.delete_messages(&[middle as u64]).unwrap(), 1);
    let out = run(&["status"]).await;
    let printed = text(&out.stdout);
    eprintln!("{printed}");
    let line = printed.lines().find(|l| l.contains("index tiny")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains("complete, not up to date: 1 channel changed since"), "{line}");
    assert!(
        printed.contains(&format!("`discord-indexer index --guild {g} --model tiny` brings it up to date")),
        "{printed}"
    );
    let out = run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let index = &status["guilds"][0]["indexes"][0];
    assert_eq!(index["changed_channels"], 1, "{index}");
    assert!(index["messages_to_read"].as_u64().unwrap() > 0, "{index}");
}
