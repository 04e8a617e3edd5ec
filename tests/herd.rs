//! The default mode is herd-free: an uncontended acquire writes nothing extra, a contender that
//! finds the key held queues (`<key>/.consul-lock-queue/`), a release wakes one waiter, turns go
//! round fairly, a newcomer overtakes the queue at most once, and every mode (default, `fair(true)`,
//! HashiCorp's `consul lock`) can share a key without breaking exclusion or stalling.

#![cfg(all(feature = "test-util", feature = "cli"))]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::{Client, Session};
use support::proxy::{Fault, FaultProxy};
use support::{consul, eventually, queue_entries, unique, Sent};

const LONG: Duration = Duration::from_secs(20);

/// A client of its own, as a separate process would have (its own memory of busy keys).
fn own_client() -> Client {
    Client::builder().address(consul().http_addr()).build().unwrap()
}

async fn session_on(c: Client) -> Session {
    Session::new(c, Duration::from_secs(15)).await.expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_cycle_costs_what_it_did_and_leaves_no_queue() {
    let key = unique("herd-uncontended");
    let c = own_client();
    let s = session_on(c.clone()).await;
    for _ in 0..3 {
        let before = c.request_count();
        let g = s.lock(&key).hold().await.unwrap();
        g.release().await.unwrap();
        assert_eq!(c.request_count() - before, 2, "one lock txn, one release txn on a shared session");
    }
    assert_eq!(queue_entries(&key).await, 0);
    s.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_one_waiter_not_all() {
    const WAITERS: usize = 6;
    let key = unique("herd-one-wakeup");
    let holder = session_on(own_client()).await;
    let mut guard = Some(holder.lock(&key).hold().await.unwrap());
    // A client per waiter: each one's request count is its own.
    let clients: Vec<Client> = (0..WAITERS).map(|_| own_client()).collect();
    let acquired = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let s = session_on(c.clone()).await;
        let (k, acquired) = (key.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let g = s.lock(&k).acquire_timeout(LONG).hold().await.expect("waiter acquires");
            acquired.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(300)).await;
            g.release().await.unwrap();
            s.destroy().await.unwrap();
        }));
        // Arrive one after the other.
        assert!(eventually(Duration::from_secs(5), || async { queue_entries(&key).await == i + 1 }).await, "queued");
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // every waiter blocks on its query
    for handoff in 0..WAITERS {
        // The waiters that stay in line through this handoff (the next one to acquire excluded).
        let idle = Sent::from_now(&clients, handoff + 1..WAITERS);
        if let Some(g) = guard.take() {
            g.release().await.unwrap();
        }
        assert!(eventually(Duration::from_secs(5), || async { acquired.lock().unwrap().len() > handoff }).await);
        tokio::time::sleep(Duration::from_millis(100)).await; // let any herd show itself
        let sent = idle.total();
        // A herd is a lock attempt and a new query from every waiter still in line; without one they
        // send nothing (a session renewal, every 7 s or so, may fall into the window).
        assert!(sent <= 1, "handoff {handoff}: the {} waiters still in line sent {sent} requests", idle.len());
        tokio::time::sleep(Duration::from_millis(250)).await; // the holder's 300 ms run out
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*acquired.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>(), "first come, first served");
    assert_eq!(queue_entries(&key).await, 0, "no queue entry outlives its waiter");
    holder.destroy().await.unwrap();
}

/// `n` contenders, each with a client and session of its own, take turns until `total` turns have
/// been taken; each holds `hold`. Returns the order of holders.
async fn take_turns(key: &str, n: usize, total: usize, hold: Duration, late: Option<Duration>) -> Vec<usize> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let taken = Arc::new(AtomicUsize::new(0));
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (key, order, taken, inside) = (key.to_owned(), order.clone(), taken.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            if let (Some(after), true) = (late, i == n - 1) {
                tokio::time::sleep(after).await; // the newcomer
            }
            let s = session_on(own_client()).await;
            loop {
                let g = s.lock(&key).acquire_timeout(LONG).hold().await.expect("a turn within 20 s");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let turn = taken.fetch_add(1, Ordering::SeqCst);
                if turn < total {
                    order.lock().unwrap().push(i);
                    tokio::time::sleep(hold).await;
                }
                inside.store(false, Ordering::SeqCst);
                g.release().await.expect("release");
                if turn >= total {
                    break;
                }
            }
            s.destroy().await.unwrap();
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("contenders finish").unwrap();
    }
    let order = order.lock().unwrap().clone();
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_contenders_share_200_turns_fairly() {
    let key = unique("herd-fair-share");
    // Free-for-all: every releaser competes again at once.
    let order = take_turns(&key, 8, 200, Duration::from_millis(2), None).await;
    let mut turns: HashMap<usize, usize> = HashMap::new();
    for i in &order {
        *turns.entry(*i).or_default() += 1;
    }
    eprintln!("turns per contender: {turns:?}");
    assert_eq!(turns.len(), 8, "everybody got turns: {turns:?}");
    for (who, n) in &turns {
        assert!((24..=26).contains(n), "contender {who}: {n} turns of 200, fair is 25 ± 1: {turns:?}");
    }
    assert_eq!(queue_entries(&key).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_overtakes_the_queue_at_most_once() {
    const N: usize = 5; // 4 from the start, one newcomer after 1 s
    let key = unique("herd-barging");
    let order = take_turns(&key, N, 80, Duration::from_millis(20), Some(Duration::from_secs(1))).await;
    let newcomer = N - 1;
    let first = order.iter().position(|i| *i == newcomer).expect("the newcomer got a turn");
    // From the newcomer's first turn on, between two turns of anyone come all the others: round
    // robin, so a gap of N − 1; one overtaking newcomer can stretch a waiter's gap by one.
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut stretched = 0;
    for (pos, who) in order.iter().enumerate().skip(first) {
        if let Some(prev) = last.insert(*who, pos) {
            let gap = pos - prev - 1;
            assert!(gap <= N, "contender {who} waited {gap} turns at position {pos}: {order:?}");
            if gap == N {
                stretched += 1;
            }
            if *who == newcomer {
                assert_eq!(gap, N - 1, "the newcomer overtook again at position {pos}: {order:?}");
            }
        }
    }
    assert!(stretched < N, "more than one overtaking: {order:?}");
    eprintln!("newcomer first served at turn {first}; order {order:?}");
}

/// A plain `consul lock` (HashiCorp's Go client, no queue), `fair(true)` and default-mode
/// contenders on one key, with the default and fair waiters' connections cut for a moment now
/// and then: never two inside, nobody stalls past the acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_modes_and_go_share_a_key_without_overlap_or_stall() {
    // `consul lock PREFIX` locks `PREFIX/.lock`: ours take that key.
    let prefix = unique("herd-mixed");
    let key = format!("{prefix}/.lock");
    let inside = Arc::new(AtomicBool::new(false));
    let proxy = Arc::new(FaultProxy::start(consul().http_addr()).await);
    let mut tasks = Vec::new();
    for (i, fair) in [false, false, true, true].into_iter().enumerate() {
        let (key, inside) = (key.clone(), inside.clone());
        let c = if i % 2 == 0 { proxy.client() } else { own_client() };
        tasks.push(tokio::spawn(async move {
            let s = session_on(c).await;
            for _ in 0..15 {
                let g = s.lock(&key).fair(fair).acquire_timeout(LONG).hold().await.expect("no stall");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(g.is_held());
                inside.store(false, Ordering::SeqCst);
                g.release().await.expect("release");
            }
            s.destroy().await.unwrap();
        }));
    }
    // Go contenders: each `consul lock` runs one short section that checks nobody else is inside
    // through the same key's holder (ours record theirs through `inside`; theirs is checked by
    // reading the key's session: it must be the Go session for the whole section).
    let go = {
        let (key, prefix) = (key.clone(), prefix.clone());
        tokio::spawn(async move {
            for _ in 0..4 {
                let out = tokio::process::Command::new(consul().binary())
                    .args([
                        "lock",
                        &format!("-http-addr={}", consul().http_addr()),
                        "-timeout=20s",
                        &prefix,
                        &format!(
                            "a=$({bin} kv get -http-addr={addr} -detailed {key} | grep Session); sleep 0.05; \
                             b=$({bin} kv get -http-addr={addr} -detailed {key} | grep Session); [ \"$a\" = \"$b\" ]",
                            bin = consul().binary().display(),
                            addr = consul().http_addr(),
                        ),
                    ])
                    .output()
                    .await
                    .unwrap();
                assert!(out.status.success(), "consul lock: {}", String::from_utf8_lossy(&out.stderr));
            }
        })
    };
    let faults = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                proxy.set(Fault::Drop);
                tokio::time::sleep(Duration::from_millis(150)).await;
                proxy.set(Fault::None);
            }
        })
    };
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("contenders finish").unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), go).await.expect("Go contenders finish").unwrap();
    faults.await.unwrap();
    assert!(eventually(Duration::from_secs(20), || async { queue_entries(&key).await == 0 }).await, "queue emptied");
}
