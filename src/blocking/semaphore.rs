//! Blocking [`Semaphore`] and [`SemaphorePermit`]: the async semaphore's builder and guarantees,
//! with plain methods.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::handle::{blocking_holding_methods, held_lost, wait_lost, Handle};
use super::lock::setters;
use super::runtime::Runtime;
use crate::error::Result;

/// Blocking [`crate::Semaphore`]: the same builder and guarantees, with plain methods.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let permit = consul_lock::blocking::Semaphore::new("jobs/encoder", 3).hold()?;
/// // … one of at most 3 encoders …
/// permit.release()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Semaphore {
    handle: Handle<crate::Semaphore>,
}

impl Semaphore {
    /// A semaphore on `prefix` with `limit` slots, with the defaults of [`crate::Semaphore::new`].
    pub fn new(prefix: impl Into<String>, limit: u32) -> Self {
        Semaphore { handle: Handle::new(crate::Semaphore::new(prefix, limit), None) }
    }

    /// A semaphore bound to a shared session (see [`super::Session::semaphore`]).
    pub(crate) fn bound(inner: crate::Semaphore, client: Client) -> Self {
        Semaphore { handle: Handle::new(inner, Some(client)) }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.handle.set_client(client);
        self
    }

    setters! {
        /// See [`crate::Semaphore::ttl`]. Default 15 s.
        ttl(Duration);
        /// See [`crate::Semaphore::acquire_timeout`]. Default 500 ms.
        acquire_timeout(Duration);
        /// See [`crate::Semaphore::lock_delay`]. Default 15 s.
        lock_delay(Duration);
        /// See [`crate::Semaphore::value`]. Default: holder-info JSON.
        value(Vec<u8>);
        /// See [`crate::Semaphore::session_name`]. Default `consul-lock semaphore: <prefix>`.
        session_name(String);
    }

    /// The semaphore's prefix.
    pub fn prefix(&self) -> &str {
        self.handle.get().map_or("", |s| s.prefix())
    }

    blocking_holding_methods! {
        guard: SemaphorePermit, held: current_permit;
        /// Take a slot, waiting up to the acquire timeout (see [`crate::Semaphore::hold`]).
        ///
        /// # Errors
        /// As [`crate::Semaphore::hold`].
        hold;
        /// Take a slot; `Ok(false)` on timeout unless `fail_hard` (see [`crate::Semaphore::acquire`]).
        ///
        /// # Errors
        /// As [`crate::Semaphore::acquire`].
        acquire;
        /// Give the slot back if held (see [`crate::Semaphore::release`]).
        ///
        /// # Errors
        /// As [`crate::Semaphore::release`].
        release;
        /// `true` while this value holds a slot.
        is_held;
        /// Block until the slot held by this value is known lost; at once when it holds none.
        lost;
        /// Like [`lost`](Self::lost), giving up after `timeout`: `true` if lost (or nothing held).
        lost_timeout;
    }

    /// The token while held.
    pub fn token(&self) -> Option<u64> {
        self.handle.get().and_then(|s| s.token())
    }
}

/// Blocking [`crate::SemaphorePermit`]. Dropping it releases in the background (never blocks); the
/// runtime thread finishes that release before it exits.
#[must_use = "the slot is released as soon as the permit is dropped"]
#[derive(Debug)]
pub struct SemaphorePermit {
    // Field order matters: the permit drops (spawning its release) before the runtime handle.
    inner: crate::SemaphorePermit,
    rt: Arc<Runtime>,
}

impl SemaphorePermit {
    /// The semaphore's prefix.
    pub fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    /// Our contender key, `PREFIX/<session-id>`.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The Consul session holding the contender key.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// The token (see [`crate::SemaphorePermit::token`]).
    pub fn token(&self) -> u64 {
        self.inner.token()
    }

    /// `true` while held (see [`crate::SemaphorePermit::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Block until the slot is known lost (see [`crate::SemaphorePermit::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(held_lost(self.inner.permit.clone())), None);
    }

    /// Block until the slot is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.permit.clone())), Some(timeout))
    }

    /// Release now (see [`crate::SemaphorePermit::release`]).
    ///
    /// # Errors
    /// As [`crate::SemaphorePermit::release`].
    pub fn release(self) -> Result<()> {
        let SemaphorePermit { inner, rt } = self;
        rt.block_on(inner.release())?
    }
}

super::guarded::blocking_guarded_writes!(SemaphorePermit, "SemaphorePermit");
