//! `Semaphore`: at most N holders of a prefix at once, with Consul's semaphore recipe
//! (bit-compatible with Go's `api.Semaphore` and `consul lock -n N`). The builder, its validation
//! and the public methods; the procedure is in `admit`, a held slot in `permit`, the coordination
//! key's rules in `slots`. Also [`Client::semaphore`] (who holds a semaphore) and
//! [`Session::semaphore`].

use std::sync::Arc;
use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::key::{self, MAX_VALUE_BYTES};
use crate::error::{Error, Result};
use crate::holder::Holder;
use crate::primitive::holding::{holding_methods, Holding};
use crate::primitive::settings::{settings_setters, Settings};
use crate::semaphore::admit::{self, Plan};
use crate::semaphore::permit::{Permit, SemaphorePermit};
use crate::semaphore::slots::{self, Layout, MAX_LIMIT};
use crate::session::shared::Session;

/// A counting semaphore on a Consul KV prefix: at most `limit` holders at once, each through its
/// own Consul session (see the README, "Semaphore", for the key layout).
///
/// The same shape as [`EphemeralLock`](crate::EphemeralLock): build it with
/// [`Semaphore::new`] and the setters, then take a slot with [`hold`](Self::hold) (a permit that
/// releases on drop) or [`acquire`](Self::acquire) (a `bool`).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo() -> consul_lock::Result<()> {
/// let client = consul_lock::Client::from_env()?;
/// let permit = consul_lock::Semaphore::new("jobs/encoder", 3)
///     .client(client)
///     .acquire_timeout(Duration::from_secs(30))
///     .hold()
///     .await?;
/// // … one of at most 3 encoders in the fleet; permit.token() increases with every admission …
/// permit.release().await?;
/// # Ok(()) }
/// ```
///
/// Waiting contenders queue (`PREFIX/.lock/.consul-lock-queue/<session-id>`) and each blocks only on
/// the one ahead of it, so a release wakes one waiter and slots go first come, first served; a
/// one-shot attempt (`acquire_timeout(Duration::ZERO)`) never joins the line and never takes a
/// slot that others wait for.
///
/// Every contender of a prefix must use the same limit: a different one is
/// [`Error::LimitConflict`]. A prefix whose `.lock` key is not a semaphore's (a plain lock's, say)
/// is [`Error::Conflict`]. Both are found by the first read, before any write.
///
/// # Drop
/// Dropping a semaphore that holds a slot releases it in the background, like a
/// [`SemaphorePermit`].
#[derive(Debug)]
pub struct Semaphore {
    prefix: String,
    limit: u32,
    settings: Settings,
    held: Holding<Permit>,
}

impl Semaphore {
    /// A semaphore on `prefix` with `limit` slots (`1 ..= 4096`), with the lock's defaults: client
    /// from the environment, TTL 15 s, acquire timeout 500 ms, lock-delay 15 s, holder-info JSON
    /// as the contender key's value. Never fails: bad input is [`Error::InvalidConfig`] at the
    /// first call, before any request.
    pub fn new(prefix: impl Into<String>, limit: u32) -> Self {
        Semaphore { prefix: prefix.into(), limit, settings: Settings::default(), held: Holding::default() }
    }

    settings_setters! {
        /// The Consul client to use. Default: [`Client::from_env`], built at the first call.
        client(Client) => set_client;
        /// Session TTL, `10 s ..= 86400 s` (see [`EphemeralLock::ttl`](crate::EphemeralLock::ttl)).
        /// Default 15 s.
        ttl(Duration) => set_ttl;
        /// How long `hold`/`acquire` wait while every slot is taken. `Duration::ZERO` makes one
        /// attempt; `Duration::MAX` waits forever. Default 500 ms.
        acquire_timeout(Duration) => set_acquire_timeout;
        /// The session's lock-delay, `0 ..= 60 s`. A contender key is never taken by anyone else, so it
        /// does not delay others; kept for symmetry with the lock. Default 15 s.
        lock_delay(Duration) => set_lock_delay;
        /// The value of our contender key while held (at most 512 KiB). Default: JSON [`HolderInfo`](crate::HolderInfo).
        value(Vec<u8>) => set_value;
        /// The session's name. Default `consul-lock semaphore: <prefix>`.
        session_name(String) => set_session_name;
    }

    /// The semaphore's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The number of slots.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The token while held (see [`SemaphorePermit::token`]); `None` otherwise.
    pub fn token(&self) -> Option<u64> {
        self.held.held().map(|p| p.token)
    }

    pub(crate) fn current_permit(&self) -> Option<Arc<Permit>> {
        self.held.current()
    }

    holding_methods! {
        guard: SemaphorePermit { permit }, procedure: admit::run, wanted: prefix;
        /// `true` while this value holds a slot (see [`SemaphorePermit::is_held`]).
        is_held;
        /// Resolves when the slot held by this value is known lost (see [`SemaphorePermit::lost`]); at
        /// once when it holds none. Infallible.
        ///
        /// # Cancel safety
        /// Cancel safe: dropping the future changes nothing.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut sem = consul_lock::Semaphore::new("jobs/encoder", 3);
        /// if sem.acquire(false).await? {
        ///     sem.lost().await;
        ///     eprintln!("slot lost");
        /// }
        /// # Ok(()) }
        /// ```
        lost;
        /// Take a slot, waiting up to the acquire timeout; a permit that releases on drop. Waiters
        /// are served first come, first served, and each release wakes only the first in line.
        ///
        /// # Errors
        /// [`Error::NotAcquired`] if every slot stayed taken for the whole timeout;
        /// [`Error::InvalidConfig`] before any request for bad settings (empty or invalid prefix, limit
        /// 0 or over 4096); [`Error::LimitConflict`] when the prefix stores another limit;
        /// [`Error::Conflict`] when its `.lock` key is not a semaphore's; transport and Consul errors.
        ///
        /// # Cancel safety
        /// Cancel safe: dropping the future at any point leaves no contender key, no holder entry, no
        /// queue entry and no session behind. The work runs in a task that owns each request's
        /// outcome; when the future is gone it stops waiting and gives back whatever a request in
        /// flight took.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let permit = consul_lock::Semaphore::new("jobs/encoder", 3).hold().await?;
        /// println!("slot taken with token {}", permit.token());
        /// permit.release().await?;
        /// # Ok(()) }
        /// ```
        hold;
        /// Take a slot, waiting up to the acquire timeout. `Ok(true)`: held (release with
        /// [`release`](Self::release) or by dropping this value). On timeout, `Ok(false)` when
        /// `fail_hard` is false, [`Error::NotAcquired`] when it is true.
        ///
        /// # Errors
        /// As [`hold`](Self::hold), plus [`Error::AlreadyHeld`] when this value already holds a slot.
        ///
        /// # Cancel safety
        /// As [`hold`](Self::hold).
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut sem = consul_lock::Semaphore::new("jobs/encoder", 3);
        /// if sem.acquire(false).await? {
        ///     // … at most 3 of these at once …
        ///     sem.release().await?;
        /// }
        /// # Ok(()) }
        /// ```
        acquire;
        /// Give the slot back if held (see [`SemaphorePermit::release`]); a no-op otherwise.
        ///
        /// # Errors
        /// As [`SemaphorePermit::release`].
        ///
        /// # Cancel safety
        /// If the future is dropped the release completes in the background.
        ///
        /// # Examples
        /// ```no_run
        /// # async fn demo() -> consul_lock::Result<()> {
        /// let mut sem = consul_lock::Semaphore::new("jobs/encoder", 3);
        /// sem.acquire(true).await?;
        /// sem.release().await?;
        /// # Ok(()) }
        /// ```
        release;
    }

    /// Validate everything before any request.
    fn plan(&mut self) -> Result<Plan> {
        validate(&self.prefix, self.limit)?;
        let spec = self.settings.session_spec("semaphore", format!("consul-lock semaphore: {}", self.prefix))?;
        let value_len = self.settings.value.as_ref().map_or(0, Vec::len);
        if value_len > MAX_VALUE_BYTES / 2 {
            return Err(Error::InvalidConfig(format!(
                "value is {value_len} bytes; a contender key's value rides in a transaction with the holders, \
                 at most {} bytes",
                MAX_VALUE_BYTES / 2
            )));
        }
        Ok(Plan {
            client: self.settings.client()?,
            layout: Layout::new(&self.prefix),
            limit: self.limit,
            value: self.settings.value.clone(),
            spec,
            acquire_timeout: self.settings.acquire_timeout,
            shared: self.settings.shared(),
        })
    }
}

/// A semaphore's prefix and limit: a valid key prefix (its `.lock` and contender keys must be valid
/// keys too) and `1 ..= 4096` slots.
pub(crate) fn validate(prefix: &str, limit: u32) -> Result<()> {
    key::validate(prefix)?;
    key::validate(&Layout::new(prefix).contender("00000000-0000-0000-0000-000000000000"))?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::InvalidConfig(format!("semaphore limit {limit} is out of range: 1 ..= {MAX_LIMIT}")));
    }
    Ok(())
}

/// Who holds a semaphore, as returned by [`Client::semaphore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreState {
    /// The limit stored in `PREFIX/.lock`.
    pub limit: i64,
    /// The live holders (a holder whose session is gone is left out), each as its contender key:
    /// session, value (our [`HolderInfo`](crate::HolderInfo) when written by this crate), `ModifyIndex`.
    pub holders: Vec<Holder>,
}

impl Client {
    /// Who holds the semaphore on `prefix`: `None` when it has no `.lock` key (never used, or all
    /// holders gone and the key deleted). One read of the prefix.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid prefix (before any request); [`Error::Conflict`]
    /// when `PREFIX/.lock` is not a semaphore's (a plain lock's, say); transport and Consul
    /// errors otherwise.
    ///
    /// # Cancel safety
    /// A read: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let client = consul_lock::Client::from_env()?;
    /// if let Some(state) = client.semaphore("jobs/encoder").await? {
    ///     println!("{} of {} slots taken", state.holders.len(), state.limit);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn semaphore(&self, prefix: &str) -> Result<Option<SemaphoreState>> {
        validate(prefix, 1)?;
        let layout = Layout::new(prefix);
        let entries = self.kv_list(&layout.dir).await?;
        let Some(lock_entry) = layout.find_lock(&entries) else { return Ok(None) };
        let stored = layout.decode(Some(lock_entry))?;
        let Some(mut slots) = stored else { return Ok(Some(SemaphoreState { limit: 0, holders: Vec::new() })) };
        slots::prune(&mut slots, &entries);
        let mut holders = Vec::new();
        for e in entries.into_iter().filter(|e| e.key != layout.lock_key) {
            let held = e.holder_session().is_some_and(|s| slots.holds(s) && e.key == layout.contender(s));
            if held {
                if let Some(h) = e.into_holder().map_err(|m| Error::decode(self.address(), m))? {
                    holders.push(h);
                }
            }
        }
        holders.sort_by_key(|h| h.modify_index);
        Ok(Some(SemaphoreState { limit: slots.limit, holders }))
    }
}

impl Session {
    /// A semaphore on `prefix` with `limit` slots bound to this session: its contender key is
    /// `PREFIX/<this session's id>`, so one session takes at most one slot of a prefix at a time (a
    /// second permit waits in-process). The session's settings are the session's, as for
    /// [`Session::lock`].
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(session: consul_lock::Session) -> consul_lock::Result<()> {
    /// let permit = session.semaphore("jobs/encoder", 3).hold().await?;
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn semaphore(&self, prefix: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore { settings: Settings::bound(&self.core), ..Semaphore::new(prefix, limit) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("jobs/enc", 1).is_ok());
        for (p, l) in [("", 1), ("jobs/enc", 0), ("/jobs", 1), ("jobs//x", 1), ("jobs/", 2), ("a", MAX_LIMIT + 1)] {
            assert!(matches!(validate(p, l), Err(Error::InvalidConfig(_))), "{p:?} {l}");
        }
    }
}
