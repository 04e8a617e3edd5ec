//! An agent started through `ConsulDev` dies with the process that started it, however that process
//! ends — `exit`, a panic, SIGKILL — although the value sits in a `static` and is never dropped.
//!
//! The test binary runs itself as the child: `child_keeps_an_agent_in_a_static` is that child's
//! body when `CONSUL_LOCK_AGENT_CHILD` is set (and a no-op in a normal run).
#![cfg(all(unix, feature = "test-util"))]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consul_lock::testing::ConsulDev;

const CHILD: &str = "CONSUL_LOCK_AGENT_CHILD";

/// In the child: start an agent, keep it in a `static`, say its pid, then end as told.
#[test]
fn child_keeps_an_agent_in_a_static() {
    let Ok(how) = std::env::var(CHILD) else { return };
    static AGENT: OnceLock<ConsulDev> = OnceLock::new();
    let agent =
        AGENT.get_or_init(|| ConsulDev::start().unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}")));
    println!("agent-pid {}", agent.pid());
    match how.as_str() {
        "exit" => std::process::exit(0),
        "panic" => panic!("the child panics on purpose, its agent in a static"),
        // Wait to be killed with SIGKILL by the parent.
        _ => std::thread::sleep(Duration::from_secs(120)),
    }
}

/// Whether `pid` is a running consul agent (not gone, not a zombie).
fn agent_runs(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("agent")
}

/// Run the child, read its agent's pid, let it end as `how` says; the agent must be gone soon.
fn agent_dies_with_the_child(how: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_keeps_an_agent_in_a_static", "--nocapture", "--test-threads", "1"])
        .env(CHILD, how)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the test binary as the child");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut pid = None;
    for line in stdout.lines().map_while(Result::ok) {
        // The harness may have written "test … ... " before it on the same line.
        if let Some((_, p)) = line.split_once("agent-pid ") {
            pid = Some(p.trim().parse::<u32>().expect("a pid"));
            break;
        }
    }
    let pid = pid.unwrap_or_else(|| panic!("the child ({how}) never reported its agent's pid"));
    assert!(agent_runs(pid), "the child's agent {pid} should run while the child does");
    if how == "kill" {
        child.kill().expect("SIGKILL the child");
    }
    let status = child.wait().unwrap();
    match how {
        "exit" => assert!(status.success(), "{status}"),
        _ => assert!(!status.success(), "{how}: {status}"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent_runs(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!agent_runs(pid), "the agent {pid} outlived its process ({how}) by 10 s");
}

#[test]
fn an_agent_in_a_static_dies_when_its_process_exits() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    agent_dies_with_the_child("exit");
}

#[test]
fn an_agent_in_a_static_dies_when_its_process_panics() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    agent_dies_with_the_child("panic");
}

#[test]
fn an_agent_in_a_static_dies_when_its_process_is_killed() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    agent_dies_with_the_child("kill");
}
