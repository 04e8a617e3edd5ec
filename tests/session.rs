//! Shared `Session`: many locks, one session, one renewal; the in-process registry; loss of all.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{EphemeralLock, Error, Session};
use support::*;
use tokio::time::{sleep, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_on_a_shared_session_is_two_requests() {
    let c = client();
    let session = Session::new(c.clone(), Duration::from_secs(15)).await.unwrap();
    let key = unique("shared-cycle");
    let before = c.request_count();
    for _ in 0..5 {
        let g = session.lock(&key).hold().await.unwrap();
        assert_eq!(g.session_id(), session.id());
        g.release().await.unwrap();
    }
    assert_eq!(c.request_count() - before, 10, "acquire + owner-checked delete per cycle");
    assert!(raw_kv(&key).await.is_none());
    assert!(session_exists(session.id()).await, "the shared session outlives its locks");
    let id = session.id().to_owned();
    session.destroy().await.unwrap();
    assert!(!session_exists(&id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locks_on_one_key_through_one_session_never_both_hold_it() {
    let session = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let key = unique("shared-registry");
    let first = session.lock(&key).hold().await.unwrap();
    // Consul alone would let the same session "re-acquire" the key; the registry makes it wait.
    let e = session.lock(&key).acquire_timeout(Duration::from_millis(300)).hold().await.unwrap_err();
    assert!(e.is_not_acquired(), "{e}");
    let mut second = session.lock(&key).acquire_timeout(Duration::from_secs(5));
    let (got, _) = tokio::join!(second.acquire(true), async {
        sleep(Duration::from_millis(200)).await;
        first.release().await.unwrap();
    });
    assert!(got.unwrap());
    assert!(second.is_held());
    second.release().await.unwrap();
    session.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_session_loses_every_lock() {
    let session = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let keys: Vec<String> = (0..3).map(|_| unique("shared-lost")).collect();
    let mut guards = Vec::new();
    for k in &keys {
        guards.push(session.lock(k).hold().await.unwrap());
    }
    let (_, lost) = tokio::join!(
        async {
            sleep(Duration::from_millis(200)).await;
            destroy_session(session.id()).await;
        },
        timeout(Duration::from_secs(5), async {
            for g in &guards {
                g.lost().await;
            }
        })
    );
    lost.expect("every guard reports the loss");
    assert!(guards.iter().all(|g| !g.is_held()));
    assert!(!session.is_alive());
    for g in guards {
        g.release().await.unwrap();
    }
    // A lock through a dead session cannot be taken.
    let e = session.lock(&keys[0]).hold().await.unwrap_err();
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_on_a_bound_lock_are_rejected() {
    let session = Session::new(closed_port_client(), Duration::from_secs(15)).await;
    // No Consul there: creating the session itself is a transport error.
    assert!(matches!(session, Err(Error::Transport(_))));
    let session = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let e = session.lock("k").ttl(Duration::from_secs(20)).hold().await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("ttl")), "{e}");
    session.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_ttl_keeps_the_waiters_session() {
    let key = unique("long-wait");
    let holder = EphemeralLock::new(&key).client(client()).ttl(Duration::from_secs(10)).hold().await.unwrap();
    let waiter = EphemeralLock::new(&key)
        .client(client())
        .ttl(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(60))
        .hold();
    let (g, _) = tokio::join!(waiter, async {
        sleep(Duration::from_secs(22)).await; // > 2×TTL of the waiter's session
        holder.release().await.unwrap();
    });
    let g = g.expect("the waiter acquires after a wait longer than its TTL");
    // Not reported lost at once: the lease counts from the last renewal, not from creation.
    sleep(Duration::from_secs(1)).await;
    assert!(g.is_held());
    assert_eq!(raw_holder(&key).await.as_deref(), Some(g.session_id()));
    g.release().await.unwrap();
}
