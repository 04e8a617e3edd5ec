//! The acquire procedure of a multi-key lock, as a small state machine run in a task that owns
//! every request's outcome (like the lock's: a dropped caller never leaves a key, a queue entry or a
//! session behind).
//!
//! Steps: claim every key in-process, in key order (shared sessions) → a live session → (once some
//! key was found held) our turn: first in the queue of every key → one transaction that takes
//! every key or none → on "held" or "not as expected", read all the keys at once (a read-only
//! transaction), then join the queues, or, first in all of them already, wait for the held key to
//! change; on "lock-delay" or "invalid session", pause and go round again. No key is ever held while
//! waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::consul::client::Client;
use crate::consul::endpoints::{self, Expect, LockAttempt, SessionSpec};
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, KvEntry};
use crate::multilock::guard::{MultiHold, Taken};
use crate::primitive::procedure::Procedure;
use crate::primitive::queue::{Place, Waited};
use crate::session::lifecycle::{Claim, SessionCore};
use crate::task::{Step, Stop};

/// Everything an acquire needs, validated before any request.
pub(crate) struct Plan {
    pub(crate) client: Client,
    /// Sorted, distinct.
    pub(crate) keys: Vec<String>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) spec: SessionSpec,
    pub(crate) acquire_timeout: Duration,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) shared: Option<Arc<SessionCore>>,
}

type Reply = Result<Option<Arc<MultiHold>>>;

/// Run the acquire procedure in its own task. `Ok(None)`: not acquired and `!fail_hard`.
pub(crate) async fn run(plan: Plan, fail_hard: bool) -> Reply {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut acquire = Acquire::new(plan, fail_hard, tx);
        let result = acquire.run().await;
        // If the caller is gone, the value comes back here and its drop releases every key.
        let _ = acquire.core.tx.send(result);
    });
    rx.await.unwrap_or_else(|_| Err(crate::task::stopped("acquiring the multi-lock")))
}

struct Acquire {
    plan: Plan,
    fail_hard: bool,
    core: Procedure<Reply>,
    claims: Vec<Claim>,
    /// Our places in the keys' queues, in key order (deleted in the background if we give up).
    places: Vec<Place>,
    /// What the next attempt requires of each key.
    expect: Vec<Expect>,
    /// The key the last read found held by another session, and that entry (for the error).
    held: Option<(usize, KvEntry)>,
    /// Waits in the queues: once some key was found held, or at once when this process saw
    /// others queued on one of the keys at its last release.
    queued: bool,
    /// First in every queue: nobody can get ahead any more.
    head: bool,
    /// A read after the deadline already found every key free (one more try, then give up).
    inspected_late: bool,
}

impl Acquire {
    fn new(plan: Plan, fail_hard: bool, tx: oneshot::Sender<Reply>) -> Self {
        let queued = plan.keys.iter().any(|k| plan.client.has_waiters(k));
        let target = plan.keys.join(", ");
        let core = Procedure::new(
            plan.client.clone(),
            plan.spec.clone(),
            plan.shared.clone(),
            plan.acquire_timeout,
            &target,
            tx,
        );
        let expect = vec![Expect::Absent; plan.keys.len()];
        Acquire {
            plan,
            fail_hard,
            core,
            claims: Vec::new(),
            places: Vec::new(),
            expect,
            held: None,
            queued,
            head: false,
            inspected_late: false,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(keys = self.plan.keys.len()))]
    async fn run(&mut self) -> Reply {
        match self.steps().await {
            Ok(hold) => Ok(Some(hold)),
            Err(Stop::NotAcquired) => self.not_acquired(),
            Err(Stop::Cancelled) => Err(crate::task::stopped("acquiring the multi-lock (the caller went away)")),
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    async fn steps(&mut self) -> Step<Arc<MultiHold>> {
        self.claim_in_process().await?;
        loop {
            let s = self.core.live_session().await?;
            if self.queued {
                match self.queue_turn(&s).await? {
                    Turn::Go => {}
                    Turn::Requeue => continue,
                    Turn::Refused => {
                        self.core.attempted();
                        self.core.after_invalid_session(&s, 409, "invalid session".into(), "the keys").await?;
                        continue;
                    }
                }
            }
            let attempt = self.attempt(&s).await?;
            self.core.attempted();
            match attempt {
                LockAttempt::Acquired { modify_index } => return Ok(self.taken(s, modify_index)),
                LockAttempt::InvalidSession { status, message } => {
                    self.core.after_invalid_session(&s, status, message, "the keys").await?
                }
                LockAttempt::LockDelay => self.core.back_off().await?,
                LockAttempt::Held | LockAttempt::NotAsExpected => self.after_refusal(&s).await?,
            }
        }
    }

    /// Shared sessions: one holder of each key per session in this process. Claimed in key order,
    /// so two sets on one session that overlap never wait for each other in a cycle.
    async fn claim_in_process(&mut self) -> Step {
        for key in self.plan.keys.clone() {
            self.core.claim_in_process(&key).await?;
            self.claims.extend(self.core.claim.take());
        }
        Ok(())
    }

    /// One transaction takes every key, or none.
    async fn attempt(&self, s: &SessionCore) -> Step<LockAttempt> {
        let plan = &self.plan;
        let value = plan.value.clone().unwrap_or_else(|| HolderInfo::current(Some(&plan.spec.name)).to_json());
        let keys: Vec<(&str, Expect)> = plan.keys.iter().map(String::as_str).zip(self.expect.iter().copied()).collect();
        let body = endpoints::multi_lock_txn_body(&keys, &value, &s.id);
        let names: Vec<&str> = plan.keys.iter().map(String::as_str).collect();
        Ok(crate::consul::retry::until(self.core.retry_until(), || plan.client.txn_lock(body.clone(), &names, false))
            .await?)
    }

    fn taken(&mut self, session: Arc<SessionCore>, token: u64) -> Arc<MultiHold> {
        tracing::debug!(session = %session.id, token, "acquired every key");
        let entries = std::mem::take(&mut self.places).into_iter().map(Place::disarm).collect();
        MultiHold::new(Taken {
            keys: self.plan.keys.clone(),
            own_session: self.plan.shared.is_none(),
            session,
            token,
            claims: std::mem::take(&mut self.claims),
            entries,
            max_hold: self.plan.max_hold,
        })
    }

    /// The attempt was refused: read every key. All free (the guards were stale): go again. Some
    /// held: join the queues (a one-shot attempt gives up instead), or, first in all of them
    /// already, wait until that key changes.
    async fn after_refusal(&mut self, s: &SessionCore) -> Step {
        if self.core.past_deadline() && std::mem::replace(&mut self.inspected_late, true) {
            return Err(Stop::NotAcquired);
        }
        self.read_keys(&s.id).await?;
        if self.held.is_none() {
            return Ok(());
        }
        if !self.queued {
            if self.core.past_deadline() {
                return Err(Stop::NotAcquired); // one attempt only: no queue to join
            }
            self.queued = true;
            return Ok(());
        }
        if self.head {
            self.wait_for_held_key(s).await?;
        }
        Ok(())
    }

    /// Read every key in one read-only transaction and set each attempt guard; a key with another
    /// primitive's flags is [`Error::Conflict`].
    async fn read_keys(&mut self, ours: &str) -> Step {
        let client = &self.plan.client;
        let keys: Vec<&str> = self.plan.keys.iter().map(String::as_str).collect();
        let entries = crate::consul::retry::until(self.core.retry_until(), || client.kv_get_many(&keys)).await?;
        self.held = None;
        for (i, entry) in entries.into_iter().enumerate() {
            self.judge(i, entry, ours)?;
        }
        Ok(())
    }

    /// Set key `i`'s guard from a read: `Ok(true)` when another session holds it.
    fn judge(&mut self, i: usize, entry: Option<KvEntry>, ours: &str) -> Step<bool> {
        let Some(e) = entry else {
            self.expect[i] = Expect::Absent;
            return Ok(false);
        };
        if !crate::consul::flags::lockable(e.flags) {
            return Err(Error::Conflict { key: self.plan.keys[i].clone(), flags: e.flags }.into());
        }
        if e.holder_session().is_none_or(|h| h == ours) {
            self.expect[i] = Expect::Unchanged(e.modify_index);
            return Ok(false);
        }
        if self.held.is_none() {
            self.held = Some((i, e));
        }
        Ok(true)
    }

    /// Wait (blocking queries) until the key the last read found held is free or ours, or our own
    /// waiting session dies.
    async fn wait_for_held_key(&mut self, s: &SessionCore) -> Step {
        let Some((i, seen)) = self.held.clone() else { return Ok(()) };
        let mut watch = Watch::key(&self.plan.client, &self.plan.keys[i]).after(seen.modify_index);
        loop {
            let deadline = self.core.deadline;
            let Some(entry) = self.core.unless_cancelled(watch.next(deadline)).await?? else {
                return Err(Stop::NotAcquired);
            };
            if !self.judge(i, entry, &s.id)? {
                self.held = None;
                return Ok(());
            }
            if s.is_lost() && self.plan.shared.is_none() {
                return Ok(()); // our waiting session died: make a new one
            }
        }
    }

    /// Our places in every key's queue (taken once per session, in one transaction), then wait
    /// until we are first in each. Nobody can get ahead of a place once it is first (later entries
    /// have later creation indexes), so the queues are waited for one after the other.
    async fn queue_turn(&mut self, s: &SessionCore) -> Step<Turn> {
        if self.places.first().is_none_or(|p| p.sid() != s.id) {
            self.head = false;
            self.places.clear();
            let until = self.core.retry_until();
            match Place::enqueue_all(&self.plan.client, &self.plan.keys, &s.id, until).await? {
                Some(p) => self.places = p,
                None => return Ok(Turn::Refused),
            }
        }
        if self.head {
            // First everywhere, and a key was held at the last read: wait for it before trying.
            return match self.held.is_some() {
                true => self.wait_for_held_key(s).await.map(|_| Turn::Go),
                false => Ok(Turn::Go),
            };
        }
        let mut waited = false;
        for i in 0..self.places.len() {
            loop {
                let deadline = self.core.deadline;
                let place = &mut self.places[i];
                match self.core.unless_cancelled(place.wait_turn(deadline)).await?? {
                    None => return Err(Stop::NotAcquired),
                    Some(Waited::First) => break,
                    Some(Waited::PredecessorGone) => waited = true, // list again: others may be ahead
                    Some(Waited::EntryGone) => {
                        self.places.clear();
                        return Ok(Turn::Requeue);
                    }
                }
            }
        }
        self.head = true;
        if waited {
            // Whoever was ahead released (deleting its entry with its keys): the guards read
            // before are stale.
            self.expect.iter_mut().for_each(|e| *e = Expect::Absent);
            self.held = None;
        } else if self.held.is_some() {
            self.wait_for_held_key(s).await?;
        }
        Ok(Turn::Go)
    }

    /// The answer at the deadline: `Ok(None)`, or `NotAcquired` naming a holder last seen.
    fn not_acquired(&mut self) -> Reply {
        if !self.fail_hard {
            return Ok(None);
        }
        let (key, holder) = match self.held.take() {
            Some((i, e)) => (self.plan.keys[i].clone(), e.into_holder().ok().flatten().map(Box::new)),
            None => (self.plan.keys.join(", "), None),
        };
        Err(Error::NotAcquired { key, waited: self.core.start.elapsed(), holder })
    }
}

/// What to do after the queues.
enum Turn {
    /// First in every queue: try.
    Go,
    /// An entry of ours is gone (our session was invalidated): queue again.
    Requeue,
    /// Consul refused our entries: our session is invalid.
    Refused,
}
