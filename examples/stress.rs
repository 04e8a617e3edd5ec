//! Full-size mutual-exclusion stress run (docs/RELIABILITY.md has the latest figures): N processes
//! take turns on one key, each doing a read-modify-write of a shared counter file with a pause
//! inside the critical section; then the records are checked (no lost update, no overlap, fencing
//! tokens strictly increasing in interval order). Starts its own `consul agent -dev`.
//!
//! ```sh
//! cargo run --release --all-features --example stress -- [processes=8] [sections=10000] [pause_ms=2]
//! ```

#[path = "../tests/support/worker.rs"]
#[allow(dead_code)]
mod worker;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use worker::{check, run_worker, WorkerSpec};

fn main() {
    if let Some(spec) = WorkerSpec::from_env() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        if let Err(e) = rt.block_on(run_worker(&spec)) {
            eprintln!("worker {}: {e}", std::process::id());
            std::process::exit(1);
        }
        return;
    }
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("numeric arguments"));
    let processes = args.next().unwrap_or(8).max(1);
    let sections = args.next().unwrap_or(10_000).max(processes);
    let pause = Duration::from_millis(args.next().unwrap_or(2));
    let per = (sections / processes) as u32;

    let consul = consul_lock::testing::ConsulDev::start().unwrap_or_else(|e| {
        eprintln!("cannot start a Consul dev agent: {e}");
        std::process::exit(2)
    });
    let dir = std::env::temp_dir().join(format!("consul-lock-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let t0 = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|i| {
            let spec = WorkerSpec {
                addr: consul.http_addr().to_owned(),
                key: "stress/one-key".into(),
                iterations: per,
                dir: dir.clone(),
                pause,
                lock_delay: if i % 2 == 0 { Duration::ZERO } else { Duration::from_secs(1) },
                limit: None,
            };
            Command::new(&exe).envs(spec.to_env()).stdin(Stdio::null()).spawn().expect("spawn a worker")
        })
        .collect();
    let mut failed = 0;
    for mut c in children {
        if !c.wait().map(|s| s.success()).unwrap_or(false) {
            failed += 1;
        }
    }
    let elapsed = t0.elapsed();
    if failed > 0 {
        eprintln!("{failed} worker(s) failed");
        std::process::exit(1);
    }
    let expected = per as usize * processes as usize;
    match check(&dir, expected) {
        Ok(v) => {
            println!(
                "OK: {} critical sections by {} processes in {:.1} s ({:.0} handoffs/s); {} cross-process \
                 handoffs; counter = {}; no overlap; tokens strictly increasing; gap between holders \
                 median {} µs, p99 {} µs, max {} µs; pause {:?}",
                v.sections,
                v.processes,
                elapsed.as_secs_f64(),
                v.sections as f64 / elapsed.as_secs_f64(),
                v.cross_process_handoffs,
                v.sections,
                v.gap_us.0,
                v.gap_us.1,
                v.gap_us.2,
                pause
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => {
            eprintln!("VIOLATION: {e} (records kept in {})", dir.display());
            std::process::exit(1);
        }
    }
}
