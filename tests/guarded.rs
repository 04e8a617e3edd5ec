//! Guarded writes (`put`, `delete`, `txn` on every guard): they land only while the lock is held.
//! A write after the lock was lost — the session destroyed from outside, a holder cut off by the
//! fault proxy while another took over — is rejected with `LockLost`, writes nothing, and the guard
//! reports lost; bad inputs are refused before any request.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{Election, EphemeralLock, Error, KvOp, Semaphore, MAX_TXN_OPS, MAX_VALUE_BYTES};
use support::proxy::{Fault, FaultProxy};
use support::*;

fn value_of(entry: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(entry["Value"].as_str().unwrap_or("")).unwrap()
}

async fn lost_soon(lost: impl std::future::Future<Output = ()>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), lost).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_while_held_all_or_none() {
    let key = unique("guarded-lock");
    let (a, b) = (unique("guarded-data"), unique("guarded-data"));
    let guard = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    guard.put(&a, "one").await.unwrap();
    assert_eq!(value_of(&raw_kv(&a).await.unwrap()), b"one");
    guard.txn(vec![KvOp::put(&b, "two"), KvOp::delete(&a)]).await.unwrap();
    assert!(raw_kv(&a).await.is_none());
    assert_eq!(value_of(&raw_kv(&b).await.unwrap()), b"two");
    guard.delete(&b).await.unwrap();
    assert!(raw_kv(&b).await.is_none());
    // The lock key is untouched: still ours, with the lock's flags.
    let entry = raw_kv(&key).await.unwrap();
    assert_eq!(entry["Session"].as_str(), Some(guard.session_id()));
    assert_eq!(entry["Flags"].as_u64(), Some(consul_lock::LOCK_FLAGS));
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

/// The session is destroyed from outside; the guard does not know yet (no watch started): Consul
/// rejects the write, nothing is written, and the guard reports lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_the_session_was_destroyed_is_rejected() {
    let key = unique("guarded-destroyed");
    let data = unique("guarded-data");
    let guard = EphemeralLock::new(&key).client(client()).lock_delay(Duration::ZERO).hold().await.unwrap();
    destroy_session(guard.session_id()).await;
    assert!(guard.is_held(), "nothing told the guard yet: the write must find out");
    let err = guard.txn(vec![KvOp::put(&data, "stale"), KvOp::put(format!("{data}-2"), "stale")]).await.unwrap_err();
    assert!(matches!(&err, Error::LockLost { key: k } if *k == key), "{err:?}");
    assert!(err.is_lost());
    assert!(!guard.is_held());
    assert!(lost_soon(guard.lost()).await, "lost() did not resolve after a rejected write");
    assert!(raw_kv(&data).await.is_none() && raw_kv(&format!("{data}-2")).await.is_none(), "a rejected write landed");
    // Known lost now: the next write is refused without a request.
    assert!(guard.put(&data, "x").await.unwrap_err().is_lost());
    guard.release().await.unwrap();
}

/// The old holder is cut off (fault proxy) while its session is destroyed and a new holder takes
/// the key and writes its state; when the old holder's network comes back, well within its TTL so
/// it still believes it holds, its write is rejected and the new holder's state is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_holder_never_overwrites_the_new_holders_state() {
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let key = unique("guarded-takeover");
    let state = unique("guarded-state");
    let old = EphemeralLock::new(&key)
        .client(proxy.client())
        .ttl(Duration::from_secs(30))
        .lock_delay(Duration::ZERO)
        .hold()
        .await
        .unwrap();
    old.put(&state, "old-1").await.unwrap();
    proxy.set(Fault::Refuse);
    destroy_session(old.session_id()).await;
    let new = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::from_secs(5)).hold().await.unwrap();
    assert!(new.fencing_token() > old.fencing_token());
    new.put(&state, "new-1").await.unwrap();
    proxy.set(Fault::None);
    assert!(old.is_held(), "the old holder's lease has not run out: it still believes it holds");
    let err = old.put(&state, "old-2").await.unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert!(lost_soon(old.lost()).await);
    assert_eq!(value_of(&raw_kv(&state).await.unwrap()), b"new-1");
    assert!(new.is_held());
    new.put(&state, "new-2").await.unwrap();
    old.release().await.unwrap();
    assert_eq!(raw_holder(&key).await.as_deref(), Some(new.session_id()), "the old release touched the new holder");
    new.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rounds_of_takeover_never_lose_the_current_holders_state() {
    let key = unique("guarded-rounds");
    let state = unique("guarded-state");
    let c = client();
    let mut old = EphemeralLock::new(&key).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    for round in 0..10 {
        old.put(&state, format!("holder-{round}")).await.unwrap();
        destroy_session(old.session_id()).await;
        let new = EphemeralLock::new(&key)
            .client(c.clone())
            .lock_delay(Duration::ZERO)
            .acquire_timeout(Duration::from_secs(5))
            .hold()
            .await
            .unwrap();
        new.put(&state, format!("holder-{}", round + 1)).await.unwrap();
        assert!(old.put(&state, "stale").await.unwrap_err().is_lost());
        assert_eq!(value_of(&raw_kv(&state).await.unwrap()), format!("holder-{}", round + 1).as_bytes());
        old.release().await.unwrap();
        old = new;
    }
    old.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_before_any_request() {
    let key = unique("guarded-bad");
    let c = client();
    let guard = EphemeralLock::new(&key).client(c.clone()).hold().await.unwrap();
    let before = c.request_count();
    let bad = |e: Error| assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
    bad(guard.txn(vec![]).await.unwrap_err());
    let many = (0..MAX_TXN_OPS).map(|i| KvOp::delete(format!("{key}-x/{i}"))).collect();
    bad(guard.txn(many).await.unwrap_err());
    for k in ["", "/abs", "a/../b", "a//b", "a\u{7}"] {
        bad(guard.put(k, "x").await.unwrap_err());
        bad(guard.delete(k).await.unwrap_err());
    }
    bad(guard.put("ok/key", vec![0u8; MAX_VALUE_BYTES + 1]).await.unwrap_err());
    // Within each value's limit, beyond the transaction's.
    let big = (0..3).map(|i| KvOp::put(format!("{key}-big/{i}"), vec![0u8; 200 * 1024])).collect();
    bad(guard.txn(big).await.unwrap_err());
    // The guard's own keys: the lock key (its flags must stay Go's) and its queue.
    bad(guard.put(&key, "x").await.unwrap_err());
    bad(guard.delete(&key).await.unwrap_err());
    bad(guard.delete(format!("{key}/.consul-lock-queue/abc")).await.unwrap_err());
    assert_eq!(c.request_count(), before, "an invalid write sent a request");
    assert!(guard.is_held(), "bad input must not mark the guard lost");
    // The limit itself passes: one check plus 63 operations.
    let most = (0..MAX_TXN_OPS - 1).map(|i| KvOp::delete(format!("{key}-x/{i}"))).collect();
    guard.txn(most).await.unwrap();
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_and_leaderships_fence_too() {
    let c = client();
    let prefix = unique("guarded-sem");
    let data = unique("guarded-data");
    let permit = Semaphore::new(&prefix, 2).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    permit.put(&data, "slot").await.unwrap();
    assert!(matches!(permit.put(format!("{prefix}/.lock"), "x").await, Err(Error::InvalidConfig(_))));
    destroy_session(permit.session_id()).await;
    assert!(permit.put(&data, "stale").await.unwrap_err().is_lost());
    assert!(lost_soon(permit.lost()).await);
    assert_eq!(value_of(&raw_kv(&data).await.unwrap()), b"slot");
    permit.release().await.unwrap();

    let key = unique("guarded-election");
    let leader =
        Election::new(&key).client(c.clone()).lock_delay(Duration::ZERO).campaign(b"me".to_vec()).await.unwrap();
    leader.put(&data, "leader").await.unwrap();
    leader.proclaim(b"still me".to_vec()).await.unwrap();
    leader.put(&data, "leader after proclaim").await.unwrap();
    destroy_session(leader.session_id()).await;
    let err = leader.delete(&data).await.unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert!(!leader.is_leader());
    assert_eq!(value_of(&raw_kv(&data).await.unwrap()), b"leader after proclaim");
    leader.resign().await.unwrap();
}

/// On a shared session: the check is on our key, so another lock of the same session losing its
/// key does not reject this guard's writes; destroying the session rejects them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_session_each_guard_fences_its_own_key() {
    let c = client();
    let session =
        consul_lock::Session::with_lock_delay(c.clone(), Duration::from_secs(15), Duration::ZERO).await.unwrap();
    let (k1, k2, data) = (unique("guarded-shared"), unique("guarded-shared"), unique("guarded-data"));
    let g1 = session.lock(&k1).hold().await.unwrap();
    let g2 = session.lock(&k2).hold().await.unwrap();
    raw_delete(&k1).await; // an operator deletes one lock's key
    assert!(g1.put(&data, "1").await.unwrap_err().is_lost());
    g2.put(&data, "2").await.unwrap();
    assert!(g2.is_held());
    destroy_session(session.id()).await;
    assert!(g2.put(&data, "3").await.unwrap_err().is_lost());
    assert_eq!(value_of(&raw_kv(&data).await.unwrap()), b"2");
}

#[test]
fn the_blocking_mirror_fences() {
    use consul_lock::blocking;
    let c = blocking::Client::new(consul().client()).unwrap();
    let key = unique("guarded-blocking");
    let data = unique("guarded-data");
    let guard = blocking::EphemeralLock::new(&key).client(c.clone()).lock_delay(Duration::ZERO).hold().unwrap();
    guard.put(&data, "a").unwrap();
    guard.txn(vec![KvOp::put(&data, "b")]).unwrap();
    assert!(matches!(guard.put(&key, "x"), Err(Error::InvalidConfig(_))));
    let sid = guard.session_id().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(destroy_session(&sid));
    assert!(guard.delete(&data).unwrap_err().is_lost());
    assert!(!guard.is_held());
    assert!(guard.lost_timeout(Duration::from_secs(5)));
    assert_eq!(rt.block_on(async { value_of(&raw_kv(&data).await.unwrap()) }), b"b");
    guard.release().unwrap();
}
