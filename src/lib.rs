//! discord-indexer: archive Discord servers into SQLite and make them searchable.
//!
//! # Layout
//! - [`discord`]: the REST client (one code path for Discord and the fake
//!   server), its rate limiter and the typed Discord objects.
//! - [`load`]: stage one, paging every readable channel into the archive,
//!   oldest first, resumably; then the attachments' files, by content hash.
//! - [`import`]: DiscordChatExporter exports (JSON, CSV) into the same
//!   archive rows a load writes; `load` then continues them.
//! - [`chunk`]: stage two's chunker: conversations into windows of messages.
//! - [`ocr`]: text in images (Tesseract through its C library, loaded at
//!   run time), for stage two.
//! - [`embed`]: sentence embeddings with candle (BERT-family models).
//! - [`vector`]: the vector stores: embedded qdrant-edge, or a Qdrant server.
//! - [`index`]: stage two, archive → chunks → vectors → collection, incrementally.
//! - [`adapt`]: a copy of an embedding model fine-tuned on one guild's own
//!   message pairs (unsupervised), to index with beside the base model.
//! - [`search`]: the query path: permission-aware hybrid (vector + FTS5) search.
//! - [`answer`]: a short answer to a question, written by a chat model (a
//!   GGUF file in process, or an OpenAI-compatible endpoint) from the
//!   results a search found for the asker, citing them; grounding (only
//!   those results, quoted as data, within the model's window) and the
//!   citation check are in code.
//! - [`store`]: the SQLite archive (`<data-dir>/archive.db`): schema,
//!   migrations, writes and status queries.
//! - [`permissions`]: Discord's permission algorithm (who may read what).
//! - [`snowflake`]: ids, their times, and the store's time format.
//! - [`blocking`]: running blocking work (SQLite, qdrant-edge, the model)
//!   from async code.
//! - [`disk`]: free space and writability of the stores' file system.
//! - [`net`]: network failures in words, for every HTTP client.
//! - [`failpoint`]: named crash points, armed only by the crash-safety tests.
//! - [`config`]: settings from defaults, file, environment and flags; each
//!   section of the file is resolved by the stage it configures.
//! - [`bot`]: the Discord bot (poise/serenity): slash commands, DM `/ask`,
//!   live capture of gateway events, and the catch-up after a restart.
//! - [`cli`]: one file per subcommand; `main.rs` only dispatches.
//!
//! The fake Discord server that tests, benchmarks and the demo run against is
//! test equipment, in its own crate (`tests/fake-discord`).

pub mod adapt;
pub mod answer;
pub mod blocking;
pub mod bot;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod discord;
pub mod disk;
pub mod embed;
pub mod failpoint;
pub mod import;
pub mod index;
pub mod load;
pub mod net;
pub mod ocr;
pub mod permissions;
pub mod search;
pub mod snowflake;
pub mod store;
pub mod vector;
