//! What every acquire procedure (a lock's, a semaphore slot's) shares: its deadline, the caller's
//! channel (a caller that goes away stops the procedure at its next wait, never mid-write), the
//! in-process claim on a shared session, a live session, and what to do when Consul refuses it.
//! The procedures themselves (`lock/acquire.rs`, `semaphore/admit.rs`) keep only their own protocol's steps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::SessionSpec;
use crate::consul::retry::Backoff;
use crate::error::Error;
use crate::metrics::Loss;
use crate::session::lifecycle::{Claim, SessionCore};
use crate::task::{Step, Stop};

/// Give up after this many fresh sessions in a row are refused as invalid at their first attempt.
const MAX_FRESH_INVALID_SESSIONS: u32 = 3;

/// The shared state of one acquire procedure whose caller waits for a `T` on `tx`.
pub(crate) struct Procedure<T> {
    pub(crate) client: Client,
    pub(crate) spec: SessionSpec,
    /// The caller's [`Session`](crate::Session), if it brought one.
    pub(crate) shared: Option<Arc<SessionCore>>,
    pub(crate) tx: oneshot::Sender<T>,
    pub(crate) start: Instant,
    /// `None`: wait forever.
    pub(crate) deadline: Option<Instant>,
    /// A shared session's in-process claim, handed to what is acquired.
    pub(crate) claim: Option<Claim>,
    session: Option<Arc<SessionCore>>,
    /// What is acquired, for errors: the lock's key, the semaphore's prefix.
    target: String,
    pause: Backoff,
    /// Attempts on the current session, and how many sessions in a row were refused as invalid at
    /// their very first attempt (a permanent server problem, not an expiry during a wait).
    attempts_on_session: u32,
    fresh_invalid: u32,
}

impl<T> Procedure<T> {
    pub(crate) fn new(
        client: Client,
        spec: SessionSpec,
        shared: Option<Arc<SessionCore>>,
        acquire_timeout: Duration,
        target: &str,
        tx: oneshot::Sender<T>,
    ) -> Self {
        let start = Instant::now();
        Procedure {
            client,
            spec,
            session: shared.clone(),
            shared,
            tx,
            start,
            deadline: start.checked_add(acquire_timeout),
            claim: None,
            target: target.to_owned(),
            pause: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            attempts_on_session: 0,
            fresh_invalid: 0,
        }
    }

    pub(crate) fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Until when a write is retried: at least one attempt even with a zero timeout, a bounded
    /// retry without one.
    pub(crate) fn retry_until(&self) -> Instant {
        let now = Instant::now();
        self.deadline.unwrap_or(now + Duration::from_secs(86_400 * 365)).max(now)
    }

    /// Wait for `fut` unless the caller goes away first (checked before `fut` is polled). For waits
    /// only, never around a write.
    pub(crate) async fn unless_cancelled<F: Future>(&mut self, fut: F) -> Step<F::Output> {
        crate::task::unless_closed(&mut self.tx, fut).await.ok_or(Stop::Cancelled)
    }

    /// Pause (cancellably) for `pause`, at most until the deadline; `NotAcquired` if none is left.
    pub(crate) async fn sleep(&mut self, pause: Duration) -> Step {
        let left = match self.deadline {
            None => pause,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        if left < Duration::from_millis(1) {
            return Err(Stop::NotAcquired);
        }
        self.unless_cancelled(tokio::time::sleep(pause.min(left))).await
    }

    /// Pause for the next jittered backoff delay (a key in its lock-delay).
    pub(crate) async fn back_off(&mut self) -> Step {
        let pause = self.pause.next_delay();
        self.sleep(pause).await
    }

    /// The current session's ID (`""` before the first).
    pub(crate) fn session_id(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.id.as_str())
    }

    /// One more attempt made on the current session.
    pub(crate) fn attempted(&mut self) {
        self.attempts_on_session += 1;
    }

    /// Shared sessions: one holder of `key` per session in this process, so a second one waits
    /// here. A no-op without a shared session.
    pub(crate) async fn claim_in_process(&mut self, key: &str) -> Step {
        let Some(s) = self.shared.clone() else { return Ok(()) };
        let deadline = self.deadline;
        match self.unless_cancelled(s.claim(key, deadline)).await? {
            Some(c) => {
                self.claim = Some(c);
                Ok(())
            }
            None => Err(Stop::NotAcquired),
        }
    }

    /// The error for a shared session that is gone: what it held or waited for is lost.
    fn lost(&self) -> Stop {
        Error::LockLost { key: self.target.clone() }.into()
    }

    /// A live session: the shared one, the current one, or a new one (renewed from now on, while we
    /// wait too).
    pub(crate) async fn live_session(&mut self) -> Step<Arc<SessionCore>> {
        match &self.session {
            Some(s) if !s.is_lost() => return Ok(s.clone()),
            Some(_) if self.shared.is_some() => return Err(self.lost()),
            _ => {}
        }
        let created = SessionCore::create(&self.client, &self.spec, self.retry_until()).await?;
        self.session = Some(created.clone());
        self.attempts_on_session = 0;
        if self.tx.is_closed() {
            return Err(Stop::Cancelled); // dropping `created` destroys it
        }
        Ok(created)
    }

    /// Whether `s`, from [`live_session`](Self::live_session), has lease enough for an attempt: an
    /// own session whose lease is more than half spent (its renewals refused while it waited at a
    /// crowded agent) is renewed first, and `false` means it turned out lost (the next
    /// `live_session` makes a new one). A shared session's lease is its owner's business.
    pub(crate) async fn ready_to_attempt(&self, s: &SessionCore) -> bool {
        self.shared.is_some() || s.fresh_for_hold().await
    }

    /// Consul refused our session. A shared one is lost; an own one is replaced (paced), unless
    /// Consul keeps refusing brand-new sessions. `what` names what we tried to take, for the error.
    pub(crate) async fn after_invalid_session(
        &mut self,
        s: &SessionCore,
        status: u16,
        message: String,
        what: &str,
    ) -> Step {
        s.mark_lost(Loss::InvalidSession, "Consul says the session is invalid");
        if self.shared.is_some() {
            return Err(self.lost());
        }
        self.fresh_invalid = if self.attempts_on_session == 1 { self.fresh_invalid + 1 } else { 0 };
        if self.fresh_invalid >= MAX_FRESH_INVALID_SESSIONS || self.past_deadline() {
            // Never held, so not "lost": Consul keeps refusing our sessions. Its own answer, with context.
            let address = self.client.address().to_owned();
            let n = self.fresh_invalid;
            let message = format!(
                "{message} (Consul invalidated our session before {what} could be taken; {n} new sessions refused in a row)"
            );
            return Err(Error::Consul { address, status, message }.into());
        }
        match self.back_off().await {
            Err(Stop::NotAcquired) => Ok(()), // out of time: the next attempt decides
            other => other,
        }
    }
}
