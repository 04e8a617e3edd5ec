//! One of the demo's contenders: takes the lock a few times, holds it a moment, and says so, each
//! line stamped with the time since the demo started (`+0.703s alice: ACQUIRED …`). Run two at
//! once (scripts/demo.sh does) to watch them take turns.
//!
//! The start is `CONSUL_LOCK_DEMO_START` (Unix time in seconds, as `date +%s.%N` prints it), so
//! that contenders started by one demo share it; without it, this process's own start.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example contend -- alice 3
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, EphemeralLock};

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// When the demo started: `CONSUL_LOCK_DEMO_START`, else now.
fn demo_start() -> f64 {
    std::env::var("CONSUL_LOCK_DEMO_START").ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(unix_now)
}

/// `+S.mmms`: the time since `start`.
fn since(start: f64) -> String {
    format!("+{:.3}s", (unix_now() - start).max(0.0))
}

#[tokio::main]
async fn main() -> Result<(), consul_lock::Error> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| format!("pid {}", std::process::id()));
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let client = Client::from_env()?;
    let key = "demo/contended";
    let start = demo_start();

    for round in 1..=rounds {
        if let Some(h) = client.holder(key).await? {
            let who = h.info.and_then(|i| i.session_name).unwrap_or(h.session_id);
            println!("{} {name:>6}: waiting, held by {who}", since(start));
        }
        let guard = EphemeralLock::new(key)
            .client(client.clone())
            .session_name(name.clone())
            .acquire_timeout(Duration::from_secs(30))
            .hold()
            .await?;
        println!("{} {name:>6}: ACQUIRED  round {round}, fencing token {}", since(start), guard.fencing_token());
        tokio::time::sleep(Duration::from_millis(700)).await;
        println!("{} {name:>6}: releasing", since(start));
        guard.release().await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}
