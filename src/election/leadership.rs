//! `Leadership`: a won election — the held lock behind it, its term, proclaiming a new value while
//! still leader, and resigning.

use std::sync::Arc;

use tokio::time::Instant;

use crate::consul::retry;
use crate::error::{Error, Result};
use crate::lock::guard::LockGuard;
use crate::metrics::Loss;
use crate::primitive::hold::Hold;

/// The flags a proclaim keeps on the key: the ones the lock wrote when it acquired.
const KEY_FLAGS: u64 = crate::consul::flags::LOCK_FLAGS;

/// Set `value` on the key of `hold` while it is still held (see [`Leadership::proclaim`]).
pub(crate) async fn proclaim(hold: Arc<Hold>, value: Vec<u8>) -> Result<()> {
    if value.len() > crate::MAX_VALUE_BYTES {
        return Err(Error::InvalidConfig(format!(
            "value is {} bytes; Consul stores at most {} bytes in a key",
            value.len(),
            crate::MAX_VALUE_BYTES
        )));
    }
    let lost = || Error::LockLost { key: hold.key.clone() };
    if !hold.is_held() {
        return Err(lost());
    }
    let client = &hold.session.client;
    let deadline = Instant::now() + client.request_timeout();
    match retry::until(deadline, || client.txn_proclaim(&hold.key, &hold.session.id, &value, KEY_FLAGS)).await? {
        Some(_) => Ok(()),
        None => {
            hold.mark_lost(Loss::Watch, "proclaim found the key deleted or held by another session");
            Err(lost())
        }
    }
}

/// A won election, returned by [`Election::campaign`](crate::Election::campaign).
///
/// Leadership can be **lost** (see [`Election`](crate::Election)): await [`lost`](Self::lost) or
/// check [`is_leader`](Self::is_leader), and pass [`term`](Self::term) to what you write to.
///
/// # Drop
/// Dropping it resigns in the background, like dropping a [`LockGuard`] (and with the same caveat
/// at runtime shutdown: call [`resign`](Self::resign) and await it where that matters).
#[must_use = "the leadership is resigned as soon as it is dropped"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// A leader with its own session watches its key from the start: a leader deleted from outside
    /// notices at once and cleans up its queue entry, so the candidates waiting behind it move on.
    /// On a shared [`Session`](crate::Session) the watch starts at the first [`lost`](Self::lost).
    pub(crate) fn new(guard: LockGuard) -> Self {
        guard.hold.start_watch();
        Leadership { guard }
    }

    /// The election's key.
    pub fn key(&self) -> &str {
        self.guard.key()
    }

    /// The Consul session that leads.
    pub fn session_id(&self) -> &str {
        self.guard.session_id()
    }

    /// The fencing term: the `ModifyIndex` of the campaign's winning write (the lock's fencing
    /// token). It strictly increases from leader to leader within one Consul cluster's life.
    pub fn term(&self) -> u64 {
        self.guard.fencing_token()
    }

    /// `true` while still leader (see [`LockGuard::is_held`]). Cheap; no request.
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when the leadership is known lost (see [`LockGuard::lost`]): the session expired or
    /// was destroyed, the key was deleted or taken, or renewals failed for a TTL. Once lost, always
    /// lost. Infallible: loss is a state, not an error.
    ///
    /// A leadership with its own session watches its key from the start. One on a shared
    /// [`Session`](crate::Session) starts watching it here (one blocking query for the rest of the
    /// term): until then it learns of a key deleted or taken from outside only at its next
    /// [`proclaim`](Self::proclaim), and the candidates in line wait until it does.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let leadership = consul_lock::Election::new("svc/leader").campaign(b"me".to_vec()).await?;
    /// leadership.lost().await;
    /// eprintln!("no longer leader: stop");
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.watched_hold();
        self.guard.lost().await
    }

    /// The hold behind this leadership, its key watched from now on (for [`lost`](Self::lost) and
    /// the blocking mirror's).
    pub(crate) fn watched_hold(&self) -> Arc<Hold> {
        self.guard.hold.watch_key_now();
        self.guard.hold.clone()
    }

    /// Replace the value observers see, only while still leader: one transaction that checks our
    /// session still holds the key and sets the value (keeping the key's flags). The term does not
    /// change.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the leadership is lost (known locally, or because the key is gone or
    /// held by another session — the new leader's value is never touched; the leadership then
    /// reports lost); [`Error::InvalidConfig`] for a value over
    /// [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES); transport and Consul errors after retrying for
    /// the client's request timeout.
    ///
    /// # Cancel safety
    /// If the future is dropped after the request was sent, the key holds either the old or the
    /// new value (a retried write sets the same value).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let leadership = consul_lock::Election::new("svc/leader").campaign(b"10.0.0.7:8080".to_vec()).await?;
    /// leadership.proclaim(b"10.0.0.7:9090".to_vec()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn proclaim(&self, value: Vec<u8>) -> Result<()> {
        proclaim(self.guard.hold.clone(), value).await
    }

    /// Step down: the key is deleted (owner-checked; no lock-delay), so the next candidate in line
    /// takes over at once, then the campaign's own session is destroyed. On a shared
    /// [`Session`](crate::Session) resigning is that one write, and the session stays alive for
    /// the next campaign. Resigning a lost leadership only cleans up and returns `Ok(())`; it never
    /// touches a key another session holds.
    ///
    /// # Errors
    /// As [`LockGuard::release`].
    ///
    /// # Cancel safety
    /// If the future is dropped, the resignation completes in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let leadership = consul_lock::Election::new("svc/leader").campaign(b"me".to_vec()).await?;
    /// leadership.resign().await?;
    /// # Ok(()) }
    /// ```
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }

    /// The lock guard behind this leadership (for the blocking mirror).
    pub(crate) fn guard(&self) -> &LockGuard {
        &self.guard
    }
}
