//! A held set of keys: its fencing token, how it is known lost, and how it is released — in one
//! transaction, explicitly, on drop (in the background), or as cleanup once lost. And the public
//! [`MultiLockGuard`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consul::endpoints::Released;
use crate::consul::key::queue_prefix;
use crate::consul::ops::MAX_TXN_OPS;
use crate::consul::retry;
use crate::error::Result;
use crate::mutex::lock;
use crate::primitive::hold::delete_if_ours;
use crate::session::lifecycle::{Claim, SessionCore};

pub(crate) struct MultiHold {
    /// Sorted, distinct.
    pub(crate) keys: Vec<String>,
    /// The keys, joined, for messages and errors.
    pub(crate) name: String,
    pub(crate) session: Arc<SessionCore>,
    own_session: bool,
    pub(crate) token: u64,
    lost: watch::Sender<bool>,
    finished: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    claims: Mutex<Vec<Claim>>,
    /// Our queue entries (when this acquire waited in line), deleted with the keys.
    entries: Mutex<Vec<String>>,
    runtime: Handle,
}

impl std::fmt::Debug for MultiHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("keys", &self.keys)
            .field("session", &self.session.id)
            .field("fencing_token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

/// What the acquire hands over with a held set.
pub(crate) struct Taken {
    pub(crate) keys: Vec<String>,
    pub(crate) session: Arc<SessionCore>,
    pub(crate) own_session: bool,
    pub(crate) token: u64,
    pub(crate) claims: Vec<Claim>,
    pub(crate) entries: Vec<String>,
    pub(crate) max_hold: Option<Duration>,
}

impl MultiHold {
    /// Must run inside the runtime that will own the background tasks.
    pub(crate) fn new(t: Taken) -> Arc<MultiHold> {
        let hold = Arc::new(MultiHold {
            name: t.keys.join(", "),
            keys: t.keys,
            session: t.session,
            own_session: t.own_session,
            token: t.token,
            lost: watch::Sender::new(false),
            finished: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            claims: Mutex::new(t.claims),
            entries: Mutex::new(t.entries),
            runtime: Handle::current(),
        });
        if let Some(limit) = t.max_hold {
            let weak = Arc::downgrade(&hold);
            let task = tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(h) = weak.upgrade() {
                    h.mark_lost("max_hold reached");
                }
            });
            lock(&hold.tasks).push(task.abort_handle());
        }
        hold
    }

    pub(crate) fn is_held(&self) -> bool {
        !self.finished.load(Ordering::SeqCst) && !self.is_lost()
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.session.is_lost()
    }

    /// Resolves once the set is known lost: through its session (one blocking query on the session,
    /// however many keys), or a guarded write or `max_hold` that found it lost.
    pub(crate) async fn wait_lost(&self) {
        let mut own = self.lost.subscribe();
        tokio::select! {
            _ = own.wait_for(|l| *l) => {}
            _ = self.session.wait_lost(true) => {}
        }
    }

    /// The set is lost (any key): report it and clean up — delete what is still ours, and destroy an
    /// own session — so no zombie keeps keys from others.
    pub(crate) fn mark_lost(&self, reason: &str) {
        if self.finished.load(Ordering::SeqCst) || self.lost.send_replace(true) {
            return;
        }
        tracing::warn!(keys = %self.name, session = %self.session.id, reason, "multi-lock lost");
        let job = self.job(true);
        self.runtime.spawn(async move {
            if let Err(e) = job.run().await {
                tracing::warn!(error = %e, "cleanup of a lost multi-lock failed; its session expires by its TTL");
            }
        });
    }

    fn job(&self, lost: bool) -> ReleaseJob {
        ReleaseJob {
            keys: self.keys.clone(),
            session: self.session.clone(),
            own_session: self.own_session,
            token: self.token,
            lost,
            claims: if lost { Vec::new() } else { std::mem::take(&mut *lock(&self.claims)) },
            entries: std::mem::take(&mut *lock(&self.entries)),
        }
    }

    /// Release now. Idempotent; a lost set only finishes its cleanup.
    pub(crate) async fn release(&self) -> Result<()> {
        match self.finish() {
            Some(job) => job.run().await,
            None => Ok(()),
        }
    }

    fn finish(&self) -> Option<ReleaseJob> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if *self.lost.borrow() {
            drop(std::mem::take(&mut *lock(&self.claims))); // cleanup already runs
            return None;
        }
        Some(self.job(self.session.is_lost()))
    }
}

impl crate::primitive::holding::Held for MultiHold {
    fn is_held(&self) -> bool {
        MultiHold::is_held(self)
    }

    async fn wait_lost(self: &Arc<Self>) {
        MultiHold::wait_lost(self).await
    }

    async fn release(&self) -> Result<()> {
        MultiHold::release(self).await
    }
}

impl Drop for MultiHold {
    fn drop(&mut self) {
        // Never block or panic here: release in the background on the runtime that acquired.
        if let Some(job) = self.finish() {
            self.runtime.spawn(async move {
                if let Err(e) = job.run().await {
                    tracing::warn!(error = %e, "background release of a multi-lock failed");
                }
            });
        }
    }
}

struct ReleaseJob {
    keys: Vec<String>,
    session: Arc<SessionCore>,
    own_session: bool,
    token: u64,
    lost: bool,
    claims: Vec<Claim>,
    entries: Vec<String>,
}

impl ReleaseJob {
    #[tracing::instrument(level = "debug", skip_all, fields(session = %self.session.id))]
    async fn run(self) -> Result<()> {
        let s = &self.session;
        let result = if self.own_session && s.lock_delay.is_zero() && !self.lost {
            // Behavior "delete": destroying our own session deletes every key and entry it holds,
            // in one write; safe only with a zero lock-delay, which the destroy would impose.
            s.destroy_now(Instant::now() + s.client.request_timeout()).await
        } else {
            self.delete_ours().await
        };
        if self.own_session {
            s.close();
        }
        drop(self.claims);
        result
    }

    /// One transaction deletes every key still carrying our token, and our queue entries; if some
    /// key changed (taken after a loss, or written by an operator), each key and entry goes on its
    /// own, owner-checked.
    async fn delete_ours(&self) -> Result<()> {
        let s = &self.session;
        let client = &s.client;
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        // List the queues too when the transaction has room (a read: it costs no write), so that
        // this process's next acquire of these keys queues behind whoever waits.
        let room = MAX_TXN_OPS >= 2 * keys.len() + self.entries.len();
        let queues: Vec<String> = if room { self.keys.iter().map(|k| queue_prefix(k)).collect() } else { Vec::new() };
        let deadline = Instant::now() + client.request_timeout();
        let released =
            retry::until(deadline, || client.txn_release_set(&keys, self.token, &s.id, &self.entries, &queues)).await?;
        match released {
            Released::Deleted { waiting } => {
                if room {
                    for k in &self.keys {
                        client.note_waiters(k, waiting);
                    }
                }
                Ok(())
            }
            Released::NotOurs => {
                if !self.lost {
                    tracing::warn!(keys = ?self.keys, "some key was no longer ours at release: the multi-lock had been lost");
                }
                for (i, k) in self.keys.iter().enumerate() {
                    let entry = self.entries.get(i).map(String::as_str);
                    delete_if_ours(client, k, &s.id, entry).await?;
                }
                Ok(())
            }
        }
    }
}

/// A held set of keys, returned by [`MultiLock::hold`](crate::MultiLock::hold): every key was
/// taken in one transaction, and all are held until the guard is released.
///
/// Like a [`LockGuard`](crate::LockGuard), it can be **lost** — losing any key loses the set:
/// check [`is_held`](MultiLockGuard::is_held) or await [`lost`](MultiLockGuard::lost), pass the
/// [`fencing_token`](MultiLockGuard::fencing_token) to what you protect, and write state kept in
/// Consul through [`put`](MultiLockGuard::put) / [`txn`](MultiLockGuard::txn).
///
/// # Drop
/// Dropping the guard releases every key in the background, on the runtime it was acquired on;
/// drop never blocks. Call [`release`](MultiLockGuard::release) and await it where it matters.
#[must_use = "the keys are released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct MultiLockGuard {
    pub(crate) hold: Arc<MultiHold>,
}

impl MultiLockGuard {
    /// The held keys, sorted, without duplicates.
    pub fn keys(&self) -> &[String] {
        &self.hold.keys
    }

    /// The Consul session holding the keys.
    pub fn session_id(&self) -> &str {
        &self.hold.session.id
    }

    /// The fencing token of the whole set: the index of the one transaction that took every key
    /// (each key's `ModifyIndex`). It strictly increases across successive holders of any member
    /// key, whether they took it alone or in a set, within one Consul cluster's life.
    pub fn fencing_token(&self) -> u64 {
        self.hold.token
    }

    /// `true` while every key is held: not released, not known lost, and the session's lease not run
    /// out. Cheap; no request.
    pub fn is_held(&self) -> bool {
        self.hold.is_held()
    }

    /// Resolves when the set is known lost: the session was destroyed or expired (watched with one
    /// blocking query on the session, started the first time this is awaited, however many keys),
    /// renewals failed for a TTL, `max_hold` ran out, or a guarded write found a key no longer ours.
    /// A member key deleted from outside while the session lives is seen by the next guarded write
    /// or at release. Once lost, always lost. Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::MultiLock::new(["accounts/1", "accounts/2"]).hold().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("lost the accounts: stop the transfer"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    /// }
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.hold.wait_lost().await
    }

    /// Release every key in one transaction — each deleted only if it still carries our token — with
    /// our queue entries, then destroy an own session (in the background). Releasing a lost set
    /// returns `Ok(())` at once: its cleanup started in the background when the loss was seen, and
    /// it never touches a key another session holds.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying for the client's request timeout (an own session is
    /// still destroyed, so the keys are freed at the latest when its TTL runs out).
    /// [`Error::Cancelled`](crate::Error::Cancelled) if the runtime shuts down meanwhile.
    ///
    /// # Cancel safety
    /// If the future is dropped, the release continues in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let guard = consul_lock::MultiLock::new(["accounts/1", "accounts/2"]).hold().await?;
    /// // … move money between the two accounts …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        let hold = self.hold.clone();
        crate::task::join(tokio::spawn(async move { hold.release().await }), "releasing the multi-lock").await?
    }
}
