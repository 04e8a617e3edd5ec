//! `EphemeralLock`: the builder, its validation, and the acquire procedure
//! (session → `lock` transaction → blocking-query wait → retry), run in a task that owns every
//! request's outcome so that a dropped future never leaves anything behind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::api::{self, LockAttempt, SessionSpec};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::hold::Hold;
use crate::holder::{HolderInfo, KvEntry};
use crate::key::{self, MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES};
use crate::metrics::{self, Loss};
use crate::queue;
use crate::retry::{self, Backoff};
use crate::session::SessionCore;

/// Default time `hold`/`acquire` wait for a held key: 500 ms.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
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

/// Give up after this many fresh sessions in a row are refused as invalid at their first attempt.
const MAX_FRESH_INVALID_SESSIONS: u32 = 3;
/// Longest single blocking query while waiting (as Go's client). A cancelled wait cannot stop the
/// agent's side of its query, which keeps one of the agent's connections per client IP (200 by
/// default) busy until the wait ends: short waits bound that. (The fair queue's waits too.)
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(15);
/// A stand-in session ID of the real length, to size the lock transaction before we have one.
const SESSION_ID_SHAPE: &str = "00000000-0000-0000-0000-000000000000";

/// A lock on one Consul KV key, held through a Consul session (see the [crate docs](crate)).
///
/// Build it with [`EphemeralLock::new`] and the setters, then take it with [`hold`](Self::hold)
/// (a guard that releases on drop), [`acquire`](Self::acquire) (a `bool`), or [`run`](Self::run)
/// (a future run under the lock). After a release the same value may acquire again, with a new
/// session; it is never re-entrant.
///
/// ```no_run
/// use consul_lock::EphemeralLock;
/// use std::time::Duration;
///
/// # async fn demo() -> consul_lock::Result<()> {
/// let mut lock = EphemeralLock::new("jobs/42")
///     .ttl(Duration::from_secs(15))
///     .acquire_timeout(Duration::from_millis(500));
/// if lock.acquire(false).await? {
///     // critical section; lock.fencing_token() is Some(token)
///     lock.release().await?;
/// }
/// # Ok(()) }
/// ```
///
/// # Drop
/// Dropping a lock that holds its key releases it in the background, like [`LockGuard`].
#[derive(Debug)]
pub struct EphemeralLock {
    key: String,
    client: Option<Client>,
    ttl: Duration,
    acquire_timeout: Duration,
    lock_delay: Duration,
    max_hold: Option<Duration>,
    value: Option<Vec<u8>>,
    session_name: Option<String>,
    node_checks: bool,
    /// Bound to a shared session (from [`Session::lock`](crate::Session::lock)).
    shared: Option<Arc<SessionCore>>,
    /// Settings that belong to the session, set on a lock bound to a shared one.
    session_setting_on_shared: Option<&'static str>,
    held: Option<Arc<Hold>>,
    fair: bool,
}

/// Everything an acquire needs, validated.
struct Plan {
    client: Client,
    key: String,
    value: Option<Vec<u8>>,
    spec: SessionSpec,
    acquire_timeout: Duration,
    max_hold: Option<Duration>,
    shared: Option<Arc<SessionCore>>,
    fair: bool,
}

impl EphemeralLock {
    /// A lock on `key` with the defaults: client from the environment, TTL 15 s, acquire timeout
    /// 500 ms, lock-delay 15 s, no `max_hold`, holder-info JSON as value. Never fails: invalid
    /// settings are reported as [`Error::InvalidConfig`] by the first call, before any request.
    pub fn new(key: impl Into<String>) -> Self {
        EphemeralLock {
            key: key.into(),
            client: None,
            ttl: DEFAULT_TTL,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            lock_delay: DEFAULT_LOCK_DELAY,
            max_hold: None,
            value: None,
            session_name: None,
            node_checks: false,
            shared: None,
            session_setting_on_shared: None,
            held: None,
            fair: false,
        }
    }

    pub(crate) fn bound(key: String, session: Arc<SessionCore>) -> Self {
        let mut lock = Self::new(key).client(session.client.clone());
        lock.shared = Some(session);
        lock
    }

    fn session_setting(mut self, name: &'static str) -> Self {
        if self.shared.is_some() {
            self.session_setting_on_shared = Some(name);
        }
        self
    }

    /// The Consul client to use. Default: [`Client::from_env`], built at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Session TTL, `10 s ..= 86400 s`. Renewed every TTL/2 while waiting and holding; a holder that
    /// cannot renew for a TTL considers the lock lost. Default 15 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.session_setting("ttl")
    }

    /// How long `hold`/`acquire` wait while someone else holds the key. `Duration::ZERO` makes one
    /// attempt and does not wait; `Duration::MAX` waits forever. Default 500 ms.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Consul's lock-delay, `0 ..= 60 s`: after a holder's session is invalidated (expired,
    /// destroyed) while holding, nobody can take the key for this long. A normal release never
    /// triggers it. Zero also makes release one write. Default 15 s.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self.session_setting("lock_delay")
    }

    /// Hold for at most this long: at that time the library releases the key and the guard reports
    /// lost. Default: no limit.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// The value written into the key while held (≤ ~383 KiB, see [`MAX_TXN_BODY_BYTES`]).
    /// Default: JSON [`HolderInfo`] (hostname, pid, acquired-at, session name, crate version).
    pub fn value(mut self, value: Vec<u8>) -> Self {
        self.value = Some(value);
        self
    }

    /// The session's name, shown by `consul` tooling. Default `consul-lock: <key>`.
    pub fn session_name(mut self, name: String) -> Self {
        self.session_name = Some(name);
        self.session_setting("session_name")
    }

    /// Fair mode: waiters queue by arrival (`CreateIndex` of an entry under
    /// `<key>/.consul-lock-queue/<session>`, held by the waiter's session) and each watches only its
    /// predecessor, so a release wakes one waiter instead of all of them and turns go first come,
    /// first served. Costs one more write per acquisition (the queue entry; its delete rides in the
    /// release transaction) and lets no newcomer overtake a waiter. Every contender of a key should
    /// use the same mode: a non-fair contender can still take the key between two fair holders.
    /// Default `false`.
    pub fn fair(mut self, yes: bool) -> Self {
        self.fair = yes;
        self
    }

    /// Tie the session to the agent node's health (`serfHealth`) as well as its TTL. Default
    /// `false`: the lock lives and dies with this process's renewals only.
    pub fn node_health_checks(mut self, yes: bool) -> Self {
        self.node_checks = yes;
        self.session_setting("node_health_checks")
    }

    /// The key this lock is for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `true` while this lock holds its key (see [`LockGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.is_held())
    }

    /// The fencing token while held (see [`LockGuard::fencing_token`]); `None` otherwise.
    pub fn fencing_token(&self) -> Option<u64> {
        self.held.as_ref().filter(|h| h.is_held()).map(|h| h.token)
    }

    /// Resolves when the lock held by this value is known lost (see [`LockGuard::lost`]);
    /// at once when it holds nothing.
    pub async fn lost(&self) {
        if let Some(h) = &self.held {
            h.wait_lost().await
        }
    }

    /// Take the lock, waiting up to the acquire timeout; a guard that releases on drop.
    ///
    /// # Errors
    /// [`Error::NotAcquired`] (naming the holder when known) if someone else held the key for the
    /// whole timeout; [`Error::InvalidConfig`] before any request for bad settings;
    /// [`Error::Transport`] (naming the address) if Consul did not answer by the deadline;
    /// [`Error::PermissionDenied`] / [`Error::Consul`] for refusals.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future at any point leaves no key held, no session and no renewal
    /// task behind. The work runs in a task that owns each request's outcome; when the future is
    /// gone it stops waiting, and it releases or destroys whatever a request in flight created.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::EphemeralLock::new("my/key").hold().await?;
    /// println!("token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn hold(mut self) -> Result<LockGuard> {
        if self.held.is_some() {
            return Err(Error::AlreadyHeld);
        }
        let plan = self.plan()?;
        match run_acquire(plan, true).await? {
            Some(hold) => Ok(LockGuard { hold }),
            None => unreachable_not_acquired(&self.key),
        }
    }

    /// Take the lock, waiting up to the acquire timeout. `Ok(true)`: held (release with
    /// [`release`](Self::release) or by dropping this value). On timeout, `Ok(false)` when
    /// `fail_hard` is false, [`Error::NotAcquired`] when it is true.
    ///
    /// # Errors
    /// As [`hold`](Self::hold), plus [`Error::AlreadyHeld`] when this value already holds its key
    /// (locks are not re-entrant). Consul failing is always an error, never `Ok(false)`.
    ///
    /// # Cancel safety
    /// As [`hold`](Self::hold): dropping the future leaves nothing behind.
    pub async fn acquire(&mut self, fail_hard: bool) -> Result<bool> {
        if self.held.as_ref().is_some_and(|h| h.is_held()) {
            return Err(Error::AlreadyHeld);
        }
        // A lost hold left over: finish its cleanup (never touches another holder's key).
        if let Some(old) = self.held.take() {
            old.release().await?;
        }
        let plan = self.plan()?;
        match run_acquire(plan, fail_hard).await? {
            Some(hold) => {
                self.held = Some(hold);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Release the key if held: owner-checked delete, then the session is destroyed (in the
    /// background). No-op when not held; `Ok(())` for a lost lock after cleaning up.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying (the session still expires or is destroyed).
    ///
    /// # Cancel safety
    /// If the future is dropped the release completes in the background.
    pub async fn release(&mut self) -> Result<()> {
        match self.held.take() {
            Some(hold) => LockGuard { hold }.release().await,
            None => Ok(()),
        }
    }

    /// Acquire (failing hard), run `fut`, release. If the lock is lost meanwhile, `fut` is dropped
    /// and the result is [`Error::LockLost`].
    ///
    /// # Errors
    /// As [`hold`](Self::hold); [`Error::LockLost`]; release errors.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut` and releases the lock in the background.
    pub async fn run<F: Future>(self, fut: F) -> Result<F::Output> {
        let key = self.key.clone();
        let guard = self.hold().await?;
        tokio::select! {
            out = fut => {
                if guard.is_held() {
                    guard.release().await?;
                    Ok(out)
                } else {
                    guard.release().await?;
                    Err(Error::LockLost { key })
                }
            }
            _ = guard.lost() => {
                guard.release().await?;
                Err(Error::LockLost { key })
            }
        }
    }

    /// Validate everything before any request.
    fn plan(&mut self) -> Result<Plan> {
        key::validate(&self.key)?;
        if let Some(setting) = self.session_setting_on_shared {
            return Err(Error::InvalidConfig(format!(
                "`{setting}` belongs to the shared Session this lock is bound to; set it on the Session"
            )));
        }
        validate_ttl(self.ttl)?;
        validate_lock_delay(self.lock_delay)?;
        if self.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig("max_hold must be greater than zero".into()));
        }
        let session_name = self.session_name.clone().unwrap_or_else(|| format!("consul-lock: {}", self.key));
        if session_name.len() > 1024 || session_name.chars().any(char::is_control) {
            return Err(Error::InvalidConfig("session_name: at most 1024 bytes, no control characters".into()));
        }
        let value_len = match &self.value {
            Some(v) => v.len(),
            None => HolderInfo::current(Some(&session_name)).to_json().len(),
        };
        if value_len > MAX_VALUE_BYTES {
            return Err(Error::InvalidConfig(format!(
                "value is {value_len} bytes; Consul stores at most {MAX_VALUE_BYTES} bytes in a key"
            )));
        }
        let body_len = api::lock_txn_body(&self.key, &vec![0; value_len], SESSION_ID_SHAPE).len();
        if body_len > MAX_TXN_BODY_BYTES {
            return Err(Error::InvalidConfig(format!(
                "value is {value_len} bytes: base64-encoded in the lock transaction it needs {body_len} bytes, \
                 over Consul's {MAX_TXN_BODY_BYTES}-byte transaction limit (about 383 KiB of value fit)"
            )));
        }
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Client::from_env()?;
                self.client = Some(c.clone());
                c
            }
        };
        Ok(Plan {
            client,
            key: self.key.clone(),
            value: self.value.clone(),
            spec: SessionSpec {
                name: session_name,
                ttl: self.ttl,
                lock_delay: self.lock_delay,
                node_checks: self.node_checks,
            },
            acquire_timeout: self.acquire_timeout,
            max_hold: self.max_hold,
            shared: self.shared.clone(),
            fair: self.fair,
        })
    }
}

fn unreachable_not_acquired(key: &str) -> Result<LockGuard> {
    // run_acquire(fail_hard = true) never returns Ok(None); keep a typed error rather than a panic.
    Err(Error::NotAcquired { key: key.to_owned(), waited: Duration::ZERO, holder: None })
}

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

/// Run the acquire procedure in its own task. `Ok(None)`: not acquired and `!fail_hard`.
async fn run_acquire(plan: Plan, fail_hard: bool) -> Result<Option<Arc<Hold>>> {
    let wait = metrics::AcquireWait::start(&plan.client, &plan.key);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = tx;
        let result = acquire_task(plan, fail_hard, &mut tx).await;
        // If the caller is gone, the value comes back here and its drop releases the lock.
        let _ = tx.send(result);
    });
    let result = rx.await.unwrap_or_else(|_| {
        Err(Error::InvalidConfig("the acquire task was stopped: is the tokio runtime shutting down?".into()))
    });
    wait.finish(&result);
    result
}

/// What the waiter last saw, for the error at the deadline.
enum Seen {
    Nothing,
    Holder(KvEntry),
}

/// Wait for `fut` unless the caller went away. `None`: cancelled.
async fn unless_cancelled<F: Future>(tx: &mut oneshot::Sender<Result<Option<Arc<Hold>>>>, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = tx.closed() => None,
        out = fut => Some(out),
    }
}

type Reply = Result<Option<Arc<Hold>>>;

#[tracing::instrument(level = "debug", skip_all, fields(key = %plan.key))]
async fn acquire_task(plan: Plan, fail_hard: bool, tx: &mut oneshot::Sender<Reply>) -> Reply {
    let client = &plan.client;
    let start = Instant::now();
    // `None`: wait forever.
    let deadline = start.checked_add(plan.acquire_timeout);
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    // Writes get at least one attempt even with a zero timeout.
    let retry_until = |d: Option<Instant>| d.unwrap_or_else(far).max(Instant::now());
    let cancelled = || Err(Error::InvalidConfig("acquire cancelled".into()));
    let not_acquired = |seen: Seen| -> Reply {
        if !fail_hard {
            return Ok(None);
        }
        let holder = match seen {
            Seen::Holder(e) => e.into_holder().ok().flatten().map(Box::new),
            Seen::Nothing => None,
        };
        Err(Error::NotAcquired { key: plan.key.clone(), waited: start.elapsed(), holder })
    };

    let claim = match &plan.shared {
        None => None,
        Some(s) => match unless_cancelled(tx, s.claim(&plan.key, deadline)).await {
            None => return cancelled(),
            Some(Some(c)) => Some(c),
            Some(None) => {
                let seen = holder_entry(client, &plan.key, fail_hard).await;
                return not_acquired(seen);
            }
        },
    };

    let mut session: Option<Arc<SessionCore>> = plan.shared.clone();
    let mut delay_backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    // Lock attempts on the current session, and how many sessions in a row were refused as invalid at
    // their very first attempt (a permanent server problem, not an expiry during a wait).
    let mut attempts_on_session = 0u32;
    let mut fresh_invalid = 0u32;
    let mut seen = Seen::Nothing;
    // Fair mode: our place in the key's queue (deleted in the background if we give up).
    let mut place: Option<queue::Place> = None;
    loop {
        // 1. A live session (created here, renewed from now on, while we wait too).
        let s = match &session {
            Some(s) if !s.is_lost() => s.clone(),
            Some(_) if plan.shared.is_some() => return Err(Error::LockLost { key: plan.key.clone() }),
            _ => {
                let created = SessionCore::create(client, &plan.spec, retry_until(deadline)).await?;
                session = Some(created.clone());
                attempts_on_session = 0;
                if tx.is_closed() {
                    return cancelled(); // dropping `created` destroys it
                }
                created
            }
        };

        // 1b. Fair mode: queue, and wait until nobody is ahead of us. A refused queue entry means our
        // session is invalid: handled below exactly like a refused lock attempt.
        let mut refused = false;
        if plan.fair {
            if place.as_ref().is_none_or(|p| p.sid() != s.id) {
                match queue::Place::enqueue(client, &plan.key, &s.id, retry_until(deadline)).await? {
                    Some(p) => place = Some(p),
                    None => refused = true,
                }
            }
            if let (false, Some(p)) = (refused, place.as_mut()) {
                match unless_cancelled(tx, p.wait_turn(deadline)).await {
                    None => return cancelled(),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) => return not_acquired(holder_entry(client, &plan.key, fail_hard).await),
                    Some(Ok(Some(false))) => {
                        place = None; // our entry is gone: enqueue again
                        continue;
                    }
                    Some(Ok(Some(true))) => {}
                }
            }
        }

        // 2. One lock attempt: a `lock` transaction returns the fencing token with the write.
        let attempt = if refused {
            LockAttempt::InvalidSession
        } else {
            let value = plan.value.clone().unwrap_or_else(|| HolderInfo::current(Some(&plan.spec.name)).to_json());
            let body = api::lock_txn_body(&plan.key, &value, &s.id);
            retry::until(retry_until(deadline), || client.txn_lock(body.clone())).await?
        };
        attempts_on_session += 1;
        match attempt {
            LockAttempt::Acquired { modify_index } => {
                tracing::debug!(session = %s.id, token = modify_index, "acquired");
                let own = plan.shared.is_none();
                let hold = Hold::new(plan.key.clone(), s, own, modify_index, claim, plan.max_hold);
                hold.set_queue_entry(place.take().map(queue::Place::disarm));
                return Ok(Some(hold));
            }
            LockAttempt::InvalidSession => {
                s.mark_lost(Loss::InvalidSession, "Consul says the session is invalid");
                if plan.shared.is_some() {
                    return Err(Error::LockLost { key: plan.key.clone() });
                }
                fresh_invalid = if attempts_on_session == 1 { fresh_invalid + 1 } else { 0 };
                if fresh_invalid >= MAX_FRESH_INVALID_SESSIONS || past(deadline) {
                    // Never held, so not "lost": Consul keeps refusing our sessions.
                    return Err(Error::Consul {
                        address: client.address().to_owned(),
                        status: 500,
                        message: format!(
                            "invalid session: Consul invalidated our session before the lock could be taken \
                             ({fresh_invalid} new sessions refused in a row)"
                        ),
                    });
                }
                // Pace the re-creation (never past the deadline).
                let pause = time_left(deadline).map_or(Duration::ZERO, |left| delay_backoff.next_delay().min(left));
                if unless_cancelled(tx, tokio::time::sleep(pause)).await.is_none() {
                    return cancelled();
                }
                continue;
            }
            LockAttempt::LockDelay => {
                // Free but in its lock-delay: retry soon (jittered), never past the deadline.
                let Some(pause) = time_left(deadline).map(|left| delay_backoff.next_delay().min(left)) else {
                    return not_acquired(holder_entry(client, &plan.key, fail_hard).await);
                };
                if unless_cancelled(tx, tokio::time::sleep(pause)).await.is_none() {
                    return cancelled();
                }
                continue;
            }
            // Held. In fair mode too (nobody queued ahead of us, yet held by a holder outside the
            // queue, or by one queued ahead of a predecessor that left): wait on the key below,
            // then back to the queue at the top.
            LockAttempt::Held => {}
        }
        if tx.is_closed() {
            return cancelled();
        }

        // 3. Held by someone else: wait for a change with blocking queries, not polling.
        let mut index = 0u64;
        let mut read_backoff = Backoff::requests();
        loop {
            let Some(left) = time_left(deadline) else {
                return match seen {
                    Seen::Nothing => not_acquired(holder_entry(client, &plan.key, fail_hard).await),
                    seen => not_acquired(seen),
                };
            };
            let block = (index > 0).then(|| (index, left.min(MAX_BLOCK)));
            let read = client.kv_get(&plan.key, block);
            let read = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, read).await.ok(),
                    None => Some(read.await),
                }
            };
            let result = match unless_cancelled(tx, read).await {
                None => return cancelled(),
                Some(None) => continue, // deadline reached mid-query: decided at the top
                Some(Some(r)) => r,
            };
            let (idx, entry) = match result {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    let pause = read_backoff.next_delay();
                    match time_left(deadline) {
                        Some(left) if left > pause => {
                            if unless_cancelled(tx, tokio::time::sleep(pause)).await.is_none() {
                                return cancelled();
                            }
                            continue;
                        }
                        // No answer from Consul by the deadline: that is an error, not "held".
                        _ => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let unchanged = idx == index;
            // Reset the index if it goes backwards (Consul restarted or snapshot restored).
            index = if idx < index { 0 } else { idx };
            match entry {
                Some(e) if e.holder_session().is_some_and(|h| h != s.id) => {
                    seen = Seen::Holder(e);
                    if unchanged && block.is_some() {
                        // The query returned without a change (wait elapsed, or churn): pace it.
                        let pause = Duration::from_millis(20);
                        if unless_cancelled(tx, tokio::time::sleep(pause)).await.is_none() {
                            return cancelled();
                        }
                    }
                }
                _ => break, // free (or ours): try again
            }
            if s.is_lost() && plan.shared.is_none() {
                break; // our waiting session died: make a new one
            }
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Time left before the deadline; `None` when it has passed (less than 1 ms left).
fn time_left(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(MAX_BLOCK),
        Some(d) => Some(d.saturating_duration_since(Instant::now())).filter(|l| *l >= Duration::from_millis(1)),
    }
}

/// Who holds the key, for the NotAcquired error (only worth a request when the error is returned).
async fn holder_entry(client: &Client, key: &str, fail_hard: bool) -> Seen {
    if !fail_hard {
        return Seen::Nothing;
    }
    match client.kv_get(key, None).await {
        Ok((_, Some(e))) => Seen::Holder(e),
        _ => Seen::Nothing,
    }
}
