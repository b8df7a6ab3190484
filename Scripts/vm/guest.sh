#!/bin/bash
# Runs inside the vm-test guest, chrooted into the host's / (read-only 9p).
# Usage (by the initramfs): guest.sh RUN_DIR   (RUN_DIR/config and RUN_DIR/cmd.sh written by vm-test)
# Sets up rxe0 (on lo), rxe1 (on dummy0, 192.0.2.1, for rdma_cm), FS-DAX ext4 + xfs on the two
# emulated pmem regions, loop ext4 + xfs, a tmpfs; in a `vm-test --pair` guest also the wire to
# the other guest (rxew, 192.0.2.1 or .2) with dummy0 moved to 192.0.2.101 or .102, and the
# shared folder, and waits until the other guest answers;
# exports MRLEASED_* for what worked, runs RUN_DIR/cmd.sh and exits with its status.
set -uo pipefail
RUN_DIR=$1
# shellcheck source=/dev/null
source "$RUN_DIR/config"   # MRL_SERIES MRL_MNT MRL_REPO [MRL_PAIR_ROLE MRL_PAIR_KERNEL_OTHER MRL_PAIR_SHARED MRL_PAIR_MAC]
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/swift/usr/bin
failed=()
log() { echo "vm: $*"; }
fail() { echo "SETUP-FAILED: $*"; failed+=("$1"); }

mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
log "kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo)"
mkdir -p /dev/pts /dev/shm 2>/dev/null; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm

M=$MRL_MNT   # empty folders made by vm-test on the host; mounting onto them hides nothing
mount -t tmpfs -o size=1600M scratch "$M/scratch" || fail "scratch tmpfs"
mkdir -p "$M/scratch/home" "$M/scratch/tmp"
export HOME=$M/scratch/home TMPDIR=$M/scratch/tmp

log "rdma: rxe0 on lo"
ip link set lo up
if rdma link add rxe0 type rxe netdev lo && sleep 1 &&
   rdma link show rxe0/1 | grep -q 'state ACTIVE'; then
  export MRLEASED_RDMA_DEVICE=rxe0
  log "rdma: $(rdma link show rxe0/1)"
else
  fail "rdma rxe0"
fi
# rdma_cm cannot resolve routes over lo ("No such device"), so tests that need an rdma_cm
# address get rxe1 on a dummy interface with a documentation-range address. Guest only: the
# guest has no network card. rxe0 is made first, so it stays the first device listed.
# A --pair guest's wire (below) is 192.0.2.0/24 itself: a and b are .1 and .2 on it, as the
# issue fixes them. dummy0 keeping 192.0.2.1/24 there would put a second route to the subnet on
# dummy0 and make b's dummy0 own a's wire address (rdma_cm would resolve "the other guest" to
# itself), so a pair guest's dummy0 gets a /32 off the wire's hosts, 192.0.2.101 (a) or .102 (b),
# with no subnet route. A single guest keeps 192.0.2.1/24.
dummy_addr=192.0.2.1/24
case ${MRL_PAIR_ROLE:-} in a) dummy_addr=192.0.2.101/32 ;; b) dummy_addr=192.0.2.102/32 ;; esac
log "rdma: rxe1 on dummy0 ($dummy_addr) for rdma_cm"
# Loading the dummy module may already have made dummy0 (numdummies defaults to 1).
# MTU 9000 gives rxe1 an active MTU of 4096: rxe's ODP corrupts packets that do not start a page
# (docs/kernel-matrix.md), so page-aligned transfers land intact only when every packet is a page.
if { ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy; } && ip link set dummy0 mtu 9000 && ip link set dummy0 up && ip addr add "$dummy_addr" dev dummy0 &&
   rdma link add rxe1 type rxe netdev dummy0 && sleep 1 &&
   rdma link show rxe1/1 | grep -q 'state ACTIVE'; then
  export MRLEASED_RDMA_CM_ADDRESS=${dummy_addr%/*}
  log "rdma: $(rdma link show rxe1/1)"
else
  fail "rdma rxe1 on dummy0"
fi

# A --pair guest: its virtio card (the MAC vm-test gave it) is the wire to the other guest, a
# Unix datagram socket pair on the host. Documentation ranges only: 192.0.2.1/24 and
# 2001:db8::1/64 (a), .2 and ::2 (b); MTU 9000 as on dummy0, so rxew's active MTU is 4096.
# nodad: the IPv6 address is usable at once.
pair_wire=0
if [[ -n ${MRL_PAIR_ROLE:-} ]]; then
  if [[ $MRL_PAIR_ROLE == a ]]; then me=1 them=2; else me=2 them=1; fi
  wire=
  for n in /sys/class/net/*; do [[ $(cat "$n/address") == "$MRL_PAIR_MAC" ]] && wire=${n##*/}; done
  log "pair: role $MRL_PAIR_ROLE, wire ${wire:-(no card with MAC $MRL_PAIR_MAC)}: 192.0.2.$me/24, 2001:db8::$me/64, rxew"
  if [[ -n $wire ]] && ip link set "$wire" mtu 9000 && ip link set "$wire" up &&
     ip addr add "192.0.2.$me/24" dev "$wire" && ip -6 addr add "2001:db8::$me/64" dev "$wire" nodad &&
     rdma link add rxew type rxe netdev "$wire" && sleep 1 &&
     rdma link show rxew/1 | grep -q 'state ACTIVE'; then
    pair_wire=1
    log "pair: $(rdma link show rxew/1)"
  else
    fail "pair wire (rxew on ${wire:-no card})"
  fi
  # The shared folder (a host directory, read-write over its own 9p export) at its host path,
  # over the read-only view of that same directory.
  if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 pairshared "$MRL_PAIR_SHARED" &&
     touch "$MRL_PAIR_SHARED/.writable-$MRL_PAIR_ROLE"; then
    log "pair: shared folder $MRL_PAIR_SHARED"
  else
    fail "pair shared folder"; pair_wire=0
  fi
fi

# dax_check MNT: best effort; statx attribute STATX_ATTR_DAX (0x200000) on a new file
dax_check() {
  local f=$1/.dax-check attrs
  echo x > "$f"; attrs=$(xfs_io -c 'statx -r' "$f" 2>/dev/null | sed -n 's/^stat.attributes = //p')
  rm -f "$f"
  if [[ -n $attrs ]] && (( attrs & 0x200000 )); then log "dax: $1: STATX_ATTR_DAX set"; return 0; fi
  log "dax: $1: STATX_ATTR_DAX not set (attributes=${attrs:-?})"; return 1
}

# fs_dax NS FSTYPE MNT VAR: fsdax namespace -> mkfs -> mount -o dax -> export VAR
fs_dax() {
  local ns=$1 fs=$2 mnt=$3 var=$4 dev
  dev=$(ndctl create-namespace -f -e "$ns" --mode=fsdax 2>&1 | sed -n 's/.*"blockdev":"\([^"]*\)".*/\1/p')
  if [[ -z $dev || ! -b /dev/$dev ]]; then fail "pmem $ns fsdax namespace"; return; fi
  case $fs in
    ext4) mkfs.ext4 -q -F -b 4096 "/dev/$dev" ;;   # 4 KiB blocks: DAX needs block size = page size
    xfs) mkfs.xfs -q -f "/dev/$dev" ;;
  esac || { fail "mkfs.$fs /dev/$dev"; return; }
  if mount -o dax "/dev/$dev" "$mnt" && findmnt -no OPTIONS "$mnt" | grep -q dax && dax_check "$mnt"; then
    export "$var=$mnt"; log "pmem: /dev/$dev $fs -o dax on $mnt ($(findmnt -no OPTIONS "$mnt"))"
  else
    fail "$fs DAX mount of /dev/$dev"
  fi
}
log "pmem: $(ndctl list -R 2>/dev/null | tr -d ' \n')"
fs_dax namespace0.0 ext4 "$M/ext4-dax" MRLEASED_FS_EXT4_DAX
fs_dax namespace1.0 xfs "$M/xfs-dax" MRLEASED_FS_XFS_DAX

# fs_loop FSTYPE MNT VAR: 512 MiB sparse image (mkfs.xfs wants > 300 MB) on the scratch tmpfs, page-cache (non-DAX) mount
fs_loop() {
  local fs=$1 mnt=$2 var=$3 img=$M/scratch/$1.img
  truncate -s 512M "$img"
  case $fs in
    ext4) mkfs.ext4 -q -F -b 4096 "$img" ;;
    xfs) mkfs.xfs -q -f -m reflink=1 "$img" ;;
  esac && mount -o loop "$img" "$mnt" || { fail "loop $fs"; return; }
  export "$var=$mnt"; log "loop: $fs on $mnt ($(findmnt -no SOURCE "$mnt"))"
}
fs_loop ext4 "$M/ext4" MRLEASED_FS_EXT4
fs_loop xfs "$M/xfs" MRLEASED_FS_XFS
if mount -t tmpfs -o size=256M mrltmpfs "$M/tmpfs"; then
  export MRLEASED_FS_TMPFS=$M/tmpfs; log "tmpfs: $M/tmpfs"
else fail "tmpfs"; fi

export MRLEASED_VM=1 MRLEASED_KERNEL=$MRL_SERIES
# The other guest answers over IPv4 and IPv6 (busybox ping: the host's / has no iputils), and
# has seen this one answer (its .wire-ok-ROLE in the shared folder), or the command does not
# run: every pair test would only wait for it and time out. Without the second half a guest
# whose setup ends first would see the other answer, run a short command and power off before
# the other's first ping (measured: --pair 6.12,7 --shell).
if [[ -n ${MRL_PAIR_ROLE:-} ]] && ((pair_wire)); then
  t0=$SECONDS v4='' v6='' seen=''
  other_role=$([[ $MRL_PAIR_ROLE == a ]] && echo b || echo a)
  while [[ -z $v4 || -z $v6 ]] && ((SECONDS - t0 < 60)); do
    [[ -n $v4 ]] || { busybox ping -c1 -W1 "192.0.2.$them" >/dev/null 2>&1 && v4=$((SECONDS - t0)); }
    [[ -n $v6 ]] || { busybox ping -6 -c1 -W1 "2001:db8::$them" >/dev/null 2>&1 && v6=$((SECONDS - t0)); }
    [[ -n $v4 && -n $v6 ]] || sleep 0.5   # pacing between tries, not a synchronisation
  done
  if [[ -n $v4 && -n $v6 ]]; then
    touch "$MRL_PAIR_SHARED/.wire-ok-$MRL_PAIR_ROLE"
    # 120 s: the other guest's own pings may have started up to a minute after ours and take 60 s.
    while ((SECONDS - t0 < 120)); do
      [[ -e $MRL_PAIR_SHARED/.wire-ok-$other_role ]] && { seen=$((SECONDS - t0)); break; }
      sleep 0.2
    done
  fi
  if [[ -n $v4 && -n $v6 && -n $seen ]]; then
    log "pair: the other guest answers ping over IPv4 (after ${v4}s) and IPv6 (after ${v6}s), and saw this one answer (after ${seen}s)"
    export MRLEASED_PAIR_ROLE=$MRL_PAIR_ROLE MRLEASED_PAIR_DEVICE=rxew MRLEASED_PAIR_KERNEL_OTHER=$MRL_PAIR_KERNEL_OTHER
    export MRLEASED_PAIR_SELF=192.0.2.$me MRLEASED_PAIR_OTHER=192.0.2.$them
    export MRLEASED_PAIR_SELF6=2001:db8::$me MRLEASED_PAIR_OTHER6=2001:db8::$them MRLEASED_PAIR_SHARED=$MRL_PAIR_SHARED
  elif [[ -n $v4 && -n $v6 ]]; then
    fail "pair: the other guest answers ping but wrote no .wire-ok-$other_role in $MRL_PAIR_SHARED within 120 s"
    pair_wire=0
  else
    fail "pair: no answer from the other guest within 60 s (IPv4 ${v4:+ok}${v4:-none}, IPv6 ${v6:+ok}${v6:-none})"
    pair_wire=0
  fi
fi
(( ${#failed[@]} == 0 )) && log "setup ok" || log "setup: ${#failed[@]} failed: ${failed[*]}"
log "setup done at uptime $(cut -d' ' -f1 /proc/uptime)s"
dmesg -n 4   # keep rxe/fs notices from interleaving with the command's output on the console
cd "$MRL_REPO" || cd /
echo "MRLEASED-VM-START"
if [[ -n ${MRL_PAIR_ROLE:-} ]] && ((!pair_wire)); then
  log "pair: no working wire to the other guest: the command does not run"
  exit 1
fi
bash "$RUN_DIR/cmd.sh"; rc=$?
log "command exit $rc at uptime $(cut -d' ' -f1 /proc/uptime)s"
exit $rc
