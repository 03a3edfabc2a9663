#!/usr/bin/env bash
# The podVM's root disk: the image's OS (the cpio mkosi built) as a read-only EROFS, followed
# by its dm-verity hash tree (image/verity/README.md).
#
#   image/verity/build-root.sh CPIO OUTDIR
#
# Writes OUTDIR/podmesh-root.img (data blocks, then the hash tree; no verity superblock: the
# parameters travel on the measured kernel command line only) and OUTDIR/podmesh-root.verity
# (root_hash=, salt=, data_blocks=, read by image/run-qemu). Reproducible: the same files, modes
# and owners give the same disk and root hash, whatever the cpio's mtimes (fixed timestamps,
# UUID and salt derived from the content).
set -euo pipefail
cpio_img=${1:?usage: build-root.sh CPIO OUTDIR}
out=${2:?usage: build-root.sh CPIO OUTDIR}
for tool in mkfs.erofs veritysetup cpio; do
    command -v "$tool" >/dev/null || { echo "verity root: '$tool' is missing; run scripts/setup-host.sh" >&2; exit 1; }
done
[ -s "$cpio_img" ] || { echo "verity root: $cpio_img is missing or empty" >&2; exit 1; }

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
(cd "$tree" && cpio -idm --quiet --no-absolute-filenames) <"$cpio_img"
# The file system's UUID comes from its content, not from the cpio (whose mtimes and inode
# numbers change with every build): a first pass with the nil UUID, hashed.
img=$out/podmesh-root.img
rm -f "$img"
mkfs.erofs --quiet -T0 -U 00000000-0000-0000-0000-000000000000 "$img" "$tree"
sum=$(sha256sum "$img" | cut -c1-64)
uuid=${sum:0:8}-${sum:8:4}-4${sum:13:3}-8${sum:17:3}-${sum:20:12}
rm -f "$img"
mkfs.erofs --quiet -T0 -U "$uuid" "$img" "$tree"
bytes=$(stat -c %s "$img")
[ $((bytes % 4096)) -eq 0 ] || { echo "verity root: EROFS image is $bytes bytes, not whole 4 KiB blocks" >&2; exit 1; }
blocks=$((bytes / 4096))
salt=$(sha256sum "$img" | cut -c1-64)
root_hash=$(veritysetup format --no-superblock --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
    --data-blocks="$blocks" --hash-offset="$bytes" --salt="$salt" "$img" "$img" |
    sed -n 's/^Root hash:[[:space:]]*\([0-9a-f]\{64\}\)$/\1/p')
[ -n "$root_hash" ] || { echo "verity root: veritysetup printed no root hash" >&2; exit 1; }
veritysetup verify --no-superblock --hash-offset="$bytes" --data-blocks="$blocks" --salt="$salt" \
    "$img" "$img" "$root_hash" || { echo "verity root: veritysetup verify failed on the fresh image" >&2; exit 1; }
printf 'root_hash=%s\nsalt=%s\ndata_blocks=%s\n' "$root_hash" "$salt" "$blocks" >"$out/podmesh-root.verity"
echo "verity root: $img $(stat -c %s "$img") bytes ($blocks data blocks), root hash $root_hash" >&2
