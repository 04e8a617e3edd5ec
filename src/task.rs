//! Spawned tasks that own a request's outcome (the crate's cancel-safety pattern), and joining them
//! truthfully: a panic inside one propagates to the caller, a cancelled one is
//! [`Error::Cancelled`], never a silent `Ok`.

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Await `task`. `what` names the operation for the error message.
///
/// # Panics
/// Resumes the task's panic, if it panicked.
pub(crate) async fn join<T>(task: JoinHandle<T>, what: &str) -> Result<T> {
    match task.await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(stopped(what)),
    }
}

/// Await `fut` unless the caller waiting on `tx` goes away first (`None`). For waits only, never
/// around a write: a write once sent is always awaited, so its outcome is owned.
pub(crate) async fn unless_closed<T, F: std::future::Future>(
    tx: &mut tokio::sync::oneshot::Sender<T>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = tx.closed() => None,
        out = fut => Some(out),
    }
}

/// The error for an operation whose task or runtime stopped before it finished.
pub(crate) fn stopped(what: &str) -> Error {
    Error::Cancelled(format!("{what}: its task was stopped (is the tokio runtime shutting down?)"))
}

/// Why an acquire procedure (a lock's, a semaphore slot's) stopped without what it wanted.
pub(crate) enum Stop {
    /// Someone else held it until the deadline.
    NotAcquired,
    /// The caller dropped its future.
    Cancelled,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// One step of an acquire procedure: its value, or why the procedure stops.
pub(crate) type Step<T = ()> = std::result::Result<T, Stop>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_task_is_an_error_not_ok() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = join(task, "releasing the lock").await.unwrap_err();
        assert!(e.is_cancelled() && e.to_string().contains("releasing the lock"), "{e}");
    }

    #[tokio::test]
    #[should_panic(expected = "boom inside the task")]
    async fn a_panic_inside_the_task_propagates() {
        let task = tokio::spawn(async { panic!("boom inside the task") });
        let _ = join::<()>(task, "releasing the lock").await;
    }
}
