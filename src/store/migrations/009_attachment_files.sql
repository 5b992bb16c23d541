-- Attachment files (stage one) and the text read from images (stage two).

-- Alt text, as Discord sends it (`description`).
ALTER TABLE attachments ADD COLUMN description TEXT;
-- The stored file: its SHA-256 (hex; the file is
-- `<data-dir>/attachments/<first two hex digits>/<sha256>`), the type read
-- from its bytes (never the name's or the server's word) and its size. Set
-- only once the file is completely written, so a killed fetch records nothing.
ALTER TABLE attachments ADD COLUMN sha256 TEXT;
ALTER TABLE attachments ADD COLUMN file_type TEXT;
ALTER TABLE attachments ADD COLUMN file_size INTEGER;
-- What became of fetching it: NULL not tried yet; 'stored'; 'too_large'
-- (over the size or pixel cap); 'not_image' (bytes are no image we read);
-- 'broken' (cut short); 'gone' (the CDN no longer has it); 'failed' (tried
-- again by the next load). `fetch_detail` says why, in words.
ALTER TABLE attachments ADD COLUMN fetch_state TEXT;
ALTER TABLE attachments ADD COLUMN fetch_detail TEXT;
ALTER TABLE attachments ADD COLUMN fetched_at TEXT;
-- Which text of the attachment the keyword index holds (`attachments_fts`):
-- NULL none yet; else the `image_texts` id it was built with (0: none).
ALTER TABLE attachments ADD COLUMN fts_source INTEGER;
CREATE INDEX attachments_sha256 ON attachments(sha256) WHERE sha256 IS NOT NULL;

-- Text read from an image file, per file (by hash) and per source: 'ocr'
-- today; a second reader (captions from a local vision model) is another
-- source beside it. `engine` names the reader and its version: a file is
-- read once per source, and again only when asked to with a newer engine.
-- `text` is '' when nothing passed the confidence threshold; `error` says why
-- the file could not be read at all (it is not tried again either).
CREATE TABLE image_texts (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL,
    source      TEXT NOT NULL,
    engine      TEXT NOT NULL,
    text        TEXT NOT NULL,
    confidence  REAL,
    error       TEXT,
    seconds     REAL NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (sha256, source)
);

-- The keyword index of attachments: file name, alt text and image text, one
-- row per attachment (rowid = attachment id), written by stage two.
CREATE VIRTUAL TABLE attachments_fts USING fts5(
    text,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
