//! The blocking API: no async runtime needed.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example blocking
//! ```

use std::time::Duration;

use consul_lock::blocking::EphemeralLock;

fn main() -> Result<(), consul_lock::Error> {
    let guard = EphemeralLock::new("examples/blocking").acquire_timeout(Duration::from_secs(10)).hold()?;
    println!("holding {} with fencing token {}", guard.key(), guard.fencing_token());
    std::thread::sleep(Duration::from_millis(300));
    if !guard.is_held() {
        eprintln!("lost the lock while working: stop and do not commit the work");
    }
    guard.release()?;
    println!("released");
    Ok(())
}
