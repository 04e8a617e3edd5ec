//! The `consul-lock` binary, spawned for real against a `consul agent -dev`: mutual exclusion,
//! exit codes, signal forwarding, lost locks, `status --json`, `break`, and error output.

#![cfg(all(feature = "test-util", feature = "cli"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use consul_lock::testing::ConsulDev;
use consul_lock::EphemeralLock;
use serde_json::Value;

/// Generous upper bound for anything that should finish quickly on a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

fn consul() -> &'static ConsulDev {
    ConsulDev::shared()
}

/// A key and a scratch directory no other test uses.
fn unique(name: &str) -> (String, PathBuf) {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("consul-lock-cli-{}-{name}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (format!("test/cli/{name}/{}-{n}", std::process::id()), dir)
}

/// The binary, pointed at the dev agent, with no ACL or TLS settings inherited from the environment.
fn bin_at(addr: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consul-lock"));
    for v in ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("CONSUL_HTTP_ADDR", addr).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn bin() -> Command {
    bin_at(consul().http_addr())
}

fn spawn(args: &[&str]) -> Child {
    bin().args(args).spawn().expect("spawn consul-lock")
}

/// Wait for `child` at most `limit` (killing it and failing past that); its output.
fn finish(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for consul-lock"),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("consul-lock (pid {pid}) did not exit within {limit:?}");
        }
    }
}

fn cli(args: &[&str]) -> Output {
    finish(spawn(args), LIMIT)
}

async fn cli_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("consul-lock killed by a signal: {out:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An error is one `consul-lock: error: …` line and one `hint: …` line; no panic, no Debug dump.
fn assert_one_line_error(out: &Output) {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "error + hint expected, got: {err}");
    assert!(lines[0].starts_with("consul-lock: error: "), "{err}");
    assert!(lines[1].starts_with("hint: "), "{err}");
    for bad in ["panicked", "RUST_BACKTRACE", "Error {", "Some(", "Transport("] {
        assert!(!err.contains(bad), "{bad:?} in {err}");
    }
}

/// Poll until `path` contains `needle`, at most `limit`.
fn wait_for_file(path: &Path, needle: &str, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(needle) {
            return s;
        }
        assert!(Instant::now() < end, "{} never contained {needle:?} (has {s:?})", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw HTTP request to the dev agent, not through the library under test: (status, body).
fn http(method: &str, path: &str) -> (u16, String) {
    let addr = consul().http_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The session holding `key` (keys used here need no escaping), `None` when free.
fn raw_holder(key: &str) -> Option<String> {
    let (status, body) = http("GET", &format!("/v1/kv/{key}"));
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["Session"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// How many sessions have this name.
fn sessions_named(name: &str) -> usize {
    let (_, body) = http("GET", "/v1/session/list");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap().iter().filter(|s| s["Name"] == name).count()
}

fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

#[test]
fn second_run_waits_then_runs_and_no_wait_exits_with_the_conflict_code() {
    let (key, dir) = unique("exclusion");
    let log = dir.join("log");
    let l = log.display();
    // Long enough that B, started after the -n/-E/-w runs, still waits past the progress delay.
    let a_script = format!("echo a-start >> {l}; sleep 4; echo a-end >> {l}");
    let a = spawn(&[&["run", &key, "--"][..], &sh(&a_script)].concat());
    wait_for_file(&log, "a-start", LIMIT);

    // -n: one attempt, the conflict code at once, the command never runs.
    let n_script = format!("echo n >> {l}");
    let t0 = Instant::now();
    let n = cli(&[&["run", "-n", &key, "--"][..], &sh(&n_script)].concat());
    assert_eq!(code(&n), 1, "{}", stderr(&n));
    assert!(t0.elapsed() < Duration::from_secs(5), "-n took {:?}", t0.elapsed());
    assert!(stderr(&n).contains("is held by session"), "{}", stderr(&n));
    let e = cli(&[&["run", "-n", "-E", "9", &key, "--"][..], &sh(&n_script)].concat());
    assert_eq!(code(&e), 9, "-E sets the conflict code: {}", stderr(&e));
    let w = cli(&[&["run", "-w", "0.3", "-q", &key, "--"][..], &sh(&n_script)].concat());
    assert_eq!(code(&w), 1, "-w runs out: {}", stderr(&w));
    assert_eq!(stderr(&w), "", "-q prints nothing on conflict");

    // Without -n: waits for A, then runs.
    let b_script = format!("echo b >> {l}");
    let b = cli(&[&["run", &key, "--"][..], &sh(&b_script)].concat());
    assert_eq!(code(&b), 0, "{}", stderr(&b));
    assert!(stderr(&b).contains("waiting for"), "non-TTY progress line: {}", stderr(&b));
    let a = finish(a, LIMIT);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a-start\na-end\nb\n", "B ran only after A ended; -n never ran");
    assert_eq!(raw_holder(&key), None, "released");
}

#[test]
fn exit_codes_pass_through_and_the_command_sees_the_lock_env() {
    let (key, _dir) = unique("codes");
    let out = cli(&[
        &["run", &key, "--"][..],
        &sh("echo \"$CONSUL_LOCK_KEY|$CONSUL_LOCK_SESSION|$CONSUL_LOCK_FENCING_TOKEN\""),
    ]
    .concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "an uncontended run is silent");
    let line = stdout(&out);
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(parts[0], key);
    assert_eq!(parts[1].len(), 36, "session ID: {line}");
    assert!(parts[2].parse::<u64>().unwrap() > 0, "fencing token: {line}");

    assert_eq!(code(&cli(&[&["run", &key, "--"][..], &sh("exit 3")].concat())), 3);
    assert_eq!(code(&cli(&["run", &key, "true"])), 0, "`--` is optional");
    assert_eq!(code(&cli(&[&["run", &key, "--"][..], &sh("kill -KILL $$")].concat())), 128 + 9);
    assert_eq!(code(&cli(&[&["run", &key, "--"][..], &sh("kill -TERM $$")].concat())), 128 + 15);
    let nf = cli(&["run", &key, "--", "/nonexistent/command"]);
    assert_eq!(code(&nf), 127);
    assert_one_line_error(&nf);
    assert_eq!(raw_holder(&key), None, "released after every run");
    assert_eq!(sessions_named(&format!("consul-lock: {key}")), 0, "every session destroyed before exit");
}

#[test]
fn a_closed_stderr_never_aborts_a_run_holding_the_lock() {
    let (key, _dir) = unique("epipe");
    // -v logs on every step; the reading end of stderr is closed at once, so every write fails.
    let mut child = bin().args(["-v", "run", &key, "--", "sh", "-c", "sleep 0.3; exit 4"]).spawn().unwrap();
    drop(child.stderr.take());
    let out = finish(child, LIMIT);
    assert_eq!(code(&out), 4, "the command's code, not a panic (101)");
    assert_eq!(raw_holder(&key), None, "released");
}

#[test]
fn sigterm_is_forwarded_to_the_command_and_the_lock_released_after_it() {
    let (key, dir) = unique("sigterm");
    let (ready, got) = (dir.join("ready"), dir.join("got"));
    let script = format!(
        "trap 'echo term > {got}; exit 7' TERM; echo ready > {ready}; while true; do sleep 0.1; done",
        got = got.display(),
        ready = ready.display()
    );
    let child = spawn(&[&["run", &key, "--"][..], &sh(&script)].concat());
    wait_for_file(&ready, "ready", LIMIT);
    assert!(raw_holder(&key).is_some(), "held while the command runs");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child, LIMIT);
    assert_eq!(code(&out), 7, "the command's own exit code: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&got).unwrap_or_default(), "term\n", "the command got SIGTERM");
    assert_eq!(raw_holder(&key), None, "released by the time consul-lock exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_stops_the_wait_and_leaves_no_session_behind() {
    let (key, dir) = unique("waitsig");
    let guard = EphemeralLock::new(&key).client(consul().client()).hold().await.unwrap();
    let ran = dir.join("ran");
    let script = format!("echo ran > {}", ran.display());
    let child = spawn(&[&["run", &key, "--"][..], &sh(&script)].concat());
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || finish(child, LIMIT));
    // Wait until the waiter has its own session (named after the key) besides the holder's.
    let name = format!("consul-lock: {key}");
    let sessions =
        |name: String| async move { tokio::task::spawn_blocking(move || sessions_named(&name)).await.unwrap() };
    let end = Instant::now() + LIMIT;
    while sessions(name.clone()).await < 2 {
        assert!(Instant::now() < end, "the waiter never created its session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = waiter.await.unwrap();
    assert_eq!(code(&out), 128 + 15, "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted by SIGTERM"), "{}", stderr(&out));
    assert!(!ran.exists(), "the command never ran");
    assert_eq!(sessions(name.clone()).await, 1, "the waiter destroyed its session before exiting");
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

#[test]
fn lost_lock_stops_the_command_and_exits_75_soon_after_the_destroy() {
    let (key, dir) = unique("lost");
    let sid_file = dir.join("sid");
    let script = format!("echo $CONSUL_LOCK_SESSION > {}; exec sleep 60", sid_file.display());
    let child = spawn(&[&["run", "--ttl", "60s", &key, "--"][..], &sh(&script)].concat());
    let sid = wait_for_file(&sid_file, "\n", LIMIT).trim().to_owned();
    std::thread::sleep(Duration::from_millis(300)); // let the watch on the key start
    let t0 = Instant::now();
    assert_eq!(http("PUT", &format!("/v1/session/destroy/{sid}")).0, 200);
    let out = finish(child, LIMIT);
    let took = t0.elapsed();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(took < Duration::from_secs(3), "exited {took:?} after the destroy (TTL is 60 s)");
    assert!(stderr(&out).contains("was lost"), "{}", stderr(&out));
}

#[test]
fn lost_lock_escalates_to_sigkill_after_kill_after() {
    let (key, dir) = unique("killafter");
    let sid_file = dir.join("sid");
    let script =
        format!("trap '' TERM; echo $CONSUL_LOCK_SESSION > {}; while true; do sleep 0.1; done", sid_file.display());
    let child = spawn(&[&["run", "--kill-after", "1s", &key, "--"][..], &sh(&script)].concat());
    let sid = wait_for_file(&sid_file, "\n", LIMIT).trim().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(http("PUT", &format!("/v1/session/destroy/{sid}")).0, 200);
    let out = finish(child, LIMIT);
    let took = t0.elapsed();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(took >= Duration::from_millis(900), "SIGKILL only after --kill-after: {took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(stderr(&out).contains("SIGKILL"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_the_holder_then_free() {
    let (key, _dir) = unique("status");
    let guard = EphemeralLock::new(&key).client(consul().client()).hold().await.unwrap();

    let out = cli_async(&["status", &key, "--json"]).await;
    assert_eq!(code(&out), 1, "held: exit 1 ({})", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["key"], key.as_str());
    assert_eq!(v["held"], true);
    assert_eq!(v["session"], guard.session_id());
    assert_eq!(v["session_name"], format!("consul-lock: {key}").as_str());
    assert!(v["node"].as_str().is_some_and(|n| n.starts_with("consul-lock-test-")), "{v}");
    assert!(v["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
    assert_eq!(v["pid"], std::process::id());
    assert!(v["since"].as_str().is_some_and(|s| s.ends_with('Z') && s.len() == 24), "RFC 3339: {v}");
    assert!(v["since_unix_ms"].as_u64().is_some(), "{v}");
    assert_eq!(v["fencing_token"], guard.fencing_token());
    assert_eq!(v["lock_delay_ms"], 15000);
    assert_eq!(v["value"], Value::Null, "the default holder JSON is not repeated");

    let human = cli_async(&["status", &key]).await;
    assert_eq!(code(&human), 1);
    assert!(stdout(&human).contains(guard.session_id()) && stdout(&human).contains("fencing token"));

    guard.release().await.unwrap();
    let out = cli_async(&["status", &key, "--json"]).await;
    assert_eq!(code(&out), 0, "free: exit 0");
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["held"], false);
    assert_eq!(v["session"], Value::Null);
    assert_eq!(v["fencing_token"], Value::Null);
}

#[test]
fn value_and_name_flags_show_in_status() {
    let (key, dir) = unique("value");
    let ready = dir.join("ready");
    let script = format!("echo ready > {}; exec sleep 60", ready.display());
    let child = spawn(&[&["run", "--value", "build 42", "--name", "nightly", &key, "--"][..], &sh(&script)].concat());
    wait_for_file(&ready, "ready", LIMIT);
    let out = cli(&["status", &key, "--json"]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["value"], "build 42");
    assert_eq!(v["session_name"], "nightly");
    assert_eq!(v["pid"], Value::Null, "no holder JSON with --value");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(code(&finish(child, LIMIT)), 128 + 15, "sleep died of the forwarded SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_refuses_without_yes_then_frees_the_key() {
    let (key, _dir) = unique("break");
    let guard = EphemeralLock::new(&key).client(consul().client()).lock_delay(Duration::ZERO).hold().await.unwrap();
    let sid = guard.session_id().to_owned();

    let refused = cli_async(&["break", &key]).await;
    assert_eq!(code(&refused), 2);
    assert_one_line_error(&refused);
    assert!(stderr(&refused).contains("--yes") && stderr(&refused).contains(&sid), "{}", stderr(&refused));
    assert!(guard.is_held() && raw_holder(&key).as_deref() == Some(sid.as_str()), "nothing broken without --yes");

    let broke = cli_async(&["break", &key, "--yes"]).await;
    assert_eq!(code(&broke), 0, "{}", stderr(&broke));
    assert!(stdout(&broke).contains(&sid), "says what it broke: {}", stdout(&broke));
    assert_eq!(raw_holder(&key), None, "the key is free");
    tokio::time::timeout(Duration::from_secs(10), guard.lost()).await.expect("the holder sees the loss");

    let free = cli_async(&["break", &key, "--yes"]).await;
    assert_eq!(code(&free), 1, "nothing to break: {}", stdout(&free));
}

#[test]
fn bad_flags_give_one_line_errors() {
    for args in [
        &["run", "--ttl", "abc", "k", "--", "true"][..],
        &["run", "k"],
        &["run", "-n", "-w", "3", "k", "true"],
        &["run", "-E", "300", "k", "true"],
        &["status"],
        &["frobnicate"],
        &["--token-file", "/nonexistent/token", "status", "k"],
    ] {
        let out = finish(bin_at("127.0.0.1:1").args(args).spawn().unwrap(), LIMIT);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert_one_line_error(&out);
    }
    // Values clap accepts but the library refuses: before any request, consul-lock's own code.
    let out = finish(bin_at("127.0.0.1:1").args(["run", "--ttl", "5s", "k", "true"]).spawn().unwrap(), LIMIT);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("ttl"), "{}", stderr(&out));
}

#[test]
fn unreachable_consul_gives_one_line_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    for (args, expected) in [
        (&["run", "k", "--", "true"][..], 125),
        (&["run", "-n", "k", "--", "true"], 125),
        (&["status", "k"], 2),
        (&["break", "k", "--yes"], 2),
    ] {
        let t0 = Instant::now();
        let out = finish(bin_at(&addr).args(args).spawn().unwrap(), LIMIT);
        assert_eq!(code(&out), expected, "{args:?}: {}", stderr(&out));
        assert_one_line_error(&out);
        assert!(stderr(&out).contains(&addr), "names the address: {}", stderr(&out));
        assert!(t0.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", t0.elapsed());
    }
    // The flag wins over the environment.
    let out = finish(
        bin_at("127.0.0.1:1").args(["--http-addr", consul().http_addr(), "status", "k"]).spawn().unwrap(),
        LIMIT,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn help_and_version() {
    let out = cli(&["--help"]);
    assert_eq!(code(&out), 0);
    for needle in ["Examples:", "run", "status", "break", "--http-addr", "--token-file", "CONSUL_HTTP_ADDR"] {
        assert!(stdout(&out).contains(needle), "{needle} missing from --help");
    }
    let out = cli(&["run", "--help"]);
    assert_eq!(code(&out), 0);
    for needle in ["--timeout", "--no-wait", "--conflict-exit-code", "--kill-after", "CONSUL_LOCK_FENCING_TOKEN"] {
        assert!(stdout(&out).contains(needle), "{needle} missing from run --help");
    }
    let out = cli(&["--version"]);
    assert_eq!(stdout(&out).trim(), format!("consul-lock {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn shared_runs_overlap_an_exclusive_run_is_alone_and_status_shows_both() {
    let (key, dir) = unique("rwlock");
    let log = dir.join("log");
    let l = log.display();
    let reader = |n: u32| format!("echo r{n}-start >> {l}; sleep 2; echo r{n}-end >> {l}");
    let r1 = spawn(&[&["run", "--shared", &key, "--"][..], &sh(&reader(1))].concat());
    let r2 = spawn(&[&["run", "-s", &key, "--"][..], &sh(&reader(2))].concat());
    wait_for_file(&log, "r1-start", LIMIT);
    wait_for_file(&log, "r2-start", LIMIT);
    let writer = format!("echo w-start >> {l}; echo token=$CONSUL_LOCK_FENCING_TOKEN >> {l}; echo w-end >> {l}");
    let w = spawn(&[&["run", "-x", "-q", &key, "--"][..], &sh(&writer)].concat());
    // The writer queues behind both readers; a shared -n run behind it is refused.
    let end = Instant::now() + LIMIT;
    let status = loop {
        let s = cli(&["status", "--json", &key]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&s)).expect("status --json");
        if v["waiting"].as_array().is_some_and(|w| w.len() == 1) {
            assert_eq!(code(&s), 1, "held");
            break v;
        }
        assert!(Instant::now() < end, "the writer never queued: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["rwlock"], true);
    assert_eq!(status["readers"].as_array().map(Vec::len), Some(2));
    assert_eq!(status["waiting"][0]["exclusive"], true);
    let human = cli(&["status", &key]);
    assert!(stdout(&human).contains("shared by 2 readers"), "{}", stdout(&human));
    let n = cli(&["run", "-n", "-s", &key, "--", "true"]);
    assert_eq!(code(&n), 1, "a reader behind a waiting writer does not get in: {}", stderr(&n));
    for c in [r1, r2, w] {
        let out = finish(c, LIMIT);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing from {text}"));
    assert!(pos("r2-start") < pos("r1-end") && pos("r1-start") < pos("r2-end"), "the readers overlapped: {text}");
    assert!(pos("w-start") > pos("r1-end") && pos("w-start") > pos("r2-end"), "the writer ran alone: {text}");
    assert!(text.contains("token=") && !text.contains("token=\n"), "the writer sees its token: {text}");
    let free = cli(&["status", &key]);
    assert_eq!(code(&free), 0, "free: {}", stdout(&free));
    // A plain run on the read-write lock's key is refused, not run.
    let plain = cli(&["run", "-n", &key, "--", "true"]);
    assert_ne!(code(&plain), 0);
    assert!(stderr(&plain).contains("another kind of primitive"), "{}", stderr(&plain));
}
