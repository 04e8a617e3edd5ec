#!/usr/bin/env bash
# The newcomer's demo: start a throwaway Consul dev agent (installing Consul if needed), run two
# processes that contend for one lock and print who holds it when, then stop Consul cleanly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
echo "==> building the demo"
cargo build --quiet --example contend

# Free loopback ports (bash only): a port is free if nothing answers a connect.
used() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! used "$p"; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}
http=$(pick_port); lan=$(pick_port); wan=$(pick_port); server=$(pick_port)

log=$(mktemp -t consul-demo.XXXXXX.log)
"$CONSUL_BIN" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -log-level warn \
  -http-port "$http" -serf-lan-port "$lan" -serf-wan-port "$wan" -server-port "$server" \
  -dns-port -1 -grpc-port -1 >"$log" 2>&1 &
consul_pid=$!
stop() {
  kill "$consul_pid" 2>/dev/null && wait "$consul_pid" 2>/dev/null || true
  rm -f "$log"
  echo "==> Consul stopped"
}
trap stop EXIT

export CONSUL_HTTP_ADDR="127.0.0.1:$http"
echo "==> Consul dev agent (pid $consul_pid) on $CONSUL_HTTP_ADDR, waiting for a leader"
for _ in $(seq 1 100); do
  if "$CONSUL_BIN" operator raft list-peers -http-addr="$CONSUL_HTTP_ADDR" 2>/dev/null | grep leader >/dev/null; then break; fi
  sleep 0.2
done
"$CONSUL_BIN" operator raft list-peers -http-addr="$CONSUL_HTTP_ADDR" >/dev/null || { cat "$log"; exit 1; }

echo "==> two processes contend for the key demo/contended (each takes it 3 times; times since now)"
CONSUL_LOCK_DEMO_START=$(date +%s.%N)
export CONSUL_LOCK_DEMO_START
./target/debug/examples/contend alice 3 &
a=$!
./target/debug/examples/contend bob 3 &
b=$!
wait "$a" "$b"
echo "==> done: the ACQUIRED lines never overlap and the fencing tokens only go up"
