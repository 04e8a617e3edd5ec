#!/usr/bin/env bash
# Installs the Consul binary the tests and the demo use, into a project-local directory.
#
# Consul's release site is not reachable from CI, so the binary comes from Debian bullseye's `consul`
# package (1.8.7), fetched with a private apt configuration: the system's apt setup is never changed.
# The mirror URI and keyring are read from /etc/apt/sources.list.d/debian.sources (never hard-coded;
# scripts/apt-fetch.sh).
#
# Idempotent. Prints the path of the consul binary on its last line of stdout.
#   CONSUL_BIN=/path/to/consul   use that binary, install nothing
#   CONSUL_INSTALL_DIR=dir       where to install (default: <repo>/.consul)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
install_dir=${CONSUL_INSTALL_DIR:-$repo_root/.consul}
target=$install_dir/bin/consul

log() { printf 'install-consul: %s\n' "$*" >&2; }

if [[ -n ${CONSUL_BIN:-} ]]; then
  if [[ -x $CONSUL_BIN ]]; then
    log "using CONSUL_BIN=$CONSUL_BIN"
    echo "$CONSUL_BIN"
    exit 0
  fi
  log "CONSUL_BIN=$CONSUL_BIN is not an executable file"
  exit 1
fi

if [[ -x $target ]] && "$target" version >/dev/null 2>&1; then
  log "already installed: $target"
  echo "$target"
  exit 0
fi

# shellcheck source=apt-fetch.sh
source "$repo_root/scripts/apt-fetch.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! apt_fetch bullseye "$work/deb" consul; then
  log "could not fetch the consul package: install Consul yourself and set CONSUL_BIN=/path/to/consul"
  exit 1
fi
deb=$(ls "$work"/deb/consul_*.deb)
dpkg -x "$deb" "$work/root"
mkdir -p "$install_dir/bin"
install -m 0755 "$work/root/usr/bin/consul" "$target.tmp"
mv -f "$target.tmp" "$target"
log "installed $("$target" version | sed -n 1p) at $target"
echo "$target"
