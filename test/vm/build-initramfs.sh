#!/bin/bash
# Builds the kernel and initramfs of stowage's device-mapper test VM into OUT (a fresh dir):
#   OUT/vmlinuz            Debian's generic kernel (the -cloud- flavour lacks 9p), never installed
#   OUT/initramfs.cpio.gz  static busybox + the kernel modules the tests need + ./init
# Usage: build-initramfs.sh KERNEL_PACKAGE OUT     (needs apt-get download, dpkg-deb, busybox-static)
set -euo pipefail
KPKG=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/debs" "$OUT/kernel"

# 1. the kernel package: downloaded and unpacked, not installed
( cd "$OUT/debs" && apt-get download "$KPKG" >/dev/null 2>"$OUT/debs/apt.log" ) || { cat "$OUT/debs/apt.log" >&2; exit 1; }
dpkg-deb -x "$OUT"/debs/"$KPKG"_*.deb "$OUT/kernel"
VMLINUZ=$(ls "$OUT"/kernel/boot/vmlinuz-* | head -1)
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$OUT/kernel/lib/modules/$KVER
cp "$VMLINUZ" "$OUT/vmlinuz"

# 2. module dependencies from each .ko's .modinfo "depends=" (no depmod/modprobe needed)
declare -A KO=() SEEN=()
while IFS= read -r f; do
  n=${f##*/}; n=${n%.ko}; KO[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko')
ORDER=()
add() {   # post-order: dependencies first
  local n=${1//-/_} d
  [[ -n ${SEEN[$n]:-} ]] && return 0
  SEEN[$n]=1
  [[ -n ${KO[$n]:-} ]] || { echo "module $1 not found (built in?)" >&2; return 0; }
  for d in $(tr '\0' '\n' < "${KO[$n]}" | sed -n 's/^depends=//p' | tr ',' ' '); do add "$d"; done
  ORDER+=("$n")
}
# crc32c_generic first: ext4 and dm-persistent-data ask the crypto API for "crc32c" and the
# guest has no modprobe to load it on demand.
# dm_flakey only serves capture-fixtures.sh (metadata write errors -> a read-only pool).
for m in crc32c_generic virtio_pci 9pnet_virtio 9p ext4 xfs loop dm_thin_pool dm_flakey; do add "$m"; done

# 3. the initramfs
STAGE=$OUT/stage
mkdir -p "$STAGE"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$STAGE/bin/busybox"
for n in "${ORDER[@]}"; do
  cp "${KO[$n]}" "$STAGE/lib/modules/$n.ko"
  echo "$n" >> "$STAGE/lib/modules/load-order"
done
cp "$HERE/init" "$STAGE/init"
chmod 755 "$STAGE/init"
( cd "$STAGE" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT/initramfs.cpio.gz" )
rm -rf "$STAGE" "$OUT/kernel" "$OUT/debs"
echo "$KVER" > "$OUT/kernel-version"
echo "kernel $KVER; modules: ${ORDER[*]}"
