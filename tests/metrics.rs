#![cfg(all(feature = "test-util", feature = "metrics"))]
//! Feature `metrics`: what a recorder sees over real lock cycles against a dev agent — acquire waits
//! by outcome (acquired, timeout, error, cancelled), hold times, the held and waiting gauges, losses
//! by reason (watch, renew 404, max_hold, lease deadline), renewal failures, requests by endpoint
//! and status, and the key label only for a client that opted in.

mod support;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use consul_lock::{Client, EphemeralLock};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::proxy::{Fault, FaultProxy};
use support::*;
use tokio::time::{sleep, timeout};

const LIMIT: Duration = Duration::from_secs(30);

/// (metric name, sorted labels).
type Id = (String, Vec<(String, String)>);

/// The process's recorder. Snapshots reset counters and gauges and drain histograms, so every
/// read adds what it got to the totals kept here.
struct Recorded {
    snapshotter: Snapshotter,
    totals: Mutex<Seen>,
}

fn recorded() -> &'static Recorded {
    static R: OnceLock<Recorded> = OnceLock::new();
    R.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("install the debugging recorder");
        Recorded { snapshotter, totals: Mutex::new(Seen::default()) }
    })
}

/// Counters and gauges as of now; histogram values recorded so far.
#[derive(Default, Clone)]
struct Seen {
    counters: HashMap<Id, u64>,
    gauges: HashMap<Id, f64>,
    histograms: HashMap<Id, Vec<f64>>,
}

impl Seen {
    fn now() -> Seen {
        let r = recorded();
        let mut totals = r.totals.lock().unwrap();
        for (key, _, _, value) in r.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> =
                key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            labels.sort();
            let id = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *totals.counters.entry(id).or_default() += n,
                DebugValue::Gauge(g) => *totals.gauges.entry(id).or_default() += g.into_inner(),
                DebugValue::Histogram(vs) => {
                    totals.histograms.entry(id).or_default().extend(vs.into_iter().map(|v| v.into_inner()))
                }
            }
        }
        totals.clone()
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters.get(&id(name, labels)).copied().unwrap_or(0)
    }

    fn gauge(&self, name: &str) -> f64 {
        self.gauges.get(&id(name, &[])).copied().unwrap_or(0.0)
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.histograms.get(&id(name, labels)).cloned().unwrap_or_default()
    }

    /// Every label set of `name` that has a `key` label.
    fn keyed(&self, name: &str) -> usize {
        self.histograms.keys().filter(|(n, l)| n == name && l.iter().any(|(k, _)| k == "key")).count()
    }
}

fn id(name: &str, labels: &[(&str, &str)]) -> Id {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// The gauges and the loss counters are process-wide: one test at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static M: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    M.lock().await
}

fn keyed_client(addr: &str) -> Client {
    Client::builder().address(addr).metrics_key_label(true).request_timeout(Duration::from_secs(2)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_outcomes_hold_times_gauges_and_requests() {
    let _serial = serial().await;
    let c = keyed_client(consul().http_addr());
    let key = unique("metrics-cycle");
    let before = Seen::now();

    // Acquired, held ~200 ms, released.
    let guard = EphemeralLock::new(&key).client(c.clone()).hold().await.unwrap();
    assert_eq!(Seen::now().gauge("consul_lock_held") - before.gauge("consul_lock_held"), 1.0);
    // Someone else times out on it; another waiter is cancelled while waiting.
    let mut waiter = EphemeralLock::new(&key).client(c.clone()).acquire_timeout(Duration::from_millis(300));
    assert!(!waiter.acquire(false).await.unwrap());
    let mut patient = EphemeralLock::new(&key).client(c.clone()).acquire_timeout(LIMIT);
    let mut wait = Box::pin(patient.acquire(false));
    assert!(timeout(Duration::from_millis(300), &mut wait).await.is_err(), "acquired a held key");
    assert_eq!(Seen::now().gauge("consul_lock_waiting") - before.gauge("consul_lock_waiting"), 1.0);
    drop(wait);
    sleep(Duration::from_millis(200)).await;
    guard.release().await.unwrap();
    // An unreachable agent: an error.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bad = keyed_client(&format!("127.0.0.1:{port}"));
    let err = EphemeralLock::new(&key).client(bad).acquire_timeout(Duration::from_millis(200)).hold().await;
    assert!(err.is_err());

    let after = Seen::now();
    let wait = |outcome| after.histogram("consul_lock_acquire_wait_seconds", &[("outcome", outcome), ("key", &key)]);
    assert_eq!(wait("acquired").len(), 1, "acquired");
    assert!(wait("acquired")[0] < 5.0);
    let timed_out = wait("not_acquired");
    assert!(timed_out.len() == 1 && timed_out[0] >= 0.3, "not_acquired: {timed_out:?}");
    let cancelled = wait("cancelled");
    assert!(cancelled.len() == 1 && cancelled[0] >= 0.3, "cancelled: {cancelled:?}");
    assert_eq!(wait("error").len(), 1, "error");
    let held = after.histogram("consul_lock_hold_seconds", &[("outcome", "released"), ("key", &key)]);
    assert!(held.len() == 1 && held[0] >= 0.2, "hold time: {held:?}");
    assert_eq!(after.gauge("consul_lock_held"), before.gauge("consul_lock_held"), "held gauge after release");
    assert_eq!(after.gauge("consul_lock_waiting"), before.gauge("consul_lock_waiting"), "waiting gauge at rest");

    let requests = |endpoint, status| {
        after.counter("consul_lock_requests_total", &[("endpoint", endpoint), ("status", status)])
            - before.counter("consul_lock_requests_total", &[("endpoint", endpoint), ("status", status)])
    };
    // Our own acquire and release (txn 200s), session creations, and the unreachable agent's attempts.
    assert!(requests("txn", "200") >= 2, "txn 200: {}", requests("txn", "200"));
    assert!(requests("session/create", "200") >= 3);
    assert!(requests("session/create", "error") >= 1);
    let all_labels: Vec<_> = after.counters.keys().filter(|(n, _)| n == "consul_lock_requests_total").collect();
    assert!(
        all_labels.iter().all(|(_, l)| l.iter().all(|(k, v)| k != "key" && !v.contains(&key))),
        "a request label names the key: {all_labels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_label_unless_the_client_opts_in() {
    let _serial = serial().await;
    let key = unique("metrics-unkeyed");
    let before = Seen::now();
    let guard = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    guard.release().await.unwrap();
    let after = Seen::now();
    let unkeyed = |s: &Seen| s.histogram("consul_lock_acquire_wait_seconds", &[("outcome", "acquired")]).len();
    assert_eq!(unkeyed(&after) - unkeyed(&before), 1);
    let held = |s: &Seen| s.histogram("consul_lock_hold_seconds", &[("outcome", "released")]).len();
    assert_eq!(held(&after) - held(&before), 1);
    let named: Vec<_> = after.histograms.keys().filter(|(_, l)| l.iter().any(|(_, v)| v == &key)).collect();
    assert!(named.is_empty(), "the key appears in labels: {named:?}");
    assert_eq!(after.keyed("consul_lock_acquire_wait_seconds"), before.keyed("consul_lock_acquire_wait_seconds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losses_by_reason_and_renewal_failures() {
    let _serial = serial().await;
    let before = Seen::now();
    let c = keyed_client(consul().http_addr());

    // Watch: the key watch sees the session destroyed from outside (its key deleted).
    let watched = EphemeralLock::new(unique("metrics-watch")).client(c.clone()).hold().await.unwrap();
    {
        let mut watching = Box::pin(watched.lost());
        assert!(timeout(Duration::from_millis(300), &mut watching).await.is_err(), "lost before the destroy");
        destroy_session(watched.session_id()).await;
        timeout(LIMIT, watching).await.expect("the key watch saw the loss");
    }

    // max_hold.
    let limited = EphemeralLock::new(unique("metrics-max-hold")).client(c.clone()).max_hold(Duration::from_millis(300));
    let limited = limited.hold().await.unwrap();
    timeout(LIMIT, limited.lost()).await.expect("max_hold");

    // Renew 404 (destroyed from outside, no watch running) and the lease deadline (renewals fail
    // through a proxy refusing connections), side by side: both take up to a TTL.
    let unwatched = EphemeralLock::new(unique("metrics-404")).client(c.clone()).ttl(Duration::from_secs(10));
    let unwatched = unwatched.hold().await.unwrap();
    destroy_session(unwatched.session_id()).await;
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let cut = EphemeralLock::new(unique("metrics-deadline")).client(keyed_client(proxy.addr()));
    let cut = cut.ttl(Duration::from_secs(10)).hold().await.unwrap();
    proxy.set(Fault::Refuse);
    let gone_404 = eventually(LIMIT, || async { !unwatched.is_held() });
    let gone_deadline = eventually(LIMIT, || async { !cut.is_held() });
    let (a, b) = tokio::join!(gone_404, gone_deadline);
    assert!(a && b, "renew 404 seen: {a}; lease deadline passed: {b}");
    // The renewal loop counts the loss when it sees it (the deadline one right at the deadline).
    let counted = eventually(LIMIT, || async {
        let now = Seen::now();
        ["renew_404", "deadline"].iter().all(|r| {
            now.counter("consul_lock_lost_total", &[("reason", r)])
                > before.counter("consul_lock_lost_total", &[("reason", r)])
        })
    })
    .await;
    assert!(counted, "renew_404 and deadline losses not counted");

    let after = Seen::now();
    let lost = |reason| {
        after.counter("consul_lock_lost_total", &[("reason", reason)])
            - before.counter("consul_lock_lost_total", &[("reason", reason)])
    };
    assert_eq!((lost("watch"), lost("max_hold"), lost("renew_404"), lost("deadline")), (1, 1, 1, 1));
    let failures = after.counter("consul_lock_renewal_failures_total", &[])
        - before.counter("consul_lock_renewal_failures_total", &[]);
    assert!(failures >= 1, "no renewal failure counted");
    // Lost locks left the held gauge at once, before their guards are dropped.
    assert_eq!(after.gauge("consul_lock_held"), before.gauge("consul_lock_held"));
    for guard in [watched, limited, unwatched, cut] {
        guard.release().await.unwrap();
    }
    let done = Seen::now();
    let lost_holds = |s: &Seen| -> usize {
        let lost =
            |(n, l): &&Id| n == "consul_lock_hold_seconds" && l.iter().any(|(k, v)| k == "outcome" && v == "lost");
        s.histograms.iter().filter(|(id, _)| lost(id)).map(|(_, v)| v.len()).sum()
    };
    assert_eq!(lost_holds(&done) - lost_holds(&before), 4, "hold times of the lost locks");
    assert_eq!(done.gauge("consul_lock_held"), before.gauge("consul_lock_held"));
}
