//! No leaks: after 1,000 acquire/release cycles and 1,000 cancelled waits, the agent holds no
//! session of ours, and the process's tokio tasks, threads and file descriptors are back within a
//! small constant of where they started.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::EphemeralLock;
use support::*;
use tokio::time::Instant;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

fn tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    tasks: usize,
    threads: usize,
    fds: usize,
}

fn usage() -> Usage {
    Usage { tasks: tasks(), threads: threads(), fds: fds() }
}

/// Wait (bounded) until our sessions are gone and the usage is back near `base`.
async fn settles(name: &str, base: Usage) -> Usage {
    let gone = eventually(Duration::from_secs(15), || async { sessions_named(name).await.is_empty() }).await;
    let left = sessions_named(name).await;
    assert!(gone, "{} session(s) named {name:?} left on the agent: {left:?}", left.len());
    let mut now = usage();
    let end = Instant::now() + Duration::from_secs(15);
    while (now.tasks > base.tasks + 2 || now.fds > base.fds + 16 || now.threads > base.threads + 8)
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = usage();
    }
    assert!(now.tasks <= base.tasks + 2, "tokio tasks: {} before, {} after", base.tasks, now.tasks);
    assert!(now.fds <= base.fds + 16, "file descriptors: {} before, {} after", base.fds, now.fds);
    assert!(now.threads <= base.threads + 8, "threads: {} before, {} after", base.threads, now.threads);
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_acquire_release_cycles_leave_nothing_behind() {
    let c = client();
    let key = unique("leak-cycles");
    let name = format!("leak-cycles {key}");
    let lock = |i: u32| {
        EphemeralLock::new(&key)
            .client(c.clone())
            .session_name(name.clone())
            // Both release paths: session destroy (zero lock-delay) and the owner-checked delete.
            .lock_delay(if i % 2 == 0 { Duration::ZERO } else { Duration::from_secs(1) })
    };
    for i in 0..20 {
        lock(i).hold().await.unwrap().release().await.unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || async { sessions_named(&name).await.is_empty() }).await);
    let base = usage();
    let t0 = Instant::now();
    for i in 0..1000 {
        let g = lock(i).hold().await.unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        if i % 3 == 0 {
            drop(g); // released in the background
                     // The background release must finish before the next cycle can take the key.
        } else {
            g.release().await.unwrap();
        }
        // Also the reusable-lock path: acquire/release on one value.
        if i % 100 == 0 {
            let mut l = lock(i).acquire_timeout(Duration::from_secs(5));
            assert!(l.acquire(false).await.unwrap());
            l.release().await.unwrap();
        }
    }
    let elapsed = t0.elapsed();
    let after = settles(&name, base).await;
    assert!(raw_kv(&key).await.is_none());
    eprintln!("1000 cycles in {elapsed:?}: before {base:?}, after {after:?}, {} requests", c.request_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cancelled_waits_leave_nothing_behind() {
    let c = client();
    let key = unique("leak-cancel");
    let holder = EphemeralLock::new(&key).client(c.clone()).hold().await.unwrap();
    let name = format!("leak-cancel {key}");
    // A cancelled wait keeps one of the agent's 200 per-client HTTP connections busy until its
    // blocking query ends (Consul 1.8 does not cancel it server-side when the client hangs up): with
    // 2-s waits, ~50 cancellations a second stay within that budget (docs/RELIABILITY.md).
    let waiter = || {
        EphemeralLock::new(&key).client(c.clone()).session_name(name.clone()).acquire_timeout(Duration::from_secs(2))
    };
    for i in 0..10u64 {
        let _ = tokio::time::timeout(Duration::from_millis(i * 3), waiter().hold()).await;
    }
    assert!(eventually(Duration::from_secs(15), || async { sessions_named(&name).await.is_empty() }).await);
    let base = usage();
    let t0 = Instant::now();
    for i in 0..1000u64 {
        // Cancel at every stage: before the session exists, during the create, the lock attempt,
        // and the blocking-query wait.
        let after = Duration::from_micros((i * 7919) % 40_000);

        match tokio::time::timeout(after, waiter().hold()).await {
            Err(_) => {}
            Ok(r) => {
                panic!("the waiter finished while the key was held: {:?}", r.map(|g| g.fencing_token()));
            }
        }
    }
    let elapsed = t0.elapsed();
    let after = settles(&name, base).await;
    assert_eq!(raw_holder(&key).await.as_deref(), Some(holder.session_id()), "the holder was never disturbed");
    eprintln!("1000 cancelled waits in {elapsed:?}: before {base:?}, after {after:?}, {} requests", c.request_count());
    holder.release().await.unwrap();
}

/// `run()` awaits `lost()`, which starts a blocking query on the key: each cycle must end it (the
/// release changes the key, which answers the query at once) rather than leave it open on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cycles_with_key_watches_leave_nothing_behind() {
    let c = client();
    let key = unique("leak-run");
    let name = format!("leak-run {key}");
    let lock = || EphemeralLock::new(&key).client(c.clone()).session_name(name.clone()).lock_delay(Duration::ZERO);
    for _ in 0..10 {
        lock().run(tokio::time::sleep(Duration::from_millis(1))).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || async { sessions_named(&name).await.is_empty() }).await);
    let base = usage();
    let t0 = Instant::now();
    for i in 0..400 {
        let r = lock().run(tokio::time::sleep(Duration::from_millis(2))).await;
        r.unwrap_or_else(|e| panic!("run cycle {i}: {e}"));
    }
    let elapsed = t0.elapsed();
    let after = settles(&name, base).await;
    eprintln!("400 run() cycles in {elapsed:?}: before {base:?}, after {after:?}, {} requests", c.request_count());
}
