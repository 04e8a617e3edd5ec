//! A holder process that dies (`kill -9`) or freezes (`SIGSTOP` past 2×TTL, then `SIGCONT`).
//! The holder is this test binary re-run as a child process.

#![cfg(feature = "test-util")]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consul_lock::{Client, EphemeralLock};
use support::child::{next_report, report_lines, signal, spawn_self, wait_bounded};
use support::*;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_secs(1);
const HOLDER: &str = "crash_holder_child";

/// Not a test by itself: a child that holds `CL_HOLD_KEY`, reports `HELD <token> <session>`, waits
/// for `lost()`, reports `LOST <is_held>`, releases and reports `RELEASED <ok|error>`.
#[test]
#[ignore = "child process of the crash tests; run by them"]
fn crash_holder_child() {
    let addr = std::env::var("CL_HOLD_ADDR").expect("run by the crash tests");
    let key = std::env::var("CL_HOLD_KEY").expect("run by the crash tests");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::builder().address(addr).build().unwrap();
        let guard = EphemeralLock::new(&key).client(client).ttl(TTL).lock_delay(LOCK_DELAY).hold().await.unwrap();
        println!("@@ HELD {} {}", guard.fencing_token(), guard.session_id());
        if tokio::time::timeout(Duration::from_secs(180), guard.lost()).await.is_err() {
            println!("@@ TIMEOUT");
            return;
        }
        println!("@@ LOST {}", guard.is_held());
        match guard.release().await {
            Ok(()) => println!("@@ RELEASED ok"),
            Err(e) => println!("@@ RELEASED {e}"),
        }
    });
}

fn holder_env(key: &str) -> Vec<(String, String)> {
    vec![("CL_HOLD_ADDR".into(), consul().http_addr().to_owned()), ("CL_HOLD_KEY".into(), key.to_owned())]
}

fn parse_held(line: &str) -> (u64, String) {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() == 3 && f[0] == "HELD", "unexpected report {line:?}");
    (f[1].parse().unwrap(), f[2].to_owned())
}

/// Until `stop`: fail if the key is ever held by someone other than `dead` while `dead` still exists
/// (nobody may delete or take a live holder's key).
fn watch_no_steal(key: String, dead: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut checks = 0;
        let end = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            let holder = raw_holder(&key).await;
            if holder.as_deref() != Some(dead.as_str()) && session_exists(&dead).await {
                // Re-read: the session may have expired between the two reads.
                assert!(
                    !session_exists(&dead).await || raw_holder(&key).await.as_deref() == Some(dead.as_str()),
                    "the key left its live holder {dead}: now {holder:?}"
                );
            }
            checks += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        checks
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_is_replaced_within_two_ttls_plus_lock_delay() {
    let key = unique("kill9");
    let mut child = spawn_self(HOLDER, &holder_env(&key));
    let reports = report_lines(&mut child);
    let (token, dead) = parse_held(&next_report(&reports, Duration::from_secs(30), "HELD"));
    assert_eq!(raw_holder(&key).await.as_deref(), Some(dead.as_str()));

    signal(child.id(), libc::SIGKILL);
    let killed = Instant::now();
    let _ = wait_bounded(&mut child, Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_no_steal(key.clone(), dead.clone(), stop.clone());
    let limit = TTL * 2 + LOCK_DELAY + Duration::from_secs(8);
    let guard = EphemeralLock::new(&key).client(client()).acquire_timeout(limit).hold().await.unwrap();
    let took = killed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let checks = watcher.await.unwrap();
    eprintln!("kill -9: next holder after {took:?} (bound {limit:?}), {checks} steal checks");
    assert!(checks > 5, "the no-steal watch barely ran");
    // The dead holder renewed at most TTL/2 before dying, and Consul honours at least the TTL.
    assert!(took >= TTL / 2 - Duration::from_secs(1), "the dead holder's key was taken after only {took:?}");
    assert!(guard.fencing_token() > token, "fencing: {} after {token}", guard.fencing_token());
    assert!(!session_exists(&dead).await);
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_reports_lost_on_resume_and_never_deletes_the_new_holders_key() {
    let key = unique("sigstop");
    let mut child = spawn_self(HOLDER, &holder_env(&key));
    let reports = report_lines(&mut child);
    let (token, paused) = parse_held(&next_report(&reports, Duration::from_secs(30), "HELD"));

    signal(child.id(), libc::SIGSTOP);
    let stopped = Instant::now();
    let acquired = EphemeralLock::new(&key)
        .client(client())
        .acquire_timeout(TTL * 2 + LOCK_DELAY + Duration::from_secs(10))
        .hold()
        .await;
    let guard = match acquired {
        Ok(g) => g,
        Err(e) => {
            signal(child.id(), libc::SIGCONT);
            panic!("no one took the paused holder's key: {e}");
        }
    };
    eprintln!("SIGSTOP: next holder after {:?}", stopped.elapsed());
    assert!(guard.fencing_token() > token, "fencing: {} after {token}", guard.fencing_token());
    // Stay paused past 2×TTL in all.
    let resume_at = stopped + TTL * 2 + Duration::from_secs(1);
    tokio::time::sleep_until(resume_at).await;
    signal(child.id(), libc::SIGCONT);
    let resumed = Instant::now();

    let lost = next_report(&reports, Duration::from_secs(15), "LOST");
    assert_eq!(lost, "LOST false", "is_held() must be false once lost");
    eprintln!("SIGCONT: paused holder reported lost {:?} after resuming", resumed.elapsed());
    let released = next_report(&reports, Duration::from_secs(15), "RELEASED");
    assert_eq!(released, "RELEASED ok");
    assert!(wait_bounded(&mut child, Duration::from_secs(15)).success());
    assert_eq!(
        raw_holder(&key).await.as_deref(),
        Some(guard.session_id()),
        "the paused holder's release must not touch the new holder's key"
    );
    assert!(!session_exists(&paused).await, "the paused holder's session is gone");
    assert!(guard.is_held());
    guard.release().await.unwrap();
}
