//! A semaphore under contention: 8 OS processes (this test binary re-run as children, the worker of
//! tests/support/worker.rs) take slots of one semaphore with limit 3, 504 admissions in all.
//! Verdict: never more than 3 inside at once, 3 reached, tokens unique and increasing per process.

#![cfg(feature = "test-util")]

mod support;

use std::time::{Duration, Instant};

use support::child::{spawn_self, wait_bounded};
use support::worker::{check_limit, max_inside, run_worker, WorkerSpec};
use support::*;

const WORKER: &str = "semaphore_worker_child";

/// Not a test by itself: the body of each child process of `processes_share_three_slots`.
#[test]
#[ignore = "child process of the semaphore exclusion test; run by it"]
fn semaphore_worker_child() {
    let spec = WorkerSpec::from_env().expect("run by processes_share_three_slots with CL_WORKER_* set");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Err(e) = rt.block_on(run_worker(&spec)) {
        panic!("worker {} failed: {e}", std::process::id());
    }
}

#[test]
fn processes_share_three_slots() {
    const PROCESSES: u32 = 8;
    const ITERATIONS: u32 = 63; // 8 × 63 = 504 admissions
    const LIMIT: u32 = 3;
    let consul = consul();
    let dir = std::env::temp_dir().join(format!("consul-lock-sem-excl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = unique("sem-exclusion");
    let t0 = Instant::now();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let spec = WorkerSpec {
                addr: consul.http_addr().to_owned(),
                key: prefix.clone(),
                iterations: ITERATIONS,
                dir: dir.clone(),
                pause: Duration::from_millis(3),
                lock_delay: if i % 2 == 0 { Duration::ZERO } else { Duration::from_secs(1) },
                limit: Some(LIMIT),
            };
            spawn_self(WORKER, &spec.to_env())
        })
        .collect();
    for c in &mut children {
        let status = wait_bounded(c, Duration::from_secs(240));
        assert!(status.success(), "a worker failed: {status}");
    }
    let max = check_limit(&dir, (PROCESSES * ITERATIONS) as usize, LIMIT as usize).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "semaphore exclusion: {} admissions in {:.1?}, at most {max} inside",
        PROCESSES * ITERATIONS,
        t0.elapsed()
    );
    assert_eq!(max, LIMIT as usize, "the slots were never all used: the processes did not contend");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overlap_counting() {
    assert_eq!(max_inside([(0, 10), (10, 20)].into_iter()), 1, "exit and enter at one instant do not overlap");
    assert_eq!(max_inside([(0, 10), (5, 20), (6, 7), (30, 40)].into_iter()), 3);
    assert_eq!(max_inside(std::iter::empty()), 0);
}
