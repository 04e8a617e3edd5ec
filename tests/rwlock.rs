//! The read-write lock against a real agent: sharing and exclusion with the one-shot forms, who
//! wakes whom (a writer's release wakes exactly the readers behind it, a reader's release nobody
//! until the last), downgrade in place, the key shared with plain locks and semaphores refused both
//! ways, a killed reader and a killed writer recovered after their TTL, cancellation sweeps, and
//! `Client::rw_lock`.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{Client, EphemeralLock, Error, ReadGuard, RwLock, Semaphore, Session, WriteGuard};
use support::child::{next_report, report_lines, signal, spawn_self, wait_bounded};
use support::*;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn rw(key: &str) -> RwLock {
    RwLock::new(key).client(client()).acquire_timeout(WAIT)
}

/// A request started in the background, on a client of its own (so its requests can be counted).
fn reader(key: &str, c: &Client) -> JoinHandle<ReadGuard> {
    let lock = RwLock::new(key).client(c.clone()).acquire_timeout(WAIT);
    tokio::spawn(async move { lock.read().await.unwrap() })
}

fn writer(key: &str, c: &Client) -> JoinHandle<WriteGuard> {
    let lock = RwLock::new(key).client(c.clone()).acquire_timeout(WAIT);
    tokio::spawn(async move { lock.write().await.unwrap() })
}

/// Places in the line of the read-write lock `key`.
async fn places(key: &str) -> usize {
    raw_keys(&format!("{key}/.consul-lock-rw/.consul-lock-queue/")).await.len()
}

/// Wait until `key`'s line holds `n` places.
async fn line_of(key: &str, n: usize) {
    assert!(eventually(WAIT, || async { places(key).await == n }).await, "the line never reached {n}");
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_a_writer_is_alone_and_the_one_shot_forms_never_wait() {
    let key = unique("rw-share");
    let lock = rw(&key);
    let (r1, r2) = (lock.read().await.unwrap(), lock.read().await.unwrap());
    assert!(r1.is_held() && r2.is_held() && r1.arrival() < r2.arrival());
    assert!(lock.try_write().await.unwrap().is_none(), "readers hold");
    // Released and awaited, not dropped: a dropped guard releases in the background, and the
    // count of readers below must not race that release.
    let r3 = lock.try_read().await.unwrap().expect("readers share");
    r3.release().await.unwrap();
    let state = client().rw_lock(&key).await.unwrap().unwrap();
    assert!(state.writer.is_none());
    assert_eq!(state.readers.len(), 2);
    let w = tokio::spawn({
        let lock = rw(&key);
        async move { lock.write().await.unwrap() }
    });
    line_of(&key, 3).await;
    let state = client().rw_lock(&key).await.unwrap().unwrap();
    assert_eq!((state.readers.len(), state.waiting.len()), (2, 1));
    assert!(state.waiting[0].0, "the waiter is a writer");
    assert!(lock.try_read().await.unwrap().is_none(), "a reader arriving behind a waiting writer waits");
    r1.release().await.unwrap();
    settle().await;
    assert!(!w.is_finished(), "one reader is still inside");
    r2.release().await.unwrap();
    let w = timeout(WAIT, w).await.unwrap().unwrap();
    assert!(w.is_held() && w.fencing_token() > 0);
    let state = client().rw_lock(&key).await.unwrap().unwrap();
    assert_eq!(state.writer.map(|h| h.modify_index), Some(w.fencing_token()));
    assert!(lock.try_read().await.unwrap().is_none() && lock.try_write().await.unwrap().is_none());
    let t1 = w.fencing_token();
    w.release().await.unwrap();
    let w2 = lock.write().await.unwrap();
    assert!(w2.fencing_token() > t1, "tokens increase across writers");
    w2.release().await.unwrap();
    assert_eq!(places(&key).await, 0, "no place left in line");
    let marker = raw_kv(&key).await.expect("the key stays, as a marker");
    assert!(marker["Session"].is_null());
    assert_eq!(marker["Flags"].as_u64(), Some(consul_lock::RWLOCK_FLAGS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_wakes_exactly_the_readers_behind_it_and_readers_wake_nobody_until_the_last() {
    let key = unique("rw-wake");
    let clients: Vec<Client> = (0..6).map(|_| consul().client()).collect();
    let w1 = rw(&key).write().await.unwrap();
    // Line: w1 (holds) · r0 r1 r2 · w2 · r3
    let rs: Vec<_> = (0..3).map(|i| reader(&key, &clients[i])).collect();
    line_of(&key, 4).await;
    let w2 = writer(&key, &clients[3]);
    line_of(&key, 5).await;
    let r3 = reader(&key, &clients[4]);
    line_of(&key, 6).await;
    settle().await;
    let behind = Sent::from_now(&clients, [3, 4]);
    w1.release().await.unwrap();
    let mut readers = Vec::new();
    for r in rs {
        readers.push(timeout(WAIT, r).await.unwrap().unwrap());
    }
    settle().await;
    assert_eq!(behind.total(), 0, "the writer's release woke more than the readers behind it");
    assert!(!w2.is_finished() && !r3.is_finished());
    let last = readers.pop().unwrap();
    for r in readers {
        r.release().await.unwrap();
    }
    settle().await;
    assert_eq!(behind.total(), 0, "a reader's release woke someone before the last reader left");
    assert!(!w2.is_finished());
    let r3_only = Sent::from_now(&clients, [4]);
    last.release().await.unwrap();
    let w2 = timeout(WAIT, w2).await.unwrap().unwrap();
    settle().await;
    // Waking the writer rewrites its place: the reader waiting on that place re-arms its blocking
    // query (one request), and reads nothing.
    assert!(r3_only.total() <= 1, "the reader behind the next writer sent {} requests", r3_only.total());
    assert!(!r3.is_finished(), "a reader behind a writer waits for it");
    w2.release().await.unwrap();
    timeout(WAIT, r3).await.unwrap().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_keeps_the_place_lets_readers_in_and_keeps_writers_out() {
    let key = unique("rw-downgrade");
    let c: Vec<Client> = (0..3).map(|_| consul().client()).collect();
    let w = rw(&key).write().await.unwrap();
    let (arrival, token) = (w.arrival(), w.fencing_token());
    // Line: w (holds) · r0 · w1 · r1
    let r0 = reader(&key, &c[0]);
    line_of(&key, 2).await;
    let w1 = writer(&key, &c[1]);
    line_of(&key, 3).await;
    let r1 = reader(&key, &c[2]);
    line_of(&key, 4).await;
    let down = w.downgrade().await.unwrap();
    assert!(down.is_held());
    assert_eq!(down.arrival(), arrival, "the same place in line");
    let r0 = timeout(WAIT, r0).await.unwrap().unwrap();
    settle().await;
    assert!(!w1.is_finished() && !r1.is_finished(), "the writer behind stays out, and so does the reader behind it");
    let state = client().rw_lock(&key).await.unwrap().unwrap();
    assert_eq!((state.readers.len(), state.waiting.len()), (2, 2));
    down.release().await.unwrap();
    settle().await;
    assert!(!w1.is_finished(), "one reader is still inside");
    r0.release().await.unwrap();
    let w1 = timeout(WAIT, w1).await.unwrap().unwrap();
    assert!(w1.fencing_token() > token);
    w1.release().await.unwrap();
    timeout(WAIT, r1).await.unwrap().unwrap().release().await.unwrap();
    // A lost write lock does not downgrade.
    let s = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let w = s.rw_lock(&key).write().await.unwrap();
    destroy_session(s.id()).await;
    assert!(eventually(WAIT, || async { !w.is_held() }).await);
    assert!(matches!(w.downgrade().await, Err(Error::LockLost { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_locks_semaphores_and_the_rwlock_never_share_a_key() {
    let key = unique("rw-conflict");
    let plain = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    assert!(matches!(rw(&key).read().await, Err(Error::Conflict { .. })));
    assert!(matches!(rw(&key).try_write().await, Err(Error::Conflict { .. })));
    assert!(matches!(client().rw_lock(&key).await, Err(Error::Conflict { .. })));
    plain.release().await.unwrap();
    // Readers hold: the key is a marker a plain lock refuses.
    let r = rw(&key).read().await.unwrap();
    let refused = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::from_secs(2)).hold().await;
    assert!(matches!(refused, Err(Error::Conflict { .. })), "{refused:?}");
    r.release().await.unwrap();
    // Still refused when nobody holds (the marker stays), and a writer's key too.
    let w = rw(&key).write().await.unwrap();
    let refused = EphemeralLock::new(&key).client(client()).hold().await;
    assert!(matches!(refused, Err(Error::Conflict { .. })), "{refused:?}");
    w.release().await.unwrap();
    // A semaphore's coordination key.
    let prefix = unique("rw-conflict-sem");
    let permit = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap();
    assert!(matches!(rw(&format!("{prefix}/.lock")).read().await, Err(Error::Conflict { .. })));
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_before_any_request() {
    let c = closed_port_client();
    for lock in [
        RwLock::new("").client(c.clone()),
        RwLock::new("a//b").client(c.clone()),
        RwLock::new("k").client(c.clone()).ttl(Duration::from_secs(1)),
        RwLock::new("k").client(c.clone()).lock_delay(Duration::from_secs(61)),
        RwLock::new("k").client(c.clone()).max_hold(Duration::ZERO),
        RwLock::new("k").client(c.clone()).value(vec![0; 600 * 1024]),
    ] {
        assert!(matches!(lock.read().await, Err(Error::InvalidConfig(_))));
        assert!(matches!(lock.try_write().await, Err(Error::InvalidConfig(_))));
    }
    assert_eq!(c.request_count(), 0);
    let s = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let bound = s.rw_lock("k").ttl(Duration::from_secs(20));
    assert!(matches!(bound.read().await, Err(Error::InvalidConfig(m)) if m.contains("ttl")));
    s.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_sweep_at_every_point_leaves_nothing() {
    let key = unique("rw-sweep");
    let name = format!("sweep {key}");
    for blocker in ["none", "reader", "writer"] {
        let held_r = if blocker == "reader" { Some(rw(&key).read().await.unwrap()) } else { None };
        let held_w = if blocker == "writer" { Some(rw(&key).write().await.unwrap()) } else { None };
        for n in [0u64, 1, 2, 3, 5, 8, 12, 20, 35, 60] {
            let lock = rw(&key).session_name(name.clone()).acquire_timeout(Duration::from_secs(5));
            let write = n % 2 == 1;
            let outcome = match write {
                true => timeout(Duration::from_millis(n), lock.write()).await.map(|r| r.map(drop)),
                false => timeout(Duration::from_millis(n), lock.read()).await.map(|r| r.map(drop)),
            };
            if let Ok(Err(e)) = outcome {
                panic!("unexpected error: {e}");
            }
        }
        let blockers = usize::from(held_r.is_some() || held_w.is_some());
        assert!(
            eventually(Duration::from_secs(5), || async { sessions_named(&name).await.is_empty() }).await,
            "{blocker}: sessions left: {:?}",
            sessions_named(&name).await
        );
        assert!(
            eventually(Duration::from_secs(3), || async { places(&key).await == blockers }).await,
            "{blocker}: places left in line"
        );
        if let Some(g) = held_r {
            g.release().await.unwrap();
        }
        if let Some(g) = held_w {
            g.release().await.unwrap();
        }
        let marker = raw_kv(&key).await;
        assert!(marker.is_none_or(|m| m["Session"].is_null()), "{blocker}: the key is held after the sweep");
    }
}

// ---- a killed reader and a killed writer ----

const TTL: Duration = Duration::from_secs(10);
const HOLDER: &str = "rwlock_holder_child";

/// Not a test by itself: a child that takes `CL_RW_KEY` (read or write, per `CL_RW_MODE`),
/// reports `HELD`, and sleeps until killed.
#[test]
#[ignore = "child process of the read-write lock kill test; run by it"]
fn rwlock_holder_child() {
    let addr = std::env::var("CL_RW_ADDR").expect("run by the kill test");
    let key = std::env::var("CL_RW_KEY").expect("run by the kill test");
    let write = std::env::var("CL_RW_MODE").is_ok_and(|m| m == "write");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::builder().address(addr).build().unwrap();
        let lock = RwLock::new(&key).client(client).ttl(TTL).lock_delay(Duration::from_secs(1));
        let _guard: Box<dyn std::any::Any> = match write {
            true => Box::new(lock.write().await.unwrap()),
            false => Box::new(lock.read().await.unwrap()),
        };
        println!("@@ HELD");
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}

/// Kill a holder in `mode` of a fresh key; the other mode's request then gets in after the TTL.
async fn killed_holder_is_recovered(mode: &str) -> Duration {
    let key = unique(&format!("rw-kill-{mode}"));
    let env =
        [("CL_RW_ADDR", consul().http_addr().to_owned()), ("CL_RW_KEY", key.clone()), ("CL_RW_MODE", mode.into())];
    let mut child = spawn_self(HOLDER, &env.map(|(k, v)| (k.to_owned(), v)));
    let rx = report_lines(&mut child);
    let line = tokio::task::spawn_blocking(move || next_report(&rx, WAIT, "HELD")).await.unwrap();
    assert_eq!(line, "HELD");
    let lock = rw(&key).acquire_timeout(Duration::from_secs(90));
    let t0 = Instant::now();
    signal(child.id(), libc::SIGKILL);
    wait_bounded(&mut child, WAIT);
    let waited = match mode {
        "write" => {
            let r = lock.read().await.unwrap();
            r.release().await.unwrap();
            t0.elapsed()
        }
        _ => {
            let w = lock.write().await.unwrap();
            w.release().await.unwrap();
            t0.elapsed()
        }
    };
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_and_a_killed_writer_are_recovered_after_their_ttl() {
    let (reader, writer) = tokio::join!(killed_holder_is_recovered("read"), killed_holder_is_recovered("write"));
    eprintln!("recovered after a killed reader in {reader:.1?}, after a killed writer in {writer:.1?}");
    for waited in [reader, writer] {
        // Consul invalidates a session between TTL and 2×TTL; a writer behind a dead reader reads
        // the line again every 5 s; a dead writer's lock-delay (1 s) follows its invalidation.
        assert!(waited >= TTL - Duration::from_secs(1), "recovered before the TTL: {waited:?}");
        assert!(waited <= 2 * TTL + Duration::from_secs(10), "not recovered in time: {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_land_only_while_held_and_never_touch_the_lock_s_keys() {
    let key = unique("rw-guarded");
    let data = format!("{key}-data");
    let s = Session::new(client(), Duration::from_secs(15)).await.unwrap();
    let w = s.rw_lock(&key).write().await.unwrap();
    w.put(&data, "by the writer").await.unwrap();
    assert!(matches!(w.put(&key, "x").await, Err(Error::InvalidConfig(_))), "the lock's key is refused");
    let line = format!("{key}/.consul-lock-rw/.consul-lock-queue/x");
    assert!(matches!(w.delete(&line).await, Err(Error::InvalidConfig(_))), "its line too");
    let r = w.downgrade().await.unwrap();
    r.put(&data, "by the reader").await.unwrap();
    assert_eq!(raw_kv(&data).await.unwrap()["Value"], "YnkgdGhlIHJlYWRlcg==");
    destroy_session(s.id()).await;
    let rejected = r.put(&data, "after the loss").await;
    assert!(matches!(rejected, Err(Error::LockLost { .. })), "{rejected:?}");
    assert!(!r.is_held());
    assert_eq!(raw_kv(&data).await.unwrap()["Value"], "YnkgdGhlIHJlYWRlcg==", "nothing of a rejected write");
    raw_delete(&data).await;
}
