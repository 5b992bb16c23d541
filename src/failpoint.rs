//! Crash points for tests: `DISCORD_INDEXER_FAILPOINT=name:N` aborts the
//! process (like a kill, no cleanup) the N-th time the named point is passed.
//! Tests use it to prove that a crash at the worst moment loses nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Passes the point `name`; aborts if the failpoint says so.
pub fn hit(name: &str) {
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("DISCORD_INDEXER_FAILPOINT").ok()?;
        let (n, count) = v.split_once(':')?;
        Some((n.to_owned(), count.parse().ok()?))
    });
    if let Some((n, count)) = spec {
        if n == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("failpoint {name}:{count}: aborting");
            std::process::abort();
        }
    }
}
