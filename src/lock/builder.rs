//! `EphemeralLock`: the builder, its validation, and the public methods. The acquire procedure
//! itself is in `acquire`; a held lock is a `Hold` behind a [`LockGuard`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::endpoints;
use crate::consul::key::{self, MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES};
use crate::error::{Error, Result};
use crate::holder::HolderInfo;
use crate::lock::acquire::{self, Plan};
use crate::lock::guard::LockGuard;
use crate::primitive::hold::Hold;
use crate::primitive::holding::{holding_methods, Holding};
use crate::primitive::settings::{settings_setters, Settings};
use crate::session::lifecycle::SessionCore;
use crate::session::shared::Session;

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
    settings: Settings,
    max_hold: Option<Duration>,
    held: Holding<Hold>,
    fair: bool,
}

impl EphemeralLock {
    /// A lock on `key` with the defaults: client from the environment, TTL 15 s, acquire timeout
    /// 500 ms, lock-delay 15 s, no `max_hold`, holder-info JSON as value. Never fails: invalid
    /// settings are reported as [`Error::InvalidConfig`] by the first call, before any request.
    pub fn new(key: impl Into<String>) -> Self {
        Self::with_settings(key.into(), Settings::default())
    }

    /// A lock on `key` with these settings (a lock bound to a shared session, an election's).
    pub(crate) fn with_settings(key: String, settings: Settings) -> Self {
        EphemeralLock { key, settings, max_hold: None, held: Holding::default(), fair: false }
    }

    fn bound(key: String, session: &Arc<SessionCore>) -> Self {
        Self::with_settings(key, Settings::bound(session))
    }

    settings_setters! {
        /// The Consul client to use. Default: [`Client::from_env`], built at the first call.
        client(Client) => set_client;
        /// Session TTL, `10 s ..= 86400 s`. Renewed every TTL/2 while waiting and holding; a holder that
        /// cannot renew for a TTL considers the lock lost. Default 15 s.
        ttl(Duration) => set_ttl;
        /// How long `hold`/`acquire` wait while someone else holds the key. `Duration::ZERO` makes one
        /// attempt and does not wait: with its own session it reads the key first, so a key held by
        /// another costs that one read (no session is made) and a free one a read more than a waiting
        /// acquire. `Duration::MAX` waits forever. Default 500 ms.
        acquire_timeout(Duration) => set_acquire_timeout;
        /// Consul's lock-delay, `0 ..= 60 s`: after a holder's session is invalidated (expired,
        /// destroyed) while holding, nobody can take the key for this long. A normal release never
        /// triggers it. Zero also makes release one write. Default 15 s.
        lock_delay(Duration) => set_lock_delay;
        /// The value written into the key while held (≤ ~383 KiB, see [`MAX_TXN_BODY_BYTES`]).
        /// Default: JSON [`HolderInfo`] (hostname, pid, acquired-at, session name, crate version).
        value(Vec<u8>) => set_value;
        /// The session's name, shown by `consul` tooling. Default `consul-lock: <key>`.
        session_name(String) => set_session_name;
        /// Tie the session to the agent node's health (`serfHealth`) as well as its TTL. Default
        /// `false`: the lock lives and dies with this process's renewals only.
        node_health_checks(bool) => set_node_checks;
    }

    /// Hold for at most this long: at that time the library releases the key and the guard reports
    /// lost. Default: no limit.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// Strict FIFO. Waiters always queue by arrival (`CreateIndex` of an entry under
    /// `<key>/.consul-lock-queue/<session>`, held by the waiter's session) and each watches only its
    /// predecessor, so a release wakes one waiter.
    ///
    /// The default mode (`false`) does the same once it finds the key held — it is herd-free too —
    /// but tries the key first, so an uncontended acquire writes nothing extra, and a newcomer that
    /// finds the key free between a release and the next waiter's attempt may take it (once: at its
    /// release it sees the queue and queues behind it next time). `fair(true)` queues before the
    /// first attempt as well: one more write per acquisition, and nobody ever overtakes a waiter.
    /// Modes can be mixed on one key; exclusion never depends on them. Default `false`.
    pub fn fair(mut self, yes: bool) -> Self {
        self.fair = yes;
        self
    }

    /// The key this lock is for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token while held (see [`LockGuard::fencing_token`]); `None` otherwise.
    pub fn fencing_token(&self) -> Option<u64> {
        self.held.held().map(|h| h.token)
    }

    /// The hold behind this value, if any (for the blocking mirror).
    pub(crate) fn current_hold(&self) -> Option<Arc<Hold>> {
        self.held.current()
    }

    holding_methods! {
        guard: LockGuard { hold }, procedure: acquire::run, wanted: key;
        /// `true` while this lock holds its key (see [`LockGuard::is_held`]).
        is_held;
        /// Resolves when the lock held by this value is known lost (see [`LockGuard::lost`]);
        /// at once when it holds nothing. Infallible: loss is a state, not an error.
        ///
        /// # Cancel safety
        /// Cancel safe: dropping the future changes nothing.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut lock = consul_lock::EphemeralLock::new("jobs/42");
        /// if lock.acquire(false).await? {
        ///     tokio::select! {
        ///         _ = lock.lost() => eprintln!("lost the lock: stop"),
        ///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        ///     }
        ///     lock.release().await?;
        /// }
        /// # Ok(()) }
        /// ```
        lost;
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
        hold;
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
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// use std::time::Duration;
        /// let mut lock = consul_lock::EphemeralLock::new("jobs/42").acquire_timeout(Duration::ZERO);
        /// if lock.acquire(false).await? {
        ///     // … only one process in the fleet gets here at a time …
        ///     lock.release().await?;
        /// } else {
        ///     eprintln!("someone else is doing job 42");
        /// }
        /// # Ok(()) }
        /// ```
        acquire;
        /// Release the key if held: owner-checked delete, then the session is destroyed (in the
        /// background). No-op when not held; `Ok(())` for a lost lock after cleaning up.
        ///
        /// # Errors
        /// Transport or Consul errors after retrying (the session still expires or is destroyed).
        ///
        /// # Cancel safety
        /// If the future is dropped the release completes in the background.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut lock = consul_lock::EphemeralLock::new("jobs/42");
        /// lock.acquire(true).await?;
        /// lock.release().await?;
        /// lock.release().await?; // not held any more: a no-op
        /// # Ok(()) }
        /// ```
        release;
    }

    /// Acquire (failing hard), run `fut`, release. If the lock is lost meanwhile, `fut` is dropped
    /// and the result is [`Error::LockLost`].
    ///
    /// # Errors
    /// As [`hold`](Self::hold); [`Error::LockLost`]; release errors.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut` and releases the lock in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn rotate() {}
    /// # async fn demo() -> consul_lock::Result<()> {
    /// match consul_lock::EphemeralLock::new("rotate/key").run(rotate()).await {
    ///     Ok(()) => {}
    ///     Err(e) if e.is_lost() => eprintln!("lost the lock mid-rotation; the rotation was stopped"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
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
        let spec = self.settings.session_spec("lock", format!("consul-lock: {}", self.key))?;
        if self.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig("max_hold must be greater than zero".into()));
        }
        let value = self.settings.value.clone();
        check_value_fits(&self.key, value.as_deref(), &spec.name)?;
        Ok(Plan {
            client: self.settings.client()?,
            key: self.key.clone(),
            value,
            spec,
            acquire_timeout: self.settings.acquire_timeout,
            max_hold: self.max_hold,
            shared: self.settings.shared(),
            fair: self.fair,
        })
    }
}

/// A lock's value (ours, or the default holder info) must fit in a key and, base64-encoded, in the
/// lock transaction.
fn check_value_fits(key: &str, value: Option<&[u8]>, session_name: &str) -> Result<()> {
    let value_len = match value {
        Some(v) => v.len(),
        None => HolderInfo::current(Some(session_name)).to_json().len(),
    };
    if value_len > MAX_VALUE_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {value_len} bytes; Consul stores at most {MAX_VALUE_BYTES} bytes in a key"
        )));
    }
    let expect = endpoints::Expect::Unchanged(u64::MAX); // the longer of the two guards
    let body_len = endpoints::lock_txn_body(key, &vec![0; value_len], SESSION_ID_SHAPE, expect).len();
    if body_len > MAX_TXN_BODY_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {value_len} bytes: base64-encoded in the lock transaction it needs {body_len} bytes, \
             over Consul's {MAX_TXN_BODY_BYTES}-byte transaction limit (about 383 KiB of value fit)"
        )));
    }
    Ok(())
}

impl Session {
    /// A lock on `key` bound to this session: the same builder and methods as
    /// [`EphemeralLock::new`], at two Consul writes per cycle (acquire, owner-checked delete).
    ///
    /// The session's settings are the session's: on a bound lock, `ttl`, `lock_delay`,
    /// `session_name` and `node_health_checks` are rejected with [`Error::InvalidConfig`] by the
    /// first call, before any request. (One type rather than two keeps code that takes locks
    /// generic over where their session comes from, and keeps `Session::lock` returning the
    /// `EphemeralLock` that the rest of the API — `run`, `acquire`, the blocking mirror — expects.)
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) -> consul_lock::Result<()> {
    /// use std::time::Duration;
    /// let guard = session.lock("jobs/7").acquire_timeout(Duration::from_secs(2)).hold().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, key: impl Into<String>) -> EphemeralLock {
        EphemeralLock::bound(key.into(), &self.core)
    }
}
