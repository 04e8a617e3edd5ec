//! Taking a semaphore slot, run in a task that owns every request's outcome (as the lock's
//! acquire), so that a dropped caller never leaves a contender key, a holder entry, a queue entry or
//! a session.
//!
//! Steps: claim the contender key in-process (shared sessions) → read the prefix (flags and limit
//! are checked here, before any write) → a live session → [`Next`]: with a slot free and nobody in
//! line, one transaction holds our contender key and check-and-sets `PREFIX/.lock` with us among the
//! (pruned) holders; otherwise we take a place in line (`PREFIX/.lock/.consul-lock-queue/<session>`,
//! the lock's queue) and wait for our predecessor's entry to go; the first in line waits for a change
//! of the prefix and makes the attempt, which also deletes its entry — so a release wakes one
//! waiter, not all of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::{Admission, SemaphoreWrite, SessionSpec};
use crate::consul::flags::SEMAPHORE_FLAGS;
use crate::consul::retry;
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, KvEntry};
use crate::primitive::procedure::Procedure;
use crate::primitive::queue::{self, Place, Waited};
use crate::semaphore::permit::Permit;
use crate::semaphore::slots::{Layout, View};
use crate::session::lifecycle::SessionCore;
use crate::task::{Step, Stop};

/// Everything a semaphore acquire needs, validated before any request.
pub(crate) struct Plan {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    pub(crate) limit: u32,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) spec: SessionSpec,
    pub(crate) acquire_timeout: Duration,
    pub(crate) shared: Option<Arc<SessionCore>>,
}

type Reply = Result<Option<Arc<Permit>>>;

/// What to do with a listing of the prefix.
enum Next {
    /// A slot is free and it is our turn: make the attempt.
    Try,
    /// Wait for the prefix to change (or read it again at once, when it already has).
    Wait,
    /// Decide again from the same listing (our session or our place changed).
    Again,
}

/// Run the procedure in its own task. `Ok(None)`: no slot by the deadline and `!fail_hard`.
pub(crate) async fn run(plan: Plan, fail_hard: bool) -> Reply {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut admit = Admit::new(plan, tx);
        let result = match admit.steps().await {
            Ok(permit) => Ok(Some(permit)),
            Err(Stop::NotAcquired) if !fail_hard => Ok(None),
            Err(Stop::NotAcquired) => Err(Error::NotAcquired {
                key: admit.plan.layout.prefix.clone(),
                waited: admit.core.start.elapsed(),
                holder: None,
            }),
            Err(Stop::Cancelled) => Err(crate::task::stopped("acquiring a semaphore slot (the caller went away)")),
            Err(Stop::Failed(e)) => Err(e),
        };
        // If the caller is gone, the permit comes back here and its drop releases the slot.
        let _ = admit.core.tx.send(result);
    });
    rx.await.unwrap_or_else(|_| Err(crate::task::stopped("acquiring a semaphore slot")))
}

struct Admit {
    plan: Plan,
    /// The deadline, the caller, the session: what every acquire procedure shares.
    core: Procedure<Reply>,
    watch: Watch<Vec<KvEntry>>,
    /// Our place in line, once we found the slots taken or others waiting.
    place: Option<Place>,
}

impl Admit {
    fn new(plan: Plan, tx: oneshot::Sender<Reply>) -> Self {
        let target = plan.layout.prefix.clone();
        let core = Procedure::new(
            plan.client.clone(),
            plan.spec.clone(),
            plan.shared.clone(),
            plan.acquire_timeout,
            &target,
            tx,
        );
        Admit { watch: Watch::prefix(&plan.client, &plan.layout.dir), plan, core, place: None }
    }

    async fn steps(&mut self) -> Step<Arc<Permit>> {
        if let Some(s) = &self.plan.shared {
            let contender = self.plan.layout.contender(&s.id);
            self.core.claim_in_process(&contender).await?; // one permit per prefix per session
        }
        // The first read always happens, even with a zero timeout (one attempt).
        let first = self.core.retry_until().max(Instant::now() + self.plan.client.request_timeout());
        let mut entries = self.next(Some(first)).await?;
        loop {
            let view = self.plan.layout.view(&entries, self.plan.limit)?;
            if self.place.is_none() && self.core.past_deadline() && !self.free_for_us(&entries, &view) {
                return Err(Stop::NotAcquired); // a one-shot attempt on taken slots: no session made
            }
            let s = self.live_session().await?;
            match self.decide(&s, &entries, &view).await? {
                Next::Try => {}
                Next::Again => continue,
                Next::Wait => {
                    entries = self.next(self.core.deadline).await?;
                    continue;
                }
            }
            // A lease spent while waiting at a crowded agent: renewed first, or a new session.
            if !self.core.ready_to_attempt(&s).await {
                continue;
            }
            self.core.attempted();
            match self.attempt(&s, &view).await? {
                Admission::Admitted { token } => return Ok(self.admitted(s, token, &view)),
                // The coordination key moved under us: the next answer comes with the change.
                Admission::Stale => entries = self.next(self.core.deadline).await?,
                Admission::LockDelay => self.core.back_off().await?,
                Admission::InvalidSession { status, message } => {
                    self.after_invalid_session(&s, status, message).await?;
                }
            }
        }
    }

    /// Whose turn it is. Not in line: try when a slot is free and nobody waits, else take a place.
    /// In line: wait for the predecessor to go; the first in line tries when a slot is free.
    async fn decide(&mut self, s: &SessionCore, entries: &[KvEntry], view: &View) -> Step<Next> {
        if self.place.is_none() {
            if self.free_for_us(entries, view) {
                return Ok(Next::Try);
            }
            if self.core.past_deadline() {
                return Err(Stop::NotAcquired); // a one-shot attempt never joins the line
            }
            if !self.enqueue(s).await? {
                return Ok(Next::Again);
            }
        }
        let Some(place) = self.place.as_mut() else { return Ok(Next::Again) };
        let deadline = self.core.deadline;
        let waited = self.core.unless_cancelled(place.wait_after(entries, deadline)).await??;
        match waited {
            None => Err(Stop::NotAcquired),
            Some(Waited::First) if view.has_room() => Ok(Next::Try),
            Some(Waited::First | Waited::PredecessorGone) => Ok(Next::Wait),
            Some(Waited::EntryGone) => {
                // Our session was invalidated (Consul deleted the entry with it): start over.
                self.forget_place();
                Ok(Next::Again)
            }
        }
    }

    /// A slot is free and nobody waits for it (slots go to the line first). Our own session's
    /// entry does not count (a shared session's earlier wait may still be deleting it).
    fn free_for_us(&self, entries: &[KvEntry], view: &View) -> bool {
        let sid = self.core.session_id();
        view.has_room() && !queue::others_waiting(&self.plan.layout.lock_key, sid, entries)
    }

    /// Our queue entry is gone already (admitted, or deleted with an invalidated session).
    fn forget_place(&mut self) {
        if let Some(place) = self.place.take() {
            place.disarm();
        }
    }

    /// Take a place in line; `false` when Consul refused our session (handled here).
    async fn enqueue(&mut self, s: &SessionCore) -> Step<bool> {
        self.core.attempted();
        let (client, lock_key) = (&self.plan.client, &self.plan.layout.lock_key);
        match Place::enqueue(client, lock_key, &s.id, self.core.retry_until()).await? {
            Some(place) => {
                self.place = Some(place);
                Ok(true)
            }
            None => {
                self.after_invalid_session(s, 409, "Consul refused the session for a queue entry".into()).await?;
                Ok(false)
            }
        }
    }

    /// The next listing of the prefix (cancellably); `NotAcquired` at the deadline.
    async fn next(&mut self, deadline: Option<Instant>) -> Step<Vec<KvEntry>> {
        self.core.unless_cancelled(self.watch.next(deadline)).await??.ok_or(Stop::NotAcquired)
    }

    /// A live session (see [`Procedure::live_session`]); a new one's queue place starts over (the
    /// old session's entry, if any, is deleted in the background).
    async fn live_session(&mut self) -> Step<Arc<SessionCore>> {
        let s = self.core.live_session().await?;
        if self.place.as_ref().is_some_and(|p| p.sid() != s.id) {
            self.place = None;
        }
        Ok(s)
    }

    /// One transaction: our contender key and us among the holders, or nothing.
    async fn attempt(&self, s: &SessionCore, view: &View) -> Step<Admission> {
        let plan = &self.plan;
        let value = plan.value.clone().unwrap_or_else(|| HolderInfo::current(Some(&plan.spec.name)).to_json());
        let slots = view.with(&s.id).to_json();
        let contender = plan.layout.contender(&s.id);
        let queued = self.place.as_ref().map(Place::entry_key);
        let write = SemaphoreWrite {
            flags: SEMAPHORE_FLAGS,
            lock_key: &plan.layout.lock_key,
            slots: &slots,
            index: view.index,
            session: &s.id,
            contender: &contender,
            dequeue: queued.as_deref(),
        };
        Ok(retry::until(self.core.retry_until(), || plan.client.txn_admit(&write, &value)).await?)
    }

    fn admitted(&mut self, s: Arc<SessionCore>, token: u64, view: &View) -> Arc<Permit> {
        tracing::debug!(prefix = %self.plan.layout.prefix, session = %s.id, token, "semaphore slot taken");
        self.forget_place(); // the admission deleted our queue entry
        let own = self.plan.shared.is_none();
        let slots = view.with(&s.id);
        Permit::new(self.plan.layout.clone(), s, own, token, slots, self.core.claim.take())
    }

    /// Consul refused our session (see [`Procedure::after_invalid_session`]); our place goes with it.
    async fn after_invalid_session(&mut self, s: &SessionCore, status: u16, message: String) -> Step {
        self.forget_place();
        self.core.after_invalid_session(s, status, message, "a slot").await
    }
}
