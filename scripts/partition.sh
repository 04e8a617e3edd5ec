#!/usr/bin/env bash
# The partition proof (docs/RELIABILITY.md, section 11). Root needed (a private network namespace).
#   bash scripts/partition.sh                 CI size: the `partition` cargo test (~2 min)
#   bash scripts/partition.sh --long [ARGS]   long run: examples/partition.rs, release build,
#                                             30 min and 5 servers unless ARGS say otherwise
#                                             (e.g. --minutes 15 --servers 3); history kept in
#                                             target/partition-long/, re-checked by partition_check
# Installs Consul and nft project-locally if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
NFT_BIN=$(bash scripts/install-nft.sh | tail -n 1)
export CONSUL_BIN NFT_BIN

if [[ ${1:-} != --long ]]; then
  exec cargo test --all-features --locked --test partition -- --nocapture
fi
shift
cargo build --release --all-features --locked --example partition --example partition_check
dir=target/partition-long
status=0
target/release/examples/partition --dir "$dir" "$@" || status=$?
if [[ -f $dir/history.jsonl ]]; then
  echo "==> partition_check $dir/history.jsonl"
  target/release/examples/partition_check "$dir/history.jsonl" || status=$?
fi
exit "$status"
