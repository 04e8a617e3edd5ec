//! The contender of the mutual-exclusion runs: take the lock (or, with a limit, a semaphore slot),
//! read-modify-write a shared counter file with a pause in between (lock only), record (token, pid,
//! enter, exit), release; repeat. Used by `tests/exclusion.rs` and `tests/semaphore_exclusion.rs`
//! (child processes) and `examples/stress.rs` (the full-size run), which also share [`check`] and
//! [`check_limit`], the verdicts on the merged records.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, EphemeralLock, Semaphore};

/// One critical section as seen by its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub token: u64,
    pub pid: u32,
    /// Wall-clock nanoseconds (all processes run on one machine: one clock).
    pub enter: u128,
    pub exit: u128,
}

/// What one worker is asked to do.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub addr: String,
    pub key: String,
    pub iterations: u32,
    /// Holds `counter` and one `log-<pid>` file per worker.
    pub dir: std::path::PathBuf,
    pub pause: Duration,
    /// Alternates release paths: a zero lock-delay releases by destroying the session, a non-zero
    /// one by the owner-checked delete.
    pub lock_delay: Duration,
    /// `Some(n)`: take a slot of a semaphore with `n` slots on `key` (as a prefix) instead of the lock.
    pub limit: Option<u32>,
}

impl WorkerSpec {
    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            ("CL_WORKER_ADDR".into(), self.addr.clone()),
            ("CL_WORKER_KEY".into(), self.key.clone()),
            ("CL_WORKER_ITERS".into(), self.iterations.to_string()),
            ("CL_WORKER_DIR".into(), self.dir.display().to_string()),
            ("CL_WORKER_PAUSE_US".into(), self.pause.as_micros().to_string()),
            ("CL_WORKER_LOCK_DELAY_MS".into(), self.lock_delay.as_millis().to_string()),
            ("CL_WORKER_LIMIT".into(), self.limit.map_or_else(String::new, |n| n.to_string())),
        ]
    }

    pub fn from_env() -> Option<WorkerSpec> {
        let get = |k: &str| std::env::var(k).ok();
        Some(WorkerSpec {
            addr: get("CL_WORKER_ADDR")?,
            key: get("CL_WORKER_KEY")?,
            iterations: get("CL_WORKER_ITERS")?.parse().ok()?,
            dir: get("CL_WORKER_DIR")?.into(),
            pause: Duration::from_micros(get("CL_WORKER_PAUSE_US")?.parse().ok()?),
            lock_delay: Duration::from_millis(get("CL_WORKER_LOCK_DELAY_MS")?.parse().ok()?),
            limit: get("CL_WORKER_LIMIT").and_then(|n| n.parse().ok()),
        })
    }
}

pub fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Run the worker loop; writes `log-<pid>` at the end. Errors are returned as text (the caller exits
/// non-zero with it).
pub async fn run_worker(spec: &WorkerSpec) -> Result<(), String> {
    let client = Client::builder().address(spec.addr.clone()).build().map_err(|e| e.to_string())?;
    let counter = spec.dir.join("counter");
    let pid = std::process::id();
    let mut sections = Vec::with_capacity(spec.iterations as usize);
    if let Some(limit) = spec.limit {
        return run_slot_worker(spec, &client, limit).await;
    }
    for i in 0..spec.iterations {
        let guard = EphemeralLock::new(&spec.key)
            .client(client.clone())
            .ttl(Duration::from_secs(10))
            .lock_delay(spec.lock_delay)
            .acquire_timeout(Duration::from_secs(300))
            .hold()
            .await
            .map_err(|e| format!("iteration {i}: acquire failed: {e}"))?;
        let enter = now_ns();
        let n: u64 = read_counter(&counter)?;
        tokio::time::sleep(spec.pause).await;
        std::fs::write(&counter, (n + 1).to_string()).map_err(|e| format!("write counter: {e}"))?;
        let exit = now_ns();
        if !guard.is_held() {
            return Err(format!("iteration {i}: lock lost inside the critical section"));
        }
        sections.push(Section { token: guard.fencing_token(), pid, enter, exit });
        guard.release().await.map_err(|e| format!("iteration {i}: release failed: {e}"))?;
    }
    write_log(spec, &sections)
}

fn write_log(spec: &WorkerSpec, sections: &[Section]) -> Result<(), String> {
    let log: String = sections.iter().map(|s| format!("{} {} {} {}\n", s.token, s.pid, s.enter, s.exit)).collect();
    std::fs::write(spec.dir.join(format!("log-{}", std::process::id())), log).map_err(|e| format!("write log: {e}"))
}

/// The semaphore variant: no counter (up to `limit` are inside at once), only the records.
async fn run_slot_worker(spec: &WorkerSpec, client: &Client, limit: u32) -> Result<(), String> {
    let mut sections = Vec::with_capacity(spec.iterations as usize);
    for i in 0..spec.iterations {
        let permit = Semaphore::new(&spec.key, limit)
            .client(client.clone())
            .ttl(Duration::from_secs(10))
            .lock_delay(spec.lock_delay)
            .acquire_timeout(Duration::from_secs(300))
            .hold()
            .await
            .map_err(|e| format!("iteration {i}: acquire failed: {e}"))?;
        let enter = now_ns();
        tokio::time::sleep(spec.pause).await;
        let exit = now_ns();
        if !permit.is_held() {
            return Err(format!("iteration {i}: slot lost inside the critical section"));
        }
        sections.push(Section { token: permit.token(), pid: std::process::id(), enter, exit });
        permit.release().await.map_err(|e| format!("iteration {i}: release failed: {e}"))?;
    }
    write_log(spec, &sections)
}

/// The semaphore verdict: every section recorded, never more than `limit` inside at once (and
/// `limit` reached, so the slots were used), tokens unique and increasing within each process.
/// Returns the most sections seen inside at once.
pub fn check_limit(dir: &Path, expected: usize, limit: usize) -> Result<usize, String> {
    let s = read_sections(dir)?;
    if s.len() != expected {
        return Err(format!("{} sections recorded, {expected} expected", s.len()));
    }
    let max = max_inside(s.iter().map(|x| (x.enter, x.exit)));
    if max > limit {
        return Err(format!("{max} sections inside at once; the limit is {limit}"));
    }
    let tokens: std::collections::HashSet<u64> = s.iter().map(|x| x.token).collect();
    if tokens.len() != s.len() {
        return Err("two admissions share a token".into());
    }
    for pid in s.iter().map(|x| x.pid).collect::<std::collections::HashSet<_>>() {
        let mut mine: Vec<&Section> = s.iter().filter(|x| x.pid == pid).collect();
        mine.sort_by_key(|x| x.enter);
        if mine.windows(2).any(|w| w[1].token <= w[0].token) {
            return Err(format!("tokens of process {pid} do not increase"));
        }
    }
    Ok(max)
}

/// The most intervals that overlap at one instant (an exit at the same instant as an enter does
/// not overlap it).
pub fn max_inside(intervals: impl Iterator<Item = (u128, u128)>) -> usize {
    let mut events: Vec<(u128, i32)> = intervals.flat_map(|(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort(); // at equal times the exit (-1) sorts first
    let (mut inside, mut max) = (0i32, 0i32);
    for (_, d) in events {
        inside += d;
        max = max.max(inside);
    }
    max as usize
}

fn read_counter(path: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|e| format!("counter file holds {s:?}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("read counter: {e}")),
    }
}

/// Every `log-*` file of `dir`, parsed.
pub fn read_sections(dir: &Path) -> Result<Vec<Section>, String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.file_name().to_string_lossy().starts_with("log-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("bad log line {line:?}");
            if f.len() != 4 {
                return Err(bad());
            }
            out.push(Section {
                token: f[0].parse().map_err(|_| bad())?,
                pid: f[1].parse().map_err(|_| bad())?,
                enter: f[2].parse().map_err(|_| bad())?,
                exit: f[3].parse().map_err(|_| bad())?,
            });
        }
    }
    Ok(out)
}

/// Figures of a verified run.
#[derive(Debug)]
pub struct Verdict {
    pub sections: usize,
    pub processes: usize,
    /// Handoffs between different processes.
    pub cross_process_handoffs: usize,
    /// Gaps between one exit and the next enter, in microseconds: median, p99, max.
    pub gap_us: (u128, u128, u128),
}

/// The mutual-exclusion verdict: counter = sections (no lost update), no two intervals overlap,
/// fencing tokens strictly increase in interval order.
pub fn check(dir: &Path, expected: usize) -> Result<Verdict, String> {
    let mut s = read_sections(dir)?;
    let counter = read_counter(&dir.join("counter"))?;
    if s.len() != expected {
        return Err(format!("{} critical sections recorded, {expected} expected", s.len()));
    }
    if counter != expected as u64 {
        return Err(format!("counter is {counter} after {expected} critical sections: lost updates"));
    }
    s.sort_by_key(|x| x.enter);
    let mut gaps = Vec::with_capacity(s.len());
    let mut cross = 0;
    for w in s.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.exit < a.enter || b.enter <= a.exit {
            return Err(format!("overlapping critical sections: {a:?} and {b:?}"));
        }
        if b.token <= a.token {
            return Err(format!("fencing tokens do not increase in interval order: {a:?} then {b:?}"));
        }
        if a.pid != b.pid {
            cross += 1;
        }
        gaps.push((b.enter - a.exit) / 1000);
    }
    gaps.sort_unstable();
    let pct = |p: usize| gaps.get((gaps.len().saturating_sub(1)) * p / 100).copied().unwrap_or(0);
    let processes = s.iter().map(|x| x.pid).collect::<std::collections::HashSet<_>>().len();
    Ok(Verdict { sections: s.len(), processes, cross_process_handoffs: cross, gap_us: (pct(50), pct(99), pct(100)) })
}
