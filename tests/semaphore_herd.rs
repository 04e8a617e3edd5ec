//! The semaphore is herd-free: contenders that find every slot taken (or others waiting) queue
//! under `PREFIX/.lock/.consul-lock-queue/`, a release wakes the first in line only, slots are
//! granted first come, first served, a one-shot attempt never joins the line, and the line leaves
//! nothing behind.

#![cfg(feature = "test-util")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::{Client, Semaphore};
use support::proxy::{Fault, FaultProxy};
use support::{consul, eventually, queue_entries, raw_keys, unique, Sent};

const LONG: Duration = Duration::from_secs(20);

/// A client of its own, as a separate process would have.
fn own_client() -> Client {
    Client::builder().address(consul().http_addr()).build().unwrap()
}

/// Entries in the semaphore's line (under `PREFIX/.lock/.consul-lock-queue/`).
async fn queue_len(prefix: &str) -> usize {
    queue_entries(&format!("{prefix}/.lock")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_the_first_in_line_only_and_slots_go_in_arrival_order() {
    const WAITERS: usize = 6;
    let prefix = unique("sem-herd");
    let sem = |c: Client| Semaphore::new(&prefix, 2).client(c).acquire_timeout(LONG);
    let mut held = vec![sem(own_client()).hold().await.unwrap(), sem(own_client()).hold().await.unwrap()];
    let clients: Vec<Client> = (0..WAITERS).map(|_| own_client()).collect();
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let (release_tx, _) = tokio::sync::broadcast::channel::<usize>(16);
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (s, admitted, mut go) = (sem(c.clone()), admitted.clone(), release_tx.subscribe());
        tasks.push(tokio::spawn(async move {
            let p = s.hold().await.expect("waiter admitted");
            admitted.lock().unwrap().push(i);
            // Hold until told to release (the test releases one slot per step).
            while go.recv().await.is_ok_and(|who| who != i) {}
            p.release().await.unwrap();
        }));
        assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == i + 1 }).await, "queued");
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // every waiter blocks on its query
    for step in 0..WAITERS {
        // In line through this step: all but the one admitted now and the next first in line.
        let idle = Sent::from_now(&clients, step + 2..WAITERS);
        if held.is_empty() {
            let _ = release_tx.send(step - 2);
        } else {
            held.remove(0).release().await.unwrap();
        }
        assert!(
            eventually(Duration::from_secs(5), || async { admitted.lock().unwrap().len() > step }).await,
            "step {step}: a waiter is admitted after a release"
        );
        tokio::time::sleep(Duration::from_millis(150)).await; // let any herd show itself
        let sent = idle.total();
        // A herd is a read and a check-and-set from every waiter; in line they send nothing (a
        // session renewal, every 7 s or so, may fall into the window).
        assert!(sent <= 1, "step {step}: the {} waiters still in line sent {sent} requests", idle.len());
        assert_eq!(admitted.lock().unwrap().len(), step + 1, "one admission per released slot");
    }
    for i in WAITERS - 2..WAITERS {
        let _ = release_tx.send(i);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*admitted.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>(), "first come, first served");
    assert_eq!(queue_len(&prefix).await, 0, "no queue entry outlives its waiter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_queues_behind_waiters_and_a_one_shot_attempt_never_queues() {
    let prefix = unique("sem-herd-newcomer");
    let sem = |c: Client| Semaphore::new(&prefix, 1).client(c);
    let holder = sem(own_client()).hold().await.unwrap();
    // A one-shot attempt on a full semaphore: refused after one read, no session, no queue entry.
    let c = own_client();
    let before = c.request_count();
    assert!(!sem(c.clone()).acquire_timeout(Duration::ZERO).acquire(false).await.unwrap());
    assert_eq!(c.request_count() - before, 1, "a refused one-shot attempt is one read of the prefix");
    assert_eq!(queue_len(&prefix).await, 0);

    let waiter = tokio::spawn(sem(own_client()).acquire_timeout(LONG).hold());
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 1 }).await, "queued");
    let newcomer = tokio::spawn(sem(own_client()).acquire_timeout(LONG).hold());
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 2 }).await, "queued");
    holder.release().await.unwrap();
    let first = waiter.await.unwrap().expect("the waiter is admitted first");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!newcomer.is_finished(), "the newcomer waits behind the waiter");
    let first_token = first.token();
    first.release().await.unwrap();
    let second = newcomer.await.unwrap().expect("then the newcomer");
    assert!(second.token() > first_token);
    second.release().await.unwrap();
    assert_eq!(queue_len(&prefix).await, 0);
    let left = raw_keys(&format!("{prefix}/")).await;
    assert_eq!(left, vec![format!("{prefix}/.lock")], "only the coordination key stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_or_is_cancelled_leaves_the_line() {
    let prefix = unique("sem-herd-quit");
    let sem = |c: Client| Semaphore::new(&prefix, 1).client(c);
    let holder = sem(own_client()).hold().await.unwrap();
    let quitter = tokio::spawn(sem(own_client()).acquire_timeout(Duration::from_millis(600)).hold());
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 1 }).await, "queued");
    let cancelled = tokio::spawn(sem(own_client()).acquire_timeout(LONG).hold());
    let behind = tokio::spawn(sem(own_client()).acquire_timeout(LONG).hold());
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 3 }).await, "queued");
    cancelled.abort();
    assert!(quitter.await.unwrap().unwrap_err().is_not_acquired(), "the quitter times out");
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 1 }).await, "both left");
    holder.release().await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(5), behind).await.expect("admitted at once").unwrap().unwrap();
    p.release().await.unwrap();
    assert_eq!(queue_len(&prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_slot_goes_to_the_line_not_to_a_one_shot_attempt() {
    let prefix = unique("sem-herd-promised");
    let sem = |c: Client| Semaphore::new(&prefix, 1).client(c);
    let holder = sem(own_client()).hold().await.unwrap();
    // The waiter talks through a proxy we can stall, so it cannot take the slot at once.
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let waiter = tokio::spawn(sem(proxy.client()).acquire_timeout(LONG).hold());
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&prefix).await == 1 }).await, "queued");
    proxy.set(Fault::Blackhole);
    holder.release().await.unwrap();
    let c = own_client();
    let before = c.request_count();
    assert!(!sem(c.clone()).acquire_timeout(Duration::ZERO).acquire(false).await.unwrap(), "the slot is promised");
    assert_eq!(c.request_count() - before, 1, "refused after one read: no session, no write");
    proxy.set(Fault::None);
    let p = tokio::time::timeout(LONG, waiter).await.expect("the waiter gets its slot").unwrap().unwrap();
    p.release().await.unwrap();
    assert_eq!(queue_len(&prefix).await, 0);
}
