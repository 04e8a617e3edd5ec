//! Fair mode (`EphemeralLock::fair(true)`): waiters are served in arrival order, a release wakes
//! only the next one, and the queue entries never outlive their waiters. Against a real Consul agent.

#![cfg(feature = "test-util")]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::Session;
use serde_json::Value;
use support::proxy::{Fault, FaultProxy};
use support::{client, consul, eventually, unique};

const LONG: Duration = Duration::from_secs(20);

/// The keys under `<key>/.consul-lock-queue/`, read raw (not through the library).
async fn queue_keys(key: &str) -> Vec<String> {
    let url = format!("http://{}/v1/kv/{key}/.consul-lock-queue/?keys", consul().http_addr());
    let r = reqwest::get(url).await.unwrap();
    if r.status() == 404 {
        return Vec::new();
    }
    assert!(r.status().is_success(), "list queue: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v.as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

async fn session() -> Session {
    Session::new(client(), Duration::from_secs(15)).await.expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order_and_the_queue_is_emptied() {
    let key = unique("fair-order");
    let holder = session().await;
    let guard = holder.lock(&key).fair(true).hold().await.expect("first hold");
    assert_eq!(queue_keys(&key).await.len(), 1, "the holder's own queue entry");

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..3 {
        let s = session().await;
        sessions.push(s.clone());
        let (k, order) = (key.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let g = s.lock(&k).fair(true).acquire_timeout(LONG).hold().await.expect("waiter hold");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(30)).await;
            g.release().await.expect("waiter release");
        }));
        // Let waiter i take its place in the queue before the next one arrives.
        let k = key.clone();
        assert!(
            eventually(Duration::from_secs(10), || {
                let k = k.clone();
                async move { queue_keys(&k).await.len() == i + 2 }
            })
            .await,
            "waiter {i} never queued"
        );
    }
    guard.release().await.expect("release");
    for t in tasks {
        tokio::time::timeout(LONG, t).await.expect("waiters finish in time").unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2], "first come, first served");
    assert!(queue_keys(&key).await.is_empty(), "queue entries left: {:?}", queue_keys(&key).await);
    assert!(support::raw_kv(&key).await.is_none(), "the lock key is deleted at release");
    for s in sessions.into_iter().chain([holder]) {
        s.destroy().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_queue_and_does_not_block_the_next() {
    let key = unique("fair-timeout");
    let holder = session().await;
    let guard = holder.lock(&key).fair(true).hold().await.expect("hold");

    let quitter = session().await;
    let err = quitter.lock(&key).fair(true).acquire_timeout(Duration::from_millis(300)).hold().await.unwrap_err();
    assert!(err.is_not_acquired(), "{err}");
    let k = key.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let k = k.clone();
            async move { queue_keys(&k).await.len() == 1 }
        })
        .await,
        "the quitter's queue entry was not removed: {:?}",
        queue_keys(&key).await
    );

    let next = session().await;
    let (k, n) = (key.clone(), next.clone());
    let waiter = tokio::spawn(async move { n.lock(&k).fair(true).acquire_timeout(LONG).hold().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.release().await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the next waiter is not held up by the quitter")
        .unwrap()
        .expect("next hold");
    g.release().await.unwrap();
    assert!(queue_keys(&key).await.is_empty());
    for s in [holder, quitter, next] {
        s.destroy().await.unwrap();
    }
}

/// Free-for-all: each releases and queues again at once, on the same session (its queue entry is
/// re-created under the same key). A stalled queue shows up as a `hold()` that times out: with 4
/// contenders and 5 ms holds a turn comes within ~25 ms, so 10 s is only ever reached by a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_contenders_never_overlap_and_all_get_turns() {
    const TURNS: usize = 25;
    let key = unique("fair-exclusion");
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = session().await;
        let (key, inside) = (key.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let mut turns = 0;
            for _ in 0..TURNS {
                let timeout = Duration::from_secs(10);
                let g = s.lock(&key).fair(true).acquire_timeout(timeout).hold().await.expect("hold (a stalled queue?)");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.store(false, Ordering::SeqCst);
                g.release().await.expect("release");
                turns += 1;
            }
            s.destroy().await.unwrap();
            turns
        }));
    }
    for t in tasks {
        let turns = tokio::time::timeout(Duration::from_secs(60), t).await.expect("contenders finish").unwrap();
        assert_eq!(turns, TURNS);
    }
    assert!(queue_keys(&key).await.is_empty());
}

/// Regression (found by the free-for-all fair bench, T8: one 30 s stall in 200 handoffs). A holder
/// that releases and queues again at once re-creates its queue entry under the same key with the same
/// session. A waiter whose read of that entry came only after both (in the bench: between its enqueue
/// and its first read; here forced by cutting its connection across the release) used to take the new
/// entry, now *behind* it, for its predecessor, while the old holder waited for the waiter: both stalled
/// until their timeouts. The waiter must see a re-created entry as its predecessor gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_misses_the_release_does_not_wait_for_the_holders_next_entry() {
    let key = unique("fair-requeue");
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let x = session().await;
    let first = x.lock(&key).fair(true).hold().await.expect("x holds");

    // W waits (through the proxy) in the queue behind x.
    let w = Session::new(proxy.client(), Duration::from_secs(15)).await.expect("w session");
    let waiter = {
        let (w, key) = (w.clone(), key.clone());
        tokio::spawn(async move { w.lock(&key).fair(true).acquire_timeout(LONG).hold().await })
    };
    assert!(eventually(Duration::from_secs(5), || async { queue_keys(&key).await.len() == 2 }).await, "w queued");
    tokio::time::sleep(Duration::from_millis(200)).await; // W's blocking read is in flight

    // Cut W off, then x releases and queues again at once (same session: same entry key).
    proxy.set(Fault::Blackhole);
    first.release().await.expect("x releases");
    let again = {
        let (x, key) = (x.clone(), key.clone());
        tokio::spawn(async move { x.lock(&key).fair(true).acquire_timeout(LONG).hold().await })
    };
    let x_entry = format!("{key}/.consul-lock-queue/{}", x.id());
    let requeued = eventually(Duration::from_secs(5), || async { queue_keys(&key).await.contains(&x_entry) });
    assert!(requeued.await, "x queued again");
    proxy.set(Fault::None);

    // W is first in line now: it must get the lock well before its 20 s timeout, then x after it.
    let guard = tokio::time::timeout(Duration::from_secs(8), waiter)
        .await
        .expect("the waiter got stuck behind the holder's new queue entry")
        .unwrap()
        .expect("w holds");
    assert!(guard.is_held());
    guard.release().await.expect("w releases");
    let next = tokio::time::timeout(Duration::from_secs(8), again).await.expect("x gets its turn").unwrap();
    next.expect("x holds again").release().await.expect("x releases");
    w.destroy().await.unwrap();
    x.destroy().await.unwrap();
    assert!(queue_keys(&key).await.is_empty());
}

/// Fair mode lists only the queue: the key's own children and longer sibling keys can hold far more
/// than a response may carry (4 MiB), and used to be listed with every enqueue (a decode error here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_children_and_longer_siblings_are_never_listed() {
    let key = unique("fair-big-tree");
    let http = reqwest::Client::new();
    let big = vec![b'x'; 400 * 1024];
    for name in (0..6).map(|i| format!("{key}/data/{i}")).chain((0..6).map(|i| format!("{key}{i}"))) {
        let url = format!("http://{}/v1/kv/{name}", consul().http_addr());
        let r = http.put(url).body(big.clone()).send().await.unwrap();
        assert!(r.status().is_success(), "put {name}: {}", r.status());
    }

    let (a, b) = (session().await, session().await);
    let first = a.lock(&key).fair(true).hold().await.expect("first fair hold");
    let waiter = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move { b.lock(&key).fair(true).acquire_timeout(LONG).hold().await })
    };
    assert!(eventually(Duration::from_secs(5), || async { queue_keys(&key).await.len() == 2 }).await, "b queued");
    first.release().await.expect("release");
    let second = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("b's turn").unwrap();
    second.expect("b holds").release().await.expect("b releases");
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    let url = format!("http://{}/v1/kv/{key}?recurse", consul().http_addr());
    http.delete(url).send().await.unwrap();
}

/// A holder outside the queue (plain mode): the fair waiter first in line waits on the key with
/// blocking queries (a handful of requests, not a loop of lock attempts) and takes it on release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_waiter_waits_on_the_key_for_a_holder_outside_the_queue() {
    let key = unique("fair-mixed");
    let plain = session().await;
    let held = plain.lock(&key).hold().await.expect("plain hold");

    let own = client();
    let w = Session::new(own.clone(), Duration::from_secs(15)).await.expect("w session");
    let before = own.request_count();
    let waiter = {
        let (w, key) = (w.clone(), key.clone());
        tokio::spawn(async move { w.lock(&key).fair(true).acquire_timeout(LONG).hold().await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = own.request_count() - before;
    assert!(!waiter.is_finished(), "the key is held: the waiter must still wait");
    // Enqueue, one lock attempt, a read and its blocking read (a renewal may fall in the window too).
    assert!(sent <= 6, "{sent} requests in 3 s of waiting: not a blocking wait");

    held.release().await.expect("plain release");
    let guard =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("w's turn").unwrap().expect("w holds");
    assert!(guard.is_held());
    guard.release().await.unwrap();
    plain.destroy().await.unwrap();
    w.destroy().await.unwrap();
    assert!(queue_keys(&key).await.is_empty());
}
