//! The acquire procedure of a lock, as a small state machine run in a task that owns every request's
//! outcome, so that a dropped caller never leaves a key, a session or a renewal task behind.
//!
//! Steps, each a method below or of the shared [`Procedure`]: claim the key in-process (shared
//! sessions) → a live session → (once the key was found held, or in fair mode) our turn in the
//! queue → one `lock` transaction → on "held", join the queue; on "lock-delay" or "invalid session",
//! pause and go round again. Every wait stops at the deadline and when the caller goes away; writes
//! are never abandoned half-way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::consul::client::Client;
use crate::consul::endpoints::{self, Expect, LockAttempt, SessionSpec};
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, KvEntry};
use crate::metrics;
use crate::primitive::hold::Hold;
use crate::primitive::procedure::Procedure;
use crate::primitive::queue::{self, Waited};
use crate::session::lifecycle::SessionCore;
use crate::task::{Step, Stop};

/// Everything an acquire needs, validated before any request.
pub(crate) struct Plan {
    pub(crate) client: Client,
    pub(crate) key: String,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) spec: SessionSpec,
    pub(crate) acquire_timeout: Duration,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) shared: Option<Arc<SessionCore>>,
    pub(crate) fair: bool,
}

type Reply = Result<Option<Arc<Hold>>>;

/// Run the acquire procedure in its own task. `Ok(None)`: not acquired and `!fail_hard`.
pub(crate) async fn run(plan: Plan, fail_hard: bool) -> Reply {
    let wait = metrics::AcquireWait::start(plan.client.metrics_key_label(), &plan.key);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut acquire = Acquire::new(plan, fail_hard, tx);
        let result = acquire.run().await;
        // If the caller is gone, the value comes back here and its drop releases the lock.
        let _ = acquire.core.tx.send(result);
    });
    let result = rx.await.unwrap_or_else(|_| Err(crate::task::stopped("acquiring the lock")));
    wait.finish(&result);
    result
}

/// What to do after consulting the queue.
enum Queued {
    /// Nobody ahead (or not queued): try the lock.
    Go,
    /// Nobody ahead, but the key was held a moment ago: wait for it to change first.
    WaitKey,
    /// Our entry is gone: queue again.
    Requeue,
    /// Consul refused our entry: our session is invalid.
    Refused,
}

struct Acquire {
    plan: Plan,
    fail_hard: bool,
    /// The deadline, the caller, the session: what every acquire procedure shares.
    core: Procedure<Reply>,
    /// Fair mode: our place in the key's queue (deleted in the background if we give up).
    place: Option<queue::Place>,
    /// The holder the last wait saw, for the error at the deadline.
    seen: Option<KvEntry>,
    /// What the next attempt requires of the key (absent, or free and unchanged since read).
    expect: Expect,
    /// Whether this acquire waits in the key's queue: always in fair mode; otherwise once the key
    /// was found held, or at once when this process saw others queued at its last release.
    queued: bool,
    /// The last attempt found the key held (so a first place in the queue waits for the key).
    refused: bool,
    /// A read of the key after the deadline already found it free (one more try, then give up).
    inspected_late: bool,
    /// The wait just ended on a sign that the key is ours to take (our predecessor left, or the key
    /// was seen free): the next attempt most likely succeeds.
    likely: bool,
    /// Our place is first in the queue: nobody can get ahead of it any more (later entries have
    /// later creation indexes), so the queue need not be listed again.
    head: bool,
}

impl Acquire {
    fn new(plan: Plan, fail_hard: bool, tx: oneshot::Sender<Reply>) -> Self {
        let queued = plan.fair || plan.client.has_waiters(&plan.key);
        let core = Procedure::new(
            plan.client.clone(),
            plan.spec.clone(),
            plan.shared.clone(),
            plan.acquire_timeout,
            &plan.key,
            tx,
        );
        Acquire {
            plan,
            fail_hard,
            core,
            place: None,
            seen: None,
            expect: Expect::Absent,
            queued,
            refused: false,
            inspected_late: false,
            likely: false,
            head: false,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %self.plan.key))]
    async fn run(&mut self) -> Reply {
        match self.steps().await {
            Ok(hold) => Ok(Some(hold)),
            Err(Stop::NotAcquired) => self.not_acquired().await,
            Err(Stop::Cancelled) => Err(crate::task::stopped("acquiring the lock (the caller went away)")),
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    async fn steps(&mut self) -> Step<Arc<Hold>> {
        self.core.claim_in_process(&self.plan.key).await?;
        self.peek_before_one_shot().await?;
        loop {
            let s = self.core.live_session().await?;
            self.likely = false;
            let attempt = match self.queue_turn(&s).await? {
                Queued::Requeue => continue,
                Queued::Refused => LockAttempt::InvalidSession { status: 409, message: "invalid session".into() },
                turn => {
                    if matches!(turn, Queued::WaitKey) {
                        self.wait_for_change(&s).await?;
                        self.likely = true;
                    }
                    // A long wait at a crowded agent can outlast our session's lease (its renewals
                    // refused): a lock taken with it would be lost at once. Renew it first, or make
                    // a new one.
                    if !self.core.ready_to_attempt(&s).await {
                        continue;
                    }
                    self.attempt(&s).await?
                }
            };
            self.core.attempted();
            match attempt {
                LockAttempt::Acquired { modify_index } => return Ok(self.held(s, modify_index)),
                LockAttempt::InvalidSession { status, message } => {
                    self.core.after_invalid_session(&s, status, message, "the lock").await?
                }
                LockAttempt::LockDelay => self.core.back_off().await?,
                // The key exists: held, free after Go's client released it, or another primitive's.
                LockAttempt::NotAsExpected => {
                    if self.inspect(&s).await? {
                        self.on_held()?;
                    }
                }
                LockAttempt::Held => self.on_held()?,
            }
        }
    }

    /// A one-shot attempt (`acquire_timeout(ZERO)`) that would make its own session reads the key
    /// first: finding it held then costs that one read, instead of a session, a refused `lock` and
    /// the session's destruction (three writes); the holder it names is the one read. A free key
    /// goes on as usual, the attempt guarded by what the read saw.
    async fn peek_before_one_shot(&mut self) -> Step {
        if self.plan.shared.is_some() || !self.core.past_deadline() {
            return Ok(());
        }
        let entry = self.read_key().await?;
        match self.judge(entry, "")? {
            true => Err(Stop::NotAcquired),
            false => Ok(()),
        }
    }

    /// Take a place in the key's queue (once per session) and wait until nobody is ahead.
    async fn queue_turn(&mut self, s: &SessionCore) -> Step<Queued> {
        if !self.queued {
            return Ok(Queued::Go);
        }
        let refused = std::mem::take(&mut self.refused);
        if self.place.as_ref().is_none_or(|p| p.sid() != s.id) {
            let until = self.core.retry_until();
            self.head = false;
            match queue::Place::enqueue(&self.plan.client, &self.plan.key, &s.id, until).await? {
                Some(p) => self.place = Some(p),
                None => return Ok(Queued::Refused),
            }
        }
        if self.head {
            return Ok(if refused { Queued::WaitKey } else { Queued::Go });
        }
        let Some(place) = self.place.as_mut() else { return Ok(Queued::Requeue) };
        let deadline = self.core.deadline;
        match self.core.unless_cancelled(place.wait_turn(deadline)).await?? {
            None => Err(Stop::NotAcquired),
            Some(Waited::First) => {
                self.head = true;
                Ok(if refused { Queued::WaitKey } else { Queued::Go })
            }
            Some(Waited::PredecessorGone) => {
                self.likely = true;
                self.expect = Expect::Absent; // most likely released (deleted) just now
                Ok(Queued::Go)
            }
            Some(Waited::EntryGone) => {
                self.place = None; // our entry is gone: enqueue again
                Ok(Queued::Requeue)
            }
        }
    }

    /// One `lock` transaction: it returns the fencing token with the write. A queued waiter's
    /// attempt in its turn goes on the client's holder connection while that is not open (opening
    /// it): it most likely succeeds, and the hold's renewals and release then find that connection
    /// open however crowded the agent is.
    async fn attempt(&self, s: &SessionCore) -> Step<LockAttempt> {
        let plan = &self.plan;
        let value = plan.value.clone().unwrap_or_else(|| HolderInfo::current(Some(&plan.spec.name)).to_json());
        let body = endpoints::lock_txn_body(&plan.key, &value, &s.id, self.expect);
        let keys = [plan.key.as_str()];
        // An uncontended attempt opens it too (no extra request). Through a budget of 2 or less (a
        // `consul-lock run`) every attempt does, and one that takes nothing closes it again: the
        // waiting process keeps one connection, the holding one has its second from the moment
        // it holds.
        let turn = !self.queued || self.likely || plan.client.max_connections() <= 2;
        Ok(crate::consul::retry::until(self.core.retry_until(), || plan.client.txn_lock(body.clone(), &keys, turn))
            .await?)
    }

    fn held(&mut self, s: Arc<SessionCore>, token: u64) -> Arc<Hold> {
        tracing::debug!(session = %s.id, token, "acquired");
        let own = self.plan.shared.is_none();
        let hold = Hold::new(self.plan.key.clone(), s, own, token, self.core.claim.take(), self.plan.max_hold);
        hold.set_kept_queue_entry(self.place.take().map(queue::Place::disarm_kept));
        hold
    }

    /// The key exists though we expected otherwise: read it once. `true` when another session holds
    /// it; `false` when it is free (the next attempt requires it unchanged).
    async fn inspect(&mut self, s: &SessionCore) -> Step<bool> {
        if self.core.past_deadline() && std::mem::replace(&mut self.inspected_late, true) {
            return Err(Stop::NotAcquired); // free at each read, taken at each attempt: out of time
        }
        let entry = self.read_key().await?;
        let held = self.judge(entry, &s.id)?;
        Ok(held)
    }

    /// One read of the key (retried like a write: at least once, never past the deadline).
    async fn read_key(&self) -> Result<Option<KvEntry>> {
        let (client, key) = (&self.plan.client, &self.plan.key);
        crate::consul::retry::until(self.core.retry_until(), || client.kv_get(key)).await
    }

    /// Decide from a read of the key: `Ok(true)` held by another session (recorded for the error at
    /// the deadline), `Ok(false)` free or ours (the next attempt's guard is set accordingly);
    /// [`Error::Conflict`] for another primitive's key.
    fn judge(&mut self, entry: Option<KvEntry>, ours: &str) -> Step<bool> {
        let Some(e) = entry else {
            self.expect = Expect::Absent;
            return Ok(false);
        };
        if !crate::consul::flags::lockable(e.flags) {
            return Err(Error::Conflict { key: self.plan.key.clone(), flags: e.flags }.into());
        }
        if e.holder_session().is_none_or(|h| h == ours) {
            self.expect = Expect::Unchanged(e.modify_index);
            return Ok(false);
        }
        self.seen = Some(e);
        Ok(true)
    }

    /// The key is held by another session: join the queue (once; woken once per release instead
    /// of with everyone), or, queued already, wait for the key when first in line.
    fn on_held(&mut self) -> Step {
        if !self.queued && self.core.past_deadline() {
            return Err(Stop::NotAcquired); // one attempt only: no queue to join
        }
        self.queued = true;
        self.refused = true;
        Ok(())
    }

    /// Held by someone else (or not as expected): read the key, then wait for a change with blocking
    /// queries until it is free (deleted, or present without a session: released by Go's client,
    /// which keeps the key) or ours, or our own waiting session dies (then a new one is made). A key
    /// with another primitive's flags is [`Error::Conflict`], never waited for nor taken.
    async fn wait_for_change(&mut self, s: &SessionCore) -> Step {
        let mut watch = Watch::key(&self.plan.client, &self.plan.key);
        loop {
            let deadline = self.core.deadline;
            let Some(entry) = self.core.unless_cancelled(watch.next(deadline)).await?? else {
                return Err(Stop::NotAcquired);
            };
            if !self.judge(entry, &s.id)? {
                return Ok(()); // free (or ours): try again, if it is still as read
            }
            if s.is_lost() && self.plan.shared.is_none() {
                return Ok(()); // our waiting session died: make a new one
            }
        }
    }

    /// The answer at the deadline: `Ok(None)`, or `NotAcquired` naming the holder when known (the
    /// one last seen, else one read — only worth a request when the error is returned).
    async fn not_acquired(&mut self) -> Reply {
        if !self.fail_hard {
            return Ok(None);
        }
        let seen = match self.seen.take() {
            Some(e) => Some(e),
            None => self.plan.client.kv_get(&self.plan.key).await.ok().flatten(),
        };
        let holder = seen.and_then(|e| e.into_holder().ok().flatten()).map(Box::new);
        Err(Error::NotAcquired { key: self.plan.key.clone(), waited: self.core.start.elapsed(), holder })
    }
}
