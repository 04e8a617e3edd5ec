#![cfg(all(feature = "test-util", feature = "cli"))]
//! Sharing lock keys with HashiCorp's own clients: our keys carry Go's `api.LockFlagValue`, a key
//! that Go released (present, no session) is free to us, a key with another primitive's flags is a
//! typed conflict — and `consul lock PREFIX` (the Go client, as a real program) and
//! `consul-lock run PREFIX/.lock` exclude each other.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use consul_lock::{EphemeralLock, Error, LOCK_FLAGS, SEMAPHORE_FLAGS};
use serde_json::Value;
use support::*;
use tokio::process::Command;

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn url(path: &str) -> String {
    format!("http://{}/v1/{path}", consul().http_addr())
}

async fn put(path: &str, body: &str) -> Value {
    let r = http().put(url(path)).body(body.to_owned()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    r.json().await.unwrap()
}

async fn new_session() -> String {
    put("session/create", r#"{"TTL":"15s","LockDelay":"0s","Behavior":"release"}"#).await["ID"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_keys_carry_gos_lock_flags() {
    let key = unique("interop-flags");
    let g = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
    let kv = raw_kv(&key).await.expect("held key");
    assert_eq!(kv["Flags"].as_u64(), Some(LOCK_FLAGS), "{kv}");
    assert_eq!(kv["ModifyIndex"].as_u64(), Some(g.fencing_token()));
    g.release().await.unwrap();
    assert!(raw_kv(&key).await.is_none(), "released keys are deleted, which Go reads as free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_another_primitives_flags_is_a_conflict_and_untouched() {
    for flags in [SEMAPHORE_FLAGS, 1] {
        let key = unique("interop-conflict");
        put(&format!("kv/{key}?flags={flags}"), r#"{"Limit":2,"Holders":{}}"#).await;
        let before = raw_kv(&key).await.unwrap();
        let e = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::from_secs(5)).hold().await;
        match e {
            Err(Error::Conflict { key: k, flags: f }) => assert_eq!((k.as_str(), f), (key.as_str(), flags)),
            other => panic!("{flags:#x}: expected Conflict, got {other:?}"),
        }
        assert!(!Error::Conflict { key: key.clone(), flags }.is_retryable());
        assert_eq!(raw_kv(&key).await.unwrap(), before, "the other primitive's key was not touched");
        // Held by a session too: still a conflict, not a wait.
        let sid = new_session().await;
        put(&format!("kv/{key}?acquire={sid}&flags={flags}"), "x").await;
        let t0 = std::time::Instant::now();
        let e = EphemeralLock::new(&key).client(client()).acquire_timeout(Duration::from_secs(5)).hold().await;
        assert!(matches!(e, Err(Error::Conflict { .. })), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "did not wait for another primitive's holder");
        put(&format!("session/destroy/{sid}"), "").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_released_by_go_is_free_and_a_waiter_takes_it() {
    // What Go's api.Lock leaves: acquire with its flags, then release — the key stays, sessionless.
    let key = unique("interop-go-released");
    let sid = new_session().await;
    assert_eq!(put(&format!("kv/{key}?acquire={sid}&flags={LOCK_FLAGS}"), "go").await, Value::Bool(true));
    let waiter = tokio::spawn(
        EphemeralLock::new(&key).client(client()).fair(false).acquire_timeout(Duration::from_secs(10)).hold(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "waits while Go holds");
    let go_held = raw_kv(&key).await.unwrap()["ModifyIndex"].as_u64().unwrap();
    assert_eq!(put(&format!("kv/{key}?release={sid}&flags={LOCK_FLAGS}"), "go").await, Value::Bool(true));
    let g = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("bounded").unwrap().unwrap();
    assert!(g.fencing_token() > go_held + 1, "taken after Go's release write");
    let kv = raw_kv(&key).await.unwrap();
    assert_eq!(kv["Session"].as_str(), Some(g.session_id()));
    assert_eq!(kv["Flags"].as_u64(), Some(LOCK_FLAGS));
    g.release().await.unwrap();
    // And a fresh acquire of a Go-released key (not waiting) takes it at once.
    assert_eq!(put(&format!("kv/{key}?acquire={sid}&flags={LOCK_FLAGS}"), "go").await, Value::Bool(true));
    assert_eq!(put(&format!("kv/{key}?release={sid}&flags={LOCK_FLAGS}"), "go").await, Value::Bool(true));
    let c = client();
    let g = EphemeralLock::new(&key).client(c.clone()).acquire_timeout(Duration::ZERO).hold().await.unwrap();
    assert_eq!(raw_holder(&key).await.as_deref(), Some(g.session_id()));
    let kv = raw_kv(&key).await.unwrap();
    assert_eq!(
        kv["ModifyIndex"].as_u64(),
        Some(g.fencing_token()),
        "the token is the acquire's index, not the guard's"
    );
    assert_eq!(c.request_count(), 3, "the read, the session, one lock attempt guarded by that read");
    g.release().await.unwrap();
    put(&format!("session/destroy/{sid}"), "").await;
}

/// One critical section: append "enter <ns>" and "exit <ns>" lines to `log`, sleeping between.
fn section(log: &Path, who: &str) -> String {
    let log = log.display();
    format!(
        "echo \"enter $(date +%s%N) {who} $CONSUL_LOCK_HELD\" >> {log}; sleep 0.2; echo \"exit $(date +%s%N) {who}\" >> {log}"
    )
}

/// Intervals from the log, checked for overlap; returns how many sections ran.
fn check_no_overlap(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut events: Vec<(u128, bool, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let kind = it.next()?;
            let t: u128 = it.next()?.parse().ok()?;
            Some((t, kind == "enter", l.to_owned()))
        })
        .collect();
    events.sort_by_key(|e| (e.0, e.1)); // an exit and an enter at the same ns: the exit first
    let mut inside = 0;
    for (_, enter, line) in &events {
        inside += if *enter { 1 } else { -1 };
        assert!(inside <= 1, "two holders inside at once at: {line}\n{text}");
    }
    assert_eq!(inside, 0, "unbalanced log:\n{text}");
    events.iter().filter(|e| e.1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_lock_and_consul_lock_run_and_the_library_exclude_each_other() {
    let prefix = unique("interop-mixed");
    let dir = std::env::temp_dir().join(format!("consul-lock-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join(format!("{}.log", prefix.replace('/', "_")));
    let _ = std::fs::remove_file(&log);
    let addr = consul().http_addr().to_owned();
    let mut children = Vec::new();
    for i in 0..3 {
        // HashiCorp's Go client, as users run it: `consul lock PREFIX cmd` locks PREFIX/.lock.
        let mut go = Command::new(consul().binary());
        go.args(["lock", &format!("-http-addr={addr}"), "-timeout=60s", &prefix, &section(&log, &format!("go{i}"))]);
        children.push(("go", go));
        let mut ours = Command::new(env!("CARGO_BIN_EXE_consul-lock"));
        ours.args([
            "run",
            "-w",
            "60",
            &format!("{prefix}/.lock"),
            "--",
            "sh",
            "-c",
            &section(&log, &format!("cli{i}")),
        ])
        .env("CONSUL_HTTP_ADDR", &addr);
        children.push(("cli", ours));
    }
    let mut running = Vec::new();
    for (kind, mut c) in children {
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        running.push((kind, c.spawn().unwrap()));
    }
    // Library holders on the same key, alongside.
    let lib = {
        let (key, log) = (format!("{prefix}/.lock"), log.clone());
        tokio::spawn(async move {
            for i in 0..3 {
                let g = EphemeralLock::new(&key)
                    .client(client())
                    .acquire_timeout(Duration::from_secs(60))
                    .hold()
                    .await
                    .unwrap_or_else(|e| panic!("library holder {i}: {e}"));
                let ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&log)
                    .map(|mut f| {
                        use std::io::Write;
                        writeln!(f, "enter {} lib{i} true", ns()).unwrap();
                    })
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(g.is_held());
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .map(|mut f| {
                        use std::io::Write;
                        writeln!(f, "exit {} lib{i}", ns()).unwrap();
                    })
                    .unwrap();
                g.release().await.unwrap();
            }
        })
    };
    for (kind, child) in running {
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("every contender finishes")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind} failed ({}): {err}", out.status);
        assert!(!err.to_ascii_lowercase().contains("conflict"), "{kind}: {err}");
    }
    tokio::time::timeout(Duration::from_secs(120), lib).await.expect("library holders finish").unwrap();
    assert_eq!(check_no_overlap(&log), 9, "every contender ran once");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().filter(|l| l.starts_with("enter")).all(|l| l.ends_with(" true")), "CONSUL_LOCK_HELD\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flag_values_are_gos() {
    // api/lock.go: LockFlagValue = 0x2ddccbc058a50c18; api/semaphore.go: SemaphoreFlagValue = 0xe0f69a2baa414de0.
    assert_eq!(format!("{LOCK_FLAGS:#x}"), "0x2ddccbc058a50c18");
    assert_eq!(format!("{SEMAPHORE_FLAGS:#x}"), "0xe0f69a2baa414de0");
}
