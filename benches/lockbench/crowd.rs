//! Part `crowd`: waiters by the thousand in one process and by the hundred on one host, against
//! the agent's cap of connections per client address (200 by default).
//!
//! - one process, one `Client`: `LOCKBENCH_CROWD_SAME` tasks wait on one held key and
//!   `LOCKBENCH_CROWD_OWN` on keys of their own (held, then released all at once), while the
//!   process holds two other locks throughout: who acquired, whether a held lock was lost, peak
//!   connections to the agent (from /proc), wake-up latency (release → acquire), memory per waiter;
//! - one host: `LOCKBENCH_CROWD_PROCS` × `consul-lock run -w 300 K -- true` behind one
//!   `consul-lock run K -- sleep 15`, then the same crowd of HashiCorp's `consul lock`: the
//!   holder's exit code, how many waiters ran, peak connections;
//! - `LOCKBENCH_CROWD_KEYS` tasks on keys of their own through one shared `Session`: all get their
//!   key; the connections used.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::{Client, EphemeralLock, Session};
use tokio::time::Instant;

use crate::common::{client_for, ms, pct, sorted, vm_rss_kib};

#[path = "../../tests/support/sockets.rs"]
mod sockets;

const OURS: &str = env!("CARGO_BIN_EXE_consul-lock");

fn size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The most ESTABLISHED connections to `port`, sampled every 20 ms until `stop` is set.
fn sample_peak(port: u16) -> (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        let mut most = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(sockets::to_port(port));
            std::thread::sleep(Duration::from_millis(20));
        }
        most
    });
    (stop, t)
}

fn lock(c: &Client, key: &str, wait: Duration) -> EphemeralLock {
    EphemeralLock::new(key).client(c.clone()).lock_delay(Duration::ZERO).acquire_timeout(wait)
}

pub(crate) async fn part_crowd(addr: &str) {
    let port = sockets::port_of(addr);
    println!("## Crowds (agent cap: limits.http_max_conns_per_client = 200, the default)\n");
    in_process(addr, port).await;
    many_keys(addr, port).await;
    on_host(addr, port).await;
}

/// One process, one Client: SAME waiters on one held key, OWN on keys of their own.
async fn in_process(addr: &str, port: u16) {
    let (same, own) = (size("LOCKBENCH_CROWD_SAME", 1000), size("LOCKBENCH_CROWD_OWN", 1000));
    if same + own == 0 {
        return;
    }
    eprintln!("crowd: {same} + {own} waiters in one process ...");
    let client = client_for(addr);
    let a = lock(&client, "crowd/a", Duration::ZERO).hold().await.expect("hold a");
    let b = lock(&client, "crowd/b", Duration::ZERO).hold().await.expect("hold b");
    let shared = lock(&client, "crowd/same", Duration::ZERO).hold().await.expect("hold the crowded key");
    let session = Session::new(client.clone(), Duration::from_secs(15)).await.expect("session");
    let mut owned = Vec::new();
    for i in 0..own {
        owned.push(session.lock(format!("crowd/own/{i}")).acquire_timeout(Duration::ZERO).hold().await.expect("own"));
    }
    let (stop, peak) = sample_peak(port);
    let rss0 = vm_rss_kib();
    let released: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let woke: Arc<Mutex<Vec<f64>>> = Arc::default();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..same + own {
        let key = if i < same { "crowd/same".to_owned() } else { format!("crowd/own/{}", i - same) };
        let l = lock(&client, &key, Duration::from_secs(900));
        let (released, woke) = (released.clone(), woke.clone());
        tasks.spawn(async move {
            let g = l.hold().await?;
            let at = Instant::now();
            if let Some(r) = released.lock().unwrap().get(&key) {
                woke.lock().unwrap().push(ms(at - *r));
            }
            if key == "crowd/same" {
                released.lock().unwrap().insert(key, Instant::now());
            }
            g.release().await
        });
    }
    // Everyone waits: memory, then let them go.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss1 = vm_rss_kib();
    let queued = t0.elapsed();
    released.lock().unwrap().insert("crowd/same".into(), Instant::now());
    shared.release().await.expect("release");
    for g in owned {
        let key = g.key().to_owned();
        released.lock().unwrap().insert(key, Instant::now());
        g.release().await.expect("release own");
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) => ok += 1,
            Err(e) => failed.push(e.to_string()),
        }
    }
    let all_done = t0.elapsed() - queued;
    let held = a.is_held() && b.is_held();
    let _ = a.release().await;
    let _ = b.release().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().unwrap_or(0);
    let w = sorted(woke.lock().unwrap().clone());
    println!(
        "### One process, one Client (budget {}): {same} waiters on a held key + {own} on keys of their own\n",
        client.max_connections()
    );
    println!("| acquired | failed | two held locks kept | peak connections | wake-up p50 / p99 ms | all served in | memory per waiter | connection resets |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {ok}/{} | {} | {} | {peak} | {:.0} / {:.0} | {:.1} s | {:.1} KiB | {} |\n",
        same + own,
        failed.len(),
        if held { "yes" } else { "**no**" },
        pct(&w, 0.5),
        pct(&w, 0.99),
        all_done.as_secs_f64(),
        (rss1.saturating_sub(rss0)) as f64 / (same + own) as f64,
        client.connection_resets()
    );
    if let Some(e) = failed.first() {
        println!("first failure: {e}\n");
    }
}

/// KEYS tasks on keys of their own through one shared Session.
async fn many_keys(addr: &str, port: u16) {
    let keys = size("LOCKBENCH_CROWD_KEYS", 10_000);
    if keys == 0 {
        return;
    }
    eprintln!("crowd: {keys} tasks on their own keys ...");
    let client = client_for(addr);
    let holder = Session::new(client.clone(), Duration::from_secs(30)).await.expect("session");
    let mut held = Vec::new();
    for i in 0..keys {
        held.push(holder.lock(format!("crowd/k/{i}")).acquire_timeout(Duration::ZERO).hold().await.expect("hold"));
    }
    let waiting = Session::new(client.clone(), Duration::from_secs(30)).await.expect("session");
    let (stop, peak) = sample_peak(port);
    let r0 = client.request_count();
    let mut tasks: tokio::task::JoinSet<consul_lock::Result<Instant>> = tokio::task::JoinSet::new();
    for i in 0..keys {
        let l = waiting.lock(format!("crowd/k/{i}")).acquire_timeout(Duration::from_secs(1800));
        tasks.spawn(async move {
            let g = l.hold().await?;
            let at = Instant::now();
            g.release().await?;
            consul_lock::Result::Ok(at)
        });
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r_wait = client.request_count();
    let t0 = Instant::now();
    for g in held {
        g.release().await.expect("release");
    }
    let mut ok = 0;
    let mut lat = Vec::new();
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(at)) => {
                ok += 1;
                lat.push(ms(at.saturating_duration_since(t0)));
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e.to_string())),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    if let Some(e) = first_error {
        eprintln!("many keys: first failure: {e}");
    }
    let r1 = client.request_count();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().unwrap_or(0);
    let lat = sorted(lat);
    println!(
        "### {keys} tasks waiting on keys of their own (one Client, budget {}, one shared Session)\n",
        client.max_connections()
    );
    println!("| got their key | peak connections | requests/s while waiting | after the releases began: p50 / p99 / last s | requests in all |");
    println!("|---|---|---|---|---|");
    println!(
        "| {ok}/{keys} | {peak} | {:.0} | {:.1} / {:.1} / {:.1} | {} |\n",
        (r_wait - r0) as f64 / 10.0,
        pct(&lat, 0.5) / 1e3,
        pct(&lat, 0.99) / 1e3,
        lat.last().copied().unwrap_or(f64::NAN) / 1e3,
        r1 - r0
    );
}

fn consul_bin() -> String {
    std::env::var("CONSUL_BIN").unwrap_or_else(|_| {
        consul_lock::testing::find_binary().map(|p| p.display().to_string()).unwrap_or_else(|_| "consul".into())
    })
}

fn spawn(addr: &str, prog: &str, args: &[&str]) -> Child {
    Command::new(prog)
        .args(args)
        .env("CONSUL_HTTP_ADDR", format!("http://{addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

/// PROCS waiting processes behind one holder: ours, then HashiCorp's `consul lock`.
async fn on_host(addr: &str, port: u16) {
    let procs = size("LOCKBENCH_CROWD_PROCS", 300);
    if procs == 0 {
        return;
    }
    println!("### One host: {procs} waiting processes behind one holder (`sleep 15`)\n");
    println!("| tool | holder exit | waiters that ran | peak connections | all done in |");
    println!("|---|---|---|---|---|");
    let consul = consul_bin();
    for tool in ["consul-lock run -w 300", "consul lock -timeout=300s"] {
        eprintln!("crowd: {procs} × {tool} ...");
        let ours = tool.starts_with("consul-lock");
        let key = if ours { "crowd/host-ours" } else { "crowd/host-go" };
        let run = |child: &[&str], wait: bool| -> Child {
            if ours {
                let mut a = vec!["run", "-q"];
                if wait {
                    a.extend(["-w", "300"]);
                }
                a.push(key);
                a.push("--");
                a.extend(child);
                spawn(addr, OURS, &a)
            } else {
                let mut a = vec!["lock"];
                if wait {
                    a.push("-timeout=300s");
                }
                a.push(key);
                a.extend(child);
                spawn(addr, &consul, &a)
            }
        };
        let (stop, peak) = sample_peak(port);
        let t0 = std::time::Instant::now();
        let mut holder = run(&["sleep", "15"], false);
        std::thread::sleep(Duration::from_secs(2));
        let mut waiters: Vec<Child> = (0..procs).map(|_| run(&["true"], true)).collect();
        let code = holder.wait().ok().and_then(|s| s.code());
        let ran = waiters.iter_mut().map(|w| w.wait().ok().and_then(|s| s.code())).filter(|c| *c == Some(0)).count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = peak.join().unwrap_or(0);
        println!(
            "| `{tool}` | {} | {ran}/{procs} | {peak} | {:.1} s |",
            code.map_or("killed".to_owned(), |c| c.to_string()),
            t0.elapsed().as_secs_f64()
        );
    }
    println!();
}
