//! Part `rwlock`: what a read-write lock costs. Requests are the library's own count
//! (`Client::request_count`), Raft writes the change of `applied_index`.
//!
//! - an uncontended read cycle and write cycle (`read`/`write` + `release`), on a shared `Session`
//!   and with a session per cycle;
//! - a writer handoff among readers: 4 reader tasks loop over read cycles (5 ms holds) while one
//!   writer takes the lock `handoffs / 4` times; handoff = the writer's enter − the later of its
//!   request and the latest reader exit before it; requests and Raft writes per write cycle (the writer's requests; every write
//!   of the run, readers' included, over the writer's cycles).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul_lock::{Client, RwLock, Session};

use crate::common::{client_for, ms, now_ns, pct, sorted, Config, Ctl};

struct Row {
    what: &'static str,
    n: usize,
    p50: f64,
    p99: f64,
    requests: f64,
    raft: f64,
}

async fn cycles(lock: &RwLock, write: bool, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if write {
            lock.write().await.expect("write").release().await.expect("release");
        } else {
            lock.read().await.expect("read").release().await.expect("release");
        }
        out.push(ms(t.elapsed()));
    }
    out
}

async fn uncontended(ctl: &Ctl, client: &Client, what: &'static str, lock: RwLock, write: bool, n: usize) -> Row {
    cycles(&lock, write, 5).await; // warm the connection and the key
    ctl.settle(1).await;
    let (r0, w0) = (client.request_count(), ctl.applied_index().await);
    let samples = sorted(cycles(&lock, write, n).await);
    ctl.settle(1).await;
    let (r1, w1) = (client.request_count(), ctl.applied_index().await);
    let per = |d: u64| d as f64 / n as f64;
    Row { what, n, p50: pct(&samples, 0.5), p99: pct(&samples, 0.99), requests: per(r1 - r0), raft: per(w1 - w0) }
}

/// Readers loop while one writer takes the lock `writes` times.
async fn handoff_among_readers(ctl: &Ctl, addr: &str, key: &str, writes: usize) -> Row {
    const READERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let last_exit = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..READERS {
        let lock = RwLock::new(key).client(client_for(addr)).acquire_timeout(Duration::from_secs(60));
        let (stop, last_exit) = (stop.clone(), last_exit.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let g = lock.read().await.expect("read");
                tokio::time::sleep(Duration::from_millis(5)).await;
                last_exit.fetch_max(now_ns(), Ordering::SeqCst);
                g.release().await.expect("release");
            }
        }));
    }
    let client = client_for(addr);
    let lock = RwLock::new(key).client(client.clone()).acquire_timeout(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (r0, w0) = (client.request_count(), ctl.applied_index().await);
    let mut samples = Vec::with_capacity(writes);
    for _ in 0..writes {
        let asked = now_ns();
        let g = lock.write().await.expect("write");
        let enter = now_ns();
        // From when the lock could be ours: the last reader's exit, or our request if none was in.
        let free = last_exit.load(Ordering::SeqCst).max(asked);
        samples.push((enter - free).max(0) as f64 / 1e6);
        tokio::time::sleep(Duration::from_millis(2)).await;
        g.release().await.expect("release");
        tokio::time::sleep(Duration::from_millis(10)).await; // let the readers in again
    }
    let (r1, w1) = (client.request_count(), ctl.applied_index().await);
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let samples = sorted(samples);
    let per = |d: u64| d as f64 / writes as f64;
    Row {
        what: "writer handoff among 4 readers",
        n: writes,
        p50: pct(&samples, 0.5),
        p99: pct(&samples, 0.99),
        requests: per(r1 - r0),
        raft: per(w1 - w0),
    }
}

pub(crate) async fn part_rwlock(cfg: &Config) {
    let ctl = Ctl::new(&cfg.addr);
    let n = cfg.n;
    let mut rows = Vec::new();
    let client = client_for(&cfg.addr);
    let session = Session::new(client.clone(), Duration::from_secs(15)).await.expect("session");
    eprintln!("rwlock: uncontended cycles ...");
    let key = format!("lockbench/rw/{}", std::process::id());
    rows.push(uncontended(&ctl, &client, "read cycle, shared Session", session.rw_lock(&key), false, n).await);
    rows.push(uncontended(&ctl, &client, "write cycle, shared Session", session.rw_lock(&key), true, n).await);
    let own = |c: &Client| RwLock::new(&key).client(c.clone()).lock_delay(Duration::ZERO);
    let c2 = client_for(&cfg.addr);
    rows.push(uncontended(&ctl, &c2, "read cycle, own session", own(&c2), false, n).await);
    rows.push(uncontended(&ctl, &c2, "write cycle, own session", own(&c2), true, n).await);
    session.destroy().await.expect("destroy");
    eprintln!("rwlock: writer handoff among readers ...");
    let writes = (cfg.handoffs as usize / 4).max(10);
    rows.push(handoff_among_readers(&ctl, &cfg.addr, &format!("{key}-handoff"), writes).await);
    ctl.delete_tree(&key).await;
    println!("## Read-write lock\n");
    println!("| what | n | p50 ms | p99 ms | requests / cycle | Raft writes / cycle |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |", r.what, r.n, r.p50, r.p99, r.requests, r.raft);
    }
    println!();
}
