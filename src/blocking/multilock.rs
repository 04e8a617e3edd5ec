//! Blocking [`MultiLock`] and [`MultiLockGuard`]: the async multi-lock's builder and guarantees,
//! with plain methods.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::handle::{blocking_holding_methods, held_lost, wait_lost, Handle};
use super::runtime::Runtime;
use crate::error::Result;

/// Blocking [`crate::MultiLock`]: the same builder and guarantees, with plain methods.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let guard = consul_lock::blocking::MultiLock::new(["accounts/17", "accounts/42"]).hold()?;
/// // … both keys held …
/// guard.release()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MultiLock {
    handle: Handle<crate::MultiLock>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.handle.map(|l| l.$name(v));
            self
        }
    )*};
}

impl MultiLock {
    /// A multi-lock on `keys` with the defaults of [`crate::MultiLock::new`].
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        MultiLock { handle: Handle::new(crate::MultiLock::new(keys), None) }
    }

    /// A multi-lock bound to a shared session (see [`super::Session::multi_lock`]).
    pub(crate) fn bound(inner: crate::MultiLock, client: Client) -> Self {
        MultiLock { handle: Handle::new(inner, Some(client)) }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.handle.set_client(client);
        self
    }

    setters! {
        /// See [`crate::MultiLock::ttl`]. Default 15 s.
        ttl(Duration);
        /// See [`crate::MultiLock::acquire_timeout`]. Default 500 ms.
        acquire_timeout(Duration);
        /// See [`crate::MultiLock::lock_delay`]. Default 15 s.
        lock_delay(Duration);
        /// See [`crate::MultiLock::max_hold`]. Default: none.
        max_hold(Duration);
        /// See [`crate::MultiLock::value`]. Default: holder-info JSON.
        value(Vec<u8>);
        /// See [`crate::MultiLock::session_name`].
        session_name(String);
        /// See [`crate::MultiLock::node_health_checks`]. Default `false`.
        node_health_checks(bool);
    }

    /// The keys, as given.
    pub fn keys(&self) -> &[String] {
        self.handle.get().map_or(&[], |l| l.keys())
    }

    blocking_holding_methods! {
        guard: MultiLockGuard, held: current_hold;
        /// Take every key (see [`crate::MultiLock::hold`]).
        ///
        /// # Errors
        /// As [`crate::MultiLock::hold`].
        hold;
        /// Take every key; `Ok(false)` on timeout unless `fail_hard` (see
        /// [`crate::MultiLock::acquire`]).
        ///
        /// # Errors
        /// As [`crate::MultiLock::acquire`].
        acquire;
        /// Release if held (see [`crate::MultiLock::release`]).
        ///
        /// # Errors
        /// As [`crate::MultiLock::release`].
        release;
        /// `true` while this multi-lock holds its keys.
        is_held;
        /// Block until the keys held by this value are known lost; at once when it holds nothing.
        lost;
        /// Like [`lost`](Self::lost), giving up after `timeout`: `true` if lost (or nothing is held).
        lost_timeout;
    }

    /// The fencing token while held.
    pub fn fencing_token(&self) -> Option<u64> {
        self.handle.get().and_then(|l| l.fencing_token())
    }
}

/// Blocking [`crate::MultiLockGuard`]. Dropping it releases in the background (never blocks); the
/// runtime thread finishes that release before it exits.
#[must_use = "the keys are released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct MultiLockGuard {
    // Field order matters: the guard drops (spawning its release) before the runtime handle.
    inner: crate::MultiLockGuard,
    rt: Arc<Runtime>,
}

impl MultiLockGuard {
    /// The held keys, sorted.
    pub fn keys(&self) -> &[String] {
        self.inner.keys()
    }

    /// The Consul session holding the keys.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// The fencing token of the set (see [`crate::MultiLockGuard::fencing_token`]).
    pub fn fencing_token(&self) -> u64 {
        self.inner.fencing_token()
    }

    /// `true` while held (see [`crate::MultiLockGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Block until the set is known lost (see [`crate::MultiLockGuard::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), None);
    }

    /// Block until the set is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), Some(timeout))
    }

    /// Release now (see [`crate::MultiLockGuard::release`]).
    ///
    /// # Errors
    /// As [`crate::MultiLockGuard::release`].
    pub fn release(self) -> Result<()> {
        let MultiLockGuard { inner, rt } = self;
        rt.block_on(inner.release())?
    }
}

super::guarded::blocking_guarded_writes!(MultiLockGuard, "MultiLockGuard");
