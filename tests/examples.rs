//! Every example is a real program: run each against a dev agent and check what it says.
//! (`cargo test` builds the examples next to the test binaries.)

#![cfg(feature = "test-util")]

mod support;

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join(name);
    assert!(
        path.is_file(),
        "example binary {} not built: run `cargo build --examples --all-features` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .args(args)
        .env("CONSUL_HTTP_ADDR", support::consul().http_addr())
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn hold_example() {
    let key = support::unique("ex-hold");
    let out = run("hold", &[&key]);
    assert!(out.contains(&format!("holding {key}")) && out.contains("released"), "{out}");
}

#[test]
fn fail_hard_example() {
    let out = run("fail_hard", &[]);
    assert!(out.contains("acquire(false) -> Ok(false)"), "{out}");
    assert!(out.contains("acquire(true)  -> Err(lock"), "{out}");
    assert!(out.contains("after release, acquire(true) -> Ok(true)"), "{out}");
}

#[test]
fn blocking_example() {
    let out = run("blocking", &[]);
    assert!(out.contains("fencing token") && out.contains("released"), "{out}");
}

#[test]
fn job_claim_example_does_every_job_once() {
    let out = run("job_claim", &["4", "12"]);
    assert!(out.contains("12 of 12 jobs done, 0 done twice"), "{out}");
}

#[test]
fn fencing_example_rejects_the_stale_write() {
    let out = run("fencing", &[]);
    assert!(out.contains("writer A: rejected"), "{out}");
    assert!(out.contains("store holds \"B was here\""), "{out}");
}

#[test]
fn two_contend_processes_take_turns() {
    let addr = support::consul().http_addr().to_owned();
    // One start for both, as the demo gives them, so their times compare.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let spawn = |name: &str| {
        Command::new(example("contend"))
            .args([name, "2"])
            .env("CONSUL_HTTP_ADDR", &addr)
            .env("CONSUL_LOCK_DEMO_START", format!("{start:.6}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("alice"), spawn("bob"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut events: Vec<(f64, String)> = Vec::new();
    for o in &outs {
        assert!(o.status.success());
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            // "+0.703s alice: …": the time since the start, in seconds.
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let t: f64 = stamp
                .strip_prefix('+')
                .and_then(|t| t.strip_suffix('s'))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no +S.mmms stamp in {line:?}"));
            assert!(t < 120.0, "a stamp since the demo's start, not a clock reading: {line:?}");
            events.push((t, line.to_owned()));
        }
    }
    // By time; on a tie, a release sorts before an acquisition (it is printed before releasing).
    events.sort_by(|x, y| x.0.total_cmp(&y.0).then_with(|| y.1.contains("releasing").cmp(&x.1.contains("releasing"))));
    // ACQUIRED and releasing lines alternate: never two holders at once.
    let mut holding = false;
    let mut acquired = 0;
    for (_, line) in &events {
        if line.contains("ACQUIRED") {
            assert!(!holding, "two holders at once:\n{events:#?}");
            holding = true;
            acquired += 1;
        } else if line.contains("releasing") {
            holding = false;
        }
    }
    assert_eq!(acquired, 4);
}
