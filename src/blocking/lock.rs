//! Blocking [`EphemeralLock`] and [`LockGuard`]: the async lock's builder and guarantees, with
//! plain methods.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::handle::{blocking_holding_methods, held_lost, wait_lost, Handle};
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
    handle: Handle<crate::EphemeralLock>,
}

/// Setters that forward to the async builder, each documented where it is used.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.handle.map(|inner| inner.$name(v));
            self
        }
    )*};
}
pub(super) use setters;

impl EphemeralLock {
    /// A lock on `key` with the defaults of [`crate::EphemeralLock::new`].
    pub fn new(key: impl Into<String>) -> Self {
        EphemeralLock { handle: Handle::new(crate::EphemeralLock::new(key), None) }
    }

    /// A lock bound to a shared session (see [`super::Session::lock`]).
    pub(crate) fn bound(inner: crate::EphemeralLock, client: Client) -> Self {
        EphemeralLock { handle: Handle::new(inner, Some(client)) }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.handle.set_client(client);
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

    /// The key this lock is for.
    pub fn key(&self) -> &str {
        self.handle.get().map_or("", |l| l.key())
    }

    blocking_holding_methods! {
        guard: LockGuard, held: current_hold;
        /// Take the lock, waiting up to the acquire timeout (see [`crate::EphemeralLock::hold`]).
        ///
        /// # Errors
        /// As [`crate::EphemeralLock::hold`].
        hold;
        /// Take the lock; `Ok(false)` on timeout unless `fail_hard` (see
        /// [`crate::EphemeralLock::acquire`]).
        ///
        /// # Errors
        /// As [`crate::EphemeralLock::acquire`].
        acquire;
        /// Release if held (see [`crate::EphemeralLock::release`]).
        ///
        /// # Errors
        /// As [`crate::EphemeralLock::release`].
        release;
        /// `true` while this lock holds its key.
        is_held;
        /// Block until the lock held by this value is known lost (see [`crate::EphemeralLock::lost`]);
        /// at once when it holds nothing.
        lost;
        /// Like [`lost`](Self::lost), giving up after `timeout`: `true` if the lock is lost (or nothing
        /// is held), `false` if it is still held when `timeout` ends.
        lost_timeout;
    }

    /// The fencing token while held.
    pub fn fencing_token(&self) -> Option<u64> {
        self.handle.get().and_then(|l| l.fencing_token())
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
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), None);
    }

    /// Block until the lock is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), Some(timeout))
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
