//! The partition run's locking processes: each loops until a deadline over a set of keys, taking
//! one at a time (its kind says how: a plain mutex or fair mode), doing a read-modify-write of the
//! fenced register under it, and appending what it saw to its own history file (JSON lines, see
//! `support::history`). Configured through environment variables, as a child process.
//!
//! A new key type (a semaphore, an election) is one more [`Kind`] arm: how to take it, its limit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, EphemeralLock, LockGuard};

use super::history::{Event, Section};
use super::register::Register;

/// How a key is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mutex,
    Fair,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Fair => "fair",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Mutex, Kind::Fair].into_iter().find(|k| k.name() == s)
    }

    /// Holders admitted at once.
    pub fn limit(self) -> u32 {
        1
    }

    async fn take(self, client: &Client, key: &str, lock_delay: Duration) -> consul_lock::Result<LockGuard> {
        EphemeralLock::new(key)
            .client(client.clone())
            .ttl(TTL)
            .lock_delay(lock_delay)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .fair(self == Kind::Fair)
            .hold()
            .await
    }
}

pub const TTL: Duration = Duration::from_secs(10);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One locking process's configuration.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The client agent's HTTP address.
    pub addr: String,
    pub keys: Vec<(String, Kind)>,
    /// Holds the register and the history files.
    pub dir: PathBuf,
    /// Wall-clock deadline (unix ms): no new section starts after it.
    pub until_ms: u64,
    pub seed: u64,
    /// One section in this many (on average) lasts 2–12 s, longer than the TTL, so that faults hit
    /// held locks; the others last 2–22 ms.
    pub long_every: u64,
}

impl Spec {
    pub fn to_env(&self) -> Vec<(String, String)> {
        let keys: Vec<String> = self.keys.iter().map(|(k, kind)| format!("{k}={}", kind.name())).collect();
        vec![
            ("CL_PART_ADDR".into(), self.addr.clone()),
            ("CL_PART_KEYS".into(), keys.join(",")),
            ("CL_PART_DIR".into(), self.dir.display().to_string()),
            ("CL_PART_UNTIL_MS".into(), self.until_ms.to_string()),
            ("CL_PART_SEED".into(), self.seed.to_string()),
            ("CL_PART_LONG_EVERY".into(), self.long_every.to_string()),
        ]
    }

    pub fn from_env() -> Option<Spec> {
        let get = |k: &str| std::env::var(k).ok();
        let keys = get("CL_PART_KEYS")?
            .split(',')
            .map(|kv| kv.split_once('=').and_then(|(k, kind)| Some((k.to_owned(), Kind::parse(kind)?))))
            .collect::<Option<Vec<_>>>()?;
        Some(Spec {
            addr: get("CL_PART_ADDR")?,
            keys,
            dir: get("CL_PART_DIR")?.into(),
            until_ms: get("CL_PART_UNTIL_MS")?.parse().ok()?,
            seed: get("CL_PART_SEED")?.parse().ok()?,
            long_every: get("CL_PART_LONG_EVERY")?.parse().ok()?,
        })
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A small deterministic generator (xorshift64*), so a run is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Append one event to `path` (one JSON line, written at once).
pub fn append(path: &Path, e: &Event) {
    let mut line = serde_json::to_string(e).expect("serialize an event");
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("history file");
    f.write_all(line.as_bytes()).expect("append to history");
}

/// The process loop; returns the number of sections done.
pub async fn run(spec: &Spec) -> Result<u64, String> {
    let client = Client::builder()
        .address(spec.addr.clone())
        .request_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let pid = std::process::id();
    let reg = Register::new(&spec.dir.join("register"));
    let log = spec.dir.join(format!("history-{pid}.jsonl"));
    let mut rng = Rng::new(spec.seed ^ u64::from(pid));
    let mut done = 0;
    // Bounded by the deadline; each turn by the acquire timeout and the hard timeouts below.
    while now_ns() / 1_000_000 < spec.until_ms {
        let (key, kind) = &spec.keys[rng.below(spec.keys.len() as u64) as usize];
        let lock_delay = Duration::from_millis(if rng.below(2) == 0 { 0 } else { 1000 });
        let taken = tokio::time::timeout(ACQUIRE_TIMEOUT * 4, kind.take(&client, key, lock_delay)).await;
        let guard = match taken {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                append(&log, &Event::AcquireFailed { key: key.clone(), pid, at_ns: now_ns(), error: e.to_string() });
                tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
                continue;
            }
            Err(_) => return Err(format!("{key}: hold() still pending after {:?}", ACQUIRE_TIMEOUT * 4)),
        };
        let pause = if rng.below(spec.long_every) == 0 {
            Duration::from_millis(2_000 + rng.below(10_000))
        } else {
            Duration::from_millis(2 + rng.below(20))
        };
        let s = section(&reg, &guard, *kind, pid, pause).await;
        append(&log, &Event::Section(s));
        let _ = tokio::time::timeout(Duration::from_secs(10), guard.release()).await;
        done += 1;
    }
    Ok(done)
}

/// The critical section: fenced read, pause, fenced write of read + 1.
async fn section(reg: &Register, guard: &LockGuard, kind: Kind, pid: u32, pause: Duration) -> Section {
    let (key, token) = (guard.key().to_owned(), guard.fencing_token());
    let enter_ns = now_ns();
    let read = reg.read(&key, token).ok();
    tokio::time::sleep(pause).await;
    let wrote = read.map(|v| v + 1);
    let write_seq = wrote.and_then(|v| reg.write(&key, token, v).ok());
    let exit_ns = now_ns();
    let held_at_exit = guard.is_held();
    Section {
        key,
        kind: kind.name().into(),
        limit: kind.limit(),
        term: None,
        token,
        pid,
        enter_ns,
        exit_ns,
        held_at_exit,
        read,
        wrote,
        write_seq,
    }
}
