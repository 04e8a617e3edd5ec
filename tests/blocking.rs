//! The blocking API in plain `#[test]`s, with no runtime of the caller's.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::blocking::{Client, EphemeralLock};
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
