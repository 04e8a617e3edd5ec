#!/usr/bin/env bash
# The Python bench (benches/python/bench.py): consul_lock (release wheel) beside python-consul-lock
# (through the peer benchmark, ../shared/peers/python, which makes its own virtualenv) and a
# hand-written py-consul lock, plus the Rust crate's own cycle (benches/lockbench), all against one
# Consul dev agent. Results in target/bench-python/<UTC time>/ (report.md, results.json).
#   BENCH_N=200 BENCH_ROUNDS=3 BENCH_PROCS=8 BENCH_HANDOFFS=100 scripts/bench-python.sh
#   PEERS_DIR=/path/to/peers scripts/bench-python.sh     # BENCH_PEERS=0: without python-consul-lock
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
out=${BENCH_OUT:-$root/target/bench-python/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
export CONSUL_BIN

venv=$root/target/bench-python-venv
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "maturin==1.16.0" "py-consul==1.8.0"
fi
echo "==> the release wheel" >&2
"$venv/bin/maturin" build --release -m python/Cargo.toml --out "$out/wheel" --interpreter "$venv/bin/python" --locked >&2
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$out"/wheel/consul_lock_rs-*.whl

echo "==> the Rust crate's lockbench (release)" >&2
cargo bench --no-run --all-features --bench lockbench >&2
lockbench=$(cargo bench --no-run --all-features --bench lockbench --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*lockbench[^"]*\)".*/\1/p' | tail -n 1)

peers=${PEERS_DIR:-$root/../shared/peers}
peer=()
if [ "${BENCH_PEERS:-1}" = 1 ] && [ -x "$peers/python/run.sh" ]; then
  peer=(--peer "$peers/python/run.sh")
else
  echo "no python-consul-lock peer (PEERS_DIR=$peers): ours and the hand-written lock only" >&2
fi

echo "==> bench" >&2
"$venv/bin/python" benches/python/bench.py --out "$out" --lockbench "$lockbench" "${peer[@]}" \
  -n "${BENCH_N:-200}" --rounds "${BENCH_ROUNDS:-3}" --procs "${BENCH_PROCS:-8}" --handoffs "${BENCH_HANDOFFS:-100}" \
  | tee "$out/report.md"
echo "results: $out" >&2
