//! Mutual exclusion under contention: several OS processes (this test binary re-run as children)
//! take turns on one key, each doing a read-modify-write of a shared counter file with a pause
//! inside the critical section. Verdict: no lost update, no overlapping intervals, fencing tokens
//! strictly increasing in interval order. The full-size run is `examples/stress.rs`.

#![cfg(feature = "test-util")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul_lock::Session;
use support::child::{spawn_self, wait_bounded};
use support::worker::{check, run_worker, WorkerSpec};
use support::*;

const WORKER: &str = "exclusion_worker_child";

/// Not a test by itself: the body of each child process of `processes_take_turns_on_one_key`.
#[test]
#[ignore = "child process of the exclusion test; run by it"]
fn exclusion_worker_child() {
    let spec = WorkerSpec::from_env().expect("run by processes_take_turns_on_one_key with CL_WORKER_* set");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Err(e) = rt.block_on(run_worker(&spec)) {
        panic!("worker {} failed: {e}", std::process::id());
    }
}

#[test]
fn processes_take_turns_on_one_key() {
    const PROCESSES: u32 = 8;
    const ITERATIONS: u32 = 63; // 8 × 63 = 504 critical sections
    let consul = consul();
    let dir = std::env::temp_dir().join(format!("consul-lock-excl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = unique("exclusion");
    let t0 = Instant::now();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let spec = WorkerSpec {
                addr: consul.http_addr().to_owned(),
                key: key.clone(),
                iterations: ITERATIONS,
                dir: dir.clone(),
                pause: Duration::from_millis(2),
                // Half release by session destroy (zero lock-delay), half by the owner-checked delete.
                lock_delay: if i % 2 == 0 { Duration::ZERO } else { Duration::from_secs(1) },
                limit: None,
            };
            spawn_self(WORKER, &spec.to_env())
        })
        .collect();
    for c in &mut children {
        let status = wait_bounded(c, Duration::from_secs(240));
        assert!(status.success(), "a worker failed: {status}");
    }
    let elapsed = t0.elapsed();
    let verdict = check(&dir, (PROCESSES * ITERATIONS) as usize).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "exclusion: {} sections by {} processes in {elapsed:.1?} ({:.0}/s), {} cross-process handoffs, \
         gap µs median/p99/max {:?}",
        verdict.sections,
        verdict.processes,
        verdict.sections as f64 / elapsed.as_secs_f64(),
        verdict.cross_process_handoffs,
        verdict.gap_us
    );
    assert_eq!(verdict.processes, PROCESSES as usize);
    assert!(verdict.cross_process_handoffs > 0, "the processes never contended");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Locks bound to one shared `Session` in one process: the in-process registry makes the second
/// contender wait, even though Consul would let the same session "re-acquire" the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_one_shared_session_take_turns() {
    const TASKS: u64 = 4;
    const ITERATIONS: u64 = 25;
    let session = Session::with_lock_delay(client(), Duration::from_secs(10), Duration::ZERO).await.unwrap();
    let key = unique("shared-excl");
    let inside = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let last_token = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (session, key, inside, counter, last_token) =
                (session.clone(), key.clone(), inside.clone(), counter.clone(), last_token.clone());
            tokio::spawn(async move {
                for _ in 0..ITERATIONS {
                    let g = session.lock(&key).acquire_timeout(Duration::from_secs(60)).hold().await.unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders inside at once");
                    let n = counter.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    counter.store(n + 1, Ordering::SeqCst);
                    let prev = last_token.swap(g.fencing_token(), Ordering::SeqCst);
                    assert!(g.fencing_token() > prev, "token {} after {prev}", g.fencing_token());
                    inside.store(false, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("bounded").expect("task ok");
    }
    assert_eq!(counter.load(Ordering::SeqCst), TASKS * ITERATIONS, "lost updates");
    let id = session.id().to_owned();
    session.destroy().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { !session_exists(&id).await }).await);
}

/// The verdict itself must catch each violation (otherwise the runs above could not fail).
#[test]
fn verdict_catches_lost_updates_overlaps_and_token_disorder() {
    let dir = std::env::temp_dir().join(format!("consul-lock-verdict-{}", std::process::id()));
    let case = |counter: u64, lines: &str| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("counter"), counter.to_string()).unwrap();
        std::fs::write(dir.join("log-1"), lines).unwrap();
        check(&dir, lines.lines().count())
    };
    assert!(case(2, "10 1 100 200\n12 2 300 400\n").is_ok());
    let e = case(1, "10 1 100 200\n12 2 300 400\n").unwrap_err();
    assert!(e.contains("lost updates"), "{e}");
    let e = case(2, "10 1 100 300\n12 2 250 400\n").unwrap_err();
    assert!(e.contains("overlapping"), "{e}");
    let e = case(2, "12 1 100 200\n10 2 300 400\n").unwrap_err();
    assert!(e.contains("fencing"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The full-size stress binary, at a small size: it spawns its own workers and agent and prints
/// its verdict (`cargo test` builds the examples next to the test binaries).
#[test]
fn stress_binary_small_run() {
    let exe = std::env::current_exe().unwrap();
    let stress = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join("stress");
    assert!(
        stress.is_file(),
        "example binary {} not built: run `cargo build --examples --all-features` (scripts/test.sh does)",
        stress.display()
    );
    let mut child =
        std::process::Command::new(stress).args(["4", "40", "1"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "stress failed: {status}\n{out}");
    assert!(out.contains("OK: 40 critical sections by 4 processes"), "{out}");
}
