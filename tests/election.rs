//! Leader election against a real agent: one leader at a time across processes, handoff on resign,
//! failover after SIGKILL and SIGSTOP, a stale leader's proclaim refused, and observers that see
//! every leader and value in order, across a vacancy, a delete from outside, an agent outage and a
//! real restart of the agent.
//! Candidates in other processes are this test binary re-run as children (tests/support/child.rs).

#![cfg(feature = "test-util")]

mod support;

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::{Client, Election, Leader};
use support::child::{report_lines, signal, spawn_self, wait_bounded};
use support::cluster::single_server;
use support::proxy::{Fault, FaultProxy};
use support::*;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_millis(500);
const CANDIDATE: &str = "election_candidate_child";

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Not a test by itself: a candidate on `CL_KEY` named `CL_NAME`. `CL_MODE=rotate:N:MS`: N times
/// campaign, report `LEADER <term> <ns> <name> <session>`, lead MS ms, report `RESIGN <term> <ns>`,
/// resign. `CL_MODE=hold`: campaign, report `LEADER …`, wait for `lost()`, report
/// `LOST <is_leader>`, try to proclaim `stale-<name>`, report `PROCLAIM ok|lost|<error>`.
#[test]
#[ignore = "child process of the election tests; run by them"]
fn election_candidate_child() {
    let var = |k: &str| std::env::var(k).expect("run by the election tests");
    let (addr, key, name, mode) = (var("CL_ADDR"), var("CL_KEY"), var("CL_NAME"), var("CL_MODE"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::builder().address(addr).build().unwrap();
        let election = Election::new(&key).client(client).ttl(TTL).lock_delay(LOCK_DELAY);
        let leader_line = |l: &consul_lock::Leadership| {
            println!("@@ LEADER {} {} {} {}", l.term(), now_ns(), name, l.session_id());
        };
        if let Some(spec) = mode.strip_prefix("rotate:") {
            let (n, ms) = spec.split_once(':').unwrap();
            for _ in 0..n.parse::<u32>().unwrap() {
                let l = election.campaign(name.clone().into_bytes()).await.unwrap();
                leader_line(&l);
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                println!("@@ RESIGN {} {}", l.term(), now_ns());
                l.resign().await.unwrap();
            }
            println!("@@ DONE");
            return;
        }
        let l = election.campaign(name.clone().into_bytes()).await.unwrap();
        leader_line(&l);
        if tokio::time::timeout(Duration::from_secs(120), l.lost()).await.is_err() {
            println!("@@ TIMEOUT");
            return;
        }
        println!("@@ LOST {}", l.is_leader());
        match l.proclaim(format!("stale-{name}").into_bytes()).await {
            Ok(()) => println!("@@ PROCLAIM ok"),
            Err(e) if e.is_lost() => println!("@@ PROCLAIM lost"),
            Err(e) => println!("@@ PROCLAIM {e}"),
        }
        let _ = l.resign().await;
    });
}

/// Start `names.len()` candidate processes; their reports merged as `(index, line)`.
fn candidates(key: &str, names: &[&str], mode: &str) -> (Vec<std::process::Child>, mpsc::Receiver<(usize, String)>) {
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let env = [("CL_ADDR", consul().http_addr()), ("CL_KEY", key), ("CL_NAME", name), ("CL_MODE", mode)]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut child = spawn_self(CANDIDATE, &env);
        let lines = report_lines(&mut child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in lines {
                if tx.send((i, l)).is_err() {
                    return;
                }
            }
        });
        children.push(child);
    }
    (children, rx)
}

/// `LEADER <term> <ns> <name> <session>` → (term, ns, name, session).
fn parse_leader(line: &str) -> (u64, u128, String, String) {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() == 5 && f[0] == "LEADER", "unexpected report {line:?}");
    (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].to_owned(), f[4].to_owned())
}

fn recv(rx: &mpsc::Receiver<(usize, String)>, limit: Duration, what: &str) -> (usize, String) {
    rx.recv_timeout(limit).unwrap_or_else(|e| panic!("no {what} report within {limit:?}: {e}"))
}

fn kill_all(children: &mut [std::process::Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn three_processes_one_leader_at_a_time_and_resign_hands_over_fast() {
    let key = unique("election-rotate");
    let (mut children, rx) = candidates(&key, &["a", "b", "c"], "rotate:4:60");
    // (term, elected ns, resign ns)
    let mut terms: Vec<(u64, u128, Option<u128>)> = Vec::new();
    let mut done = 0;
    while done < 3 {
        let (_, line) = recv(&rx, Duration::from_secs(60), "candidate");
        if line == "DONE" {
            done += 1;
        } else if line.starts_with("LEADER") {
            let (term, at, _, _) = parse_leader(&line);
            terms.push((term, at, None));
        } else if let Some(rest) = line.strip_prefix("RESIGN ") {
            let (term, at) = rest.split_once(' ').unwrap();
            let term: u64 = term.parse().unwrap();
            let t = terms.iter_mut().find(|t| t.0 == term).expect("a resign of a reported term");
            t.2 = Some(at.parse().unwrap());
        }
    }
    for c in &mut children {
        assert!(wait_bounded(c, Duration::from_secs(10)).success());
    }
    assert_eq!(terms.len(), 12, "{terms:?}");
    terms.sort_by_key(|t| t.1);
    let mut gaps = Vec::new();
    for w in terms.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        let resigned = prev.2.expect("every leader resigned");
        assert!(resigned < next.1, "overlapping leaders: {prev:?} then {next:?}");
        assert!(next.0 > prev.0, "terms must strictly increase: {prev:?} then {next:?}");
        gaps.push(Duration::from_nanos((next.1 - resigned) as u64));
    }
    gaps.sort();
    let (p50, max) = (gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
    eprintln!("resign → next leader: p50 {p50:?}, max {max:?} over {} handoffs", gaps.len());
    assert!(p50 <= Duration::from_millis(100), "handoff p50 {p50:?} (gaps {gaps:?})");
    // A loaded 2-core machine gets some slack on the worst handoff.
    assert!(max <= Duration::from_millis(300), "slowest handoff {max:?} (gaps {gaps:?})");
}

#[test]
fn killed_leader_is_replaced_within_two_ttls_plus_lock_delay() {
    let key = unique("election-kill");
    let (mut children, rx) = candidates(&key, &["a", "b", "c"], "hold");
    let (i, line) = recv(&rx, Duration::from_secs(30), "first LEADER");
    let (term, _, _, _) = parse_leader(&line);
    let t0 = Instant::now();
    signal(children[i].id(), libc::SIGKILL);
    let bound = TTL * 2 + LOCK_DELAY + Duration::from_secs(5);
    let (j, line) = recv(&rx, bound, "next LEADER after SIGKILL");
    let took = t0.elapsed();
    kill_all(&mut children);
    let (next_term, _, _, _) = parse_leader(&line);
    eprintln!("SIGKILL → next leader in {took:?}");
    assert_ne!(i, j);
    assert!(next_term > term, "term {next_term} after {term}");
    assert!(took <= bound, "took {took:?}");
}

#[test]
fn stopped_leader_is_replaced_and_its_proclaim_fails_after_sigcont() {
    let key = unique("election-stop");
    let (mut children, rx) = candidates(&key, &["a", "b"], "hold");
    let (i, line) = recv(&rx, Duration::from_secs(30), "first LEADER");
    let (term, _, _, _) = parse_leader(&line);
    let t0 = Instant::now();
    signal(children[i].id(), libc::SIGSTOP);
    let bound = TTL * 2 + LOCK_DELAY + Duration::from_secs(5);
    let (j, line) = recv(&rx, bound, "next LEADER after SIGSTOP");
    let (next_term, _, name, session) = parse_leader(&line);
    eprintln!("SIGSTOP → next leader in {:?}", t0.elapsed());
    assert_ne!(i, j);
    assert!(next_term > term);
    // Keep it stopped past 2×TTL in all, then let it run: it must see the loss and not write.
    std::thread::sleep((TTL * 2).saturating_sub(t0.elapsed()));
    signal(children[i].id(), libc::SIGCONT);
    let (k, lost) = recv(&rx, Duration::from_secs(15), "LOST after SIGCONT");
    assert_eq!((k, lost.as_str()), (i, "LOST false"));
    let (k, proclaim) = recv(&rx, Duration::from_secs(15), "PROCLAIM");
    assert_eq!((k, proclaim.as_str()), (i, "PROCLAIM lost"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader = rt.block_on(Election::new(&key).client(client()).leader()).unwrap().expect("a leader");
    kill_all(&mut children);
    assert_eq!(leader.session_id, session);
    assert_eq!(leader.value, name.into_bytes(), "the stale leader's proclaim must not change the value");
    assert_eq!(leader.term, next_term);
}

/// Collect an observer's states on a task, forwarding each (errors too) to a channel.
fn observe(election: &Election) -> tokio::sync::mpsc::UnboundedReceiver<consul_lock::Result<Option<Leader>>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watch = election.observe();
    tokio::spawn(async move {
        loop {
            let state = watch.next().await;
            if tx.send(state).is_err() {
                return;
            }
        }
    });
    rx
}

async fn next_state(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<consul_lock::Result<Option<Leader>>>,
    what: &str,
) -> consul_lock::Result<Option<Leader>> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("observer saw no {what} within 20 s"))
        .expect("observer task alive")
}

/// The next state with a leader, skipping the vacancy between a resignation and the next election.
async fn next_leader(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<consul_lock::Result<Option<Leader>>>,
    what: &str,
) -> Leader {
    loop {
        if let Some(l) = next_state(rx, what).await.unwrap() {
            return l;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_sees_every_leader_and_value_in_order_over_20_handoffs() {
    let key = unique("election-observe");
    let election = Election::new(&key).client(client()).ttl(TTL);
    let mut seen = observe(&election);
    assert_eq!(next_state(&mut seen, "first state").await.unwrap(), None, "no leader yet");
    let mut current = election.campaign(b"c0".to_vec()).await.unwrap();
    let mut last_term = 0;
    for i in 0..=20 {
        let l = next_leader(&mut seen, "leader").await;
        assert_eq!((l.value.as_slice(), l.session_id.as_str()), (format!("c{i}").as_bytes(), current.session_id()));
        assert_eq!(l.term, current.term(), "the observed term is the leadership's");
        assert!(l.term > last_term);
        last_term = l.term;
        current.proclaim(format!("c{i}-proclaimed").into_bytes()).await.unwrap();
        let p = next_leader(&mut seen, "proclaimed value").await;
        assert_eq!(p.value, format!("c{i}-proclaimed").into_bytes());
        assert_eq!((p.session_id.as_str(), p.term), (current.session_id(), current.term()));
        assert_eq!(election.leader().await.unwrap().as_ref(), Some(&p));
        if i == 20 {
            break;
        }
        // The next candidate waits in line; the resignation hands over to it.
        let e = election.clone();
        let next = tokio::spawn(async move { e.campaign(format!("c{}", i + 1).into_bytes()).await });
        assert!(eventually(Duration::from_secs(5), || async { queue_len(&key).await == 1 }).await);
        current.resign().await.unwrap();
        current = next.await.unwrap().unwrap();
    }
    current.resign().await.unwrap();
    assert_eq!(next_state(&mut seen, "vacancy").await.unwrap(), None);
    assert_eq!(election.leader().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_and_a_key_deleted_from_outside() {
    let key = unique("election-delete");
    let election = Election::new(&key).client(client()).ttl(TTL).lock_delay(LOCK_DELAY);
    assert_eq!(election.leader().await.unwrap(), None);
    let mut seen = observe(&election);
    assert_eq!(next_state(&mut seen, "first state").await.unwrap(), None);
    let leadership = election.campaign(b"me".to_vec()).await.unwrap();
    assert_eq!(next_leader(&mut seen, "leader").await.value, b"me");
    // A candidate waits in line behind the leader.
    let e = election.clone();
    let next = tokio::spawn(async move { e.campaign(b"next".to_vec()).await });
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&key).await == 1 }).await);
    raw_delete(&key).await;
    // The leader (which never awaited lost()) notices, and the one in line is elected.
    let after = next_leader(&mut seen, "the next leader after the delete").await;
    assert_eq!(after.value, b"next");
    let next = tokio::time::timeout(Duration::from_secs(10), next).await.expect("elected").unwrap().unwrap();
    assert!(!leadership.is_leader());
    assert!(leadership.proclaim(b"again".to_vec()).await.unwrap_err().is_lost());
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"next", "a lost leader's proclaim changes nothing");
    leadership.resign().await.unwrap();
    next.resign().await.unwrap();
    assert_eq!(next_state(&mut seen, "vacancy").await.unwrap(), None);
    // Deleted from outside with nobody waiting: the observer sees the vacancy.
    let l = election.campaign(b"last".to_vec()).await.unwrap();
    assert_eq!(next_leader(&mut seen, "leader").await.value, b"last");
    raw_delete(&key).await;
    assert_eq!(next_state(&mut seen, "vacancy after the delete").await.unwrap(), None);
    assert_eq!(election.leader().await.unwrap(), None);
    tokio::time::timeout(Duration::from_secs(10), l.lost()).await.expect("the leader sees the loss");
    l.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_that_has_not_noticed_cannot_proclaim() {
    let key = unique("election-stale");
    let election = Election::new(&key).client(client()).ttl(TTL).lock_delay(Duration::ZERO);
    // The old leader talks to the agent through a proxy, cut while it is deposed: its key watch and
    // renewals fail, so it cannot know (its lease runs for a TTL), and only the server can tell it.
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let old = Election::new(&key).client(proxy.client()).ttl(TTL).lock_delay(Duration::ZERO);
    let old = old.campaign(b"old".to_vec()).await.unwrap();
    proxy.set(Fault::Refuse);
    destroy_session(old.session_id()).await; // as `consul-lock break` does: the key goes with it
    let new = election.campaign(b"new".to_vec()).await.unwrap();
    assert!(new.term() > old.term());
    assert!(old.is_leader(), "the deposed leader cannot have noticed yet");
    proxy.set(Fault::None);
    let err = old.proclaim(b"stale".to_vec()).await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(!old.is_leader(), "a refused proclaim marks the leadership lost");
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!((leader.value.as_slice(), leader.session_id.as_str()), (b"new".as_slice(), new.session_id()));
    new.proclaim(b"new2".to_vec()).await.unwrap();
    let raw = raw_kv(&key).await.unwrap();
    assert_eq!(raw["Flags"].as_u64(), Some(consul_lock::LOCK_FLAGS), "proclaim keeps the lock's flags");
    old.resign().await.unwrap();
    assert_eq!(election.leader().await.unwrap().unwrap().session_id, new.session_id(), "resigning late is harmless");
    new.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_returns_an_error_during_an_outage_then_resumes() {
    let key = unique("election-outage");
    let proxy = FaultProxy::start(consul().http_addr()).await;
    let direct = Election::new(&key).client(client()).ttl(TTL);
    let leadership = direct.campaign(b"v1".to_vec()).await.unwrap();
    let mut watch = Election::new(&key).client(proxy.client()).observe();
    assert_eq!(watch.next().await.unwrap().unwrap().value, b"v1");
    proxy.set(Fault::Refuse);
    let t0 = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("an error within 10 s");
    assert!(err.is_err(), "expected an error during the outage, got {err:?}");
    eprintln!("outage reported after {:?}", t0.elapsed());
    leadership.proclaim(b"v2".to_vec()).await.unwrap();
    proxy.set(Fault::None);
    let state = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("resumed").unwrap();
    assert_eq!(state.unwrap().value, b"v2", "the change made during the outage is delivered on resuming");
    leadership.resign().await.unwrap();
    let state = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("vacancy").unwrap();
    assert_eq!(state, None);
}

/// A real restart of the only server (same data dir): the observer sees the leader, returns an error
/// while the agent is down, and resumes after it is back — with the same leader (the key and its
/// session survive), then a proclaim and a new leader made after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_across_an_agent_restart_returns_an_error_then_resumes() {
    // The leader keeps its session through the outage: its TTL is far longer than a restart.
    let ttl = Duration::from_secs(60);
    let mut server = single_server().await;
    let key = "restart/election";
    let election = Election::new(key).client(server.client()).ttl(ttl).lock_delay(Duration::ZERO);
    let leadership = election.campaign(b"before".to_vec()).await.unwrap();
    let mut watch = Election::new(key).client(server.client()).observe();
    let first = watch.next().await.unwrap().expect("a leader");
    assert_eq!((first.value.as_slice(), first.term), (b"before".as_slice(), leadership.term()));

    server.kill();
    let t0 = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("an error within 10 s");
    assert!(err.as_ref().is_err_and(|e| e.is_retryable()), "expected a transport error while down, got {err:?}");
    eprintln!("outage reported after {:?}", t0.elapsed());
    server.start();
    server.wait_ready(Duration::from_secs(60)).await;
    eprintln!("server back after {:?}", t0.elapsed());

    // The data dir was kept: the key and the leader's session survived the restart.
    let now = tokio::time::timeout(Duration::from_secs(10), election.leader()).await.expect("a read").unwrap();
    assert_eq!(now.as_ref().map(|l| (l.session_id.as_str(), l.term)), Some((leadership.session_id(), first.term)));
    assert!(leadership.is_leader(), "an outage of {:?} is well under the TTL", t0.elapsed());
    leadership.proclaim(b"after".to_vec()).await.unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("resumed").unwrap();
    let resumed = resumed.expect("still a leader");
    assert_eq!((resumed.value.as_slice(), resumed.session_id.as_str()), (b"after".as_slice(), leadership.session_id()));
    assert_eq!(resumed.term, first.term, "a proclaim keeps the term");

    let e = election.clone();
    let next = tokio::spawn(async move { e.campaign(b"next".to_vec()).await });
    leadership.resign().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), next).await.expect("a new leader").unwrap().unwrap();
    let seen = loop {
        let state = tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("the new leader");
        if let Some(l) = state.unwrap() {
            break l;
        }
    };
    assert_eq!((seen.value.as_slice(), seen.session_id.as_str()), (b"next".as_slice(), next.session_id()));
    assert!(seen.term > first.term, "terms increase across the restart: {} after {}", seen.term, first.term);
    next.resign().await.unwrap();
}

#[test]
fn blocking_mirror_campaign_proclaim_observe_resign() {
    let client = consul_lock::blocking::Client::builder().address(consul().http_addr()).build().unwrap();
    let key = unique("election-blocking");
    let election = consul_lock::blocking::Election::new(&key).client(client).ttl(TTL);
    assert_eq!(election.leader().unwrap(), None);
    let mut watch = election.observe().unwrap();
    assert_eq!(watch.next().unwrap(), None);
    let leadership = election.campaign(b"b1".to_vec()).unwrap();
    assert!(leadership.is_leader());
    assert_eq!(watch.next().unwrap().unwrap().term, leadership.term());
    leadership.proclaim(b"b2".to_vec()).unwrap();
    assert_eq!(watch.next().unwrap().unwrap().value, b"b2");
    assert!(!leadership.lost_timeout(Duration::from_millis(100)));
    leadership.resign().unwrap();
    assert_eq!(watch.next().unwrap(), None);
    let err = election.clone().acquire_timeout(Duration::ZERO).run_as_leader(b"r".to_vec(), |l| l.term()).unwrap();
    assert!(err > 0);
}
