//! `acquire(fail_hard)`: `Ok(false)` vs `Err(NotAcquired)` when someone else holds the key.
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example fail_hard
//! ```

use std::time::Duration;

use consul_lock::{EphemeralLock, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let key = "examples/fail_hard";
    let holder = EphemeralLock::new(key).hold().await?;
    println!("first lock holds {key}");

    let mut second = EphemeralLock::new(key).acquire_timeout(Duration::from_millis(300));
    // fail_hard = false: a taken key is an ordinary outcome.
    let got = second.acquire(false).await?;
    println!("acquire(false) -> Ok({got})");

    // fail_hard = true: a taken key is an error that says who holds it.
    match second.acquire(true).await {
        Err(e @ Error::NotAcquired { .. }) => println!("acquire(true)  -> Err({e})"),
        other => println!("acquire(true)  -> unexpected {other:?}"),
    }

    holder.release().await?;
    println!("after release, acquire(true) -> {:?}", second.acquire(true).await);
    second.release().await
}
