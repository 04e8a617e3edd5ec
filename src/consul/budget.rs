//! The connection budget of a [`Client`](crate::Client): how many connections it may have to the
//! agent at once, and which request gets one first.
//!
//! An agent allows `limits.http_max_conns_per_client` (200 by default) concurrent HTTP connections
//! per client address and resets new ones past it; every process of a host usually shares that
//! address. So a `Client` never has more than its budget of connections, however many tasks wait,
//! and a holder's writes never depend on opening a new one:
//!
//! - **Lanes.** [`Lane::Holder`]: what keeps or ends a hold (renewals, releases, owner-checked
//!   deletes, guarded writes, session destroys; from a budget of 3, every session's own writes).
//!   [`Lane::Turn`]: a waiter's attempt in its turn, which opens the holder connection.
//!   [`Lane::Priority`]: a waiting session's renewal through a budget of 1 or 2, first on the
//!   shared connection. [`Lane::Request`]: every other short request. [`Lane::Wait`]: blocking
//!   queries, on at most `waits` connections, always fewer than the shared pool's, so short requests
//!   never queue behind a 15-second wait.
//! - **Holder connections.** Over HTTP/1.1 with a budget of 2 or more, holder writes have
//!   [`holder_connections`] of their own (1 to 4), outside the pool the waits use, kept open
//!   (Consul 1.8's HTTP server has no idle timeout). With a budget of 1 everything shares one
//!   connection: blocking queries are then capped at [`SHARED_WAIT`], and a holder write queued
//!   behind one gets the connection next, ahead of queued requests and waits.
//! - **Waits rotate.** A quarter of the wait permits may wait their full time; the others wait at
//!   most [`ROTATE_WAIT`], and so do all while other waits queue for a permit or the agent refuses
//!   connections: every waiter gets its turn to look in bounded time, and connections come back
//!   within half a second for the requests that need one.
//! - **A saturated agent.** A connection the agent closes before answering shrinks the budget by
//!   one (down to two) and quiet time grows it back; while the agent refuses, a request waits for
//!   one of its pool's open connections rather than open another ([`Pass::reuse_only`]).
//! - **HTTP/2.** An `https://` agent that negotiates h2 carries every request on one connection;
//!   until the first answer tells the protocol, one request at a time (so a burst does not open a
//!   connection per request). Then up to [`H2_STREAMS`] requests share it.
//!
//! Counting is by permits: a request holds its permits for its whole exchange, and over `http://`
//! the connections are this crate's own (`http1`), which puts an answered connection back before
//! the permit is released and opens one only when none is idle, so the permits are a hard cap.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Default budget of connections per [`Client`](crate::Client).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// HTTP/2: requests in flight at once on the one connection (Consul's Go server allows 250
/// streams per connection).
pub(crate) const H2_STREAMS: usize = 128;
/// Longest wait of a blocking query started while others queue for a connection.
pub(crate) const ROTATE_WAIT: Duration = Duration::from_millis(500);
/// Longest wait of a blocking query when holder writes or short requests share its connection
/// (a budget of 1 or 2): a renewal due while it blocks is sent at most this much later, well
/// within half the shortest TTL (10 s). Such a waiter also closes its connection after each
/// answer, so the waiting processes of a host take turns at the agent's cap.
pub(crate) const SHARED_WAIT: Duration = Duration::from_millis(2500);

/// What kind of request asks for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A write a holder needs: renewal, release, owner-checked delete, session destroy.
    Holder,
    /// Any other short request.
    Request,
    /// A blocking query.
    Wait,
    /// A waiter's renewal: ahead of requests and waits, on the connections they use.
    Priority,
    /// A waiter's attempt in its turn: on the holder connection (opening it), since it most
    /// likely succeeds and the hold then needs that connection.
    Turn,
}

/// The permits of one request, released when it is dropped (or kept back, when the budget is
/// shrinking after the agent refused connections).
pub(crate) struct Pass<'a> {
    budget: &'a Budget,
    conn: Option<SemaphorePermit<'a>>,
    wait: Option<SemaphorePermit<'a>>,
    /// Send on the holder connection's own pool.
    pub(crate) holder_pool: bool,
    /// Longest wait for a blocking query sent with this pass.
    pub(crate) wait_cap: Duration,
    /// Close the connection after the answer: a waiter's blocking query on a budget of 1 or 2, so
    /// that other waiting processes of the host get a turn at a connection.
    pub(crate) close: bool,
    /// Holds one of the budget's long waits.
    long: bool,
    /// The agent refuses new connections: wait for one of the pool's own to come back rather than
    /// open another (unless the pool has none).
    pub(crate) reuse_only: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.long {
            self.budget.long.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(p) = self.conn.take() {
            if !self.holder_pool && take_one(&self.budget.conn_debt) {
                p.forget();
            }
        }
        if let Some(p) = self.wait.take() {
            if take_one(&self.budget.wait_debt) {
                p.forget();
            }
        }
    }
}

/// Decrement `n` if it is positive; whether it was.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

pub(crate) struct Budget {
    max: usize,
    /// Connections of the shared pool (requests, waits, and holder writes when they share it).
    conns: Semaphore,
    /// Blocking queries in flight.
    waits: Semaphore,
    /// The holder connection (one permit), when holder writes have their own.
    holder: Semaphore,
    /// Requests and waits enter `conns`' queue one at a time, so a holder write queues behind at
    /// most one of them.
    turnstile: Mutex<()>,
    /// Whether holder writes use their own connection (HTTP/1.1, budget ≥ 2).
    holder_own: AtomicBool,
    /// `https://`: the protocol is unknown until the first answer.
    probing: AtomicBool,
    h2: AtomicBool,
    queued_waits: AtomicUsize,
    /// The holder connection was opened (by a holder's write, or the warm-up when a hold begins)
    /// and has not failed since; a warm-up is under way.
    holder_warm: AtomicBool,
    warming: AtomicBool,
    /// The limits of `conns` and `waits` now (the agent's refusals shrink them, time regrows them)
    /// and the most they may reach.
    cur_conns: AtomicUsize,
    cur_waits: AtomicUsize,
    top_conns: AtomicUsize,
    top_waits: AtomicUsize,
    /// Permits to take out of circulation as requests finish (a shrink while all were in use).
    conn_debt: AtomicUsize,
    wait_debt: AtomicUsize,
    /// When the agent last refused a connection, and when the budget last grew back.
    last_reset: std::sync::Mutex<Option<Instant>>,
    last_grow: std::sync::Mutex<Instant>,
    /// Blocking queries in flight that may wait their full time (see [`Budget::long_waits`]).
    long: AtomicUsize,
}

/// How many connections holder writes keep for themselves (HTTP/1.1, a budget of 2 or more): one
/// per 8 of the budget, 1 to 4. The first is opened with the client's first session and kept;
/// while the agent refuses connections, holder writes wait for one of those already open.
pub(crate) fn holder_connections(max: usize) -> usize {
    (max / 8).clamp(1, 4)
}

/// How long after the agent's last refusal the client counts it as saturated.
const SATURATED_FOR: Duration = Duration::from_secs(10);
/// How often a shrunk budget grows back by one connection once the agent stopped refusing.
const REGROW_EVERY: Duration = Duration::from_secs(1);

impl Budget {
    /// `max` connections (≥ 1); `https`: start by probing for HTTP/2.
    pub(crate) fn new(max: usize, https: bool) -> Budget {
        let max = max.max(1);
        let b = Budget {
            max,
            conns: Semaphore::new(0),
            waits: Semaphore::new(0),
            holder: Semaphore::new(1),
            turnstile: Mutex::new(()),
            holder_own: AtomicBool::new(false),
            probing: AtomicBool::new(https),
            h2: AtomicBool::new(false),
            queued_waits: AtomicUsize::new(0),
            holder_warm: AtomicBool::new(false),
            warming: AtomicBool::new(false),
            cur_conns: AtomicUsize::new(1),
            cur_waits: AtomicUsize::new(1),
            top_conns: AtomicUsize::new(1),
            top_waits: AtomicUsize::new(1),
            conn_debt: AtomicUsize::new(0),
            wait_debt: AtomicUsize::new(0),
            last_reset: std::sync::Mutex::new(None),
            last_grow: std::sync::Mutex::new(Instant::now()),
            long: AtomicUsize::new(0),
        };
        if https {
            b.conns.add_permits(1);
            b.waits.add_permits(1);
        } else {
            b.open_http1(0);
        }
        b
    }

    /// HTTP/1.1: a connection per request in flight. `had`: permits given already (the probe's).
    fn open_http1(&self, had: usize) {
        let own = self.max >= 2;
        self.holder_own.store(own, Ordering::SeqCst);
        let holders = if own { holder_connections(self.max) } else { 1 };
        self.holder.add_permits(holders - 1);
        let pool = if own { self.max - holders } else { 1 };
        let waits = if pool >= 3 { pool - 1 } else { 1 };
        self.grow(pool, waits, had);
    }

    /// Raise the permits to `conns` and `waits` from `had` each.
    fn grow(&self, conns: usize, waits: usize, had: usize) {
        self.conns.add_permits(conns.saturating_sub(had));
        self.waits.add_permits(waits.saturating_sub(had));
        for (cur, top, n) in [(&self.cur_conns, &self.top_conns, conns), (&self.cur_waits, &self.top_waits, waits)] {
            cur.store(n, Ordering::SeqCst);
            top.store(n, Ordering::SeqCst);
        }
    }

    /// The agent closed a new connection of ours (its cap of connections per client address):
    /// use one connection less, down to two (one wait, one request), so that this client stops
    /// asking for connections the agent refuses.
    pub(crate) fn refused(&self) {
        *crate::mutex::lock(&self.last_reset) = Some(Instant::now());
        if self.is_h2() {
            return;
        }
        let (conns, waits) = (self.cur_conns.load(Ordering::SeqCst), self.cur_waits.load(Ordering::SeqCst));
        if conns <= 2 || waits <= 1 {
            return;
        }
        self.cur_conns.store(conns - 1, Ordering::SeqCst);
        self.cur_waits.store(waits - 1, Ordering::SeqCst);
        for (sem, debt) in [(&self.conns, &self.conn_debt), (&self.waits, &self.wait_debt)] {
            match sem.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => {
                    debt.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        tracing::debug!(connections = conns - 1, "the agent refuses connections: using fewer");
    }

    /// An answer arrived: once the agent has stopped refusing for a while, grow a shrunk budget
    /// back by one connection per [`REGROW_EVERY`].
    pub(crate) fn answered(&self) {
        let (conns, top) = (self.cur_conns.load(Ordering::Relaxed), self.top_conns.load(Ordering::Relaxed));
        if conns >= top || self.saturated() {
            return;
        }
        {
            let mut last = crate::mutex::lock(&self.last_grow);
            if last.elapsed() < REGROW_EVERY {
                return;
            }
            *last = Instant::now();
        }
        for (sem, debt, cur) in
            [(&self.conns, &self.conn_debt, &self.cur_conns), (&self.waits, &self.wait_debt, &self.cur_waits)]
        {
            if !take_one(debt) {
                sem.add_permits(1);
            }
            cur.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many blocking queries may wait their full time at once: a quarter of the wait permits
    /// (at least one). The others wait at most [`ROTATE_WAIT`], so that whatever happens (the agent
    /// starts refusing connections, more waiters arrive), most connections come back within half a
    /// second for the requests and waiters that need one.
    fn long_waits(&self) -> usize {
        (self.cur_waits.load(Ordering::SeqCst) / 4).max(1)
    }

    /// Take one of the [`long_waits`](Self::long_waits), if one is free.
    fn take_long(&self) -> bool {
        let max = self.long_waits();
        self.long.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Whether the agent refused a connection of ours within the last [`SATURATED_FOR`].
    pub(crate) fn saturated(&self) -> bool {
        crate::mutex::lock(&self.last_reset).is_some_and(|t| t.elapsed() < SATURATED_FOR)
    }

    /// The first answer of an `https://` client tells its protocol; later calls do nothing.
    pub(crate) fn learned(&self, version: reqwest::Version) {
        // Exactly one caller opens the budget.
        if !self.probing.load(Ordering::Relaxed) || !self.probing.swap(false, Ordering::SeqCst) {
            return;
        }
        if version == reqwest::Version::HTTP_2 {
            self.h2.store(true, Ordering::SeqCst);
            self.grow(H2_STREAMS, H2_STREAMS - 4, 1);
            tracing::debug!("the agent speaks HTTP/2: every request shares one connection");
        } else {
            self.open_http1(1);
        }
    }

    /// An `https://` client that has had no answer yet (its protocol is unknown).
    pub(crate) fn probing(&self) -> bool {
        self.probing.load(Ordering::SeqCst)
    }

    /// Whether the client talks HTTP/2 to the agent.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::SeqCst)
    }

    /// The budget (connections at most).
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Whether a warm-up is already under way (and if not, it is now).
    pub(crate) fn start_warming(&self) -> bool {
        self.warming.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn stop_warming(&self) {
        self.warming.store(false, Ordering::SeqCst);
    }

    /// Whether the holder connection should be opened: holder writes have one of their own and it
    /// is not open (yet, or any more).
    pub(crate) fn holder_cold(&self) -> bool {
        self.holder_own.load(Ordering::SeqCst) && !self.holder_warm.load(Ordering::SeqCst)
    }

    /// Whether holder writes have connections of their own (HTTP/1.1 with a budget of 2 or more).
    pub(crate) fn holder_own(&self) -> bool {
        self.holder_own.load(Ordering::SeqCst)
    }

    /// A request on the holder connection succeeded (`true`) or failed in transport (`false`).
    pub(crate) fn holder_used(&self, ok: bool) {
        self.holder_warm.store(ok, Ordering::SeqCst);
    }

    /// Wait for the permits of a request on `lane`; `holder_wait`: a blocking query of a holder
    /// (its key or its session), which keeps its connection.
    pub(crate) async fn admit(&self, lane: Lane, holder_wait: bool) -> Pass<'_> {
        // Closed semaphores are never used: `acquire` cannot fail here.
        let closed = "budget semaphores are never closed";
        let shared_wait = if self.is_h2() { crate::consul::watch::MAX_BLOCK } else { self.shared_wait() };
        match lane {
            Lane::Holder | Lane::Turn if self.holder_own.load(Ordering::SeqCst) => {
                let p = self.holder.acquire().await.expect(closed);
                self.pass(Some(p), None, true, shared_wait, false)
            }
            Lane::Holder | Lane::Turn | Lane::Priority => {
                // Straight into the queue of `conns`: ahead of everything but one request or wait.
                let p = self.conns.acquire().await.expect(closed);
                self.pass(Some(p), None, false, shared_wait, false)
            }
            Lane::Request => {
                let turn = self.turnstile.lock().await;
                let p = self.conns.acquire().await.expect(closed);
                drop(turn);
                self.pass(Some(p), None, false, shared_wait, false)
            }
            Lane::Wait => {
                self.queued_waits.fetch_add(1, Ordering::SeqCst);
                let w = self.waits.acquire().await;
                let left = self.queued_waits.fetch_sub(1, Ordering::SeqCst) - 1;
                let w = w.expect(closed);
                let turn = self.turnstile.lock().await;
                let p = self.conns.acquire().await.expect(closed);
                drop(turn);
                // Waits rotate while others queue for a permit, while the agent refuses
                // connections, and over HTTP/1.1 beyond the long waits.
                let rotate = left > 0 || (!holder_wait && self.saturated());
                let long = !rotate && (self.is_h2() || self.take_long());
                let wait_cap = if long { shared_wait } else { shared_wait.min(ROTATE_WAIT) };
                // With a budget of 1 or 2 (a waiting `consul-lock run`), a waiter's connection goes
                // back to the agent after each answer: the waiting processes of a host then take
                // turns at the agent's cap instead of the first ones keeping a connection each for
                // as long as they wait. Larger budgets shrink instead (see `refused`).
                let close = !holder_wait && !self.is_h2() && self.max <= 2;
                let mut pass = self.pass(Some(p), Some(w), false, wait_cap, close);
                pass.long = long && !self.is_h2();
                pass
            }
        }
    }

    fn pass<'a>(
        &'a self,
        conn: Option<SemaphorePermit<'a>>,
        wait: Option<SemaphorePermit<'a>>,
        holder_pool: bool,
        wait_cap: Duration,
        close: bool,
    ) -> Pass<'a> {
        let reuse_only = self.saturated() && !self.is_h2();
        Pass { budget: self, conn, wait, holder_pool, wait_cap, close, long: false, reuse_only }
    }

    /// The cap of a blocking query's wait: [`SHARED_WAIT`] when it shares its connection with
    /// holder writes, or leaves short requests a single connection (HTTP/1.1 budgets of 1 and 2,
    /// and an `https://` client still probing), else the watch layer's own cap.
    fn shared_wait(&self) -> Duration {
        if self.probing.load(Ordering::SeqCst) || self.max <= 2 {
            SHARED_WAIT
        } else {
            crate::consul::watch::MAX_BLOCK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http1_permits_stay_within_the_budget() {
        for max in [1, 2, 3, 4, 32] {
            let b = Budget::new(max, false);
            let holders = b.holder.available_permits() * usize::from(b.holder_own.load(Ordering::SeqCst));
            assert_eq!(b.conns.available_permits() + holders, max, "max={max}");
            assert!(b.waits.available_permits() <= b.conns.available_permits().max(1));
            if max >= 4 {
                assert!(b.waits.available_permits() < b.conns.available_permits(), "a request always gets through");
            }
        }
    }

    #[tokio::test]
    async fn a_holder_write_goes_before_queued_requests() {
        let b = std::sync::Arc::new(Budget::new(1, false));
        let first = b.admit(Lane::Wait, false).await;
        assert_eq!(first.wait_cap, SHARED_WAIT);
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in [Lane::Request, Lane::Wait, Lane::Request, Lane::Holder].into_iter().enumerate() {
            let (b, order) = (b.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = b.admit(lane, false).await;
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let holder_at = order.iter().position(|i| *i == 3).unwrap();
        assert!(holder_at <= 1, "the holder write waited behind at most one request: {order:?}");
    }

    #[tokio::test]
    async fn refusals_shrink_the_budget_and_time_regrows_it() {
        let b = Budget::new(8, false); // holder 1, pool 7, waits 6
        let held = b.admit(Lane::Request, false).await;
        for _ in 0..10 {
            b.refused();
        }
        assert!(b.saturated());
        assert_eq!((b.cur_conns.load(Ordering::SeqCst), b.cur_waits.load(Ordering::SeqCst)), (2, 1));
        drop(held);
        assert_eq!(b.conns.available_permits(), 2, "the permit in use went out of circulation");
        assert_eq!(b.waits.available_permits(), 1);
        *crate::mutex::lock(&b.last_reset) = None;
        *crate::mutex::lock(&b.last_grow) = Instant::now() - REGROW_EVERY;
        b.answered();
        assert_eq!(b.conns.available_permits(), 3);
        assert_eq!(b.waits.available_permits(), 2);
    }

    #[tokio::test]
    async fn https_probes_with_one_request_then_opens() {
        let b = Budget::new(32, true);
        assert_eq!(b.conns.available_permits(), 1);
        b.learned(reqwest::Version::HTTP_2);
        assert!(b.is_h2());
        assert_eq!(b.conns.available_permits(), H2_STREAMS);
        assert_eq!(b.waits.available_permits(), H2_STREAMS - 4);
        b.learned(reqwest::Version::HTTP_11); // only the first answer counts
        assert_eq!(b.conns.available_permits(), H2_STREAMS);
        let b = Budget::new(8, true);
        b.learned(reqwest::Version::HTTP_11);
        assert_eq!(b.conns.available_permits() + b.holder.available_permits(), 8);
        assert!(b.holder_own.load(Ordering::SeqCst));
    }
}
