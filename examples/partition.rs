//! The long partition run (docs/RELIABILITY.md has the figures): the harness of
//! `tests/partition.rs` — a Consul cluster in a private network namespace, locking processes on
//! client agents over a fenced register, every nemesis in turn — for a given time, then the
//! checker. Re-executes itself under `unshare --net` (root needed); keeps the history in `--dir`.
//! `scripts/partition.sh --long` builds and runs it.
//!
//! ```sh
//! cargo run --release --all-features --example partition -- \
//!     [--minutes 30] [--servers 5] [--clients 3] [--workers 8] [--window 10] [--window-max 30] [--heal 5] \
//!     [--long-every 100] [--seed N] [--dir target/partition-long]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::nemesis::{run, Config};
use support::netns::{inside, run_inside};
use support::workload::{self, Spec};

fn main() {
    if let Some(spec) = Spec::from_env() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        match rt.block_on(workload::run(&spec)) {
            Ok(_) => return,
            Err(e) => {
                eprintln!("locking process {}: {e}", std::process::id());
                std::process::exit(1);
            }
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().expect("own path");
    let cfg = config(&args);
    if !inside() {
        let limit = cfg.duration + Duration::from_secs(600);
        let ok = run_inside(&exe, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[], limit);
        std::process::exit(if ok { 0 } else { 1 });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let t0 = Instant::now();
    let spawn = |env: &[(String, String)]| {
        let mut c = Command::new(&exe);
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };
    let report = rt.block_on(run(&cfg, &spawn));
    println!(
        "partition run: {} servers, {} client agents, {} processes, {:.1} min (seed {}); history {}\n{}",
        cfg.servers,
        cfg.clients,
        cfg.workers,
        t0.elapsed().as_secs_f64() / 60.0,
        cfg.seed,
        cfg.dir.join("history.jsonl").display(),
        report.figures()
    );
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}

fn config(args: &[String]) -> Config {
    let mut cfg = Config::ci(std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/partition-long")));
    cfg.servers = 5;
    cfg.long_every = 100;
    cfg.window_max = Duration::from_secs(30);
    let mut minutes = 30.0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = || value.parse::<u64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {value}")));
        match flag.as_str() {
            "--minutes" => minutes = value.parse().unwrap_or_else(|_| usage("--minutes: not a number")),
            "--servers" => cfg.servers = num().clamp(3, 5) as usize,
            "--clients" => cfg.clients = num().clamp(2, 3) as usize,
            "--workers" => cfg.workers = num().clamp(1, 64) as usize,
            "--window" => cfg.window = Duration::from_secs(num().max(1)),
            "--window-max" => cfg.window_max = Duration::from_secs(num().max(1)),
            "--heal" => cfg.heal = Duration::from_secs(num().max(1)),
            "--long-every" => cfg.long_every = num().max(1),
            "--seed" => cfg.seed = num(),
            "--dir" => cfg.dir = value.into(),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    cfg.duration = Duration::from_secs_f64(minutes * 60.0);
    cfg.window_max = cfg.window_max.max(cfg.window);
    cfg
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}\nusage: partition [--minutes M] [--servers 3-5] [--clients 2-3] [--workers N] [--window S] [--window-max S] [--heal S] [--long-every N] [--seed N] [--dir D]");
    std::process::exit(2)
}
