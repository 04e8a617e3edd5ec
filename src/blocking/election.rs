//! Blocking [`Election`], [`Leadership`] and [`LeaderWatch`]: the async election's guarantees with
//! plain methods, run on the client's runtime thread.

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::handle::{held_lost, wait_lost};
use super::runtime::Runtime;
use crate::election::leader_watch::Leader;
use crate::error::{Error, Result};

/// Blocking [`crate::Election`]: the same settings and guarantees.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let election = consul_lock::blocking::Election::new("service/billing/leader");
/// let leadership = election.campaign(b"10.0.0.7:8080".to_vec())?;
/// println!("leading with term {}", leadership.term());
/// leadership.resign()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    inner: crate::Election,
    client: Option<Client>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.inner = self.inner.$name(v);
            self
        }
    )*};
}

impl Election {
    /// An election on `key` (see [`crate::Election::new`]).
    pub fn new(key: impl Into<String>) -> Self {
        Election { inner: crate::Election::new(key), client: None }
    }

    /// An election bound to a shared session (see [`super::Session::election`]).
    pub(crate) fn bound(inner: crate::Election, client: Client) -> Self {
        Election { inner, client: Some(client) }
    }

    /// The client to use. Default: [`Client::from_env`] at the first call.
    pub fn client(mut self, client: Client) -> Self {
        self.inner = self.inner.client(client.inner.clone());
        self.client = Some(client);
        self
    }

    setters! {
        /// See [`crate::Election::ttl`]. Default 15 s.
        ttl(Duration);
        /// See [`crate::Election::lock_delay`]. Default 15 s.
        lock_delay(Duration);
        /// See [`crate::Election::session_name`]. Default `consul-lock: <key>`.
        session_name(String);
        /// See [`crate::Election::acquire_timeout`]. Default: wait until elected.
        acquire_timeout(Duration);
    }

    /// The election's key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The async election bound to a blocking client, and that client.
    fn parts(&self) -> Result<(crate::Election, Client)> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => Client::from_env()?,
        };
        Ok((self.inner.clone().client(client.inner.clone()), client))
    }

    /// Campaign and block until elected (see [`crate::Election::campaign`]).
    ///
    /// # Errors
    /// As [`crate::Election::campaign`].
    pub fn campaign(&self, value: Vec<u8>) -> Result<Leadership> {
        let (election, client) = self.parts()?;
        let inner = client.rt.block_on(async move { election.campaign(value).await })??;
        Ok(Leadership { inner, rt: client.rt.clone() })
    }

    /// Campaign, run `f` once elected, resign. `f` is not interrupted if the leadership is lost
    /// while it runs (a thread cannot be cancelled safely); the loss is reported afterwards as
    /// [`Error::LockLost`]. Check [`Leadership::is_leader`] inside long work.
    ///
    /// # Errors
    /// As [`campaign`](Self::campaign); [`Error::LockLost`]; resign errors.
    pub fn run_as_leader<T>(&self, value: Vec<u8>, f: impl FnOnce(&Leadership) -> T) -> Result<T> {
        let leadership = self.campaign(value)?;
        let out = f(&leadership);
        let key = leadership.key().to_owned();
        let held = leadership.is_leader();
        leadership.resign()?;
        if held {
            Ok(out)
        } else {
            Err(Error::LockLost { key })
        }
    }

    /// Who leads now (see [`crate::Election::leader`]).
    ///
    /// # Errors
    /// As [`crate::Election::leader`].
    pub fn leader(&self) -> Result<Option<Leader>> {
        let (election, client) = self.parts()?;
        client.rt.block_on(async move { election.leader().await })?
    }

    /// Follow the leader (see [`crate::Election::observe`]).
    ///
    /// # Errors
    /// Only when no client is set and none can be built from the environment.
    pub fn observe(&self) -> Result<LeaderWatch> {
        let (election, client) = self.parts()?;
        Ok(LeaderWatch { inner: Some(election.observe()), rt: client.rt.clone() })
    }
}

/// Blocking [`crate::Leadership`]. Dropping it resigns in the background (never blocks); the
/// runtime thread finishes that before it exits.
#[must_use = "the leadership is resigned as soon as it is dropped"]
#[derive(Debug)]
pub struct Leadership {
    // Field order matters: the leadership drops (spawning its resignation) before the runtime.
    inner: crate::Leadership,
    rt: Arc<Runtime>,
}

impl Leadership {
    /// The election's key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The Consul session that leads.
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// The fencing term (see [`crate::Leadership::term`]).
    pub fn term(&self) -> u64 {
        self.inner.term()
    }

    /// `true` while still leader (see [`crate::Leadership::is_leader`]).
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    /// Block until the leadership is known lost (see [`crate::Leadership::lost`]).
    pub fn lost(&self) {
        wait_lost(&self.rt, Some(held_lost(self.inner.watched_hold())), None);
    }

    /// Block until the leadership is known lost, or `timeout` passes; `true` if lost.
    pub fn lost_timeout(&self, timeout: Duration) -> bool {
        wait_lost(&self.rt, Some(held_lost(self.inner.watched_hold())), Some(timeout))
    }

    /// Replace the value while still leader (see [`crate::Leadership::proclaim`]).
    ///
    /// # Errors
    /// As [`crate::Leadership::proclaim`].
    pub fn proclaim(&self, value: Vec<u8>) -> Result<()> {
        let hold = self.inner.guard().hold.clone();
        self.rt.block_on(crate::election::leadership::proclaim(hold, value))?
    }

    /// Step down (see [`crate::Leadership::resign`]).
    ///
    /// # Errors
    /// As [`crate::Leadership::resign`].
    pub fn resign(self) -> Result<()> {
        let Leadership { inner, rt } = self;
        rt.block_on(inner.resign())?
    }
}

/// Blocking [`crate::LeaderWatch`]: [`next`](Self::next) blocks until the next state.
#[derive(Debug)]
pub struct LeaderWatch {
    inner: Option<crate::LeaderWatch>,
    rt: Arc<Runtime>,
}

impl LeaderWatch {
    /// Block until the next state (see [`crate::LeaderWatch::next`]); `Ok(None)`: nobody leads.
    ///
    /// # Errors
    /// As [`crate::LeaderWatch::next`]; the next call resumes.
    // Not an `Iterator`: `Ok(None)` means "nobody leads now", not the end; the watch never ends.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Leader>> {
        let mut watch = self
            .inner
            .take()
            .ok_or_else(|| Error::Cancelled("this watch was lost with a stopped runtime thread".into()))?;
        let (watch, result) = self.rt.block_on(async move {
            let r = watch.next().await;
            (watch, r)
        })?;
        self.inner = Some(watch);
        result
    }
}

super::guarded::blocking_guarded_writes!(Leadership, "Leadership");
