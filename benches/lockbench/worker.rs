//! The contender process of the `contend` part's process runs: the bench binary re-executed with the
//! `worker` argument, configured by `LOCKBENCH_W_*` variables, driven over stdin/stdout.

use std::io::{BufRead, Write};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use consul_lock::Session;
use serde_json::{json, Value};

use crate::common::{client_for, TTL};
use crate::contention::{contender, FileCounter, Marks, RunSpec};

/// A contender process: its own Client and Session; waits for "go", prints one JSON line.
pub(crate) fn worker_main() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("worker needs {k}"));
    let addr = var("LOCKBENCH_W_ADDR");
    let spec = RunSpec {
        label: "worker".into(),
        procs: true,
        ephemeral: false,
        n: var("LOCKBENCH_W_N").parse().expect("N"),
        forced: var("LOCKBENCH_W_FORCED") == "1",
        fair: var("LOCKBENCH_W_FAIR") == "1",
        hold: Duration::from_millis(var("LOCKBENCH_W_HOLD_MS").parse().expect("hold")),
        handoffs: var("LOCKBENCH_W_HANDOFFS").parse().expect("handoffs"),
    };
    let idx: usize = var("LOCKBENCH_W_IDX").parse().expect("idx");
    let key = var("LOCKBENCH_W_KEY");
    let counter = std::path::PathBuf::from(var("LOCKBENCH_W_COUNTER"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let client = client_for(&addr);
        let session = Session::new(client.clone(), TTL).await.expect("worker session");
        println!("ready");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).expect("go line");
        let r0 = client.request_count();
        let out = contender(
            idx,
            client.clone(),
            Some(session.clone()),
            key,
            spec,
            Arc::new(FileCounter(counter)),
            Arc::new(AtomicI64::new(0)),
            Arc::new(Marks::default()),
        )
        .await;
        let recs: Vec<Value> = out.recs.iter().map(|r| json!([r.idx, r.n, r.t0, r.t1, r.t2, r.t3])).collect();
        let v = json!({"recs": recs, "errors": out.errors, "extra": out.extra,
            "requests": client.request_count() - r0});
        println!("{v}");
        let _ = std::io::stdout().flush();
        let mut rest = String::new();
        let _ = std::io::stdin().lock().read_line(&mut rest);
        let _ = session.destroy().await;
    });
}
