#![cfg(feature = "test-util")]
//! Partition proof (CI size): a real Consul cluster (3 servers, 3 client agents) in a private
//! network namespace, 8 locking processes over 3 keys (two mutexes, one fair) on the client
//! agents, each critical section a read-modify-write of a fenced register, while a nemesis opens
//! one 10-s window of each fault: leader isolated, majority/minority split, bridge, client agent
//! cut off, server killed and restarted, server paused, slow leader. The checker then finds no two
//! holders that both saw `is_held()` at exit, no accepted stale write, no lost update.
//! The long run is `scripts/partition.sh --long`; docs/RELIABILITY.md has the figures.

mod support;

use std::process::Command;
use std::time::Duration;

use support::history::{check, Event, Section};
use support::nemesis::{run, Config, ALL};
use support::netns::{inside, run_inside};
use support::workload::{self, Spec};

const WORKER: &str = "partition_worker_child";

/// Not a test by itself: one locking process of `partition_ci_run`.
#[test]
#[ignore = "child process of the partition test; run by it"]
fn partition_worker_child() {
    let spec = Spec::from_env().expect("run by partition_ci_run with CL_PART_* set");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Err(e) = rt.block_on(workload::run(&spec)) {
        panic!("locking process {} failed: {e}", std::process::id());
    }
}

/// Outside the namespace: re-run this test inside a new one (`unshare --net`) and check it passed.
/// Inside: the run itself.
#[test]
fn partition_ci_run() {
    let exe = std::env::current_exe().expect("own path");
    if !inside() {
        let args = ["--exact", "partition_ci_run", "--nocapture", "--test-threads", "1"];
        assert!(run_inside(&exe, &args, &[], Duration::from_secs(360)), "the partition run failed (output above)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("consul-lock-partition-{}", std::process::id()));
    let cfg = Config::ci(dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let t0 = std::time::Instant::now();
    let spawn = |env: &[(String, String)]| {
        let mut c = Command::new(&exe);
        c.args(["--exact", WORKER, "--ignored", "--nocapture", "--test-threads", "1", "-q"]);
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };
    let report = rt.block_on(run(&cfg, &spawn));
    eprintln!("partition (CI size, {:.0?}):\n{}", t0.elapsed(), report.figures());
    assert!(report.violations.is_empty(), "violations (history in {}):\n{}", dir.display(), report.figures());
    assert!(report.sections >= 300, "only {} critical sections", report.sections);
    for n in ALL {
        assert!(report.windows.get(n.name()).is_some_and(|&w| w >= 1), "no {} window", n.name());
    }
    assert!(report.accepted_writes > 0 && report.handoffs > 0, "no contention: {}", report.figures());
    // Regression: timeouts of a running agent cut off from its servers used to ask whether Consul
    // was running at all.
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    assert!(!history.contains("is Consul running"), "a failed acquire blamed a running agent");
    let _ = std::fs::remove_dir_all(&dir);
}

fn section(key: &str, token: u64, pid: u32, span: (u64, u64), held: bool, rw: (u64, Option<u64>)) -> Event {
    let (read, seq) = rw;
    Event::Section(Section {
        key: key.into(),
        kind: "mutex".into(),
        limit: 1,
        term: None,
        token,
        pid,
        enter_ns: span.0,
        exit_ns: span.1,
        held_at_exit: held,
        read: Some(read),
        wrote: Some(read + 1),
        write_seq: seq,
    })
}

fn lines(events: &[Event]) -> String {
    events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect()
}

/// A planted history: two holders overlapping that both saw `is_held()` at exit, and a write with
/// a lower token accepted after a higher one. The checker names both, with their lines.
#[test]
fn checker_catches_overlapping_holders_and_a_stale_accepted_write() {
    let fine = [
        section("k", 10, 1, (100, 200), true, (0, Some(1))),
        section("k", 20, 2, (300, 400), true, (1, Some(2))),
        // Overlaps the one before, but knew it had lost the lock: allowed (fencing rejected it).
        section("k", 15, 3, (350, 450), false, (1, None)),
        Event::Final { key: "k".into(), value: 2, seq: 2, max_token: 20 },
    ];
    let r = check(&lines(&fine));
    assert!(r.violations.is_empty(), "{}", r.figures());
    assert_eq!((r.sections, r.accepted_writes, r.stale_rejected, r.lost_at_exit, r.handoffs), (3, 2, 1, 1, 2));

    let planted = [
        section("k", 10, 1, (100, 200), true, (0, Some(1))),
        section("k", 30, 2, (300, 400), true, (1, Some(2))),
        // Overlaps pid 2 and still believed it held: mutual exclusion broken.
        section("k", 40, 3, (390, 500), true, (2, Some(3))),
        // Token 25 accepted after 40: the register let a stale write through.
        section("k", 25, 4, (600, 700), false, (3, Some(4))),
        Event::Final { key: "k".into(), value: 4, seq: 4, max_token: 40 },
    ];
    let r = check(&lines(&planted));
    let report = r.figures();
    eprintln!("{report}");
    let overlap: Vec<_> = r.violations.iter().filter(|v| v.what.contains("holders at once")).collect();
    assert_eq!(overlap.len(), 1, "{report}");
    assert_eq!(overlap[0].lines.iter().map(|l| l.0).collect::<Vec<_>>(), [2, 3], "{report}");
    let stale: Vec<_> = r.violations.iter().filter(|v| v.what.contains("token 25 after")).collect();
    assert_eq!(stale.len(), 1, "{report}");
    assert_eq!(stale[0].lines.iter().map(|l| l.0).collect::<Vec<_>>(), [3, 4], "{report}");
    assert!(stale[0].lines[1].1.contains("\"token\":25"), "{report}");
    assert_eq!(r.violations.len(), 2, "{report}");
}

/// A lost update (a write that did not read its predecessor's value) and a register whose final
/// value disagrees with the history are violations too; so are two leaders in one term.
#[test]
fn checker_catches_lost_updates_and_two_leaders_in_a_term() {
    let term = |pid, t, span| match section("e", t, pid, span, true, (0, None)) {
        Event::Section(mut s) => {
            s.term = Some(7);
            s.read = None;
            s.wrote = None;
            Event::Section(s)
        }
        _ => unreachable!(),
    };
    let h = [
        section("k", 10, 1, (100, 200), true, (0, Some(1))),
        section("k", 20, 2, (300, 400), true, (0, Some(2))),
        Event::Final { key: "k".into(), value: 1, seq: 2, max_token: 20 },
        term(1, 5, (100, 200)),
        term(2, 6, (300, 400)),
    ];
    let r = check(&lines(&h));
    let report = r.figures();
    assert!(r.violations.iter().any(|v| v.what.contains("lost update")), "{report}");
    assert!(r.violations.iter().any(|v| v.what.contains("register ends at value 1")), "{report}");
    assert!(r.violations.iter().any(|v| v.what.contains("two leaders in term 7")), "{report}");
    assert_eq!(r.violations.len(), 3, "{report}");
}
