#!/usr/bin/env bash
# Installs `nft` (nftables), which the partition test uses to drop traffic between loopback
# addresses inside its own network namespace, into a project-local directory.
#
# Like scripts/install-consul.sh (scripts/apt-fetch.sh): the Debian package of this machine's release (and the shared
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

# shellcheck source=apt-fetch.sh
source "$repo_root/scripts/apt-fetch.sh"
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! apt_fetch "$suite" "$work/deb" "${packages[@]}"; then
  log "could not fetch nftables: install it yourself and set NFT_BIN=/path/to/nft"
  exit 1
fi
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
