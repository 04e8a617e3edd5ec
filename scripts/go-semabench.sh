#!/usr/bin/env bash
# Build benches/go/semabench.go (Go's api.Semaphore in-process, the peer of our library semaphore
# rows) with the Go peer's toolchain and GOPATH, and print the binary's path on the last line.
# The Go peer (../shared/peers/go, or PEERS_DIR/go) sets both up in its cache first
# (`run.sh --build-only`: Debian's Go and Consul 1.8.7's api source; nothing touches the system).
# Exit 1, with the reason, when the peer is not there.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers=${PEERS_DIR:-$repo/../shared/peers}
[ -x "$peers/go/run.sh" ] || { echo "go-semabench: no Go peer at $peers/go" >&2; exit 1; }
"$peers/go/run.sh" --build-only >&2
cache=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-lock-peers}/go
if [ -z "${LOCKBENCH_PRIVATE_DEPS:-}" ] && command -v go >/dev/null 2>&1; then
  gobin=$(command -v go)
else
  export GOROOT=$cache/debian-bookworm/unpacked/usr/lib/go-1.19
  gobin=$GOROOT/bin/go
fi
[ -x "$gobin" ] && [ -d "$cache/gopath/src/github.com/hashicorp/consul/api" ] \
  || { echo "go-semabench: the Go peer's cache ($cache) has no toolchain or api source" >&2; exit 1; }
out=$repo/target/go-semabench
mkdir -p "$out/src"
bin=$out/semabench
stamp="$("$gobin" version) $(cksum <"$repo/benches/go/semabench.go")"
if [ ! -x "$bin" ] || [ "$(cat "$bin.stamp" 2>/dev/null)" != "$stamp" ]; then
  install -m 0644 "$repo/benches/go/semabench.go" "$out/src/semabench.go"
  cgo=()
  command -v "${CC:-gcc}" >/dev/null 2>&1 || cgo=(CGO_ENABLED=0)
  (cd "$out/src" && env GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local GOPATH="$cache/gopath" GOCACHE="$cache/gocache" \
    "${cgo[@]}" "$gobin" build -o "$bin" semabench.go) >&2
  echo "$stamp" >"$bin.stamp"
fi
echo "$bin"
