-- Parts: runs of a chunk's lines embedded as points of their own (see
-- chunk/mod.rs). The manifest counts them, so their points can be deleted with
-- the chunk's and the collection's size checked against the manifest.
ALTER TABLE index_chunks ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
