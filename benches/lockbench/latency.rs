//! The `latency` part: uncontended acquire → release cycles of the library (async, shared `Session`,
//! blocking) next to the raw floors, interleaved in rounds, and the markdown table of the results.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consul_lock::{Client, EphemeralLock, Session};

use crate::common::{client_for, median, ms, pct, sorted, Config, Ctl, Raw, TTL};

// ------------------------------------------------------------------------------------------------
// (2) + (5) uncontended cycle
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Scenario {
    Floor4,
    Floor3,
    Floor2,
    LockDefault,
    LockDelay0,
    Shared,
    SharedFair,
    BlockingDefault,
    BlockingDelay0,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::Floor4,
        Scenario::LockDefault,
        Scenario::Floor3,
        Scenario::LockDelay0,
        Scenario::Floor2,
        Scenario::Shared,
        Scenario::SharedFair,
        Scenario::BlockingDefault,
        Scenario::BlockingDelay0,
    ];

    fn label(self) -> &'static str {
        match self {
            Scenario::Floor4 => "floor4 raw: create, txn lock, txn check-session+delete, destroy",
            Scenario::Floor3 => "floor3 raw: create (lock-delay 0), txn lock, destroy",
            Scenario::Floor2 => "floor2 raw, one session: txn lock, txn check-session+delete",
            Scenario::LockDefault => "**EphemeralLock**, own session, default lock-delay 15 s",
            Scenario::LockDelay0 => "**EphemeralLock**, own session, `lock_delay(0)`",
            Scenario::Shared => "**shared `Session`**: `session.lock(k).hold()` + `release()`",
            Scenario::SharedFair => "shared `Session`, `fair(true)` (queue entry: 3 writes)",
            Scenario::BlockingDefault => "`blocking::EphemeralLock`, default lock-delay",
            Scenario::BlockingDelay0 => "`blocking::EphemeralLock`, `lock_delay(0)`",
        }
    }

    /// The floor a library scenario is compared with.
    fn floor(self) -> Option<Scenario> {
        match self {
            Scenario::LockDefault | Scenario::BlockingDefault => Some(Scenario::Floor4),
            Scenario::LockDelay0 | Scenario::BlockingDelay0 => Some(Scenario::Floor3),
            Scenario::Shared => Some(Scenario::Floor2),
            // Three writes (queue entry, lock, release+dequeue): the three-write floor.
            Scenario::SharedFair => Some(Scenario::Floor3),
            _ => None,
        }
    }

    fn raw_requests(self) -> Option<f64> {
        match self {
            Scenario::Floor4 => Some(4.0),
            Scenario::Floor3 => Some(3.0),
            Scenario::Floor2 => Some(2.0),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Acc {
    p50: Vec<f64>,
    p99: Vec<f64>,
    mean: Vec<f64>,
    raft: Vec<f64>,
    reqs: Vec<f64>,
}

struct LatencyCtx {
    addr: String,
    ctl: Ctl,
    raw: Raw,
    client: Client,
    blocking: consul_lock::blocking::Client,
    session: Session,
    raw_session: String,
}

/// One round of `n` cycles of `sc`: (per-cycle ms, requests per cycle).
fn run_round(rt: &tokio::runtime::Runtime, cx: &LatencyCtx, sc: Scenario, n: usize) -> (Vec<f64>, f64) {
    let key = format!("bench/rust/latency/{sc:?}");
    let r0 = cx.client.request_count();
    let times = match sc {
        Scenario::BlockingDefault | Scenario::BlockingDelay0 => {
            let delay = if sc == Scenario::BlockingDelay0 { Duration::ZERO } else { Duration::from_secs(15) };
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let g = consul_lock::blocking::EphemeralLock::new(key.as_str())
                    .client(cx.blocking.clone())
                    .lock_delay(delay)
                    .hold()
                    .expect("blocking hold");
                g.release().expect("blocking release");
                v.push(ms(t.elapsed()));
            }
            v
        }
        _ => rt.block_on(async {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                match sc {
                    Scenario::Floor4 => {
                        let sid = cx.raw.create("15000ms", "15s").await;
                        cx.raw.lock(&key, &sid).await;
                        cx.raw.release(&key, &sid).await;
                        cx.raw.destroy(&sid).await;
                    }
                    Scenario::Floor3 => {
                        let sid = cx.raw.create("0s", "15s").await;
                        cx.raw.lock(&key, &sid).await;
                        cx.raw.destroy(&sid).await;
                    }
                    Scenario::Floor2 => {
                        cx.raw.lock(&key, &cx.raw_session).await;
                        cx.raw.release(&key, &cx.raw_session).await;
                    }
                    Scenario::LockDefault | Scenario::LockDelay0 => {
                        let delay = if sc == Scenario::LockDelay0 { Duration::ZERO } else { Duration::from_secs(15) };
                        let g = EphemeralLock::new(key.as_str())
                            .client(cx.client.clone())
                            .lock_delay(delay)
                            .hold()
                            .await
                            .expect("hold");
                        g.release().await.expect("release");
                    }
                    Scenario::Shared | Scenario::SharedFair => {
                        let fair = sc == Scenario::SharedFair;
                        let g = cx.session.lock(key.as_str()).fair(fair).hold().await.expect("shared hold");
                        g.release().await.expect("shared release");
                    }
                    Scenario::BlockingDefault | Scenario::BlockingDelay0 => unreachable!(),
                }
                v.push(ms(t.elapsed()));
            }
            v
        }),
    };
    let reqs = match sc.raw_requests() {
        Some(r) => r,
        None => (cx.client.request_count() - r0) as f64 / n as f64,
    };
    (times, reqs)
}

pub(crate) fn part_latency(rt: &tokio::runtime::Runtime, cfg: &Config) -> BTreeMap<Scenario, Acc> {
    let ctl = Ctl::new(&cfg.addr);
    let client = client_for(&cfg.addr);
    let raw = Raw::new(&cfg.addr);
    let (session, raw_session) = rt.block_on(async {
        ctl.destroy_all_sessions().await;
        ctl.delete_tree("bench/rust").await;
        let s = Session::new(client.clone(), TTL).await.expect("shared session");
        // Never renewed (a raw floor): a TTL longer than the whole part.
        let r = raw.create("15000ms", "86400s").await;
        (s, r)
    });
    let blocking = consul_lock::blocking::Client::new(client.clone()).expect("blocking client");
    let cx = LatencyCtx { addr: cfg.addr.clone(), ctl, raw, client, blocking, session, raw_session };
    let mut acc: BTreeMap<Scenario, Acc> = BTreeMap::new();
    // Warm-up: connections, code paths, the agent's caches.
    for sc in Scenario::ALL {
        run_round(rt, &cx, sc, 10.min(cfg.n));
    }
    rt.block_on(cx.ctl.settle(2));
    for round in 0..cfg.rounds {
        // Rotate the order each round so drift does not favour one scenario.
        let mut order = Scenario::ALL.to_vec();
        let len = order.len();
        order.rotate_left(round % len);
        for sc in order {
            let a0 = rt.block_on(cx.ctl.applied_index());
            let (times, reqs) = run_round(rt, &cx, sc, cfg.n);
            rt.block_on(cx.ctl.settle(2));
            let a1 = rt.block_on(cx.ctl.applied_index());
            let s = sorted(times);
            let e = acc.entry(sc).or_default();
            e.p50.push(pct(&s, 0.50));
            e.p99.push(pct(&s, 0.99));
            e.mean.push(s.iter().sum::<f64>() / s.len() as f64);
            e.raft.push((a1 - a0) as f64 / cfg.n as f64);
            e.reqs.push(reqs);
        }
        eprintln!("latency round {}/{} done", round + 1, cfg.rounds);
    }
    let LatencyCtx { ctl, raw, session, raw_session, addr, .. } = cx;
    rt.block_on(async {
        let _ = session.destroy().await;
        raw.destroy(&raw_session).await;
        ctl.settle(0).await;
    });
    let _ = addr;
    acc
}

pub(crate) fn print_latency(cfg: &Config, acc: &BTreeMap<Scenario, Acc>) {
    println!("## Uncontended cycle (acquire → release)\n");
    println!(
        "Median over {} rounds of {} cycles each (scenarios interleaved, order rotated per round); \
         p50/p99 are per round, then the median of those. Go `api.Lock` reference: 3.18 ms (README of \
         ../shared/peers/go), python-consul-lock 5.47 ms.\n",
        cfg.rounds, cfg.n
    );
    println!("| scenario | p50 ms | p99 ms | mean ms | Raft writes / cycle | HTTP requests / cycle | ÷ its floor (p50) | Go api.Lock 3.18 ms ÷ this |");
    println!("|---|---|---|---|---|---|---|---|");
    for sc in Scenario::ALL {
        let Some(a) = acc.get(&sc) else { continue };
        let p50 = median(&a.p50);
        let vs_floor = sc
            .floor()
            .and_then(|f| acc.get(&f))
            .map(|f| format!("{:.2}× ({})", p50 / median(&f.p50), format!("{:?}", sc.floor().unwrap()).to_lowercase()))
            .unwrap_or_else(|| "—".into());
        let vs_go = if sc.floor().is_some() { format!("{:.2}×", 3.18 / p50) } else { "—".into() };
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            sc.label(),
            p50,
            median(&a.p99),
            median(&a.mean),
            median(&a.raft),
            median(&a.reqs),
            vs_floor,
            vs_go
        );
    }
    let ratio = |a: Scenario, b: Scenario| -> String {
        match (acc.get(&a), acc.get(&b)) {
            (Some(x), Some(y)) => format!("{:.2}×", median(&x.p50) / median(&y.p50)),
            _ => "—".into(),
        }
    };
    println!(
        "\nBlocking API overhead (p50 blocking ÷ p50 async, same cycle): default lock-delay {}, lock-delay 0 {}.\n",
        ratio(Scenario::BlockingDefault, Scenario::LockDefault),
        ratio(Scenario::BlockingDelay0, Scenario::LockDelay0)
    );
}
