//! Part `semaphore`: our `Semaphore` beside HashiCorp's (`consul lock -n`, Go's `api.Semaphore`) on
//! one agent. Every client talks to the agent through a counting proxy (one request = one `Host:`
//! header on the way in), so requests are counted the same way for both sides; Raft writes are the
//! change of `applied_index`.
//!
//! - uncontended cycle: the library in-process (`hold` + `release`), and one process per cycle for
//!   both CLIs (`consul-lock run --limit 2 P -- true` and `consul lock -n 2 P true`);
//! - handoff under contention, limit 2, N = 2, 8, 32 processes looping over the client, each
//!   section recording its enter and exit: handoff = enter − the latest exit before it;
//! - the same two in-process, library beside library: our `Semaphore` in N tasks and Go's
//!   `api.Semaphore` in N goroutines (benches/go/semabench.go, built by scripts/go-semabench.sh;
//!   its path in `LOCKBENCH_GO_SEMABENCH`, else those rows are left out), each holder watching for
//!   the loss of its slot as Go's always does.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul_lock::Semaphore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{ms, pct, sorted, Config, Ctl};

const OURS: &str = env!("CARGO_BIN_EXE_consul-lock");

/// A TCP proxy to the agent that counts HTTP requests.
struct Counter {
    addr: String,
    requests: Arc<AtomicU64>,
}

impl Counter {
    async fn start(upstream: String) -> Counter {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind the counting proxy");
        let addr = l.local_addr().expect("proxy address").to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let (up, count) = (upstream.clone(), count.clone());
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(&up).await {
                        // No Nagle delays of our own: forward each write as it comes.
                        let _ = (down.set_nodelay(true), up.set_nodelay(true));
                        pipe(down, up, count).await;
                    }
                });
            }
        });
        Counter { addr, requests }
    }

    fn get(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn pipe(down: TcpStream, up: TcpStream, count: Arc<AtomicU64>) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let inbound = async move {
        let (mut buf, mut tail) = (vec![0u8; 16384], Vec::<u8>::new());
        while let Ok(n) = dr.read(&mut buf).await {
            if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            let text = tail.to_ascii_lowercase();
            let hits = text.windows(7).filter(|w| w == b"\r\nhost:").count() as u64;
            count.fetch_add(hits, Ordering::SeqCst);
            let keep = tail.len().saturating_sub(6);
            tail.drain(..keep);
        }
        let _ = uw.shutdown().await;
    };
    let outbound = async move {
        let _ = tokio::io::copy(&mut ur, &mut dw).await;
        let _ = dw.shutdown().await;
    };
    tokio::join!(inbound, outbound);
}

/// One table row.
struct Row {
    what: String,
    n: usize,
    p50: f64,
    p99: f64,
    requests: f64,
    raft: f64,
}

/// Requests and Raft writes of `work` (which does `units` units), after background work settles.
async fn measured<F: std::future::Future<Output = Vec<f64>>>(
    ctl: &Ctl,
    proxy: &Counter,
    what: String,
    units: usize,
    work: F,
) -> Row {
    ctl.settle(0).await;
    let (r0, w0) = (proxy.get(), ctl.applied_index().await);
    let samples = sorted(work.await);
    ctl.settle(0).await;
    let (r1, w1) = (proxy.get(), ctl.applied_index().await);
    let per = |d: u64| d as f64 / units.max(1) as f64;
    Row {
        what,
        n: samples.len(),
        p50: pct(&samples, 0.50),
        p99: pct(&samples, 0.99),
        requests: per(r1 - r0),
        raft: per(w1 - w0),
    }
}

fn go_bin() -> String {
    std::env::var("CONSUL_BIN").unwrap_or_else(|_| {
        consul_lock::testing::find_binary().map(|p| p.display().to_string()).unwrap_or_else(|_| "consul".into())
    })
}

/// The shell command of one client run with SCRIPT as its section.
fn client_cmd(go: bool, prefix: &str, script: &str) -> String {
    if go {
        format!("{} lock -n=2 {prefix} '{script}'", go_bin())
    } else {
        format!("{OURS} run --limit 2 --lock-delay 0s -q {prefix} -- sh -c '{script}'")
    }
}

fn sh(script: &str, proxy: &str) -> std::process::Child {
    Command::new("/bin/sh")
        .args(["-c", script])
        .env("CONSUL_HTTP_ADDR", proxy)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn a client process")
}

/// Uncontended process cycles: one client process per cycle, wall time each.
fn process_cycles(go: bool, prefix: &str, proxy: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let ok = sh(&client_cmd(go, prefix, "true"), proxy).wait().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "a client process failed");
            ms(t0.elapsed())
        })
        .collect()
}

/// Contended: `procs` shell loops of `turns` client runs each; handoff gaps from the section log.
fn contended(go: bool, prefix: &str, proxy: &str, procs: usize, turns: usize, dir: &std::path::Path) -> Vec<f64> {
    let log = dir.join(format!("log-{}-{procs}", if go { "go" } else { "ours" }));
    let _ = std::fs::remove_file(&log);
    let section =
        format!("echo \"$(date +%s%N) 1\" >> {l}; sleep 0.005; echo \"$(date +%s%N) 0\" >> {l}", l = log.display());
    let one = client_cmd(go, prefix, &section);
    let mut children: Vec<_> =
        (0..procs).map(|_| sh(&format!("for i in $(seq {turns}); do {one} || exit 1; done"), proxy)).collect();
    for c in &mut children {
        assert!(c.wait().map(|s| s.success()).unwrap_or(false), "a contender process failed");
    }
    gaps_in_log(&log)
}

/// Handoff gaps from a section log: lines `<unix ns> 1` (enter) and `<unix ns> 0` (exit).
fn gaps_in_log(log: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let events = text
        .lines()
        .filter_map(|l| {
            let (t, e) = l.split_once(' ')?;
            Some((t.parse().ok()?, e == "1"))
        })
        .collect();
    gaps(events)
}

/// Handoff gaps (ms): each enter minus the latest exit before it.
fn gaps(mut events: Vec<(u128, bool)>) -> Vec<f64> {
    events.sort();
    let mut last_exit = None;
    let mut gaps = Vec::new();
    for (t, enter) in events {
        match (enter, last_exit) {
            (true, Some(x)) => gaps.push((t - x) as f64 / 1e6),
            (false, _) => last_exit = Some(t),
            _ => {}
        }
    }
    gaps
}

/// The whole part.
pub(crate) async fn part_semaphore(cfg: &Config) {
    let ctl = Ctl::new(&cfg.addr);
    ctl.destroy_all_sessions().await;
    let proxy = Counter::start(cfg.addr.clone()).await;
    let client = consul_lock::Client::builder().address(proxy.addr.clone()).build().expect("client");
    let dir = std::env::temp_dir().join(format!("lockbench-sem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut rows = Vec::new();
    let n = cfg.n;
    let lib = async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            let p = Semaphore::new("bench/sem/lib", 2).client(client.clone()).lock_delay(Duration::ZERO).hold().await;
            p.expect("hold").release().await.expect("release");
            v.push(ms(t0.elapsed()));
        }
        v
    };
    rows.push(measured(&ctl, &proxy, "cycle, library (`Semaphore` hold + release)".into(), n, lib).await);
    let procs = (n / 10).max(5);
    for go in [false, true] {
        let what = if go {
            "cycle, `consul lock -n 2 P true` (process)"
        } else {
            "cycle, `consul-lock run --limit 2 P -- true` (process)"
        };
        let prefix = if go { "bench/sem/go-cycle" } else { "bench/sem/cli-cycle" };
        let addr = proxy.addr.clone();
        let work = async move { tokio::task::block_in_place(|| process_cycles(go, prefix, &addr, procs)) };
        rows.push(measured(&ctl, &proxy, what.into(), procs, work).await);
    }
    for contenders in contender_counts() {
        let turns = (64 / contenders).max(2);
        for go in [false, true] {
            let side = if go { "`consul lock -n 2`" } else { "`consul-lock run --limit 2`" };
            let what = format!("handoff, {contenders} processes, {side}");
            let prefix = format!("bench/sem/{}-{contenders}", if go { "go" } else { "ours" });
            let (addr, dir) = (proxy.addr.clone(), dir.clone());
            let work =
                async move { tokio::task::block_in_place(|| contended(go, &prefix, &addr, contenders, turns, &dir)) };
            eprintln!("semaphore: {what} ...");
            rows.push(measured(&ctl, &proxy, what, contenders * turns, work).await);
        }
    }
    library_rows(&ctl, &proxy, &client, &dir, &mut rows).await;
    let _ = std::fs::remove_dir_all(&dir);
    print_rows(&rows);
}

/// Library beside library: our `Semaphore` in tasks, Go's `api.Semaphore` in goroutines.
async fn library_rows(
    ctl: &Ctl,
    proxy: &Counter,
    client: &consul_lock::Client,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
) {
    let go = std::env::var("LOCKBENCH_GO_SEMABENCH").ok().filter(|p| std::path::Path::new(p).is_file());
    if go.is_none() {
        eprintln!("semaphore: LOCKBENCH_GO_SEMABENCH not set (scripts/go-semabench.sh): no Go api.Semaphore rows");
    }
    let n = 100;
    if let Some(bin) = &go {
        let cmd = format!("{bin} -addr {} -mode cycle -n {n} -prefix bench/sem/go-lib", proxy.addr);
        let work = async move { tokio::task::block_in_place(|| go_lines(&cmd)) };
        rows.push(measured(ctl, proxy, "cycle, library, Go `api.Semaphore` (Acquire + Release)".into(), n, work).await);
    }
    for contenders in contender_counts() {
        let turns = (64 / contenders).max(2);
        let what = format!("handoff, {contenders} tasks, ours (`Semaphore::hold`, one client)");
        eprintln!("semaphore: {what} ...");
        let work = tasks_contended(client.clone(), format!("bench/sem/lib-{contenders}"), contenders, turns);
        rows.push(measured(ctl, proxy, what, contenders * turns, work).await);
        let Some(bin) = &go else { continue };
        let log = dir.join(format!("log-go-lib-{contenders}"));
        let cmd = format!(
            "{bin} -addr {} -mode contend -n {contenders} -turns {turns} -prefix bench/sem/go-lib-{contenders} -log {}",
            proxy.addr,
            log.display()
        );
        let what = format!("handoff, {contenders} goroutines, Go `api.Semaphore` (one client)");
        eprintln!("semaphore: {what} ...");
        let work = async move {
            tokio::task::block_in_place(|| go_lines(&cmd));
            gaps_in_log(&log)
        };
        rows.push(measured(ctl, proxy, what, contenders * turns, work).await);
    }
}

/// N of the handoff rows: 2, 8, 32, or `LOCKBENCH_SEM_CONTENDERS` (comma-separated).
fn contender_counts() -> Vec<usize> {
    let given = std::env::var("LOCKBENCH_SEM_CONTENDERS").unwrap_or_default();
    let picked: Vec<usize> = given.split(',').filter_map(|n| n.trim().parse().ok()).filter(|&n| n > 0).collect();
    if picked.is_empty() {
        vec![2, 8, 32]
    } else {
        picked
    }
}

/// Run the Go peer; its stdout lines as numbers.
fn go_lines(cmd: &str) -> Vec<f64> {
    let out = Command::new("/bin/sh").args(["-c", cmd]).stderr(Stdio::inherit()).output().expect("run semabench");
    assert!(out.status.success(), "semabench failed: {cmd}");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `procs` tasks, each taking `turns` slots (a new `Semaphore` per turn, like a fresh process)
/// and holding 5 ms while watching for the slot's loss.
async fn tasks_contended(client: consul_lock::Client, prefix: String, procs: usize, turns: usize) -> Vec<f64> {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut tasks = Vec::new();
    for _ in 0..procs {
        let (client, prefix, events) = (client.clone(), prefix.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..turns {
                let sem = Semaphore::new(prefix.as_str(), 2).client(client.clone());
                let permit = sem.acquire_timeout(Duration::from_secs(60)).hold().await.expect("hold");
                events.lock().unwrap().push((now(), true));
                tokio::select! {
                    _ = permit.lost() => panic!("slot lost during the bench"),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                events.lock().unwrap().push((now(), false));
                permit.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a contender task failed");
    }
    let events = std::mem::take(&mut *events.lock().unwrap());
    gaps(events)
}

fn print_rows(rows: &[Row]) {
    println!("## Semaphore (limit 2): ours beside `consul lock -n` (Go `api.Semaphore`)\n");
    println!(
        "Cycle rows: time per cycle (process rows include starting the process). Handoff rows: a section's \
         enter − the latest exit before it (5 ms sections, the client's release and the next client's \
         admission and process start in between). Requests through a counting proxy, Raft writes from \
         `applied_index`, both per cycle or admission, background session destroys included. Library \
         rows: in-process, one client per side, every holder watching for the loss of its slot (Go's \
         `api.Semaphore` always does), a new `Semaphore` per acquisition.\n"
    );
    println!("| run | samples | p50 ms | p99 ms | requests | Raft writes |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |", r.what, r.n, r.p50, r.p99, r.requests, r.raft);
    }
    println!();
}
