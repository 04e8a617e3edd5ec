//! Semaphore against a real `consul agent -dev`: the key layout (src/semaphore/slots.rs), limits, tokens,
//! loss, cancellation, validation, and conflicts with plain locks.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{EphemeralLock, Error, Semaphore, SEMAPHORE_FLAGS};
use proptest::prelude::*;
use serde_json::Value;
use support::*;
use tokio::time::{timeout, Instant};

/// The decoded `PREFIX/.lock` value, read without the library.
async fn raw_slots(prefix: &str) -> Option<Value> {
    let e = raw_kv(&format!("{prefix}/.lock")).await?;
    assert_eq!(e["Flags"].as_u64(), Some(SEMAPHORE_FLAGS), "the coordination key carries the semaphore flags");
    let b64 = e["Value"].as_str()?;
    let raw = base64_decode(b64);
    Some(serde_json::from_slice(&raw).unwrap())
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

async fn holders(prefix: &str) -> Vec<String> {
    match raw_slots(prefix).await {
        Some(v) => v["Holders"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default(),
        None => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_limit_tokens_and_release() {
    let prefix = unique("sem-layout");
    let a = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    let b = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    assert!(b.token() > a.token(), "tokens strictly increase: {} then {}", a.token(), b.token());
    // The layout: contender keys held by their sessions, the holders in `.lock`.
    for p in [&a, &b] {
        assert_eq!(p.key(), format!("{prefix}/{}", p.session_id()));
        let e = raw_kv(p.key()).await.expect("contender key exists");
        assert_eq!(e["Session"].as_str(), Some(p.session_id()));
        assert_eq!(e["Flags"].as_u64(), Some(SEMAPHORE_FLAGS));
    }
    let slots = raw_slots(&prefix).await.unwrap();
    assert_eq!(slots["Limit"], 2);
    let mut want = vec![a.session_id().to_owned(), b.session_id().to_owned()];
    want.sort();
    assert_eq!(holders(&prefix).await, want);
    let state = client().semaphore(&prefix).await.unwrap().unwrap();
    assert_eq!((state.limit, state.holders.len()), (2, 2));
    assert_eq!(state.holders[0].info.as_ref().and_then(|i| i.pid), Some(std::process::id()));

    // Full: a third waits and gets NotAcquired.
    let mut c = Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(!c.acquire(false).await.unwrap());
    assert!(t0.elapsed() >= Duration::from_millis(250));
    let e = Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::ZERO).hold().await.unwrap_err();
    assert!(e.is_not_acquired(), "{e}");

    // A release frees a slot for a waiter, which gets a larger token.
    let waiter = tokio::spawn({
        let prefix = prefix.clone();
        async move { Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(10)).hold().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a_sid, b_token) = (a.session_id().to_owned(), b.token());
    a.release().await.unwrap();
    assert!(raw_kv(&format!("{prefix}/{a_sid}")).await.is_none(), "contender key deleted at release");
    let w = timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert!(w.token() > b_token);
    assert!(!holders(&prefix).await.contains(&a_sid));
    assert!(eventually(Duration::from_secs(3), || async { !session_exists(&a_sid).await }).await);
    w.release().await.unwrap();
    b.release().await.unwrap();
    assert!(holders(&prefix).await.is_empty());
    assert!(client().semaphore(&prefix).await.unwrap().unwrap().holders.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_release_reuse_and_shared_session() {
    let prefix = unique("sem-acquire");
    let mut sem = Semaphore::new(&prefix, 1).client(client());
    assert!(sem.acquire(true).await.unwrap());
    assert!(sem.is_held() && sem.token().is_some());
    assert!(matches!(sem.acquire(false).await, Err(Error::AlreadyHeld)));
    sem.release().await.unwrap();
    assert!(!sem.is_held() && sem.token().is_none());
    assert!(sem.acquire(true).await.unwrap(), "the same value acquires again");
    sem.release().await.unwrap();

    let session = consul_lock::Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let p = session.semaphore(&prefix, 1).hold().await.unwrap();
    assert_eq!(p.session_id(), session.id());
    let second = session.semaphore(&prefix, 1).acquire_timeout(Duration::from_millis(200)).hold().await;
    assert!(second.unwrap_err().is_not_acquired(), "one slot per session and prefix");
    let e = session.semaphore(&prefix, 1).ttl(Duration::from_secs(20)).hold().await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
    p.release().await.unwrap();
    assert!(raw_kv(&format!("{prefix}/{}", session.id())).await.is_none());
    assert!(session_exists(session.id()).await, "a shared session outlives its permits");
    session.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_permit_is_detected_and_pruned() {
    let prefix = unique("sem-lost");
    let p = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    let sid = p.session_id().to_owned();
    destroy_session(&sid).await;
    timeout(Duration::from_secs(10), p.lost()).await.expect("lost() resolves");
    assert!(!p.is_held());
    assert!(
        eventually(Duration::from_secs(5), || async { !holders(&prefix).await.contains(&sid) }).await,
        "the lost holder is removed from Holders"
    );
    p.release().await.unwrap();

    // A dead holder left in Holders (its session destroyed, nobody cleaned) is pruned by the next writer.
    let a = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    let b = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    // Kill a's contender key and session behind its back, leaving its Holders entry.
    let a_sid = a.session_id().to_owned();
    std::mem::forget(a); // no release, no cleanup task
    destroy_session(&a_sid).await;
    let c = Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(5)).hold().await.unwrap();
    let h = holders(&prefix).await;
    assert!(!h.contains(&a_sid) && h.len() == 2, "{h:?}");
    c.release().await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_leaves_nothing_behind() {
    let prefix = unique("sem-cancel");
    let blocker = Semaphore::new(&prefix, 1).client(client()).hold().await.unwrap();
    let name = format!("cancel-{prefix}");
    // Waiting: dropped after n ms at various points (session create, first read, blocking query).
    for n in [0u64, 1, 2, 5, 10, 20, 50, 100] {
        let sem = Semaphore::new(&prefix, 1).client(client()).session_name(name.clone()).acquire_timeout(Duration::MAX);
        let _ = timeout(Duration::from_millis(n), sem.hold()).await;
    }
    // Free: dropped at various points while being admitted.
    blocker.release().await.unwrap();
    for n in [0u64, 1, 2, 3, 5, 8, 13, 20, 40] {
        let sem = Semaphore::new(&prefix, 1).client(client()).session_name(name.clone());
        let _ = timeout(Duration::from_millis(n), sem.hold()).await;
    }
    // Polled once, then dropped.
    {
        let mut fut = Box::pin(Semaphore::new(&prefix, 1).client(client()).session_name(name.clone()).hold());
        let _ = futures_poll_once(fut.as_mut()).await;
    }
    let clean = eventually(Duration::from_secs(10), || async {
        sessions_named(&name).await.is_empty() && holders(&prefix).await.is_empty() && only_lock_key(&prefix).await
    })
    .await;
    assert!(clean, "sessions {:?}, holders {:?}", sessions_named(&name).await, holders(&prefix).await);
}

async fn futures_poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut fut).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Nothing under the prefix but (maybe) its `.lock` key.
async fn only_lock_key(prefix: &str) -> bool {
    let keys = raw_keys(&format!("{prefix}/")).await;
    keys.iter().all(|k| k.ends_with("/.lock"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_mismatch_and_plain_lock_are_errors_before_any_write() {
    let prefix = unique("sem-conflict");
    let p = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    let name = format!("mismatch-{prefix}");
    let e = Semaphore::new(&prefix, 3).client(client()).session_name(name.clone()).hold().await.unwrap_err();
    match &e {
        Error::LimitConflict { limit: 3, stored: 2, .. } => {}
        e => panic!("want LimitConflict, got {e}"),
    }
    assert!(e.to_string().contains("limit conflict"), "{e}");
    assert!(sessions_named(&name).await.is_empty(), "no session was created");
    p.release().await.unwrap();

    // `consul lock PREFIX` (or our lock on PREFIX/.lock) holds the coordination key as a lock.
    let lockp = unique("sem-vs-lock");
    let g = EphemeralLock::new(format!("{lockp}/.lock")).client(client()).hold().await.unwrap();
    let e = Semaphore::new(&lockp, 2).client(client()).session_name(name.clone()).hold().await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(sessions_named(&name).await.is_empty());
    assert!(matches!(client().semaphore(&lockp).await.unwrap_err(), Error::Conflict { .. }));
    g.release().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Bad prefixes and limits are InvalidConfig before any request (the client points nowhere).
    #[test]
    fn invalid_input_fails_before_any_request(
        prefix in prop_oneof!["", "/[a-z]{1,5}", "[a-z]{1,5}//[a-z]{1,5}", "[a-z]{1,5}/", "[a-z]{1,3}/\\.\\./[a-z]", "[a-z]{1,3}\u{7}"],
        limit in prop_oneof![Just(0u32), 4097u32..],
        which in 0..2u8,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = closed_port_client();
        let (p, l) = if which == 0 { (prefix, 1) } else { ("ok/prefix".to_owned(), limit) };
        let e = rt.block_on(Semaphore::new(p, l).client(c.clone()).hold()).unwrap_err();
        prop_assert!(matches!(e, Error::InvalidConfig(_)), "{}", e);
        prop_assert_eq!(c.request_count(), 0);
    }

    /// Valid prefixes and limits pass validation (and only fail on the unreachable agent).
    #[test]
    fn valid_input_reaches_consul(prefix in "[a-z0-9_-]{1,8}(/[a-z0-9_.-]{1,8}){0,3}", limit in 1u32..=4096) {
        prop_assume!(!prefix.split('/').any(|s| s == "." || s == ".."));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = consul_lock::Client::builder().address(format!("127.0.0.1:{port}")).request_timeout(Duration::from_millis(100)).build().unwrap();
        let e = rt.block_on(Semaphore::new(prefix, limit).client(c.clone()).acquire_timeout(Duration::ZERO).hold()).unwrap_err();
        prop_assert!(matches!(e, Error::Transport(_)), "{}", e);
    }
}

/// The blocking mirror: the same layout and guarantees with plain methods.
#[test]
fn blocking_semaphore() {
    use consul_lock::blocking;
    let prefix = unique("sem-blocking");
    let c = blocking::Client::builder().address(consul().http_addr()).build().unwrap();
    let a = blocking::Semaphore::new(&prefix, 2).client(c.clone()).hold().unwrap();
    let mut b = blocking::Semaphore::new(&prefix, 2).client(c.clone());
    assert!(b.acquire(true).unwrap());
    assert!(b.token().unwrap() > a.token());
    let mut full = blocking::Semaphore::new(&prefix, 2).client(c.clone()).acquire_timeout(Duration::ZERO);
    assert!(!full.acquire(false).unwrap());
    assert!(!a.lost_timeout(Duration::from_millis(100)), "held");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(destroy_session(a.session_id()));
    assert!(a.lost_timeout(Duration::from_secs(10)), "lost once its session is destroyed");
    assert!(!a.is_held());
    a.release().unwrap();
    b.release().unwrap();
    let session = blocking::Session::new(&c, Duration::from_secs(15)).unwrap();
    let p = session.semaphore(&prefix, 2).hold().unwrap();
    assert_eq!(p.session_id(), session.id());
    p.release().unwrap();
    session.destroy().unwrap();
    assert!(rt.block_on(holders(&prefix)).is_empty());
}
