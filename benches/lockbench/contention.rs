//! The `contend` part: contended handoff on one key between tokio tasks or contender processes (run
//! specs, the contender loop shared with the worker process, acquisition counters, analysis of the
//! records), and the markdown table of the results.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul_lock::{Client, EphemeralLock, Session};
use serde_json::Value;

use crate::common::{client_for, now_ns, pct, sorted, Config, Ctl, TTL};

const CONTEND_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// (3) contended handoff
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) struct RunSpec {
    pub(crate) label: String,
    pub(crate) procs: bool,
    /// Each contender uses an `EphemeralLock` with its own session per acquisition (like Go's `LockKey`)
    /// instead of one shared `Session` per contender.
    pub(crate) ephemeral: bool,
    pub(crate) n: usize,
    pub(crate) forced: bool,
    /// `EphemeralLock::fair(true)` (upper-case run letter).
    pub(crate) fair: bool,
    pub(crate) hold: Duration,
    pub(crate) handoffs: u64,
}

pub(crate) fn parse_run(spec: &str, cfg: &Config) -> Option<RunSpec> {
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
pub(crate) struct Rec {
    pub(crate) idx: usize,
    pub(crate) n: u64,
    pub(crate) t0: i64,
    pub(crate) t1: i64,
    pub(crate) t2: i64,
    pub(crate) t3: i64,
}

/// The acquisition counter: in memory for tasks, a file for processes (written only by the holder).
pub(crate) trait Counter: Send + Sync {
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

pub(crate) struct FileCounter(pub(crate) std::path::PathBuf);

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
pub(crate) struct Outcome {
    pub(crate) recs: Vec<Rec>,
    pub(crate) errors: u64,
    pub(crate) extra: u64,
    overlap: u64,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn contender(
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
            marks.mid_applied.store(marks.applied().await, Ordering::SeqCst);
        }
        if nth == target {
            marks.end.store(client.request_count(), Ordering::SeqCst);
            marks.end_applied.store(marks.applied().await, Ordering::SeqCst);
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

/// Request counts of a shared `Client` (and, with a `Ctl`, the agent's `applied_index`) right
/// after the release that opens the steady-state window and after the last counted release.
#[derive(Default)]
pub(crate) struct Marks {
    mid: AtomicU64,
    end: AtomicU64,
    mid_applied: AtomicU64,
    end_applied: AtomicU64,
    ctl: Option<Ctl>,
}

impl Marks {
    async fn applied(&self) -> u64 {
        match &self.ctl {
            Some(ctl) => ctl.applied_index().await,
            None => 0,
        }
    }

    /// Steady-state requests and Raft writes per handoff, over `handoffs` handoffs.
    fn steady(&self, handoffs: u64) -> Option<(f64, f64)> {
        let (mid, end) = (self.mid.load(Ordering::SeqCst), self.end.load(Ordering::SeqCst));
        let (a, b) = (self.mid_applied.load(Ordering::SeqCst), self.end_applied.load(Ordering::SeqCst));
        let per = |d: u64| d as f64 / handoffs.max(1) as f64;
        (mid > 0 && end > mid).then(|| (per(end - mid), per(b.saturating_sub(a))))
    }
}

/// The release after which the steady-state window opens: once every contender has had its first
/// turn, so that the window holds whole handoffs only (the requests of the start-up and of the waiters
/// still queued at the end are outside it).
fn steady_from(spec: &RunSpec) -> u64 {
    (spec.n as u64 + 1).min(spec.handoffs / 2).max(1)
}

pub(crate) struct ContendResult {
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
    steady_raft_per_handoff: Option<f64>,
    max_acquire_wait: f64,
}

fn analyze(spec: RunSpec, outs: Vec<Outcome>, requests: u64, steady: Option<(f64, f64)>, raft: u64) -> ContendResult {
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
        steady_reqs_per_handoff: steady.map(|s| s.0),
        raft_per_acq: raft as f64 / (recs.len() as u64 + extra).max(1) as f64,
        steady_raft_per_handoff: steady.map(|s| s.1),
        max_acquire_wait,
        spec,
    }
}

pub(crate) async fn run_tasks(addr: &str, spec: RunSpec) -> ContendResult {
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
    let marks = Arc::new(Marks { ctl: Some(ctl.clone()), ..Marks::default() });
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
    let steady = marks.steady(spec.handoffs + 1 - steady_from(&spec));
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

pub(crate) fn run_procs(rt: &tokio::runtime::Runtime, addr: &str, spec: RunSpec) -> ContendResult {
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

pub(crate) fn print_contend(results: &[ContendResult]) {
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
         acquisitions at the end included); `steady Raft writes` over the same window as `steady` requests.\n"
    );
    println!("| run | handoffs | handoff p50 ms | p90 ms | p99 ms | max (worst stall) ms | slowest `hold()` ms | req / handoff | steady req / handoff | Raft writes / acq | turns per contender (min–max) | max streak | violations | errors | steady Raft writes / handoff |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let h = &r.handoff;
        let (tmin, tmax) = (r.turns.iter().min().copied().unwrap_or(0), r.turns.iter().max().copied().unwrap_or(0));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.2} | {} | {:.2} | {}–{} | {} | {} | {} | {} |",
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
            r.errors,
            r.steady_raft_per_handoff.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"))
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
