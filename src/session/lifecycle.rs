//! Consul sessions: their settings and validation, creation, the renewal task, the local lease
//! deadline, loss, and destruction.
//!
//! A lock is only as alive as its session. `SessionCore` is shared (through `Arc`) by whoever needs
//! the session: an acquire in progress, held locks, or a user's shared
//! [`Session`](crate::Session). The renewal task only holds a `Weak`, so the session is closed
//! (renewal stopped, destroyed in the background) as soon as its last user is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::{Renewed, SessionSpec};
use crate::consul::retry::{self, Backoff};
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::metrics::{self, Loss};
use crate::mutex::lock;

/// Default session TTL: 15 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// Default lock-delay: 15 s, Consul's own default.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Shortest session TTL Consul accepts.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Longest session TTL Consul accepts.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Longest lock-delay Consul honours (it silently clamps larger values; we reject them).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

pub(crate) fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(Error::InvalidConfig(format!("ttl {ttl:?} is out of range: Consul accepts 10 s ..= 86400 s")));
    }
    Ok(())
}

pub(crate) fn validate_lock_delay(d: Duration) -> Result<()> {
    if d > MAX_LOCK_DELAY {
        return Err(Error::InvalidConfig(format!(
            "lock_delay {d:?} is out of range: 0 ..= 60 s (Consul silently clamps larger values)"
        )));
    }
    Ok(())
}

/// The longest session name Consul accepts, in bytes.
pub(crate) const MAX_SESSION_NAME_BYTES: usize = 1024;

/// A session's name: at most 1024 bytes, no control characters.
pub(crate) fn validate_session_name(name: &str) -> Result<()> {
    if name.len() > MAX_SESSION_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(Error::InvalidConfig("session_name: at most 1024 bytes, no control characters".into()));
    }
    Ok(())
}

/// Validate every setting of a session to be created, before any request.
pub(crate) fn validate_spec(spec: &SessionSpec) -> Result<()> {
    validate_ttl(spec.ttl)?;
    validate_lock_delay(spec.lock_delay)?;
    validate_session_name(&spec.name)
}

/// When a session renewed at `sent` (the time the successful renew request was *sent*) must be
/// assumed gone. Consul may keep it up to 2×TTL, but a client cannot rely on that: this is the
/// conservative bound (README: "A held lock can be lost").
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
    /// Wakes the renewal task early: a hold begins, or an attempt is about to, on a session whose
    /// lease is more than half spent (its renewals failed while it waited at a crowded agent).
    renew_now: Arc<tokio::sync::Notify>,
    /// Tells whoever waits for it (an attempt, in `fresh_for_hold`) that a renewal moved the lease.
    lease_renewed: tokio::sync::Notify,
    /// (key → in-process claim), so that two locks on one shared session never both "hold" a key.
    claims: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    runtime: Handle,
    pub(crate) metrics: metrics::SessionLocks,
    /// How many locks and permits this session holds now: its renewals are holder writes (on the
    /// client's holder connection) while it holds any, a waiter's otherwise.
    held: AtomicUsize,
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
            renew_now: Arc::new(tokio::sync::Notify::new()),
            lease_renewed: tokio::sync::Notify::new(),
            claims: Mutex::new(HashMap::new()),
            runtime: Handle::current(),
            metrics: metrics::SessionLocks::default(),
            held: AtomicUsize::new(0),
        });
        let renew = tokio::spawn(renew_loop(Arc::downgrade(&core)));
        core.add_task(renew.abort_handle());
        Ok(core)
    }

    /// A hold on this session begins (`true`) or ends (`false`). Through a budget of 2 or less,
    /// a hold opens the client's holder connection if it is not open (larger budgets open it with
    /// the lock attempt), before the first renewal needs it.
    pub(crate) fn holding(&self, yes: bool) {
        self.client.note_holding(yes);
        if yes {
            self.held.fetch_add(1, Ordering::SeqCst);
            if self.client.max_connections() <= 2 {
                self.client.warm_holder_connection(&self.runtime);
            }
            if self.half_spent() {
                self.renew_now.notify_one();
            }
        } else {
            let _ = self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Whether this session holds a lock or a permit now.
    pub(crate) fn is_holding(&self) -> bool {
        self.held.load(Ordering::SeqCst) > 0
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

    /// Whether less than half the TTL is left of the lease (its renewals failed for a while).
    fn half_spent(&self) -> bool {
        let lease = lock(&self.lease);
        lease.lost_at.saturating_duration_since(Instant::now()) < lease.ttl / 2
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

    /// Destroy the session now and report it lost to every holder (a user's
    /// [`Session::destroy`](crate::Session::destroy)).
    pub(crate) async fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + self.client.request_timeout();
        let r = self.destroy_now(deadline).await;
        let _ = self.lost.send_replace(true);
        r
    }

    fn renewed(&self, sent: Instant, server_ttl: Option<Duration>) {
        let mut lease = lock(&self.lease);
        if let Some(t) = server_ttl.filter(|t| *t > lease.ttl) {
            lease.ttl = t;
        }
        lease.lost_at = lease.lost_at.max(lease_deadline(sent, lease.ttl));
        drop(lease);
        self.lease_renewed.notify_waiters();
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
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        // The notifier only, never the session: this task must not keep the session alive.
        let early = match weak.upgrade() {
            Some(s) => s.renew_now.clone(),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = early.notified() => {}
        }
        let Some(s) = weak.upgrade() else { return };
        match s.renew().await {
            Renewal::Renewed => {
                backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
                next = renew_period(s.ttl());
            }
            Renewal::Failed(e) => {
                let left = s.lost_at().saturating_duration_since(Instant::now());
                tracing::warn!(session = %s.id, error = %e, ?left, "session renewal failed; retrying");
                next = backoff.next_delay().min(left);
            }
            Renewal::Ended => return,
        }
    }
}

/// What one renewal did.
enum Renewal {
    Renewed,
    /// A retryable failure: the lease runs on until its deadline.
    Failed(Error),
    /// The session is over (marked lost).
    Ended,
}

impl SessionCore {
    /// Renew once now.
    async fn renew(&self) -> Renewal {
        let now = Instant::now();
        let lost_at = self.lost_at();
        if now >= lost_at {
            self.mark_lost(Loss::Deadline, "no successful renewal within the TTL");
            return Renewal::Ended;
        }
        let timeout = (lost_at - now).min(self.client.request_timeout());
        let result = self.client.session_renew(&self.id, timeout, self.is_holding()).await;
        metrics::renewal(&result);
        match result {
            Ok(Renewed::Ok { ttl }) => {
                self.renewed(now, ttl);
                Renewal::Renewed
            }
            Ok(Renewed::Gone) => {
                self.mark_lost(Loss::Renew404, "renew answered 404: the session no longer exists");
                Renewal::Ended
            }
            Err(e) if e.is_retryable() => Renewal::Failed(e),
            Err(e) => {
                self.mark_lost(Loss::RenewRefused, &format!("renewal refused: {e}"));
                Renewal::Ended
            }
        }
    }

    /// Whether this session has lease enough to start a hold on: one more than half spent (its
    /// renewals refused while it waited at a crowded agent) is never taken into an attempt as it
    /// is, since a lock taken with a lease about to run out would be lost at once. The renewal
    /// task is woken to renew now, and retries as it always does; this waits until a renewal
    /// lands or the session is lost. `false` when it is lost (then a new session is made for the
    /// attempt).
    pub(crate) async fn fresh_for_hold(&self) -> bool {
        let mut lost = self.subscribe();
        loop {
            // Enabled before the check, so a renewal that lands in between is not missed.
            let renewed = self.lease_renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if self.is_lost() || !self.half_spent() {
                return !self.is_lost();
            }
            self.renew_now.notify_one();
            tokio::select! {
                _ = renewed => {}
                _ = lost.wait_for(|lost| *lost) => {}
                _ = tokio::time::sleep_until(self.lost_at()) => {}
            }
        }
    }
}

/// One blocking query on `/v1/session/info/<id>` for the whole session (the watch layer's rules).
async fn watch_loop(weak: Weak<SessionCore>) {
    let mut watch = match weak.upgrade() {
        Some(s) => Watch::session(&s.client, &s.id).for_holder(),
        None => return,
    };
    loop {
        let sessions = watch.follow().await;
        let Some(s) = weak.upgrade() else { return };
        if !sessions.iter().any(|e| e.id == s.id) {
            s.mark_lost(Loss::Watch, "session no longer exists");
            return;
        }
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

    /// A session on an agent of its own, its lease set to `left` from now as if its renewals had
    /// failed for a while.
    #[cfg(feature = "test-util")]
    async fn with_lease_left(dev: &crate::testing::ConsulDev, left: Duration) -> Arc<SessionCore> {
        let spec = SessionSpec {
            name: "fresh-for-hold".into(),
            ttl: Duration::from_secs(10),
            lock_delay: Duration::ZERO,
            node_checks: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let core = SessionCore::create(&dev.client(), &spec, deadline).await.expect("session created");
        lock(&core.lease).lost_at = Instant::now() + left;
        assert!(core.half_spent());
        core
    }

    #[cfg(feature = "test-util")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_starts_only_once_a_half_spent_lease_is_renewed() {
        let dev = crate::testing::ConsulDev::start().expect("consul agent -dev must start");
        let core = with_lease_left(&dev, Duration::from_secs(2)).await;
        assert!(core.fresh_for_hold().await, "renewed, so fresh");
        let left = core.lost_at().saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(8), "the lease was renewed to a full TTL: {left:?} left");
    }

    #[cfg(feature = "test-util")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_never_starts_on_a_half_spent_lease_that_cannot_be_renewed() {
        let dev = crate::testing::ConsulDev::start().expect("consul agent -dev must start");
        let core = with_lease_left(&dev, Duration::from_millis(1500)).await;
        let lost_at = core.lost_at();
        drop(dev);
        let fresh = tokio::time::timeout(Duration::from_secs(10), core.fresh_for_hold()).await;
        assert_eq!(fresh, Ok(false), "a lease that runs out is lost, not taken into an attempt");
        assert!(Instant::now() >= lost_at, "it waited for the renewal until the lease ended");
    }

    #[test]
    fn renew_period_is_half_ttl_jittered_down() {
        for _ in 0..200 {
            let p = renew_period(Duration::from_secs(10));
            assert!(p <= Duration::from_secs(5) && p >= Duration::from_millis(4500), "{p:?}");
        }
    }
}
