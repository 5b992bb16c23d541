-- The keyword index is written by the code that inserts messages
-- (`write_messages`), no longer by a per-row trigger: a trigger makes every
-- INSERT a statement transaction, and FTS5 flushes its pending terms to disk
-- at each one, so bulk writes (imports, loads) built thousands of tiny index
-- segments and spent most of their time merging them. Without it FTS5 keeps
-- a transaction's terms in memory and writes them once, at commit.
-- Updates and deletes stay with their triggers (they are rare).
DROP TRIGGER messages_fts_insert;
