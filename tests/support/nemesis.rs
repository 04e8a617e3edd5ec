//! The partition run (inside a private network namespace, see `support::netns`): a Consul cluster
//! of servers and client agents each on its own 127.0.0.x address, locking processes on the client
//! agents (`support::workload`), and a nemesis that opens bounded fault windows one after another
//! — partitions with nft, kill/restart, SIGSTOP/SIGCONT, a slow leader — healing between them.
//! Writes the merged history (`support::history`) and returns its checked report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::child::signal;
use super::cluster::Server;
use super::history::{check, Event, Report};
use super::netns::{die_with_parent, setup_loopback, Firewall};
use super::register::Register;
use super::workload::{append, now_ns, Kind, Rng, Spec};

/// The fault of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nemesis {
    /// The leader cut from every other node (servers and clients).
    IsolateLeader,
    /// A minority of servers with one client agent, cut from the rest.
    MajorityMinority,
    /// Two halves that cannot see each other, and one server that sees both.
    Bridge,
    /// One client agent cut from every server.
    ClientCut,
    /// SIGKILL a server, restart it on its data dir at the window's end.
    KillRestart,
    /// SIGSTOP a server, SIGCONT at the window's end.
    Pause,
    /// The leader stopped for 200 ms out of every 300 ms: every message to or from it waits up to
    /// 200 ms (this kernel has no netem; see docs/RELIABILITY.md).
    SlowLeader,
}

pub const ALL: [Nemesis; 7] = [
    Nemesis::IsolateLeader,
    Nemesis::MajorityMinority,
    Nemesis::Bridge,
    Nemesis::ClientCut,
    Nemesis::KillRestart,
    Nemesis::Pause,
    Nemesis::SlowLeader,
];

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::MajorityMinority => "majority-minority",
            Nemesis::Bridge => "bridge",
            Nemesis::ClientCut => "client-cut",
            Nemesis::KillRestart => "kill-restart",
            Nemesis::Pause => "pause",
            Nemesis::SlowLeader => "slow-leader",
        }
    }
}

/// A run's size.
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: usize,
    pub clients: usize,
    pub workers: usize,
    pub keys: Vec<(String, Kind)>,
    /// Total workload time.
    pub duration: Duration,
    pub window: Duration,
    /// Windows last between `window` and this (uniformly); longer than 2×TTL lets Consul expire a
    /// cut-off holder's session and give its key to another process, which fencing must then stop.
    pub window_max: Duration,
    /// Healthy time before each window.
    pub heal: Duration,
    pub nemeses: Vec<Nemesis>,
    pub dir: PathBuf,
    pub seed: u64,
    /// See `workload::Spec::long_every`.
    pub long_every: u64,
}

impl Config {
    /// The CI size: 3 servers, 3 client agents, 8 processes over 3 keys, one 10-s window of each
    /// nemesis with 5 s of health before it.
    pub fn ci(dir: PathBuf) -> Config {
        Config {
            servers: 3,
            clients: 3,
            workers: 8,
            keys: vec![("part/a".into(), Kind::Mutex), ("part/b".into(), Kind::Mutex), ("part/c".into(), Kind::Fair)],
            duration: Duration::from_secs(7 * 15 + 5),
            window: Duration::from_secs(10),
            window_max: Duration::from_secs(10),
            heal: Duration::from_secs(5),
            nemeses: ALL.to_vec(),
            dir,
            seed: now_ns(),
            long_every: 60,
        }
    }
}

/// The cluster of one run; every agent is killed (and its data dir removed) on drop.
struct Cluster {
    servers: Vec<Server>,
    clients: Vec<Server>,
}

impl Cluster {
    async fn start(servers: usize, clients: usize) -> Cluster {
        let ips: Vec<String> = (0..servers).map(|i| format!("127.0.0.{}", 2 + i)).collect();
        let mut c = Cluster {
            servers: (0..servers)
                .map(|i| Server::on_address(&format!("srv{i}"), &ips[i], Some(servers), &ips))
                .collect(),
            clients: (0..clients)
                .map(|i| Server::on_address(&format!("cli{i}"), &format!("127.0.0.{}", 10 + i), None, &ips))
                .collect(),
        };
        for s in c.servers.iter_mut().chain(c.clients.iter_mut()) {
            s.start();
        }
        for s in c.servers.iter().chain(c.clients.iter()) {
            s.wait_ready(Duration::from_secs(90)).await;
        }
        c
    }

    /// The leader's index, as the first server that knows one says (the first server if none does).
    async fn leader(&self) -> usize {
        for s in &self.servers {
            if let Some(l) = s.leader().await {
                if let Some(i) = self.servers.iter().position(|x| x.rpc_addr() == l) {
                    return i;
                }
            }
        }
        0
    }

    fn ips(v: &[&Server]) -> Vec<String> {
        v.iter().map(|s| s.ip.clone()).collect()
    }
}

/// Builds the command of one locking process from its environment.
pub type Spawn<'a> = dyn Fn(&[(String, String)]) -> Command + 'a;

/// Run the workload and the nemesis; returns the report of the merged history written to
/// `<dir>/history.jsonl`. `spawn` starts one locking process with the given environment.
pub async fn run(cfg: &Config, spawn: &Spawn<'_>) -> Report {
    setup_loopback();
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::create_dir_all(&cfg.dir).expect("run dir");
    let mut fw = Firewall::new();
    let mut cluster = Cluster::start(cfg.servers, cfg.clients).await;
    eprintln!("partition: {} servers, {} client agents ready; seed {}", cfg.servers, cfg.clients, cfg.seed);
    let t0 = Instant::now();
    let until_ms = now_ns() / 1_000_000 + cfg.duration.as_millis() as u64;
    let mut workers = Workers(
        (0..cfg.workers)
            .map(|i| {
                let spec = Spec {
                    addr: cluster.clients[i % cfg.clients].http_addr(),
                    keys: cfg.keys.clone(),
                    dir: cfg.dir.clone(),
                    until_ms,
                    seed: cfg.seed.wrapping_add(i as u64),
                    long_every: cfg.long_every,
                };
                let mut cmd = spawn(&spec.to_env());
                die_with_parent(&mut cmd).stdin(Stdio::null()).stdout(Stdio::null());
                cmd.spawn().expect("spawn a locking process")
            })
            .collect(),
    );
    let nemesis_log = cfg.dir.join("nemesis.jsonl");
    let mut rng = Rng::new(cfg.seed);
    let mut n = 0;
    // Bounded: each window fits before the workload's deadline.
    while t0.elapsed() + cfg.heal + cfg.window_max + Duration::from_secs(2) < cfg.duration {
        tokio::time::sleep(cfg.heal).await;
        let spread = cfg.window_max.saturating_sub(cfg.window).as_millis() as u64;
        let len = cfg.window + Duration::from_millis(rng.below(spread + 1));
        let kind = cfg.nemeses[n % cfg.nemeses.len()];
        n += 1;
        let start_ns = now_ns();
        let detail = window(&mut cluster, &mut fw, kind, len, &mut rng).await;
        let detail = format!("{detail}; then leader {}", cluster.servers[cluster.leader().await].name);
        let e = Event::Nemesis { kind: kind.name().into(), detail: detail.clone(), start_ns, end_ns: now_ns() };
        eprintln!("partition: {:>6.1?} {} ({detail})", t0.elapsed(), kind.name());
        append(&nemesis_log, &e);
    }
    let limit = cfg.duration + Duration::from_secs(90);
    let failed = workers.wait(t0 + limit);
    let reg = Register::new(&cfg.dir.join("register"));
    for (key, _) in &cfg.keys {
        let c = reg.cell(key);
        append(&nemesis_log, &Event::Final { key: key.clone(), value: c.value, seq: c.seq, max_token: c.max_token });
    }
    let history = merge(&cfg.dir);
    let report = check(&history);
    assert!(failed == 0, "{failed} locking processes failed (history in {})", cfg.dir.display());
    drop(cluster);
    report
}

/// One nemesis window: apply, wait `len`, heal. Returns what it did.
async fn window(c: &mut Cluster, fw: &mut Firewall, kind: Nemesis, len: Duration, rng: &mut Rng) -> String {
    let leader = c.leader().await;
    let pick = rng.below(c.servers.len() as u64) as usize;
    let detail = plan_cuts(c, fw, kind, leader, pick, rng);
    let victim = if rng.below(2) == 0 { leader } else { pick };
    let end = Instant::now() + len;
    let detail = match kind {
        Nemesis::KillRestart => {
            c.servers[victim].kill();
            tokio::time::sleep_until(end.into()).await;
            c.servers[victim].start();
            format!(
                "{} killed and restarted{}",
                c.servers[victim].name,
                if victim == leader { " (leader)" } else { "" }
            )
        }
        Nemesis::Pause => {
            let pid = c.servers[victim].pid().expect("a running server");
            signal(pid, libc::SIGSTOP);
            tokio::time::sleep_until(end.into()).await;
            signal(pid, libc::SIGCONT);
            format!("{} stopped{}", c.servers[victim].name, if victim == leader { " (leader)" } else { "" })
        }
        Nemesis::SlowLeader => {
            let pid = c.servers[leader].pid().expect("a running server");
            while Instant::now() < end {
                signal(pid, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(200)).await;
                signal(pid, libc::SIGCONT);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            format!("{} slowed", c.servers[leader].name)
        }
        _ => {
            fw.apply();
            let cuts = fw.cuts();
            tokio::time::sleep_until(end.into()).await;
            fw.clear();
            fw.apply();
            format!("{detail}; {cuts} links cut")
        }
    };
    detail
}

/// The links a partition nemesis cuts (added to `fw`, not applied); what it cut, in words.
fn plan_cuts(c: &Cluster, fw: &mut Firewall, kind: Nemesis, leader: usize, pick: usize, rng: &mut Rng) -> String {
    let ns = c.servers.len();
    let all: Vec<&Server> = c.servers.iter().chain(c.clients.iter()).collect();
    match kind {
        Nemesis::IsolateLeader => {
            let l = &c.servers[leader];
            let others: Vec<&Server> = all.iter().copied().filter(|s| s.ip != l.ip).collect();
            fw.split(std::slice::from_ref(&l.ip), &Cluster::ips(&others));
            format!("{} alone", l.name)
        }
        Nemesis::MajorityMinority | Nemesis::Bridge => {
            // Servers in a rotated order; clients alternate sides.
            let order: Vec<usize> = (0..ns).map(|i| (pick + i) % ns).collect();
            let (left_n, bridge) = match kind {
                Nemesis::Bridge => (ns / 2, Some(order[ns / 2])),
                _ => ((ns - 1) / 2, None),
            };
            let mut left: Vec<&Server> = order[..left_n].iter().map(|&i| &c.servers[i]).collect();
            let skip = left_n + usize::from(bridge.is_some());
            let mut right: Vec<&Server> = order[skip..].iter().map(|&i| &c.servers[i]).collect();
            for (i, cl) in c.clients.iter().enumerate() {
                if i % 2 == 0 {
                    left.push(cl)
                } else {
                    right.push(cl)
                }
            }
            fw.split(&Cluster::ips(&left), &Cluster::ips(&right));
            let names = |v: &[&Server]| v.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join("+");
            match bridge {
                Some(b) => format!("{} | {} | {}", names(&left), c.servers[b].name, names(&right)),
                None => format!("{} | {}", names(&left), names(&right)),
            }
        }
        Nemesis::ClientCut => {
            let cl = &c.clients[rng.below(c.clients.len() as u64) as usize];
            fw.split(std::slice::from_ref(&cl.ip), &Cluster::ips(&c.servers.iter().collect::<Vec<_>>()));
            format!("{} cut from all servers", cl.name)
        }
        Nemesis::KillRestart | Nemesis::Pause | Nemesis::SlowLeader => String::new(),
    }
}

/// The locking processes; killed on drop (a failed run leaves none behind).
struct Workers(Vec<Child>);

impl Workers {
    /// Wait for all until `end` (then kill the rest); returns how many did not succeed.
    fn wait(&mut self, end: Instant) -> usize {
        let mut failed = 0;
        for c in &mut self.0 {
            loop {
                match c.try_wait().expect("try_wait") {
                    Some(s) => {
                        failed += usize::from(!s.success());
                        break;
                    }
                    None if Instant::now() >= end => {
                        let _ = c.kill();
                        let _ = c.wait();
                        failed += 1;
                        break;
                    }
                    None => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        failed
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every process's history and the nemesis log, merged into `<dir>/history.jsonl`.
fn merge(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("run dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.file_name().is_some_and(|n| n != "history.jsonl"))
        .collect();
    names.sort();
    let text: String = names.iter().map(|p| std::fs::read_to_string(p).expect("history file")).collect();
    std::fs::write(dir.join("history.jsonl"), &text).expect("write history.jsonl");
    text
}
