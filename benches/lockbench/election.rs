//! Part `election`: leader election figures — failover after `resign()` (from the call to the next
//! `campaign()` returning), requests per handoff with N candidates waiting (each campaign with its
//! own session, or each candidate through one shared `Session`), and observe latency (from the start
//! of a `proclaim()` to an observer's `next()` returning it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::{Client, Election, Session};
use tokio::time::Instant;

use crate::common::{client_for, ms, pct, sorted, Config, Ctl, TTL};

/// Where the candidates' campaigns get their session.
#[derive(Clone, Copy)]
enum Sessions {
    /// `Election::campaign` as is: a session per campaign, destroyed by the resignation.
    PerCampaign,
    /// One shared `Session` per candidate, created once and campaigned through every time.
    PerCandidate,
}

impl Sessions {
    fn label(self) -> &'static str {
        match self {
            Sessions::PerCampaign => "own per campaign",
            Sessions::PerCandidate => "shared `Session` per candidate",
        }
    }

    /// The election a candidate campaigns in, on `key` through `client`.
    async fn election(self, key: &str, client: &Client) -> Election {
        match self {
            // Zero lock-delay: resign is then one write (destroying the session deletes the key).
            Sessions::PerCampaign => Election::new(key).client(client.clone()).ttl(TTL).lock_delay(Duration::ZERO),
            Sessions::PerCandidate => {
                let session = Session::with_lock_delay(client.clone(), TTL, Duration::ZERO).await.expect("session");
                session.election(key)
            }
        }
    }
}

/// One failover run: `n` candidates on one key hand over `handoffs` times by resigning.
struct Failover {
    n: usize,
    sessions: Sessions,
    gaps_ms: Vec<f64>,
    steady_requests_per_handoff: f64,
}

/// When a leader was elected, and when it called `resign()`.
type Mark = (Instant, Option<Instant>);

async fn failover(addr: &str, n: usize, handoffs: u64, sessions: Sessions) -> Failover {
    let key = format!("bench/rust/election/failover-{n}");
    let ctl = Ctl::new(addr);
    ctl.delete_tree(&key).await;
    let client: Client = client_for(addr);
    let elections = Arc::new(AtomicU64::new(0));
    // (elected at, resign called at), by election number.
    let marks: Arc<Mutex<Vec<Mark>>> = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let (from, to) = ((n as u64 + 1).min(handoffs / 2).max(1), handoffs + 1);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (key, elections, marks, counts, client) =
            (key.clone(), elections.clone(), marks.clone(), counts.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let election = sessions.election(&key, &client).await;
            loop {
                let l = match election.campaign(format!("c{i}").into_bytes()).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("candidate {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let elected = Instant::now();
                let nth = elections.fetch_add(1, Ordering::SeqCst) + 1;
                marks.lock().unwrap().push((elected, None));
                if nth == from {
                    counts.lock().unwrap().0 = client.request_count();
                }
                if nth == to {
                    counts.lock().unwrap().1 = client.request_count();
                }
                if nth > to {
                    let _ = l.resign().await;
                    return;
                }
                let resign_at = Instant::now();
                // Ours is the last mark: nobody else is elected while we lead.
                if let Some(m) = marks.lock().unwrap().last_mut() {
                    m.1 = Some(resign_at);
                }
                if let Err(e) = l.resign().await {
                    eprintln!("candidate {i}: resign: {e}");
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while elections.load(Ordering::SeqCst) <= to && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort(); // cancel-safe: the waiting campaigns leave nothing behind
    }
    for t in tasks {
        let _ = t.await;
    }
    let marks = marks.lock().unwrap().clone();
    let gaps_ms = marks.windows(2).filter_map(|w| w[0].1.map(|r| ms(w[1].0.saturating_duration_since(r)))).collect();
    let (a, b) = *counts.lock().unwrap();
    ctl.settle(0).await;
    ctl.delete_tree(&key).await;
    Failover { n, sessions, gaps_ms, steady_requests_per_handoff: b.saturating_sub(a) as f64 / (to - from) as f64 }
}

/// Observe latency: `samples` proclaims, each awaited by the observer before the next.
async fn observe_latency(addr: &str, samples: usize) -> (Vec<f64>, Vec<f64>) {
    let key = "bench/rust/election/observe";
    let election = Election::new(key).client(client_for(addr)).ttl(TTL);
    let leadership = election.campaign(b"v0".to_vec()).await.expect("campaign");
    let mut watch = Election::new(key).client(client_for(addr)).observe();
    watch.next().await.expect("first state");
    let (mut seen, mut writes) = (Vec::new(), Vec::new());
    for i in 1..=samples {
        let value = format!("v{i}").into_bytes();
        let t0 = Instant::now();
        let (w, s) = tokio::join!(
            async {
                leadership.proclaim(value.clone()).await.expect("proclaim");
                t0.elapsed()
            },
            async {
                loop {
                    match watch.next().await {
                        Ok(Some(l)) if l.value == value => return t0.elapsed(),
                        Ok(_) => {}
                        Err(e) => eprintln!("observer: {e}"),
                    }
                }
            }
        );
        writes.push(ms(w));
        seen.push(ms(s));
    }
    leadership.resign().await.expect("resign");
    (sorted(seen), sorted(writes))
}

fn row(p: &[f64]) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2}",
        pct(p, 0.5),
        pct(p, 0.9),
        pct(p, 0.99),
        p.last().copied().unwrap_or(f64::NAN)
    )
}

pub(crate) async fn part_election(cfg: &Config) {
    println!("## Election\n");
    println!("Failover after `resign()`: from the call to the next `campaign()` returning; {} handoffs per run, lock-delay 0, candidates as tasks of one process on one client; each campaign with its own session, or each candidate through one shared `Session` created once. Requests per handoff: every request of every candidate (resign, re-campaign, the successor's wake-up and lock) over whole handoffs after the start-up.\n", cfg.handoffs);
    println!("| candidates | sessions | failover p50 / p90 / p99 / max ms | req / handoff (steady) |");
    println!("|---|---|---|---|");
    for sessions in [Sessions::PerCampaign, Sessions::PerCandidate] {
        for n in [2, 4, 8, 16] {
            eprintln!("election failover n={n} sessions: {} ...", sessions.label());
            let r = failover(&cfg.addr, n, cfg.handoffs, sessions).await;
            let g = sorted(r.gaps_ms);
            println!("| {} | {} | {} | {:.2} |", r.n, r.sessions.label(), row(&g), r.steady_requests_per_handoff);
        }
    }
    eprintln!("election observe ...");
    let (seen, writes) = observe_latency(&cfg.addr, cfg.n).await;
    println!("\nObserve latency, {} proclaims: from the start of `proclaim()` to the observer's `next()` returning the value (the proclaim itself, its write round trip, on the second line).\n", cfg.n);
    println!("| measure | p50 / p90 / p99 / max ms |");
    println!("|---|---|");
    println!("| proclaim → observer's next() | {} |", row(&seen));
    println!("| proclaim() returning | {} |\n", row(&writes));
}
