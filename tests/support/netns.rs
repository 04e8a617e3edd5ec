//! A private network namespace for tests that inject network faults: the test re-executes itself
//! under `unshare --net` (so nothing it does touches the machine's own network, and the namespace
//! dies with its processes), brings `lo` up there, and drops traffic between chosen 127.0.0.x
//! addresses with `nft` (installed project-locally by `scripts/install-nft.sh`).
//!
//! Why nft and not tc: the kernels these tests run on may lack the `prio` qdisc, the `gact` (drop)
//! action and `netem`; nf_tables is built in. Without netem, latency is approximated by pausing the
//! leader (`support::nemesis::Nemesis::SlowLeader`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the re-executed child: it runs inside the private namespace.
pub const INSIDE: &str = "CL_NETNS_INSIDE";

/// Whether this process runs inside the namespace [`run_inside`] made.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Run `exe args` in a new network namespace (`unshare --net`) with [`INSIDE`] set, inheriting
/// stdout/stderr; kill it past `limit`. Returns whether it succeeded.
pub fn run_inside(exe: &Path, args: &[&str], env: &[(String, String)], limit: Duration) -> bool {
    let mut child = die_with_parent(&mut Command::new("unshare"))
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args(args)
        .env(INSIDE, "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `unshare --net` (root needed): {e}"));
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.success();
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("namespaced run still going after {limit:?}: killed");
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Make the child of `cmd` die (SIGKILL) when the thread that spawned it exits, so a run killed
/// from outside leaves no Consul agent or locking process behind (and the namespace dies too).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Inside the namespace: bring `lo` up (every 127.0.0.0/8 address is then local).
pub fn setup_loopback() {
    assert!(inside(), "setup_loopback outside the private namespace");
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `nft` binary: `NFT_BIN`, else `scripts/install-nft.sh`'s project-local install (run now
/// if missing; it is idempotent).
pub fn nft_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NFT_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = root.join(".nft/bin/nft");
    if !local.exists() {
        let out = Command::new("bash").arg(root.join("scripts/install-nft.sh")).output().expect("run install-nft.sh");
        assert!(out.status.success(), "scripts/install-nft.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    local
}

/// The namespace's packet filter: a set of cut links between addresses, applied as one nft table.
pub struct Firewall {
    nft: PathBuf,
    cut: BTreeSet<(String, String)>,
}

impl Firewall {
    /// Inside the namespace only.
    pub fn new() -> Firewall {
        assert!(inside(), "a firewall outside the private namespace");
        let fw = Firewall { nft: nft_binary(), cut: BTreeSet::new() };
        fw.apply();
        fw
    }

    /// Drop every packet between `a` and `b`, both ways (TCP and UDP).
    pub fn cut(&mut self, a: &str, b: &str) {
        if a != b {
            let pair = if a < b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) };
            self.cut.insert(pair);
        }
    }

    /// Cut every address of `left` from every address of `right`.
    pub fn split(&mut self, left: &[String], right: &[String]) {
        for a in left {
            for b in right {
                self.cut(a, b);
            }
        }
    }

    /// Forget every cut (apply with [`apply`](Self::apply)).
    pub fn clear(&mut self) {
        self.cut.clear();
    }

    pub fn cuts(&self) -> usize {
        self.cut.len()
    }

    /// Replace the namespace's ruleset with the current cuts.
    pub fn apply(&self) {
        let mut rules = String::from(
            "flush ruleset\ntable inet nemesis {\n chain out {\n  type filter hook output priority 0; policy accept;\n",
        );
        for (a, b) in &self.cut {
            rules.push_str(&format!("  ip saddr {a} ip daddr {b} drop\n  ip saddr {b} ip daddr {a} drop\n"));
        }
        rules.push_str(" }\n}\n");
        let mut child = Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.nft.display()));
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("write nft rules");
        let out = child.wait_with_output().expect("nft");
        assert!(out.status.success(), "nft -f failed: {}\n{rules}", String::from_utf8_lossy(&out.stderr));
    }
}
