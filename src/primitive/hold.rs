//! The state of one held lock: its fencing token, how it is known lost, and how it is released —
//! explicitly, on drop (in the background), or as cleanup once lost. Also the crate's one
//! owner-checked delete with retries ([`delete_if_ours`]). A primitive whose key goes back in
//! another way than the owner-checked delete (the read-write lock's) gives the hold a [`Giveback`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::Released;
use crate::consul::local::LocalKey;
use crate::consul::retry;
use crate::consul::watch::Watch;
use crate::error::Result;
use crate::metrics::{self, Loss};
use crate::mutex::lock;
use crate::primitive::holding::Held;
use crate::session::lifecycle::{Claim, SessionCore};

/// Delete `key` (and `also`, a queue entry) only if `session` holds it, retried for one request
/// timeout. Never touches a key another session holds.
pub(crate) async fn delete_if_ours(client: &Client, key: &str, session: &str, also: Option<&str>) -> Result<Released> {
    let deadline = Instant::now() + client.request_timeout();
    retry::until(deadline, || client.txn_release(key, session, also, None)).await
}

/// The release of a held lock: [`delete_if_ours`] that also lists the key's queue, and remembers in
/// the client whether others wait, so that this process's next acquire of the key queues behind
/// them instead of overtaking them.
async fn release_key(client: &Client, key: &str, session: &str, also: Option<&str>) -> Result<Released> {
    let deadline = Instant::now() + client.request_timeout();
    let queue = crate::consul::key::queue_prefix(key);
    let released = retry::until(deadline, || client.txn_release(key, session, also, Some(&queue))).await?;
    if let Released::Deleted { waiting } = released {
        client.note_waiters(key, waiting);
    }
    Ok(released)
}

/// How a hold gives its key back at release, instead of the owner-checked delete (never used for
/// the cleanup of a lost hold, which deletes what is still ours). Runs once, in the release's task.
pub(crate) trait Giveback: Send + Sync + 'static {
    fn give_back(&self, session: Arc<SessionCore>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>>;
}

pub(crate) struct Hold {
    pub(crate) key: String,
    pub(crate) session: Arc<SessionCore>,
    /// The session was created for this lock alone (not a shared [`Session`](crate::Session)).
    pub(crate) own_session: bool,
    pub(crate) token: u64,
    lost: watch::Sender<bool>,
    finished: AtomicBool,
    watch_started: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    claim: Mutex<Option<Claim>>,
    /// Fair mode: our entry in the key's queue, deleted with the key at release.
    queue_entry: Mutex<Option<String>>,
    /// Our queue entry, marked as kept alive in this process until it is deleted (the waiter behind
    /// it in this process waits for that instead of a blocking query).
    entry_kept: Mutex<Option<LocalKey>>,
    giveback: Mutex<Option<Arc<dyn Giveback>>>,
    runtime: Handle,
    metrics: metrics::HeldLock,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("key", &self.key)
            .field("session", &self.session.id)
            .field("fencing_token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

impl Hold {
    /// Must run inside the runtime that will own the background tasks.
    pub(crate) fn new(
        key: String,
        session: Arc<SessionCore>,
        own_session: bool,
        token: u64,
        claim: Option<Claim>,
        max_hold: Option<Duration>,
    ) -> Arc<Hold> {
        let metrics = metrics::HeldLock::start(session.client.metrics_key_label(), &key, &session.metrics);
        session.holding(true);
        let hold = Arc::new(Hold {
            key,
            session,
            own_session,
            token,
            lost: watch::Sender::new(false),
            finished: AtomicBool::new(false),
            watch_started: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            claim: Mutex::new(claim),
            queue_entry: Mutex::new(None),
            entry_kept: Mutex::new(None),
            giveback: Mutex::new(None),
            runtime: Handle::current(),
            metrics,
        });
        if let Some(limit) = max_hold {
            let weak = Arc::downgrade(&hold);
            let t = tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(h) = weak.upgrade() {
                    h.mark_lost(Loss::MaxHold, "max_hold reached");
                }
            });
            lock(&hold.tasks).push(t.abort_handle());
        }
        hold
    }

    /// Fair mode: the queue entry this hold owns, deleted with the key at release.
    pub(crate) fn set_queue_entry(&self, entry: Option<String>) {
        *lock(&self.queue_entry) = entry;
    }

    /// The queue entry this hold owns, with its in-process mark (let go once it is deleted).
    pub(crate) fn set_kept_queue_entry(&self, entry: Option<(String, Option<LocalKey>)>) {
        let (entry, kept) = entry.unzip();
        self.set_queue_entry(entry);
        *lock(&self.entry_kept) = kept.flatten();
    }

    /// Release by `giveback` instead of the owner-checked delete.
    pub(crate) fn set_giveback(&self, giveback: Arc<dyn Giveback>) {
        *lock(&self.giveback) = Some(giveback);
    }

    /// The queue entry this hold owns, if any.
    pub(crate) fn queue_entry(&self) -> Option<String> {
        lock(&self.queue_entry).clone()
    }

    /// End this hold without releasing anything, because its key now lives on in another hold (a
    /// downgrade): stop its tasks and hand over its in-process claim. `None` when it had already
    /// ended (released or lost).
    pub(crate) fn hand_over(&self) -> Option<Option<Claim>> {
        if self.is_lost() || self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.metrics.finished(&self.session.metrics, false);
        Some(lock(&self.claim).take())
    }

    /// Held: not released, not known lost, and the session's lease deadline not passed.
    pub(crate) fn is_held(&self) -> bool {
        !self.finished.load(Ordering::SeqCst) && !self.is_lost()
    }

    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.session.is_lost()
    }

    /// Resolves once the lock is known lost. Starts the watch on first use: a blocking query on the
    /// key for a lock with its own session, or one on the session for a shared session.
    pub(crate) async fn wait_lost(self: &Arc<Self>) {
        if !self.own_session {
            let mut own = self.lost.subscribe();
            tokio::select! {
                _ = own.wait_for(|l| *l) => {}
                _ = self.session.wait_lost(true) => {}
            }
            return;
        }
        self.start_watch();
        let mut own = self.lost.subscribe();
        let mut session = self.session.subscribe();
        tokio::select! {
            _ = own.wait_for(|l| *l) => {}
            _ = session.wait_for(|l| *l) => {}
        }
    }

    /// Start watching the key now rather than at the first [`wait_lost`](Self::wait_lost) (a lock
    /// with its own session; a no-op otherwise and once started). One blocking query at a time.
    pub(crate) fn start_watch(self: &Arc<Self>) {
        if self.own_session {
            self.watch_key_now();
        }
    }

    /// Watch the key from now on, whatever the session: a lock on a shared session is otherwise
    /// known lost only through its session (a leadership asks for this at its first `lost()`).
    /// A no-op once started or released.
    pub(crate) fn watch_key_now(self: &Arc<Self>) {
        if self.finished.load(Ordering::SeqCst) || self.watch_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let t = self.runtime.spawn(watch_key(Arc::downgrade(self)));
        lock(&self.tasks).push(t.abort_handle());
    }

    /// The lock is lost (key taken or deleted, or max_hold): report it and clean up — the
    /// owner-checked delete (a no-op if the key is no longer ours) and, for an own session, its
    /// destruction — so no zombie keeps the key from others.
    pub(crate) fn mark_lost(&self, loss: Loss, reason: &str) {
        if self.finished.load(Ordering::SeqCst) || self.lost.send_replace(true) {
            return;
        }
        tracing::warn!(key = %self.key, session = %self.session.id, reason, "lock lost");
        self.metrics.lost(&self.session.metrics, loss);
        let session = self.session.clone();
        let key = self.key.clone();
        let own = self.own_session;
        let entry = lock(&self.queue_entry).clone();
        let kept = lock(&self.entry_kept).take();
        self.runtime.spawn(async move {
            if let Err(e) = delete_if_ours(&session.client, &key, &session.id, entry.as_deref()).await {
                tracing::warn!(%key, error = %e, "cleanup of a lost lock failed; its session expires by its TTL");
            }
            drop(kept);
            if own {
                session.close();
            }
        });
    }

    /// Release now. Idempotent; a lost lock only finishes its cleanup and returns `Ok(())`.
    pub(crate) async fn release(&self) -> Result<()> {
        match self.finish() {
            Some(job) => job.run().await,
            None => Ok(()),
        }
    }

    /// Take what a release needs, exactly once.
    fn finish(&self) -> Option<ReleaseJob> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.session.holding(false);
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.metrics.finished(&self.session.metrics, self.is_lost());
        Some(ReleaseJob {
            key: self.key.clone(),
            session: self.session.clone(),
            own_session: self.own_session,
            lost: self.is_lost(),
            claim: lock(&self.claim).take(),
            queue_entry: lock(&self.queue_entry).take(),
            entry_kept: lock(&self.entry_kept).take(),
            giveback: lock(&self.giveback).take(),
        })
    }
}

impl Held for Hold {
    fn is_held(&self) -> bool {
        Hold::is_held(self)
    }

    async fn wait_lost(self: &Arc<Self>) {
        Hold::wait_lost(self).await
    }

    async fn release(&self) -> Result<()> {
        Hold::release(self).await
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Never block or panic here: release in the background on the runtime that acquired.
        if let Some(job) = self.finish() {
            self.runtime.spawn(async move {
                if let Err(e) = job.run().await {
                    tracing::warn!(error = %e, "background release failed");
                }
            });
        }
    }
}

struct ReleaseJob {
    key: String,
    session: Arc<SessionCore>,
    own_session: bool,
    lost: bool,
    claim: Option<Claim>,
    queue_entry: Option<String>,
    entry_kept: Option<LocalKey>,
    giveback: Option<Arc<dyn Giveback>>,
}

impl ReleaseJob {
    #[tracing::instrument(level = "debug", skip_all, fields(key = %self.key, session = %self.session.id))]
    async fn run(self) -> Result<()> {
        let s = &self.session;
        // Whether a committed write of ours deleted the queue entry (if any).
        let mut deleted = false;
        let result = if self.lost {
            // Cleanup was started when the loss was seen; never touch a key that may be someone else's.
            Ok(())
        } else if let Some(giveback) = self.giveback {
            giveback.give_back(s.clone()).await
        } else if self.own_session && s.lock_delay.is_zero() {
            // Behavior "delete": destroying our own session deletes exactly the keys it holds, in one
            // write. Safe only with a zero lock-delay, which the destroy would otherwise impose.
            deleted = true;
            s.destroy_now(Instant::now() + s.client.request_timeout()).await
        } else {
            // In fair mode our queue entry goes in the same write.
            let entry = self.queue_entry.as_deref();
            match release_key(&s.client, &self.key, &s.id, entry).await {
                Ok(Released::Deleted { .. }) => {
                    deleted = true;
                    Ok(())
                }
                Ok(Released::NotOurs) => {
                    tracing::warn!("the key was no longer ours at release: the lock had been lost");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        if self.own_session {
            s.close();
        }
        drop(self.claim);
        // The waiter behind our entry (in this process) may go: at once if our write deleted it.
        match (self.entry_kept, &result) {
            (Some(kept), Ok(())) if deleted => kept.deleted(),
            (kept, _) => drop(kept),
        }
        result
    }
}

/// Watch the key of a lock with its own session: lost when the key is deleted or another session
/// holds it (the session being destroyed deletes the key, so this sees that too).
async fn watch_key(weak: Weak<Hold>) {
    let (mut watch, sid) = match weak.upgrade() {
        Some(h) => (Watch::key(&h.session.client, &h.key).after(h.token).for_holder(), h.session.id.clone()),
        None => return,
    };
    loop {
        let entry = watch.follow().await;
        let Some(hold) = weak.upgrade() else { return };
        if entry.as_ref().and_then(|e| e.holder_session()) != Some(sid.as_str()) {
            hold.mark_lost(Loss::Watch, "the key was deleted or is held by another session");
            return;
        }
    }
}
