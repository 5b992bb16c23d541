-- Which collection holds an index's points (NULL: the one named after its
-- model). A rebuild of a complete index is built beside it, in the other of
-- two collections, and swapped in when complete (see index/mod.rs), so the
-- collection of a model is not always the one named after it.
ALTER TABLE indexes ADD COLUMN collection_key TEXT;
