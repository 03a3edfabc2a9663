#!/bin/sh
# The small initrd that opens the dm-verity root (image/verity/README.md), from the image's own
# tree before finalize.sh trims it: busybox (static), dmsetup and the libraries it links, the
# modules for virtio-blk, dm-verity, EROFS and overlayfs (decompressed, in dependency order),
# and image/verity/init. Reproducible: sorted, owned by root, every mtime 0.
#
#   image/verity/build-initrd.sh ROOT OUT.cpio
set -eu
root=${1:?usage: build-initrd.sh ROOT OUT.cpio}
out=${2:?usage: build-initrd.sh ROOT OUT.cpio}
src=$(cd "$(dirname "$0")" && pwd)
for tool in modprobe readelf xz cpio; do
    command -v "$tool" >/dev/null || { echo "verity initrd: '$tool' is missing on the build host" >&2; exit 1; }
done
busybox=$root/usr/bin/busybox dmsetup=$root/usr/sbin/dmsetup
for f in "$busybox" "$dmsetup"; do
    [ -x "$f" ] || { echo "verity initrd: $f is missing (packages busybox-static, dmsetup in mkosi.conf)" >&2; exit 1; }
done
kver=$(ls "$root/usr/lib/modules")
[ "$(printf '%s\n' "$kver" | wc -l)" = 1 ] || { echo "verity initrd: expected one kernel in $root/usr/lib/modules, found: $kver" >&2; exit 1; }

d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/bin" "$d/dev" "$d/proc" "$d/sys" "$d/lower" "$d/rw" "$d/newroot" "$d/lib/modules" \
    "$d/lib64" "$d/usr/lib/x86_64-linux-gnu"
install -m 0755 "$src/init" "$d/init"
install -m 0755 "$busybox" "$d/bin/busybox"
for applet in sh mount umount mkdir cat sleep insmod switch_root; do ln -s busybox "$d/bin/$applet"; done

# dmsetup and its shared libraries (DT_NEEDED, followed), from the image's /usr/lib.
install -m 0755 "$dmsetup" "$d/bin/dmsetup"
# shellcheck source=../scripts/elf.sh
. "$src/../scripts/elf.sh"
libdir=$root/usr/lib/x86_64-linux-gnu
elf_needed "$dmsetup" | elf_closure "$libdir" >"$d/.libs"
while read -r soname path; do
    [ -n "$path" ] || { echo "verity initrd: dmsetup needs $soname, not in $libdir" >&2; exit 1; }
    install -m 0644 "$path" "$d/usr/lib/x86_64-linux-gnu/$soname"
done <"$d/.libs"
rm "$d/.libs"
interp=$(readelf -l "$dmsetup" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
install -m 0755 "$(readlink -f "$root$interp")" "$d$interp"

# Modules: what modprobe would load, in its order; built-in ones need nothing.
: >"$d/lib/modules/order"
for m in virtio_blk dm_verity erofs overlay; do
    modprobe -d "$root" -S "$kver" --show-depends "$m" ||
        { echo "verity initrd: module $m is not in the image (KernelModulesInclude in mkosi.conf)" >&2; exit 1; }
done | while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
    grep -qxF "$name" "$d/lib/modules/order" && continue
    case "$path" in
        *.xz) xz -dc "$path" >"$d/lib/modules/$name" ;;
        *.zst) zstd -qdc "$path" >"$d/lib/modules/$name" ;;
        *) cp "$path" "$d/lib/modules/$name" ;;
    esac
    echo "$name" >>"$d/lib/modules/order"
done
[ -s "$d/lib/modules/order" ] || { echo "verity initrd: no modules found for $kver" >&2; exit 1; }

find "$d" -exec touch -h -d @0 {} +
(cd "$d" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$out"
echo "verity initrd: $(wc -c <"$out") bytes, modules: $(tr '\n' ' ' <"$d/lib/modules/order")" >&2
