//! Blocking [`Session`]: one Consul session, renewed once, for many blocking locks, semaphores and
//! elections.

use std::time::Duration;

use super::client::Client;
use super::election::Election;
use super::lock::EphemeralLock;
use super::multilock::MultiLock;
use super::semaphore::Semaphore;
use crate::error::Result;

/// Blocking [`crate::Session`]: the same guarantees, with plain methods.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// use std::time::Duration;
/// let client = consul_lock::blocking::Client::from_env()?;
/// let session = consul_lock::blocking::Session::new(&client, Duration::from_secs(15))?;
/// let guard = session.lock("jobs/1").hold()?;
/// guard.release()?;
/// session.destroy()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    // Field order matters: the session drops before the runtime handle.
    inner: crate::Session,
    client: Client,
}

impl Session {
    /// Create a session (see [`crate::Session::new`]).
    ///
    /// # Errors
    /// As [`crate::Session::new`].
    pub fn new(client: &Client, ttl: Duration) -> Result<Session> {
        Self::with_lock_delay(client, ttl, crate::DEFAULT_LOCK_DELAY)
    }

    /// Create a session with an explicit lock-delay (see [`crate::Session::with_lock_delay`]).
    ///
    /// # Errors
    /// As [`crate::Session::with_lock_delay`].
    pub fn with_lock_delay(client: &Client, ttl: Duration, lock_delay: Duration) -> Result<Session> {
        let c = client.inner.clone();
        let inner = client.rt.block_on(crate::Session::with_lock_delay(c, ttl, lock_delay))??;
        Ok(Session { inner, client: client.clone() })
    }

    /// A blocking lock on `key` bound to this session (see [`crate::Session::lock`]).
    pub fn lock(&self, key: impl Into<String>) -> EphemeralLock {
        EphemeralLock::bound(self.inner.lock(key), self.client.clone())
    }

    /// A blocking multi-lock on `keys` bound to this session (see [`crate::Session::multi_lock`]).
    pub fn multi_lock<I, K>(&self, keys: I) -> MultiLock
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        MultiLock::bound(self.inner.multi_lock(keys), self.client.clone())
    }

    /// A blocking semaphore on `prefix` with `limit` slots bound to this session (see
    /// [`crate::Session::semaphore`]).
    pub fn semaphore(&self, prefix: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore::bound(self.inner.semaphore(prefix, limit), self.client.clone())
    }

    /// A blocking election on `key` whose campaigns go through this session (see
    /// [`crate::Session::election`]): resigning leaves the session alive for the next campaign.
    pub fn election(&self, key: impl Into<String>) -> Election {
        Election::bound(self.inner.election(key), self.client.clone())
    }

    /// The Consul session ID.
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// `false` once the session is known lost or past its lease deadline.
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// Block until the session is known lost (see [`crate::Session::lost`]).
    pub fn lost(&self) {
        let s = self.inner.clone();
        // A stopped runtime thread cannot renew: the session is as good as lost.
        let _ = self.client.rt.block_on(async move { s.lost().await });
    }

    /// Like [`lost`](Self::lost), giving up after `timeout`; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        let s = self.inner.clone();
        self.client.rt.block_on(async move { tokio::time::timeout(timeout, s.lost()).await.is_ok() }).unwrap_or(true)
    }

    /// Destroy the session now (see [`crate::Session::destroy`]).
    ///
    /// # Errors
    /// As [`crate::Session::destroy`].
    pub fn destroy(self) -> Result<()> {
        let Session { inner, client } = self;
        client.rt.block_on(inner.destroy())?
    }
}
