#!/usr/bin/env bash
# THE test command (README and .ci/run call exactly this). Installs what it needs (Consul and nft),
# then: format check, clippy -D warnings, every test with all features (unit, integration against real
# `consul agent -dev` processes, doc tests), rustdoc with warnings denied, and builds examples/benches.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

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

step "cargo clippy -D warnings"
cargo clippy --all-targets --all-features --locked -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --locked

step "cargo build --examples --benches"
cargo build --examples --all-features --locked
if [ -d benches ]; then cargo bench --no-run --all-features --locked; fi

step "cargo test (unit, integration against real Consul, doc tests)"
# Tests mostly wait on Consul (renewals, timeouts), not on the CPU: run many at once.
cargo test --all-features --locked -- --test-threads "${TEST_THREADS:-16}"
