//! Transient faults while a lock is held, through a fault-injecting TCP proxy in front of the real
//! agent: faults shorter than the TTL leave the lock held and `lost()` silent; faults longer than
//! the TTL make the holder report lost by its local deadline and, once Consul is reachable again,
//! clean up (no zombie session keeps the key: hashicorp/consul#4935).

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::EphemeralLock;
use support::proxy::{Fault, FaultProxy};
use support::*;
use tokio::time::{sleep, timeout, Instant};

/// TTL 20 s renews every ~10 s; a fault from 6 s to 14 s after the acquire covers the first renewal
/// and ends well before the 20-s lease deadline.
async fn short_fault_keeps_the_lock(fault: Fault) {
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let key = unique("short-fault");
    let c = proxy.client();
    let guard = EphemeralLock::new(&key)
        .client(c.clone())
        .ttl(Duration::from_secs(20))
        .lock_delay(Duration::ZERO)
        .hold()
        .await
        .unwrap();
    let sid = guard.session_id().to_owned();
    let mut tried_during_fault = 0;
    let script = async {
        sleep(Duration::from_secs(6)).await;
        proxy.set(fault.clone());
        let before = c.request_count();
        sleep(Duration::from_secs(8)).await;
        tried_during_fault = c.request_count() - before;
        proxy.set(Fault::None);
        // Time for the renewal retries and the key watch to come back.
        sleep(Duration::from_secs(3)).await;
    };
    tokio::select! {
        _ = guard.lost() => panic!("lost() fired during a fault shorter than the TTL ({fault:?})"),
        _ = script => {}
    }
    // The renewal is due 9–10 s after the session was created, inside the fault window by
    // construction; where the proxy sees requests it also checks that one was refused.
    assert!(tried_during_fault > 0, "no request during the fault: the test proved nothing");
    if fault != Fault::Refuse {
        assert!(proxy.renews_refused() > 0, "the fault never hit a renewal: the test proved nothing");
    }
    assert!(guard.is_held(), "still held after the fault");
    assert_eq!(raw_holder(&key).await.as_deref(), Some(sid.as_str()), "Consul still has our session on the key");
    assert!(session_exists(&sid).await);
    guard.release().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { raw_kv(&key).await.is_none() }).await);
    assert!(eventually(Duration::from_secs(5), || async { !session_exists(&sid).await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500s_shorter_than_ttl_keep_the_lock() {
    short_fault_keeps_the_lock(Fault::Http500("rpc error making call: No cluster leader".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_shorter_than_ttl_keep_the_lock() {
    short_fault_keeps_the_lock(Fault::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_shorter_than_ttl_keep_the_lock() {
    short_fault_keeps_the_lock(Fault::Refuse).await;
}

/// A waiter keeps waiting through a fault (its blocking queries and renewals fail for 8 s) and
/// takes the key once the holder releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_keeps_waiting_through_a_fault() {
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let key = unique("wait-fault");
    let holder = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    let waiter = EphemeralLock::new(&key)
        .client(proxy.client())
        .ttl(Duration::from_secs(20))
        .acquire_timeout(Duration::from_secs(60))
        .session_name(format!("wait-fault {key}"));
    let waiting = tokio::spawn(waiter.hold());
    sleep(Duration::from_secs(2)).await;
    proxy.set(Fault::Http500("rpc error making call: No cluster leader".into()));
    sleep(Duration::from_secs(4)).await;
    proxy.set(Fault::Drop);
    sleep(Duration::from_secs(4)).await;
    proxy.set(Fault::None);
    assert!(!waiting.is_finished(), "the waiter gave up during the fault");
    let token = holder.fencing_token();
    holder.release().await.unwrap();
    let t0 = Instant::now();
    let g = timeout(Duration::from_secs(30), waiting).await.expect("bounded").expect("task");
    let g = g.unwrap_or_else(|e| panic!("the waiter did not acquire after the fault: {e}"));
    eprintln!("waiter acquired {:?} after the release", t0.elapsed());
    assert!(g.fencing_token() > token);
    assert_eq!(sessions_named(&key).await, vec![g.session_id().to_owned()], "one session for the waiter");
    g.release().await.unwrap();
}

/// A fault longer than the TTL: lost by the local deadline (last successful renewal + TTL), and
/// cleaned up by the holder as soon as the agent is reachable again — well before Consul itself
/// would expire the session (it may keep it up to 2×TTL after the last renewal).
async fn long_fault_is_lost_then_cleaned_up(fault: Fault) {
    const TTL: Duration = Duration::from_secs(10);
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let key = unique("long-fault");
    let guard = EphemeralLock::new(&key)
        .client(proxy.client())
        .ttl(TTL)
        .lock_delay(Duration::from_secs(5))
        .session_name(format!("long-fault {key}"))
        .hold()
        .await
        .unwrap();
    let sid = guard.session_id().to_owned();
    sleep(Duration::from_secs(1)).await;
    let fault_start = Instant::now();
    proxy.set(fault.clone());
    timeout(TTL + Duration::from_secs(3), guard.lost())
        .await
        .unwrap_or_else(|_| panic!("lost() did not fire within TTL + 3 s of an endless fault ({fault:?})"));
    let lost_after = fault_start.elapsed();
    assert!(!guard.is_held(), "is_held() is false once lost");
    // The last renewal was at most TTL/2 before the fault; the lease lasts TTL from it.
    assert!(lost_after >= TTL / 2 - Duration::from_millis(500), "lost too early: {lost_after:?}");
    // Consul still has the session: it keeps it up to 2×TTL after the last renewal (>= 15 s here).
    assert!(session_exists(&sid).await, "Consul expired the session already; the cleanup would prove nothing");

    proxy.set(Fault::None);
    let healed = Instant::now();
    assert!(
        eventually(Duration::from_secs(4), || async { !session_exists(&sid).await }).await,
        "the lost holder did not destroy its session once Consul was back (a zombie session)"
    );
    assert!(raw_holder(&key).await.is_none(), "no zombie holds the key");
    assert!(sessions_named(&key).await.is_empty(), "no session of ours left");
    eprintln!("{fault:?}: lost after {lost_after:?}, cleaned up {:?} after healing", healed.elapsed());
    // Someone else can take it (the destroy imposed the 5-s lock-delay at most).
    let other = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::from_secs(10)).hold().await;
    let other = other.expect("another holder gets the key after the cleanup");
    guard.release().await.unwrap();
    assert_eq!(raw_holder(&key).await.as_deref(), Some(other.session_id()), "the stale release touched nothing");
    other.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_longer_than_ttl_is_lost_by_the_deadline_and_cleaned_up() {
    long_fault_is_lost_then_cleaned_up(Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500s_longer_than_ttl_are_lost_by_the_deadline_and_cleaned_up() {
    long_fault_is_lost_then_cleaned_up(Fault::Http500("rpc error making call: No cluster leader".into())).await;
}

/// A waiter whose blocking queries are answered HTTP 500 for a while (a Consul leader election:
/// "No cluster leader", "rpc error making call: EOF") keeps waiting and acquires after the release:
/// an error answer to a wait is retried like a refused connection, never returned as the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_rides_out_http_500s_on_its_blocking_queries() {
    let key = unique("wait-500");
    let holder = EphemeralLock::new(&key).client(client()).lock_delay(Duration::ZERO).hold().await.unwrap();
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let c = proxy.client();
    let waiter =
        tokio::spawn(EphemeralLock::new(&key).client(c.clone()).acquire_timeout(Duration::from_secs(30)).hold());
    // Let the waiter reach its blocking query, then fail every request for 2 s.
    assert!(eventually(Duration::from_secs(5), || async { c.request_count() >= 3 }).await);
    proxy.set(Fault::Http500("rpc error making call: EOF".into()));
    let before = c.request_count();
    sleep(Duration::from_secs(2)).await;
    holder.release().await.unwrap(); // the release happens during the fault
    sleep(Duration::from_secs(1)).await;
    assert!(c.request_count() > before, "no request during the fault: the test proved nothing");
    assert!(!waiter.is_finished(), "the waiter gave up during the fault: {:?}", waiter.await);
    proxy.set(Fault::None);
    let g = timeout(Duration::from_secs(20), waiter).await.expect("bounded").unwrap();
    let g = g.expect("the waiter acquires once Consul answers again");
    assert_eq!(raw_holder(&key).await.as_deref(), Some(g.session_id()));
    g.release().await.unwrap();
}
