//! Blocking [`EphemeralLock`] and [`LockGuard`]: the async lock's builder and guarantees, with
//! plain methods.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::runtime::Runtime;
use crate::error::{Error, Result};

/// Blocking [`crate::EphemeralLock`]: the same builder and guarantees, with plain methods.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// use std::time::Duration;
/// let mut lock = consul_lock::blocking::EphemeralLock::new("jobs/42").acquire_timeout(Duration::ZERO);
/// if lock.acquire(false)? {
///     // … critical section, lock.fencing_token() is Some(token) …
///     lock.release()?;
/// }
/// # Ok(()) }
/// ```
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

/// Block until `lost` resolves, at most `timeout` (`None`: forever); `true` if it did. Nothing to
/// wait for (`None`) counts as lost.
pub(super) fn wait_lost<F>(rt: &Runtime, lost: Option<F>, timeout: Option<Duration>) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(lost) = lost else { return true };
    let lost = async move {
        match timeout {
            Some(t) => tokio::time::timeout(t, lost).await.is_ok(),
            None => {
                lost.await;
                true
            }
        }
    };
    // A stopped runtime cannot renew: the lock is as good as lost.
    rt.block_on(lost).unwrap_or(true)
}

/// The loss of `hold`, as a future that owns it.
pub(super) async fn hold_lost(hold: Arc<crate::primitive::hold::Hold>) {
    hold.wait_lost().await
}

impl EphemeralLock {
    /// A lock on `key` with the defaults of [`crate::EphemeralLock::new`].
    pub fn new(key: impl Into<String>) -> Self {
        EphemeralLock { inner: Some(crate::EphemeralLock::new(key)), client: None }
    }

    /// A lock bound to a shared session (see [`super::Session::lock`]).
    pub(crate) fn bound(inner: crate::EphemeralLock, client: Client) -> Self {
        EphemeralLock { inner: Some(inner), client: Some(client) }
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
            .ok_or_else(|| Error::Cancelled("this lock was lost with a stopped runtime thread".into()))?;
        Ok((lock.client(client.inner.clone()), client))
    }

    /// Run `f` on the lock on the runtime thread, and put the lock back.
    fn with_lock<T, F>(&mut self, f: impl FnOnce(crate::EphemeralLock) -> F) -> Result<T>
    where
        F: std::future::Future<Output = (crate::EphemeralLock, Result<T>)> + Send + 'static,
        T: Send + 'static,
    {
        let (lock, client) = self.parts()?;
        let (lock, result) = client.rt.block_on(f(lock))?;
        self.inner = Some(lock);
        result
    }

    /// The key this lock is for.
    pub fn key(&self) -> &str {
        self.inner.as_ref().map_or("", |l| l.key())
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
        self.with_lock(move |mut lock| async move {
            let r = lock.acquire(fail_hard).await;
            (lock, r)
        })
    }

    /// Release if held (see [`crate::EphemeralLock::release`]).
    ///
    /// # Errors
    /// As [`crate::EphemeralLock::release`].
    pub fn release(&mut self) -> Result<()> {
        if self.client.is_none() {
            return Ok(()); // never acquired
        }
        self.with_lock(|mut lock| async move {
            let r = lock.release().await;
            (lock, r)
        })
    }

    /// `true` while this lock holds its key.
    pub fn is_held(&self) -> bool {
        self.inner.as_ref().is_some_and(|l| l.is_held())
    }

    /// The fencing token while held.
    pub fn fencing_token(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|l| l.fencing_token())
    }

    /// Block until the lock held by this value is known lost (see [`crate::EphemeralLock::lost`]);
    /// at once when it holds nothing.
    pub fn lost(&self) {
        self.lost_timeout_inner(None);
    }

    /// Like [`lost`](Self::lost), giving up after `timeout`: `true` if the lock is lost (or nothing
    /// is held), `false` if it is still held when `timeout` ends.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        self.lost_timeout_inner(Some(timeout))
    }

    fn lost_timeout_inner(&self, timeout: Option<Duration>) -> bool {
        match (&self.client, self.inner.as_ref().and_then(|l| l.current_hold())) {
            (Some(c), Some(hold)) => wait_lost(&c.rt, Some(hold_lost(hold)), timeout),
            _ => true,
        }
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

    /// Block until the lock is known lost (see [`crate::LockGuard::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(hold_lost(self.inner.hold.clone())), None);
    }

    /// Block until the lock is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(hold_lost(self.inner.hold.clone())), Some(timeout))
    }

    /// The former name of [`lost_timeout`](Self::lost_timeout).
    #[deprecated(since = "0.1.1", note = "renamed `lost_timeout`, beside `lost` (as the async `LockGuard::lost`)")]
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        self.lost_timeout(timeout)
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

super::guarded::blocking_guarded_writes!(LockGuard, "LockGuard");
