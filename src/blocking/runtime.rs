//! The runtime thread behind the blocking API, and the one way work gets onto it.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mutex::lock;

/// How long the runtime thread waits for pending background releases when shutting down.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What a blocking call inside async code panics with.
pub(crate) const IN_ASYNC_CONTEXT: &str = "consul_lock::blocking was called from async code (inside a tokio runtime): \
     blocking there stalls the runtime's thread. Use the async API (consul_lock::EphemeralLock, …) there, \
     or move the call into tokio::task::spawn_blocking";

pub(crate) struct Runtime {
    handle: tokio::runtime::Handle,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

fn stopped(what: &str) -> Error {
    Error::Cancelled(format!("the blocking runtime thread {what}"))
}

impl Runtime {
    pub(crate) fn start() -> Result<Runtime> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("consul-lock-blocking".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = shutdown_rx.await;
                    // Let background releases (spawned by dropped guards) finish, within a bound.
                    let metrics = tokio::runtime::Handle::current().metrics();
                    let give_up = tokio::time::Instant::now() + DRAIN_LIMIT;
                    while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < give_up {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            })
            .map_err(|e| stopped(&format!("could not be started: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| stopped("died while starting"))?
            .map_err(|e| stopped(&format!("could not build its runtime: {e}")))?;
        Ok(Runtime { handle, shutdown: Mutex::new(Some(shutdown_tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Run `fut` on the runtime thread and wait for its output.
    ///
    /// # Panics
    /// With [`IN_ASYNC_CONTEXT`] when called from async code; by resuming a panic of `fut`.
    pub(crate) fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Tokio refuses to block a thread that drives async tasks (and allows it in spawn_blocking
        // and plain threads): ask it first, with an empty future, so nothing has started yet.
        if catch_unwind(AssertUnwindSafe(|| self.handle.block_on(async {}))).is_err() {
            panic!("{IN_ASYNC_CONTEXT}");
        }
        let task = self.handle.spawn(fut);
        match self.handle.block_on(task) {
            Ok(out) => Ok(out),
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => Err(stopped("has stopped")),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
        // Wait for the drain unless we are inside some async runtime, where blocking is not allowed.
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(t) = lock(&self.thread).take() {
                let _ = t.join();
            }
        }
    }
}
