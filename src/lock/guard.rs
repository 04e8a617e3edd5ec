//! `LockGuard`: proof that a lock is held, with its fencing token, loss signal and release.

use std::sync::Arc;

use crate::error::Result;
use crate::primitive::hold::Hold;

/// A held lock, returned by [`EphemeralLock::hold`](crate::EphemeralLock::hold).
///
/// A held lock can still be **lost** (its session expired, was destroyed, or the key was taken):
/// check [`is_held`](LockGuard::is_held) or await [`lost`](LockGuard::lost), and pass the
/// [`fencing_token`](LockGuard::fencing_token) to the resources you protect.
///
/// # Drop
/// Dropping the guard releases the lock in the background, on the runtime it was acquired on; drop
/// never blocks. If that runtime is shutting down (say, at the end of `main`), the background
/// release may not run and the key stays held until the session's TTL expires: call
/// [`release`](LockGuard::release) and await it where that matters.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    pub(crate) hold: Arc<Hold>,
}

impl LockGuard {
    /// The locked key.
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// The Consul session holding the key.
    pub fn session_id(&self) -> &str {
        &self.hold.session.id
    }

    /// The fencing token: the `ModifyIndex` of the write that acquired the key. It strictly increases
    /// across successive holders of a key within one Consul cluster's life. Pass it to the storage you
    /// protect and have it reject writes with a token lower than one it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.hold.token
    }

    /// `true` while the lock is held: not released, not known lost, and the session's lease (last
    /// successful renewal sent + TTL) has not run out. Cheap; no request.
    pub fn is_held(&self) -> bool {
        self.hold.is_held()
    }

    /// Resolves when the lock is known lost: renewal answered 404, the key was deleted or taken
    /// (watched with a blocking query, started the first time this is awaited), `max_hold` ran out,
    /// or the lease deadline passed without a successful renewal. Once lost, always lost.
    ///
    /// Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing (the watch, once started, lives as long as
    /// the guard).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::EphemeralLock::new("rotate/key").hold().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("lock lost: stop writing"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    /// }
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.hold.wait_lost().await
    }

    /// Release the lock: delete the key only if our session still holds it, then destroy the
    /// session (in the background). Releasing a lost lock returns `Ok(())` at once: its cleanup (the
    /// same owner-checked delete) started in the background when the loss was seen, and it never
    /// touches a key another session holds.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying for the client's request timeout. The session is
    /// still destroyed in the background, so the key is freed at the latest when its TTL runs out.
    /// [`Error::Cancelled`](crate::Error::Cancelled) if the runtime shuts down before the release
    /// finished (the key then stays held until the session's TTL runs out).
    ///
    /// # Panics
    /// Only by resuming a panic of the release task itself (a bug), never for Consul's answers.
    ///
    /// # Cancel safety
    /// If the future is dropped, the release continues in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::EphemeralLock::new("my/key").hold().await?;
    /// // … critical section …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        let hold = self.hold.clone();
        // Run in a task that owns the outcome: dropping this future cannot stop a release half-way.
        crate::task::join(tokio::spawn(async move { hold.release().await }), "releasing the lock").await?
    }
}
