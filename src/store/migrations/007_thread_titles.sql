-- Thread and forum post titles in the keyword index: a question that names a
-- post's title finds the post (its first message), as the vector side does
-- through the "[title]" each thread chunk leads with. Only threads (types 10,
-- 11, 12): a channel name such as "help" says nothing about one message.
-- Kept in step with channels by triggers (channels are few; the cost of a
-- trigger per row does not matter here as it does for messages).
CREATE VIRTUAL TABLE thread_titles_fts USING fts5(
    name,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER thread_titles_insert AFTER INSERT ON channels WHEN new.type IN (10, 11, 12) BEGIN
    INSERT INTO thread_titles_fts (rowid, name) VALUES (new.id, coalesce(new.name, ''));
END;
CREATE TRIGGER thread_titles_update AFTER UPDATE OF name, type ON channels BEGIN
    DELETE FROM thread_titles_fts WHERE rowid = old.id;
    INSERT INTO thread_titles_fts (rowid, name)
        SELECT new.id, coalesce(new.name, '') WHERE new.type IN (10, 11, 12);
END;
CREATE TRIGGER thread_titles_delete AFTER DELETE ON channels BEGIN
    DELETE FROM thread_titles_fts WHERE rowid = old.id;
END;
-- Archives written before this migration: their threads' titles.
INSERT INTO thread_titles_fts (rowid, name)
    SELECT id, coalesce(name, '') FROM channels WHERE type IN (10, 11, 12);
