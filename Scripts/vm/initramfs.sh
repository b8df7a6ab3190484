# Sourced by Scripts/vm-test. Builds a busybox initramfs holding the modules the guest needs.
# Needs: CACHE, KVER, KROOT, VM_DIR, log(), die(). Sets INITRD.

# Load order: crc32 providers first (rxe and libcrc32c/xfs need them), then 9p for the root,
# then RDMA, pmem and filesystems; virtio_net (net_failover and failover come as its
# dependencies) for the --pair wire. Names absent from a kernel (built-in or renamed) are skipped.
GUEST_MODULES=(crc32_generic crc32c_generic crc32-pclmul crc32c-intel crc32 crc32c libcrc32c
  virtio_pci 9pnet_virtio 9p virtio_net
  rdma_rxe ib_uverbs rdma_ucm
  nd_e820 libnvdimm nd_pmem nd_btt dax dax_pmem
  jbd2 ext4 xfs loop dummy veth)

# module_base: the directory depmod -b wants (bookworm uses /lib/modules, 7.x /usr/lib/modules)
module_base() {
  if [[ -d $KROOT/usr/lib/modules/$KVER ]]; then echo "$KROOT/usr"; else echo "$KROOT"; fi
}

build_initramfs() {
  local base moddir out stage m line path name order=() seen=" "
  base=$(module_base); moddir="$base/lib/modules/$KVER"
  out="$CACHE/initramfs/$KVER.cpio.gz"; INITRD=$out
  if [[ -f $out && $out -nt $VM_DIR/init && $out -nt $VM_DIR/initramfs.sh ]]; then
    log "initramfs $KVER: cached"; return 0
  fi
  log "initramfs $KVER: depmod + collect modules"
  [[ -f $moddir/modules.dep ]] || depmod -b "$base" "$KVER" 2>/dev/null
  stage=$(mktemp -d); mkdir -p "$CACHE/initramfs" "$stage"/{bin,dev,proc,sys,root,mod}
  for m in "${GUEST_MODULES[@]}"; do
    # -C /dev/null: ignore the host's modprobe.d (ndctl's "install" hooks); softdeps still apply
    if ! line=$(modprobe -C /dev/null -d "$base" -S "$KVER" --show-depends "$m" 2>/dev/null); then
      log "  $m: not in $KVER (built-in or absent), skipped"; continue
    fi
    while read -r kind path _; do
      [[ $kind == insmod ]] || continue
      name=$(basename "$path"); name=${name%.xz}
      [[ $seen == *" $name "* ]] && continue
      seen+="$name "; order+=("$name")
      case $path in
        *.xz) xz -dc "$path" > "$stage/mod/$name" ;;
        *) cp "$path" "$stage/mod/$name" ;;
      esac
    done <<< "$line"
  done
  printf '%s\n' "${order[@]}" > "$stage/mod/order"
  cp /bin/busybox "$stage/bin/busybox"
  for m in sh mount umount insmod mkdir cat echo sleep chroot poweroff sync grep; do ln -s busybox "$stage/bin/$m"; done
  install -m 755 "$VM_DIR/init" "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp" && mv "$out.tmp" "$out"
  rm -rf "$stage"
  log "initramfs $KVER: ${#order[@]} modules, $(du -h "$out" | cut -f1)"
}
