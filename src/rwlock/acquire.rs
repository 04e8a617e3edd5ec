//! The acquire procedure of a read or write request, a small state machine run in a task that owns
//! every request's outcome (as the lock's), so that a dropped caller never leaves a key, a place in
//! line, a session or a renewal task behind.
//!
//! Steps: claim the key in-process (shared sessions) → a one-shot attempt with its own session
//! first reads whether the lock is free → a live session → [`line_up`](Acquire::line_up): our
//! place in line (one transaction that also lists the line), then the line as it is now →
//! [`Turn`]: wait on the place the rules name, or [`take`](Acquire::take) the lock: a reader checks
//! the key's marker (creating it if absent), a writer locks the key. Every wait stops at the
//! deadline and when the caller goes away; writes are never abandoned half-way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::{Expect, LockAttempt, SessionSpec};
use crate::consul::retry;
use crate::consul::rwlock_txn::take_body;
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, KvEntry};
use crate::primitive::hold::Hold;
use crate::primitive::procedure::Procedure;
use crate::primitive::queue::{self, Mark, Place};
use crate::rwlock::guard::{self, Giveback};
use crate::rwlock::layout::{self, KeyState, Mode, Turn, Watched, MARKER};
use crate::session::lifecycle::SessionCore;
use crate::task::{Step, Stop};

/// How long a writer behind readers waits on its own place before it reads the line again: a
/// reader whose session died leaves without waking anyone.
const RECHECK_READERS: Duration = Duration::from_secs(5);

/// Everything a request needs, validated before any request.
pub(crate) struct Plan {
    pub(crate) client: Client,
    pub(crate) key: String,
    pub(crate) mode: Mode,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) spec: SessionSpec,
    pub(crate) acquire_timeout: Duration,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) shared: Option<Arc<SessionCore>>,
}

/// What a request took: the hold, its place's `CreateIndex` and the value the place carries.
pub(crate) struct Held {
    pub(crate) hold: Arc<Hold>,
    pub(crate) created: u64,
    pub(crate) value: Vec<u8>,
}

type Reply = Result<Option<Held>>;

/// Run the procedure in its own task. `Ok(None)`: not acquired by the deadline and `!fail_hard`.
pub(crate) async fn run(plan: Plan, fail_hard: bool) -> Reply {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut acquire = Acquire::new(plan, fail_hard, tx);
        let result = acquire.run().await;
        // If the caller is gone, the hold comes back here and its drop releases it.
        let _ = acquire.core.tx.send(result);
    });
    rx.await.unwrap_or_else(|_| Err(crate::task::stopped("acquiring the read-write lock")))
}

struct Acquire {
    plan: Plan,
    fail_hard: bool,
    /// The deadline, the caller, the session: what every acquire procedure shares.
    core: Procedure<Reply>,
    /// Our place in line (deleted if we give up).
    place: Option<Place>,
    /// The value our place (and a writer's key) carries.
    value: Vec<u8>,
    /// Our place's `CreateIndex`, once listed (for the wake-up when a reader gives up).
    created: Option<u64>,
}

impl Acquire {
    fn new(plan: Plan, fail_hard: bool, tx: oneshot::Sender<Reply>) -> Self {
        let core = Procedure::new(
            plan.client.clone(),
            plan.spec.clone(),
            plan.shared.clone(),
            plan.acquire_timeout,
            &plan.key,
            tx,
        );
        let value = plan.value.clone().unwrap_or_else(|| HolderInfo::current(Some(&plan.spec.name)).to_json());
        Acquire { plan, fail_hard, core, place: None, value, created: None }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %self.plan.key, mode = ?self.plan.mode))]
    async fn run(&mut self) -> Reply {
        let result = self.steps().await;
        if result.is_err() {
            self.leave_line();
        }
        match result {
            Ok(hold) => Ok(Some(hold)),
            Err(Stop::NotAcquired) => self.not_acquired().await,
            Err(Stop::Cancelled) => Err(crate::task::stopped("acquiring the read-write lock (the caller went away)")),
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    async fn steps(&mut self) -> Step<Held> {
        self.core.claim_in_process(&self.plan.key).await?;
        self.peek_before_one_shot().await?;
        loop {
            let s = self.core.live_session().await?;
            let Some(entries) = self.line_up(&s).await? else { continue };
            self.created = layout::mine(&self.plan.key, &s.id, &entries).map(|me| me.create_index);
            match layout::turn(&self.plan.key, &s.id, self.plan.mode, &entries) {
                Turn::Missing => self.forget_place(),
                Turn::Behind(w) => self.wait_on(&w, self.core.deadline).await?,
                Turn::BehindReaders(me) => {
                    let recheck = Instant::now() + RECHECK_READERS;
                    self.wait_on(&me, Some(self.core.deadline.map_or(recheck, |d| d.min(recheck)))).await?
                }
                Turn::Mine => {
                    let mine = layout::mine(&self.plan.key, &s.id, &entries).cloned();
                    if let Some(hold) = self.take(&s, mine).await? {
                        return Ok(hold);
                    }
                }
            }
        }
    }

    /// A one-shot request (`acquire_timeout(ZERO)`) that would make its own session first reads
    /// whether the lock is free for it (the key and the line): a busy lock then costs two reads,
    /// no session.
    async fn peek_before_one_shot(&mut self) -> Step {
        if self.plan.shared.is_some() || !self.core.past_deadline() {
            return Ok(());
        }
        let (client, key) = (&self.plan.client, &self.plan.key);
        let until = self.core.retry_until();
        let entry = retry::until(until, || client.kv_get(key)).await?;
        let line_prefix = layout::line_prefix(key);
        let line = retry::until(until, || client.kv_list(&line_prefix)).await?;
        let waiting = queue::places(&layout::line(key), &line);
        let free = match KeyState::of(entry.as_ref()) {
            KeyState::Foreign(flags) => return Err(Error::Conflict { key: key.clone(), flags }.into()),
            KeyState::Held { .. } => false,
            KeyState::Absent | KeyState::Marker(_) => match self.plan.mode {
                Mode::Read => waiting.iter().all(|p| Mode::of(p) == Mode::Read),
                Mode::Write => waiting.is_empty(),
            },
        };
        if free {
            Ok(())
        } else {
            Err(Stop::NotAcquired)
        }
    }

    /// Our place in line (taken now if we have none on this session) and the line as it is now;
    /// `None` when Consul refused our session (handled here: go round again).
    async fn line_up(&mut self, s: &SessionCore) -> Step<Option<Vec<KvEntry>>> {
        if self.place.as_ref().is_none_or(|p| p.sid() != s.id) {
            self.forget_place();
            self.core.attempted();
            let mark = Mark { flags: self.plan.mode.flags(), value: &self.value };
            let until = self.core.retry_until();
            let line = layout::line(&self.plan.key);
            match Place::enqueue_marked(&self.plan.client, &line, &s.id, Some(mark), until).await? {
                Some(p) => self.place = Some(p),
                None => {
                    let msg = "Consul refused the session for a place in line".to_owned();
                    self.core.after_invalid_session(s, 409, msg, "the read-write lock").await?;
                    return Ok(None);
                }
            }
        }
        let Some(place) = self.place.as_mut() else { return Ok(None) };
        // The enqueue's own listing the first time; then a fresh read (at least one, even late).
        let until = Some(self.core.retry_until().max(Instant::now() + self.plan.client.request_timeout()));
        match self.core.unless_cancelled(place.listing(until)).await?? {
            Some(entries) => Ok(Some(entries)),
            None => Err(Stop::NotAcquired),
        }
    }

    /// Wait until the place `w` changes or goes, or `until`. Past the request's own deadline:
    /// `NotAcquired`; at an earlier `until` (a writer's recheck), go round again.
    async fn wait_on(&mut self, w: &Watched, until: Option<Instant>) -> Step {
        if self.core.past_deadline() {
            return Err(Stop::NotAcquired);
        }
        let client = self.plan.client.clone();
        let same = |e: Option<&KvEntry>| w.same(e);
        let waited = self.core.unless_cancelled(queue::wait_while(&client, &w.key, w.modified, same, until)).await??;
        if waited.is_none() && self.core.past_deadline() {
            return Err(Stop::NotAcquired);
        }
        Ok(())
    }

    /// Our turn: read the key and take the lock; `None` to go round again (the key changed, a
    /// lock-delay, a refused session).
    async fn take(&mut self, s: &Arc<SessionCore>, mine: Option<KvEntry>) -> Step<Option<Held>> {
        let Some(mine) = mine else { return Ok(None) };
        let (client, key) = (self.plan.client.clone(), self.plan.key.clone());
        let entry = retry::until(self.core.retry_until(), || client.kv_get(&key)).await?;
        let attempt = match (KeyState::of(entry.as_ref()), self.plan.mode) {
            (KeyState::Foreign(flags), _) => return Err(Error::Conflict { key, flags }.into()),
            // Nobody ahead of us holds it (our line says so): wait for it to change.
            (KeyState::Held { index, .. }, Mode::Read) => return self.wait_key(index).await.map(|_| None),
            (KeyState::Held { session, index }, Mode::Write) if session != s.id => {
                return self.wait_key(index).await.map(|_| None);
            }
            (KeyState::Marker(_), Mode::Read) => return Ok(Some(self.held(s.clone(), &mine, mine.modify_index))),
            (KeyState::Absent, Mode::Read) => {
                let sid = s.id.clone();
                retry::until(self.core.retry_until(), || client.txn_rw_mark(&key, MARKER, &sid)).await?
            }
            (state, Mode::Write) => {
                let expect = match state {
                    KeyState::Marker(index) | KeyState::Held { index, .. } => Expect::Unchanged(index),
                    _ => Expect::Absent,
                };
                let (body, keys) = (take_body(&key, &self.value, &s.id, expect), [key.as_str()]);
                retry::until(self.core.retry_until(), || client.txn_lock(body.clone(), &keys, true)).await?
            }
        };
        self.core.attempted();
        match attempt {
            LockAttempt::Acquired { modify_index } => {
                let token = if self.plan.mode == Mode::Write { modify_index } else { mine.modify_index };
                Ok(Some(self.held(s.clone(), &mine, token)))
            }
            LockAttempt::LockDelay => self.core.back_off().await.map(|_| None),
            LockAttempt::Held | LockAttempt::NotAsExpected => Ok(None),
            LockAttempt::InvalidSession { status, message } => {
                self.forget_place();
                self.core.after_invalid_session(s, status, message, "the read-write lock").await.map(|_| None)
            }
        }
    }

    /// Wait until the key is no longer at `index` (cancellably, up to the deadline).
    async fn wait_key(&mut self, index: u64) -> Step {
        let mut watch = Watch::key(&self.plan.client, &self.plan.key).after(index);
        let deadline = self.core.deadline;
        match self.core.unless_cancelled(watch.next(deadline)).await?? {
            Some(_) => Ok(()),
            None => Err(Stop::NotAcquired),
        }
    }

    /// Taken: a hold of the key (a writer) or of our place (a reader), released by its giveback.
    fn held(&mut self, s: Arc<SessionCore>, mine: &KvEntry, token: u64) -> Held {
        tracing::debug!(session = %s.id, token, "acquired");
        let place = self.place.take().map(Place::disarm).unwrap_or_else(|| mine.key.clone());
        let own = self.plan.shared.is_none();
        let claim = self.core.claim.take();
        let (key, created) = (&self.plan.key, mine.create_index);
        let hold = match self.plan.mode {
            Mode::Write => {
                let hold = Hold::new(key.clone(), s, own, token, claim, self.plan.max_hold);
                hold.set_queue_entry(Some(place.clone()));
                hold.set_giveback(Arc::new(Giveback::Writer { key: key.clone(), place }));
                hold
            }
            Mode::Read => guard::reader_hold(key, place, created, s, own, token, claim, self.plan.max_hold),
        };
        Held { hold, created, value: self.value.clone() }
    }

    /// Our place is gone already (deleted with an invalidated session): forget it.
    fn forget_place(&mut self) {
        if let Some(place) = self.place.take() {
            place.disarm();
        }
    }

    /// We give up: leave the line in the background — a reader as at its release (so that a writer
    /// waiting behind it is woken if it was the last reader before it), a writer by dropping its
    /// place (the owner-checked delete).
    fn leave_line(&mut self) {
        let Some(place) = self.place.take() else { return };
        if self.plan.mode == Mode::Write {
            return; // dropping the place deletes it
        }
        let (client, key, sid) = (self.plan.client.clone(), self.plan.key.clone(), place.sid().to_owned());
        let (entry, created) = (place.disarm(), self.created);
        tokio::spawn(async move {
            if let Err(e) = guard::leave_as_reader(&client, &key, &entry, &sid, created).await {
                tracing::debug!(%entry, error = %e, "could not leave the line; our place goes with our session");
            }
        });
    }

    /// The answer at the deadline: `Ok(None)`, or `NotAcquired` naming the writer when one holds.
    async fn not_acquired(&mut self) -> Reply {
        if !self.fail_hard {
            return Ok(None);
        }
        let seen = self.plan.client.kv_get(&self.plan.key).await.ok().flatten();
        let holder = seen.and_then(|e| e.into_holder().ok().flatten()).map(Box::new);
        Err(Error::NotAcquired { key: self.plan.key.clone(), waited: self.core.start.elapsed(), holder })
    }
}
