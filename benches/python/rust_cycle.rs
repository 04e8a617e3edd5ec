//! The Rust crate's own uncontended cycle, for `benches/python/bench.py`: the same scenarios as the
//! Python bench drives through the binding, run by the crate directly (async, a tokio multi-thread
//! runtime with 2 workers, as the binding's), so that the two are compared in one run on one agent.
//!
//! Built as an example of the binding's crate (`cargo build --release -p consul-lock-python
//! --example rust_cycle`), it reuses the dependencies the release wheel's build compiled. It reads
//! commands from stdin, one per line, and answers each with one JSON line on stdout:
//!
//! ```text
//! default 200   ->  {"ms":[...],"requests":4.00}
//! ```
//!
//! Scenarios (each cycle: acquire, then release): `default` (`EphemeralLock`, own session, default
//! lock-delay 15 s), `delay0` (the same with `lock_delay(0)`), `seed` (what `consul_lock.EphemeralLock`
//! asks of the crate: `lock_delay(0)`, one attempt (`acquire_timeout(0)`), `max_hold(180 s)`),
//! `shared` (`session.lock(key)` on one shared `Session`). `requests` is `Client::request_count()`
//! over the timed cycles divided by their number, read after the background session destroys landed;
//! each batch starts with 5 untimed cycles (`shared`: on a session made for the batch).
//!
//! Usage: `rust_cycle http://127.0.0.1:8500` (then commands on stdin; `quit` or end of input ends).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use consul_lock::{Client, EphemeralLock, Session};

/// After the warm-up and after the timed cycles: background session destroys land before counting.
const SETTLE: Duration = Duration::from_millis(200);

fn lock(client: &Client, scenario: &str) -> Option<EphemeralLock> {
    let key = format!("bench/py/rust/{scenario}");
    let l = EphemeralLock::new(key).client(client.clone()).ttl(Duration::from_secs(15));
    Some(match scenario {
        "default" => l.lock_delay(Duration::from_secs(15)),
        "delay0" => l.lock_delay(Duration::ZERO),
        "seed" => l.lock_delay(Duration::ZERO).acquire_timeout(Duration::ZERO).max_hold(Duration::from_secs(180)),
        _ => return None,
    })
}

async fn cycles(client: &Client, session: Option<&Session>, scenario: &str, n: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match session {
            Some(s) => {
                let g = s.lock("bench/py/rust/shared").hold().await.map_err(|e| e.to_string())?;
                g.release().await.map_err(|e| e.to_string())?;
            }
            None => {
                let l = lock(client, scenario).ok_or_else(|| format!("unknown scenario {scenario:?}"))?;
                let g = l.hold().await.map_err(|e| e.to_string())?;
                g.release().await.map_err(|e| e.to_string())?;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// One batch: (`shared`: a fresh session first, destroyed after the count) a short warm-up, `n`
/// timed cycles, then requests per cycle once the background destroys landed.
async fn batch(client: &Client, scenario: &str, n: usize) -> Result<(Vec<f64>, f64), String> {
    let session = match scenario {
        // A session per batch, as the Python bench does (the peer benchmark between two batches
        // destroys every session on the agent).
        "shared" => Some(
            Session::with_lock_delay(client.clone(), Duration::from_secs(15), Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    cycles(client, session.as_ref(), scenario, 5).await?;
    tokio::time::sleep(SETTLE).await;
    let r0 = client.request_count();
    let ms = cycles(client, session.as_ref(), scenario, n).await?;
    tokio::time::sleep(SETTLE).await;
    let requests = (client.request_count() - r0) as f64 / ms.len().max(1) as f64;
    if let Some(s) = session {
        s.destroy().await.map_err(|e| e.to_string())?;
    }
    Ok((ms, requests))
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8500".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let client = Client::builder().address(addr).build().expect("client");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let (Some(scenario), n) = (words.next(), words.next().and_then(|n| n.parse::<usize>().ok())) else {
            continue;
        };
        if scenario == "quit" {
            break;
        }
        let n = n.unwrap_or(100);
        let answer = rt.block_on(batch(&client, scenario, n));
        let json = match answer {
            Ok((ms, requests)) => {
                let list: Vec<String> = ms.iter().map(|v| format!("{v:.4}")).collect();
                format!("{{\"ms\":[{}],\"requests\":{requests:.3}}}", list.join(","))
            }
            Err(e) => format!("{{\"error\":{:?}}}", e),
        };
        if writeln!(stdout, "{json}").and_then(|()| stdout.flush()).is_err() {
            break;
        }
    }
}
