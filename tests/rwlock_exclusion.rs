//! A read-write lock under contention: 8 OS processes (this test binary re-run as children) take one
//! lock 300 times each, a quarter of the requests writers, half the processes through a shared
//! `Session` and half with a session per request. Verdict on the merged records: never a writer
//! with anyone, readers truly concurrent (more than one inside at once), served in arrival order
//! (nobody that arrived after a writer enters before that writer leaves), writers' fencing tokens
//! strictly increasing.

#![cfg(feature = "test-util")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use consul_lock::{Client, RwLock, Session};
use support::child::{spawn_self, wait_bounded};
use support::worker::{max_inside, now_ns};
use support::*;

const WORKER: &str = "rwlock_worker_child";
const PROCESSES: u32 = 8;
const SECTIONS: u32 = 300;

/// One section as its process saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Section {
    write: bool,
    token: u64,
    arrival: u64,
    pid: u32,
    enter: u128,
    exit: u128,
}

/// Not a test by itself: the body of each child process of `eight_processes_mixed_readers_and_writers`.
#[test]
#[ignore = "child process of the read-write lock exclusion test; run by it"]
fn rwlock_worker_child() {
    let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by the parent test"));
    let (addr, key, dir) = (get("CL_RW_ADDR"), get("CL_RW_KEY"), PathBuf::from(get("CL_RW_DIR")));
    let shared = get("CL_RW_SHARED") == "1";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Err(e) = rt.block_on(worker(&addr, &key, &dir, shared)) {
        panic!("worker {} failed: {e}", std::process::id());
    }
}

async fn worker(addr: &str, key: &str, dir: &Path, shared: bool) -> Result<(), String> {
    let client = Client::builder().address(addr).build().map_err(|e| e.to_string())?;
    let session = match shared {
        true => Some(Session::new(client.clone(), Duration::from_secs(15)).await.map_err(|e| e.to_string())?),
        false => None,
    };
    let lock = match &session {
        Some(s) => s.rw_lock(key),
        None => RwLock::new(key).client(client).ttl(Duration::from_secs(10)).lock_delay(Duration::ZERO),
    }
    .acquire_timeout(Duration::from_secs(120));
    let pid = std::process::id();
    let mut out = String::new();
    for i in 0..SECTIONS {
        let write = (i + pid) % 4 == 0;
        let s = if write {
            let g = lock.write().await.map_err(|e| format!("section {i}: write failed: {e}"))?;
            let enter = now_ns();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let exit = now_ns();
            if !g.is_held() {
                return Err(format!("section {i}: write lock lost inside the section"));
            }
            let s = Section { write, token: g.fencing_token(), arrival: g.arrival(), pid, enter, exit };
            g.release().await.map_err(|e| format!("section {i}: release failed: {e}"))?;
            s
        } else {
            let g = lock.read().await.map_err(|e| format!("section {i}: read failed: {e}"))?;
            let enter = now_ns();
            tokio::time::sleep(Duration::from_millis(4)).await;
            let exit = now_ns();
            if !g.is_held() {
                return Err(format!("section {i}: read lock lost inside the section"));
            }
            let s = Section { write, token: 0, arrival: g.arrival(), pid, enter, exit };
            g.release().await.map_err(|e| format!("section {i}: release failed: {e}"))?;
            s
        };
        out += &format!("{} {} {} {} {} {}\n", u8::from(s.write), s.token, s.arrival, s.pid, s.enter, s.exit);
    }
    if let Some(s) = session {
        s.destroy().await.map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join(format!("log-{pid}")), out).map_err(|e| e.to_string())
}

fn read_sections(dir: &Path) -> Vec<Section> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let f: Vec<u128> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
            all.push(Section {
                write: f[0] == 1,
                token: f[1] as u64,
                arrival: f[2] as u64,
                pid: f[3] as u32,
                enter: f[4],
                exit: f[5],
            });
        }
    }
    all
}

/// The verdict; returns the most readers inside at once.
fn check(s: &[Section]) -> Result<usize, String> {
    let overlaps = |a: &Section, b: &Section| a.enter < b.exit && b.enter < a.exit;
    let mut writers: Vec<&Section> = s.iter().filter(|x| x.write).collect();
    writers.sort_by_key(|w| w.enter);
    for w in &writers {
        if let Some(o) = s.iter().find(|o| *o != *w && overlaps(w, o)) {
            return Err(format!("a writer was not alone: {w:?} and {o:?}"));
        }
        // Arrival order: nobody that arrived after the writer got in before it left.
        if let Some(o) = s.iter().find(|o| o.arrival > w.arrival && o.enter < w.exit) {
            return Err(format!("{o:?} arrived after the writer {w:?} but entered before it left"));
        }
    }
    if writers.windows(2).any(|p| p[1].token <= p[0].token) {
        return Err("writers' fencing tokens do not strictly increase".into());
    }
    let arrivals: std::collections::HashSet<(u64, u32)> = s.iter().map(|x| (x.arrival, x.pid)).collect();
    if arrivals.len() != s.len() {
        return Err("two sections share an arrival".into());
    }
    Ok(max_inside(s.iter().filter(|x| !x.write).map(|x| (x.enter, x.exit))))
}

#[test]
fn eight_processes_mixed_readers_and_writers() {
    let consul = consul();
    let dir = std::env::temp_dir().join(format!("consul-lock-rw-excl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = unique("rw-exclusion");
    let t0 = Instant::now();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let env = [
                ("CL_RW_ADDR", consul.http_addr().to_owned()),
                ("CL_RW_KEY", key.clone()),
                ("CL_RW_DIR", dir.display().to_string()),
                ("CL_RW_SHARED", if i % 2 == 0 { "1" } else { "0" }.to_owned()),
            ];
            spawn_self(WORKER, &env.map(|(k, v)| (k.to_owned(), v)))
        })
        .collect();
    for c in &mut children {
        let status = wait_bounded(c, Duration::from_secs(400));
        assert!(status.success(), "a worker failed: {status}");
    }
    let sections = read_sections(&dir);
    assert_eq!(sections.len(), (PROCESSES * SECTIONS) as usize, "every section recorded");
    let peak = check(&sections).unwrap_or_else(|e| panic!("{e}"));
    let writes = sections.iter().filter(|s| s.write).count();
    eprintln!(
        "rwlock exclusion: {} sections ({writes} writes) in {:.1?}, up to {peak} readers at once",
        sections.len(),
        t0.elapsed()
    );
    assert!(peak > 1, "readers never shared the lock");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_verdict_catches_what_it_must() {
    let sec = |write, arrival, enter, exit| Section { write, token: arrival, arrival, pid: 1, enter, exit };
    assert_eq!(check(&[sec(false, 1, 0, 10), sec(false, 2, 5, 15), sec(true, 3, 20, 30)]), Ok(2));
    assert!(check(&[sec(true, 1, 0, 10), sec(false, 2, 5, 15)]).is_err(), "a reader inside with a writer");
    assert!(check(&[sec(false, 1, 0, 10), sec(true, 2, 20, 30), sec(false, 3, 12, 15)]).is_err(), "overtaken");
}
