//! Long and non-ASCII keys, end to end: a default never makes valid input invalid. The default
//! session name is built from the key ("consul-lock: KEY"); for a key longer than Consul's
//! 1024-byte session-name limit it is cut (at a character boundary), never refused.
#![cfg(all(feature = "test-util", feature = "cli"))]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use consul_lock::{Election, EphemeralLock, Error, Semaphore};
use support::{client, consul, unique};

/// A valid key of `len` characters: `base/` then `unit` repeated, cut to whole units.
fn key_of(base: &str, unit: &str, len: usize) -> String {
    let mut k = format!("{base}/");
    while k.chars().count() + unit.chars().count() <= len {
        k.push_str(unit);
    }
    k
}

fn cli(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consul-lock"));
    for v in ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("CONSUL_HTTP_ADDR", consul().http_addr()).args(args).stdin(Stdio::null());
    c.output().expect("run consul-lock")
}

#[tokio::test]
async fn a_2000_character_key_is_locked_with_the_default_session_name() {
    let k = key_of(&unique("long"), "k", 2000);
    assert_eq!(k.chars().count(), 2000);
    let c = client();
    let guard = EphemeralLock::new(&k).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
    let info = c.holder(&k).await.unwrap().expect("held").info.expect("our holder info");
    let name = info.session_name.expect("a session name");
    assert!(name.len() <= 1024 && name.starts_with("consul-lock: ") && name.ends_with('…'), "{name}");
    guard.release().await.unwrap();
    assert!(c.holder(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn a_set_session_name_over_1024_bytes_is_still_refused_before_any_request() {
    let c = client();
    let before = c.request_count();
    let err = EphemeralLock::new(unique("named")).client(c.clone()).session_name("n".repeat(1025)).hold().await;
    match err {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("session_name: at most 1024 bytes"), "{m}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(c.request_count(), before, "no request for invalid settings");
}

#[tokio::test]
async fn long_non_ascii_keys_for_the_lock_the_semaphore_and_the_election() {
    let c = client();
    for unit in ["é", "漢", "🔒"] {
        let k = key_of(&unique("utf8"), unit, 1500);
        assert!(k.len() > 1024, "{} bytes", k.len());
        let guard = EphemeralLock::new(&k).client(c.clone()).lock_delay(Duration::ZERO).hold().await.unwrap();
        assert_eq!(c.holder(&k).await.unwrap().expect("held").session_id, guard.session_id());
        guard.release().await.unwrap();

        let permit = Semaphore::new(&k, 2).client(c.clone()).hold().await.unwrap();
        assert!(permit.is_held());
        permit.release().await.unwrap();

        let election = Election::new(&k).client(c.clone()).lock_delay(Duration::ZERO);
        let leadership = election.campaign(b"me".to_vec()).await.unwrap();
        assert_eq!(election.leader().await.unwrap().expect("a leader").value, b"me");
        leadership.resign().await.unwrap();
    }
}

#[test]
fn the_cli_runs_under_a_2000_character_key_and_a_non_ascii_one() {
    for k in [key_of(&unique("cli-long"), "x", 2000), key_of(&unique("cli-utf8"), "ключ", 600)] {
        let out = cli(&["run", "-n", &k, "--", "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", out.status);
        assert!(!err.contains("invalid configuration"), "{err}");
        let status = cli(&["status", &k]);
        assert_eq!(status.status.code(), Some(0), "free again: {}", String::from_utf8_lossy(&status.stdout));
    }
}
