# Sourced by Scripts/vm-test. Fetches Debian kernels with a private apt configuration
# (the host's apt sources are never touched) into $CACHE and extracts them.
# Needs: CACHE, log(). Sets after fetch_kernel SERIES: KVER, KROOT (extracted tree), VMLINUZ.

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg   # covers bookworm and trixie

# private_apt NAME "SOURCES-LINES" -> sets APT_OPTS for that private configuration;
# refreshes its lists when they are missing or older than a day.
private_apt() {
  local name=$1 sources=$2 dir="$CACHE/apt/$1"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  printf '%s\n' "$sources" > "$dir/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Dir::State::status=/dev/null
    -o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  local stamp="$dir/updated"
  if [[ -z $(find "$stamp" -mmin -1440 2>/dev/null) ]]; then
    log "apt update ($name, private lists in $dir)"
    if apt-get -q "${APT_OPTS[@]}" update >"$dir/update.log" 2>&1; then
      touch "$stamp"
    elif [[ -f $stamp ]]; then
      log "apt update ($name) failed; using the cached lists from $(date -r "$stamp" +%F)"
    else
      cat "$dir/update.log" >&2; die "apt update ($name) failed"
    fi
  fi
}

# release_sources SUITE -> sources.list lines for a Debian release: SUITE, its updates and security
release_sources() {
  printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\n' "$KEYRING" "$1" "$KEYRING" "$1-updates"
  printf 'deb [signed-by=%s] http://deb.debian.org/debian-security %s-security main\n' "$KEYRING" "$1"
}

# candidate_dep PKG PATTERN -> the candidate version's dependency matching PATTERN
candidate_dep() {
  apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests "$1" 2>/dev/null |
    sed -n 's/^ *Depends: //p' | grep -E "$2" | head -1
}

# download PKG -> path of the .deb in $CACHE/debs (downloads only when absent)
download() {
  local pkg=$1 ver deb
  ver=$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | sed -n 's/^ *Candidate: //p')
  [[ -n $ver && $ver != "(none)" ]] || die "no candidate for $pkg"
  deb=$(ls "$CACHE"/debs/"${pkg}_${ver//:/%3a}"_*.deb 2>/dev/null | head -1 || true)
  if [[ -z $deb ]]; then
    log "download $pkg $ver"
    local tmp; tmp=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")   # no partial .deb left in the cache
    (cd "$tmp" && apt-get -q "${APT_OPTS[@]}" download "$pkg=$ver" >/dev/null) || die "download $pkg failed"
    mv "$tmp"/*.deb "$CACHE/debs/" && rmdir "$tmp"
    deb=$(ls "$CACHE"/debs/"${pkg}_${ver//:/%3a}"_*.deb | head -1)
  fi
  echo "$deb"
}

# extract DEB... into $KROOT once (stamp file per tree)
extract() {
  [[ -f $KROOT/.extracted ]] && return 0
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  local deb; for deb in "$@"; do log "extract $(basename "$deb")"; dpkg-deb -x "$deb" "$KROOT"; done
  touch "$KROOT/.extracted"
}

fetch_kernel() {
  local series=$1 img debs=()
  mkdir -p "$CACHE/debs" "$CACHE/kernels"
  case $series in
    6.1)
      private_apt bookworm "$(release_sources bookworm)"
      img=$(candidate_dep linux-image-amd64 '^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$')
      [[ -n $img ]] || die "cannot resolve bookworm linux-image-amd64"
      KVER=${img#linux-image-}
      debs=("$(download "$img")") ;;
    6.12)
      # Debian 13's own kernel (trixie main; its point releases come through trixie-security)
      private_apt trixie "$(release_sources trixie)"
      img=$(candidate_dep linux-image-amd64 '^linux-image-6\.12\.[0-9]+\+deb13[^ ]*-amd64$')
      [[ -n $img ]] || die "cannot resolve trixie linux-image-amd64 to a 6.12 kernel"
      KVER=${img#linux-image-}
      debs=("$(download "$img")") ;;   # 6.12: one package holds the image and its modules
    7)
      private_apt trixie-backports "deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie-backports main"
      img=$(candidate_dep linux-image-amd64 '^linux-image-7\.[0-9.]+\+deb13-amd64$')
      [[ -n $img ]] || die "trixie-backports has no 7.x linux-image-amd64"
      KVER=${img#linux-image-}
      # 7.x: linux-image-VER is a meta package; the image and modules are separate packages
      debs=("$(download "linux-binary-$KVER")" "$(download "linux-modules-$KVER")") ;;
    *) die "unknown kernel series $series" ;;
  esac
  KROOT="$CACHE/kernels/$KVER"
  extract "${debs[@]}"
  VMLINUZ=$(ls "$KROOT/boot/vmlinuz-$KVER" "$KROOT/usr/lib/modules/$KVER/vmlinuz" 2>/dev/null | head -1 || true)
  [[ -n $VMLINUZ ]] || die "no vmlinuz in $KROOT"
  log "kernel $series: $KVER ($VMLINUZ)"
}
