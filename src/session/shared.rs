//! The public shared [`Session`]: one Consul session, renewed once, for many locks.
//!
//! The primitives bind to it in their own files ([`Session::lock`] lives with the lock), so this
//! file depends only on the session layer below it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::SessionSpec;
use crate::error::Result;
use crate::session::lifecycle::{self, SessionCore, DEFAULT_LOCK_DELAY};

/// One Consul session shared by many locks: renewed once for all of them, so a lock cycle costs only
/// the acquire and the owner-checked delete (2 writes instead of 4).
///
/// Losing the session loses every lock taken through it, and each guard reports it. Two locks on the
/// same key through one `Session` never both hold it: the second waits in-process like any other
/// contender.
///
/// Semaphores ([`Session::semaphore`]) and elections ([`Session::election`]) bind to it too: a
/// candidate that keeps one `Session` across its campaigns resigns with one owner-checked delete
/// and hands over at 4 requests (5 when each campaign has its own session).
///
/// Dropping the last handle (the `Session` and every lock and guard made from it) destroys the
/// session in the background.
///
/// ```no_run
/// # async fn demo() -> consul_lock::Result<()> {
/// use std::time::Duration;
/// let client = consul_lock::Client::from_env()?;
/// let session = consul_lock::Session::new(client, Duration::from_secs(15)).await?;
/// let guard = session.lock("jobs/1").hold().await?;
/// guard.release().await?;
/// session.destroy().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) core: Arc<SessionCore>,
}

impl Session {
    /// Create a session with TTL `ttl` (10 s ..= 86400 s), no node health checks and a lock-delay of
    /// 15 s (Consul's default), and start renewing it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a TTL out of range (before any request); transport and Consul
    /// errors otherwise; [`Error::Cancelled`](crate::Error::Cancelled) if the runtime shuts down meanwhile.
    ///
    /// # Cancel safety
    /// If the future is dropped while the create request is in flight, the session (if created) is
    /// destroyed in the background once the answer arrives.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// use std::time::Duration;
    /// let session = consul_lock::Session::new(consul_lock::Client::from_env()?, Duration::from_secs(30)).await?;
    /// println!("session {}", session.id());
    /// # Ok(()) }
    /// ```
    pub async fn new(client: Client, ttl: Duration) -> Result<Session> {
        Self::with_lock_delay(client, ttl, DEFAULT_LOCK_DELAY).await
    }

    /// Like [`Session::new`] with an explicit lock-delay (`0 ..= 60 s`).
    ///
    /// # Errors
    /// As [`Session::new`]; lock-delay out of range is [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    ///
    /// # Cancel safety
    /// As [`Session::new`].
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// use std::time::Duration;
    /// let client = consul_lock::Client::from_env()?;
    /// let session = consul_lock::Session::with_lock_delay(client, Duration::from_secs(15), Duration::ZERO).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock_delay(client: Client, ttl: Duration, lock_delay: Duration) -> Result<Session> {
        let spec = SessionSpec { name: "consul-lock shared".into(), ttl, lock_delay, node_checks: false };
        lifecycle::validate_spec(&spec)?;
        // Own the request's outcome in a task so that a dropped future cannot leak the session.
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + client.request_timeout();
            SessionCore::create(&client, &spec, deadline).await
        });
        let core = crate::task::join(task, "creating the session").await??;
        Ok(Session { core })
    }

    /// The Consul session ID.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// `false` once the session is known lost or past its lease deadline.
    pub fn is_alive(&self) -> bool {
        !self.core.is_lost()
    }

    /// Resolves when the session is known lost (one blocking query watches the whole session).
    ///
    /// Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing (the watch, once started, lives as long as
    /// the session).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) {
    /// session.lost().await;
    /// eprintln!("session {} lost: every lock taken through it is gone", session.id());
    /// # }
    /// ```
    pub async fn lost(&self) {
        self.core.wait_lost(true).await
    }

    /// Destroy the session now: every lock taken through it is released by Consul (with the
    /// session's lock-delay) and reported lost by its guard.
    ///
    /// # Errors
    /// Transport and Consul errors (the destroy is then retried in the background).
    ///
    /// # Cancel safety
    /// If the future is dropped while the destroy request is in flight, the session may or may not
    /// be destroyed; it is then destroyed in the background when its last handle drops.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) -> consul_lock::Result<()> {
    /// session.destroy().await?;
    /// # Ok(()) }
    /// ```
    pub async fn destroy(self) -> Result<()> {
        self.core.destroy().await
    }
}
