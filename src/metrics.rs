//! Lock-level metrics through the `metrics` facade (feature `metrics`; the application installs the
//! recorder/exporter it wants). Every metric is listed in the README's "Metrics" section.
//!
//! Call sites use the small functions and types here and need no `cfg`: without the feature they
//! compile to nothing. No label carries a key unless the client opted in
//! ([`ClientBuilder::metrics_key_label`](crate::ClientBuilder::metrics_key_label)).

#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

#[cfg(feature = "metrics")]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(feature = "metrics")]
use tokio::time::Instant;

use crate::error::Result;

/// Acquire wait by outcome (histogram, seconds).
pub(crate) const ACQUIRE_WAIT: &str = "consul_lock_acquire_wait_seconds";
/// How long locks were held, by outcome (histogram, seconds).
pub(crate) const HOLD_TIME: &str = "consul_lock_hold_seconds";
/// Locks held now (gauge).
pub(crate) const HELD: &str = "consul_lock_held";
/// Acquires in progress (gauge).
pub(crate) const WAITING: &str = "consul_lock_waiting";
/// Held locks lost, by reason (counter).
pub(crate) const LOST: &str = "consul_lock_lost_total";
/// Session renewals that failed (counter).
pub(crate) const RENEWAL_FAILURES: &str = "consul_lock_renewal_failures_total";
/// HTTP requests to Consul by endpoint and status (counter).
pub(crate) const REQUESTS: &str = "consul_lock_requests_total";

/// How a held lock was found lost: the `reason` label of [`LOST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// A renewal answered 404: the session was destroyed (from outside, e.g. `consul-lock break`)
    /// or expired on the server.
    Renew404,
    /// A renewal was refused for good (e.g. 403 after an ACL change).
    RenewRefused,
    /// No successful renewal within the TTL: the local lease deadline passed.
    Deadline,
    /// A watch (blocking query) saw the key deleted or taken by another session, or the session gone.
    Watch,
    /// The lock's `max_hold` elapsed.
    MaxHold,
    /// Consul refused a lock attempt on a shared session as invalid.
    InvalidSession,
}

impl Loss {
    fn label(self) -> &'static str {
        match self {
            Loss::Renew404 => "renew_404",
            Loss::RenewRefused => "renew_refused",
            Loss::Deadline => "deadline",
            Loss::Watch => "watch",
            Loss::MaxHold => "max_hold",
            Loss::InvalidSession => "invalid_session",
        }
    }
}

/// One acquire in progress: counted in [`WAITING`] until dropped; [`finish`](Self::finish) records
/// its wait under its outcome. Dropped unfinished (the caller cancelled it): outcome `cancelled`.
pub(crate) struct AcquireWait {
    #[cfg(feature = "metrics")]
    start: Instant,
    #[cfg(feature = "metrics")]
    key: Option<String>,
    #[cfg(feature = "metrics")]
    outcome: &'static str,
}

impl AcquireWait {
    pub(crate) fn start(label_key: bool, key: &str) -> AcquireWait {
        #[cfg(feature = "metrics")]
        {
            describe();
            metrics::gauge!(WAITING).increment(1.0);
            AcquireWait { start: Instant::now(), key: key_label(label_key, key), outcome: "cancelled" }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (label_key, key);
            AcquireWait {}
        }
    }

    /// Record the outcome of an acquire: `Ok(Some)` acquired, `Ok(None)` or `NotAcquired` not
    /// acquired, any other error an error.
    pub(crate) fn finish<T>(mut self, result: &Result<Option<T>>) {
        #[cfg(feature = "metrics")]
        {
            self.outcome = match result {
                Ok(Some(_)) => "acquired",
                Ok(None) => "not_acquired",
                Err(e) if e.is_not_acquired() => "not_acquired",
                Err(_) => "error",
            };
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (&mut self, result);
    }
}

#[cfg(feature = "metrics")]
impl Drop for AcquireWait {
    fn drop(&mut self) {
        metrics::gauge!(WAITING).decrement(1.0);
        let waited = self.start.elapsed().as_secs_f64();
        match self.key.take() {
            Some(key) => metrics::histogram!(ACQUIRE_WAIT, "outcome" => self.outcome, "key" => key).record(waited),
            None => metrics::histogram!(ACQUIRE_WAIT, "outcome" => self.outcome).record(waited),
        }
    }
}

/// A session's share of the metrics: how many locks it holds now, so that losing the session
/// counts each lock it held.
#[derive(Default)]
pub(crate) struct SessionLocks {
    #[cfg(feature = "metrics")]
    held: AtomicU64,
    #[cfg(feature = "metrics")]
    lost: AtomicBool,
}

impl SessionLocks {
    /// The session is lost: every lock it holds is lost, for `loss`. Counted once.
    pub(crate) fn lost(&self, loss: Loss) {
        #[cfg(feature = "metrics")]
        if !self.lost.swap(true, Ordering::SeqCst) {
            let n = self.held.swap(0, Ordering::SeqCst);
            if n > 0 {
                metrics::gauge!(HELD).decrement(n as f64);
                metrics::counter!(LOST, "reason" => loss.label()).increment(n);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = loss;
    }
}

/// One held lock: counted in [`HELD`] until released or known lost; its hold time is recorded when
/// it is released or dropped.
pub(crate) struct HeldLock {
    #[cfg(feature = "metrics")]
    start: Instant,
    #[cfg(feature = "metrics")]
    key: Option<String>,
    /// Still counted in [`HELD`] and in its session's count.
    #[cfg(feature = "metrics")]
    active: AtomicBool,
}

impl HeldLock {
    pub(crate) fn start(label_key: bool, key: &str, session: &SessionLocks) -> HeldLock {
        #[cfg(feature = "metrics")]
        {
            describe();
            session.held.fetch_add(1, Ordering::SeqCst);
            metrics::gauge!(HELD).increment(1.0);
            HeldLock { start: Instant::now(), key: key_label(label_key, key), active: AtomicBool::new(true) }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (label_key, key, session);
            HeldLock {}
        }
    }

    /// This lock alone is lost (its key watch, its `max_hold`). Not counted again when its session
    /// was already lost (that loss counted it).
    pub(crate) fn lost(&self, session: &SessionLocks, loss: Loss) {
        #[cfg(feature = "metrics")]
        if self.stop_counting(session) {
            metrics::counter!(LOST, "reason" => loss.label()).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (session, loss);
    }

    /// Released or dropped (`lost`: it had been lost before): records the hold time.
    pub(crate) fn finished(&self, session: &SessionLocks, lost: bool) {
        #[cfg(feature = "metrics")]
        {
            self.stop_counting(session);
            let outcome = if lost { "lost" } else { "released" };
            let held = self.start.elapsed().as_secs_f64();
            match self.key.clone() {
                Some(key) => metrics::histogram!(HOLD_TIME, "outcome" => outcome, "key" => key).record(held),
                None => metrics::histogram!(HOLD_TIME, "outcome" => outcome).record(held),
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (session, lost);
    }

    /// Leave [`HELD`] and the session's count, once; `false` if already out of them.
    #[cfg(feature = "metrics")]
    fn stop_counting(&self, session: &SessionLocks) -> bool {
        if !self.active.swap(false, Ordering::SeqCst) || session.lost.load(Ordering::SeqCst) {
            return false;
        }
        let _ = session.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        metrics::gauge!(HELD).decrement(1.0);
        true
    }
}

/// A session renewal that failed (it is retried until the lease deadline).
pub(crate) fn renewal<T>(result: &Result<T>) {
    #[cfg(feature = "metrics")]
    if result.is_err() {
        describe();
        metrics::counter!(RENEWAL_FAILURES).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// One HTTP request to `path` (below `/v1/`): its HTTP status, or `error` when none came back.
pub(crate) fn request(path: &str, status: Option<u16>) {
    #[cfg(feature = "metrics")]
    {
        describe();
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        metrics::counter!(REQUESTS, "endpoint" => endpoint(path), "status" => status).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (path, status);
}

/// The endpoint of a request path, with no key or session ID in it: `kv`, `txn`,
/// `session/create`, `session/renew`, `session/destroy`, `session/info`, …
fn endpoint(path: &str) -> &'static str {
    let mut parts = path.split(['/', '?']);
    match (parts.next(), parts.next()) {
        (Some("kv"), _) => "kv",
        (Some("txn"), _) => "txn",
        (Some("session"), Some("create")) => "session/create",
        (Some("session"), Some("renew")) => "session/renew",
        (Some("session"), Some("destroy")) => "session/destroy",
        (Some("session"), Some("info")) => "session/info",
        (Some("status"), Some("leader")) => "status/leader",
        _ => "other",
    }
}

#[cfg(feature = "metrics")]
fn key_label(label_key: bool, key: &str) -> Option<String> {
    label_key.then(|| key.to_owned())
}

/// Units and descriptions, registered once with whatever recorder is installed.
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::Unit;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_histogram!(ACQUIRE_WAIT, Unit::Seconds, "Time acquires waited, by outcome");
        metrics::describe_histogram!(HOLD_TIME, Unit::Seconds, "Time locks were held, by outcome");
        metrics::describe_gauge!(HELD, "Locks held now");
        metrics::describe_gauge!(WAITING, "Acquires in progress");
        metrics::describe_counter!(LOST, "Held locks lost, by reason");
        metrics::describe_counter!(RENEWAL_FAILURES, "Session renewals that failed");
        metrics::describe_counter!(REQUESTS, "HTTP requests to Consul, by endpoint and status");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_carry_no_key_or_id() {
        assert_eq!(endpoint("kv/secret/key"), "kv");
        assert_eq!(endpoint("txn"), "txn");
        assert_eq!(endpoint("session/renew/0000-1111"), "session/renew");
        assert_eq!(endpoint("session/info/abc"), "session/info");
        assert_eq!(endpoint("session/create"), "session/create");
        assert_eq!(endpoint("agent/self"), "other");
    }

    #[test]
    fn loss_labels_are_distinct() {
        let all =
            [Loss::Renew404, Loss::RenewRefused, Loss::Deadline, Loss::Watch, Loss::MaxHold, Loss::InvalidSession];
        let labels: std::collections::HashSet<_> = all.iter().map(|l| l.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
