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

use crate::api::{Admission, SemaphoreWrite, SessionSpec};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::flags::SEMAPHORE_FLAGS;
use crate::holder::{HolderInfo, KvEntry};
use crate::metrics::Loss;
use crate::permit::Permit;
use crate::queue::{self, Place, Waited};
use crate::retry::{self, Backoff};
use crate::session::{Claim, SessionCore};
use crate::slots::{Layout, View};
use crate::task::{Step, Stop};
use crate::watch::Watch;

/// Give up after this many fresh sessions in a row are refused as invalid at their first attempt.
const MAX_FRESH_INVALID_SESSIONS: u32 = 3;

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
                waited: admit.start.elapsed(),
                holder: None,
            }),
            Err(Stop::Cancelled) => Err(crate::task::stopped("acquiring a semaphore slot (the caller went away)")),
            Err(Stop::Failed(e)) => Err(e),
        };
        // If the caller is gone, the permit comes back here and its drop releases the slot.
        let _ = admit.tx.send(result);
    });
    rx.await.unwrap_or_else(|_| Err(crate::task::stopped("acquiring a semaphore slot")))
}

struct Admit {
    plan: Plan,
    tx: oneshot::Sender<Reply>,
    start: Instant,
    deadline: Option<Instant>,
    watch: Watch<Vec<KvEntry>>,
    claim: Option<Claim>,
    session: Option<Arc<SessionCore>>,
    /// Our place in line, once we found the slots taken or others waiting.
    place: Option<Place>,
    pause: Backoff,
    attempts_on_session: u32,
    fresh_invalid: u32,
}

impl Admit {
    fn new(plan: Plan, tx: oneshot::Sender<Reply>) -> Self {
        let start = Instant::now();
        Admit {
            deadline: start.checked_add(plan.acquire_timeout),
            watch: Watch::prefix(&plan.client, &plan.layout.dir),
            session: plan.shared.clone(),
            plan,
            tx,
            start,
            claim: None,
            place: None,
            pause: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            attempts_on_session: 0,
            fresh_invalid: 0,
        }
    }

    async fn steps(&mut self) -> Step<Arc<Permit>> {
        self.claim_in_process().await?;
        // The first read always happens, even with a zero timeout (one attempt).
        let first = self.retry_until().max(Instant::now() + self.plan.client.request_timeout());
        let mut entries = self.next(Some(first)).await?;
        loop {
            let view = self.plan.layout.view(&entries, self.plan.limit)?;
            if self.place.is_none() && self.past_deadline() && !self.free_for_us(&entries, &view) {
                return Err(Stop::NotAcquired); // a one-shot attempt on taken slots: no session made
            }
            let s = self.live_session().await?;
            match self.decide(&s, &entries, &view).await? {
                Next::Try => {}
                Next::Again => continue,
                Next::Wait => {
                    entries = self.next(self.deadline).await?;
                    continue;
                }
            }
            self.attempts_on_session += 1;
            match self.attempt(&s, &view).await? {
                Admission::Admitted { token } => return Ok(self.admitted(s, token, &view)),
                // The coordination key moved under us: the next answer comes with the change.
                Admission::Stale => entries = self.next(self.deadline).await?,
                Admission::LockDelay => {
                    let pause = self.pause.next_delay();
                    self.sleep(pause).await?;
                }
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
            if self.past_deadline() {
                return Err(Stop::NotAcquired); // a one-shot attempt never joins the line
            }
            if !self.enqueue(s).await? {
                return Ok(Next::Again);
            }
        }
        let Some(place) = self.place.as_mut() else { return Ok(Next::Again) };
        let waited = crate::task::unless_closed(&mut self.tx, place.wait_after(entries, self.deadline))
            .await
            .ok_or(Stop::Cancelled)??;
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
        let sid = self.session.as_ref().map_or("", |s| s.id.as_str());
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
        self.attempts_on_session += 1;
        let (client, lock_key) = (&self.plan.client, &self.plan.layout.lock_key);
        match Place::enqueue(client, lock_key, &s.id, self.retry_until()).await? {
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
        if self.tx.is_closed() {
            return Err(Stop::Cancelled);
        }
        let next = crate::task::unless_closed(&mut self.tx, self.watch.next(deadline)).await.ok_or(Stop::Cancelled)?;
        next?.ok_or(Stop::NotAcquired)
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn retry_until(&self) -> Instant {
        crate::task::retry_until(self.deadline)
    }

    async fn sleep(&mut self, pause: Duration) -> Step {
        crate::task::pause(&mut self.tx, self.deadline, pause).await
    }

    /// Shared sessions: one permit per prefix per session (the contender key is per session).
    async fn claim_in_process(&mut self) -> Step {
        let Some(s) = self.plan.shared.clone() else { return Ok(()) };
        let key = self.plan.layout.contender(&s.id);
        match crate::task::unless_closed(&mut self.tx, s.claim(&key, self.deadline)).await.ok_or(Stop::Cancelled)? {
            Some(c) => {
                self.claim = Some(c);
                Ok(())
            }
            None => Err(Stop::NotAcquired),
        }
    }

    /// A live session: the shared one, the current one, or a new one (renewed while we wait).
    async fn live_session(&mut self) -> Step<Arc<SessionCore>> {
        match &self.session {
            Some(s) if !s.is_lost() => return Ok(s.clone()),
            Some(_) if self.plan.shared.is_some() => {
                return Err(Error::LockLost { key: self.plan.layout.prefix.clone() }.into())
            }
            _ => {}
        }
        let created = SessionCore::create(&self.plan.client, &self.plan.spec, self.retry_until()).await?;
        self.place = None; // the old session's place, if any, is deleted in the background
        self.session = Some(created.clone());
        self.attempts_on_session = 0;
        if self.tx.is_closed() {
            return Err(Stop::Cancelled); // dropping `created` destroys it
        }
        Ok(created)
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
        Ok(retry::until(self.retry_until(), || plan.client.txn_admit(&write, &value)).await?)
    }

    fn admitted(&mut self, s: Arc<SessionCore>, token: u64, view: &View) -> Arc<Permit> {
        tracing::debug!(prefix = %self.plan.layout.prefix, session = %s.id, token, "semaphore slot taken");
        self.forget_place(); // the admission deleted our queue entry
        let own = self.plan.shared.is_none();
        let slots = view.with(&s.id);
        Permit::new(self.plan.layout.clone(), s, own, token, slots, self.claim.take())
    }

    /// Consul refused our session: a shared one is lost; an own one is replaced (paced), unless
    /// Consul keeps refusing brand-new sessions.
    async fn after_invalid_session(&mut self, s: &SessionCore, status: u16, message: String) -> Step {
        s.mark_lost(Loss::InvalidSession, "Consul says the session is invalid");
        self.forget_place(); // it goes with the session
        if self.plan.shared.is_some() {
            return Err(Error::LockLost { key: self.plan.layout.prefix.clone() }.into());
        }
        self.fresh_invalid = if self.attempts_on_session == 1 { self.fresh_invalid + 1 } else { 0 };
        if self.fresh_invalid >= MAX_FRESH_INVALID_SESSIONS || self.past_deadline() {
            let address = self.plan.client.address().to_owned();
            let message = format!("{message} (Consul invalidated our session before a slot could be taken)");
            return Err(Error::Consul { address, status, message }.into());
        }
        let pause = self.pause.next_delay();
        match self.sleep(pause).await {
            Err(Stop::NotAcquired) => Ok(()),
            other => other,
        }
    }
}
