//! A blocking mirror of the async API, for programs without a tokio runtime.
//!
//! Like `reqwest::blocking`, each [`Client`] drives a small runtime on a background thread
//! (`consul-lock-blocking`); every method sends its work there and waits. All behaviour lives in
//! the async code once. When the last client, lock and guard are gone, the thread finishes pending
//! background releases (for at most 5 s) before it exits, so a guard dropped at the end of `main`
//! still frees its key.
//!
//! ```no_run
//! use consul_lock::blocking::EphemeralLock;
//!
//! fn main() -> consul_lock::Result<()> {
//!     let guard = EphemeralLock::new("my/key").hold()?;
//!     println!("holding with token {}", guard.fencing_token());
//!     guard.release()
//! }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::holder::Holder;
use crate::session::lock;

/// How long the runtime thread waits for pending background releases when shutting down.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

struct Runtime {
    handle: tokio::runtime::Handle,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Runtime {
    fn start() -> Result<Arc<Runtime>> {
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
            .map_err(|e| Error::InvalidConfig(format!("cannot start the blocking runtime thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| Error::InvalidConfig("the blocking runtime thread died".into()))?
            .map_err(|e| Error::InvalidConfig(format!("cannot build the blocking runtime: {e}")))?;
        Ok(Arc::new(Runtime { handle, shutdown: Mutex::new(Some(shutdown_tx)), thread: Mutex::new(Some(thread)) }))
    }

    /// Run `fut` on the runtime thread and wait for its output.
    fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| Error::InvalidConfig("the blocking runtime has stopped".into()))
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

/// Blocking [`crate::Client`]: the same configuration, plus the runtime thread its calls run on.
/// Cheap to clone; clones share the connection pool and the thread.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Client {
    /// A blocking client from Consul's environment variables (see [`crate::Client::from_env`]).
    ///
    /// # Errors
    /// As [`crate::Client::from_env`].
    pub fn from_env() -> Result<Client> {
        Client::new(crate::Client::from_env()?)
    }

    /// Wrap an async [`crate::Client`] (built with [`crate::Client::builder`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the runtime thread cannot be started.
    pub fn new(client: crate::Client) -> Result<Client> {
        Ok(Client { inner: client, rt: Runtime::start()? })
    }

    /// The async client inside.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// Who holds `key` now (see [`crate::Client::holder`]).
    ///
    /// # Errors
    /// As [`crate::Client::holder`].
    pub fn holder(&self, key: &str) -> Result<Option<Holder>> {
        let c = self.inner.clone();
        let key = key.to_owned();
        self.rt.block_on(async move { c.holder(&key).await })?
    }
}

/// Blocking [`crate::EphemeralLock`]: the same builder and guarantees, with plain methods.
#[derive(Debug)]
pub struct EphemeralLock {
    // Field order matters: the lock (and a key it may hold) drops before the runtime handle.
    inner: Option<crate::EphemeralLock>,
    client: Option<Client>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.inner = self.inner.take().map(|l| l.$name(v));
            self
        }
    )*};
}

impl EphemeralLock {
    /// A lock on `key` with the defaults of [`crate::EphemeralLock::new`].
    pub fn new(key: impl Into<String>) -> Self {
        EphemeralLock { inner: Some(crate::EphemeralLock::new(key)), client: None }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.inner = self.inner.take().map(|l| l.client(client.inner.clone()));
        self.client = Some(client);
        self
    }

    setters! {
        /// See [`crate::EphemeralLock::ttl`]. Default 15 s.
        ttl(Duration);
        /// See [`crate::EphemeralLock::acquire_timeout`]. Default 500 ms.
        acquire_timeout(Duration);
        /// See [`crate::EphemeralLock::lock_delay`]. Default 15 s.
        lock_delay(Duration);
        /// See [`crate::EphemeralLock::max_hold`]. Default: none.
        max_hold(Duration);
        /// See [`crate::EphemeralLock::value`]. Default: holder-info JSON.
        value(Vec<u8>);
        /// See [`crate::EphemeralLock::session_name`]. Default `consul-lock: <key>`.
        session_name(String);
        /// See [`crate::EphemeralLock::node_health_checks`]. Default `false`.
        node_health_checks(bool);
        /// See [`crate::EphemeralLock::fair`]. Default `false`.
        fair(bool);
    }

    fn parts(&mut self) -> Result<(crate::EphemeralLock, Client)> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Client::from_env()?;
                self.client = Some(c.clone());
                c
            }
        };
        let lock = self
            .inner
            .take()
            .ok_or_else(|| Error::InvalidConfig("this lock was lost with a stopped runtime".into()))?
            .client(client.inner.clone());
        Ok((lock, client))
    }

    /// Take the lock, waiting up to the acquire timeout (see [`crate::EphemeralLock::hold`]).
    ///
    /// # Errors
    /// As [`crate::EphemeralLock::hold`].
    pub fn hold(mut self) -> Result<LockGuard> {
        let (lock, client) = self.parts()?;
        let guard = client.rt.block_on(lock.hold())??;
        Ok(LockGuard { inner: guard, rt: client.rt.clone() })
    }

    /// Take the lock; `Ok(false)` on timeout unless `fail_hard` (see
    /// [`crate::EphemeralLock::acquire`]).
    ///
    /// # Errors
    /// As [`crate::EphemeralLock::acquire`].
    pub fn acquire(&mut self, fail_hard: bool) -> Result<bool> {
        let (mut lock, client) = self.parts()?;
        let (lock, result) = client.rt.block_on(async move {
            let r = lock.acquire(fail_hard).await;
            (lock, r)
        })?;
        self.inner = Some(lock);
        result
    }

    /// Release if held (see [`crate::EphemeralLock::release`]).
    ///
    /// # Errors
    /// As [`crate::EphemeralLock::release`].
    pub fn release(&mut self) -> Result<()> {
        if self.client.is_none() {
            return Ok(()); // never acquired
        }
        let (mut lock, client) = self.parts()?;
        let (lock, result) = client.rt.block_on(async move {
            let r = lock.release().await;
            (lock, r)
        })?;
        self.inner = Some(lock);
        result
    }

    /// `true` while this lock holds its key.
    pub fn is_held(&self) -> bool {
        self.inner.as_ref().is_some_and(|l| l.is_held())
    }

    /// The fencing token while held.
    pub fn fencing_token(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|l| l.fencing_token())
    }

    /// Acquire (failing hard), run `f`, release. `f` is not interrupted if the lock is lost while
    /// it runs (a thread cannot be cancelled safely); the loss is reported afterwards as
    /// [`Error::LockLost`]. Check [`LockGuard::is_held`] inside long work, or use the async API.
    ///
    /// # Errors
    /// As [`hold`](Self::hold); [`Error::LockLost`]; release errors.
    pub fn run<T>(self, f: impl FnOnce(&LockGuard) -> T) -> Result<T> {
        let guard = self.hold()?;
        let out = f(&guard);
        let key = guard.key().to_owned();
        let held = guard.is_held();
        guard.release()?;
        if held {
            Ok(out)
        } else {
            Err(Error::LockLost { key })
        }
    }
}

/// Blocking [`crate::LockGuard`]. Dropping it releases in the background (never blocks); the
/// runtime thread finishes that release before it exits.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    // Field order matters: the guard drops (spawning its release) before the runtime handle.
    inner: crate::LockGuard,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl LockGuard {
    /// The locked key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The Consul session holding the key.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// The fencing token (see [`crate::LockGuard::fencing_token`]).
    pub fn fencing_token(&self) -> u64 {
        self.inner.fencing_token()
    }

    /// `true` while held (see [`crate::LockGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Block until the lock is known lost, or `timeout` passes; `true` if lost.
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        let hold = self.inner.hold.clone();
        self.rt.block_on(async move { tokio::time::timeout(timeout, hold.wait_lost()).await.is_ok() }).unwrap_or(true)
    }

    /// Release now (see [`crate::LockGuard::release`]).
    ///
    /// # Errors
    /// As [`crate::LockGuard::release`].
    pub fn release(self) -> Result<()> {
        let LockGuard { inner, rt } = self;
        rt.block_on(inner.release())?
    }
}
