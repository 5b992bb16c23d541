-- Stage two: what has been indexed, so reruns only embed what changed.

-- A counter that grows with every write to messages. Each stored or replaced
-- message carries the value of the write that touched it; each deleted one
-- leaves a tombstone with its own. An index that has seen everything up to
-- version V only needs to look at what is newer.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('version', 1);

ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE INDEX messages_version ON messages(guild_id, version);

CREATE TABLE message_tombstones (
    id          INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    guild_id    INTEGER,
    version     INTEGER NOT NULL,
    deleted_at  TEXT NOT NULL
);
CREATE INDEX message_tombstones_version ON message_tombstones(guild_id, version);

-- One row per (guild, model) index.
CREATE TABLE indexes (
    guild_id    INTEGER NOT NULL,
    model       TEXT NOT NULL,
    backend     TEXT NOT NULL,      -- edge | remote
    collection  TEXT NOT NULL,      -- shard directory or collection name
    dim         INTEGER NOT NULL,
    settings    TEXT NOT NULL,      -- chunking settings (JSON); a change means a rebuild
    version     INTEGER NOT NULL DEFAULT 0,  -- archive version fully indexed
    state       TEXT NOT NULL,      -- building | complete
    chunks      INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (guild_id, model)
);

-- Every chunk that is in an index's collection (written after its point is).
CREATE TABLE index_chunks (
    guild_id    INTEGER NOT NULL,
    model       TEXT NOT NULL,
    chunk_id    INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL,
    first_message_id INTEGER NOT NULL,
    last_message_id  INTEGER NOT NULL,
    hash        INTEGER NOT NULL,
    PRIMARY KEY (guild_id, model, chunk_id)
) WITHOUT ROWID;
CREATE INDEX index_chunks_channel ON index_chunks(guild_id, model, channel_id, first_message_id);

-- Which model search uses for a guild.
CREATE TABLE active_indexes (
    guild_id    INTEGER PRIMARY KEY,
    model       TEXT NOT NULL,
    activated_at TEXT NOT NULL
);
