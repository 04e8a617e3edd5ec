//! `MultiLock`: the builder, its validation, and the public methods; [`Session::multi_lock`]. The
//! procedure is in `acquire`, a held set in `guard`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::endpoints::{self, Expect, OPS_PER_LOCKED_KEY};
use crate::consul::key::{self, MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES};
use crate::consul::ops::MAX_TXN_OPS;
use crate::error::{Error, Result};
use crate::holder::HolderInfo;
use crate::multilock::acquire::{self, Plan};
use crate::multilock::guard::{MultiHold, MultiLockGuard};
use crate::primitive::holding::{holding_methods, Holding};
use crate::primitive::settings::{settings_setters, Settings};
use crate::session::shared::Session;

/// Most keys one [`MultiLock`] takes: 32. Every key costs two operations of the one acquire
/// transaction (a guard that it is free and a `lock`), and Consul runs at most
/// [`MAX_TXN_OPS`] (64) operations in a transaction.
pub const MAX_MULTI_LOCK_KEYS: usize = MAX_TXN_OPS / OPS_PER_LOCKED_KEY;

/// A stand-in session ID of the real length, to size the transaction before we have one.
const SESSION_ID_SHAPE: &str = "00000000-0000-0000-0000-000000000000";

/// A lock on a set of Consul KV keys, all taken in one transaction or none (see the README,
/// "MultiLock", for the key layout and the queueing).
///
/// Each key is an ordinary lock key (Go's lock `Flags`, a session, the holder's value), so
/// `consul lock`, Go's `api.Lock` and an [`EphemeralLock`](crate::EphemeralLock) on any member key
/// exclude against the set. The set is never held in part: sets that overlap cannot deadlock.
/// Waiters line up in every key's queue at once (one transaction: one arrival index for all its
/// keys) and try only when first in all of them, so a waiter cannot be overtaken forever by sets
/// that overlap it.
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo() -> consul_lock::Result<()> {
/// let guard = consul_lock::MultiLock::new(["accounts/17", "accounts/42"])
///     .acquire_timeout(Duration::from_secs(10))
///     .hold()
///     .await?;
/// // … both accounts are ours; guard.fencing_token() fences writes to either …
/// guard.release().await?;
/// # Ok(()) }
/// ```
///
/// # Drop
/// Dropping a multi-lock that holds its keys releases them in the background.
#[derive(Debug)]
pub struct MultiLock {
    keys: Vec<String>,
    /// The keys, joined, for `NotAcquired`.
    wanted: String,
    settings: Settings,
    max_hold: Option<Duration>,
    held: Holding<MultiHold>,
}

impl MultiLock {
    /// A lock on every key of `keys` (duplicates count once; at most [`MAX_MULTI_LOCK_KEYS`]),
    /// with the defaults of [`EphemeralLock::new`](crate::EphemeralLock::new). Never fails: invalid
    /// settings are reported as [`Error::InvalidConfig`] by the first call, before any request.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Self::with_settings(keys.into_iter().map(Into::into).collect(), Settings::default())
    }

    fn with_settings(keys: Vec<String>, settings: Settings) -> Self {
        MultiLock { wanted: keys.join(", "), keys, settings, max_hold: None, held: Holding::default() }
    }

    settings_setters! {
        /// The Consul client to use. Default: [`Client::from_env`], built at the first call.
        client(Client) => set_client;
        /// Session TTL, `10 s ..= 86400 s` (see [`EphemeralLock::ttl`](crate::EphemeralLock::ttl)).
        ttl(Duration) => set_ttl;
        /// How long `hold`/`acquire` wait for the whole set; `Duration::ZERO` makes one attempt.
        /// Default 500 ms.
        acquire_timeout(Duration) => set_acquire_timeout;
        /// Consul's lock-delay, `0 ..= 60 s` (see
        /// [`EphemeralLock::lock_delay`](crate::EphemeralLock::lock_delay)). Default 15 s.
        lock_delay(Duration) => set_lock_delay;
        /// The value written into every key while held. Default: JSON [`HolderInfo`].
        value(Vec<u8>) => set_value;
        /// The session's name. Default `consul-lock: <first key> (+N)`.
        session_name(String) => set_session_name;
        /// Tie the session to the agent node's health as well as its TTL. Default `false`.
        node_health_checks(bool) => set_node_checks;
    }

    /// Hold for at most this long, then release and report lost. Default: no limit.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// The keys, as given.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The fencing token while held (see [`MultiLockGuard::fencing_token`]); `None` otherwise.
    pub fn fencing_token(&self) -> Option<u64> {
        self.held.held().map(|h| h.token)
    }

    /// The hold behind this value, if any (for the blocking mirror).
    pub(crate) fn current_hold(&self) -> Option<Arc<MultiHold>> {
        self.held.current()
    }

    holding_methods! {
        guard: MultiLockGuard { hold }, procedure: acquire::run, wanted: wanted;
        /// `true` while this multi-lock holds its keys (see [`MultiLockGuard::is_held`]).
        is_held;
        /// Resolves when the keys held by this value are known lost (see
        /// [`MultiLockGuard::lost`]); at once when it holds nothing.
        ///
        /// # Cancel safety
        /// Cancel safe: dropping the future changes nothing.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut lock = consul_lock::MultiLock::new(["a", "b"]);
        /// if lock.acquire(false).await? {
        ///     tokio::select! {
        ///         _ = lock.lost() => eprintln!("lost the set: stop"),
        ///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        ///     }
        ///     lock.release().await?;
        /// }
        /// # Ok(()) }
        /// ```
        lost;
        /// Take every key, waiting up to the acquire timeout; a guard that releases them on drop.
        ///
        /// # Errors
        /// [`Error::NotAcquired`] (naming a key held by someone else, and its holder, when known) if
        /// the set could not be taken in time; [`Error::Conflict`] for a member key of another
        /// primitive; [`Error::InvalidConfig`] before any request for no keys or more than
        /// [`MAX_MULTI_LOCK_KEYS`], an invalid key or bad settings; transport and Consul errors.
        ///
        /// # Cancel safety
        /// Cancel safe: dropping the future at any point leaves no key held, no queue entry, no
        /// session and no renewal task behind (the work runs in a task that owns each request's
        /// outcome and cleans up after it).
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let guard = consul_lock::MultiLock::new(["db/shard-1", "db/shard-2", "db/shard-3"]).hold().await?;
        /// println!("all three, token {}", guard.fencing_token());
        /// guard.release().await?;
        /// # Ok(()) }
        /// ```
        hold;
        /// Take every key, waiting up to the acquire timeout. `Ok(true)`: held (release with
        /// [`release`](Self::release) or by dropping this value). On timeout, `Ok(false)` when
        /// `fail_hard` is false, [`Error::NotAcquired`] when it is true.
        ///
        /// # Errors
        /// As [`hold`](Self::hold), plus [`Error::AlreadyHeld`] when this value already holds its keys.
        ///
        /// # Cancel safety
        /// As [`hold`](Self::hold).
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// use std::time::Duration;
        /// let mut lock = consul_lock::MultiLock::new(["a", "b"]).acquire_timeout(Duration::ZERO);
        /// if lock.acquire(false).await? {
        ///     lock.release().await?;
        /// }
        /// # Ok(()) }
        /// ```
        acquire;
        /// Release the keys if held (see [`MultiLockGuard::release`]); a no-op otherwise.
        ///
        /// # Errors
        /// As [`MultiLockGuard::release`].
        ///
        /// # Cancel safety
        /// If the future is dropped the release completes in the background.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut lock = consul_lock::MultiLock::new(["a", "b"]);
        /// lock.acquire(true).await?;
        /// lock.release().await?;
        /// # Ok(()) }
        /// ```
        release;
    }

    /// Take every key (failing hard), run `fut`, release. If the set is lost meanwhile, `fut` is
    /// dropped and the result is [`Error::LockLost`].
    ///
    /// # Errors
    /// As [`hold`](Self::hold); [`Error::LockLost`]; release errors.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut` and releases the keys in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn transfer() {}
    /// # async fn demo() -> consul_lock::Result<()> {
    /// consul_lock::MultiLock::new(["accounts/17", "accounts/42"]).run(transfer()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<F: Future>(self, fut: F) -> Result<F::Output> {
        let guard = self.hold().await?;
        let err = Error::LockLost { key: guard.hold.name.clone() };
        let out = tokio::select! {
            out = fut => guard.is_held().then_some(out),
            _ = guard.lost() => None,
        };
        guard.release().await?;
        out.ok_or(err)
    }

    /// Validate everything before any request.
    fn plan(&mut self) -> Result<Plan> {
        let keys = validate_keys(&self.keys)?;
        if self.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig("max_hold must be greater than zero".into()));
        }
        let default_name = match keys.len() {
            1 => format!("consul-lock: {}", keys[0]),
            n => format!("consul-lock: {} (+{})", keys[0], n - 1),
        };
        let spec = self.settings.session_spec("multi-lock", default_name)?;
        let value = self.settings.value.clone();
        let value_len = value.as_ref().map_or_else(|| HolderInfo::current(Some(&spec.name)).to_json().len(), Vec::len);
        validate_size(&keys, value_len)?;
        Ok(Plan {
            client: self.settings.client()?,
            keys,
            value,
            spec,
            acquire_timeout: self.settings.acquire_timeout,
            max_hold: self.max_hold,
            shared: self.settings.shared(),
        })
    }
}

/// The keys, each valid, sorted and without duplicates: 1 ..= [`MAX_MULTI_LOCK_KEYS`].
fn validate_keys(keys: &[String]) -> Result<Vec<String>> {
    for k in keys {
        key::validate(k)?;
    }
    let mut sorted = keys.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() || sorted.len() > MAX_MULTI_LOCK_KEYS {
        return Err(Error::InvalidConfig(format!(
            "a multi-lock takes 1 ..= {MAX_MULTI_LOCK_KEYS} distinct keys (two operations each in one Consul \
             transaction of at most {MAX_TXN_OPS}), not {}",
            sorted.len()
        )));
    }
    if let Some(k) = sorted.iter().find(|k| k.contains("/.consul-lock-queue/") || k.ends_with("/.consul-lock-queue")) {
        return Err(Error::InvalidConfig(format!("{k:?} is inside a lock's wait queue, not a lock key")));
    }
    Ok(sorted)
}

/// The value fits a key, and the acquire transaction (the value once per key) fits Consul's limit.
fn validate_size(keys: &[String], value_len: usize) -> Result<()> {
    if value_len > MAX_VALUE_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {value_len} bytes; Consul stores at most {MAX_VALUE_BYTES} bytes in a key"
        )));
    }
    let shape: Vec<(&str, Expect)> = keys.iter().map(|k| (k.as_str(), Expect::Unchanged(u64::MAX))).collect();
    let body_len = endpoints::multi_lock_txn_body(&shape, &vec![0; value_len], SESSION_ID_SHAPE).len();
    if body_len > MAX_TXN_BODY_BYTES {
        return Err(Error::InvalidConfig(format!(
            "the value ({value_len} bytes) is written into each of the {} keys: base64-encoded, the acquire \
             transaction needs {body_len} bytes, over Consul's {MAX_TXN_BODY_BYTES}-byte limit",
            keys.len()
        )));
    }
    Ok(())
}

impl Session {
    /// A multi-lock on `keys` bound to this session: the same builder and methods as
    /// [`MultiLock::new`], at two Consul writes per cycle whatever the number of keys (the acquire
    /// transaction and the release transaction). Session settings (`ttl`, `lock_delay`,
    /// `session_name`, `node_health_checks`) are rejected with [`Error::InvalidConfig`] by the first
    /// call, before any request.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) -> consul_lock::Result<()> {
    /// let guard = session.multi_lock(["jobs/7", "jobs/8"]).hold().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn multi_lock<I, K>(&self, keys: I) -> MultiLock
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        MultiLock::with_settings(keys.into_iter().map(Into::into).collect(), Settings::bound(&self.core))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k/{i}")).collect()
    }

    #[test]
    fn key_count_and_shape() {
        assert_eq!(MAX_MULTI_LOCK_KEYS, 32);
        assert!(validate_keys(&[]).is_err());
        assert!(validate_keys(&keys(MAX_MULTI_LOCK_KEYS + 1)).is_err());
        assert_eq!(validate_keys(&keys(MAX_MULTI_LOCK_KEYS)).unwrap().len(), 32);
        let dup = vec!["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(validate_keys(&dup).unwrap(), vec!["a", "b"]);
        assert!(validate_keys(&["a".to_owned(), "/b".to_owned()]).is_err());
        assert!(validate_keys(&["a/.consul-lock-queue/x".to_owned()]).is_err());
    }

    #[test]
    fn the_value_counts_once_per_key() {
        assert!(validate_size(&keys(1), 300 * 1024).is_ok());
        assert!(validate_size(&keys(2), 300 * 1024).is_err());
        assert!(validate_size(&keys(32), 8 * 1024).is_ok());
        assert!(validate_size(&keys(1), MAX_VALUE_BYTES + 1).is_err());
    }
}
