-- Search: a keyword index over message text, and what permission checks need.

-- FTS5 over messages.content, kept in step with the messages table by
-- triggers (stage one and live capture write messages; nothing else needs to
-- know). External content: the text is stored once, in messages. The porter
-- stemmer lets "rotating keys" match "rotate the key".
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
-- Archives written before this migration: index what they hold.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

-- When a guild's roles and channel overwrites were last read from Discord.
CREATE TABLE permission_syncs (
    guild_id    INTEGER PRIMARY KEY,
    synced_at   TEXT NOT NULL
);

-- A user's roles in a guild, as Discord last said (present = 0: not a member).
CREATE TABLE members (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    present     INTEGER NOT NULL,
    roles       TEXT NOT NULL DEFAULT '[]',  -- JSON array of role ids
    fetched_at  TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;

-- Whether a user is a member of a private thread, as Discord last said.
CREATE TABLE thread_members (
    thread_id   INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    member      INTEGER NOT NULL,
    fetched_at  TEXT NOT NULL,
    PRIMARY KEY (thread_id, user_id)
) WITHOUT ROWID;
