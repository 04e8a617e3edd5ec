#!/usr/bin/env bash
# THE test command (README and .ci/run call exactly this). Installs what it needs (Consul and nft),
# then: format check, clippy -D warnings, rustdoc as docs.rs builds it, examples/benches, a dry-run
# publish (the packaged crate builds), and every test with all features (unit, integration against
# real `consul agent -dev` processes and a partitioned cluster in a private network namespace, doc tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

# Disk: a CI machine's disk can be small. A fresh clone gains nothing from incremental builds (they
# were a third of target/), nor from line tables (a failing test's panic names its file and line
# without them; they were a third of each test binary), and the private target dirs of the docs
# and bench steps go once those steps are done. The last step prints what the run left.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false; fi
ci_remove() { if [ -n "${CI:-}" ]; then rm -rf "$@"; fi; }

# Every process started below inherits this mark, so the last step can tell the Consul agents (and
# `consul lock` peers) this run started from anyone else's.
CONSUL_LOCK_TEST_RUN="test-sh-$$-$(date +%s%N)"
export CONSUL_LOCK_TEST_RUN

# The pid and command line of every `consul` process that carries this run's mark.
ours_still_running() {
  local d
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = consul ] || continue
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qxF "CONSUL_LOCK_TEST_RUN=$CONSUL_LOCK_TEST_RUN"; then
      echo "${d#/proc/} $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)"
    fi
  done
}

step "Consul"
CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
export CONSUL_BIN
"$CONSUL_BIN" version | sed -n 1p

step "nft (network faults inside the partition test's private network namespace)"
NFT_BIN=$(bash scripts/install-nft.sh | tail -n 1)
export NFT_BIN
"$NFT_BIN" -v

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (the crate and the Python binding)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo doc as docs.rs builds it (--cfg docsrs, every feature, warnings denied)"
# docs.rs uses nightly for `doc(cfg)` badges. The machine has one stable toolchain: RUSTC_BOOTSTRAP=1
# lets its rustdoc accept `#![feature(doc_cfg)]`, only for this step. Plain stable builds never set
# `docsrs`, so the `cfg_attr`s are inert there (every other step checks that). Its own target dir:
# RUSTC_BOOTSTRAP changes what some build scripts detect, which would rebuild the other steps' deps.
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" CARGO_TARGET_DIR=target/docsrs \
  cargo doc --no-deps --all-features --locked
ci_remove target/docsrs

step "cargo build --examples --benches"
cargo build --examples --all-features --locked
if [ -d benches ]; then cargo bench --no-run --all-features --locked; fi
ci_remove target/release

step "cargo publish --dry-run (package what Cargo.toml includes, build it, check it against crates.io)"
# A fresh clone is clean; a developer's uncommitted work is packaged as it is (with a note).
dirty=()
if [ -z "${CI:-}" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  echo "note: uncommitted changes, packaged with --allow-dirty (CI packages a clean clone)"
  dirty=(--allow-dirty)
fi
cargo publish --dry-run --locked "${dirty[@]}"

step "cargo test (unit, integration against real Consul, doc tests)"
# Tests mostly wait on Consul (renewals, timeouts), not on the CPU: run many at once.
cargo test --all-features --locked -- --test-threads "${TEST_THREADS:-16}"

step "Python package (python/): wheel, stubtest, mypy, ruff, pytest against real Consul"
bash scripts/test-python.sh

step "no Consul process left behind"
# An agent's watchdog stops it within about 2 s of its test process's end: wait up to 10 s.
left=""
for _ in $(seq 1 50); do
  left=$(ours_still_running)
  [ -z "$left" ] && break
  sleep 0.2
done
if [ -n "$left" ]; then
  echo "error: consul processes started by this run are still running:" >&2
  echo "$left" >&2
  exit 1
fi
echo "none"

step "disk"
du -sh target .venv-python 2>/dev/null || true
df -h . | tail -n 1
