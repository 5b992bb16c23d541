use super::*;
use crate::vector::SearchFilter;

fn msg(id: u64, channel: u64, content: &str, edited: Option<&str>) -> Raw<Message> {
    let json = serde_json::json!({
        "id": id.to_string(), "channel_id": channel.to_string(),
        "author": {"id": "5", "username": "ann", "global_name": "Ann", "discriminator": "0", "avatar": null},
        "content": content, "timestamp": "2024-01-02T03:04:05.000000+00:00",
        "edited_timestamp": edited, "type": 0, "flags": 0, "pinned": false,
        "attachments": [{"id": (id * 10).to_string(), "filename": "a.txt", "size": 3, "url": "u"}],
        "embeds": [], "reactions": [{"count": 2, "emoji": {"id": null, "name": "x"}}],
    });
    serde_json::from_value(json).unwrap()
}

fn stored(store: &Store, channel: u64) -> Vec<(u64, String, Option<String>)> {
    let conn = store.conn().unwrap();
    let mut stmt =
        conn.prepare("SELECT id, content, edited_at FROM messages WHERE channel_id = ?1 ORDER BY id").unwrap();
    stmt.query_map([channel as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_page_and_its_checkpoint_land_together_and_reruns_do_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let page = vec![msg(10, 1, "a", None), msg(11, 1, "b", None)];
    let c = store.write_page(9, 1, &page, false).unwrap();
    assert_eq!(c, PageCounts { new: 2, ..PageCounts::default() });
    assert_eq!(store.checkpoint(1).unwrap(), Some(Checkpoint { last_message_id: 11, state: ChannelState::Partial }));
    let c = store.write_page(9, 1, &page, true).unwrap();
    assert_eq!(c, PageCounts { unchanged: 2, ..PageCounts::default() });
    assert_eq!(stored(&store, 1).len(), 2);
    assert_eq!(store.checkpoint(1).unwrap().unwrap().state, ChannelState::Complete);
    let conn = store.conn().unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM attachments", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_later_edit_replaces_the_stored_copy_and_an_older_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_page(9, 1, &[msg(10, 1, "first", None)], false).unwrap();
    let c = store.write_page(9, 1, &[msg(10, 1, "second", Some("2024-02-01T00:00:00+00:00"))], false).unwrap();
    assert_eq!(c.updated, 1);
    let c = store.write_page(9, 1, &[msg(10, 1, "stale", Some("2024-01-15T00:00:00+00:00"))], false).unwrap();
    assert_eq!(c.unchanged, 1);
    assert_eq!(stored(&store, 1), vec![(10, "second".into(), Some("2024-02-01T00:00:00.000000Z".into()))]);
}

#[test]
fn the_checkpoint_never_moves_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_page(9, 1, &[msg(20, 1, "x", None)], false).unwrap();
    store.write_page(9, 1, &[msg(15, 1, "y", None)], false).unwrap();
    assert_eq!(store.checkpoint(1).unwrap().unwrap().last_message_id, 20);
}

#[test]
fn marking_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_page(9, 1, &[msg(20, 1, "x", None)], false).unwrap();
    store.mark_channel(9, 1, ChannelState::Forbidden, Some("Missing Access")).unwrap();
    assert_eq!(store.checkpoint(1).unwrap(), Some(Checkpoint { last_message_id: 20, state: ChannelState::Forbidden }));
}

#[test]
fn reopening_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().write_page(9, 1, &[msg(20, 1, "x", None)], true).unwrap();
    let store = Store::open_existing(dir.path()).unwrap();
    assert_eq!(stored(&store, 1).len(), 1);
    let v: i64 = store.conn().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    let mode: String = store.conn().unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_corrupt_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ARCHIVE_FILE);
    let junk = vec![b'x'; 8192];
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a readable SQLite archive"));
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn a_missing_archive_is_reported_for_read_only_commands() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Store::open_existing(dir.path()), Err(StoreError::Missing(_))));
    assert!(!dir.path().join(ARCHIVE_FILE).exists());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(ARCHIVE_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::TooNew { found: 99, .. })));
}

fn keyword(store: &Store, q: &str) -> Vec<u64> {
    let relevance: Vec<u64> = store
        .keyword_search(q, &[9], &SearchFilter::default(), 100, KeywordOrder::Relevance)
        .unwrap()
        .into_iter()
        .map(|h| h.message_id)
        .collect();
    let newest: Vec<u64> = store
        .keyword_search(q, &[9], &SearchFilter::default(), 100, KeywordOrder::Newest)
        .unwrap()
        .into_iter()
        .map(|h| h.message_id)
        .collect();
    assert_eq!(relevance, newest, "all matches fit: both orders return them by bm25");
    relevance
}

fn only(channels: &[u64]) -> SearchFilter {
    SearchFilter { channels: Some(channels.to_vec()), ..Default::default() }
}

#[test]
fn the_keyword_index_follows_writes_edits_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_page(9, 1, &[msg(10, 1, "rotating the notary keys", None), msg(11, 1, "lunch?", None)], false).unwrap();
    // The porter stemmer matches other forms of a word.
    assert_eq!(keyword(&store, "\"rotate\" OR \"key\""), vec![10]);
    store
        .write_page(9, 1, &[msg(10, 1, "ERR_QUOTA_EXCEEDED again", Some("2024-02-01T00:00:00+00:00"))], false)
        .unwrap();
    assert!(keyword(&store, "\"notary\"").is_empty(), "the old text left the index");
    assert_eq!(keyword(&store, "\"err quota exceeded\""), vec![10]);
    // Only in the channels asked for.
    assert!(store.keyword_search("\"lunch\"", &[9], &only(&[2]), 10, KeywordOrder::Relevance).unwrap().is_empty());
    assert_eq!(store.keyword_search("\"lunch\"", &[9], &only(&[1, 2]), 10, KeywordOrder::Newest).unwrap().len(), 1);
    // Only by the authors asked for, and in the id span asked for.
    let lunch =
        |f: SearchFilter| store.keyword_search("\"lunch\"", &[9], &f, 10, KeywordOrder::Relevance).unwrap().len();
    assert_eq!(lunch(SearchFilter { authors: vec![5], ..Default::default() }), 1);
    assert_eq!(lunch(SearchFilter { authors: vec![6, 7], ..Default::default() }), 0);
    assert_eq!(lunch(SearchFilter { from_id: Some(11), ..Default::default() }), 1);
    assert_eq!(lunch(SearchFilter { from_id: Some(12), ..Default::default() }), 0);
    assert_eq!(lunch(SearchFilter { until_id: Some(11), ..Default::default() }), 0);
    assert_eq!(lunch(SearchFilter { until_id: Some(12), ..only(&[1]) }), 1);
    store.delete_messages(&[10]).unwrap();
    assert!(keyword(&store, "\"quota\"").is_empty());
    assert_eq!(store.keyword_count("\"lunch\"", 10).unwrap(), 1);
    assert_eq!(store.keyword_count("\"lunch\"", 0).unwrap(), 0);
    store.rebuild_keyword_index().unwrap();
    assert_eq!(keyword(&store, "\"lunch\""), vec![11]);
}

#[test]
fn archives_from_before_search_get_their_keyword_index_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = Connection::open(dir.path().join(ARCHIVE_FILE)).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(MIGRATIONS[1]).unwrap();
        tx.execute(
            "INSERT INTO messages (id, channel_id, guild_id, author_id, content, raw) VALUES (5, 1, 9, 7, 'old words', '{}')",
            [],
        )
        .unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(keyword(&store, "\"old\""), vec![5]);
}

#[test]
fn replies_quote_only_messages_of_their_own_channel() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_page(9, 1, &[msg(10, 1, "public words", None)], false).unwrap();
    store.write_page(9, 2, &[msg(20, 2, "secret words", None)], false).unwrap();
    assert_eq!(store.quote(10, 1).unwrap(), Some(("Ann".into(), "public words".into())));
    // A forward or crosspost from another channel: its text must not reach this channel's chunks.
    assert_eq!(store.quote(20, 1).unwrap(), None);
}

/// `msg` with its attachment's id set.
fn with_attachment(mut m: Raw<Message>, attachment: u64) -> Raw<Message> {
    let mut json: serde_json::Value = serde_json::from_str(m.json.get()).unwrap();
    json["attachments"][0]["id"] = attachment.to_string().into();
    m = serde_json::from_value(json).unwrap();
    m
}

fn imported(guild: u64, channel: u64) -> ImportedChannel {
    ImportedChannel {
        guild_id: guild,
        guild_name: "g".into(),
        channel_id: channel,
        kind: 0,
        parent_id: None,
        name: "c".into(),
        topic: None,
    }
}

fn placed(store: &Store, message: u64) -> Option<(u64, u64, String)> {
    store
        .conn()
        .unwrap()
        .query_row("SELECT channel_id, guild_id, content FROM messages WHERE id = ?1", [message as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })
        .optional()
        .unwrap()
}

fn attachment_owner(store: &Store, attachment: u64) -> Option<u64> {
    store
        .conn()
        .unwrap()
        .query_row("SELECT message_id FROM attachments WHERE id = ?1", [attachment as i64], |r| r.get::<_, i64>(0))
        .optional()
        .unwrap()
        .map(|v| v as u64)
}

#[test]
fn an_import_never_moves_a_stored_message_or_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Loaded: message 10 in the private channel 1, with attachment 100.
    store.write_page(9, 1, &[msg(10, 1, "secret", None)], true).unwrap();
    store.write_page(9, 2, &[msg(20, 2, "public", None)], true).unwrap();
    // An export of the public channel 2 names message 10 (edited later) and,
    // on a new message, attachment 100.
    let hostile = [
        msg(10, 2, "moved", Some("2030-01-01T00:00:00+00:00")),
        with_attachment(msg(21, 2, "has the secret image", None), 100),
        msg(22, 2, "fine", None),
    ];
    let counts = store.write_import(&imported(9, 2), &hostile).unwrap();
    assert_eq!((counts.new, counts.conflicts), (1, 2), "{counts:?}");
    assert_eq!(placed(&store, 10), Some((1, 9, "secret".into())));
    assert_eq!(attachment_owner(&store, 100), Some(10));
    assert_eq!(placed(&store, 21), None);
    assert_eq!(placed(&store, 22), Some((2, 9, "fine".into())));
    // Another guild's export of a message of the same channel id is refused
    // whole: a channel's guild never changes.
    let err = store.write_import(&imported(8, 1), &[msg(11, 1, "x", None)]).unwrap_err();
    assert!(matches!(err, StoreError::OtherGuild { channel: 1, stored: 9, claimed: 8 }), "{err}");
    assert_eq!(placed(&store, 11), None);
    // A loaded channel's checkpoint is the load's: the import moved nothing.
    assert_eq!(store.checkpoint(2).unwrap().unwrap().last_message_id, 20);
    assert_eq!(store.checkpoint(2).unwrap().unwrap().state, ChannelState::Complete);
}

#[test]
fn discord_s_copy_replaces_what_an_import_put_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // First an import (of an export-only channel 2) claims message 10 and attachment 100...
    let counts = store.write_import(&imported(9, 2), &[msg(10, 2, "claimed zebra", None)]).unwrap();
    assert_eq!(counts.new, 1);
    assert_eq!(attachment_owner(&store, 100), Some(10));
    store.write_import(&imported(9, 2), &[with_attachment(msg(30, 2, "claims the image", None), 200)]).unwrap();
    // ...then Discord says where they are: its copies win, counted.
    let counts = store
        .write_page(9, 1, &[msg(10, 1, "the real text", None), with_attachment(msg(31, 1, "image", None), 200)], true)
        .unwrap();
    assert_eq!((counts.new, counts.conflicts), (2, 2), "{counts:?}");
    assert_eq!(placed(&store, 10), Some((1, 9, "the real text".into())));
    assert_eq!(attachment_owner(&store, 200), Some(31));
    // The keyword index follows: the claimed text is gone.
    let conn = store.conn().unwrap();
    let n: i64 =
        conn.query_row("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zebra'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn only_a_channel_known_from_exports_alone_has_its_checkpoint_moved_by_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write_import(&imported(9, 2), &[msg(10, 2, "a", None), msg(12, 2, "b", None)]).unwrap();
    assert_eq!(store.checkpoint(2).unwrap(), Some(Checkpoint { last_message_id: 12, state: ChannelState::Imported }));
}
