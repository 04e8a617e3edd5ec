#!/usr/bin/env bash
# One command for the figures of docs/PERFORMANCE.md:
#   1. installs Consul (scripts/install-consul.sh) and starts ONE `consul agent -dev` on free loopback ports;
#   2. runs our bench (benches/lockbench/) and, when ../shared/peers exists, the Go api.Lock and
#      python-consul-lock peers against that same agent, interleaved so that machine drift hits all of
#      them alike: the uncontended cycle in BENCH_PASSES passes (3) of BENCH_PASS_ROUNDS rounds (2) each,
#      ours / Go / Python in an order that rotates per pass; then contention (ours, Go, Python); then
#      our scale, election, semaphore and rwlock parts (the semaphore part runs `consul lock -n`, the Go peer, itself);
#   3. (unless BENCH_SERVER=0) starts a single non-dev server with a -data-dir (Raft log on disk) and
#      runs the uncontended-cycle passes of all three again there: the write-path figures.
# Latency on a shared VM drifts within minutes (fsync latency on the server by several times), so
# ratios are taken within a pass and reported per pass and as their median.
# Results: target/bench/<UTC time>/ (our markdown, each peer's summary.md/results.json, a combined
# report.md). Every agent is stopped by its PID at exit.
#
#   scripts/bench.sh                    # everything, a few minutes
#   BENCH_QUICK=1 scripts/bench.sh      # smoke run: small sizes
#   BENCH_PEERS=0 scripts/bench.sh      # ours only
#   PEERS_DIR=/path/to/peers scripts/bench.sh
#   BENCH_BASELINE=39b93de scripts/bench.sh   # also REV's contend part, right after ours, same agent
#                                             # (39b93de: the plain mode before the herd-free default)
#   BENCH_AB="latency contend" BENCH_BASELINE=REV scripts/bench.sh   # only those parts, ours and REV's
#                                       # bench alternating per pass on one dev agent (before/after)
#   BENCH_REPEATS=4 scripts/bench.sh    # then 4 alternations at N = BENCH_REPEAT_N (8): ours, the
#                                       # baseline, Go — the spread of the tail (repeats.md)
# Sizes: BENCH_PASSES, BENCH_PASS_ROUNDS (above); ours: LOCKBENCH_N, LOCKBENCH_HANDOFFS, LOCKBENCH_SLOW_HANDOFFS,
# LOCKBENCH_RUNS, LOCKBENCH_SCALE_KEYS, LOCKBENCH_SCALE_CONCURRENCY, LOCKBENCH_IDLE_SECS (see Config::from_env in benches/lockbench/common.rs).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

peers=${PEERS_DIR:-$repo/../shared/peers}
use_peers=${BENCH_PEERS:-1}
[ -d "$peers/go" ] && [ -d "$peers/python" ] || use_peers=0
out=${BENCH_OUT:-$repo/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -n "${BENCH_QUICK:-}" ]; then
  export LOCKBENCH_N=${LOCKBENCH_N:-50} LOCKBENCH_ROUNDS=${LOCKBENCH_ROUNDS:-2} LOCKBENCH_HANDOFFS=${LOCKBENCH_HANDOFFS:-40}
  export LOCKBENCH_SLOW_HANDOFFS=${LOCKBENCH_SLOW_HANDOFFS:-10} LOCKBENCH_SCALE_KEYS=${LOCKBENCH_SCALE_KEYS:-1000}
  export LOCKBENCH_IDLE_SECS=${LOCKBENCH_IDLE_SECS:-3}
  passes=${BENCH_PASSES:-2} pass_rounds=${BENCH_PASS_ROUNDS:-1}
  go_lat=(-n 50 -rounds "$pass_rounds" -warmup 5); py_lat=(-n 50 --rounds "$pass_rounds")
  go_con=(-runs g4f,p4f -reps 1 -handoffs 40 -sweep 'g8f:40')
  py_con=(--procs 4 --handoffs 40 --contend-repeats 1 --sweep-procs 8 --sweep-holds-ms 100 --sweep-handoffs 10)
else
  export LOCKBENCH_N=${LOCKBENCH_N:-200}
  passes=${BENCH_PASSES:-3} pass_rounds=${BENCH_PASS_ROUNDS:-2}
  go_lat=(-n "$LOCKBENCH_N" -rounds "$pass_rounds"); py_lat=(-n "$LOCKBENCH_N" --rounds "$pass_rounds")
  go_con=(-runs g2f,g4f,g8f,p4f,p8f -reps 1 -handoffs 200 -sweep 'g32f:100,g8:200,p4f@100:40,g8f@100:40')
  py_con=(--procs 4 --handoffs 200 --contend-repeats 1 --sweep-procs 2,8 --sweep-holds-ms 100 --sweep-handoffs 40)
fi

step() { printf '\n==> %s\n' "$*" >&2; }

step "Consul"
CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
export CONSUL_BIN
"$CONSUL_BIN" version | sed -n 1p >&2

# bench_exe_in DIR: build DIR's lockbench (release) and print its path.
bench_exe_in() {
  (cd "$1" && cargo bench --no-run --all-features --bench lockbench >&2 &&
    cargo bench --no-run --all-features --bench lockbench --message-format=json 2>/dev/null) \
    | sed -n 's/.*"executable":"\([^"]*lockbench[^"]*\)".*/\1/p' | tail -n 1
}

step "build the bench (cargo bench --no-run)"
bench_exe=$(bench_exe_in "$repo")
[ -x "$bench_exe" ] || { echo "bench: cannot find the lockbench executable" >&2; exit 1; }

baseline_exe=
if [ -n "${BENCH_BASELINE:-}" ]; then
  rev=$(git rev-parse --short "$BENCH_BASELINE")
  step "build the baseline bench at $rev (an export of that commit under target/bench-baseline/)"
  bdir=$repo/target/bench-baseline/$rev
  if [ ! -f "$bdir/Cargo.toml" ]; then
    mkdir -p "$bdir"
    git archive "$rev" | tar -x -C "$bdir"
  fi
  baseline_exe=$(bench_exe_in "$bdir")
  [ -x "$baseline_exe" ] || { echo "bench: cannot build the baseline at $rev" >&2; exit 1; }
fi

if [ "$use_peers" = 1 ]; then
  step "build the peers (cached after the first time)"
  "$peers/go/run.sh" --build-only >&2 || use_peers=0
  "$peers/python/run.sh" --build-only >&2 || use_peers=0
  [ "$use_peers" = 1 ] || echo "a peer could not be built: running ours only" >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

agent_pid=
agent_dir=
stop_agent() {
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  [ -z "$agent_dir" ] || rm -rf "$agent_dir"
  agent_pid= agent_dir=
}
trap stop_agent EXIT

# start_agent dev|server: one agent on free loopback ports; sets $consul (host:port).
start_agent() {
  local mode=$1 http serf_lan serf_wan server
  http=$(free_port); serf_lan=$(free_port); serf_wan=$(free_port); server=$(free_port)
  agent_dir=$(mktemp -d "${TMPDIR:-/tmp}/consul-lock-bench.XXXXXX")
  local args=(agent -bind 127.0.0.1 -client 127.0.0.1 -http-port "$http" -serf-lan-port "$serf_lan"
    -serf-wan-port "$serf_wan" -server-port "$server" -dns-port -1 -grpc-port -1 -log-level warn
    -node "lockbench-$mode")
  if [ "$mode" = dev ]; then
    args+=(-dev)
  else
    args+=(-server -bootstrap-expect 1 -data-dir "$agent_dir/data")
  fi
  "$CONSUL_BIN" "${args[@]}" >"$out/consul-$mode.log" 2>&1 &
  agent_pid=$!
  consul=127.0.0.1:$http
  for _ in $(seq 300); do
    kill -0 "$agent_pid" 2>/dev/null || { tail -n 20 "$out/consul-$mode.log" >&2; exit 1; }
    if curl -sf "http://$consul/v1/status/leader" | grep ':' >/dev/null &&
      sid=$(curl -sf -X PUT -d '{"TTL":"10s"}' "http://$consul/v1/session/create" | sed -n 's/.*"ID": *"\([^"]*\)".*/\1/p') &&
      [ -n "$sid" ]; then
      curl -sf -X PUT "http://$consul/v1/session/destroy/$sid" >/dev/null
      echo "consul $mode agent at $consul (pid $agent_pid)" >&2
      return 0
    fi
    sleep 0.2
  done
  echo "consul $mode agent did not become ready" >&2
  tail -n 20 "$out/consul-$mode.log" >&2
  exit 1
}

ours() { # ours NAME PART...
  local name=$1; shift
  step "ours: $*"
  LOCKBENCH_CONSUL=$consul "$bench_exe" "$@" | tee "$out/rust-$name.md" || echo "ours $* failed" >&2
}
peer() { # peer go|python NAME PART ARGS...
  local which=$1 name=$2; shift 2
  step "peer $which: $*"
  "$peers/$which/run.sh" --consul "$consul" --out "$out/$which-$name" "$@" >&2 || echo "peer $which $1 failed" >&2
}

# latency_passes dev|server: the uncontended cycle of all three, interleaved in rotating passes.
latency_passes() {
  local mode=$1 pass who order=(ours go python)
  [ "$use_peers" = 1 ] || order=(ours)
  for pass in $(seq "$passes"); do
    for who in "${order[@]}"; do
      case $who in
        ours) LOCKBENCH_ROUNDS=$pass_rounds ours "$mode-$pass-latency" latency ;;
        go) peer go "$mode-$pass-latency" latency "${go_lat[@]}" ;;
        python) peer python "$mode-$pass-latency" latency "${py_lat[@]}" ;;
      esac
    done
    order=("${order[@]:1}" "${order[0]}") # rotate: nobody always runs first
  done
}

# repeats: BENCH_REPEATS alternations of forced handoff at N = BENCH_REPEAT_N on the agent —
# ours, the baseline (if built), Go (if the peers are there) — one table row of p50 / p99 each.
repeats() {
  local k=${BENCH_REPEATS:-0} n=${BENCH_REPEAT_N:-8} r row
  [ "$k" -gt 0 ] || return 0
  step "repeats: $k alternations at N = $n"
  rust_p50_p99() { # EXE: one t${n}f run of our bench (or the baseline's)
    LOCKBENCH_CONSUL=$consul LOCKBENCH_RUNS=t${n}f "$1" contend | awk -F'|' -v r="t${n}f" \
      '{gsub(/ /, "", $2)} $2 == r {gsub(/ /, "", $4); gsub(/ /, "", $6); print $4 " / " $6}'
  }
  {
    printf '## Repetitions at N = %s (forced handoff, 5 ms holds, %s handoffs): handoff p50 / p99 ms\n\n' \
      "$n" "${LOCKBENCH_HANDOFFS:-200}"
    printf '| repetition | ours |%s%s\n' "${baseline_exe:+ baseline $rev |}" "$([ "$use_peers" = 1 ] && echo ' Go api.Lock |')"
    printf '|---|---|%s%s\n' "${baseline_exe:+---|}" "$([ "$use_peers" = 1 ] && echo '---|')"
    for r in $(seq "$k"); do
      row="| $r | $(rust_p50_p99 "$bench_exe") |"
      [ -z "$baseline_exe" ] || row="$row $(rust_p50_p99 "$baseline_exe") |"
      if [ "$use_peers" = 1 ]; then
        peer go "repeat-$r" contend -runs "g${n}f" -reps 1 -handoffs "${LOCKBENCH_HANDOFFS:-200}"
        row="$row $(awk -F'|' -v r="$n goroutines" '$2 ~ r && $3 ~ /forced/ {split($9, v, " / "); gsub(/ /, "", v[1]); gsub(/ /, "", v[4]); print v[1] " / " v[4]; exit}' \
          "$out/go-repeat-$r/summary.md" 2>/dev/null) |"
      fi
      echo "$row"
    done
  } | tee "$out/rust-repeats.md"
}

# before_after PART...: with BENCH_BASELINE, each part in BENCH_PASSES passes, each pass running
# ours and the baseline's bench one after the other (who goes first flips each pass), on this one
# agent; then exit.
before_after() {
  local part pass who order
  for part in "$@"; do
    order=(ours baseline)
    for pass in $(seq "$passes"); do
      for who in "${order[@]}"; do
        step "$who: $part (pass $pass)"
        if [ "$who" = ours ]; then
          LOCKBENCH_CONSUL=$consul "$bench_exe" "$part" | tee "$out/rust-ab-$pass-$part-ours.md"
        else
          LOCKBENCH_CONSUL=$consul "$baseline_exe" "$part" | tee "$out/rust-ab-$pass-$part-baseline-$rev.md"
        fi
      done
      order=("${order[1]}" "${order[0]}")
    done
  done
}

started=$(date -u +%FT%TZ)
start_agent dev
if [ -n "${BENCH_AB:-}" ]; then
  [ -n "$baseline_exe" ] || { echo "bench: BENCH_AB needs BENCH_BASELINE" >&2; exit 1; }
  read -r -a ab_parts <<<"$BENCH_AB"
  before_after "${ab_parts[@]}"
  exit 0
fi
latency_passes dev
ours dev-contend contend
if [ -n "$baseline_exe" ]; then
  step "baseline $rev: contend"
  LOCKBENCH_CONSUL=$consul "$baseline_exe" contend | tee "$out/rust-baseline-$rev-contend.md" || echo "baseline failed" >&2
fi
if [ "$use_peers" = 1 ]; then
  peer go dev-contend contend "${go_con[@]}"
  peer python dev-contend contend "${py_con[@]}"
fi
repeats
ours dev-scale scale
ours dev-election election
ours dev-rwlock rwlock
if [ "$use_peers" = 1 ]; then
  LOCKBENCH_GO_SEMABENCH=$(PEERS_DIR=$peers bash scripts/go-semabench.sh | tail -n 1) || LOCKBENCH_GO_SEMABENCH=
  export LOCKBENCH_GO_SEMABENCH
fi
ours dev-semaphore semaphore
stop_agent

if [ "${BENCH_SERVER:-1}" = 1 ]; then
  start_agent server
  latency_passes server
  stop_agent
fi

{
  echo "# lockbench run $started → $(date -u +%FT%TZ) ($(nproc) CPUs, $("$CONSUL_BIN" version | sed -n 1p))"
  for f in "$out"/rust-*.md; do echo; echo "<!-- $(basename "$f") -->"; cat "$f"; done
  echo; python3 "$repo/scripts/bench_compare.py" "$out" || true
  for d in "$out"/go-* "$out"/python-*; do
    [ -f "$d/summary.md" ] || continue
    echo; echo "# peer: $(basename "$d")"; echo; cat "$d/summary.md"
  done
} >"$out/report.md"
echo "report: $out/report.md" >&2
