//! `import`: DiscordChatExporter exports (written here in DCE's exact
//! formats) into the archive; then `load`, `index` and `ask` on top.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use discord_indexer::embed::tiny::{self, TinySpec};
use discord_indexer::embed::{Embedder, ModelInfo};
use discord_indexer::import::{self, ImportOptions, ImportSummary};
use discord_indexer::index::{self, IndexOptions};
use discord_indexer::search::{Mode, Query, SearchOptions, Searcher, Viewer};
use discord_indexer::store::Store;
use discord_indexer::vector::Backend;
use fake_discord::{dce, FakeChannel, FakeKind, World, WorldSpec};
use tokio_util::sync::CancellationToken;

use crate::util::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
    c.env_remove("DISCORD_TOKEN").env_remove("DISCORD_API_BASE").env_remove("DISCORD_INDEXER_DATA_DIR");
    c
}

fn import_cmd(data: &Path, paths: &[&Path]) -> Command {
    let mut c = bin();
    c.arg("import").args(paths).arg("--data-dir").arg(data);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(paths: &[&Path], store: &Store) -> ImportSummary {
    let options = ImportOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        guild_name: None,
        batch: 3,
        media: Some(Default::default()),
    };
    import::import(store, &options, &|_| {}, &CancellationToken::new()).unwrap()
}

/// Every row an import or a load writes, except the raw JSON and versions,
/// as text (for "nothing changed" and "the same rows").
fn dump(db: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let queries = [
        ("guilds", "SELECT id, name FROM guilds ORDER BY id"),
        ("channels", "SELECT id, guild_id, parent_id, type, name, source FROM channels ORDER BY id"),
        ("users", "SELECT id, username, global_name, discriminator, avatar, bot FROM users ORDER BY id"),
        (
            "messages",
            "SELECT id, channel_id, guild_id, author_id, content, created_at, edited_at, type, pinned,
                reply_to_id, reply_to_channel_id FROM messages ORDER BY id",
        ),
        ("attachments", "SELECT id, message_id, filename, size, url FROM attachments ORDER BY id"),
        ("reactions", "SELECT message_id, emoji, count FROM reactions ORDER BY message_id, emoji"),
        ("checkpoints", "SELECT channel_id, guild_id, last_message_id, state FROM checkpoints ORDER BY channel_id"),
    ];
    let mut out = BTreeMap::new();
    for (name, sql) in queries {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let cells: Vec<String> = (0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => format!("Text({:?})", String::from_utf8_lossy(t)),
                        other => format!("{other:?}"),
                    })
                    .collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(name, rows);
    }
    out
}

fn query_one<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A DCE JSON export as DCE writes it, by hand: a channel with a reply, an
/// edit, a pin, attachments, unicode and custom reactions, escaped
/// non-ASCII (a surrogate pair too), a thread announcement; `extra` appends
/// messages (a longer export of the same channel).
fn channel_export(extra: &str) -> String {
    format!(
        r##"{{
  "guild": {{ "id": "900000000000000001", "name": "Rust Lovers", "iconUrl": "https://cdn.discordapp.com/icons/1/a.png" }},
  "channel": {{ "id": "900000000000000010", "type": "GuildTextChat", "categoryId": "900000000000000005", "category": "Text", "name": "general", "topic": "chat" }},
  "dateRange": {{ "after": null, "before": null }},
  "exportedAt": "2024-06-01T10:00:00.1234567+02:00",
  "messages": [
    {{ "id": "1100000000000000000", "type": "Default", "timestamp": "2023-05-16T20:50:18.31+00:00", "timestampEdited": null, "callEndedTimestamp": null, "isPinned": true,
      "content": "caf\u00E9 time \uD83D\uDE00 who has the notary keys?",
      "author": {{ "id": "500", "name": "ann", "discriminator": "0000", "nickname": "Ann B", "color": "#FF0000", "isBot": false, "roles": [{{ "id": "7", "name": "mod", "color": null, "position": 1 }}], "avatarUrl": "https://cdn.discordapp.com/avatars/500/abc123.png?size=512" }},
      "attachments": [{{ "id": "1100000000000000001", "url": "https://cdn.discordapp.com/attachments/900000000000000010/1100000000000000001/keys.png", "fileName": "keys.png", "fileSizeBytes": 2048 }}],
      "embeds": [{{ "title": "x", "url": null, "timestamp": null, "description": "", "color": null, "fields": [] }}], "stickers": [],
      "reactions": [
        {{ "emoji": {{ "id": "", "name": "\uD83D\uDC4D", "code": "thumbsup", "isAnimated": false, "imageUrl": "u" }}, "count": 2, "users": [] }},
        {{ "emoji": {{ "id": "800", "name": "ferris", "code": "ferris", "isAnimated": true, "imageUrl": "u" }}, "count": 1, "users": [] }}
      ],
      "mentions": [], "inlineEmojis": [] }},
    {{ "id": "1100000000000000100", "type": "Reply", "timestamp": "2023-05-16T22:51:00+02:00", "timestampEdited": "2023-05-17T09:00:00.5+00:00", "callEndedTimestamp": null, "isPinned": false,
      "content": "rotate them with the keytool, see the wiki",
      "author": {{ "id": "501", "name": "bob", "discriminator": "1234", "nickname": null, "color": null, "isBot": false, "avatarUrl": "https://cdn.discordapp.com/embed/avatars/1.png" }},
      "attachments": [], "embeds": [], "stickers": [], "reactions": [], "mentions": [],
      "reference": {{ "messageId": "1100000000000000000", "channelId": "900000000000000010", "guildId": "900000000000000001" }} }},
    {{ "id": "1100000000000000200", "type": "ThreadCreated", "timestamp": "2023-05-17T10:00:00+00:00", "timestampEdited": null, "isPinned": false,
      "content": "Started a thread.",
      "author": {{ "id": "501", "name": "bob", "discriminator": "1234", "nickname": null, "isBot": false, "avatarUrl": "" }},
      "attachments": [], "embeds": [], "stickers": [], "reactions": [], "mentions": [],
      "reference": {{ "messageId": null, "channelId": "900000000000000020", "guildId": "900000000000000001" }} }}{extra}
  ],
  "messageCount": 3
}}
"##
    )
}

fn thread_export() -> String {
    r#"{"guild":{"id":"900000000000000001","name":"Rust Lovers","iconUrl":""},
"channel":{"id":"900000000000000020","type":"GuildPublicThread","categoryId":"900000000000000010","category":"general","name":"key rotation","topic":null},
"dateRange":{"after":null,"before":null},"exportedAt":"2024-06-01T10:00:00+00:00",
"messages":[{"id":"1100000000000000300","type":"Default","timestamp":"2023-05-17T10:01:00+00:00","timestampEdited":null,"isPinned":false,"content":"first step: back up wallet.dat","author":{"id":"500","name":"ann","discriminator":"0000","nickname":"Ann B","isBot":false,"avatarUrl":""},"attachments":[],"embeds":[],"stickers":[],"reactions":[],"mentions":[]}],
"messageCount":1}"#
        .into()
}

const MORE: &str = r#",
    { "id": "1100000000000000400", "type": "Default", "timestamp": "2023-05-18T08:00:00+00:00", "timestampEdited": null, "isPinned": false,
      "content": "thanks, that worked", "author": { "id": "502", "name": "cy", "discriminator": "0000", "nickname": "Cy", "isBot": false, "avatarUrl": "" },
      "attachments": [], "embeds": [], "stickers": [], "reactions": [], "mentions": [] }"#;

#[test]
fn a_json_export_becomes_the_rows_it_carries_and_reimports_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let channel = exports.join("Rust Lovers - Text - general [900000000000000010].json");
    let thread = exports.join("Rust Lovers - general - key rotation [900000000000000020].json");
    std::fs::write(&channel, channel_export("")).unwrap();
    std::fs::write(&thread, thread_export()).unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let db = data.join("archive.db");

    let summary = run(&[&exports], &store);
    assert_eq!((summary.files, summary.channels, summary.new, summary.failed), (2, 2, 4, 0), "{summary:#?}");
    let rows = dump(&db);
    assert_eq!(rows["guilds"], ["Integer(900000000000000001)|Text(\"Rust Lovers\")"]);
    assert_eq!(
        rows["channels"],
        [
            "Integer(900000000000000010)|Integer(900000000000000001)|Integer(900000000000000005)|Integer(0)|Text(\"general\")|Text(\"export\")",
            "Integer(900000000000000020)|Integer(900000000000000001)|Integer(900000000000000010)|Integer(11)|Text(\"key rotation\")|Text(\"export\")",
        ]
    );
    let messages = &rows["messages"];
    assert_eq!(messages.len(), 4);
    // Unicode unescaped, times normalised to UTC, the pin kept.
    assert_eq!(
        messages[0],
        "Integer(1100000000000000000)|Integer(900000000000000010)|Integer(900000000000000001)|Integer(500)|\
         Text(\"café time 😀 who has the notary keys?\")|Text(\"2023-05-16T20:50:18.310000Z\")|Null|Integer(0)|Integer(1)|Null|Null"
    );
    // A reply with an offset time and an edit.
    assert_eq!(
        messages[1],
        "Integer(1100000000000000100)|Integer(900000000000000010)|Integer(900000000000000001)|Integer(501)|\
         Text(\"rotate them with the keytool, see the wiki\")|Text(\"2023-05-16T20:51:00.000000Z\")|\
         Text(\"2023-05-17T09:00:00.500000Z\")|Integer(19)|Integer(0)|Integer(1100000000000000000)|Integer(900000000000000010)"
    );
    assert!(messages[2].contains("|Integer(18)|"), "a thread announcement keeps its type: {}", messages[2]);
    assert!(messages[3].starts_with("Integer(1100000000000000300)|Integer(900000000000000020)|"));
    assert_eq!(
        rows["attachments"],
        ["Integer(1100000000000000001)|Integer(1100000000000000000)|Text(\"keys.png\")|Integer(2048)|\
          Text(\"https://cdn.discordapp.com/attachments/900000000000000010/1100000000000000001/keys.png\")"]
    );
    assert_eq!(
        rows["reactions"],
        [
            "Integer(1100000000000000000)|Text(\"ferris:800\")|Integer(1)",
            "Integer(1100000000000000000)|Text(\"👍\")|Integer(2)"
        ]
    );
    assert_eq!(
        rows["users"],
        [
            "Integer(500)|Text(\"ann\")|Text(\"Ann B\")|Text(\"0\")|Text(\"abc123\")|Integer(0)",
            "Integer(501)|Text(\"bob\")|Null|Text(\"1234\")|Null|Integer(0)",
        ]
    );
    // Each channel's checkpoint is its newest imported message, ready for a load.
    assert_eq!(
        rows["checkpoints"],
        [
            "Integer(900000000000000010)|Integer(900000000000000001)|Integer(1100000000000000200)|Text(\"imported\")",
            "Integer(900000000000000020)|Integer(900000000000000001)|Integer(1100000000000000300)|Text(\"imported\")",
        ]
    );
    // The raw column holds Discord's message object.
    let raw: String = query_one(&db, "SELECT raw FROM messages WHERE id = 1100000000000000100");
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["message_reference"]["message_id"], "1100000000000000000");
    assert_eq!(raw["type"], 19);

    // Again: nothing changes.
    let again = run(&[&exports], &store);
    assert_eq!((again.new, again.updated, again.unchanged), (0, 0, 4));
    assert_eq!(dump(&db), rows);

    // A longer export of the same channel, with a later edit: only the tail
    // is added and the edited message replaced.
    let edited = channel_export(MORE).replace(
        r#""timestampEdited": "2023-05-17T09:00:00.5+00:00", "callEndedTimestamp": null, "isPinned": false,
      "content": "rotate them with the keytool, see the wiki""#,
        r#""timestampEdited": "2023-05-19T09:00:00+00:00", "callEndedTimestamp": null, "isPinned": false,
      "content": "rotate them with the keytool, see the wiki (fixed link)""#,
    );
    assert_ne!(edited, channel_export(MORE));
    std::fs::write(&channel, edited).unwrap();
    let longer = run(&[&channel], &store);
    assert_eq!((longer.new, longer.updated, longer.unchanged), (1, 1, 2), "{longer:#?}");
    let content: String = query_one(&db, "SELECT content FROM messages WHERE id = 1100000000000000100");
    assert!(content.ends_with("(fixed link)"));
    let cp: i64 = query_one(&db, "SELECT last_message_id FROM checkpoints WHERE channel_id = 900000000000000010");
    assert_eq!(cp, 1100000000000000400);
    // The stored user is not overwritten by an export's older copy.
    let name: Option<String> = query_one(&db, "SELECT global_name FROM users WHERE id = 500");
    assert_eq!(name.as_deref(), Some("Ann B"));
}

#[test]
fn a_split_export_imports_like_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let whole = channel_export(MORE);
    // DCE splits by message count: the same header in each part.
    let (head, rest) = whole.split_once("\"messages\": [").unwrap();
    let cut = rest.find(",\n    { \"id\": \"1100000000000000200\"").unwrap();
    let part1 = format!("{head}\"messages\": [{}\n  ],\n  \"messageCount\": 2\n}}\n", &rest[..cut]);
    let part2 = format!("{head}\"messages\": [{}", &rest[cut + 1..]);
    let parts = dir.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::write(parts.join("Rust Lovers - Text - general [900000000000000010] [part 1].json"), part1).unwrap();
    std::fs::write(parts.join("Rust Lovers - Text - general [900000000000000010] [part 2].json"), part2).unwrap();
    let single = dir.path().join("single.json");
    std::fs::write(&single, &whole).unwrap();

    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let split = run(&[&parts], &Store::open(&a).unwrap());
    assert_eq!((split.files, split.channels, split.new, split.failed), (2, 1, 4, 0), "{split:#?}");
    run(&[&single], &Store::open(&b).unwrap());
    assert_eq!(dump(&a.join("archive.db")), dump(&b.join("archive.db")));
}

/// One CSV channel as DCE wrote it in each era.
fn csv_rows(format: &str) -> (String, Vec<&'static str>) {
    let dates = match format {
        // Since 2023-11: ISO 8601 round-trip, seven fractional digits, an offset.
        "iso" => vec![
            "2025-04-14T14:38:11.3860000+00:00",
            "2025-04-14T14:38:11.3860000+00:00",
            "2025-04-14T16:40:00.0000000+02:00",
        ],
        // 2023-09 to 2023-11: the locale's general format (en-US).
        "locale" => vec!["5/16/2023 8:50:18 PM", "5/16/2023 8:50:18 PM", "5/16/2023 9:01:00 PM"],
        // Before 2023-09: the default user format.
        "default" => vec!["05/16/2023 8:50 PM", "05/16/2023 8:50 PM", "05/16/2023 09:01 PM"],
        // Old archives: `;`, trailing `;`, dd-MMM-yy.
        "old" => vec!["13-Apr-19 04:51 AM", "13-Apr-19 04:51 AM", "13-Apr-19 05:02 PM"],
        other => panic!("{other}"),
    };
    let (sep, end) = if format == "old" { (";", ";") } else { (",", "") };
    let header = ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"].join(sep) + end;
    let mut out = header + "\n";
    let rows = [
        ("333508133060083712", "Nabob#5004", "hi, how do I claim \"interest\"?", "", "👍 (2),❤️ (1)"),
        (
            "264236295432175616",
            "gordon",
            "use the Agama wallet;\nthen restart",
            "https://cdn.discordapp.com/attachments/1/4242/claim.png",
            "",
        ),
        ("333508133060083712", "Nabob#5004", "thanks", "", ""),
    ];
    // Attachment ids are unique per era (they are Discord's, from the URL).
    let era = ["iso", "locale", "default", "old"].iter().position(|f| *f == format).unwrap();
    for (date, (id, author, content, attachments, reactions)) in dates.iter().zip(rows) {
        let attachments = attachments.replace("4242", &format!("424{era}"));
        let fields =
            [id, author, date, content, &attachments, reactions].map(|f| format!("\"{}\"", f.replace('"', "\"\"")));
        out += &(fields.join(sep) + end + "\n");
    }
    (out, dates)
}

#[test]
fn csv_exports_of_every_era_import_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let db = data.join("archive.db");
    let root = dir.path().join("Komodo");
    let expected_times = [
        ("iso", ["2025-04-14T14:38:11.386000Z", "2025-04-14T14:38:11.386000Z", "2025-04-14T14:40:00.000000Z"]),
        ("locale", ["2023-05-16T20:50:18.000000Z", "2023-05-16T20:50:18.000000Z", "2023-05-16T21:01:00.000000Z"]),
        ("default", ["2023-05-16T20:50:00.000000Z", "2023-05-16T20:50:00.000000Z", "2023-05-16T21:01:00.000000Z"]),
        ("old", ["2019-04-13T04:51:00.000000Z", "2019-04-13T04:51:00.000000Z", "2019-04-13T17:02:00.000000Z"]),
    ];
    for (format, _) in &expected_times {
        let folder = root.join(format);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("1.csv"), csv_rows(format).0).unwrap();
    }
    let summary = run(&[&root], &store);
    assert_eq!((summary.files, summary.channels, summary.new, summary.rejected), (4, 4, 12, 0), "{summary:#?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (format, times) in &expected_times {
        let channel: i64 = conn.query_row("SELECT id FROM channels WHERE name = ?1", [format], |r| r.get(0)).unwrap();
        assert!(channel as u64 >= 1 << 62, "made-up channel ids are above Discord's range");
        let rows: Vec<(i64, String, String, i64)> = conn
            .prepare("SELECT id, created_at, content, author_id FROM messages WHERE channel_id = ?1 ORDER BY id")
            .unwrap()
            .query_map([channel], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let got: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(got, times, "{format}");
        // File order within one timestamp; quotes and newlines kept.
        assert_eq!(rows[0].2, "hi, how do I claim \"interest\"?");
        assert_eq!(rows[1].2, "use the Agama wallet;\nthen restart");
        assert_eq!(rows[0].3, 333508133060083712);
        // Ids are snowflake-shaped: their time is the message's.
        let t = discord_indexer::snowflake::format_time(discord_indexer::snowflake::timestamp(rows[2].0 as u64));
        assert_eq!(t[..19], times[2][..19]);
    }
    let guild: String = conn.query_row("SELECT DISTINCT name FROM guilds", [], |r| r.get(0)).unwrap();
    assert_eq!(guild, "Komodo", "the folder above the channel names the guild");
    let reactions: i64 = conn.query_row("SELECT count(*) FROM reactions", [], |r| r.get(0)).unwrap();
    let attachments: Vec<String> = conn
        .prepare("SELECT filename FROM attachments")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!((reactions, attachments.len()), (8, 4));
    assert!(attachments.iter().all(|a| a == "claim.png"));
    drop(conn);

    // Re-import: a no-op. A longer export (two more rows) adds just those.
    let before = dump(&db);
    let again = run(&[&root], &store);
    assert_eq!((again.new, again.unchanged), (0, 12));
    assert_eq!(dump(&db), before);
    let old = root.join("old/1.csv");
    let mut longer = std::fs::read_to_string(&old).unwrap();
    longer += "\"501\";\"cy#0001\";\"13-Apr-19 05:02 PM\";\"same minute as the last one\";\"\";\"\";\n";
    longer += "\"501\";\"cy#0001\";\"14-Apr-19 09:00 AM\";\"next day\";\"\";\"\";\n";
    std::fs::write(&old, longer).unwrap();
    let tail = run(&[&root], &store);
    assert_eq!((tail.new, tail.unchanged), (2, 12), "{tail:#?}");
}

#[test]
fn unreadable_rows_are_listed_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("support.csv");
    let rows = "AuthorID,Author,Date,Content,Attachments,Reactions\n\
        \"1\",\"a\",\"2025-04-14T14:38:11.3860000+00:00\",\"ok\",\"\",\"\"\n\
        \"2\",\"b\",\"the day before yesterday\",\"bad date\",\"\",\"\"\n\
        \"x\",\"c\",\"2025-04-14T14:39:11.3860000+00:00\",\"bad author\",\"\",\"\"\n\
        \"4\",\"d\",\"2025-04-14T14:40:11.3860000+00:00\",\"ok too\",\"\",\"\"\n";
    std::fs::write(&file, rows).unwrap();
    let summary = run(&[&file], &Store::open(&dir.path().join("data")).unwrap());
    assert_eq!((summary.new, summary.rejected, summary.failed), (2, 2, 0));
    let rejected = &summary.sources[0].rejected_rows;
    assert_eq!((rejected[0].at, rejected[1].at), (3, 4));
    assert!(rejected[0].reason.contains("unrecognised date \"the day before yesterday\""), "{rejected:?}");
    assert!(rejected[1].reason.contains("author id"), "{rejected:?}");
    assert_eq!(summary.rejected_reasons.len(), 2);

    // Every rejected row is counted per reason, not only the ones listed.
    let many = dir.path().join("many.csv");
    let mut rows = String::from("AuthorID,Author,Date,Content,Attachments,Reactions\n");
    for i in 0..25 {
        rows += &format!("\"1\",\"a\",\"not a date {i}\",\"x\",\"\",\"\"\n");
    }
    std::fs::write(&many, rows).unwrap();
    let summary = run(&[&many], &Store::open(&dir.path().join("data2")).unwrap());
    assert_eq!(summary.rejected, 25);
    assert_eq!(summary.sources[0].rejected_rows.len(), 20);
    assert_eq!(summary.rejected_reasons.get("unrecognised date"), Some(&25));
}

async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("binary runs")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_error_and_leaves_the_archive_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = dir.path().join("good.json");
    std::fs::write(&good, channel_export("")).unwrap();
    let out = output(import_cmd(&data, &[&good])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let db = data.join("archive.db");
    let before = dump(&db);

    let full = channel_export(MORE);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.json", full.as_bytes()[..full.len() / 2].to_vec(), "ends early"),
        ("other.json", br#"{"name": "package", "version": "1.0"}"#.to_vec(), "not a DiscordChatExporter JSON export"),
        ("array.json", b"[1, 2, 3]".to_vec(), "not a DiscordChatExporter JSON export"),
        ("garbage.json", vec![0xff, 0xfe, 0x00, 0x12, 0x80], "not valid JSON"),
        ("columns.csv", b"Date,User,Message\n\"1\",\"2\",\"3\"\n".to_vec(), "not a DiscordChatExporter CSV export"),
        (
            "endless.csv",
            [
                &b"\"AuthorID\",\"Author\",\"Date\",\"Content\",\"Attachments\",\"Reactions\"\n\"1\",\""[..],
                &[b'a'; 9 << 20],
            ]
            .concat(),
            "runs past 8 MiB",
        ),
        (
            "Direct Messages - Private - bob [42].json",
            full.replace(
                r#""id": "900000000000000001", "name": "Rust Lovers""#,
                r#""id": "0", "name": "Direct Messages""#,
            )
            .replace("GuildTextChat", "DirectTextChat")
            .into_bytes(),
            "direct messages are never archived",
        ),
    ];
    for (name, bytes, says) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = output(import_cmd(&data, &[&path])).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}{stderr}");
        assert!(stdout.contains(says) && stdout.contains(name), "{name}: {stdout}");
        assert_eq!(stdout.lines().filter(|l| l.starts_with("FAILED")).count(), 1, "{name}: {stdout}");
        assert_eq!(dump(&db), before, "{name} changed the archive");
    }

    // Paths that are not there, and folders with nothing to import.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("sub/notes.txt"), "hello").unwrap();
    // A device (or a link to one) named as an export is refused, not read
    // without end.
    let zero = dir.path().join("zero.csv");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, says) in [
        (dir.path().join("missing.json"), "no such file"),
        (empty, "nothing to import"),
        (PathBuf::from("/dev/zero"), "not a regular file"),
        (zero, "not a regular file"),
    ] {
        let out = output(import_cmd(&data, &[&path])).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    }
    assert_eq!(dump(&db), before);

    // In a folder, a bad file is reported and skipped; the others are imported (exit 1).
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::write(mixed.join("a.json"), b"{\"guild\": ").unwrap();
    std::fs::write(mixed.join("b.json"), thread_export()).unwrap();
    let out = output(import_cmd(&data, &[&mixed])).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED") && stdout.contains("a.json") && stdout.contains("1 new"), "{stdout}");

    // --json for scripts.
    let mut c = import_cmd(&data, &[&mixed]);
    c.arg("--json");
    let out = output(c).await;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!((summary["failed"].as_u64(), summary["unchanged"].as_u64()), (Some(1), Some(1)));
    assert!(summary["sources"][0]["channel_id"].is_null() || summary["sources"][0]["channel_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_resumes_exactly() {
    let world = World::generate(&WorldSpec::plain(1, 100));
    let dir = tempfile::tempdir().unwrap();
    let guild = &world.guilds[0];
    let channel = guild.channels.iter().find(|c| c.messages.len() >= 100).unwrap();
    let file = dir.path().join(dce::file_name(guild, channel, "json"));
    std::fs::write(&file, dce::json_export(&world, guild, channel, &channel.messages)).unwrap();

    let data = dir.path().join("data");
    // The second run passes two stored batches (unchanged) before writing one.
    for (kill_at, expected) in [("import-batch:3", 20), ("import-batch:4", 30)] {
        let mut c = import_cmd(&data, &[&file]);
        c.args(["--batch-size", "10"])
            .env("DISCORD_INDEXER_FAILPOINT", kill_at)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = output(c).await.status;
        assert!(!status.success(), "the failpoint aborted the import");
        // Exactly the batches before the kill, and the checkpoint at their end.
        let db = data.join("archive.db");
        let stored = stored(&db);
        let rows = &stored[&channel.id];
        assert_eq!(rows.len(), expected);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            channel.messages[..expected].iter().map(|m| m.id).collect::<Vec<_>>()
        );
        assert_eq!(checkpoints(&db)[&channel.id], channel.messages[expected - 1].id);
    }
    let out = output(import_cmd(&data, &[&file])).await;
    assert_eq!(out.status.code(), Some(0));
    let clean = dir.path().join("clean");
    let out = output(import_cmd(&clean, &[&file])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(dump(&data.join("archive.db")), dump(&clean.join("archive.db")));
}

/// Gives a copied channel's messages ids of their own, after every message of the world.
fn renumber(world: &World, channel: &mut FakeChannel) {
    let last = world.guilds.iter().flat_map(|g| &g.channels).flat_map(|c| &c.messages).map(|m| m.id).max().unwrap();
    for (i, m) in channel.messages.iter_mut().enumerate() {
        m.id = last + ((i as u64 + 1) << 22);
        m.reply_to = None;
    }
}

/// The exports of every channel the standard world lets the bot read, cut at
/// `share` of each channel's history.
fn export_world(world: &World, folder: &Path, share: f64) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let truth = ground_truth(world);
    let guild = &world.guilds[0];
    let mut files = Vec::new();
    for c in guild.channels.iter().filter(|c| truth.contains_key(&c.id)) {
        let n = (c.messages.len() as f64 * share).round() as usize;
        let path = folder.join(dce::file_name(guild, c, "json"));
        std::fs::write(&path, dce::json_export(world, guild, c, &c.messages[..n])).unwrap();
        files.push(path);
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_and_a_load_of_one_server_merge_and_the_load_asks_only_for_what_is_newer() {
    let fake = start(standard_world(), fast_limits()).await;
    let world = fake.world().clone();
    let truth = ground_truth(&world);
    let dir = tempfile::tempdir().unwrap();

    // A channel that Discord no longer has, known only from an export.
    let guild = &world.guilds[0];
    let mut gone: FakeChannel = guild.channel_named("general").clone();
    gone.id = guild.channels.iter().map(|c| c.id).max().unwrap() + 1000;
    gone.name = "old-lounge".into();
    gone.messages.truncate(5);
    renumber(&world, &mut gone);
    let exports = dir.path().join("exports");
    export_world(&world, &exports, 0.5);
    std::fs::write(
        exports.join(dce::file_name(guild, &gone, "json")),
        dce::json_export(&world, guild, &gone, &gone.messages),
    )
    .unwrap();

    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let db = data.join("archive.db");
    let summary = run(&[&exports], &store);
    assert_eq!(summary.failed, 0, "{summary:#?}");
    assert!(summary.new > 1000);
    let imported = checkpoints(&db);
    fake.clear_log();
    let load = run_load(&fake, &store, 4).await.unwrap();
    assert!(load.ok, "{load:#?}");
    // The archive is the server's history (plus the channel only the export has)...
    let mut expected = truth.clone();
    expected.insert(gone.id, stored(&db)[&gone.id].clone());
    assert_eq!(stored(&db), expected);
    assert_eq!(stored(&db)[&gone.id].len(), 5);
    // ...and the load asked each imported channel only for what is after its import.
    let mut first_after = BTreeMap::new();
    for r in fake.requests().iter().filter(|r| r.path.ends_with("/messages")) {
        let channel: u64 = r.path.split('/').nth(4).unwrap().parse().unwrap();
        first_after.entry(channel).or_insert_with(|| r.query("after").unwrap().parse::<u64>().unwrap());
    }
    for (channel, checkpoint) in &imported {
        if let Some(after) = first_after.get(channel) {
            assert_eq!(after, checkpoint, "channel {channel} was not continued from its import");
        }
    }
    assert!(imported.iter().filter(|(c, cp)| **cp > 0 && first_after.contains_key(c)).count() >= 5);
    // The channel the bot cannot see is reported, not failed.
    let notes = &load.guilds[0].notes;
    assert!(
        notes.iter().any(|n| n.contains("1 imported channel(s) are not visible") && n.contains("old-lounge")),
        "{notes:?}"
    );
    let state: String = query_one(&db, &format!("SELECT state FROM checkpoints WHERE channel_id = {}", gone.id));
    assert_eq!(state, "imported");

    // The same rows as a load alone writes (what DCE carries of them).
    let alone = dir.path().join("alone");
    let alone_store = Store::open(&alone).unwrap();
    run_load(&fake, &alone_store, 4).await.unwrap();
    let (mut merged, loaded) = (dump(&db), dump(&alone.join("archive.db")));
    let only_exported: Vec<String> = gone.messages.iter().map(|m| format!("Integer({})|", m.id)).collect();
    for table in ["messages", "attachments", "reactions", "users"] {
        merged.get_mut(table).unwrap().retain(|row| !only_exported.iter().any(|m| row.contains(m.as_str())));
        let (a, b) = (&merged[table], &loaded[table]);
        let differ: Vec<_> = a.iter().zip(b).filter(|(x, y)| x != y).take(3).collect();
        assert!(a == b, "{table}: {} rows vs {}; first differences {differ:?}", a.len(), b.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_history_is_searchable_and_hidden_from_members_until_discord_says_who_may_read_it() {
    let world = World::generate(&WorldSpec::plain(2, 60));
    let member = world.users[7].id;
    let fake = start(world, fast_limits()).await;
    let world = fake.world().clone();
    let guild = &world.guilds[0];
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    // One channel Discord lists, one it does not (deleted since the export).
    let listed = &guild.channels.iter().find(|c| c.messages.len() >= 60).unwrap();
    let mut gone: FakeChannel = (*listed).clone();
    gone.id += 100_000;
    gone.name = "old-lounge".into();
    renumber(&world, &mut gone);
    let mut world_with_phrase = world.clone();
    for (c, phrase) in [(listed.id, "zanzibar lighthouse keeper"), (gone.id, "zanzibar lighthouse ferry")] {
        let ch = if c == gone.id { &mut gone } else { world_with_phrase.channel_mut(c).unwrap() };
        ch.messages[10].content = Some(format!("who remembers the {phrase}?"));
        let ch = ch.clone();
        std::fs::write(
            exports.join(dce::file_name(guild, &ch, "json")),
            dce::json_export(&world_with_phrase, guild, &ch, &ch.messages),
        )
        .unwrap();
    }
    let data = dir.path().join("data");
    let models = dir.path().join("models");
    let store = Store::open(&data).unwrap();
    assert_eq!(run(&[&exports], &store).failed, 0);
    tiny::write(&models.join("tiny"), &TinySpec::default()).unwrap();
    let embedder =
        Arc::new(Embedder::load(ModelInfo::find(&models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
    let backend = Backend::new(&data, None, None).unwrap();
    let mut options = IndexOptions::new(guild.id);
    options.activate = true;
    index::index(&store, &backend, embedder, &options, &|_| {}, &CancellationToken::new()).await.unwrap();

    let searcher = |with_client: bool| {
        Searcher::new(
            store.clone(),
            Backend::new(&data, None, None).unwrap(),
            models.clone(),
            with_client.then(|| client(&fake)),
            SearchOptions::default(),
        )
    };
    let ask = |viewer| Query {
        text: "zanzibar lighthouse".into(),
        guilds: vec![guild.id],
        viewer,
        limit: 10,
        mode: Mode::Keyword,
        filters: Default::default(),
    };
    let channels =
        |a: &discord_indexer::search::Answer| a.results.iter().map(|r| r.channel_id).collect::<BTreeSet<_>>();
    // The operator finds both imported conversations.
    let answer = searcher(false).ask(&ask(Viewer::Operator)).await.unwrap();
    assert_eq!(channels(&answer), BTreeSet::from([listed.id, gone.id]));
    // A member, before anything was read from Discord: nothing, with a reason.
    let err = searcher(false).ask(&ask(Viewer::User(member))).await.unwrap_err();
    assert!(err.to_string().contains("showing nothing"), "{err}");
    assert!(err.to_string().contains("never read from Discord") && err.to_string().contains("load --guild"), "{err}");
    // Once Discord has said who may read what: the listed channel, never the other.
    let answer = searcher(true).ask(&ask(Viewer::User(member))).await.unwrap();
    assert_eq!(channels(&answer), BTreeSet::from([listed.id]));
    assert!(answer.notes.iter().any(|n| n.contains("1 imported channel(s)")), "{:?}", answer.notes);
    let answer = searcher(true).ask(&ask(Viewer::User(member))).await.unwrap();
    assert!(!channels(&answer).contains(&gone.id));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_on_stdout_ends_the_program_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("general.json");
    std::fs::write(&file, channel_export(MORE)).unwrap();
    // `discord-indexer ... | head -0`: the reader is gone before the first line.
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    let mut import = import_cmd(&data, &[&file]);
    import.stdout(closed());
    let mut status = bin();
    status.args(["status", "--data-dir"]).arg(&data).stdout(closed());
    let mut guilds = bin();
    guilds.args(["guilds", "--json", "--data-dir"]).arg(&data).stdout(closed());
    for (what, c) in [("import", import), ("status", status), ("guilds", guilds)] {
        let out = output(c).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{what}: {stderr}");
    }
    // The import itself happened in full before its summary was printed.
    let n: i64 = query_one(&data.join("archive.db"), "SELECT count(*) FROM messages");
    assert_eq!(n, 4);
    // `status` says where each imported channel stands and when its checkpoint moved.
    let mut status = bin();
    status.args(["status", "--data-dir"]).arg(&data);
    let out = output(status).await;
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("#general")).unwrap_or_else(|| panic!("{stdout}"));
    let moved: String =
        query_one(&data.join("archive.db"), "SELECT loaded_at FROM checkpoints WHERE channel_id = 900000000000000010");
    let moved = format!("moved {}", moved[..16].replace('T', " "));
    assert!(line.contains("imported") && line.contains(&moved), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_each_cause_once_in_words_a_person_understands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("general.json");
    std::fs::write(&file, channel_export("")).unwrap();
    assert_eq!(output(import_cmd(&data, &[&file])).await.status.code(), Some(0));
    let models = dir.path().join("no-models");
    std::fs::create_dir_all(&models).unwrap();
    let mut c = bin();
    c.env("DISCORD_INDEXER_MODELS_DIR", &models)
        .args(["index", "--guild", "900000000000000001", "--data-dir"])
        .arg(&data);
    let out = output(c).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("no model").count(), 1, "the cause is said once: {err}");
    assert!(err.contains("fetch-model.sh"), "{err}");
    // An id that is not a number says what an id is and where to find one.
    let mut c = bin();
    c.args(["status", "--guild", "abc", "--data-dir"]).arg(&data);
    let out = output(c).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a Discord id") && err.contains("Copy ID") && !err.contains("invalid digit"), "{err}");
}

/// A message of a hand-written export: id, content, edit time, and an attachment (id, url).
type HostileMessage<'a> = (u64, &'a str, Option<&'a str>, Option<(u64, String)>);

/// A DCE JSON export written by hand, as an adversary would.
fn hostile_json(guild: (u64, &str), channel: (u64, &str), messages: &[HostileMessage]) -> String {
    let messages: Vec<serde_json::Value> = messages
        .iter()
        .map(|(id, content, edited, attachment)| {
            serde_json::json!({
                "id": id.to_string(), "type": "Default", "timestamp": "2024-03-01T10:00:00+00:00",
                "timestampEdited": edited, "callEndedTimestamp": null, "isPinned": false, "content": content,
                "author": {"id": "42", "name": "mallory", "discriminator": "0000", "nickname": null,
                           "isBot": false, "avatarUrl": ""},
                "attachments": attachment.iter().map(|(id, url)| serde_json::json!(
                    {"id": id.to_string(), "url": url, "fileName": "x.png", "fileSizeBytes": 10})).collect::<Vec<_>>(),
                "embeds": [], "stickers": [], "reactions": [], "mentions": []
            })
        })
        .collect();
    serde_json::json!({
        "guild": {"id": guild.0.to_string(), "name": guild.1, "iconUrl": ""},
        "channel": {"id": channel.0.to_string(), "type": "GuildTextChat", "categoryId": null, "category": "",
                    "name": channel.1, "topic": null},
        "dateRange": {"after": null, "before": null},
        "exportedAt": "2024-06-01T10:00:00+00:00",
        "messageCount": messages.len(),
        "messages": messages,
    })
    .to_string()
}

/// Hostile exports against a loaded archive with the permission matrix: ids
/// of private messages and attachments named in a public channel, a private
/// channel claimed for another guild, ids from the future, a DM export with
/// `--guild-name`. Nothing Discord said moves, every rejection is counted,
/// and no user finds anything of a channel they may not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_exports_move_nothing_discord_said_and_leak_nothing() {
    use crate::search::{matrix, GATED};
    let mut world = World::generate(&WorldSpec::standard());
    let cast = world.add_access_matrix();
    let s = loaded(world).await;
    let world = s.fake.world().clone();
    let guild = &world.guilds[0];
    let db = s.data.join("archive.db");
    let general = guild.channel_named("general").id;
    let staff_room = guild.channel_named("staff-room").id;
    // Where each message really is.
    let home: BTreeMap<u64, u64> =
        guild.channels.iter().flat_map(|c| c.messages.iter().map(move |m| (m.id, c.id))).collect();
    // A private message and a private attachment, as stored.
    let gated: Vec<String> = GATED.iter().map(|n| guild.channel_named(n).id.to_string()).collect();
    let (secret, secret_content): (i64, String) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(&format!("SELECT id, content FROM messages WHERE channel_id = {staff_room} LIMIT 1"), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let (attachment, owner, url): (i64, i64, String) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            &format!(
                "SELECT a.id, a.message_id, a.url FROM attachments a JOIN messages m ON m.id = a.message_id
                 WHERE m.channel_id IN ({}) LIMIT 1",
                gated.join(",")
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let newest = *home.keys().max().unwrap();
    let future = discord_indexer::snowflake::from_timestamp(chrono::Utc::now() + chrono::TimeDelta::days(30));
    let before = dump(&db);

    let exports = s._dir.path().join("hostile");
    std::fs::create_dir_all(&exports).unwrap();
    let later = Some("2030-01-01T00:00:00+00:00");
    std::fs::write(
        exports.join("public.json"),
        hostile_json(
            (guild.id, &guild.name),
            (general, "general"),
            &[
                (secret as u64, "hijacked zebra", later, None),
                (newest + (1 << 22), "zebra with the secret picture", None, Some((attachment as u64, url))),
                (future, "zebra from the future", None, None),
                (newest + (2 << 22), "harmless zebra", None, None),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        exports.join("other-guild.json"),
        hostile_json(
            (guild.id + 77, "Elsewhere"),
            (staff_room, "staff-room"),
            &[(newest + (3 << 22), "zebra", None, None)],
        ),
    )
    .unwrap();
    let dm = exports.join("Direct Messages - Private - bob [123456789012345678].csv");
    std::fs::write(
        &dm,
        "\"AuthorID\",\"Author\",\"Date\",\"Content\",\"Attachments\",\"Reactions\"\n\
         \"42\",\"bob\",\"2024-04-14T14:38:11.3860000+00:00\",\"private zebra\",\"\",\"\"\n",
    )
    .unwrap();
    let options = ImportOptions {
        paths: vec![exports.clone()],
        guild_name: Some("Komodo".into()),
        batch: 2,
        media: Some(Default::default()),
    };
    let summary = import::import(&s.store, &options, &|_| {}, &CancellationToken::new()).unwrap();

    // One new message; the private ids, the future id are rejected; the
    // other guild's claim and the DM export fail whole.
    assert_eq!(summary.new, 1, "{summary:#?}");
    assert_eq!(summary.rejected, 3, "{summary:#?}");
    assert_eq!(summary.failed, 2, "{summary:#?}");
    let failure = |name: &str| {
        summary.sources.iter().find(|r| r.files[0].ends_with(name)).and_then(|r| r.error.clone()).unwrap_or_default()
    };
    assert!(failure("other-guild.json").contains("a channel's guild never changes"), "{summary:#?}");
    assert!(failure(dm.file_name().unwrap().to_str().unwrap()).contains("never archived"), "{summary:#?}");
    assert!(summary.rejected_reasons.keys().any(|r| r.contains("from the future")), "{summary:#?}");
    // Nothing Discord said moved: the private message, its attachment, the
    // guilds, channels and every checkpoint are as the load left them.
    let after = dump(&db);
    for table in ["guilds", "channels", "checkpoints", "attachments"] {
        assert_eq!(before[table], after[table], "{table}");
    }
    let stored: (i64, String) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(&format!("SELECT channel_id, content FROM messages WHERE id = {secret}"), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(stored, (staff_room as i64, secret_content));
    let owner_now: i64 = query_one(&db, &format!("SELECT message_id FROM attachments WHERE id = {attachment}"));
    assert_eq!(owner_now, owner);
    assert_eq!(query_one::<i64>(&db, "SELECT count(*) FROM messages WHERE content LIKE '%zebra%'"), 1);

    // Indexed, and asked by every kind of user in every mode: no result holds
    // a message of a channel the user may not read, or outside its own channel.
    let embedder =
        Arc::new(Embedder::load(ModelInfo::find(&s.models, "tiny").unwrap(), candle_core::Device::Cpu).unwrap());
    let mut options = IndexOptions::new(guild.id);
    options.activate = true;
    let backend = Backend::new(&s.data, None, None).unwrap();
    index::index(&s.store, &backend, embedder, &options, &|_| {}, &CancellationToken::new()).await.unwrap();
    let searcher = Searcher::new(
        s.store.clone(),
        Backend::new(&s.data, None, None).unwrap(),
        s.models.clone(),
        Some(client(&s.fake)),
        SearchOptions::default(),
    );
    let mut leaks = Vec::new();
    for (who, user, names) in matrix(&cast) {
        let readable: BTreeSet<u64> =
            guild.channels.iter().filter(|c| names.contains(c.name.as_str())).map(|c| c.id).collect();
        for mode in [Mode::Vector, Mode::Keyword, Mode::Hybrid] {
            for text in ["zebra", "secret picture", "restart"] {
                let query = Query {
                    text: text.into(),
                    guilds: vec![guild.id],
                    viewer: Viewer::User(user),
                    limit: 100_000,
                    mode,
                    filters: Default::default(),
                };
                let Ok(answer) = searcher.ask(&query).await else { continue };
                for r in &answer.results {
                    for m in &r.message_ids {
                        let at = home.get(m).copied().unwrap_or(r.channel_id);
                        if !readable.contains(&at) || at != r.channel_id {
                            leaks.push(format!("{who} ({mode:?}, {text:?}): message {m} of channel {at}"));
                        }
                    }
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks: {:?}", leaks.len(), &leaks[..leaks.len().min(5)]);
}

/// DCE `--media` exports carry their attachment files in a folder beside the
/// JSON, with each attachment's `url` rewritten to the copy's relative path:
/// those files go into the attachment store with a download's checks. A path
/// that leads out of the export's folder (`..`, an absolute path, a link) is
/// never read.
#[test]
fn files_an_export_carries_are_stored_and_nothing_outside_its_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    let media = exports.join("Rust Lovers - general [900000000000000010].json_Files");
    std::fs::create_dir_all(&media).unwrap();
    let photo = (1u64..).find(|&id| matches!(fake_discord::attachment_file(id).kind, FakeKind::Photo)).unwrap();
    let bytes = fake_discord::file_bytes(photo);
    std::fs::write(media.join("keys-1A2B3.png"), &bytes).unwrap();
    std::fs::write(media.join("cut-4C5D6.png"), &bytes[..bytes.len() / 2]).unwrap();
    // Outside the export's folder: a sibling file, and a link to it from inside.
    std::fs::write(dir.path().join("secret.png"), &bytes).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.png"), media.join("link-7E8F9.png")).unwrap();
    let secret = dir.path().join("secret.png");
    let urls = [
        "Rust Lovers - general [900000000000000010].json_Files/keys-1A2B3.png".to_owned(),
        "Rust Lovers - general [900000000000000010].json_Files\\cut-4C5D6.png".to_owned(),
        "../secret.png".to_owned(),
        secret.display().to_string(),
        "Rust Lovers - general [900000000000000010].json_Files/link-7E8F9.png".to_owned(),
        "Rust Lovers - general [900000000000000010].json_Files/missing-00000.png".to_owned(),
    ];
    let messages: Vec<HostileMessage> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            (1_100_000_000_000_000_000 + i as u64, "see attached", None, Some((1_200 + i as u64, url.clone())))
        })
        .collect();
    let export = exports.join("Rust Lovers - general [900000000000000010].json");
    std::fs::write(
        &export,
        hostile_json((900000000000000001, "Rust Lovers"), (900000000000000010, "general"), &messages),
    )
    .unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let summary = run(&[&exports], &store);
    assert_eq!(summary.failed, 0, "{summary:#?}");
    assert_eq!((summary.media_stored, summary.media_not_stored), (1, 5), "{summary:#?}");
    let problems = summary.sources[0].media_problems.join("\n");
    assert_eq!(problems.matches("outside the export's folder").count(), 3, "{problems}");
    assert!(problems.contains("broken") && problems.contains("missing-00000"), "{problems}");

    let db = data.join("archive.db");
    let states: Vec<(i64, Option<String>, Option<String>)> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare("SELECT id, fetch_state, sha256 FROM attachments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states[0].1.as_deref(), Some("stored"));
    let sha = states[0].2.clone().unwrap();
    assert_eq!(std::fs::read(store.file_path(&sha)).unwrap(), bytes);
    assert_eq!(states[1].1.as_deref(), Some("broken"));
    assert!(states[2..].iter().all(|(_, _, sha)| sha.is_none()), "{states:?}");
    // Nothing under the attachment store but the one file.
    let stored: Vec<_> = walkdir::WalkDir::new(store.files_dir())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    // A rerun changes nothing and reads no file again.
    let again = run(&[&exports], &store);
    assert_eq!((again.new, again.media_stored), (0, 0), "{again:#?}");
}
