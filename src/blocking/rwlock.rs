//! Blocking [`RwLock`], [`ReadGuard`] and [`WriteGuard`]: the async read-write lock's builder and
//! guarantees, with plain methods.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::handle::{held_lost, wait_lost, Driven, Handle};
use super::lock::setters;
use super::runtime::Runtime;
use crate::error::Result;

impl Driven for crate::RwLock {
    const WHAT: &'static str = "read-write lock";
    fn with_client(self, client: crate::Client) -> Self {
        self.client(client)
    }
}

/// Blocking [`crate::RwLock`]: the same builder and guarantees, with plain methods. Its requests
/// take `&mut self` (the async builder runs on the client's runtime thread meanwhile); guards are
/// independent of it.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let mut lock = consul_lock::blocking::RwLock::new("datasets/users");
/// let reader = lock.read()?;
/// reader.release()?;
/// let writer = lock.write()?;
/// println!("token {}", writer.fencing_token());
/// writer.release()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RwLock {
    handle: Handle<crate::RwLock>,
}

impl RwLock {
    /// A read-write lock on `key` with the defaults of [`crate::RwLock::new`].
    pub fn new(key: impl Into<String>) -> Self {
        RwLock { handle: Handle::new(crate::RwLock::new(key), None) }
    }

    /// A read-write lock bound to a shared session (see [`super::Session::rw_lock`]).
    pub(crate) fn bound(inner: crate::RwLock, client: Client) -> Self {
        RwLock { handle: Handle::new(inner, Some(client)) }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.handle.set_client(client);
        self
    }

    setters! {
        /// See [`crate::RwLock::ttl`]. Default 15 s.
        ttl(Duration);
        /// See [`crate::RwLock::acquire_timeout`]. Default 500 ms.
        acquire_timeout(Duration);
        /// See [`crate::RwLock::lock_delay`]. Default 15 s.
        lock_delay(Duration);
        /// See [`crate::RwLock::max_hold`]. Default: no limit.
        max_hold(Duration);
        /// See [`crate::RwLock::value`]. Default: holder-info JSON.
        value(Vec<u8>);
        /// See [`crate::RwLock::session_name`]. Default `consul-lock rwlock: <key>`.
        session_name(String);
        /// See [`crate::RwLock::node_health_checks`]. Default `false`.
        node_health_checks(bool);
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        self.handle.get().map_or("", |l| l.key())
    }

    /// Take the lock shared, waiting up to the acquire timeout (see [`crate::RwLock::read`]).
    ///
    /// # Errors
    /// As [`crate::RwLock::read`].
    pub fn read(&mut self) -> Result<ReadGuard> {
        let (inner, rt) = self.request(|l| async move {
            let r = l.read().await;
            (l, r)
        })?;
        Ok(ReadGuard { inner, rt })
    }

    /// Take the lock exclusively, waiting up to the acquire timeout (see [`crate::RwLock::write`]).
    ///
    /// # Errors
    /// As [`crate::RwLock::write`].
    pub fn write(&mut self) -> Result<WriteGuard> {
        let (inner, rt) = self.request(|l| async move {
            let r = l.write().await;
            (l, r)
        })?;
        Ok(WriteGuard { inner, rt })
    }

    /// One attempt at the shared lock (see [`crate::RwLock::try_read`]).
    ///
    /// # Errors
    /// As [`crate::RwLock::try_read`].
    pub fn try_read(&mut self) -> Result<Option<ReadGuard>> {
        let (inner, rt) = self.request(|l| async move {
            let r = l.try_read().await;
            (l, r)
        })?;
        Ok(inner.map(|inner| ReadGuard { inner, rt }))
    }

    /// One attempt at the exclusive lock (see [`crate::RwLock::try_write`]).
    ///
    /// # Errors
    /// As [`crate::RwLock::try_write`].
    pub fn try_write(&mut self) -> Result<Option<WriteGuard>> {
        let (inner, rt) = self.request(|l| async move {
            let r = l.try_write().await;
            (l, r)
        })?;
        Ok(inner.map(|inner| WriteGuard { inner, rt }))
    }

    /// Run a request on the runtime thread; what it took, and that runtime (the guard keeps it).
    fn request<T, F>(&mut self, f: impl FnOnce(crate::RwLock) -> F) -> Result<(T, Arc<Runtime>)>
    where
        F: std::future::Future<Output = (crate::RwLock, Result<T>)> + Send + 'static,
        T: Send + 'static,
    {
        let taken = self.handle.call(f)?;
        let rt = self.handle.runtime().ok_or_else(|| crate::Error::Cancelled("no runtime thread".into()))?;
        Ok((taken, rt))
    }
}

/// Blocking [`crate::ReadGuard`]. Dropping it releases in the background (never blocks); the
/// runtime thread finishes that release before it exits.
#[must_use = "the read lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ReadGuard {
    // Field order matters: the guard drops (spawning its release) before the runtime handle.
    inner: crate::ReadGuard,
    rt: Arc<Runtime>,
}

impl ReadGuard {
    /// The read-write lock's key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The Consul session holding our place.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// When this request arrived (see [`crate::ReadGuard::arrival`]).
    pub fn arrival(&self) -> u64 {
        self.inner.arrival()
    }

    /// `true` while held (see [`crate::ReadGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Block until the read lock is known lost (see [`crate::ReadGuard::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), None);
    }

    /// Block until the read lock is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), Some(timeout))
    }

    /// Release now (see [`crate::ReadGuard::release`]).
    ///
    /// # Errors
    /// As [`crate::ReadGuard::release`].
    pub fn release(self) -> Result<()> {
        let ReadGuard { inner, rt } = self;
        rt.block_on(inner.release())?
    }
}

/// Blocking [`crate::WriteGuard`]. Dropping it releases in the background (never blocks); the
/// runtime thread finishes that release before it exits.
#[must_use = "the write lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct WriteGuard {
    // Field order matters: the guard drops (spawning its release) before the runtime handle.
    inner: crate::WriteGuard,
    rt: Arc<Runtime>,
}

impl WriteGuard {
    /// The read-write lock's key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The Consul session holding the key.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// When this request arrived (see [`crate::WriteGuard::arrival`]).
    pub fn arrival(&self) -> u64 {
        self.inner.arrival()
    }

    /// The fencing token (see [`crate::WriteGuard::fencing_token`]).
    pub fn fencing_token(&self) -> u64 {
        self.inner.fencing_token()
    }

    /// `true` while held (see [`crate::WriteGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Block until the write lock is known lost (see [`crate::WriteGuard::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), None);
    }

    /// Block until the write lock is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.hold.clone())), Some(timeout))
    }

    /// Become a reader in place (see [`crate::WriteGuard::downgrade`]).
    ///
    /// # Errors
    /// As [`crate::WriteGuard::downgrade`].
    pub fn downgrade(self) -> Result<ReadGuard> {
        let WriteGuard { inner, rt } = self;
        let inner = rt.block_on(inner.downgrade())??;
        Ok(ReadGuard { inner, rt })
    }

    /// Release now (see [`crate::WriteGuard::release`]).
    ///
    /// # Errors
    /// As [`crate::WriteGuard::release`].
    pub fn release(self) -> Result<()> {
        let WriteGuard { inner, rt } = self;
        rt.block_on(inner.release())?
    }
}
super::guarded::blocking_guarded_writes!(ReadGuard, "ReadGuard");
super::guarded::blocking_guarded_writes!(WriteGuard, "WriteGuard");
