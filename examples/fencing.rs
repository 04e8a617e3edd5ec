//! Fencing tokens: the storage remembers the highest token it has seen and rejects writes with a
//! lower one, so a holder that lost its lock (paused, partitioned) cannot overwrite newer data.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example fencing
//! ```

use std::sync::Mutex;
use std::time::Duration;

use consul_lock::EphemeralLock;

/// A stand-in for a database row or object store that checks fencing tokens on write.
#[derive(Default)]
struct FencedStore {
    highest_token: Mutex<u64>,
    value: Mutex<String>,
}

impl FencedStore {
    fn write(&self, token: u64, value: &str) -> Result<(), String> {
        let mut highest = self.highest_token.lock().unwrap();
        if token < *highest {
            return Err(format!("rejected: token {token} is older than {highest}"));
        }
        *highest = token;
        *self.value.lock().unwrap() = value.to_owned();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), consul_lock::Error> {
    let store = FencedStore::default();
    let key = "examples/fencing";

    let first = EphemeralLock::new(key).lock_delay(Duration::ZERO).hold().await?;
    let stale_token = first.fencing_token();
    println!("writer A holds the lock with token {stale_token}");
    store.write(stale_token, "A was here").map_err(consul_lock::Error::InvalidConfig)?;
    // Writer A stalls; its lock is lost (here: released on its behalf) and B takes over.
    first.release().await?;

    let second = EphemeralLock::new(key).hold().await?;
    println!("writer B holds the lock with token {}", second.fencing_token());
    store.write(second.fencing_token(), "B was here").map_err(consul_lock::Error::InvalidConfig)?;

    // A wakes up and, not knowing it lost the lock, tries to write with its old token.
    match store.write(stale_token, "A again (stale)") {
        Ok(()) => println!("stale write accepted: this must not happen"),
        Err(e) => println!("writer A: {e}"),
    }
    println!("store holds {:?}", store.value.lock().unwrap());
    second.release().await
}
