-- Stage one: the archive of what Discord returned.
-- Ids are Discord snowflakes stored as INTEGER; times are RFC 3339 UTC text
-- with microseconds ("2024-01-02T03:04:05.123000Z"), so they also sort as text.

CREATE TABLE guilds (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    owner_id    INTEGER,
    raw         TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    permissions INTEGER NOT NULL,   -- bit set (fits in 63 bits)
    position    INTEGER NOT NULL,
    raw         TEXT NOT NULL
);
CREATE INDEX roles_guild ON roles(guild_id);

CREATE TABLE channels (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    parent_id   INTEGER,            -- category for channels, parent channel for threads
    type        INTEGER NOT NULL,
    name        TEXT,
    topic       TEXT,
    position    INTEGER,
    owner_id    INTEGER,            -- thread creator
    archived    INTEGER,            -- threads: 1 when archived
    permission_overwrites TEXT NOT NULL DEFAULT '[]',  -- JSON [{id, kind, allow, deny}]
    raw         TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX channels_guild ON channels(guild_id);

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    username    TEXT NOT NULL,
    global_name TEXT,
    discriminator TEXT,
    avatar      TEXT,
    bot         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    guild_id    INTEGER,
    author_id   INTEGER,
    content     TEXT,
    created_at  TEXT,
    edited_at   TEXT,
    type        INTEGER NOT NULL DEFAULT 0,
    flags       INTEGER NOT NULL DEFAULT 0,
    pinned      INTEGER NOT NULL DEFAULT 0,
    webhook_id  INTEGER,
    reply_to_id INTEGER,            -- message_reference.message_id
    reply_to_channel_id INTEGER,
    raw         TEXT NOT NULL       -- the message exactly as Discord sent it
);
CREATE INDEX messages_channel ON messages(channel_id, id);
CREATE INDEX messages_guild ON messages(guild_id, id);

CREATE TABLE attachments (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL,
    filename    TEXT NOT NULL,
    content_type TEXT,
    size        INTEGER NOT NULL,
    url         TEXT NOT NULL,
    width       INTEGER,
    height      INTEGER
);
CREATE INDEX attachments_message ON attachments(message_id);

CREATE TABLE reactions (
    message_id  INTEGER NOT NULL,
    emoji       TEXT NOT NULL,      -- unicode emoji, or name:id for custom ones
    count       INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji)
) WITHOUT ROWID;

-- One row per channel the loader has looked at. last_message_id moves in the
-- same transaction as the messages it covers.
CREATE TABLE checkpoints (
    channel_id      INTEGER PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    last_message_id INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,  -- partial | complete | forbidden | gone | failed
    detail          TEXT,           -- why, for forbidden/gone/failed
    loaded_at       TEXT            -- when last_message_id last moved
);

-- One row per `load` run.
CREATE TABLE load_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    guilds      TEXT NOT NULL,      -- JSON array of guild ids
    outcome     TEXT,               -- ok | partial | interrupted | failed
    summary     TEXT                -- JSON summary
);
