//! Part `multi`: a multi-lock cycle (`MultiLock` of n keys, hold → release, on a shared `Session`)
//! beside taking the same n keys one by one with `EphemeralLock` on the same session, for n = 2, 8,
//! 32; and a guarded put (`LockGuard::put`: one transaction with the `check-session`) beside a plain
//! `PUT /v1/kv`. Latency p50 / p99, requests and Raft writes per operation.

use std::time::Duration;

use consul_lock::Session;
use tokio::time::Instant;

use crate::common::{client_for, ms, pct, sorted, Config, Ctl, TTL};

struct Row {
    what: String,
    lat: Vec<f64>,
    requests: f64,
    writes: f64,
}

impl Row {
    fn print(&self) {
        let l = sorted(self.lat.clone());
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.what,
            pct(&l, 0.5),
            pct(&l, 0.99),
            self.requests,
            self.writes
        );
    }
}

/// Run `op` `n` times; latency of each, requests (of `client`) and Raft writes per op.
async fn measure<F, Fut>(ctl: &Ctl, client: &consul_lock::Client, what: String, n: usize, mut op: F) -> Row
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    ctl.settle(1).await;
    let (r0, a0) = (client.request_count(), ctl.applied_index().await);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(i).await;
        lat.push(ms(t.elapsed()));
    }
    let (r1, a1) = (client.request_count(), ctl.applied_index().await);
    Row { what, lat, requests: (r1 - r0) as f64 / n as f64, writes: (a1 - a0) as f64 / n as f64 }
}

pub(crate) async fn part_multi(cfg: &Config) {
    let ctl = Ctl::new(&cfg.addr);
    ctl.destroy_all_sessions().await;
    ctl.delete_tree("bench/rust/multi").await;
    let client = client_for(&cfg.addr);
    let session = Session::with_lock_delay(client.clone(), TTL, Duration::ZERO).await.expect("session");
    let n = cfg.n;
    println!("## Multi-lock and guarded writes (dev agent)\n");
    println!("{n} operations per row, one at a time, all through one shared `Session`; requests are the library client's, Raft writes the change of the agent's applied index, both per operation.\n");
    println!("| operation | p50 ms | p99 ms | requests | Raft writes |");
    println!("|---|---|---|---|---|");
    for keys in [2usize, 8, 32] {
        let names: Vec<String> = (0..keys).map(|i| format!("bench/rust/multi/{keys}/k{i}")).collect();
        eprintln!("multi n={keys} ...");
        let s = &session;
        let set = measure(&ctl, &client, format!("`MultiLock` of {keys} keys: hold → release"), n, |_| async {
            let g = s.multi_lock(&names).hold().await.expect("multi hold");
            g.release().await.expect("multi release");
        })
        .await;
        let one_by_one =
            measure(&ctl, &client, format!("{keys} × `EphemeralLock`: hold each → release each"), n, |_| async {
                let mut guards = Vec::with_capacity(keys);
                for k in &names {
                    guards.push(s.lock(k.clone()).hold().await.expect("lock hold"));
                }
                for g in guards {
                    g.release().await.expect("lock release");
                }
            })
            .await;
        set.print();
        one_by_one.print();
    }
    eprintln!("guarded put ...");
    let guard = session.lock("bench/rust/multi/guard").hold().await.expect("guard");
    let raw = Ctl::new(&cfg.addr);
    let (mut guarded, mut plain) = (Vec::new(), Vec::new());
    let rounds = 5;
    let (mut gr, mut gw, mut pw) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let g = measure(&ctl, &client, String::new(), n / rounds, |i| {
            let guard = &guard;
            async move { guard.put(format!("bench/rust/multi/data/{}", i % 16), "v").await.expect("guarded put") }
        })
        .await;
        let p = measure(&ctl, &client, String::new(), n / rounds, |i| {
            let raw = &raw;
            async move { raw.put(&format!("bench/rust/multi/data/{}", i % 16), "v").await }
        })
        .await;
        guarded.extend(g.lat);
        plain.extend(p.lat);
        gr += g.requests / rounds as f64;
        gw += g.writes / rounds as f64;
        pw += p.writes / rounds as f64;
    }
    Row { what: "guarded `put` (`check-session` + `set`, one txn)".into(), lat: guarded, requests: gr, writes: gw }
        .print();
    Row { what: "plain `PUT /v1/kv` (raw, keep-alive)".into(), lat: plain, requests: 1.0, writes: pw }.print();
    println!();
    guard.release().await.expect("release");
    session.destroy().await.expect("destroy");
    ctl.delete_tree("bench/rust/multi").await;
}
