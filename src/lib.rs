//! discord-indexer: archive Discord servers into SQLite and make them searchable.
//!
//! # Layout
//! - [`discord`]: the REST client (one code path for Discord and the fake
//!   server), its rate limiter and the typed Discord objects.
//! - [`load`]: stage one, paging every readable channel into the archive,
//!   oldest first, resumably.
//! - [`chunk`]: stage two's chunker: conversations into windows of messages.
//! - [`embed`]: sentence embeddings with candle (BERT-family models).
//! - [`vector`]: the vector stores: embedded qdrant-edge, or a Qdrant server.
//! - [`index`]: stage two, archive → chunks → vectors → collection, incrementally.
//! - [`search`]: the query path: permission-aware hybrid (vector + FTS5) search.
//! - [`store`]: the SQLite archive (`<data-dir>/archive.db`): schema,
//!   migrations, writes and status queries.
//! - [`permissions`]: Discord's permission algorithm (who may read what).
//! - [`snowflake`]: ids, their times, and the store's time format.
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`bot`]: the Discord bot (poise/serenity): slash commands, DM `/ask`,
//!   live capture of gateway events, and the catch-up after a restart.
//! - [`cli`]: one file per subcommand; `main.rs` only dispatches.
//! - [`fake`] (feature `fake-discord`): a loopback fake Discord server for
//!   tests, benchmarks and demos.

pub mod bot;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod discord;
pub mod embed;
pub mod failpoint;
#[cfg(feature = "fake-discord")]
pub mod fake;
pub mod index;
pub mod load;
pub mod permissions;
pub mod search;
pub mod snowflake;
pub mod store;
pub mod vector;
