//! `RwLock`: the builder, its validation and the public methods (`read`, `write` and their one-shot
//! forms); [`Session::rw_lock`]; [`Client::rw_lock`] (who holds and who waits). The procedure is in
//! `acquire`, the guards in `guard`, the rules read from the keys in `layout`.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::Expect;
use crate::consul::key::{self, MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES};
use crate::consul::rwlock_txn::take_body;
use crate::error::{Error, Result};
use crate::holder::{Holder, HolderInfo, KvEntry};
use crate::primitive::settings::{settings_setters, Settings};
use crate::rwlock::acquire::{self, Held, Plan};
use crate::rwlock::guard::{ReadGuard, WriteGuard};
use crate::rwlock::layout::{self, KeyState, Mode};
use crate::session::shared::Session;

/// A stand-in session ID of the real length, to size a transaction before we have one.
const SESSION_ID_SHAPE: &str = "00000000-0000-0000-0000-000000000000";

/// A shared/exclusive lock on one Consul KV key: any number of readers at once, or one writer
/// alone (see the README, "Read-write lock", for the key layout and the protocol).
///
/// Requests are served in arrival order and without a thundering herd: a reader that arrives
/// behind a waiting writer waits for it (writers do not starve), a writer's release wakes exactly
/// the readers queued behind it, and a reader's release wakes nobody until the last reader leaves.
/// A writer can [`downgrade`](WriteGuard::downgrade) to a reader without losing its place; there is
/// no upgrade. Writers get a [`fencing_token`](WriteGuard::fencing_token) that strictly increases
/// across writers.
///
/// Build it with [`RwLock::new`] (or [`Session::rw_lock`]) and the setters, which are the lock's;
/// then take it with [`read`](Self::read) or [`write`](Self::write) as often as needed (each call
/// is one request with its own session, unless bound to a shared [`Session`]).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo() -> consul_lock::Result<()> {
/// let lock = consul_lock::RwLock::new("datasets/users").acquire_timeout(Duration::from_secs(30));
/// let reader = lock.read().await?; // alongside other readers
/// reader.release().await?;
/// let writer = lock.write().await?; // alone
/// println!("token {}", writer.fencing_token());
/// writer.release().await?;
/// # Ok(()) }
/// ```
///
/// A key that a plain lock ([`EphemeralLock`](crate::EphemeralLock), Go's `api.Lock`,
/// `consul lock`) or a semaphore uses is [`Error::Conflict`] here, and this lock's key is one for
/// them: the two never hold one key together.
#[derive(Debug)]
pub struct RwLock {
    key: String,
    settings: Settings,
    /// The client from the environment, built at the first call when none was set.
    from_env: OnceLock<Client>,
    max_hold: Option<Duration>,
}

impl RwLock {
    /// A read-write lock on `key` with the lock's defaults: client from the environment, TTL 15 s,
    /// acquire timeout 500 ms, lock-delay 15 s, no `max_hold`, holder-info JSON as each request's
    /// value. Never fails: invalid settings are [`Error::InvalidConfig`] at the first call, before
    /// any request.
    pub fn new(key: impl Into<String>) -> Self {
        RwLock { key: key.into(), settings: Settings::default(), from_env: OnceLock::new(), max_hold: None }
    }

    settings_setters! {
        /// The Consul client to use. Default: [`Client::from_env`], built at the first call.
        client(Client) => set_client;
        /// Session TTL, `10 s ..= 86400 s` (see [`EphemeralLock::ttl`](crate::EphemeralLock::ttl)).
        /// Default 15 s.
        ttl(Duration) => set_ttl;
        /// How long `read`/`write` wait for their turn. `Duration::MAX` waits forever. Default
        /// 500 ms. [`try_read`](Self::try_read) and [`try_write`](Self::try_write) make one attempt
        /// whatever this is.
        acquire_timeout(Duration) => set_acquire_timeout;
        /// The session's lock-delay, `0 ..= 60 s`: after a writer's session is invalidated while it
        /// holds, nobody (reader or writer) takes the lock for this long. A reader's death imposes
        /// none (a reader holds no key others take). Default 15 s.
        lock_delay(Duration) => set_lock_delay;
        /// The value of our place in line, and of the key while we write (≤ ~383 KiB: it travels
        /// base64-encoded in a transaction, see [`MAX_TXN_BODY_BYTES`]). Default: JSON
        /// [`HolderInfo`].
        value(Vec<u8>) => set_value;
        /// The session's name. Default `consul-lock rwlock: <key>`.
        session_name(String) => set_session_name;
        /// Tie the session to the agent node's health as well as its TTL. Default `false`.
        node_health_checks(bool) => set_node_checks;
    }

    /// Hold for at most this long: at that time the library releases and the guard reports lost.
    /// Default: no limit.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Take the lock shared, waiting up to the acquire timeout: returns once no writer holds it
    /// and no writer that arrived earlier waits for it.
    ///
    /// # Errors
    /// [`Error::NotAcquired`] (naming the writer when one holds) if our turn did not come within
    /// the timeout; [`Error::InvalidConfig`] before any request for bad settings;
    /// [`Error::Conflict`] when the key is a plain lock's or another primitive's; transport and
    /// Consul errors otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future at any point leaves no place in line, no key, no session
    /// and no renewal task behind. The work runs in a task that owns each request's outcome; when
    /// the future is gone it stops waiting and gives back whatever a request in flight took.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").read().await?;
    /// // … read, alongside other readers …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn read(&self) -> Result<ReadGuard> {
        let held = self.request(Mode::Read).await?;
        Ok(self.read_guard(held))
    }

    /// Take the lock exclusively, waiting up to the acquire timeout: returns once every request
    /// that arrived earlier (readers and writers) has left.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    ///
    /// # Cancel safety
    /// As [`read`](Self::read).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").write().await?;
    /// // … migrate, alone; pass guard.fencing_token() to the store …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(&self) -> Result<WriteGuard> {
        let held = self.request(Mode::Write).await?;
        Ok(self.write_guard(held))
    }

    /// One attempt at the shared lock, no wait: `Ok(None)` when a writer holds it or waits for it.
    /// With its own session, a busy lock costs two reads and no session.
    ///
    /// # Errors
    /// As [`read`](Self::read), without [`Error::NotAcquired`].
    ///
    /// # Cancel safety
    /// As [`read`](Self::read).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// match consul_lock::RwLock::new("datasets/users").try_read().await? {
    ///     Some(guard) => guard.release().await?,
    ///     None => eprintln!("a writer is busy"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let held = self.attempt(Mode::Read).await?;
        Ok(held.map(|h| self.read_guard(h)))
    }

    /// One attempt at the exclusive lock, no wait: `Ok(None)` when anyone holds it or waits for it.
    ///
    /// # Errors
    /// As [`read`](Self::read), without [`Error::NotAcquired`].
    ///
    /// # Cancel safety
    /// As [`read`](Self::read).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// if let Some(guard) = consul_lock::RwLock::new("datasets/users").try_write().await? {
    ///     guard.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_write(&self) -> Result<Option<WriteGuard>> {
        let held = self.attempt(Mode::Write).await?;
        Ok(held.map(|h| self.write_guard(h)))
    }

    fn read_guard(&self, held: Held) -> ReadGuard {
        ReadGuard { hold: held.hold, key: self.key.clone(), created: held.created }
    }

    fn write_guard(&self, held: Held) -> WriteGuard {
        let max_hold_at = self.max_hold.map(|d| Instant::now() + d);
        WriteGuard { hold: held.hold, value: held.value, created: held.created, max_hold_at }
    }

    /// A request that waits up to the acquire timeout and fails hard.
    async fn request(&self, mode: Mode) -> Result<Held> {
        let plan = self.plan(mode, None)?;
        // fail_hard = true never returns Ok(None); keep a typed error rather than a panic.
        acquire::run(plan, true).await?.ok_or_else(|| Error::NotAcquired {
            key: self.key.clone(),
            waited: Duration::ZERO,
            holder: None,
        })
    }

    /// One attempt, no wait: `Ok(None)` when busy.
    async fn attempt(&self, mode: Mode) -> Result<Option<Held>> {
        acquire::run(self.plan(mode, Some(Duration::ZERO))?, false).await
    }

    fn client_now(&self) -> Result<Client> {
        if let Some(c) = self.settings.chosen_client() {
            return Ok(c.clone());
        }
        if let Some(c) = self.from_env.get() {
            return Ok(c.clone());
        }
        let c = Client::from_env()?;
        Ok(self.from_env.get_or_init(|| c).clone())
    }

    /// Validate everything before any request.
    fn plan(&self, mode: Mode, timeout: Option<Duration>) -> Result<Plan> {
        validate(&self.key)?;
        let spec = self.settings.session_spec("read-write lock", format!("consul-lock rwlock: {}", self.key))?;
        if self.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig("max_hold must be greater than zero".into()));
        }
        let value = self.settings.value.clone();
        check_value(&self.key, value.as_deref(), &spec.name)?;
        Ok(Plan {
            client: self.client_now()?,
            key: self.key.clone(),
            mode,
            value,
            spec,
            acquire_timeout: timeout.unwrap_or(self.settings.acquire_timeout),
            max_hold: self.max_hold,
            shared: self.settings.shared(),
        })
    }
}

/// A read-write lock's key: a valid key whose places in line are valid keys too.
pub(crate) fn validate(key: &str) -> Result<()> {
    key::validate(key)?;
    key::validate(&format!("{}{SESSION_ID_SHAPE}", layout::line_prefix(key)))
}

/// The value fits Consul's limits: in a key, and in the writer's take (base64 in a transaction).
fn check_value(key: &str, value: Option<&[u8]>, session_name: &str) -> Result<()> {
    let len = value.map_or_else(|| HolderInfo::current(Some(session_name)).to_json().len(), <[u8]>::len);
    if len > MAX_VALUE_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {len} bytes; Consul stores at most {MAX_VALUE_BYTES} bytes in a key"
        )));
    }
    let body = take_body(key, &vec![0; len], SESSION_ID_SHAPE, Expect::Unchanged(u64::MAX)).len();
    if body > MAX_TXN_BODY_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {len} bytes: base64-encoded in the write transaction it needs {body} bytes, over \
             Consul's {MAX_TXN_BODY_BYTES}-byte transaction limit (about 383 KiB of value fit)"
        )));
    }
    Ok(())
}

/// Who holds a read-write lock and who waits, as returned by [`Client::rw_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RwLockState {
    /// The writer, as its key shows it (its `modify_index` is its fencing token); `None` when no
    /// writer holds.
    pub writer: Option<Holder>,
    /// The readers (their places in line: session, value), in arrival order.
    pub readers: Vec<Holder>,
    /// Who waits, in arrival order: `(exclusive, their place)`.
    pub waiting: Vec<(bool, Holder)>,
}

impl Client {
    /// Who holds the read-write lock on `key` and who waits for it: `None` when its key does not
    /// exist and nobody is in line. Two reads.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid key (before any request); [`Error::Conflict`]
    /// when the key is a plain lock's or another primitive's; transport and Consul errors.
    ///
    /// # Cancel safety
    /// Reads only: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let client = consul_lock::Client::from_env()?;
    /// if let Some(state) = client.rw_lock("datasets/users").await? {
    ///     println!("writer: {:?}; {} readers; {} waiting", state.writer.map(|w| w.session_id),
    ///              state.readers.len(), state.waiting.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rw_lock(&self, key: &str) -> Result<Option<RwLockState>> {
        validate(key)?;
        let entry = self.kv_get(key).await?;
        if let KeyState::Foreign(flags) = KeyState::of(entry.as_ref()) {
            return Err(Error::Conflict { key: key.to_owned(), flags });
        }
        let line = self.kv_list(&layout::line_prefix(key)).await?;
        let roles = layout::roles(key, entry.as_ref(), &line);
        if entry.is_none() && roles.readers.is_empty() && roles.waiting.is_empty() && roles.writer.is_none() {
            return Ok(None);
        }
        let holder = |e: &KvEntry| e.clone().into_holder().map_err(|m| Error::decode(self.address(), m));
        let writer = match roles.writer {
            Some(_) => entry.clone().map(|e| e.into_holder().map_err(|m| Error::decode(self.address(), m))),
            None => None,
        }
        .transpose()?
        .flatten();
        let mut readers = Vec::new();
        for r in &roles.readers {
            readers.extend(holder(r)?);
        }
        let mut waiting = Vec::new();
        for w in &roles.waiting {
            if let Some(h) = holder(w)? {
                waiting.push((Mode::of(w) == Mode::Write, h));
            }
        }
        Ok(Some(RwLockState { writer, readers, waiting }))
    }
}

impl Session {
    /// A read-write lock on `key` bound to this session: the same builder and methods as
    /// [`RwLock::new`], a read cycle at two writes (our place in line, then its owner-checked
    /// delete). Its place in line is `KEY/.consul-lock-rw/.consul-lock-queue/<this session's id>`, so one session
    /// holds or waits for a key once at a time: a second request through it waits in-process. The
    /// session's settings are the session's, as for [`Session::lock`].
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) -> consul_lock::Result<()> {
    /// let guard = session.rw_lock("datasets/users").read().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn rw_lock(&self, key: impl Into<String>) -> RwLock {
        RwLock { settings: Settings::bound(&self.core), ..RwLock::new(key) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_before_any_request() {
        assert!(validate("datasets/users").is_ok());
        for k in ["", "/a", "a//b", "a/../b", "a\nb"] {
            assert!(matches!(validate(k), Err(Error::InvalidConfig(_))), "{k:?}");
        }
        assert!(check_value("k", Some(&vec![0; MAX_VALUE_BYTES + 1]), "n").is_err());
        assert!(check_value("k", Some(&vec![0; 390 * 1024]), "n").is_err(), "does not fit the transaction");
        assert!(check_value("k", None, "n").is_ok());
    }
}
