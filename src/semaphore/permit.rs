//! A held semaphore slot: [`SemaphorePermit`] and its state — the token, how the slot is known
//! lost, and how it is given back (explicitly, on drop in the background, or as cleanup once lost):
//! leave `Holders` by check-and-set, delete the contender key only if ours, then the session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::{Left, SemaphoreWrite};
use crate::consul::flags::SEMAPHORE_FLAGS;
use crate::consul::retry;
use crate::consul::watch::Watch;
use crate::error::Result;
use crate::holder::KvEntry;
use crate::mutex::lock;
use crate::primitive::hold::delete_if_ours;
use crate::primitive::holding::Held;
use crate::semaphore::slots::{Layout, Slots};
use crate::session::lifecycle::{Claim, SessionCore};

/// Rounds of read + check-and-set a leave tries before giving up (each round lost a race).
const MAX_LEAVE_ROUNDS: u32 = 32;

pub(crate) struct Permit {
    pub(crate) layout: Layout,
    pub(crate) contender: String,
    pub(crate) session: Arc<SessionCore>,
    own_session: bool,
    pub(crate) token: u64,
    /// The coordination key as last seen (value and ModifyIndex), for a release without a read.
    known: Mutex<Option<(Slots, u64)>>,
    lost: watch::Sender<bool>,
    finished: AtomicBool,
    watch_started: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    claim: Mutex<Option<Claim>>,
    runtime: Handle,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("prefix", &self.layout.prefix)
            .field("session", &self.session.id)
            .field("token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

impl Permit {
    /// Must run inside the runtime that will own the background tasks.
    pub(crate) fn new(
        layout: Layout,
        session: Arc<SessionCore>,
        own_session: bool,
        token: u64,
        slots: Slots,
        claim: Option<Claim>,
    ) -> Arc<Permit> {
        session.holding(true);
        Arc::new(Permit {
            contender: layout.contender(&session.id),
            layout,
            session,
            own_session,
            token,
            known: Mutex::new(Some((slots, token))),
            lost: watch::Sender::new(false),
            finished: AtomicBool::new(false),
            watch_started: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            claim: Mutex::new(claim),
            runtime: Handle::current(),
        })
    }

    pub(crate) fn is_held(&self) -> bool {
        !self.finished.load(Ordering::SeqCst) && !self.is_lost()
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.session.is_lost()
    }

    /// Resolves once the slot is known lost. Starts the watch over the prefix on first use.
    pub(crate) async fn wait_lost(self: &Arc<Self>) {
        if !self.watch_started.swap(true, Ordering::SeqCst) && !self.finished.load(Ordering::SeqCst) {
            let t = self.runtime.spawn(watch_prefix(Arc::downgrade(self)));
            lock(&self.tasks).push(t.abort_handle());
        }
        let mut own = self.lost.subscribe();
        tokio::select! {
            _ = own.wait_for(|l| *l) => {}
            _ = self.session.wait_lost(!self.own_session) => {}
        }
    }

    /// The slot is lost: report it and clean up (leave `Holders`, delete the contender key if still
    /// ours, destroy an own session) so that no zombie keeps a slot.
    pub(crate) fn mark_lost(&self, reason: &str) {
        if self.finished.load(Ordering::SeqCst) || self.lost.send_replace(true) {
            return;
        }
        tracing::warn!(prefix = %self.layout.prefix, session = %self.session.id, reason, "semaphore slot lost");
        let job = self.job(true);
        self.runtime.spawn(async move {
            if let Err(e) = job.run().await {
                tracing::warn!(error = %e, "cleanup of a lost semaphore slot failed; its session expires by its TTL");
            }
        });
    }

    fn job(&self, lost: bool) -> LeaveJob {
        LeaveJob {
            layout: self.layout.clone(),
            contender: self.contender.clone(),
            session: self.session.clone(),
            own_session: self.own_session,
            known: lock(&self.known).take(),
            claim: if lost { None } else { lock(&self.claim).take() },
        }
    }

    /// Release now. Idempotent; a lost slot only finishes its cleanup.
    pub(crate) async fn release(&self) -> Result<()> {
        match self.finish() {
            Some(job) => job.run().await,
            None => Ok(()),
        }
    }

    fn finish(&self) -> Option<LeaveJob> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.session.holding(false);
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if *self.lost.borrow() {
            // Cleanup already runs; only the in-process claim is left to drop.
            drop(lock(&self.claim).take());
            return None;
        }
        Some(self.job(false))
    }
}

impl Held for Permit {
    fn is_held(&self) -> bool {
        Permit::is_held(self)
    }

    async fn wait_lost(self: &Arc<Self>) {
        Permit::wait_lost(self).await
    }

    async fn release(&self) -> Result<()> {
        Permit::release(self).await
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(job) = self.finish() {
            self.runtime.spawn(async move {
                if let Err(e) = job.run().await {
                    tracing::warn!(error = %e, "background release of a semaphore slot failed");
                }
            });
        }
    }
}

struct LeaveJob {
    layout: Layout,
    contender: String,
    session: Arc<SessionCore>,
    own_session: bool,
    known: Option<(Slots, u64)>,
    claim: Option<Claim>,
}

impl LeaveJob {
    #[tracing::instrument(level = "debug", skip_all, fields(prefix = %self.layout.prefix, session = %self.session.id))]
    async fn run(self) -> Result<()> {
        let s = &self.session;
        let result = leave(&s.client, &self.layout, &s.id, &self.contender, self.known).await;
        if self.own_session {
            s.close();
        }
        drop(self.claim);
        result
    }
}

/// Leave the holders of `layout`'s semaphore and delete our contender key (owner-checked), in one
/// write when nobody wrote the coordination key since `known`; else read it and try again.
async fn leave(
    client: &Client,
    layout: &Layout,
    sid: &str,
    contender: &str,
    known: Option<(Slots, u64)>,
) -> Result<()> {
    let deadline = Instant::now() + client.request_timeout();
    let mut state = known;
    let mut delete_contender = true;
    for _ in 0..MAX_LEAVE_ROUNDS {
        let (mut slots, index) = match state.take() {
            Some(s) => s,
            None => match read_slots(client, layout, deadline).await? {
                Some(s) => s,
                None => break, // no coordination key (or not a semaphore's any more): nothing to leave
            },
        };
        if !slots.holds(sid) {
            break;
        }
        slots.holders.remove(sid);
        let json = slots.to_json();
        let w = SemaphoreWrite {
            flags: SEMAPHORE_FLAGS,
            lock_key: &layout.lock_key,
            slots: &json,
            index,
            session: sid,
            contender,
            dequeue: None,
        };
        match retry::until(deadline, || client.txn_leave(&w, delete_contender)).await? {
            Left::Done => return Ok(()),
            Left::Stale => {}
            Left::NotOurs => {
                delete_contender = false;
                slots.holders.insert(sid.to_owned(), true);
                state = Some((slots, index));
            }
        }
    }
    if delete_contender {
        delete_if_ours(client, contender, sid, None).await?;
    }
    Ok(())
}

/// The coordination key's value and ModifyIndex; `None` when absent or not a semaphore's.
async fn read_slots(client: &Client, layout: &Layout, deadline: Instant) -> Result<Option<(Slots, u64)>> {
    let entry = retry::until(deadline, || client.kv_get(&layout.lock_key)).await?;
    let index = entry.as_ref().map_or(0, |e| e.modify_index);
    Ok(layout.decode(entry.as_ref()).ok().flatten().map(|s| (s, index)))
}

/// Watch the prefix: the slot is lost when our contender key is gone (or another's) or our session
/// left `Holders` (pruned by another contender, or the key deleted). Keeps `known` fresh.
async fn watch_prefix(weak: Weak<Permit>) {
    let (mut watch, sid) = match weak.upgrade() {
        Some(p) => (Watch::prefix(&p.session.client, &p.layout.dir).after(p.token), p.session.id.clone()),
        None => return,
    };
    loop {
        let entries = watch.follow().await;
        let Some(permit) = weak.upgrade() else { return };
        match still_held(&permit, &entries, &sid) {
            Some(state) => *lock(&permit.known) = Some(state),
            None => {
                permit.mark_lost("our contender key is gone or we were removed from the holders");
                return;
            }
        }
    }
}

/// `Some(coordination state)` while `entries` show us holding our slot.
fn still_held(permit: &Permit, entries: &[KvEntry], sid: &str) -> Option<(Slots, u64)> {
    let ours = entries.iter().any(|e| e.key == permit.contender && e.holder_session() == Some(sid));
    let entry = permit.layout.find_lock(entries)?;
    let slots = permit.layout.decode(Some(entry)).ok().flatten()?;
    (ours && slots.holds(sid)).then_some((slots, entry.modify_index))
}

/// A held semaphore slot, returned by [`Semaphore::hold`](crate::Semaphore::hold).
///
/// Like a [`LockGuard`](crate::LockGuard), a permit can be **lost** (its session expired or was
/// destroyed, its contender key was deleted, or another contender pruned it from the holders):
/// check [`is_held`](SemaphorePermit::is_held) or await [`lost`](SemaphorePermit::lost), and pass
/// the [`token`](SemaphorePermit::token) to what you protect.
///
/// # Drop
/// Dropping the permit releases the slot in the background, on the runtime it was acquired on;
/// drop never blocks. Call [`release`](SemaphorePermit::release) and await it where it matters
/// that the slot is free when the call returns.
#[must_use = "the slot is released as soon as the permit is dropped"]
#[derive(Debug)]
pub struct SemaphorePermit {
    pub(crate) permit: Arc<Permit>,
}

impl SemaphorePermit {
    /// The semaphore's prefix.
    pub fn prefix(&self) -> &str {
        &self.permit.layout.prefix
    }

    /// Our contender key, `PREFIX/<session-id>`.
    pub fn key(&self) -> &str {
        &self.permit.contender
    }

    /// The Consul session holding the contender key.
    pub fn session_id(&self) -> &str {
        &self.permit.session.id
    }

    /// The token: the `ModifyIndex` of the check-and-set of `PREFIX/.lock` that admitted us. It
    /// strictly increases across admissions to one semaphore within one Consul cluster's life.
    pub fn token(&self) -> u64 {
        self.permit.token
    }

    /// `true` while the slot is held: not released, not known lost, and the session's lease not
    /// run out. Cheap; no request.
    pub fn is_held(&self) -> bool {
        self.permit.is_held()
    }

    /// Resolves when the slot is known lost: renewal answered 404, the lease deadline passed, our
    /// contender key was deleted, or our session was removed from the holders (watched with a
    /// blocking query on the prefix, started the first time this is awaited). Once lost, always
    /// lost. Infallible: loss is a state, not an error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing (the watch, once started, lives as long as
    /// the permit).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let permit = consul_lock::Semaphore::new("jobs/encoder", 3).hold().await?;
    /// tokio::select! {
    ///     _ = permit.lost() => eprintln!("slot lost: stop encoding"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    /// }
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        self.permit.wait_lost().await
    }

    /// Give the slot back: leave `Holders` by check-and-set and delete our contender key (only if
    /// our session still holds it) — one write when nobody else wrote meanwhile — then destroy an
    /// own session in the background. Releasing a lost permit returns `Ok(())` at once: its cleanup
    /// started in the background when the loss was seen.
    ///
    /// # Errors
    /// Transport or Consul errors after retrying for the client's request timeout (the session is
    /// still destroyed, so the slot is freed for others when it is pruned).
    /// [`Error::Cancelled`](crate::Error::Cancelled) if the runtime shuts down meanwhile.
    ///
    /// # Cancel safety
    /// If the future is dropped, the release continues in the background.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let permit = consul_lock::Semaphore::new("jobs/encoder", 3).hold().await?;
    /// // … one of at most 3 encoders …
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        let permit = self.permit.clone();
        crate::task::join(tokio::spawn(async move { permit.release().await }), "releasing the semaphore slot").await?
    }
}
