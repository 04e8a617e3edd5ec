//! The blocking API in plain `#[test]`s, with no runtime of the caller's.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::blocking::{Client, EphemeralLock, Session};
use consul_lock::Error;
use support::{consul, unique};

fn blocking_client() -> Client {
    Client::new(consul().client()).expect("blocking client")
}

#[test]
fn hold_and_release_without_a_runtime() {
    let c = blocking_client();
    let key = unique("blocking");
    let guard = EphemeralLock::new(&key).client(c.clone()).hold().unwrap();
    assert!(guard.is_held());
    assert_eq!(c.holder(&key).unwrap().unwrap().session_id, guard.session_id());
    guard.release().unwrap();
    assert!(c.holder(&key).unwrap().is_none());
}

#[test]
fn contention_fail_hard_and_reuse() {
    let c = blocking_client();
    let key = unique("blocking-contend");
    let mut a = EphemeralLock::new(&key).client(c.clone());
    assert!(a.acquire(true).unwrap());
    let token = a.fencing_token().unwrap();
    let mut b = EphemeralLock::new(&key).client(c.clone()).acquire_timeout(Duration::from_millis(200));
    assert!(!b.acquire(false).unwrap());
    assert!(matches!(b.acquire(true), Err(Error::NotAcquired { .. })));
    a.release().unwrap();
    assert!(b.acquire(false).unwrap());
    assert!(b.fencing_token().unwrap() > token);
    b.release().unwrap();
}

#[test]
fn dropped_guard_is_released_in_the_background() {
    let c = blocking_client();
    let key = unique("blocking-drop");
    let guard = EphemeralLock::new(&key).client(c.clone()).hold().unwrap();
    drop(guard);
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while c.holder(&key).unwrap().is_some() {
        assert!(std::time::Instant::now() < end, "key still held 2 s after drop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_runtime_thread_finishes_a_pending_release_when_the_last_handle_drops() {
    let key = unique("blocking-exit");
    {
        // A client, lock and guard that all go away at once, as at the end of `main`.
        let guard = EphemeralLock::new(&key).client(blocking_client()).hold().unwrap();
        drop(guard);
    }
    // Dropping the last handle joined the runtime thread after it finished the release.
    assert!(blocking_client().holder(&key).unwrap().is_none());
}

#[test]
fn run_runs_the_closure_under_the_lock() {
    let c = blocking_client();
    let key = unique("blocking-run");
    let c2 = c.clone();
    let k2 = key.clone();
    let seen = EphemeralLock::new(&key)
        .client(c.clone())
        .run(move |g| c2.holder(&k2).unwrap().map(|h| h.session_id == g.session_id()))
        .unwrap();
    assert_eq!(seen, Some(true));
    assert!(c.holder(&key).unwrap().is_none());
}

#[test]
fn the_builder_configures_a_client_without_a_runtime() {
    let c = Client::builder()
        .address(consul().http_addr())
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("a blocking client from the builder, no runtime anywhere");
    let key = unique("blocking-builder");
    let guard = EphemeralLock::new(&key).client(c.clone()).hold().unwrap();
    assert_eq!(c.holder(&key).unwrap().unwrap().session_id, guard.session_id());
    assert!(c.session_info(guard.session_id()).unwrap().is_some());
    assert!(c.request_count() >= 3, "{} requests", c.request_count());
    guard.release().unwrap();
    // Bad input is the async builder's error, before any request.
    assert!(matches!(Client::builder().address("ftp://x").build(), Err(Error::InvalidConfig(_))));
}

#[test]
fn a_shared_session_and_the_lost_signals() {
    let c = blocking_client();
    let session = Session::new(&c, Duration::from_secs(15)).unwrap();
    let key = unique("blocking-session");
    let guard = session.lock(&key).hold().unwrap();
    assert_eq!(c.holder(&key).unwrap().unwrap().session_id, session.id());
    assert!(!guard.lost_timeout(Duration::from_millis(100)), "held, not lost");
    assert!(!session.lost_timeout(Duration::from_millis(100)));
    // Destroying the session from outside: the guard and the session report it.
    c.destroy_session(session.id()).unwrap();
    assert!(guard.lost_timeout(Duration::from_secs(5)), "lost after its session was destroyed");
    guard.lost(); // returns at once now
    assert!(session.lost_timeout(Duration::from_secs(5)) && !session.is_alive());
    guard.release().unwrap(); // a lost lock's release only cleans up
    let e = session.lock(&key).hold().unwrap_err();
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
    // A lost session's settings are still checked first.
    let e = session.lock(&key).ttl(Duration::from_secs(30)).hold().unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("ttl")), "{e}");
}

#[test]
fn lost_on_a_lock_value() {
    let c = blocking_client();
    let key = unique("blocking-lock-lost");
    let mut lock = EphemeralLock::new(&key).client(c.clone());
    assert_eq!(lock.key(), key);
    assert!(lock.lost_timeout(Duration::from_millis(10)), "holds nothing: lost at once");
    assert!(lock.acquire(true).unwrap());
    assert!(!lock.lost_timeout(Duration::from_millis(100)));
    let sid = c.holder(&key).unwrap().unwrap().session_id;
    c.destroy_session(&sid).unwrap();
    assert!(lock.lost_timeout(Duration::from_secs(5)));
    assert!(!lock.is_held());
    lock.release().unwrap();
}

#[tokio::test]
#[should_panic(expected = "consul_lock::blocking was called from async code")]
async fn a_call_from_async_code_panics_with_a_clear_message() {
    let c = tokio::task::spawn_blocking(blocking_client).await.unwrap();
    // Inside the runtime's own task: blocking here would stall it.
    let _ = c.holder("k");
}

#[tokio::test]
async fn spawn_blocking_is_the_way_from_async_code() {
    let key = unique("blocking-from-async");
    let k = key.clone();
    let (token, holder) = tokio::task::spawn_blocking(move || {
        let c = blocking_client();
        let g = EphemeralLock::new(&k).client(c.clone()).hold().unwrap();
        let holder = c.holder(&k).unwrap().map(|h| h.modify_index);
        let token = g.fencing_token();
        g.release().unwrap();
        (token, holder)
    })
    .await
    .unwrap();
    assert_eq!(holder, Some(token));
}

#[test]
fn rwlock_readers_share_writers_exclude_and_a_writer_downgrades_without_a_runtime() {
    use consul_lock::blocking::RwLock;
    let c = blocking_client();
    let key = unique("blocking-rw");
    let mut lock = RwLock::new(&key).client(c.clone()).acquire_timeout(Duration::from_millis(300));
    let (r1, r2) = (lock.read().unwrap(), lock.read().unwrap());
    assert!(r1.is_held() && r2.is_held());
    assert!(lock.try_write().unwrap().is_none());
    assert!(matches!(lock.write(), Err(Error::NotAcquired { .. })));
    r1.release().unwrap();
    drop(r2); // released in the background
    let mut writer = RwLock::new(&key).client(c.clone()).acquire_timeout(Duration::from_secs(5));
    let w = writer.write().unwrap();
    assert!(w.fencing_token() > 0 && !w.lost_timeout(Duration::from_millis(50)));
    assert!(lock.try_read().unwrap().is_none());
    let arrival = w.arrival();
    let r = w.downgrade().unwrap();
    assert_eq!(r.arrival(), arrival);
    let other = lock.try_read().unwrap().expect("readers join a downgraded writer");
    other.release().unwrap();
    r.release().unwrap();
    let session = Session::new(&c, Duration::from_secs(15)).unwrap();
    let bound = session.rw_lock(&key).write().unwrap();
    bound.release().unwrap();
    session.destroy().unwrap();
}

#[test]
fn rwlock_guards_write_only_while_held() {
    use consul_lock::blocking::RwLock;
    let c = blocking_client();
    let key = unique("blocking-rw-guarded");
    let w = RwLock::new(&key).client(c.clone()).write().unwrap();
    w.put(format!("{key}-data"), "v").unwrap();
    assert!(matches!(w.put(&key, "v"), Err(Error::InvalidConfig(_))));
    w.release().unwrap();
}
