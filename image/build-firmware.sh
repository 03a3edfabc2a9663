#!/usr/bin/env bash
# Builds the podVM's confidential firmware from Debian's edk2 source package and puts it at
#   build/firmware/snp.fd  OvmfPkg/AmdSev/AmdSevX64.dsc: SEV-SNP, measured direct boot (the
#                          SNP_KERNEL_HASHES metadata section QEMU's kernel-hashes=on fills)
#   build/firmware/tdx.fd  OvmfPkg/IntelTdx/IntelTdxX64.dsc: TDVF (MRTD, RTMR0..2)
#
# Why build: Debian ships neither (its ovmf package is the generic OvmfX64, which has no
# kernel-hashes section, so an SNP launch digest would not cover kernel, initrd or command line).
# Why trixie's source: bookworm's edk2 (2022.11) predates the SNP_KERNEL_HASHES section; the
# deb-src line scripts/setup-host.sh adds fetches trixie's edk2 (2025.02) source. Only the x86
# build tools are needed (nasm, iasl, uuid-dev, python3, gcc), no cross compilers.
#
# AmdSevX64 embeds a grub.efi (its fallback boot path: an encrypted disk unlocked with a secret
# injected at launch). podmesh always boots the kernel directly (QEMU's fw_cfg kernel, verified
# against the measured hashes), so that grub never runs; it is built here by edk2's own grub.sh
# with grub-mkimage from Debian's grub-efi-amd64-bin, without the sevsecret module Debian's grub
# lacks. It is inside the measured firmware volume either way, so what it contains is covered by
# the launch digest.
#
# Cached outside the work tree like the kernel: /var/cache/podmesh/firmware/<key>/, key = edk2
# source version + grub version + build flags. A cold build takes tens of minutes (README).
# Idempotent: a warm run only copies.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${PODMESH_FIRMWARE_CACHE:-/var/cache/podmesh/firmware}
out=$root/build/firmware
jobs=${PODMESH_FIRMWARE_JOBS:-2}

die() { echo "build-firmware: $*" >&2; exit 1; }

snp_dsc=OvmfPkg/AmdSev/AmdSevX64.dsc
tdx_dsc=OvmfPkg/IntelTdx/IntelTdxX64.dsc
common_flags="-a X64 -t GCC5 -b RELEASE"
snp_flags="$common_flags -p $snp_dsc"
# No UEFI shell in a confidential guest's firmware (the dsc's default builds one).
tdx_flags="$common_flags -p $tdx_dsc -D BUILD_SHELL=FALSE"
grub_modules="part_msdos part_gpt cryptodisk luks gcry_rijndael gcry_sha256 ext2 btrfs xfs fat configfile memdisk sleep normal echo test regexp linux linuxefi reboot"

ver=$(apt-cache showsrc edk2 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -n1)
[ -n "$ver" ] || die "no edk2 source package in the apt lists; run scripts/setup-host.sh (adds the deb-src line, apt-get update)"
upstream=${ver%%-*}
grub_ver=$(dpkg-query -W -f='${Version}' grub-efi-amd64-bin 2>/dev/null) ||
    die "grub-efi-amd64-bin is not installed; run scripts/setup-host.sh"
key=$(printf '%s\n' "$ver" "$grub_ver" "$snp_flags" "$tdx_flags" "$grub_modules" pe-timestamp-0 fat-invariant hashseed-0 fixed-path | sha256sum | cut -c1-16)
dest=$cache/$upstream-$key

# The edk2 build itself, in the source tree $1 (run by unshare below).
build_edk2() {
    cd "$1"
    shift  # edksetup.sh, sourced below, takes the positional parameters as its options
    # edksetup.sh reads unset variables.
    set +u
    export PYTHON_COMMAND=python3
    # edk2's build is Python: a fixed hash seed keeps set iteration, and so any order taken
    # from it, the same in every build.
    export PYTHONHASHSEED=0
    # shellcheck disable=SC1091
    . ./edksetup.sh >/dev/null
    set -u
    [ -x BaseTools/Source/C/bin/GenFw ] || make -s -C BaseTools -j"$jobs" >&2
    # edk2's grub.sh with Debian's grub modules (no sevsecret): the dsc's PREBUILD keeps a
    # grub.efi newer than grub.sh/grub.cfg. Reproducible: its memdisk FAT image gets no
    # random volume ID (--invariant) and grub.cfg's own mtime (mcopy -m), not the clock's.
    sed -e "/^GRUB_MODULES=\"/,/^ *\"$/c GRUB_MODULES=\"$grub_modules\"" \
        -e 's/mkfs\.msdos -C/mkfs.msdos --invariant -C/' -e 's/mcopy -i/mcopy -m -i/' \
        OvmfPkg/AmdSev/Grub/grub.sh >OvmfPkg/AmdSev/Grub/grub-podmesh.sh
    grep -q 'mkfs.msdos --invariant -C' OvmfPkg/AmdSev/Grub/grub-podmesh.sh &&
        grep -q 'mcopy -m -i' OvmfPkg/AmdSev/Grub/grub-podmesh.sh ||
        die "OvmfPkg/AmdSev/Grub/grub.sh changed: cannot make its FAT image reproducible"
    PATH=$PATH:/usr/sbin:/sbin sh OvmfPkg/AmdSev/Grub/grub-podmesh.sh >&2
    [ -s OvmfPkg/AmdSev/Grub/grub.efi ] || die "grub.sh did not produce grub.efi"
    touch OvmfPkg/AmdSev/Grub/grub.efi
    # shellcheck disable=SC2086
    build -n "$jobs" $snp_flags >&2
    # shellcheck disable=SC2086
    build -n "$jobs" $tdx_flags >&2
}

# One build at a time per cache (two `make` runs, or CI beside a session): the second waits,
# then finds the cache warm.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -s "$dest/snp.fd" ] || [ ! -s "$dest/tdx.fd" ]; then
    src=$cache/src/edk2-$ver
    if [ ! -e "$src/.podmesh-patched" ]; then
        rm -rf "$src"
        mkdir -p "$cache/src" "$src"
        # --tar-only / --diff-only: apt checks both files against the signed Sources index.
        (cd "$cache/src" && apt-get source -q --download-only --tar-only "edk2=$ver" >&2 &&
            apt-get source -q --download-only --diff-only "edk2=$ver" >&2)
        tar -xf "$cache/src/edk2_$upstream.orig.tar.xz" -C "$src" --strip-components=1
        tar -xf "$cache/src/edk2_$ver.debian.tar.xz" -C "$src"
        grep -v '^#' "$src/debian/patches/series" | while read -r p; do
            [ -n "$p" ] && patch -d "$src" -p1 -s <"$src/debian/patches/$p"
        done
        # Reproducible firmware: GenFw stamps every PE image it converts with time(NULL), so
        # two builds of the same source differed; 0 instead, as its own --zero option writes.
        for f in "$src"/BaseTools/Source/C/GenFw/Elf32Convert.c "$src"/BaseTools/Source/C/GenFw/Elf64Convert.c; do
            grep -q 'TimeDateStamp = (UINT32) time(NULL);' "$f" || die "$f: no time(NULL) stamp to replace (edk2 changed?)"
            sed -i 's/TimeDateStamp = (UINT32) time(NULL);/TimeDateStamp = 0;/' "$f"
        done
        touch "$src/.podmesh-patched"
    fi
    command -v grub-mkimage >/dev/null || die "grub-mkimage missing; run scripts/setup-host.sh"
    for t in nasm iasl gcc make python3; do
        command -v "$t" >/dev/null || die "$t missing; run scripts/setup-host.sh"
    done
    # The firmware depends on the length of the source path (measured: /var/tmp/fwD gave other
    # snp.fd and tdx.fd than /var/tmp/fw2A): build in a private mount namespace that has the tree
    # at one fixed path, wherever the cache is. A fresh Build/ (its makefiles hold the path).
    fixed=/var/tmp/podmesh-edk2
    mkdir -p "$fixed"
    rm -rf "$src/Build"
    export jobs grub_modules snp_flags tdx_flags
    echo "build-firmware: building edk2 $ver (AmdSevX64, IntelTdxX64) in $src (as $fixed)" >&2
    unshare --mount --propagation private bash -c \
        "set -euo pipefail; $(declare -f die build_edk2); mount --bind \"\$1\" $fixed; build_edk2 $fixed" _ "$src"
    mkdir -p "$dest.tmp"
    cp "$src/Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd" "$dest.tmp/snp.fd"
    cp "$src/Build/IntelTdx/RELEASE_GCC5/FV/OVMF.fd" "$dest.tmp/tdx.fd"
    printf 'edk2 %s (+ GenFw PE TimeDateStamp 0, grub memdisk FAT --invariant, mcopy -m)\ngrub-efi-amd64-bin %s\nsnp: build %s\ntdx: build %s\n' \
        "$ver" "$grub_ver" "$snp_flags" "$tdx_flags" >"$dest.tmp/BUILDINFO"
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi

mkdir -p "$out"
for f in snp.fd tdx.fd BUILDINFO; do
    cmp -s "$dest/$f" "$out/$f" 2>/dev/null || cp "$dest/$f" "$out/$f"
done
echo "build-firmware: $out/snp.fd $out/tdx.fd (edk2 $ver, cache $dest)" >&2
