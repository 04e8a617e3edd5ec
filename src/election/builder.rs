//! `Election`: leader election on one Consul key. A campaign is a lock acquire that carries the
//! candidate's value (an [`EphemeralLock`] in fair mode, with its own session or bound to a shared
//! [`Session`] through [`Session::election`]); the leader is whoever holds the key.
//! [`Leader`] is who leads, as anyone can read it; the held side is [`Leadership`].

use std::future::Future;
use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::key;
use crate::election::leader_watch::{Leader, LeaderWatch};
use crate::election::leadership::Leadership;
use crate::error::Result;
use crate::lock::builder::EphemeralLock;
use crate::primitive::settings::{settings_setters, Settings};
use crate::session::shared::Session;

/// Leader election on one key: candidates [`campaign`](Election::campaign) with a value (say, their
/// address); one at a time leads, the others wait in line; anyone can read the
/// [`leader`](Election::leader) or [`observe`](Election::observe) every change.
///
/// # Guarantees, in plain words
/// - **One leader at a time, as Consul sees it.** Leading means holding the key through a Consul
///   session, exactly like [`EphemeralLock`]: the same TTL, renewals and loss detection.
/// - **Leadership can be lost** (renewals failing for a TTL, the session destroyed, the key deleted
///   or taken). [`Leadership::lost`] then resolves and [`Leadership::is_leader`] turns false; a
///   paused or partitioned leader may still be running when a new one is elected, which is what the
///   [`term`](Leadership::term) is for: pass it to what you write to, and have that reject a term
///   lower than one it has seen. Terms strictly increase from leader to leader.
/// - **Resigning hands over at once**: [`Leadership::resign`] deletes the key (no lock-delay) and
///   the next candidate in line takes it; dropping a [`Leadership`] resigns in the background. A
///   leader that dies without resigning is replaced after its session expires (at most about 2×TTL)
///   plus the lock-delay.
/// - **Candidates wait in line**: campaigns use the lock's fair mode, so a handoff wakes only the
///   next candidate, first come, first served, at a cost flat in the number waiting.
/// - **Campaign through a shared [`Session`] to hand over cheaply**: by default each campaign
///   creates a session of its own and resigning destroys it, so a handoff where the old leader
///   campaigns again costs 5 requests (with a zero lock-delay; 6 otherwise). A candidate that
///   campaigns through [`Session::election`] keeps one session across its campaigns: resigning is
///   one owner-checked delete and a handoff costs 4 requests (the resign, the successor's wake-up
///   read and its `lock` transaction, the old leader's next enqueue). Not counted: the leader's
///   key watch, one blocking query per term (from the start with its own session, from the first
///   [`Leadership::lost`] on a shared one). One campaign per key per session at a time: a second
///   one on the same key through the same `Session` waits in-process until the first
///   [`Leadership`] is resigned or dropped, then queues like any candidate. Losing the session
///   loses every leadership held through it.
/// - **Interoperates with the plain lock**: a campaign is a lock acquire with the value, so an
///   [`EphemeralLock`] on the same key (or `consul-lock run KEY`) competes in the same election,
///   and [`Client::holder`](crate::Client::holder) shows the leader.
///
/// ```no_run
/// # async fn demo() -> consul_lock::Result<()> {
/// let election = consul_lock::Election::new("service/billing/leader");
/// let leadership = election.campaign(b"10.0.0.7:8080".to_vec()).await?;
/// println!("leading with term {}", leadership.term());
/// tokio::select! {
///     _ = leadership.lost() => eprintln!("lost the leadership: stop"),
///     _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
/// }
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    key: String,
    /// A campaign's lock settings (bound to a shared session from [`Session::election`]).
    settings: Settings,
}

impl Election {
    /// An election on `key`, with the lock's defaults (TTL 15 s, lock-delay 15 s, client from the
    /// environment) and no campaign timeout. Never fails: an invalid key or setting is reported by
    /// the first call, before any request.
    pub fn new(key: impl Into<String>) -> Self {
        Self::with_settings(key.into(), Settings::default())
    }

    fn with_settings(key: String, mut settings: Settings) -> Self {
        settings.acquire_timeout = Duration::MAX;
        Election { key, settings }
    }

    settings_setters! {
        /// The Consul client to use. Default: [`Client::from_env`], built at each call (on an election
        /// from [`Session::election`], the session's client).
        client(Client) => set_client;
        /// Session TTL of a campaign (see [`EphemeralLock::ttl`]). Default 15 s. On an election from
        /// [`Session::election`] this, [`lock_delay`](Self::lock_delay) and
        /// [`session_name`](Self::session_name) are the session's: the first campaign rejects them.
        ttl(Duration) => set_ttl;
        /// Lock-delay after a leader's session is invalidated without resigning (see
        /// [`EphemeralLock::lock_delay`]). Resigning never triggers it. Default 15 s.
        lock_delay(Duration) => set_lock_delay;
        /// The campaign session's name. Default `consul-lock: <key>`.
        session_name(String) => set_session_name;
        /// How long [`campaign`](Self::campaign) waits to be elected. Default `Duration::MAX`: until
        /// elected. `Duration::ZERO` makes one attempt.
        acquire_timeout(Duration) => set_acquire_timeout;
    }

    /// The election's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lock a campaign with `value` takes: with its own session, or bound to the shared one
    /// (which then rejects the session's settings set here, as a bound lock does).
    fn lock(&self, value: Vec<u8>) -> EphemeralLock {
        EphemeralLock::with_settings(self.key.clone(), self.settings.clone()).fair(true).value(value)
    }

    /// The client set, else the shared session's; `None`: from the environment.
    fn chosen_client(&self) -> Option<Client> {
        self.settings.chosen_client().cloned()
    }

    pub(crate) fn resolved_client(&self) -> Result<Client> {
        self.settings.clone().client()
    }

    /// Campaign with `value` and wait until elected (or the acquire timeout, if one is set). The
    /// session is renewed while waiting; candidates are served in arrival order. On an election
    /// from [`Session::election`] no session is created: the campaign is the shared session's.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) before any request for a bad key or setting (on a
    /// [`Session::election`]: any of `ttl`, `lock_delay`, `session_name`), or a value over
    /// [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES); [`Error::NotAcquired`](crate::Error::NotAcquired) when an acquire timeout
    /// is set and ran out; [`Error::LockLost`](crate::Error::LockLost) when the shared session is lost;
    /// [`Error::Transport`](crate::Error::Transport), [`Error::PermissionDenied`](crate::Error::PermissionDenied), [`Error::Consul`](crate::Error::Consul) as
    /// for [`EphemeralLock::hold`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future at any point leaves no key, no queue entry, no session and
    /// no renewal task behind (it is [`EphemeralLock::hold`]).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let election = consul_lock::Election::new("service/billing/leader");
    /// let leadership = election.campaign(b"10.0.0.7:8080".to_vec()).await?;
    /// assert!(leadership.is_leader());
    /// leadership.resign().await?;
    /// # Ok(()) }
    /// ```
    pub async fn campaign(&self, value: Vec<u8>) -> Result<Leadership> {
        let guard = self.lock(value).hold().await?;
        Ok(Leadership::new(guard))
    }

    /// Campaign with `value`, run `fut` once elected, resign. If the leadership is lost meanwhile,
    /// `fut` is dropped and the result is [`Error::LockLost`](crate::Error::LockLost): the election counterpart of
    /// [`EphemeralLock::run`].
    ///
    /// # Errors
    /// As [`campaign`](Self::campaign); [`Error::LockLost`](crate::Error::LockLost); resign errors.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut` and resigns (or stops campaigning) in the
    /// background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn serve() {}
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let election = consul_lock::Election::new("service/billing/leader");
    /// match election.run_as_leader(b"10.0.0.7:8080".to_vec(), serve()).await {
    ///     Ok(()) => {}
    ///     Err(e) if e.is_lost() => eprintln!("lost the leadership; serve() was stopped"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run_as_leader<F: Future>(&self, value: Vec<u8>, fut: F) -> Result<F::Output> {
        self.lock(value).run(fut).await
    }

    /// Who leads now (one read); `None` when nobody does.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an invalid key (before any request); transport and Consul
    /// errors; [`Error::Decode`](crate::Error::Decode) for a value Consul sent that is not base64.
    ///
    /// # Cancel safety
    /// A read: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let election = consul_lock::Election::new("service/billing/leader");
    /// match election.leader().await? {
    ///     Some(l) => println!("leader: {} (term {})", String::from_utf8_lossy(&l.value), l.term),
    ///     None => println!("no leader"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn leader(&self) -> Result<Option<Leader>> {
        key::validate(&self.key)?;
        let client = self.resolved_client()?;
        let entry = client.kv_get(&self.key).await?;
        Leader::from_entry(entry, &client)
    }

    /// Follow the leader: a [`LeaderWatch`] whose [`next`](LeaderWatch::next) gives the current
    /// state first, then every change (see [`LeaderWatch`]). No request until the first `next`.
    pub fn observe(&self) -> LeaderWatch {
        LeaderWatch::new(self.key.clone(), self.chosen_client())
    }
}

impl Session {
    /// An election on `key` whose campaigns go through this session: the same builder and methods
    /// as [`Election::new`], and a campaign is `session.lock(key).fair(true).value(value)` (see
    /// [`Session::lock`]). Resigning is one owner-checked delete and leaves the session alive for the
    /// next campaign, so a handoff costs 4 requests instead of 5.
    ///
    /// `ttl`, `lock_delay` and `session_name` are the session's: set on the election, they are
    /// rejected with [`Error::InvalidConfig`](crate::Error::InvalidConfig) by the first campaign, before any request. One
    /// campaign per key per session at a time: a second campaign on the same key through this
    /// session waits in-process until the first [`Leadership`] is resigned or dropped (as a second
    /// [`Session::lock`] of the key does), then queues behind the candidates already waiting. Losing the session loses
    /// every leadership held through it. A leadership on a shared session watches its key only from
    /// its first [`Leadership::lost`] (see there).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// use std::time::Duration;
    /// let client = consul_lock::Client::from_env()?;
    /// let session = consul_lock::Session::new(client, Duration::from_secs(15)).await?;
    /// let election = session.election("service/billing/leader");
    /// loop {
    ///     let leadership = election.campaign(b"10.0.0.7:8080".to_vec()).await?;
    ///     // … lead, then hand over; the session lives on for the next campaign …
    ///     leadership.resign().await?;
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn election(&self, key: impl Into<String>) -> Election {
        Election::with_settings(key.into(), Settings::bound(&self.core))
    }
}
