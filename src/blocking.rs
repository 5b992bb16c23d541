//! Blocking work from async code: SQLite, the embedded vector store, model
//! loading and forward passes all block a thread, so async code runs them
//! through [`run`] (or `Store::call` for the archive), which
//! moves them to tokio's blocking pool.
//!
//! A panic inside the work is re-raised in the caller as the same panic: it
//! is a bug where it happened, and must not turn into a different one here.

/// Blocking work started with [`spawn`], to be [`Pending::join`]ed.
pub struct Pending<T>(tokio::task::JoinHandle<T>);

/// Starts `f` on the blocking pool and returns at once.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
    Pending(tokio::task::spawn_blocking(f))
}

impl<T> Pending<T> {
    /// Waits for the work and returns what it returned.
    pub async fn join(self) -> T {
        match self.0.await {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime that is shutting down cancels blocking tasks.
            Err(e) => panic!("blocking task did not run: {e}"),
        }
    }
}

/// Runs `f` on the blocking pool and returns what it returns.
pub async fn run<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    spawn(f).join().await
}
