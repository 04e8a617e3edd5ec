//! Auto traits and sizes the API promises.

use std::time::Duration;

use consul_lock::{blocking, Client, EphemeralLock, Error, LockGuard, ReadGuard, RwLock, Session, WriteGuard};

fn is_send<T: Send>(_: &T) {}
fn send_sync<T: Send + Sync>() {}
fn clone<T: Clone>() {}

#[test]
fn types_are_send_and_sync() {
    send_sync::<Client>();
    clone::<Client>();
    send_sync::<EphemeralLock>();
    send_sync::<LockGuard>();
    send_sync::<Session>();
    send_sync::<Error>();
    send_sync::<blocking::Client>();
    send_sync::<blocking::EphemeralLock>();
    send_sync::<blocking::LockGuard>();
    send_sync::<RwLock>();
    send_sync::<ReadGuard>();
    send_sync::<WriteGuard>();
    send_sync::<blocking::RwLock>();
    send_sync::<blocking::ReadGuard>();
    send_sync::<blocking::WriteGuard>();
}

#[test]
fn futures_are_send() {
    // Never polled: only their types matter.
    let c = Client::builder().build().unwrap();
    is_send(&EphemeralLock::new("k").client(c.clone()).hold());
    let mut lock = EphemeralLock::new("k");
    is_send(&lock.acquire(false));
    is_send(&lock.release());
    is_send(&EphemeralLock::new("k").run(async {}));
    is_send(&c.holder("k"));
    let rw = RwLock::new("k").client(c.clone());
    is_send(&rw.read());
    is_send(&rw.write());
    is_send(&rw.try_read());
    is_send(&rw.try_write());
    is_send(&c.rw_lock("k"));
    is_send(&Session::new(c, Duration::from_secs(10)));
}

#[test]
fn error_stays_small() {
    assert!(std::mem::size_of::<Error>() <= 72, "Error is {} bytes", std::mem::size_of::<Error>());
}
