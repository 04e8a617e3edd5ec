//! A held read-write lock: [`WriteGuard`] (the key, locked by the writer's session) and
//! [`ReadGuard`] (the reader's place in line), each a `Hold` given back by its [`Giveback`]; how a
//! reader leaves (and wakes the writer behind the last reader); the downgrade.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::Released;
use crate::consul::retry;
use crate::consul::rwlock_txn::Downgraded;
use crate::error::{Error, Result};
use crate::primitive::hold::{self, delete_if_ours, Hold};
use crate::rwlock::layout::{self, MARKER};
use crate::session::lifecycle::{Claim, SessionCore};

/// How a read-write lock's hold goes back.
pub(crate) enum Giveback {
    /// The key back to the marker and our place deleted, in one write.
    Writer { key: String, place: String },
    /// Our place deleted (listing the line in the same write); then, if we were the last reader
    /// before a waiting writer, that writer woken.
    Reader { key: String, place: String, created: u64 },
}

impl hold::Giveback for Giveback {
    fn give_back(&self, s: Arc<SessionCore>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> {
        match self {
            Giveback::Writer { key, place } => {
                let (key, place) = (key.clone(), place.clone());
                Box::pin(async move {
                    let c = &s.client;
                    let deadline = Instant::now() + c.request_timeout();
                    let released = retry::until(deadline, || c.txn_rw_release(&key, &s.id, MARKER, &place)).await?;
                    if released == Released::NotOurs {
                        tracing::warn!(%key, "the key was no longer ours at release: the write lock had been lost");
                    }
                    Ok(())
                })
            }
            Giveback::Reader { key, place, created } => {
                let (key, place, created) = (key.clone(), place.clone(), *created);
                Box::pin(async move { leave_as_reader(&s.client, &key, &place, &s.id, Some(created)).await })
            }
        }
    }
}

/// A reader leaves the line of `key`: its place deleted (owner-checked), the line listed in the same
/// write; if its place was created at `created` and it was the last reader before a waiting writer,
/// that writer's place is touched so that it wakes. Retried for one request timeout.
pub(crate) async fn leave_as_reader(
    client: &Client,
    key: &str,
    place: &str,
    sid: &str,
    created: Option<u64>,
) -> Result<()> {
    let deadline = Instant::now() + client.request_timeout();
    let line = layout::line_prefix(key);
    let Some(listing) = retry::until(deadline, || client.txn_rw_leave(place, sid, &line)).await? else {
        return Ok(()); // not ours any more: gone with our session
    };
    if let Some(writer) = created.and_then(|c| layout::to_wake(key, c, &listing)) {
        tracing::debug!(%key, writer = %writer.key, "last reader out: waking the writer");
        retry::until(deadline, || client.txn_rw_touch(writer)).await?;
    }
    Ok(())
}

/// The hold of a reader's place `place` (created at `created`) in the line of `key`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reader_hold(
    key: &str,
    place: String,
    created: u64,
    s: Arc<SessionCore>,
    own: bool,
    token: u64,
    claim: Option<Claim>,
    max_hold: Option<Duration>,
) -> Arc<Hold> {
    let hold = Hold::new(place.clone(), s, own, token, claim, max_hold);
    hold.set_giveback(Arc::new(Giveback::Reader { key: key.to_owned(), place, created }));
    hold
}

/// A held write lock, returned by [`RwLock::write`](crate::RwLock::write): nobody else holds the
/// lock, in either mode.
///
/// Like a [`LockGuard`](crate::LockGuard) it can be **lost** (its session expired or was destroyed,
/// the key was taken): check [`is_held`](WriteGuard::is_held) or await [`lost`](WriteGuard::lost),
/// and pass the [`fencing_token`](WriteGuard::fencing_token) to what you protect.
///
/// # Drop
/// Dropping the guard releases the lock in the background, on the runtime it was acquired on;
/// drop never blocks. Call [`release`](WriteGuard::release) and await it where it matters that the
/// lock is free when the call returns.
#[must_use = "the write lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct WriteGuard {
    pub(crate) hold: Arc<Hold>,
    /// The value our place carries (kept by a downgrade), its `CreateIndex` (our place in line),
    /// and when `max_hold` ends.
    pub(crate) value: Vec<u8>,
    pub(crate) created: u64,
    pub(crate) max_hold_at: Option<Instant>,
}

/// A held read lock, returned by [`RwLock::read`](crate::RwLock::read): no writer holds the lock;
/// other readers may.
///
/// It can be **lost** like any lock (its session expired or was destroyed, its place in line was
/// deleted): check [`is_held`](ReadGuard::is_held) or await [`lost`](ReadGuard::lost).
///
/// # Drop
/// Dropping the guard releases the read lock in the background, on the runtime it was acquired
/// on; drop never blocks.
#[must_use = "the read lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ReadGuard {
    pub(crate) hold: Arc<Hold>,
    pub(crate) key: String,
    pub(crate) created: u64,
}

impl ReadGuard {
    /// The read-write lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The Consul session holding our place.
    pub fn session_id(&self) -> &str {
        &self.hold.session.id
    }

    /// When this request arrived: the `CreateIndex` of its place in line. Requests are served in
    /// this order (the readers between two writers together); a downgraded writer keeps its own.
    pub fn arrival(&self) -> u64 {
        self.created
    }

    /// `true` while the read lock is held: not released, not known lost, and the session's lease
    /// not run out. Cheap; no request.
    pub fn is_held(&self) -> bool {
        self.hold.is_held()
    }

    /// Resolves when the read lock is known lost: renewal answered 404, the lease deadline passed,
    /// our place in line was deleted (watched with a blocking query for a guard with its own
    /// session, started the first time this is awaited; through the session for a shared one), or
    /// `max_hold` ran out. Once lost, always lost. Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").read().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("read lock lost: stop reading"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    /// }
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.hold.wait_lost().await
    }

    /// Release the read lock: delete our place (only if our session still holds it) and, if we
    /// were the last reader before a waiting writer, wake that writer; then destroy an own session
    /// in the background. Releasing a lost read lock cleans up and returns `Ok(())`.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying for the client's request timeout (an own session
    /// is still destroyed, which deletes our place). [`Error::Cancelled`] if the runtime shuts down
    /// meanwhile.
    ///
    /// # Cancel safety
    /// If the future is dropped, the release continues in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").read().await?;
    /// // … read, alongside other readers …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        let hold = self.hold.clone();
        crate::task::join(tokio::spawn(async move { hold.release().await }), "releasing the read lock").await?
    }
}

impl WriteGuard {
    /// The read-write lock's key.
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// The Consul session holding the key.
    pub fn session_id(&self) -> &str {
        &self.hold.session.id
    }

    /// When this request arrived: the `CreateIndex` of its place in line (see
    /// [`ReadGuard::arrival`]).
    pub fn arrival(&self) -> u64 {
        self.created
    }

    /// The fencing token: the `ModifyIndex` of the write that locked the key. It strictly increases
    /// across successive writers of the lock within one Consul cluster's life. Pass it to the
    /// storage you protect and have it reject writes with a token lower than one it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.hold.token
    }

    /// `true` while the write lock is held: not released, not known lost, and the session's lease
    /// not run out. Cheap; no request.
    pub fn is_held(&self) -> bool {
        self.hold.is_held()
    }

    /// Resolves when the write lock is known lost: renewal answered 404, the lease deadline passed,
    /// the key was deleted or taken (watched with a blocking query for a guard with its own
    /// session, started the first time this is awaited), or `max_hold` ran out. Once lost, always
    /// lost. Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").write().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("write lock lost: stop the migration"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    /// }
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.hold.wait_lost().await
    }

    /// Release the write lock: the key goes back to the marker (only if our session still holds
    /// it) and our place is deleted, in one write, which wakes exactly the readers queued behind us
    /// (or the next writer); then an own session is destroyed in the background. Releasing a lost
    /// write lock cleans up and returns `Ok(())`; it never touches a key another session holds.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying for the client's request timeout (an own session
    /// is still destroyed, which frees the key). [`Error::Cancelled`] if the runtime shuts down
    /// meanwhile.
    ///
    /// # Cancel safety
    /// If the future is dropped, the release continues in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::RwLock::new("datasets/users").write().await?;
    /// // … migrate, passing guard.fencing_token() along …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        let hold = self.hold.clone();
        crate::task::join(tokio::spawn(async move { hold.release().await }), "releasing the write lock").await?
    }

    /// Become a reader without letting anyone in between: in one write the key goes back to the
    /// marker and our place in line becomes a reader's — the same place, so the readers queued
    /// behind us join us at once and the writers behind us keep waiting, now for us as a reader.
    ///
    /// There is no upgrade (read to write): two readers upgrading at once would each wait for the
    /// other to leave, forever. Release the read lock and ask for the write lock instead (and
    /// re-check what you read: others may have written in between).
    ///
    /// # Errors
    /// [`Error::LockLost`] when the write lock was lost (nothing is written, and nothing is held
    /// afterwards); transport and Consul errors after retrying for the client's request timeout
    /// (what was held is then released, as for a lost lock).
    ///
    /// # Cancel safety
    /// The downgrade runs in a task that owns its outcome: if the future is dropped, the read lock
    /// it produces is released in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let writer = consul_lock::RwLock::new("datasets/users").write().await?;
    /// // … write the new version …
    /// let reader = writer.downgrade().await?;
    /// // … keep reading it while other readers join; no writer can slip in …
    /// reader.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn downgrade(self) -> Result<ReadGuard> {
        let WriteGuard { hold, value, created, max_hold_at } = self;
        let task = tokio::spawn(async move { downgrade(hold, value, created, max_hold_at).await });
        crate::task::join(task, "downgrading the write lock").await?
    }
}

/// The downgrade: end the write hold first (its watch would see the key leave our session), write,
/// and start a read hold of the same place; on failure, clean up as for a lost lock.
async fn downgrade(hold: Arc<Hold>, value: Vec<u8>, created: u64, max_hold_at: Option<Instant>) -> Result<ReadGuard> {
    let key = hold.key.clone();
    let lost = || Error::LockLost { key: key.clone() };
    let Some(place) = hold.queue_entry() else { return Err(lost()) };
    let Some(claim) = hold.hand_over() else { return Err(lost()) };
    let (s, own) = (hold.session.clone(), hold.own_session);
    let c = &s.client;
    let deadline = Instant::now() + c.request_timeout();
    let written = retry::until(deadline, || c.txn_rw_downgrade(&key, &s.id, MARKER, &place, &value)).await;
    match written {
        Ok(Downgraded::Done { index }) => {
            let max_hold =
                max_hold_at.map(|at| at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
            let read = reader_hold(&key, place, created, s, own, index, claim, max_hold);
            Ok(ReadGuard { hold: read, key, created })
        }
        other => {
            tracing::warn!(%key, "downgrade failed: the write lock is given up");
            if let Err(e) = delete_if_ours(c, &key, &s.id, Some(&place)).await {
                tracing::warn!(%key, error = %e, "cleanup after a failed downgrade failed; the session expires by its TTL");
            }
            if own {
                s.close();
            }
            drop(claim);
            match other {
                Err(e) => Err(e),
                _ => Err(lost()),
            }
        }
    }
}
