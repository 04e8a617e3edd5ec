#!/usr/bin/env bash
# Installs `nft` (nftables), which the partition test uses to drop traffic between loopback
# addresses inside its own network namespace, into a project-local directory.
#
# Like scripts/install-consul.sh: the Debian package of this machine's release (and the shared
# libraries it needs) is fetched with a private apt configuration and unpacked, never installed
# system-wide; the system's apt setup is never changed. A wrapper sets LD_LIBRARY_PATH to the
# unpacked libraries, and the install is checked with `ldd` (no library "not found") and `nft -v`.
#
# Idempotent. Prints the path of the nft wrapper on its last line of stdout.
#   NFT_BIN=/path/to/nft      use that binary, install nothing
#   NFT_INSTALL_DIR=dir       where to install (default: <repo>/.nft)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
install_dir=${NFT_INSTALL_DIR:-$repo_root/.nft}
target=$install_dir/bin/nft
# nft and the libraries it links (nftables 1.0 on bookworm); those already on the system are
# unpacked too, harmlessly, so a fresh machine without them works the same.
packages=(nftables libnftables1 libnftnl11 libmnl0 libjansson4 libxtables12 libedit2 libgmp10 libbsd0 libmd0)

log() { printf 'install-nft: %s\n' "$*" >&2; }

if [[ -n ${NFT_BIN:-} ]]; then
  if [[ -x $NFT_BIN ]]; then
    log "using NFT_BIN=$NFT_BIN"
    echo "$NFT_BIN"
    exit 0
  fi
  log "NFT_BIN=$NFT_BIN is not an executable file"
  exit 1
fi

if [[ -x $target ]] && "$target" -v >/dev/null 2>&1; then
  log "already installed: $target"
  echo "$target"
  exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
if [[ ! -r $sources ]]; then
  log "cannot read $sources: install nftables yourself and set NFT_BIN=/path/to/nft"
  exit 1
fi
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
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
if [[ -z ${uri:-} || -z ${keyring:-} || -z $suite ]]; then
  log "no Debian URI/Signed-By/release found: set NFT_BIN=/path/to/nft"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb [signed-by=$keyring] $uri $suite main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
log "fetching Debian $suite's ${packages[*]} from $uri"
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work/deb" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}" >&2)
rm -rf "$install_dir/root.tmp"
mkdir -p "$install_dir/root.tmp"
for deb in "$work"/deb/*.deb; do dpkg -x "$deb" "$install_dir/root.tmp"; done
rm -rf "$install_dir/root"
mv "$install_dir/root.tmp" "$install_dir/root"
libs=$(find "$install_dir/root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
mkdir -p "$install_dir/bin"
cat >"$target.tmp" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $install_dir/root/usr/sbin/nft "\$@"
WRAP
chmod 0755 "$target.tmp"
if LD_LIBRARY_PATH=$libs ldd "$install_dir/root/usr/sbin/nft" | grep -q 'not found'; then
  LD_LIBRARY_PATH=$libs ldd "$install_dir/root/usr/sbin/nft" | grep 'not found' >&2
  log "nft needs libraries that are not available"
  exit 1
fi
mv -f "$target.tmp" "$target"
log "installed $("$target" -v) at $target"
echo "$target"
