//! Consul sessions: creation, the renewal task, the local lease deadline, loss, and destruction.
//!
//! A lock is only as alive as its session. `SessionCore` is shared (through `Arc`) by whoever needs
//! the session: an acquire in progress, held locks, or a user's shared [`Session`]. The renewal task
//! only holds a `Weak`, so the session is closed (renewal stopped, destroyed in the background) as soon
//! as its last user is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::api::{Renewed, SessionSpec};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::lock::EphemeralLock;
use crate::metrics::{self, Loss};
use crate::retry::{self, Backoff};

/// When a session renewed at `sent` (the time the successful renew request was *sent*) must be
/// assumed gone. Consul may keep it up to 2×TTL, but a client cannot rely on that: this is the
/// conservative bound (DESIGN.md §6).
pub(crate) fn lease_deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl
}

/// How long to wait before the next renewal: TTL/2, shortened by up to 10 % of jitter so that many
/// sessions created together do not renew in lockstep.
pub(crate) fn renew_period(ttl: Duration) -> Duration {
    retry::jitter_down(ttl / 2, 0.1)
}

struct Lease {
    ttl: Duration,
    lost_at: Instant,
}

pub(crate) struct SessionCore {
    pub(crate) client: Client,
    pub(crate) id: String,
    pub(crate) lock_delay: Duration,
    lease: Mutex<Lease>,
    lost: watch::Sender<bool>,
    closed: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    watch_started: AtomicBool,
    /// (key → in-process claim), so that two locks on one shared session never both "hold" a key.
    claims: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    runtime: Handle,
    pub(crate) metrics: metrics::SessionLocks,
}

impl std::fmt::Debug for SessionCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("lost", &self.is_lost()).finish()
    }
}

impl SessionCore {
    /// Create a session and start renewing it. Must run inside a tokio runtime.
    #[tracing::instrument(level = "debug", skip_all, fields(name = %spec.name))]
    pub(crate) async fn create(client: &Client, spec: &SessionSpec, deadline: Instant) -> Result<Arc<SessionCore>> {
        let sent = Instant::now();
        let id = retry::until(deadline, || client.session_create(spec)).await?;
        tracing::debug!(session = %id, "session created");
        let core = Arc::new(SessionCore {
            client: client.clone(),
            id,
            lock_delay: spec.lock_delay,
            lease: Mutex::new(Lease { ttl: spec.ttl, lost_at: lease_deadline(sent, spec.ttl) }),
            lost: watch::Sender::new(false),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            watch_started: AtomicBool::new(false),
            claims: Mutex::new(HashMap::new()),
            runtime: Handle::current(),
            metrics: metrics::SessionLocks::default(),
        });
        let renew = tokio::spawn(renew_loop(Arc::downgrade(&core)));
        core.add_task(renew.abort_handle());
        Ok(core)
    }

    fn add_task(&self, task: AbortHandle) {
        lock(&self.tasks).push(task);
    }

    /// The lease deadline: after this instant the session must be assumed gone.
    pub(crate) fn lost_at(&self) -> Instant {
        lock(&self.lease).lost_at
    }

    pub(crate) fn ttl(&self) -> Duration {
        lock(&self.lease).ttl
    }

    /// Known lost, or past its lease deadline.
    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow() || Instant::now() >= self.lost_at()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.lost.subscribe()
    }

    /// Resolves once the session is known lost. Starts the session watch (one blocking query for the
    /// whole session) the first time it is awaited, when `watch` is set.
    pub(crate) async fn wait_lost(self: &Arc<Self>, watch: bool) {
        if watch {
            self.start_watch();
        }
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    fn start_watch(self: &Arc<Self>) {
        if self.watch_started.swap(true, Ordering::SeqCst) || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let task = self.runtime.spawn(watch_loop(Arc::downgrade(self)));
        self.add_task(task.abort_handle());
    }

    /// The session is gone (renew 404, invalid session, watch, or lease deadline): tell every
    /// holder, stop renewing and destroy it so no zombie keeps its keys.
    pub(crate) fn mark_lost(&self, loss: Loss, reason: &str) {
        if !self.lost.send_replace(true) {
            tracing::warn!(session = %self.id, reason, "session lost");
            self.metrics.lost(loss);
        }
        self.close();
    }

    /// Stop renewing and destroy the session in the background (bounded retries). Idempotent.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        let client = self.client.clone();
        let id = self.id.clone();
        // Past 2×TTL the server has expired the session by itself.
        let give_up = Instant::now() + self.ttl() * 2;
        self.runtime.spawn(async move {
            if let Err(e) = retry::until(give_up, || client.session_destroy(&id)).await {
                tracing::warn!(session = %id, error = %e, "could not destroy session; it expires by its TTL");
            }
        });
    }

    /// Destroy the session now (used by a release when that alone deletes the key).
    pub(crate) async fn destroy_now(&self, deadline: Instant) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        let r = retry::until(deadline, || self.client.session_destroy(&self.id)).await;
        if r.is_err() {
            // Try again in the background; the error is still reported.
            self.closed.store(false, Ordering::SeqCst);
            self.close();
        }
        r
    }

    fn renewed(&self, sent: Instant, server_ttl: Option<Duration>) {
        let mut lease = lock(&self.lease);
        if let Some(t) = server_ttl.filter(|t| *t > lease.ttl) {
            lease.ttl = t;
        }
        lease.lost_at = lease.lost_at.max(lease_deadline(sent, lease.ttl));
    }

    /// Claim `key` within this process (shared sessions only), waiting until `deadline`.
    pub(crate) async fn claim(self: &Arc<Self>, key: &str, deadline: Option<Instant>) -> Option<Claim> {
        let mutex = lock(&self.claims).entry(key.to_owned()).or_default().clone();
        let guard = match deadline {
            None => Some(mutex.lock_owned().await),
            Some(d) => match mutex.clone().try_lock_owned() {
                Ok(g) => Some(g),
                Err(_) => tokio::time::timeout_at(d, mutex.lock_owned()).await.ok(),
            },
        };
        let claim = Claim { guard, session: Arc::downgrade(self), key: key.to_owned() };
        claim.guard.is_some().then_some(claim)
    }
}

impl Drop for SessionCore {
    fn drop(&mut self) {
        self.close();
    }
}

/// An in-process claim on (shared session, key). Dropping it lets the next local waiter in.
pub(crate) struct Claim {
    guard: Option<OwnedMutexGuard<()>>,
    session: Weak<SessionCore>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Some(s) = self.session.upgrade() {
            let mut claims = lock(&s.claims);
            // Only the map's own reference left: nobody holds or waits; forget the key.
            if claims.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
                claims.remove(&self.key);
            }
        }
    }
}

/// Renew every TTL/2 (jittered) from creation on, while waiting too. A failed renewal is retried
/// quickly until the lease deadline; past it, or on 404, the session is lost.
async fn renew_loop(weak: Weak<SessionCore>) {
    let mut next = {
        let Some(s) = weak.upgrade() else { return };
        renew_period(s.ttl())
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        tokio::time::sleep(next).await;
        let Some(s) = weak.upgrade() else { return };
        let now = Instant::now();
        let lost_at = s.lost_at();
        if now >= lost_at {
            s.mark_lost(Loss::Deadline, "no successful renewal within the TTL");
            return;
        }
        let timeout = (lost_at - now).min(s.client.request_timeout());
        let result = s.client.session_renew(&s.id, timeout).await;
        metrics::renewal(&result);
        match result {
            Ok(Renewed::Ok { ttl }) => {
                s.renewed(now, ttl);
                backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
                next = renew_period(s.ttl());
            }
            Ok(Renewed::Gone) => {
                s.mark_lost(Loss::Renew404, "renew answered 404: the session no longer exists");
                return;
            }
            Err(e) if e.is_retryable() => {
                let left = s.lost_at().saturating_duration_since(Instant::now());
                tracing::warn!(session = %s.id, error = %e, ?left, "session renewal failed; retrying");
                next = backoff.next_delay().min(left);
            }
            Err(e) => {
                s.mark_lost(Loss::RenewRefused, &format!("renewal refused: {e}"));
                return;
            }
        }
    }
}

/// One blocking query on `/v1/session/info/<id>` for the whole session.
async fn watch_loop(weak: Weak<SessionCore>) {
    let mut index = 0u64;
    let mut backoff = Backoff::requests();
    loop {
        let (client, id) = match weak.upgrade() {
            Some(s) => (s.client.clone(), s.id.clone()),
            None => return,
        };
        let result = client.session_exists(&id, Some((index, Duration::from_secs(300)))).await;
        let Some(s) = weak.upgrade() else { return };
        match result {
            Ok((_, false)) => {
                s.mark_lost(Loss::Watch, "session no longer exists");
                return;
            }
            Ok((idx, true)) => {
                let unchanged = idx == index;
                index = if idx < index { 0 } else { idx };
                if unchanged {
                    // Rate-limit a churning index.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// A poisoned std mutex only means another thread panicked while holding it; the data (plain
/// values) is still consistent, so keep going rather than panic in a lock library.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One Consul session shared by many locks: renewed once for all of them, so a lock cycle costs only
/// the acquire and the owner-checked delete (2 writes instead of 4).
///
/// Losing the session loses every lock taken through it, and each guard reports it. Two locks on the
/// same key through one `Session` never both hold it: the second waits in-process like any other
/// contender.
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
    /// [`Error::InvalidConfig`] for a TTL out of range (before any request); transport and Consul
    /// errors otherwise.
    ///
    /// # Cancel safety
    /// If the future is dropped while the create request is in flight, the session (if created) is
    /// destroyed in the background once the answer arrives.
    pub async fn new(client: Client, ttl: Duration) -> Result<Session> {
        Self::with_lock_delay(client, ttl, crate::lock::DEFAULT_LOCK_DELAY).await
    }

    /// Like [`Session::new`] with an explicit lock-delay (`0 ..= 60 s`).
    ///
    /// # Errors
    /// As [`Session::new`]; lock-delay out of range is [`Error::InvalidConfig`].
    pub async fn with_lock_delay(client: Client, ttl: Duration, lock_delay: Duration) -> Result<Session> {
        crate::lock::validate_ttl(ttl)?;
        crate::lock::validate_lock_delay(lock_delay)?;
        let spec = SessionSpec { name: "consul-lock shared".into(), ttl, lock_delay, node_checks: false };
        // Own the request's outcome in a task so that a dropped future cannot leak the session.
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + client.request_timeout();
            SessionCore::create(&client, &spec, deadline).await
        });
        let core = task.await.map_err(|e| Error::InvalidConfig(format!("session task failed: {e}")))??;
        Ok(Session { core })
    }

    /// A lock on `key` bound to this session: same builder and methods as
    /// [`EphemeralLock::new`]. Its `ttl`, `lock_delay` and `session_name` are the session's.
    pub fn lock(&self, key: impl Into<String>) -> EphemeralLock {
        EphemeralLock::bound(key.into(), self.core.clone())
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
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) {
        self.core.wait_lost(true).await
    }

    /// Destroy the session now: every lock taken through it is released by Consul (with the
    /// session's lock-delay) and reported lost by its guard.
    ///
    /// # Errors
    /// Transport and Consul errors (the destroy is then retried in the background).
    pub async fn destroy(self) -> Result<()> {
        let deadline = Instant::now() + self.core.client.request_timeout();
        let r = self.core.destroy_now(deadline).await;
        let _ = self.core.lost.send_replace(true);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_counts_from_the_renewal_sent() {
        let t0 = Instant::now();
        assert_eq!(lease_deadline(t0, Duration::from_secs(15)), t0 + Duration::from_secs(15));
    }

    #[test]
    fn renew_period_is_half_ttl_jittered_down() {
        for _ in 0..200 {
            let p = renew_period(Duration::from_secs(10));
            assert!(p <= Duration::from_secs(5) && p >= Duration::from_millis(4500), "{p:?}");
        }
    }
}
