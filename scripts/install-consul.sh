#!/usr/bin/env bash
# Installs the Consul binary the tests and the demo use, into a project-local directory.
#
# Consul's release site is not reachable from CI, so the binary comes from Debian bullseye's `consul`
# package (1.8.7), fetched with a private apt configuration: the system's apt setup is never changed.
# The mirror URI and keyring are read from /etc/apt/sources.list.d/debian.sources (never hard-coded).
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

sources=/etc/apt/sources.list.d/debian.sources
if [[ ! -r $sources ]]; then
  log "cannot read $sources: install Consul yourself and set CONSUL_BIN=/path/to/consul"
  exit 1
fi

# First deb822 stanza whose URI is not the security archive: its URI and Signed-By keyring.
read -r uri keyring < <(awk '
  BEGIN { RS = ""; FS = "\n" }
  {
    u = ""; k = ""
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u = a[1] }
      if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", $i); k = $i }
    }
    if (u != "" && u !~ /security/) { print u, k; exit }
  }' "$sources")
if [[ -z ${uri:-} || -z ${keyring:-} ]]; then
  log "no Debian URI/Signed-By found in $sources: set CONSUL_BIN=/path/to/consul"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb [signed-by=$keyring] $uri bullseye main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
log "fetching Debian bullseye's consul package from $uri"
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work/deb" && apt-get "${apt_opts[@]}" -qq download consul >&2)
deb=$(ls "$work"/deb/consul_*.deb)
dpkg -x "$deb" "$work/root"
mkdir -p "$install_dir/bin"
install -m 0755 "$work/root/usr/bin/consul" "$target.tmp"
mv -f "$target.tmp" "$target"
log "installed $("$target" version | sed -n 1p) at $target"
echo "$target"
