#!/bin/bash
# Runs inside the vm-test guest, chrooted into the host's / (read-only 9p).
# Usage (by the initramfs): guest.sh RUN_DIR   (RUN_DIR/config and RUN_DIR/cmd.sh written by vm-test)
# Sets up rxe0 (on lo), rxe1 (on dummy0, 192.0.2.1, for rdma_cm), FS-DAX ext4 + xfs on the two
# emulated pmem regions, loop ext4 + xfs, a tmpfs,
# exports MRLEASED_* for what worked, runs RUN_DIR/cmd.sh and exits with its status.
set -uo pipefail
RUN_DIR=$1
# shellcheck source=/dev/null
source "$RUN_DIR/config"   # MRL_SERIES MRL_MNT MRL_REPO
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
log "rdma: rxe1 on dummy0 (192.0.2.1/24) for rdma_cm"
# Loading the dummy module may already have made dummy0 (numdummies defaults to 1).
# MTU 9000 gives rxe1 an active MTU of 4096: rxe's ODP corrupts packets that do not start a page
# (docs/kernel-matrix.md), so page-aligned transfers land intact only when every packet is a page.
if { ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy; } && ip link set dummy0 mtu 9000 && ip link set dummy0 up && ip addr add 192.0.2.1/24 dev dummy0 &&
   rdma link add rxe1 type rxe netdev dummy0 && sleep 1 &&
   rdma link show rxe1/1 | grep -q 'state ACTIVE'; then
  export MRLEASED_RDMA_CM_ADDRESS=192.0.2.1
  log "rdma: $(rdma link show rxe1/1)"
else
  fail "rdma rxe1 on dummy0"
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
(( ${#failed[@]} == 0 )) && log "setup ok" || log "setup: ${#failed[@]} failed: ${failed[*]}"
log "setup done at uptime $(cut -d' ' -f1 /proc/uptime)s"
dmesg -n 4   # keep rxe/fs notices from interleaving with the command's output on the console
cd "$MRL_REPO" || cd /
echo "MRLEASED-VM-START"
bash "$RUN_DIR/cmd.sh"; rc=$?
log "command exit $rc at uptime $(cut -d' ' -f1 /proc/uptime)s"
exit $rc
