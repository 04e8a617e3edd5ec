//! N workers share a list of jobs; each job is done exactly once. A worker claims a job by taking
//! its lock with no wait and skips jobs someone else holds (the job-claiming pattern).
//!
//! ```sh
//! CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run --example job_claim -- 4 12
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::{Client, Session};

#[tokio::main]
async fn main() -> Result<(), consul_lock::Error> {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    let client = Client::from_env()?;
    let run = std::process::id();
    // Which worker did which job; a job done twice would show up here.
    let done: Arc<Mutex<BTreeMap<usize, Vec<usize>>>> = Arc::default();

    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            // One shared session per worker: a claim costs two writes (acquire, delete).
            let session = Session::new(client, Duration::from_secs(15)).await?;
            for job in 0..jobs {
                let key = format!("examples/jobs/{run}/{job}");
                let mut lock = session.lock(key).acquire_timeout(Duration::ZERO);
                if !lock.acquire(false).await? {
                    continue; // someone else is on it
                }
                // Claimed. The lock only serialises: a job finished by an earlier holder is free
                // again, so completion is recorded in the job's own storage (here, a shared map).
                if !done.lock().unwrap().contains_key(&job) {
                    tokio::time::sleep(Duration::from_millis(20)).await; // the work
                    done.lock().unwrap().entry(job).or_default().push(w);
                }
                lock.release().await?;
            }
            session.destroy().await?;
            Ok::<_, consul_lock::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("worker panicked")?;
    }
    let done = done.lock().unwrap();
    for (job, by) in done.iter() {
        println!("job {job:2} done by worker {by:?}");
    }
    let twice = done.values().filter(|v| v.len() > 1).count();
    println!("{} of {jobs} jobs done, {twice} done twice", done.len());
    Ok(())
}
