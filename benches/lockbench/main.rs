//! `lockbench`: the performance figures of docs/PERFORMANCE.md, printed as markdown tables.
//!
//! Runs against a real Consul agent: `LOCKBENCH_CONSUL=127.0.0.1:PORT` (an agent nobody else uses:
//! the benchmark counts Raft writes agent-wide), else a private `consul agent -dev` it starts.
//!
//! ```text
//! cargo bench --all-features --bench lockbench                       # everything
//! cargo bench --all-features --bench lockbench -- latency contend    # some parts
//! LOCKBENCH_N=100 LOCKBENCH_ROUNDS=3 cargo bench --all-features --bench lockbench -- latency
//! ```
//!
//! Parts: `latency` (raw floors and uncontended cycles, async and blocking, interleaved in rounds),
//! `contend` (contended handoff, tasks and processes), `scale` (many keys through one Session),
//! `semaphore` (ours beside `consul lock -n`: cycle and handoff, limit 2).
//! `election` (failover after resign, requests per handoff, observe latency; election.rs).
//! `rwlock` (read and write cycles, a writer handoff among readers; rwlock.rs).
//! `multi` (a multi-lock of n = 2, 8, 32 keys beside n `EphemeralLock`s; a guarded put beside a
//! plain put; multi.rs).
//! `crowd` (thousands of waiters in one process, hundreds of processes on one host, against the
//! agent's connection cap; crowd.rs). Not in the default set: run it by name.
//! Sizes come from the environment (see `common::Config::from_env`). The binary re-executes itself
//! as a contender process (`worker` argument, `worker.rs`) for the process runs.

mod common;
mod contention;
mod crowd;
mod election;
mod latency;
mod multi;
mod rwlock;
mod scale;
mod semaphore;
mod worker;

use std::io::Write;

use common::{Config, Ctl};
use contention::{parse_run, print_contend, run_procs, run_tasks};
use election::part_election;
use latency::{part_latency, print_latency};
use scale::part_scale;
use worker::worker_main;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().map(String::as_str) == Some("worker") {
        worker_main();
        return;
    }
    let parts: Vec<&str> = if args.is_empty() {
        vec!["latency", "contend", "scale", "semaphore", "election", "multi", "rwlock"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let _dev;
    let addr = match std::env::var("LOCKBENCH_CONSUL") {
        Ok(a) if !a.is_empty() => a,
        _ => {
            let dev =
                consul_lock::testing::ConsulDev::start().unwrap_or_else(|e| panic!("cannot start consul -dev: {e}"));
            let a = dev.http_addr().to_owned();
            _dev = dev;
            a
        }
    };
    let host = addr.split(':').next().unwrap_or("");
    assert!(host.starts_with("127.") || host == "localhost", "LOCKBENCH_CONSUL must be a loopback address");
    let cfg = Config::from_env(addr);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let version = rt.block_on(async {
        let v = Ctl::new(&cfg.addr).get("/v1/agent/self").await;
        let dev =
            v["DebugConfig"]["DevMode"].as_bool().map(|d| if d { "-dev" } else { "server, data dir" }).unwrap_or("?");
        format!("{} ({dev})", v["Config"]["Version"].as_str().unwrap_or("?"))
    });
    println!("# consul-lock lockbench\n");
    println!(
        "Consul {version} at {} · {} CPUs · parts: {} · N={} rounds={} handoffs={}/{}\n",
        cfg.addr,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        parts.join(","),
        cfg.n,
        cfg.rounds,
        cfg.handoffs,
        cfg.slow_handoffs
    );
    for part in parts {
        match part {
            "latency" => {
                let acc = part_latency(&rt, &cfg);
                print_latency(&cfg, &acc);
            }
            "contend" => {
                let mut results = Vec::new();
                for s in cfg.runs.split(',').filter(|s| !s.is_empty()) {
                    let Some(spec) = parse_run(s, &cfg) else {
                        eprintln!("bad run spec {s:?}: expected (t|e|p)N[f][@HOLDMS][:HANDOFFS]");
                        continue;
                    };
                    eprintln!("contend {s} ...");
                    let r = if spec.procs {
                        run_procs(&rt, &cfg.addr, spec)
                    } else {
                        rt.block_on(run_tasks(&cfg.addr, spec))
                    };
                    results.push(r);
                }
                print_contend(&results);
            }
            "scale" => rt.block_on(part_scale(&cfg)),
            "semaphore" => rt.block_on(semaphore::part_semaphore(&cfg)),
            "election" => rt.block_on(part_election(&cfg)),
            "crowd" => rt.block_on(crowd::part_crowd(&cfg.addr)),
            "multi" => rt.block_on(multi::part_multi(&cfg)),
            "rwlock" => rt.block_on(rwlock::part_rwlock(&cfg)),
            other => {
                eprintln!("unknown part {other:?} (latency, contend, scale, semaphore, election, multi, rwlock, crowd)")
            }
        }
        let _ = std::io::stdout().flush();
    }
}
