//! Blocking work from async code: SQLite, the embedded vector store, model
//! loading and forward passes all block a thread, so async code runs them
//! through [`run`] (or `Store::call` for the archive), which
//! moves them to tokio's blocking pool.
//!
//! A panic inside the work is re-raised in the caller as the same panic: it
//! is a bug where it happened, and must not turn into a different one here.
//! The one exception is work inside a library that panics on bad data it
//! reads (qdrant-edge on a damaged segment): [`contained`] turns such a
//! panic into a value, and keeps its message off stderr.

use std::cell::{Cell, RefCell};
use std::sync::Once;

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

thread_local! {
    /// Set while [`contained`] work runs on this thread.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// The message of the last contained panic on this thread.
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic inside it into `Err(message)`. The panic is not
/// printed (the caller reports it as an error); panics anywhere else still are.
pub fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                MESSAGE.with(|m| *m.borrow_mut() = Some(message));
            } else {
                default(info);
            }
        }));
    });
    let was = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    result.map_err(|_| MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "panic".into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_contained_panic_becomes_its_message() {
        assert_eq!(super::contained(|| 7), Ok(7));
        let err = super::contained(|| -> u8 { panic!("vectors read") }).unwrap_err();
        assert_eq!(err, "vectors read");
    }
}
