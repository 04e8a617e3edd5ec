//! Taking a semaphore slot, run in a task that owns every request's outcome (as the lock's
//! acquire), so that a dropped caller never leaves a contender key, a holder entry or a session.
//!
//! Steps: claim the contender key in-process (shared sessions) → read the prefix (flags and limit
//! are checked here, before any write) → a live session → while a slot is free, one transaction
//! holds our contender key and check-and-sets `PREFIX/.lock` with us among the (pruned) holders →
//! otherwise wait for a change of the prefix with blocking queries and go round again.

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
            let s = self.live_session().await?;
            if view.has_room() {
                self.attempts_on_session += 1;
                match self.attempt(&s, &view).await? {
                    Admission::Admitted { token } => return Ok(self.admitted(s, token, &view)),
                    Admission::Stale => {}
                    Admission::LockDelay => {
                        let pause = self.pause.next_delay();
                        self.sleep(pause).await?;
                        continue;
                    }
                    Admission::InvalidSession { status, message } => {
                        self.after_invalid_session(&s, status, message).await?;
                        continue;
                    }
                }
            }
            // Full, or the coordination key moved under us: the next answer comes with the change.
            entries = self.next(self.deadline).await?;
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

    fn retry_until(&self) -> Instant {
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        self.deadline.unwrap_or_else(far).max(Instant::now())
    }

    async fn sleep(&mut self, pause: Duration) -> Step {
        let left = match self.deadline {
            None => pause,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        if left < Duration::from_millis(1) {
            return Err(Stop::NotAcquired);
        }
        crate::task::unless_closed(&mut self.tx, tokio::time::sleep(pause.min(left))).await.ok_or(Stop::Cancelled)
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
        let write = SemaphoreWrite {
            flags: SEMAPHORE_FLAGS,
            lock_key: &plan.layout.lock_key,
            slots: &slots,
            index: view.index,
            session: &s.id,
            contender: &contender,
        };
        Ok(retry::until(self.retry_until(), || plan.client.txn_admit(&write, &value)).await?)
    }

    fn admitted(&mut self, s: Arc<SessionCore>, token: u64, view: &View) -> Arc<Permit> {
        tracing::debug!(prefix = %self.plan.layout.prefix, session = %s.id, token, "semaphore slot taken");
        let own = self.plan.shared.is_none();
        let slots = view.with(&s.id);
        Permit::new(self.plan.layout.clone(), s, own, token, slots, self.claim.take())
    }

    /// Consul refused our session: a shared one is lost; an own one is replaced (paced), unless
    /// Consul keeps refusing brand-new sessions.
    async fn after_invalid_session(&mut self, s: &SessionCore, status: u16, message: String) -> Step {
        s.mark_lost(Loss::InvalidSession, "Consul says the session is invalid");
        if self.plan.shared.is_some() {
            return Err(Error::LockLost { key: self.plan.layout.prefix.clone() }.into());
        }
        self.fresh_invalid = if self.attempts_on_session == 1 { self.fresh_invalid + 1 } else { 0 };
        let past = self.deadline.is_some_and(|d| Instant::now() >= d);
        if self.fresh_invalid >= MAX_FRESH_INVALID_SESSIONS || past {
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
