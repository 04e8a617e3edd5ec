# Sourced by scripts/install-consul.sh and scripts/install-nft.sh: fetch Debian packages with a
# private apt configuration, so the system's apt setup is never changed. The mirror URI and keyring
# are read from /etc/apt/sources.list.d/debian.sources (never hard-coded).
#
#   apt_fetch SUITE DIR PACKAGE...   download the packages' .debs of SUITE into DIR
# Returns 1, after saying why through the caller's `log`, when the sources cannot be read.

apt_fetch() {
  local suite=$1 dir=$2 sources=/etc/apt/sources.list.d/debian.sources uri keyring work
  shift 2
  if [[ ! -r $sources ]]; then
    log "cannot read $sources"
    return 1
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
  if [[ -z ${uri:-} || -z ${keyring:-} || -z $suite ]]; then
    log "no Debian URI/Signed-By found in $sources, or no release name"
    return 1
  fi
  # (errexit does not apply inside a function called as a condition: every step is checked.)
  work=$(mktemp -d) || return 1
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dir" || return 1
  echo "deb [signed-by=$keyring] $uri $suite main" >"$work/sources.list" || return 1
  local apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
  )
  log "fetching Debian $suite's $* from $uri"
  local rc=0
  apt-get "${apt_opts[@]}" -qq update >&2 && (cd "$dir" && apt-get "${apt_opts[@]}" -qq download "$@" >&2) || rc=$?
  rm -rf "$work"
  return "$rc"
}
