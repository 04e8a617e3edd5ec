//! The crate's one blocking-query loop: waiting for a change of one key, one key prefix or one
//! session, with Consul's rules for blocking queries in this file only.
//!
//! The rules (Consul 1.8, the same in later versions):
//! - block on the `X-Consul-Index` header, never on a key's `ModifyIndex`; keep it at least 1, and
//!   reset it to 0 (a plain read next) when it goes backwards (agent restart, snapshot restore);
//! - never send `wait=0` (it means the 5-minute default); the answer may come up to wait/16 late, so
//!   the request timeout is wait + wait/16 + the client's request timeout;
//! - waits are capped at [`MAX_BLOCK`] and never run past the caller's deadline: the agent cannot be
//!   told that a watcher went away, and a blocking query holds one of the agent's HTTP connections
//!   per client IP (200 by default) until its wait ends;
//! - a query that returns with an unchanged index (its wait elapsed, or the index churns) is paced:
//!   the next one starts [`PACE`] later;
//! - failed requests are retried with jittered backoff, never past the deadline.

use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

use crate::consul::client::{Client, Reply};
use crate::consul::endpoints::{self, SessionEntry};
use crate::consul::key;
use crate::consul::retry::Backoff;
use crate::error::{Error, Result};
use crate::holder::KvEntry;

/// Longest single blocking query (as Go's client): bounds how long an abandoned query keeps an agent
/// connection busy.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(15);
/// Pause before re-querying after an answer whose index did not move.
pub(crate) const PACE: Duration = Duration::from_millis(20);

/// The index to block on after an answer: `(next index, changed)`. The header is kept at least 1;
/// an index that went backwards resets to 0, so the next request is a plain read of the current
/// state. The first answer (`prev == 0`) is always a change.
pub(crate) fn advance(prev: u64, header: Option<u64>) -> (u64, bool) {
    let got = header.unwrap_or(1).max(1);
    if got < prev {
        (0, true)
    } else {
        (got, got != prev)
    }
}

/// How long the next query may block, given the time left: `None` when the deadline has passed
/// (under 1 ms left). Never zero, never over [`MAX_BLOCK`].
pub(crate) fn block_for(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    match deadline {
        None => Some(MAX_BLOCK),
        Some(d) => {
            Some(d.saturating_duration_since(now)).filter(|l| *l >= Duration::from_millis(1)).map(|l| l.min(MAX_BLOCK))
        }
    }
}

/// The query parameters and request timeout of a blocking query on `index` for `wait`
/// (`index == 0`: a plain read, no parameters).
pub(crate) fn blocking_query(
    index: u64,
    wait: Duration,
    request_timeout: Duration,
) -> (Vec<(&'static str, String)>, Duration) {
    if index == 0 {
        return (Vec::new(), request_timeout);
    }
    let wait = wait.max(Duration::from_millis(1));
    let query = vec![("index", index.to_string()), ("wait", format!("{}ms", wait.as_millis()))];
    (query, wait + wait / 16 + request_timeout)
}

/// A blocking-query loop over one key, prefix or session. The first [`next`](Watch::next) is a
/// plain read unless [`after`](Watch::after) gave an index to block on.
pub(crate) struct Watch<T> {
    client: Client,
    path: String,
    recurse: bool,
    index: u64,
    pace: bool,
    backoff: Backoff,
    decode: fn(&Client, Reply) -> Result<T>,
    /// `Some(d)`: a retryable error is returned once requests have failed for `d` in a row.
    report_after: Option<Duration>,
    failing_since: Option<Instant>,
    /// The backoff owed after a returned error, slept at the start of the next call.
    pause_next: Option<Duration>,
    /// A holder's watch (its key, its session): keeps its connection when the agent is saturated.
    holder: bool,
}

impl Watch<Option<KvEntry>> {
    /// Watch one key: `None` while it does not exist.
    pub(crate) fn key(client: &Client, key: &str) -> Self {
        Self::new(client, format!("kv/{}", key::encode_path(key)), false, endpoints::decode_kv_entry)
    }
}

impl Watch<Vec<KvEntry>> {
    /// Watch every key under `prefix` (a `?recurse` query).
    pub(crate) fn prefix(client: &Client, prefix: &str) -> Self {
        Self::new(client, format!("kv/{}", key::encode_path(prefix)), true, endpoints::decode_kv_entries)
    }
}

impl Watch<Vec<SessionEntry>> {
    /// Watch one session: an empty list once it no longer exists.
    pub(crate) fn session(client: &Client, id: &str) -> Self {
        let mut path = String::from("session/info/");
        key::encode_component(id, &mut path);
        Self::new(client, path, false, endpoints::decode_sessions)
    }
}

impl<T> Watch<T> {
    fn new(client: &Client, path: String, recurse: bool, decode: fn(&Client, Reply) -> Result<T>) -> Self {
        Watch {
            client: client.clone(),
            path,
            recurse,
            index: 0,
            pace: false,
            backoff: Backoff::requests(),
            decode,
            report_after: None,
            failing_since: None,
            pause_next: None,
            holder: false,
        }
    }

    /// A holder's watch: it keeps its connection open even while the agent refuses new ones (a
    /// waiter's watch then closes its connection after each answer, to let other waiters in).
    pub(crate) fn for_holder(mut self) -> Self {
        self.holder = true;
        self
    }

    /// Return a retryable error (instead of retrying until the deadline) once requests have failed
    /// for `budget` in a row; the next call resumes after the backoff, from the same index.
    pub(crate) fn report_errors_after(mut self, budget: Duration) -> Self {
        self.report_after = Some(budget);
        self
    }

    /// Start by blocking on `index` (a state already seen) instead of reading the current state.
    pub(crate) fn after(mut self, index: u64) -> Self {
        self.index = index;
        self
    }

    /// The next answer: the current state first (unless started [`after`](Watch::after) an index),
    /// then the state after each change, or the same state when a wait elapses. `Ok(None)` when the
    /// deadline passes first; `None` deadline: wait as long as it takes.
    ///
    /// # Errors
    /// A non-retryable error at once; a retryable one when the deadline leaves no time to retry, or
    /// passes after it (Consul did not answer by the deadline: not "no change").
    pub(crate) async fn next(&mut self, deadline: Option<Instant>) -> Result<Option<T>> {
        if let Some(pause) = self.pause_next.take() {
            if !sleep_until_deadline(pause, deadline).await {
                return Ok(None);
            }
        }
        // A request of this call that failed: what the deadline returns instead of "no change",
        // since Consul never answered (however the deadline falls between the retries).
        let mut failed: Option<Error> = None;
        let out_of_time = |failed: Option<Error>| failed.map_or(Ok(None), Err);
        loop {
            if std::mem::take(&mut self.pace) && !sleep_until_deadline(PACE, deadline).await {
                return Ok(None);
            }
            let Some(wait) = block_for(deadline, Instant::now()) else { return out_of_time(failed) };
            let blocking = self.index > 0;
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.send(wait)).await {
                    Ok(r) => r,
                    Err(_) => return out_of_time(failed),
                },
                None => self.send(wait).await,
            };
            // An error answer (a 500 "No cluster leader" during a failover, say) is a failed
            // request like a refused connection: retried the same way.
            let decode = self.decode;
            let result = result.and_then(|reply| {
                let header = reply.index;
                decode(&self.client, reply).map(|value| (header, value))
            });
            match result {
                Ok((header, value)) => {
                    self.backoff = Backoff::requests();
                    self.failing_since = None;
                    let (index, changed) = advance(self.index, header);
                    self.index = index;
                    self.pace = blocking && !changed;
                    return Ok(Some(value));
                }
                Err(e) if e.is_retryable() => {
                    let pause = self.backoff.next_delay();
                    if block_for(deadline, Instant::now() + pause).is_none() {
                        return Err(e); // no answer from Consul by the deadline
                    }
                    if self.over_error_budget() {
                        self.pause_next = Some(pause);
                        return Err(e);
                    }
                    tracing::debug!(path = %self.path, error = %e, ?pause, "watch query failed; retrying");
                    failed = Some(e);
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// For background watchers: the next answer, however long it takes. Every error is logged and
    /// retried with backoff.
    pub(crate) async fn follow(&mut self) -> T {
        loop {
            match self.next(None).await {
                Ok(Some(value)) => return value,
                Ok(None) => {}
                Err(e) => {
                    let pause = self.backoff.next_delay();
                    tracing::debug!(path = %self.path, error = %e, ?pause, "watch failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Whether requests have now failed for longer than the error budget (then the count restarts).
    fn over_error_budget(&mut self) -> bool {
        let Some(budget) = self.report_after else { return false };
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() < budget {
            return false;
        }
        self.failing_since = None;
        true
    }

    async fn send(&self, wait: Duration) -> Result<Reply> {
        // A connection first (the client's budget), then the wait: shorter when the connection is
        // shared with holder writes or other waits queue for one.
        let pass = self.client.admit_wait(self.holder).await;
        let wait = wait.min(pass.wait_cap);
        let (mut query, timeout) = blocking_query(self.index, wait, self.client.request_timeout());
        if self.recurse {
            query.push(("recurse", String::new()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.client.send(pass, Method::GET, &self.path, &query, None, timeout).await
    }
}

/// Sleep `pause`, cut short at the deadline; `false` when the deadline passed.
async fn sleep_until_deadline(pause: Duration, deadline: Option<Instant>) -> bool {
    let wake = Instant::now() + pause;
    match deadline {
        Some(d) if d <= wake => {
            tokio::time::sleep_until(d).await;
            false
        }
        _ => {
            tokio::time::sleep_until(wake).await;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        // First answer: always a change; a missing or zero header counts as 1.
        assert_eq!(advance(0, Some(42)), (42, true));
        assert_eq!(advance(0, None), (1, true));
        assert_eq!(advance(0, Some(0)), (1, true));
        // Unchanged: the wait elapsed (or churn) — not a change.
        assert_eq!(advance(42, Some(42)), (42, false));
        // Forward: a change.
        assert_eq!(advance(42, Some(50)), (50, true));
        // Backwards (agent restarted, snapshot restored): reset to a plain read.
        assert_eq!(advance(42, Some(7)), (0, true));
        assert_eq!(advance(42, None), (0, true));
    }

    #[test]
    fn waits_are_capped_and_never_zero() {
        let now = Instant::now();
        assert_eq!(block_for(None, now), Some(MAX_BLOCK));
        assert_eq!(block_for(Some(now + Duration::from_secs(60)), now), Some(MAX_BLOCK));
        assert_eq!(block_for(Some(now + Duration::from_millis(300)), now), Some(Duration::from_millis(300)));
        assert_eq!(block_for(Some(now + Duration::from_micros(500)), now), None);
        assert_eq!(block_for(Some(now), now), None);
        assert_eq!(block_for(Some(now), now + Duration::from_secs(1)), None);
    }

    #[test]
    fn query_and_timeout() {
        let rt = Duration::from_secs(10);
        let (q, t) = blocking_query(0, MAX_BLOCK, rt);
        assert!(q.is_empty());
        assert_eq!(t, rt);
        let (q, t) = blocking_query(7, Duration::from_millis(1600), rt);
        assert_eq!(q, vec![("index", "7".to_owned()), ("wait", "1600ms".to_owned())]);
        assert_eq!(t, Duration::from_millis(1600 + 100) + rt);
        let (q, _) = blocking_query(7, Duration::ZERO, rt);
        assert_eq!(q[1].1, "1ms", "wait=0 would mean five minutes");
    }

    /// A deadline that passes while a retry is unanswered returns the failure, not "no change":
    /// the first connection is closed without an answer, the next one is never answered.
    #[tokio::test]
    async fn the_deadline_after_a_failed_request_is_that_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut kept = Vec::new();
            for n in 0.. {
                let Ok((conn, _)) = listener.accept().await else { return };
                if n > 0 {
                    kept.push(conn); // accepted, never answered
                }
            }
        });
        let client = Client::builder().address(addr.to_string()).build().unwrap();
        let mut watch = Watch::key(&client, "k");
        let deadline = Instant::now() + Duration::from_millis(400);
        let got = watch.next(Some(deadline)).await;
        assert!(matches!(got, Err(Error::Transport(_))), "{got:?}");
        assert!(Instant::now() >= deadline - Duration::from_millis(5), "it retried until the deadline");
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_sleep_stops_at_the_deadline() {
        let t0 = Instant::now();
        assert!(sleep_until_deadline(PACE, None).await);
        assert_eq!(t0.elapsed(), PACE);
        let t1 = Instant::now();
        assert!(!sleep_until_deadline(PACE, Some(t1 + Duration::from_millis(5))).await);
        assert_eq!(t1.elapsed(), Duration::from_millis(5));
    }
}
