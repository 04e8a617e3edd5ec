//! EphemeralLock against a real `consul agent -dev`: hold, contend, wait, renew, lose, fence,
//! cancel, release.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{EphemeralLock, Error};
use support::*;
use tokio::time::{sleep, timeout, Instant};

const SHORT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_then_release_deletes_key_and_destroys_session() {
    let key = unique("hold");
    let guard = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    assert!(guard.is_held());
    assert_eq!(guard.key(), key);
    let sid = guard.session_id().to_owned();
    assert_eq!(raw_holder(&key).await.as_deref(), Some(sid.as_str()), "key is held by our session");
    assert!(session_exists(&sid).await);

    guard.release().await.unwrap();
    assert!(raw_kv(&key).await.is_none(), "the key is deleted on release");
    assert!(eventually(Duration::from_secs(2), || async { !session_exists(&sid).await }).await, "session destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_lock_gets_false_or_not_acquired_naming_the_holder() {
    let key = unique("contend");
    let a = EphemeralLock::new(&key).client(client()).hold().await.unwrap();

    let mut b = EphemeralLock::new(&key).client(client()).acquire_timeout(SHORT);
    let t0 = Instant::now();
    assert!(!b.acquire(false).await.unwrap(), "taken: Ok(false)");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(450), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert!(!b.is_held());
    assert_eq!(b.fencing_token(), None);

    match b.acquire(true).await {
        Err(Error::NotAcquired { key: k, waited, holder }) => {
            assert_eq!(k, key);
            assert!(waited >= Duration::from_millis(450));
            let h = holder.expect("holder is known");
            assert_eq!(h.session_id, a.session_id());
            assert_eq!(h.info.unwrap().pid, Some(std::process::id()));
        }
        other => panic!("expected NotAcquired, got {other:?}"),
    }
    let e = EphemeralLock::new(&key).client(client()).acquire_timeout(SHORT).hold().await.unwrap_err();
    assert!(e.is_not_acquired(), "{e}");
    assert!(e.to_string().contains(&key), "{e}");
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_on_a_held_key_is_one_read_and_no_session() {
    let key = unique("zero");
    let a = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    let c = client();
    let name = unique("zero-one-shot");
    let lock = || EphemeralLock::new(&key).client(c.clone()).session_name(name.clone()).acquire_timeout(Duration::ZERO);
    let t0 = Instant::now();
    assert!(!lock().acquire(false).await.unwrap());
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(c.request_count(), 1, "one read of the key, nothing else");
    // Failing hard names the holder from that same read.
    let e = lock().hold().await.unwrap_err();
    match &e {
        Error::NotAcquired { holder: Some(h), .. } => assert_eq!(h.session_id, a.session_id(), "{e}"),
        other => panic!("expected NotAcquired naming the holder, got {other:?}"),
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(c.request_count(), 2, "one read per attempt");
    assert!(sessions_named(&name).await.is_empty(), "no session was made");
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_on_a_free_key_takes_it_with_one_lock_attempt() {
    let key = unique("zero-free");
    let c = client();
    let mut lock = EphemeralLock::new(&key).client(c.clone()).acquire_timeout(Duration::ZERO);
    assert!(lock.acquire(false).await.unwrap());
    assert_eq!(c.request_count(), 3, "the read, the session, one lock transaction");
    assert!(lock.is_held() && raw_holder(&key).await.is_some(), "held, by a session of ours");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_uses_blocking_queries_and_gets_the_lock_soon_after_release() {
    let key = unique("wait");
    let a = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    let waiter_client = client();
    let waiter = EphemeralLock::new(&key).client(waiter_client.clone()).acquire_timeout(Duration::from_secs(10));
    let task = tokio::spawn(async move {
        let g = waiter.hold().await;
        (g, Instant::now())
    });
    sleep(Duration::from_secs(3)).await;
    let requests = waiter_client.request_count();
    // create, lock attempt, read, one blocking query (a polling loop would have made dozens).
    assert!(requests <= 5, "the waiter sent {requests} requests in 3 s");
    let released_at = Instant::now();
    a.release().await.unwrap();
    let (g, got_at) = task.await.unwrap();
    let g = g.expect("waiter acquires after release");
    let lag = got_at - released_at;
    assert!(lag < Duration::from_secs(2), "handoff took {lag:?}");
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_the_lock_past_twice_the_ttl() {
    let key = unique("renew");
    let g = EphemeralLock::new(&key).client(client()).ttl(Duration::from_secs(10)).hold().await.unwrap();
    let sid = g.session_id().to_owned();
    sleep(Duration::from_secs(25)).await;
    assert!(g.is_held());
    assert_eq!(raw_holder(&key).await.as_deref(), Some(sid.as_str()), "same session still holds the key");
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_session_is_reported_lost_and_release_spares_the_new_holder() {
    let key = unique("lost");
    let g = EphemeralLock::new(&key).client(client()).lock_delay(Duration::ZERO).hold().await.unwrap();
    let sid = g.session_id().to_owned();
    // Start watching, then pull the rug.
    let lost = {
        let t0 = Instant::now();
        let (r, _) = tokio::join!(timeout(Duration::from_secs(5), g.lost()), async {
            sleep(Duration::from_millis(200)).await;
            destroy_session(&sid).await;
        });
        r.map(|_| t0.elapsed())
    };
    let took = lost.expect("lost() resolves");
    assert!(took < Duration::from_millis(2200), "lost() took {took:?}");
    assert!(!g.is_held());

    let other = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    g.release().await.expect("releasing a lost lock is Ok");
    assert_eq!(raw_holder(&key).await.as_deref(), Some(other.session_id()), "new holder's key untouched");
    other.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_is_detected_without_anyone_waiting_on_it_by_renewal() {
    // No lost() call: the renewal's 404 still marks it (ttl 10 s → renew within ~5 s).
    let key = unique("lost-renew");
    let g = EphemeralLock::new(&key).client(client()).ttl(Duration::from_secs(10)).hold().await.unwrap();
    destroy_session(g.session_id()).await;
    assert!(eventually(Duration::from_secs(8), || async { !g.is_held() }).await);
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_lock_lost_when_the_session_is_destroyed() {
    let key = unique("run-lost");
    let lock = EphemeralLock::new(&key).client(client()).lock_delay(Duration::ZERO);
    let k2 = key.clone();
    let saboteur = tokio::spawn(async move {
        let sid = loop {
            if let Some(s) = raw_holder(&k2).await {
                break s;
            }
            sleep(Duration::from_millis(20)).await;
        };
        destroy_session(&sid).await;
    });
    let t0 = Instant::now();
    let r = lock.run(sleep(Duration::from_secs(30))).await;
    assert!(matches!(r, Err(Error::LockLost { key: ref k }) if *k == key), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    saboteur.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_the_output_and_releases() {
    let key = unique("run");
    let out = EphemeralLock::new(&key).client(client()).run(async { 41 + 1 }).await.unwrap();
    assert_eq!(out, 42);
    assert!(raw_kv(&key).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_strictly_increase_over_successive_holders() {
    let key = unique("fence");
    let mut last = 0;
    for i in 0..5 {
        let g = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
        let t = g.fencing_token();
        assert!(t > last, "holder {i}: token {t} after {last}");
        last = t;
        g.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_waiting_hold_future_leaves_nothing_behind() {
    let key = unique("cancel-wait");
    let a = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    let name = format!("waiter {key}");
    let waiter = EphemeralLock::new(&key)
        .client(client())
        .session_name(name.clone())
        .acquire_timeout(Duration::from_secs(10))
        .hold();
    assert!(timeout(Duration::from_millis(700), waiter).await.is_err(), "still waiting");
    a.release().await.unwrap();
    assert!(eventually(Duration::from_secs(2), || async { sessions_named(&name).await.is_empty() }).await);
    sleep(Duration::from_millis(300)).await;
    assert!(raw_kv(&key).await.is_none(), "the cancelled waiter did not take the key");
    assert!(sessions_named(&name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_held_guard_releases_in_the_background() {
    let key = unique("drop-guard");
    let name = format!("dropped {key}");
    let g = EphemeralLock::new(&key).client(client()).session_name(name.clone()).hold().await.unwrap();
    drop(g);
    assert!(eventually(Duration::from_secs(2), || async { raw_kv(&key).await.is_none() }).await, "key freed");
    assert!(eventually(Duration::from_secs(2), || async { sessions_named(&name).await.is_empty() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_sweep_at_every_point_leaves_nothing() {
    // Drop hold() after n ms for a range of n, free and contended, then check Consul.
    let key = unique("sweep");
    let name = format!("sweep {key}");
    for contended in [false, true] {
        let blocker =
            if contended { Some(EphemeralLock::new(&key).client(client()).hold().await.unwrap()) } else { None };
        for n in [0u64, 1, 2, 3, 5, 8, 12, 20, 35, 60] {
            let fut = EphemeralLock::new(&key)
                .client(client())
                .session_name(name.clone())
                .acquire_timeout(Duration::from_secs(5))
                .hold();
            match timeout(Duration::from_millis(n), fut).await {
                Ok(Ok(g)) => drop(g),
                Ok(Err(e)) => panic!("unexpected error: {e}"),
                Err(_) => {}
            }
        }
        if let Some(b) = blocker {
            b.release().await.unwrap();
        }
        assert!(
            eventually(Duration::from_secs(3), || async { sessions_named(&name).await.is_empty() }).await,
            "sessions left: {:?}",
            sessions_named(&name).await
        );
        assert!(eventually(Duration::from_secs(2), || async { raw_kv(&key).await.is_none() }).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_not_reentrant_but_reusable_after_release() {
    let key = unique("reuse");
    let mut lock = EphemeralLock::new(&key).client(client());
    assert!(lock.acquire(true).await.unwrap());
    let t1 = lock.fencing_token().unwrap();
    assert!(matches!(lock.acquire(false).await, Err(Error::AlreadyHeld)));
    lock.release().await.unwrap();
    lock.release().await.unwrap(); // no-op
    assert!(lock.acquire(true).await.unwrap());
    assert!(lock.fencing_token().unwrap() > t1);
    lock.release().await.unwrap();
    assert!(raw_kv(&key).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_releases_and_reports_lost() {
    let key = unique("max-hold");
    let g = EphemeralLock::new(&key).client(client()).max_hold(Duration::from_millis(800)).hold().await.unwrap();
    timeout(Duration::from_secs(3), g.lost()).await.expect("lost after max_hold");
    assert!(!g.is_held());
    assert!(eventually(Duration::from_secs(2), || async { raw_kv(&key).await.is_none() }).await, "released");
    // Released with a delete, not a session invalidation: no lock-delay for the next holder.
    EphemeralLock::new(&key).client(client()).hold().await.unwrap().release().await.unwrap();
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_lock_delay_releases_by_destroying_the_session() {
    let key = unique("ld0");
    let c = client();
    let g = EphemeralLock::new(&key).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    let sid = g.session_id().to_owned();
    let before = c.request_count();
    g.release().await.unwrap();
    assert_eq!(c.request_count() - before, 1, "one write: the session destroy");
    assert!(raw_kv(&key).await.is_none());
    assert!(!session_exists(&sid).await);
    // No lock-delay was imposed: the next holder gets it at once.
    let g2 = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::ZERO).hold().await.unwrap();
    g2.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_reports_free_and_held() {
    let key = unique("holder");
    let c = client();
    assert!(c.holder(&key).await.unwrap().is_none());
    let g = EphemeralLock::new(&key).client(c.clone()).hold().await.unwrap();
    let h = c.holder(&key).await.unwrap().expect("held");
    assert_eq!(h.session_id, g.session_id());
    assert_eq!(h.modify_index, g.fencing_token());
    let info = h.info.expect("default value is holder info");
    assert_eq!(info.pid, Some(std::process::id()));
    assert_eq!(info.crate_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(info.hostname.is_some());
    g.release().await.unwrap();
    assert!(c.holder(&key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_value_is_stored() {
    let key = unique("value");
    let g = EphemeralLock::new(&key).client(client()).value(b"hello".to_vec()).hold().await.unwrap();
    let h = client().holder(&key).await.unwrap().unwrap();
    assert_eq!(h.value, b"hello");
    assert!(h.info.is_none());
    g.release().await.unwrap();
}
