//! `lockbench`: the performance figures of docs/PERFORMANCE.md, printed as markdown tables.
//!
//! Runs against a real Consul agent: `LOCKBENCH_CONSUL=127.0.0.1:PORT` (an agent nobody else uses:
//! the benchmark counts Raft writes agent-wide), else a private `consul agent -dev` it starts.
//!
//! ```text
//! cargo bench --all-features --bench lockbench                       # everything
//! cargo bench --all-features --bench lockbench -- latency contend    # some parts
//! LOCKBENCH_N=100 LOCKBENCH_ROUNDS=3 cargo bench --all-features --bench lockbench -- latency
//! ```
//!
//! Parts: `latency` (raw floors and uncontended cycles, async and blocking, interleaved in rounds),
//! `contend` (contended handoff, tasks and processes), `scale` (many keys through one Session).
//! Sizes come from the environment (see `Config::from_env`). The binary re-executes itself as a
//! contender process (`worker` argument) for the process runs.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, EphemeralLock, Session};
use serde_json::{json, Value};

const TTL: Duration = Duration::from_secs(15);
const CONTEND_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// configuration and small helpers
// ------------------------------------------------------------------------------------------------

struct Config {
    addr: String,
    n: usize,
    rounds: usize,
    handoffs: u64,
    slow_handoffs: u64,
    runs: String,
    scale_keys: usize,
    scale_concurrency: usize,
    idle_secs: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env(addr: String) -> Config {
        Config {
            addr,
            n: env_or("LOCKBENCH_N", 200),
            rounds: env_or("LOCKBENCH_ROUNDS", 5),
            handoffs: env_or("LOCKBENCH_HANDOFFS", 200),
            slow_handoffs: env_or("LOCKBENCH_SLOW_HANDOFFS", 40),
            runs: std::env::var("LOCKBENCH_RUNS").unwrap_or_else(|_| {
                "t2f,T2f,t4f,T4f,t8f,T8f,t32f,T32f,t8,T8,e4f,E4f,p4f,P4f,p8f,P8f,t4f@100,T4f@100,p4f@100,P4f@100".into()
            }),
            scale_keys: env_or("LOCKBENCH_SCALE_KEYS", 10_000),
            scale_concurrency: env_or("LOCKBENCH_SCALE_CONCURRENCY", 64),
            idle_secs: env_or("LOCKBENCH_IDLE_SECS", 10),
        }
    }
}

/// Wall-clock nanoseconds: comparable across the processes of one machine.
fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Raw access to the agent for the measurements themselves (never counted against the library).
#[derive(Clone)]
struct Ctl {
    http: reqwest::Client,
    base: String,
}

impl Ctl {
    fn new(addr: &str) -> Ctl {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        Ctl { http, base: format!("http://{addr}") }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET to the agent");
        r.json().await.expect("JSON from the agent")
    }

    /// `Stats.raft.applied_index` of `/v1/agent/self`: one step per Raft write.
    async fn applied_index(&self) -> u64 {
        let v = self.get("/v1/agent/self").await;
        let idx = &v["Stats"]["raft"]["applied_index"];
        idx.as_str().and_then(|s| s.parse().ok()).or_else(|| idx.as_u64()).expect("Stats.raft.applied_index")
    }

    async fn session_count(&self) -> usize {
        self.get("/v1/session/list").await.as_array().map(Vec::len).unwrap_or(0)
    }

    /// Wait (bounded) until the agent has `n` sessions: background destroys have landed.
    async fn settle(&self, n: usize) {
        for _ in 0..200 {
            if self.session_count().await <= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn destroy_all_sessions(&self) {
        let v = self.get("/v1/session/list").await;
        for s in v.as_array().into_iter().flatten() {
            if let Some(id) = s["ID"].as_str() {
                let _ = self.http.put(format!("{}/v1/session/destroy/{id}", self.base)).send().await;
            }
        }
    }

    async fn delete_tree(&self, prefix: &str) {
        let _ = self.http.delete(format!("{}/v1/kv/{prefix}?recurse", self.base)).send().await;
    }
}

fn client_for(addr: &str) -> Client {
    Client::builder().address(format!("http://{addr}")).build().expect("client")
}

fn vm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// (1) floors: the library's own requests, raw, on one keep-alive reqwest client
// ------------------------------------------------------------------------------------------------

struct Raw {
    http: reqwest::Client,
    base: String,
}

const VALUE_B64: &str = "eyJob3N0bmFtZSI6ImJlbmNoIiwicGlkIjoxLCJhY3F1aXJlZF9hdF91bml4X21zIjoxNzAwMDAwMDAwMDAwLCJzZXNzaW9uX25hbWUiOiJjb25zdWwtbG9jazogYmVuY2gvZmxvb3IiLCJjcmF0ZV92ZXJzaW9uIjoiMC4xLjAifQ==";

impl Raw {
    fn new(addr: &str) -> Raw {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        Raw { http, base: format!("http://{addr}/v1") }
    }

    async fn put(&self, path: &str, body: String) -> (u16, Vec<u8>) {
        let r = self.http.put(format!("{}{path}", self.base)).body(body).send().await.expect("raw PUT");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("raw body").to_vec())
    }

    async fn create(&self, lock_delay: &str, ttl: &str) -> String {
        let body = json!({"Name": "floor", "TTL": ttl, "Behavior": "delete", "LockDelay": lock_delay,
            "Checks": [], "NodeChecks": []});
        let (s, b) = self.put("/session/create", body.to_string()).await;
        assert_eq!(s, 200, "session create: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).expect("session JSON");
        v["ID"].as_str().expect("session ID").to_owned()
    }

    async fn lock(&self, key: &str, sid: &str) {
        let body = json!([{"KV": {"Verb": "lock", "Key": key, "Value": VALUE_B64, "Session": sid}}]);
        let (s, b) = self.put("/txn", body.to_string()).await;
        assert_eq!(s, 200, "txn lock: {}", String::from_utf8_lossy(&b));
    }

    async fn release(&self, key: &str, sid: &str) {
        let body = json!([{"KV": {"Verb": "check-session", "Key": key, "Session": sid}},
            {"KV": {"Verb": "delete", "Key": key}}]);
        let (s, b) = self.put("/txn", body.to_string()).await;
        assert_eq!(s, 200, "txn release: {}", String::from_utf8_lossy(&b));
    }

    async fn destroy(&self, sid: &str) {
        let (s, b) = self.put(&format!("/session/destroy/{sid}"), String::new()).await;
        assert_eq!(s, 200, "session destroy: {}", String::from_utf8_lossy(&b));
    }
}

// ------------------------------------------------------------------------------------------------
// (2) + (5) uncontended cycle
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Scenario {
    Floor4,
    Floor3,
    Floor2,
    LockDefault,
    LockDelay0,
    Shared,
    SharedFair,
    BlockingDefault,
    BlockingDelay0,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::Floor4,
        Scenario::LockDefault,
        Scenario::Floor3,
        Scenario::LockDelay0,
        Scenario::Floor2,
        Scenario::Shared,
        Scenario::SharedFair,
        Scenario::BlockingDefault,
        Scenario::BlockingDelay0,
    ];

    fn label(self) -> &'static str {
        match self {
            Scenario::Floor4 => "floor4 raw: create, txn lock, txn check-session+delete, destroy",
            Scenario::Floor3 => "floor3 raw: create (lock-delay 0), txn lock, destroy",
            Scenario::Floor2 => "floor2 raw, one session: txn lock, txn check-session+delete",
            Scenario::LockDefault => "**EphemeralLock**, own session, default lock-delay 15 s",
            Scenario::LockDelay0 => "**EphemeralLock**, own session, `lock_delay(0)`",
            Scenario::Shared => "**shared `Session`**: `session.lock(k).hold()` + `release()`",
            Scenario::SharedFair => "shared `Session`, `fair(true)` (queue entry: 3 writes)",
            Scenario::BlockingDefault => "`blocking::EphemeralLock`, default lock-delay",
            Scenario::BlockingDelay0 => "`blocking::EphemeralLock`, `lock_delay(0)`",
        }
    }

    /// The floor a library scenario is compared with.
    fn floor(self) -> Option<Scenario> {
        match self {
            Scenario::LockDefault | Scenario::BlockingDefault => Some(Scenario::Floor4),
            Scenario::LockDelay0 | Scenario::BlockingDelay0 => Some(Scenario::Floor3),
            Scenario::Shared => Some(Scenario::Floor2),
            // Three writes (queue entry, lock, release+dequeue): the three-write floor.
            Scenario::SharedFair => Some(Scenario::Floor3),
            _ => None,
        }
    }

    fn raw_requests(self) -> Option<f64> {
        match self {
            Scenario::Floor4 => Some(4.0),
            Scenario::Floor3 => Some(3.0),
            Scenario::Floor2 => Some(2.0),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Acc {
    p50: Vec<f64>,
    p99: Vec<f64>,
    mean: Vec<f64>,
    raft: Vec<f64>,
    reqs: Vec<f64>,
}

struct LatencyCtx {
    addr: String,
    ctl: Ctl,
    raw: Raw,
    client: Client,
    blocking: consul_lock::blocking::Client,
    session: Session,
    raw_session: String,
}

/// One round of `n` cycles of `sc`: (per-cycle ms, requests per cycle).
fn run_round(rt: &tokio::runtime::Runtime, cx: &LatencyCtx, sc: Scenario, n: usize) -> (Vec<f64>, f64) {
    let key = format!("bench/rust/latency/{sc:?}");
    let r0 = cx.client.request_count();
    let times = match sc {
        Scenario::BlockingDefault | Scenario::BlockingDelay0 => {
            let delay = if sc == Scenario::BlockingDelay0 { Duration::ZERO } else { Duration::from_secs(15) };
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let g = consul_lock::blocking::EphemeralLock::new(key.as_str())
                    .client(cx.blocking.clone())
                    .lock_delay(delay)
                    .hold()
                    .expect("blocking hold");
                g.release().expect("blocking release");
                v.push(ms(t.elapsed()));
            }
            v
        }
        _ => rt.block_on(async {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                match sc {
                    Scenario::Floor4 => {
                        let sid = cx.raw.create("15000ms", "15s").await;
                        cx.raw.lock(&key, &sid).await;
                        cx.raw.release(&key, &sid).await;
                        cx.raw.destroy(&sid).await;
                    }
                    Scenario::Floor3 => {
                        let sid = cx.raw.create("0s", "15s").await;
                        cx.raw.lock(&key, &sid).await;
                        cx.raw.destroy(&sid).await;
                    }
                    Scenario::Floor2 => {
                        cx.raw.lock(&key, &cx.raw_session).await;
                        cx.raw.release(&key, &cx.raw_session).await;
                    }
                    Scenario::LockDefault | Scenario::LockDelay0 => {
                        let delay = if sc == Scenario::LockDelay0 { Duration::ZERO } else { Duration::from_secs(15) };
                        let g = EphemeralLock::new(key.as_str())
                            .client(cx.client.clone())
                            .lock_delay(delay)
                            .hold()
                            .await
                            .expect("hold");
                        g.release().await.expect("release");
                    }
                    Scenario::Shared | Scenario::SharedFair => {
                        let fair = sc == Scenario::SharedFair;
                        let g = cx.session.lock(key.as_str()).fair(fair).hold().await.expect("shared hold");
                        g.release().await.expect("shared release");
                    }
                    Scenario::BlockingDefault | Scenario::BlockingDelay0 => unreachable!(),
                }
                v.push(ms(t.elapsed()));
            }
            v
        }),
    };
    let reqs = match sc.raw_requests() {
        Some(r) => r,
        None => (cx.client.request_count() - r0) as f64 / n as f64,
    };
    (times, reqs)
}

fn part_latency(rt: &tokio::runtime::Runtime, cfg: &Config) -> BTreeMap<Scenario, Acc> {
    let ctl = Ctl::new(&cfg.addr);
    let client = client_for(&cfg.addr);
    let raw = Raw::new(&cfg.addr);
    let (session, raw_session) = rt.block_on(async {
        ctl.destroy_all_sessions().await;
        ctl.delete_tree("bench/rust").await;
        let s = Session::new(client.clone(), TTL).await.expect("shared session");
        // Never renewed (a raw floor): a TTL longer than the whole part.
        let r = raw.create("15000ms", "86400s").await;
        (s, r)
    });
    let blocking = consul_lock::blocking::Client::new(client.clone()).expect("blocking client");
    let cx = LatencyCtx { addr: cfg.addr.clone(), ctl, raw, client, blocking, session, raw_session };
    let mut acc: BTreeMap<Scenario, Acc> = BTreeMap::new();
    // Warm-up: connections, code paths, the agent's caches.
    for sc in Scenario::ALL {
        run_round(rt, &cx, sc, 10.min(cfg.n));
    }
    rt.block_on(cx.ctl.settle(2));
    for round in 0..cfg.rounds {
        // Rotate the order each round so drift does not favour one scenario.
        let mut order = Scenario::ALL.to_vec();
        let len = order.len();
        order.rotate_left(round % len);
        for sc in order {
            let a0 = rt.block_on(cx.ctl.applied_index());
            let (times, reqs) = run_round(rt, &cx, sc, cfg.n);
            rt.block_on(cx.ctl.settle(2));
            let a1 = rt.block_on(cx.ctl.applied_index());
            let s = sorted(times);
            let e = acc.entry(sc).or_default();
            e.p50.push(pct(&s, 0.50));
            e.p99.push(pct(&s, 0.99));
            e.mean.push(s.iter().sum::<f64>() / s.len() as f64);
            e.raft.push((a1 - a0) as f64 / cfg.n as f64);
            e.reqs.push(reqs);
        }
        eprintln!("latency round {}/{} done", round + 1, cfg.rounds);
    }
    let LatencyCtx { ctl, raw, session, raw_session, addr, .. } = cx;
    rt.block_on(async {
        let _ = session.destroy().await;
        raw.destroy(&raw_session).await;
        ctl.settle(0).await;
    });
    let _ = addr;
    acc
}

fn print_latency(cfg: &Config, acc: &BTreeMap<Scenario, Acc>) {
    println!("## Uncontended cycle (acquire → release)\n");
    println!(
        "Median over {} rounds of {} cycles each (scenarios interleaved, order rotated per round); \
         p50/p99 are per round, then the median of those. Go `api.Lock` reference: 3.18 ms (README of \
         ../shared/peers/go), python-consul-lock 5.47 ms.\n",
        cfg.rounds, cfg.n
    );
    println!("| scenario | p50 ms | p99 ms | mean ms | Raft writes / cycle | HTTP requests / cycle | ÷ its floor (p50) | Go api.Lock 3.18 ms ÷ this |");
    println!("|---|---|---|---|---|---|---|---|");
    for sc in Scenario::ALL {
        let Some(a) = acc.get(&sc) else { continue };
        let p50 = median(&a.p50);
        let vs_floor = sc
            .floor()
            .and_then(|f| acc.get(&f))
            .map(|f| format!("{:.2}× ({})", p50 / median(&f.p50), format!("{:?}", sc.floor().unwrap()).to_lowercase()))
            .unwrap_or_else(|| "—".into());
        let vs_go = if sc.floor().is_some() { format!("{:.2}×", 3.18 / p50) } else { "—".into() };
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            sc.label(),
            p50,
            median(&a.p99),
            median(&a.mean),
            median(&a.raft),
            median(&a.reqs),
            vs_floor,
            vs_go
        );
    }
    let ratio = |a: Scenario, b: Scenario| -> String {
        match (acc.get(&a), acc.get(&b)) {
            (Some(x), Some(y)) => format!("{:.2}×", median(&x.p50) / median(&y.p50)),
            _ => "—".into(),
        }
    };
    println!(
        "\nBlocking API overhead (p50 blocking ÷ p50 async, same cycle): default lock-delay {}, lock-delay 0 {}.\n",
        ratio(Scenario::BlockingDefault, Scenario::LockDefault),
        ratio(Scenario::BlockingDelay0, Scenario::LockDelay0)
    );
}

// ------------------------------------------------------------------------------------------------
// (3) contended handoff
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct RunSpec {
    label: String,
    procs: bool,
    /// Each contender uses an `EphemeralLock` with its own session per acquisition (like Go's `LockKey`)
    /// instead of one shared `Session` per contender.
    ephemeral: bool,
    n: usize,
    forced: bool,
    /// `EphemeralLock::fair(true)` (upper-case run letter).
    fair: bool,
    hold: Duration,
    handoffs: u64,
}

fn parse_run(spec: &str, cfg: &Config) -> Option<RunSpec> {
    // (t|e|p|T|E|P)N[f][@HOLDMS][:HANDOFFS]; upper case = fair mode
    let (head, handoffs) = match spec.split_once(':') {
        Some((h, n)) => (h, n.parse().ok()?),
        None => (spec, 0),
    };
    let (head, hold_ms) = match head.split_once('@') {
        Some((h, m)) => (h, m.parse().ok()?),
        None => (head, 5u64),
    };
    let kind = head.chars().next()?;
    let forced = head.ends_with('f');
    let n: usize = head[1..head.len() - usize::from(forced)].parse().ok()?;
    let handoffs = if handoffs > 0 {
        handoffs
    } else if hold_ms >= 50 {
        cfg.slow_handoffs
    } else {
        cfg.handoffs
    };
    let fair = kind.is_ascii_uppercase();
    let (procs, ephemeral) = match kind.to_ascii_lowercase() {
        't' => (false, false),
        'e' => (false, true),
        'p' => (true, false),
        _ => return None,
    };
    Some(RunSpec {
        label: spec.to_owned(),
        procs,
        ephemeral,
        n,
        forced,
        fair,
        hold: Duration::from_millis(hold_ms),
        handoffs,
    })
}

/// One acquisition: contender, global number, acquire called, acquired, release called, released.
#[derive(Clone, Copy, Debug)]
struct Rec {
    idx: usize,
    n: u64,
    t0: i64,
    t1: i64,
    t2: i64,
    t3: i64,
}

/// The acquisition counter: in memory for tasks, a file for processes (written only by the holder).
trait Counter: Send + Sync {
    fn get(&self) -> u64;
    fn add(&self) -> u64;
}

struct MemCounter(AtomicU64);

impl Counter for MemCounter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn add(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

struct FileCounter(std::path::PathBuf);

impl Counter for FileCounter {
    fn get(&self) -> u64 {
        std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
    fn add(&self) -> u64 {
        // Only the lock holder writes; write-then-rename keeps readers from seeing half a number.
        let v = self.get() + 1;
        let tmp = self.0.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, v.to_string()).expect("counter write");
        std::fs::rename(&tmp, &self.0).expect("counter rename");
        v
    }
}

#[derive(Default)]
struct Outcome {
    recs: Vec<Rec>,
    errors: u64,
    extra: u64,
    overlap: u64,
}

#[allow(clippy::too_many_arguments)]
async fn contender(
    idx: usize,
    client: Client,
    session: Option<Session>,
    key: String,
    spec: RunSpec,
    ctr: Arc<dyn Counter>,
    holding: Arc<AtomicI64>,
    marks: Arc<Marks>,
) -> Outcome {
    let mut out = Outcome::default();
    let target = spec.handoffs + 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..target + 50 {
        if ctr.get() >= target || Instant::now() > deadline {
            break;
        }
        let t0 = now_ns();
        let lock = match &session {
            Some(s) => s.lock(key.as_str()),
            None => EphemeralLock::new(key.as_str()).client(client.clone()),
        };
        let guard = match lock.fair(spec.fair).acquire_timeout(CONTEND_TIMEOUT).hold().await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("contender {idx}: {e}");
                out.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let t1 = now_ns();
        let nth = ctr.add();
        if nth > target {
            let _ = guard.release().await;
            out.extra += 1;
            break;
        }
        if holding.fetch_add(1, Ordering::SeqCst) != 0 {
            out.overlap += 1;
        }
        tokio::time::sleep(spec.hold).await;
        holding.fetch_sub(1, Ordering::SeqCst);
        let t2 = now_ns();
        if let Err(e) = guard.release().await {
            eprintln!("contender {idx}: release: {e}");
            out.errors += 1;
        }
        let t3 = now_ns();
        if nth == steady_from(&spec) {
            marks.mid.store(client.request_count(), Ordering::SeqCst);
        }
        if nth == target {
            marks.end.store(client.request_count(), Ordering::SeqCst);
        }
        out.recs.push(Rec { idx, n: nth, t0, t1, t2, t3 });
        if spec.forced && nth < target {
            // Forced handoff: do not compete again until someone else has taken the lock.
            for _ in 0..40_000 {
                if ctr.get() != nth || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(250)).await;
            }
        }
    }
    out
}

/// Request counts of a shared `Client` right after the release that opens the steady-state window
/// and after the last counted release.
#[derive(Default)]
struct Marks {
    mid: AtomicU64,
    end: AtomicU64,
}

/// The release after which the steady-state window opens: once every contender has had its first
/// turn, so that the window holds whole handoffs only (the requests of the start-up and of the waiters
/// still queued at the end are outside it).
fn steady_from(spec: &RunSpec) -> u64 {
    (spec.n as u64 + 1).min(spec.handoffs / 2).max(1)
}

struct ContendResult {
    spec: RunSpec,
    handoff: Vec<f64>,
    recs: usize,
    extra: u64,
    errors: u64,
    violations: u64,
    turns: Vec<usize>,
    max_streak: usize,
    reqs_per_handoff: f64,
    steady_reqs_per_handoff: Option<f64>,
    raft_per_acq: f64,
    max_acquire_wait: f64,
}

fn analyze(spec: RunSpec, outs: Vec<Outcome>, requests: u64, steady: Option<f64>, raft: u64) -> ContendResult {
    let mut recs: Vec<Rec> = outs.iter().flat_map(|o| o.recs.iter().copied()).collect();
    recs.sort_by_key(|r| r.n);
    let mut turns = vec![0usize; spec.n];
    for r in &recs {
        turns[r.idx] += 1;
    }
    let mut handoff = Vec::new();
    let mut violations: u64 = outs.iter().map(|o| o.overlap).sum();
    let (mut streak, mut max_streak) = (1, 1);
    for w in recs.windows(2) {
        let (p, c) = (w[0], w[1]);
        if c.t1 < p.t2 {
            violations += 1;
        }
        handoff.push((c.t1 - p.t2) as f64 / 1e6);
        streak = if c.idx == p.idx { streak + 1 } else { 1 };
        max_streak = max_streak.max(streak);
    }
    let max_acquire_wait = recs.iter().map(|r| (r.t1 - r.t0) as f64 / 1e6).fold(0.0, f64::max);
    let extra: u64 = outs.iter().map(|o| o.extra).sum();
    let nh = recs.len().saturating_sub(1).max(1) as f64;
    ContendResult {
        handoff: sorted(handoff),
        recs: recs.len(),
        extra,
        errors: outs.iter().map(|o| o.errors).sum(),
        violations,
        turns,
        max_streak,
        reqs_per_handoff: requests as f64 / nh,
        steady_reqs_per_handoff: steady,
        raft_per_acq: raft as f64 / (recs.len() as u64 + extra).max(1) as f64,
        max_acquire_wait,
        spec,
    }
}

async fn run_tasks(addr: &str, spec: RunSpec) -> ContendResult {
    let ctl = Ctl::new(addr);
    ctl.destroy_all_sessions().await;
    let key = format!("bench/rust/contend/{}", spec.label.replace(['@', ':'], "-"));
    ctl.delete_tree(&key).await;
    // One client for all contenders, as one service would share it.
    let client = client_for(addr);
    let mut sessions = Vec::new();
    for _ in 0..spec.n {
        sessions.push(if spec.ephemeral {
            None
        } else {
            Some(Session::new(client.clone(), TTL).await.expect("session"))
        });
    }
    ctl.settle(spec.n).await;
    let ctr: Arc<dyn Counter> = Arc::new(MemCounter(AtomicU64::new(0)));
    let holding = Arc::new(AtomicI64::new(0));
    let marks = Arc::new(Marks::default());
    let a0 = ctl.applied_index().await;
    let r0 = client.request_count();
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        tasks.push(tokio::spawn(contender(
            i,
            client.clone(),
            s.clone(),
            key.clone(),
            spec.clone(),
            ctr.clone(),
            holding.clone(),
            marks.clone(),
        )));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.expect("contender task"));
    }
    let mut end = marks.end.load(Ordering::SeqCst);
    if end == 0 {
        end = client.request_count();
    }
    let (mid, from) = (marks.mid.load(Ordering::SeqCst), steady_from(&spec));
    let steady = (mid > 0 && marks.end.load(Ordering::SeqCst) > mid)
        .then(|| (end - mid) as f64 / (spec.handoffs + 1 - from) as f64);
    if spec.ephemeral {
        ctl.settle(0).await;
    }
    let a1 = ctl.applied_index().await;
    for s in sessions.into_iter().flatten() {
        let _ = s.destroy().await;
    }
    ctl.settle(0).await;
    analyze(spec, outs, end - r0, steady, a1 - a0)
}

fn run_procs(rt: &tokio::runtime::Runtime, addr: &str, spec: RunSpec) -> ContendResult {
    let ctl = Ctl::new(addr);
    let key = format!("bench/rust/contend/{}", spec.label.replace(['@', ':'], "-"));
    rt.block_on(async {
        ctl.destroy_all_sessions().await;
        ctl.delete_tree(&key).await;
    });
    let dir = std::env::temp_dir().join(format!("lockbench-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let counter = dir.join("counter");
    std::fs::write(&counter, "0").expect("counter file");
    let exe = std::env::current_exe().expect("current exe");
    let mut children = Vec::new();
    for i in 0..spec.n {
        let child = Command::new(&exe)
            .arg("worker")
            .env("LOCKBENCH_W_ADDR", addr)
            .env("LOCKBENCH_W_KEY", &key)
            .env("LOCKBENCH_W_IDX", i.to_string())
            .env("LOCKBENCH_W_N", spec.n.to_string())
            .env("LOCKBENCH_W_HANDOFFS", spec.handoffs.to_string())
            .env("LOCKBENCH_W_HOLD_MS", spec.hold.as_millis().to_string())
            .env("LOCKBENCH_W_FORCED", if spec.forced { "1" } else { "0" })
            .env("LOCKBENCH_W_FAIR", if spec.fair { "1" } else { "0" })
            .env("LOCKBENCH_W_COUNTER", &counter)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        children.push(child);
    }
    let mut readers = Vec::new();
    for c in children.iter_mut() {
        let mut r = std::io::BufReader::new(c.stdout.take().expect("worker stdout"));
        let mut line = String::new();
        r.read_line(&mut line).expect("worker ready line");
        assert_eq!(line.trim(), "ready", "worker did not start");
        readers.push(r);
    }
    let a0 = rt.block_on(ctl.applied_index());
    for c in children.iter_mut() {
        writeln!(c.stdin.as_mut().expect("worker stdin"), "go").expect("go");
    }
    let mut outs = Vec::new();
    let mut requests = 0;
    for r in readers.iter_mut() {
        let mut line = String::new();
        r.read_line(&mut line).expect("worker result");
        let v: Value = serde_json::from_str(&line).expect("worker JSON");
        requests += v["requests"].as_u64().unwrap_or(0);
        let recs = v["recs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let g = |i: usize| r[i].as_i64().unwrap_or(0);
                Rec { idx: g(0) as usize, n: g(1) as u64, t0: g(2), t1: g(3), t2: g(4), t3: g(5) }
            })
            .collect();
        outs.push(Outcome {
            recs,
            errors: v["errors"].as_u64().unwrap_or(0),
            extra: v["extra"].as_u64().unwrap_or(0),
            overlap: 0,
        });
    }
    let a1 = rt.block_on(ctl.applied_index());
    for c in children.iter_mut() {
        drop(c.stdin.take()); // EOF: destroy the session and exit
    }
    for mut c in children {
        let _ = c.wait();
    }
    rt.block_on(ctl.settle(0));
    let _ = std::fs::remove_dir_all(&dir);
    analyze(spec, outs, requests, None, a1 - a0)
}

/// A contender process: its own Client and Session; waits for "go", prints one JSON line.
fn worker_main() {
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

fn print_contend(results: &[ContendResult]) {
    println!("## Contended handoff (one key)\n");
    println!(
        "Handoff = holder calls `release()` → the next holder's `hold()` returns. `tN`: N tokio tasks \
         sharing one `Client`, each with its own shared `Session` (2 writes per acquisition); `eN`: N tasks \
         with an `EphemeralLock` (own session) per acquisition, like Go's `LockKey`; `pN`: N processes, each \
         with its own `Client` and `Session`. `f`: forced handoff (a releaser competes again only after \
         someone else took the lock), else free-for-all. `@H`: hold H ms (default 5). Upper-case letter \
         (`T`, `E`, `P`): the same with `fair(true)` (waiters queue, each watches only its predecessor). Requests per handoff \
         counted by `Client::request_count()` (tasks: from the start to the last counted release; processes: \
         each process from go to done); that window also holds the requests of the waiters still queued \
         when it closes, so `steady` counts only between the release that ends the first round of turns \
         and the last counted release (tasks, whose shared `Client` gives one count). Raft writes per acquisition from `applied_index` (extra \
         acquisitions at the end included).\n"
    );
    println!("| run | handoffs | handoff p50 ms | p90 ms | p99 ms | max (worst stall) ms | slowest `hold()` ms | req / handoff | steady req / handoff | Raft writes / acq | turns per contender (min–max) | max streak | violations | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let h = &r.handoff;
        let (tmin, tmax) = (r.turns.iter().min().copied().unwrap_or(0), r.turns.iter().max().copied().unwrap_or(0));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.2} | {} | {:.2} | {}–{} | {} | {} | {} |",
            r.spec.label,
            r.recs.saturating_sub(1),
            pct(h, 0.5),
            pct(h, 0.9),
            pct(h, 0.99),
            h.last().copied().unwrap_or(f64::NAN),
            r.max_acquire_wait,
            r.reqs_per_handoff,
            r.steady_reqs_per_handoff.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}")),
            r.raft_per_acq,
            tmin,
            tmax,
            r.max_streak,
            r.violations,
            r.errors
        );
    }
    println!();
    for r in results {
        if r.spec.n <= 8 {
            println!(
                "- {}: turns {:?}, slowest acquire {:.1} ms, {} extra acquisitions at the end",
                r.spec.label, r.turns, r.max_acquire_wait, r.extra
            );
        }
    }
    println!();
}

// ------------------------------------------------------------------------------------------------
// (4) scale: many keys held at once through one Session
// ------------------------------------------------------------------------------------------------

async fn part_scale(cfg: &Config) {
    let ctl = Ctl::new(&cfg.addr);
    ctl.destroy_all_sessions().await;
    ctl.delete_tree("bench/rust/scale").await;
    let client = client_for(&cfg.addr);
    let session = Session::new(client.clone(), TTL).await.expect("session");
    // Warm the code paths and the connection pool before the baseline.
    for i in 0..cfg.scale_concurrency {
        let g = session.lock(format!("bench/rust/scale/warm/{i}")).hold().await.expect("warm hold");
        g.release().await.expect("warm release");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = vm_rss_kib();
    let r0 = client.request_count();
    let a0 = ctl.applied_index().await;
    let t = Instant::now();
    let keys = cfg.scale_keys;
    let conc = cfg.scale_concurrency.max(1);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut guards = Vec::new();
            for i in (w..keys).step_by(conc) {
                guards.push(s.lock(format!("bench/rust/scale/k/{i}")).hold().await.expect("scale hold"));
            }
            guards
        }));
    }
    let mut guards = Vec::with_capacity(keys);
    for t in tasks {
        guards.extend(t.await.expect("scale task"));
    }
    let acquire_all = t.elapsed();
    let r1 = client.request_count();
    let a1 = ctl.applied_index().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss1 = vm_rss_kib();
    // Idle: only renewals should be sent (one per session, every TTL/2).
    let idle = Duration::from_secs(cfg.idle_secs);
    let ri0 = client.request_count();
    let ai0 = ctl.applied_index().await;
    tokio::time::sleep(idle).await;
    let ri1 = client.request_count();
    let ai1 = ctl.applied_index().await;
    let held = guards.iter().filter(|g| g.is_held()).count();
    let t = Instant::now();
    let mut tasks = Vec::new();
    let mut chunks: Vec<Vec<consul_lock::LockGuard>> = (0..conc).map(|_| Vec::new()).collect();
    for (i, g) in guards.into_iter().enumerate() {
        chunks[i % conc].push(g);
    }
    for chunk in chunks {
        tasks.push(tokio::spawn(async move {
            for g in chunk {
                g.release().await.expect("scale release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("release task");
    }
    let release_all = t.elapsed();
    let r2 = client.request_count();
    let _ = session.destroy().await;
    ctl.settle(0).await;
    println!("## Scale: {keys} keys held at once through one shared `Session`\n");
    println!("{conc} tasks acquire (then release) the keys concurrently through one `Client` and one `Session`.\n");
    println!("| figure | value |\n|---|---|");
    println!("| keys held at once (all `is_held()` after the idle window) | {held} / {keys} |");
    println!(
        "| time to acquire all | {:.2} s ({:.0} locks/s) |",
        acquire_all.as_secs_f64(),
        keys as f64 / acquire_all.as_secs_f64()
    );
    println!("| requests / Raft writes to acquire all | {} / {} |", r1 - r0, a1 - a0);
    println!(
        "| memory per held lock (VmRSS delta ÷ keys) | {:.2} KiB ({} KiB in all) |",
        (rss1.saturating_sub(rss0)) as f64 / keys as f64,
        rss1.saturating_sub(rss0)
    );
    println!(
        "| requests / s while idle, {} s window (all keys held) | {:.2} ({} requests, {} Raft writes) |",
        cfg.idle_secs,
        (ri1 - ri0) as f64 / idle.as_secs_f64(),
        ri1 - ri0,
        ai1 - ai0
    );
    println!(
        "| time to release all | {:.2} s ({:.0} locks/s, {} requests) |",
        release_all.as_secs_f64(),
        keys as f64 / release_all.as_secs_f64(),
        r2 - ri1
    );
    println!();
}

// ------------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().map(String::as_str) == Some("worker") {
        worker_main();
        return;
    }
    let parts: Vec<&str> =
        if args.is_empty() { vec!["latency", "contend", "scale"] } else { args.iter().map(String::as_str).collect() };
    let _dev;
    let addr = match std::env::var("LOCKBENCH_CONSUL") {
        Ok(a) if !a.is_empty() => a,
        _ => {
            let dev =
                consul_lock::testing::ConsulDev::start().unwrap_or_else(|e| panic!("cannot start consul -dev: {e}"));
            let a = dev.http_addr().to_owned();
            _dev = dev;
            a
        }
    };
    let host = addr.split(':').next().unwrap_or("");
    assert!(host.starts_with("127.") || host == "localhost", "LOCKBENCH_CONSUL must be a loopback address");
    let cfg = Config::from_env(addr);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let version = rt.block_on(async {
        let v = Ctl::new(&cfg.addr).get("/v1/agent/self").await;
        let dev =
            v["DebugConfig"]["DevMode"].as_bool().map(|d| if d { "-dev" } else { "server, data dir" }).unwrap_or("?");
        format!("{} ({dev})", v["Config"]["Version"].as_str().unwrap_or("?"))
    });
    println!("# consul-lock lockbench\n");
    println!(
        "Consul {version} at {} · {} CPUs · parts: {} · N={} rounds={} handoffs={}/{}\n",
        cfg.addr,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        parts.join(","),
        cfg.n,
        cfg.rounds,
        cfg.handoffs,
        cfg.slow_handoffs
    );
    for part in parts {
        match part {
            "latency" => {
                let acc = part_latency(&rt, &cfg);
                print_latency(&cfg, &acc);
            }
            "contend" => {
                let mut results = Vec::new();
                for s in cfg.runs.split(',').filter(|s| !s.is_empty()) {
                    let Some(spec) = parse_run(s, &cfg) else {
                        eprintln!("bad run spec {s:?}: expected (t|e|p)N[f][@HOLDMS][:HANDOFFS]");
                        continue;
                    };
                    eprintln!("contend {s} ...");
                    let r = if spec.procs {
                        run_procs(&rt, &cfg.addr, spec)
                    } else {
                        rt.block_on(run_tasks(&cfg.addr, spec))
                    };
                    results.push(r);
                }
                print_contend(&results);
            }
            "scale" => rt.block_on(part_scale(&cfg)),
            other => eprintln!("unknown part {other:?} (latency, contend, scale)"),
        }
        let _ = std::io::stdout().flush();
    }
}
