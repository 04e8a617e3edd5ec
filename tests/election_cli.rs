//! `consul-lock leader` spawned for real against a dev agent: the `--json` schema and exit codes,
//! `--watch` lines across a handoff and its exit on SIGTERM, and `consul-lock run --value` as a
//! leader that the election API sees.

#![cfg(all(feature = "test-util", feature = "cli"))]

mod support;

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use consul_lock::Election;
use serde_json::{json, Value};
use support::child::{signal, wait_bounded};
use support::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consul-lock"));
    for v in ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("CONSUL_HTTP_ADDR", consul().http_addr()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn leader_cmd(args: &[&str]) -> Output {
    bin().arg("leader").args(args).output().expect("run consul-lock leader")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_json_schema_and_exit_codes() {
    let key = unique("cli-leader");
    let out = leader_cmd(&[&key, "--json"]);
    assert_eq!(out.status.code(), Some(1), "no leader: exit 1");
    assert_eq!(
        json_of(&out),
        json!({"key": key, "leader": false, "session": null, "term": null, "value": null, "value_base64": null})
    );
    let election = Election::new(&key).client(client());
    let l = election.campaign(b"10.0.0.7:8080".to_vec()).await.unwrap();
    let out = leader_cmd(&[&key, "--json"]);
    assert_eq!(out.status.code(), Some(0), "a leader: exit 0");
    assert_eq!(
        json_of(&out),
        json!({"key": key, "leader": true, "session": l.session_id(), "term": l.term(),
               "value": "10.0.0.7:8080", "value_base64": "MTAuMC4wLjc6ODA4MA=="})
    );
    let human = leader_cmd(&[&key]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("leader 10.0.0.7:8080") && text.contains(&l.term().to_string()), "{text}");
    l.resign().await.unwrap();
    assert_eq!(leader_cmd(&[&key]).status.code(), Some(1));
    let bad = leader_cmd(&["/bad/key"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_change_and_exits_0_on_sigterm() {
    let key = unique("cli-watch");
    let mut child = bin().args(["leader", &key, "--watch", "--json"]).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || -> Value {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("a --watch line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    assert_eq!(next()["leader"], false);
    let election = Election::new(&key).client(client());
    let a = election.campaign(b"a".to_vec()).await.unwrap();
    let la = next();
    assert_eq!((&la["value"], &la["term"]), (&json!("a"), &json!(a.term())));
    let e = election.clone();
    let b = tokio::spawn(async move { e.campaign(b"b".to_vec()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_term = a.term();
    a.resign().await.unwrap();
    let b = b.await.unwrap().unwrap();
    let mut lb = next();
    if lb["leader"] == false {
        lb = next(); // the vacancy between the two, when the watch saw it
    }
    assert_eq!((&lb["value"], &lb["session"]), (&json!("b"), &json!(b.session_id())));
    assert!(lb["term"].as_u64().unwrap() > a_term);
    b.proclaim(b"b2".to_vec()).await.unwrap();
    assert_eq!(next()["value"], "b2");
    signal(child.id(), libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "interrupted --watch exits 0");
    b.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_value_is_a_leader_of_the_election() {
    let key = unique("cli-run-leader");
    let mut run = bin().args(["run", "--value", "10.0.0.9:7000", &key, "--", "sleep", "30"]).spawn().unwrap();
    let election = Election::new(&key).client(client());
    assert!(eventually(Duration::from_secs(20), || async { election.leader().await.unwrap().is_some() }).await);
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(leader.value, b"10.0.0.9:7000");
    assert_eq!(json_of(&leader_cmd(&[&key, "--json"]))["value"], "10.0.0.9:7000");
    // A campaign waits behind it, and is elected once the command's run ends.
    let e = election.clone();
    let next = tokio::spawn(async move { e.campaign(b"next".to_vec()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "a campaign must not be elected while `run` holds the key");
    signal(run.id(), libc::SIGTERM);
    wait_bounded(&mut run, Duration::from_secs(20));
    let l = tokio::time::timeout(Duration::from_secs(20), next).await.expect("elected after run").unwrap().unwrap();
    assert!(l.term() > leader.term);
    l.resign().await.unwrap();
}
