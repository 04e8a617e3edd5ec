//! Our semaphore and HashiCorp's on one prefix: `consul lock -n 2` processes (Go's `api.Semaphore`),
//! `consul-lock run --limit 2` processes and library permits share the slots; each side prunes the
//! other's dead holders; a limit mismatch is a clear error on ours. Layout: src/semaphore/slots.rs.

#![cfg(all(feature = "test-util", feature = "cli"))]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use consul_lock::{Error, Semaphore};
use support::child::wait_bounded;
use support::peer::*;
use support::worker::{max_inside, now_ns};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_consul-lock");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consul-lock-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(log: &Path, line: String) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// The sessions in `PREFIX/.lock`'s Holders, read without the library.
async fn holders(prefix: &str) -> Vec<String> {
    use base64::Engine as _;
    let Some(e) = raw_kv(&format!("{prefix}/.lock")).await else { return Vec::new() };
    let Some(v) = e["Value"].as_str() else { return Vec::new() };
    let v: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap();
    v["Holders"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_we_never_exceed_two_inside() {
    let prefix = unique("interop-mixed");
    let dir = scratch("mixed");
    let log = dir.join("sections");
    let mut peers = Vec::new();
    for i in 0..3 {
        let s = section_script(&log, &format!("go{i}"), "0.15");
        let go = format!("for r in 1 2; do {} lock -n=2 {prefix} '{s}' || exit 9; done", consul().binary().display());
        peers.push(shell(&go));
        let ours = section_script(&log, &format!("cli{i}"), "0.15");
        let ours = format!("for r in 1 2; do {BIN} run --limit 2 {prefix} -- sh -c '{ours}' || exit 8; done");
        peers.push(shell(&ours));
    }
    let mut libs = Vec::new();
    for t in 0..2 {
        let (prefix, log) = (prefix.clone(), log.clone());
        libs.push(tokio::spawn(async move {
            for r in 0..2 {
                let p =
                    Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(60)).hold().await?;
                record(&log, format!("enter lib{t}-{r} {}\n", now_ns()));
                tokio::time::sleep(Duration::from_millis(150)).await;
                record(&log, format!("exit lib{t}-{r} {}\n", now_ns()));
                assert!(p.is_held());
                p.release().await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for l in libs {
        l.await.unwrap().unwrap();
    }
    for p in &mut peers {
        let status = tokio::task::block_in_place(|| wait_bounded(p, Duration::from_secs(90)));
        assert!(status.success(), "a peer failed ({status}): {}", stderr_of(p));
    }
    let s = sections(&log);
    assert_eq!(s.len(), 3 * 2 + 3 * 2 + 2 * 2, "every section ran: {s:?}");
    for side in ["go", "cli", "lib"] {
        assert!(s.iter().any(|(id, ..)| id.starts_with(side)), "no {side} section");
    }
    let max = max_inside(s.iter().map(|(_, a, b)| (*a, *b)));
    assert!(max <= 2, "{max} inside at once");
    assert_eq!(max, 2, "the two slots were never both used");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sh -c SCRIPT` as a peer (in its own process group).
fn shell(script: &str) -> std::process::Child {
    let mut c = std::process::Command::new("/bin/sh");
    c.args(["-c", script]);
    spawn_peer(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_go_holder_is_pruned_by_us() {
    let prefix = unique("interop-go-killed");
    let mut go = go_lock(2, &prefix, "sleep 60");
    let ours =
        Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(20)).hold().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { holders(&prefix).await.len() == 2 }).await,
        "Go took a slot"
    );
    let go_sid = holders(&prefix).await.into_iter().find(|s| s != ours.session_id()).unwrap();
    let waiter = tokio::spawn({
        let prefix = prefix.clone();
        async move { Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(20)).hold().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "both slots are taken");
    kill_group(&mut go);
    // Its session would live on until its TTL runs out; end it now, as an expiry would.
    destroy_session(&go_sid).await;
    let w = tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap().unwrap();
    let h = holders(&prefix).await;
    assert!(!h.contains(&go_sid) && h.contains(&w.session_id().to_owned()), "{h:?}");
    w.release().await.unwrap();
    ours.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_killed_holder_is_pruned_by_go() {
    let prefix = unique("interop-ours-killed");
    let dir = scratch("ours-killed");
    let marker = dir.join("go-inside");
    let mut cli = our_run(Path::new(BIN), 2, &prefix, "sleep 60");
    let lib =
        Semaphore::new(&prefix, 2).client(client()).acquire_timeout(Duration::from_secs(20)).hold().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { holders(&prefix).await.len() == 2 }).await,
        "the CLI took a slot"
    );
    let cli_sid = holders(&prefix).await.into_iter().find(|s| s != lib.session_id()).unwrap();
    let mut go = go_lock(2, &prefix, &format!("echo in > {}", marker.display()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!marker.exists(), "Go got in while both slots were taken");
    kill_group(&mut cli);
    destroy_session(&cli_sid).await;
    let status = tokio::task::block_in_place(|| wait_bounded(&mut go, Duration::from_secs(30)));
    assert!(status.success(), "consul lock failed: {}", stderr_of(&mut go));
    assert!(marker.exists(), "Go's command ran");
    assert!(!holders(&prefix).await.contains(&cli_sid), "our dead holder was pruned");
    lib.release().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_mismatch_with_go_is_a_clear_error() {
    let prefix = unique("interop-mismatch");
    let mut go = go_lock(3, &prefix, "sleep 60");
    assert!(
        eventually(Duration::from_secs(20), || async { holders(&prefix).await.len() == 1 }).await,
        "Go took a slot"
    );
    let e = Semaphore::new(&prefix, 2).client(client()).hold().await.unwrap_err();
    assert!(matches!(e, Error::LimitConflict { limit: 2, stored: 3, .. }), "{e}");
    let out = std::process::Command::new(BIN)
        .args(["run", "--limit", "2", &prefix, "--", "true"])
        .env("CONSUL_HTTP_ADDR", consul().http_addr())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("limit conflict") && err.contains("stored limit is 3"), "{err}");
    kill_group(&mut go);
}
