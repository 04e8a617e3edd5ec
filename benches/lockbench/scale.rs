//! The `scale` part: many keys held at once through one shared `Session` (time to acquire and release
//! all, requests and Raft writes, memory per held lock, idle request rate), printed as a markdown table.

use std::time::{Duration, Instant};

use consul_lock::Session;

use crate::common::{client_for, vm_rss_kib, Config, Ctl, TTL};

// ------------------------------------------------------------------------------------------------
// (4) scale: many keys held at once through one Session
// ------------------------------------------------------------------------------------------------

pub(crate) async fn part_scale(cfg: &Config) {
    let ctl = Ctl::new(&cfg.addr);
    ctl.destroy_all_sessions().await;
    ctl.delete_tree("bench/rust/scale").await;
    let client = client_for(&cfg.addr);
    let session = Session::new(client.clone(), TTL).await.expect("session");
    // Warm the code paths and the connection pool before the baseline.
    for i in 0..cfg.scale_concurrency {
        let g = session.lock(format!("bench/rust/scale/warm/{i}")).hold().await.expect("warm hold");
        g.release().await.expect("warm release");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = vm_rss_kib();
    let r0 = client.request_count();
    let a0 = ctl.applied_index().await;
    let t = Instant::now();
    let keys = cfg.scale_keys;
    let conc = cfg.scale_concurrency.max(1);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut guards = Vec::new();
            for i in (w..keys).step_by(conc) {
                guards.push(s.lock(format!("bench/rust/scale/k/{i}")).hold().await.expect("scale hold"));
            }
            guards
        }));
    }
    let mut guards = Vec::with_capacity(keys);
    for t in tasks {
        guards.extend(t.await.expect("scale task"));
    }
    let acquire_all = t.elapsed();
    let r1 = client.request_count();
    let a1 = ctl.applied_index().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss1 = vm_rss_kib();
    // Idle: only renewals should be sent (one per session, every TTL/2).
    let idle = Duration::from_secs(cfg.idle_secs);
    let ri0 = client.request_count();
    let ai0 = ctl.applied_index().await;
    tokio::time::sleep(idle).await;
    let ri1 = client.request_count();
    let ai1 = ctl.applied_index().await;
    let held = guards.iter().filter(|g| g.is_held()).count();
    let t = Instant::now();
    let mut tasks = Vec::new();
    let mut chunks: Vec<Vec<consul_lock::LockGuard>> = (0..conc).map(|_| Vec::new()).collect();
    for (i, g) in guards.into_iter().enumerate() {
        chunks[i % conc].push(g);
    }
    for chunk in chunks {
        tasks.push(tokio::spawn(async move {
            for g in chunk {
                g.release().await.expect("scale release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("release task");
    }
    let release_all = t.elapsed();
    let r2 = client.request_count();
    let _ = session.destroy().await;
    ctl.settle(0).await;
    println!("## Scale: {keys} keys held at once through one shared `Session`\n");
    println!("{conc} tasks acquire (then release) the keys concurrently through one `Client` and one `Session`.\n");
    println!("| figure | value |\n|---|---|");
    println!("| keys held at once (all `is_held()` after the idle window) | {held} / {keys} |");
    println!(
        "| time to acquire all | {:.2} s ({:.0} locks/s) |",
        acquire_all.as_secs_f64(),
        keys as f64 / acquire_all.as_secs_f64()
    );
    println!("| requests / Raft writes to acquire all | {} / {} |", r1 - r0, a1 - a0);
    println!(
        "| memory per held lock (VmRSS delta ÷ keys) | {:.2} KiB ({} KiB in all) |",
        (rss1.saturating_sub(rss0)) as f64 / keys as f64,
        rss1.saturating_sub(rss0)
    );
    println!(
        "| requests / s while idle, {} s window (all keys held) | {:.2} ({} requests, {} Raft writes) |",
        cfg.idle_secs,
        (ri1 - ri0) as f64 / idle.as_secs_f64(),
        ri1 - ri0,
        ai1 - ai0
    );
    println!(
        "| time to release all | {:.2} s ({:.0} locks/s, {} requests) |",
        release_all.as_secs_f64(),
        keys as f64 / release_all.as_secs_f64(),
        r2 - ri1
    );
    println!();
}
