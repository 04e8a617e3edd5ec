//! Take a lock, do the work, release it.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example hold -- my/key
//! ```

use std::time::Duration;

use consul_lock::EphemeralLock;

#[tokio::main]
async fn main() -> Result<(), consul_lock::Error> {
    let key = std::env::args().nth(1).unwrap_or_else(|| "examples/hold".to_owned());

    // Client from CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN; wait up to 10 s if someone else holds it.
    let guard = EphemeralLock::new(key).acquire_timeout(Duration::from_secs(10)).hold().await?;
    println!("holding {} (session {}, fencing token {})", guard.key(), guard.session_id(), guard.fencing_token());

    // The critical section. A long one should watch for loss: see `fencing.rs` and `LockGuard::lost`.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Release explicitly: a guard dropped as `main` returns may not get to run its background release
    // before the runtime shuts down (the key would then stay held until the session TTL expires).
    guard.release().await?;
    println!("released");
    Ok(())
}
