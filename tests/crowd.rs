//! Crowds: waiters of a process or of a host never cost a holder its lock, never exceed their
//! client's connection budget, wait through an agent at its connection cap, and keep exclusion and
//! first-come-first-served turns. The agents here cap HTTP connections per client address at 20
//! (`limits.http_max_conns_per_client`, 200 by default), so a few dozen waiters make the crowd.

#![cfg(feature = "test-util")]

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_lock::testing::ConsulDev;
use consul_lock::{Client, EphemeralLock};
use serde_json::Value;
use tokio::time::Instant;

#[path = "support/sockets.rs"]
mod sockets;

const CAP: &str = "limits { http_max_conns_per_client = 20 }";
const TTL: Duration = Duration::from_secs(10);

/// One crowd at a time: each saturates an agent and the 2 cores of CI; side by side they would
/// measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn capped() -> ConsulDev {
    ConsulDev::start_with_args(&["-hcl", CAP]).unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}"))
}

fn client(dev: &ConsulDev, max: usize) -> Client {
    Client::builder().address(format!("http://{}", dev.http_addr())).max_connections(max).build().unwrap()
}

fn lock(client: &Client, key: &str, wait: Duration) -> EphemeralLock {
    EphemeralLock::new(key).client(client.clone()).ttl(TTL).lock_delay(Duration::ZERO).acquire_timeout(wait)
}

fn cli(dev: &ConsulDev, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consul-lock"));
    c.env("CONSUL_HTTP_ADDR", format!("http://{}", dev.http_addr()))
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Wait for a child at most `limit`; kill it past that. Its exit code and stderr.
fn finish(mut child: Child, limit: std::time::Duration) -> (Option<i32>, String) {
    let give_up = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.and_then(|s| s.code()), err)
}

/// A keep-alive HTTP/1.1 connection to the agent, opened before a crowd fills its cap: plain GETs
/// through it, never a new connection.
struct Kept(TcpStream);

impl Kept {
    fn open(dev: &ConsulDev) -> Kept {
        let s = TcpStream::connect(dev.http_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Kept(s)
    }

    /// `GET path`: the JSON body, `None` for 404.
    fn get(&mut self, path: &str) -> Option<Value> {
        use std::io::Write;
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: consul\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            self.chunked()
        } else {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            self.0.read_exact(&mut body).unwrap();
            body
        };
        if head.starts_with("http/1.1 404") {
            return None;
        }
        Some(serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body))))
    }

    /// A chunked body (what Consul sends for larger answers): `size\r\n data \r\n`, up to size 0.
    fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                while !self.line().is_empty() {} // trailers, then the empty line
                return body;
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.0.read_exact(&mut body[start..]).unwrap();
            assert!(self.line().is_empty(), "a chunk ends with CRLF");
        }
    }

    /// One line without its CRLF.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap()
    }
}

/// 60 tasks of the holder's own process wait through one `Client` (budget 32, more than the
/// agent's cap of 20): 10 on the holder's crowded key and 50 on keys of their own (held by another
/// client, so that each needs a blocking query: same-key waiters share one). Both held locks — the
/// crowded one and one nobody else wants — stay held for 3 × TTL, the crowd saturates the agent
/// (connections reset), and every waiter gets its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_its_locks_while_its_own_process_crowds_the_agent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let dev = capped();
    let client = dev.client();
    let held = lock(&client, "crowd/held", Duration::ZERO).hold().await.unwrap();
    let alone = lock(&client, "crowd/alone", Duration::ZERO).hold().await.unwrap();
    let blocker = consul_lock::Session::new(self::client(&dev, 1), Duration::from_secs(60)).await.unwrap();
    let mut blocked = Vec::new();
    for i in 0..50 {
        blocked.push(blocker.lock(format!("crowd/own/{i}")).acquire_timeout(Duration::ZERO).hold().await.unwrap());
    }
    let mut waiters = tokio::task::JoinSet::new();
    for i in 0..60 {
        let key = if i < 10 { "crowd/held".to_owned() } else { format!("crowd/own/{}", i - 10) };
        let l = lock(&client, &key, Duration::from_secs(150));
        waiters.spawn(async move {
            let g = l.hold().await.map_err(|e| format!("acquire: {e}"))?;
            g.release().await.map_err(|e| format!("release: {e}"))
        });
    }
    let end = Instant::now() + TTL * 3;
    while Instant::now() < end {
        assert!(held.is_held() && alone.is_held(), "a held lock was lost to the crowd");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(client.connection_resets() > 0, "the crowd never reached the agent's cap: the test proves nothing");
    assert!(held.is_held() && alone.is_held());
    held.release().await.unwrap();
    alone.release().await.unwrap();
    for g in blocked {
        g.release().await.unwrap();
    }
    let mut acquired = 0;
    while let Some(r) = waiters.join_next().await {
        r.unwrap().unwrap_or_else(|e| panic!("a waiter failed: {e}"));
        acquired += 1;
    }
    assert_eq!(acquired, 60);
}

/// 30 waiting `consul-lock run` processes behind one holder on an agent capped at 20: the holder
/// runs its command for 3 × TTL and exits 0 (not 75, lock lost), each waiter has at most one
/// connection to the agent while it waits, and all 30 run.
#[test]
fn a_holder_process_keeps_its_lock_while_30_waiting_processes_crowd_the_agent() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let dev = capped();
    let port = sockets::port_of(dev.http_addr());
    let holder = cli(&dev, &["run", "--ttl", "10s", "crowd/cli", "--", "sleep", "30"]).spawn().unwrap();
    let probe = client(&dev, 1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let held = rt.block_on(async {
        for _ in 0..100 {
            if probe.holder("crowd/cli").await.ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(held, "the holder never took the lock");
    let waiters: Vec<Child> = (0..30)
        .map(|_| cli(&dev, &["run", "-w", "120", "--ttl", "10s", "crowd/cli", "--", "true"]).spawn().unwrap())
        .collect();
    let mut most = 0;
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < until {
        for w in &waiters {
            most = most.max(sockets::of_process(w.id(), port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, err) = finish(holder, Duration::from_secs(40));
    assert_eq!(code, Some(0), "the holder lost its lock to the crowd: {err}");
    for w in waiters {
        let (code, err) = finish(w, Duration::from_secs(120));
        assert_eq!(code, Some(0), "a waiter did not run: {}", err.replace('\r', "\n"));
    }
    assert!(most <= 1, "a waiting consul-lock run had {most} connections to the agent");
}

/// A waiter told to wait 60 s — a `consul-lock run -w 60` and a task through a fresh `Client` —
/// keeps waiting while the agent resets its new connections, says why once, and acquires once the
/// crowd thins and the holder releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_waits_through_a_saturated_agent_and_says_why_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = capped();
    let holder_client = dev.client();
    let held = lock(&holder_client, "crowd/sat", Duration::ZERO).hold().await.unwrap();
    // The crowd: idle connections the agent counts from accept (it holds them open).
    let addr = dev.http_addr().to_owned();
    let crowd: Vec<TcpStream> = (0..25).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiter = cli(&dev, &["run", "-w", "60", "--ttl", "10s", "crowd/sat", "--", "true"]).spawn().unwrap();
    let fresh = dev.client();
    let task = tokio::spawn({
        let l = lock(&fresh, "crowd/sat", Duration::from_secs(60));
        async move {
            let g = l.hold().await?;
            g.release().await
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fresh.connection_resets() > 0, "the agent was not saturated");
    assert!(!task.is_finished(), "the task gave up while the agent was saturated");
    assert!(held.is_held(), "the holder lost its lock");
    drop(crowd);
    held.release().await.unwrap();
    let (code, err) = tokio::task::spawn_blocking(move || finish(waiter, Duration::from_secs(50))).await.unwrap();
    assert_eq!(code, Some(0), "the waiting consul-lock run failed: {err}");
    assert_eq!(err.matches("limits.http_max_conns_per_client").count(), 1, "the cap is said exactly once: {err}");
    tokio::time::timeout(Duration::from_secs(50), task).await.unwrap().unwrap().unwrap();
}

/// One `Client` with a budget of 4 holds two locks and has 40 tasks waiting on them: it never has
/// more than 4 connections to the agent (counted from /proc), and every waiter gets its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_never_has_more_connections_than_its_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = ConsulDev::start().unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}"));
    let port = sockets::port_of(dev.http_addr());
    let client = client(&dev, 4);
    let a = lock(&client, "budget/a", Duration::ZERO).hold().await.unwrap();
    let b = lock(&client, "budget/b", Duration::ZERO).hold().await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut waiters: tokio::task::JoinSet<consul_lock::Result<()>> = tokio::task::JoinSet::new();
    for i in 0..40 {
        let l = lock(&client, if i % 2 == 0 { "budget/a" } else { "budget/b" }, Duration::from_secs(120));
        let done = done.clone();
        waiters.spawn(async move {
            let g = l.hold().await?;
            g.release().await?;
            done.fetch_add(1, Ordering::SeqCst);
            consul_lock::Result::Ok(())
        });
    }
    let me = std::process::id();
    let mut most = 0;
    let sample_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < sample_until {
        most = most.max(sockets::of_process(me, port));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_held() && b.is_held());
    a.release().await.unwrap();
    b.release().await.unwrap();
    while done.load(Ordering::SeqCst) < 40 {
        most = most.max(sockets::of_process(me, port));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiters.is_empty());
        if let Some(Some(Err(e))) = waiters.try_join_next().map(|r| r.map_err(|e| e.to_string()).ok()) {
            panic!("a waiter failed: {e}");
        }
    }
    assert!(most >= 1, "connections were counted");
    assert!(most <= 4, "{most} connections for a budget of 4");
}

/// Under a crowd that saturates the agent (40 waiters through a budget of 32, at a cap of 20 of
/// which 17 idle sockets already take most): never two holders at once, and turns in the order the
/// waiters queued (their queue entries' CreateIndex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_and_order_hold_under_the_crowd() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = capped();
    let client = dev.client();
    let held = lock(&client, "crowd/fifo", Duration::ZERO).hold().await.unwrap();
    let mut kept = Kept::open(&dev);
    // The waiters of one key share one watch: other connections fill most of the cap instead.
    let fill: Vec<TcpStream> = (0..17).map(|_| TcpStream::connect(dev.http_addr()).unwrap()).collect();
    let inside = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let l = lock(&client, "crowd/fifo", Duration::from_secs(120));
        let (inside, turns) = (inside.clone(), turns.clone());
        waiters.spawn(async move {
            let g = l.hold().await?;
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
            turns.lock().unwrap().push((g.fencing_token(), g.session_id().to_owned()));
            tokio::time::sleep(Duration::from_millis(10)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            g.release().await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everyone queued: the order of the line is the entries' creation order.
    let mut line = Vec::new();
    for _ in 0..300 {
        let entries = kept.get("/v1/kv/crowd/fifo/.consul-lock-queue/?recurse").unwrap_or(Value::Array(Vec::new()));
        line = entries
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["CreateIndex"].as_u64()?, e["Session"].as_str()?.to_owned())))
            .collect::<Vec<_>>();
        if line.len() == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(line.len(), 40, "not everyone queued");
    line.sort();
    held.release().await.unwrap();
    while let Some(r) = waiters.join_next().await {
        r.unwrap().unwrap_or_else(|e| panic!("a waiter failed: {e}"));
    }
    let mut turns = turns.lock().unwrap().clone();
    turns.sort();
    let served: Vec<&str> = turns.iter().map(|(_, s)| s.as_str()).collect();
    let queued: Vec<&str> = line.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(served, queued, "turns were not first come, first served");
    assert!(client.connection_resets() > 0, "the agent was not saturated: the test proves nothing");
    drop(fill);
}

/// 200 tasks of one process wait on one held key through a budget of 8: only the head of the line
/// holds a blocking query; the others wait for their predecessor in this process to let its queue
/// entry go. So while they wait the client sends next to nothing, its connections stay within the
/// budget, and every handoff is quick: all 200 get the key, one at a time, first come first served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_waiters_of_one_process_share_one_watch() {
    const WAITERS: usize = 200;
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = ConsulDev::start().unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}"));
    let port = sockets::port_of(dev.http_addr());
    let client = client(&dev, 8);
    let held = lock(&client, "shared/one", Duration::ZERO).hold().await.unwrap();
    let mut kept = Kept::open(&dev);
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = tokio::task::JoinSet::new();
    for i in 0..WAITERS {
        let l = lock(&client, "shared/one", Duration::from_secs(120));
        let (inside, order) = (inside.clone(), order.clone());
        waiters.spawn(async move {
            let g = l.hold().await?;
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
            order.lock().unwrap().push(i);
            inside.fetch_sub(1, Ordering::SeqCst);
            g.release().await
        });
        // One at a time into the line, so that the order of arrival is known.
        let mut queued = 0;
        for _ in 0..500 {
            queued = kept.get("/v1/kv/shared/one/.consul-lock-queue/?keys").map_or(0, |v| v.as_array().unwrap().len());
            if queued > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(queued, i + 1, "waiter {i} did not queue");
    }
    drop(kept); // the test's own connection: only the client's are counted below
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = client.request_count();
    let mut most = 0;
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        most = most.max(sockets::of_process(std::process::id(), port));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = client.request_count() - before;
    // Renewals (200 sessions, every 5 s) and the waiters' rechecks (every 5-6 s): about 150 in 2 s.
    // A blocking query per waiter, rotated every 500 ms, would be about 800.
    assert!(sent < 400, "{WAITERS} waiters sent {sent} requests in 2 s of waiting");
    assert!(most <= 8, "{most} connections for a budget of 8");
    let t0 = Instant::now();
    held.release().await.unwrap();
    while let Some(r) = waiters.join_next().await {
        r.unwrap().unwrap_or_else(|e| panic!("a waiter failed: {e}"));
    }
    let took = t0.elapsed();
    let order = order.lock().unwrap().clone();
    let sorted: Vec<usize> = (0..WAITERS).collect();
    assert_eq!(order, sorted, "turns were not first come, first served");
    eprintln!("{WAITERS} handoffs in {took:?}; {sent} requests in 2 s of waiting; at most {most} connections");
}

/// The same, with the 200 waiters arriving at once (their queue entries written concurrently): each
/// one's predecessor is marked in-process before its entry exists, so no waiter falls back to a
/// blocking query of its own; every handoff stays in-process and all 200 get the key well within
/// their 60 s (a fallback per waiter would take minutes through a budget of 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_waiters_arriving_at_once_share_one_watch() {
    const WAITERS: usize = 200;
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = ConsulDev::start().unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}"));
    let port = sockets::port_of(dev.http_addr());
    let client = client(&dev, 8);
    let held = lock(&client, "shared/all", Duration::ZERO).hold().await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let l = lock(&client, "shared/all", Duration::from_secs(60));
        let inside = inside.clone();
        waiters.spawn(async move {
            let g = l.hold().await?;
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
            inside.fetch_sub(1, Ordering::SeqCst);
            g.release().await
        });
    }
    let mut kept = Kept::open(&dev);
    for _ in 0..300 {
        let queued = kept.get("/v1/kv/shared/all/.consul-lock-queue/?keys").map_or(0, |v| v.as_array().unwrap().len());
        if queued == WAITERS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(kept); // the test's own connection: only the client's are counted below
    let mut most = 0;
    held.release().await.unwrap();
    while !waiters.is_empty() {
        most = most.max(sockets::of_process(std::process::id(), port));
        if let Some(r) = waiters.try_join_next() {
            r.unwrap().unwrap_or_else(|e| panic!("a waiter failed: {e}"));
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(most <= 8, "{most} connections for a budget of 8");
    eprintln!("{WAITERS} waiters arriving at once: at most {most} connections");
}
