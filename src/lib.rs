//! discord-indexer: archive Discord servers into SQLite and make them searchable.
//!
//! # Layout
//! - [`discord`]: the REST client (one code path for Discord and the fake
//!   server), its rate limiter and the typed Discord objects.
//! - [`load`]: stage one, paging every readable channel into the archive,
//!   oldest first, resumably.
//! - [`store`]: the SQLite archive (`<data-dir>/archive.db`): schema,
//!   migrations, writes and status queries.
//! - [`permissions`]: Discord's permission algorithm (who may read what).
//! - [`snowflake`]: ids, their times, and the store's time format.
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`cli`]: one file per subcommand; `main.rs` only dispatches.
//! - [`fake`] (feature `fake-discord`): a loopback fake Discord server for
//!   tests, benchmarks and demos.

pub mod cli;
pub mod config;
pub mod discord;
#[cfg(feature = "fake-discord")]
pub mod fake;
pub mod load;
pub mod permissions;
pub mod snowflake;
pub mod store;
