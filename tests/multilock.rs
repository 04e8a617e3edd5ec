//! `MultiLock`: every key of a set in one transaction or none, against real agents. Basics and the
//! key layout; never part of a set; one token for all; Go's `consul lock` and `EphemeralLock` on a
//! member key exclude against the set; 8 processes taking random overlapping subsets of 6 keys (no
//! two holders of a key, no deadlock, no starvation); cancellation sweeps; guarded writes; the
//! blocking mirror.

#![cfg(feature = "test-util")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use consul_lock::{EphemeralLock, Error, KvOp, MultiLock, Session, LOCK_FLAGS, MAX_MULTI_LOCK_KEYS};
use support::child::{spawn_self, wait_bounded};
use support::*;

fn keys(name: &str, n: usize) -> Vec<String> {
    let base = unique(name);
    (0..n).map(|i| format!("{base}/k{i}")).collect()
}

async fn lost_soon(lost: impl std::future::Future<Output = ()>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), lost).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_every_key_with_one_token_and_releases_them_all() {
    let ks = keys("multi-basic", 5);
    let c = client();
    let guard = MultiLock::new(ks.iter().rev()).client(c.clone()).hold().await.unwrap();
    let mut sorted = ks.clone();
    sorted.sort();
    assert_eq!(guard.keys(), sorted.as_slice());
    for k in &ks {
        let kv = raw_kv(k).await.unwrap();
        assert_eq!(kv["Session"].as_str(), Some(guard.session_id()), "{k}");
        assert_eq!(kv["Flags"].as_u64(), Some(LOCK_FLAGS), "{k}: Go's lock flags");
        assert_eq!(kv["ModifyIndex"].as_u64(), Some(guard.fencing_token()), "{k}: one index for the set");
        assert_eq!(c.holder(k).await.unwrap().unwrap().session_id, guard.session_id());
    }
    assert!(guard.is_held());
    let sid = guard.session_id().to_owned();
    guard.release().await.unwrap();
    for k in &ks {
        assert!(raw_kv(k).await.is_none(), "{k} left behind");
    }
    assert!(eventually(Duration::from_secs(5), || async { !session_exists(&sid).await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_on_a_shared_session_is_two_requests_whatever_the_number_of_keys() {
    let c = client();
    let session = Session::new(c.clone(), Duration::from_secs(15)).await.unwrap();
    for n in [1, 2, 8, MAX_MULTI_LOCK_KEYS] {
        let ks = keys("multi-cost", n);
        let before = c.request_count();
        let guard = session.multi_lock(&ks).hold().await.unwrap();
        guard.release().await.unwrap();
        assert_eq!(c.request_count() - before, 2, "n = {n}: the acquire and the release");
        for k in &ks {
            assert!(raw_kv(k).await.is_none());
        }
    }
    session.destroy().await.unwrap();
}

/// A member key held by a plain lock: a one-shot multi-lock takes none of the others; a waiting one
/// holds none of them while it waits, and takes all of them once the key is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_holds_part_of_the_set() {
    let ks = keys("multi-none", 4);
    let c = client();
    let single = EphemeralLock::new(&ks[2]).client(c.clone()).hold().await.unwrap();
    let err = MultiLock::new(&ks).client(c.clone()).acquire_timeout(Duration::ZERO).hold().await.unwrap_err();
    assert!(matches!(&err, Error::NotAcquired { key, holder: Some(_), .. } if *key == ks[2]), "{err:?}");
    let waiting = tokio::spawn(MultiLock::new(&ks).client(c.clone()).acquire_timeout(Duration::from_secs(20)).hold());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished());
    for (i, k) in ks.iter().enumerate() {
        let holder = raw_holder(k).await;
        if i == 2 {
            assert_eq!(holder.as_deref(), Some(single.session_id()));
        } else {
            assert!(holder.is_none(), "{k} held while the set waits");
        }
    }
    single.release().await.unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    for k in &ks {
        assert_eq!(raw_holder(k).await.as_deref(), Some(guard.session_id()));
    }
    assert!(queue_entries(&ks[2]).await <= 1, "only our own entry while held");
    guard.release().await.unwrap();
    for k in &ks {
        assert_eq!(queue_entries(k).await, 0, "{k}: a queue entry left behind");
    }
}

/// Overlapping sets taken in opposite orders by many tasks cannot deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_sets_in_any_order_do_not_deadlock() {
    let ks = keys("multi-overlap", 3);
    let c = client();
    let sets: Vec<Vec<String>> = vec![
        vec![ks[0].clone(), ks[1].clone()],
        vec![ks[1].clone(), ks[0].clone()],
        vec![ks[1].clone(), ks[2].clone()],
        vec![ks[2].clone(), ks[0].clone()],
        ks.clone(),
    ];
    let tasks: Vec<_> = sets
        .into_iter()
        .map(|set| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..6 {
                    let g = MultiLock::new(&set)
                        .client(c.clone())
                        .lock_delay(Duration::ZERO)
                        .acquire_timeout(Duration::from_secs(30))
                        .hold()
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    g.release().await.unwrap();
                }
            })
        })
        .collect();
    let all = futures_join(tasks);
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("a deadlock: not done in 60 s");
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_key_of_another_primitive_is_a_conflict_and_nothing_is_taken() {
    let ks = keys("multi-conflict", 3);
    let c = client();
    let sem = consul_lock::Semaphore::new(&ks[1], 2).client(c.clone()).hold().await.unwrap();
    let member = format!("{}/.lock", ks[1]); // a semaphore's coordination key
    let set = vec![ks[0].clone(), member.clone(), ks[2].clone()];
    let err = MultiLock::new(&set).client(c.clone()).acquire_timeout(Duration::from_secs(2)).hold().await.unwrap_err();
    assert!(matches!(&err, Error::Conflict { key, .. } if *key == member), "{err:?}");
    assert!(raw_kv(&ks[0]).await.is_none() && raw_kv(&ks[2]).await.is_none());
    sem.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sets_are_refused_before_any_request() {
    let c = client();
    let before = c.request_count();
    let bad = |e: Error| assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
    bad(MultiLock::new(Vec::<String>::new()).client(c.clone()).hold().await.unwrap_err());
    let too_many: Vec<String> = (0..=MAX_MULTI_LOCK_KEYS).map(|i| format!("many/{i}")).collect();
    bad(MultiLock::new(&too_many).client(c.clone()).hold().await.unwrap_err());
    bad(MultiLock::new(["ok", "/bad"]).client(c.clone()).hold().await.unwrap_err());
    bad(MultiLock::new(["ok", "a/../b"]).client(c.clone()).hold().await.unwrap_err());
    bad(MultiLock::new(["a", "b"]).client(c.clone()).value(vec![0; 300 * 1024]).hold().await.unwrap_err());
    bad(MultiLock::new(["a"]).client(c.clone()).ttl(Duration::from_secs(1)).hold().await.unwrap_err());
    let session = Session::new(c.clone(), Duration::from_secs(15)).await.unwrap();
    let after_session = c.request_count();
    bad(session.multi_lock(["a", "b"]).ttl(Duration::from_secs(20)).hold().await.unwrap_err());
    assert_eq!(before + 1, after_session);
    assert_eq!(c.request_count(), after_session, "an invalid multi-lock sent a request");
    // Duplicates count once: 33 names, 32 keys.
    let mut dup: Vec<String> = (0..MAX_MULTI_LOCK_KEYS).map(|i| unique(&format!("dup{i}"))).collect();
    dup.push(dup[0].clone());
    let g = session.multi_lock(&dup).hold().await.unwrap();
    assert_eq!(g.keys().len(), MAX_MULTI_LOCK_KEYS);
    g.release().await.unwrap();
    session.destroy().await.unwrap();
}

/// Dropping the acquire at any moment of a contended wait leaves no key, queue entry or session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_sweep_leaves_nothing_behind() {
    let ks = keys("multi-cancel", 3);
    let c = client();
    let blocker = EphemeralLock::new(&ks[1]).client(c.clone()).hold().await.unwrap();
    let name = unique("multi-cancel-session");
    for delay_ms in [0u64, 1, 3, 7, 15, 30, 60, 120, 250] {
        let fut = MultiLock::new(&ks)
            .client(c.clone())
            .session_name(name.clone())
            .acquire_timeout(Duration::from_secs(30))
            .hold();
        let r = tokio::time::timeout(Duration::from_millis(delay_ms), fut).await;
        assert!(r.is_err(), "acquired while blocked");
    }
    // Uncontended too: cancelled mid-acquire, or acquired and dropped.
    let free = keys("multi-cancel-free", 3);
    for delay_ms in [0u64, 1, 2, 4, 8, 16] {
        let fut = MultiLock::new(&free).client(c.clone()).session_name(name.clone()).hold();
        let _ = tokio::time::timeout(Duration::from_millis(delay_ms), fut).await;
    }
    let clean = eventually(Duration::from_secs(10), || async {
        let mut ok = sessions_named(&name).await.is_empty();
        for k in ks.iter().chain(&free) {
            ok &= queue_entries(k).await == 0;
            ok &= k == &ks[1] || raw_kv(k).await.is_none();
        }
        ok
    })
    .await;
    assert!(clean, "a cancelled multi-lock left a session, key or queue entry behind");
    assert_eq!(raw_holder(&ks[1]).await.as_deref(), Some(blocker.session_id()));
    blocker.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_and_loss() {
    let ks = keys("multi-guarded", 3);
    let data = unique("multi-data");
    let c = client();
    let guard = MultiLock::new(&ks).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    guard.txn(vec![KvOp::put(&data, "set"), KvOp::put(format!("{data}-2"), "set")]).await.unwrap();
    assert!(matches!(guard.put(&ks[0], "x").await, Err(Error::InvalidConfig(_))));
    // An operator deletes one member key: the next guarded write finds the set lost.
    raw_delete(&ks[1]).await;
    let err = guard.put(&data, "stale").await.unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert!(!guard.is_held());
    assert!(lost_soon(guard.lost()).await);
    guard.release().await.unwrap();
    // The cleanup started in the background when the loss was seen; it deletes what is still ours.
    for k in &ks {
        let gone = eventually(Duration::from_secs(10), || async { raw_kv(k).await.is_none() }).await;
        assert!(gone, "{k}: the lost set's cleanup left it");
    }
    // A destroyed session: lost() resolves (one watch on the session).
    let guard = MultiLock::new(&ks).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    destroy_session(guard.session_id()).await;
    assert!(lost_soon(guard.lost()).await);
    assert!(guard.put(&data, "stale").await.unwrap_err().is_lost());
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_lock_on_a_member_key_excludes_against_the_set() {
    let ks = keys("multi-vs-lock", 3);
    let c = client();
    let guard = MultiLock::new(&ks).client(c.clone()).hold().await.unwrap();
    let err = EphemeralLock::new(&ks[1]).client(c.clone()).acquire_timeout(Duration::ZERO).hold().await.unwrap_err();
    assert!(err.is_not_acquired());
    let waiter =
        tokio::spawn(EphemeralLock::new(&ks[1]).client(c.clone()).acquire_timeout(Duration::from_secs(10)).hold());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let token = guard.fencing_token();
    guard.release().await.unwrap();
    let single = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert!(single.fencing_token() > token);
    single.release().await.unwrap();
}

/// HashiCorp's `consul lock` (Go's `api.Lock`) on a member key waits while the set is held and
/// takes the key after; while Go holds it, the set waits.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_lock_on_a_member_key_excludes() {
    let prefix = unique("multi-go");
    let ks = vec![format!("{prefix}/a"), format!("{prefix}/b/.lock")];
    let c = client();
    let guard = MultiLock::new(&ks).client(c.clone()).hold().await.unwrap();
    let marker = std::env::temp_dir().join(format!("consul-lock-multi-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // `consul lock PREFIX cmd` locks PREFIX/.lock: the set's second key.
    let mut go = tokio::process::Command::new(consul().binary())
        .args([
            "lock",
            &format!("-http-addr={}", consul().http_addr()),
            "-timeout=30s",
            &format!("{prefix}/b"),
            &format!("touch {}; sleep 1", marker.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "consul lock ran while the set held its key");
    guard.release().await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { marker.exists() }).await, "consul lock never ran");
    // Go holds the key now (for about a second): the set waits, then takes it.
    let t0 = Instant::now();
    let set = MultiLock::new(&ks).client(c.clone()).acquire_timeout(Duration::from_secs(20)).hold().await.unwrap();
    assert!(go.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_millis(100));
    assert!(go.wait().await.unwrap().success());
    set.release().await.unwrap();
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn the_blocking_mirror() {
    use consul_lock::blocking;
    let c = blocking::Client::new(consul().client()).unwrap();
    let ks = keys("multi-blocking", 3);
    let data = unique("multi-data");
    let guard = blocking::MultiLock::new(&ks).client(c.clone()).hold().unwrap();
    assert_eq!(guard.keys().len(), 3);
    guard.put(&data, "x").unwrap();
    let mut other = blocking::MultiLock::new([&ks[0]]).client(c.clone()).acquire_timeout(Duration::from_millis(200));
    assert!(!other.acquire(false).unwrap());
    guard.release().unwrap();
    assert!(other.acquire(true).unwrap());
    assert!(other.fencing_token().is_some());
    other.release().unwrap();
    let session = blocking::Session::new(&c, Duration::from_secs(15)).unwrap();
    let g = session.multi_lock(&ks).hold().unwrap();
    assert!(g.is_held() && !g.lost_timeout(Duration::from_millis(50)));
    g.release().unwrap();
}

// ------------------------------------------------------------------------------------------------
// 8 processes, random overlapping subsets of 6 keys
// ------------------------------------------------------------------------------------------------

const WORKER: &str = "multilock_worker_child";
const PROCESSES: u64 = 8;
const SECTIONS_EACH: u64 = 63; // 8 × 63 = 504 critical sections
const KEYS: usize = 6;

/// Not a test by itself: the body of each child process of `processes_take_random_overlapping_sets`.
#[test]
#[ignore = "child process of the multi-lock test; run by it"]
fn multilock_worker_child() {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run by the multi-lock test"));
    let (addr, base, dir) = (env("ML_ADDR"), env("ML_BASE"), PathBuf::from(env("ML_DIR")));
    let seed: u64 = env("ML_SEED").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(worker(&addr, &base, &dir, seed));
}

async fn worker(addr: &str, base: &str, dir: &Path, seed: u64) {
    use std::io::Write;
    let c = consul_lock::Client::builder().address(addr).build().unwrap();
    // Half the processes take their sets through one shared session, half with a session each time.
    let shared = if seed % 2 == 0 {
        Some(Session::with_lock_delay(c.clone(), Duration::from_secs(15), Duration::ZERO).await.unwrap())
    } else {
        None
    };
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut log = std::fs::File::create(dir.join(format!("{seed}.log"))).unwrap();
    for _ in 0..SECTIONS_EACH {
        let mask = loop {
            let m = next() % (1 << KEYS);
            if (1..=3).contains(&(m as u32).count_ones()) {
                break m;
            }
        };
        let set: Vec<String> = (0..KEYS).filter(|i| mask & (1 << i) != 0).map(|i| format!("{base}/k{i}")).collect();
        let lock = match &shared {
            Some(s) => s.multi_lock(&set),
            None => MultiLock::new(&set).client(c.clone()).lock_delay(Duration::ZERO),
        };
        let asked = Instant::now();
        let guard = lock.acquire_timeout(Duration::from_secs(60)).hold().await.unwrap();
        let waited = asked.elapsed().as_millis();
        let enter = now_ns();
        tokio::time::sleep(Duration::from_millis(1 + next() % 3)).await;
        let exit = now_ns();
        assert!(guard.is_held());
        writeln!(log, "{mask} {enter} {exit} {} {waited}", guard.fencing_token()).unwrap();
        guard.release().await.unwrap();
    }
    if let Some(s) = shared {
        s.destroy().await.unwrap();
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn processes_take_random_overlapping_sets() {
    let dir = std::env::temp_dir().join(format!("consul-lock-multi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = unique("multi-procs");
    let t0 = Instant::now();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|seed| {
            let env = vec![
                ("ML_ADDR".to_owned(), consul().http_addr().to_owned()),
                ("ML_BASE".to_owned(), base.clone()),
                ("ML_DIR".to_owned(), dir.display().to_string()),
                ("ML_SEED".to_owned(), seed.to_string()),
            ];
            spawn_self(WORKER, &env)
        })
        .collect();
    // No deadlock: every process finishes within the bound.
    for c in &mut children {
        let status = wait_bounded(c, Duration::from_secs(300));
        assert!(status.success(), "a worker failed: {status}");
    }
    let elapsed = t0.elapsed();
    // (mask, enter, exit, token, waited ms) of every section.
    let mut sections = Vec::new();
    for seed in 0..PROCESSES {
        let text = std::fs::read_to_string(dir.join(format!("{seed}.log"))).unwrap();
        let rows: Vec<Vec<u128>> = text.lines().map(|l| l.split(' ').map(|f| f.parse().unwrap()).collect()).collect();
        assert_eq!(rows.len() as u64, SECTIONS_EACH, "process {seed} did not finish its sections");
        sections.extend(rows);
    }
    // Never two holders of a key, and per key the tokens increase in the order of the sections.
    for k in 0..KEYS {
        let mut on_key: Vec<&Vec<u128>> = sections.iter().filter(|s| s[0] & (1 << k) != 0).collect();
        on_key.sort_by_key(|s| s[1]);
        for w in on_key.windows(2) {
            assert!(w[0][2] <= w[1][1], "key {k} held twice at once: {:?} and {:?}", w[0], w[1]);
            assert!(w[0][3] < w[1][3], "key {k}: tokens not increasing: {:?} then {:?}", w[0], w[1]);
        }
    }
    // No starvation: no acquire waited anywhere near the bound.
    let worst = sections.iter().map(|s| s[4]).max().unwrap_or(0);
    eprintln!("{} sections in {elapsed:?}; the longest wait {worst} ms", sections.len());
    assert!(worst < 20_000, "an acquire waited {worst} ms: starved");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `consul-lock run KEY --also KEY2 -- CMD`: the command runs holding both keys and sees them; with
/// a member key held elsewhere, `-n` exits with the conflict code and takes nothing.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_command_under_several_keys() {
    let ks = keys("multi-cli", 2);
    let out = std::env::temp_dir().join(format!("consul-lock-multi-cli-{}", std::process::id()));
    let run = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_consul-lock"));
        cmd.args(["run", "--http-addr", consul().http_addr()]).args(extra).args([
            ks[1].as_str(),
            "--also",
            ks[0].as_str(),
            "--",
            "sh",
            "-c",
            &format!("printf '%s|%s' \"$CONSUL_LOCK_KEY\" \"$CONSUL_LOCK_FENCING_TOKEN\" > {}", out.display()),
        ]);
        cmd.stderr(std::process::Stdio::null());
        cmd
    };
    assert!(run(&[]).status().await.unwrap().success());
    let seen = std::fs::read_to_string(&out).unwrap();
    let (names, token) = seen.split_once('|').unwrap();
    assert_eq!(names, format!("{}\n{}", ks[0], ks[1]));
    assert!(token.parse::<u64>().unwrap() > 0);
    for k in &ks {
        assert!(raw_kv(k).await.is_none(), "{k} left held after the command");
    }
    let _ = std::fs::remove_file(&out);
    let other = EphemeralLock::new(&ks[0]).client(client()).hold().await.unwrap();
    let status = run(&["-n"]).status().await.unwrap();
    assert_eq!(status.code(), Some(1), "the conflict code");
    assert!(!out.exists(), "the command ran without the set");
    assert!(raw_kv(&ks[1]).await.is_none(), "took part of the set");
    other.release().await.unwrap();
}

// Fuzzed sets: never a panic; an invalid set (no keys, more than 32 distinct, any invalid key) is
// InvalidConfig before any request; a valid one gets as far as the network (a closed port here).
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn fuzzed_sets_are_judged_before_any_request(
        keys in proptest::collection::vec("[a-c/. \\x00\\n%?é]{0,5}", 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = closed_port_client();
        let valid_key = |k: &str| {
            !k.is_empty() && !k.starts_with('/') && !k.chars().any(char::is_control) && {
                let segs: Vec<&str> = k.split('/').collect();
                segs.iter().enumerate().all(|(i, s)| *s != "." && *s != ".." && (!s.is_empty() || i == segs.len() - 1))
            }
        };
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        let valid = keys.iter().all(|k| valid_key(k)) && (1..=MAX_MULTI_LOCK_KEYS).contains(&distinct.len());
        let r = rt.block_on(MultiLock::new(&keys).client(c.clone()).acquire_timeout(Duration::ZERO).hold());
        match r {
            Err(Error::InvalidConfig(_)) => {
                proptest::prop_assert!(!valid, "a valid set refused: {keys:?}");
                proptest::prop_assert_eq!(c.request_count(), 0);
            }
            Err(e) => proptest::prop_assert!(valid && matches!(e, Error::Transport(_)), "{keys:?}: {e:?}"),
            Ok(_) => proptest::prop_assert!(false, "acquired through a closed port"),
        }
    }
}
