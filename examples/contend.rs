//! One of the demo's contenders: takes the lock a few times, holds it a moment, and says so.
//! Run two at once (scripts/demo.sh does) to watch them take turns.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example contend -- alice 3
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, EphemeralLock};

fn now() -> String {
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("{}.{:06}", (us / 1_000_000) % 100_000, us % 1_000_000)
}

#[tokio::main]
async fn main() -> Result<(), consul_lock::Error> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| format!("pid {}", std::process::id()));
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let client = Client::from_env()?;
    let key = "demo/contended";

    for round in 1..=rounds {
        if let Some(h) = client.holder(key).await? {
            let who = h.info.and_then(|i| i.session_name).unwrap_or(h.session_id);
            println!("[{}] {name:>6}: waiting, held by {who}", now());
        }
        let guard = EphemeralLock::new(key)
            .client(client.clone())
            .session_name(name.clone())
            .acquire_timeout(Duration::from_secs(30))
            .hold()
            .await?;
        println!("[{}] {name:>6}: ACQUIRED  round {round}, fencing token {}", now(), guard.fencing_token());
        tokio::time::sleep(Duration::from_millis(700)).await;
        println!("[{}] {name:>6}: releasing", now());
        guard.release().await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}
