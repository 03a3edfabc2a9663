#!/bin/sh
# mkosi finalize script. A fixed /etc/machine-id: with an empty one systemd treats every boot as
# a first boot and re-runs `preset-all` (7 s under TCG); the presets were applied at build time.
# Derived from the profile, not random: a random one made every build's root hash, and so the
# reference values, differ (README.md "Reference values"). Every podVM of an image shares it
# either way; the journal's boot ID tells boots apart.
set -eu
printf 'podmesh podVM image, profile %s\n' "${PROFILE:-production}" | sha256sum | cut -c1-32 >"$BUILDROOT/etc/machine-id"

# The small initrd that opens the dm-verity root disk (image/verity/README.md), from the tree as
# mkosi installed it: busybox and dmsetup go from the OS below.
sh "$SRCDIR/image/verity/build-initrd.sh" "$BUILDROOT" "$OUTPUTDIR/podmesh-verity.initrd"

# Size (the OS is an initramfs held in guest RAM; see image/README.md "Guest memory").
# 1. The kernel is loaded by QEMU with -kernel, not from the OS: hand it to mkosi as the split
#    kernel output now (copy_vmlinuz skips an existing one) and drop both copies (24 MB).
root=$BUILDROOT
for k in "$root"/usr/lib/modules/*/vmlinuz; do
    [ -f "$k" ] || continue
    [ -e "$OUTPUTDIR/podmesh.vmlinuz" ] || cp "$k" "$OUTPUTDIR/podmesh.vmlinuz"
    rm -f "$k"
done
rm -rf "${root:?}/boot" "$root"/vmlinuz* "$root"/initrd.img*

# 2. Everything image/remove.list names. Files of a package come from dpkg's lists (the paths
#    there are pre-usrmerge, /bin and /sbin resolve through the image's symlinks); only files
#    and symlinks to files go, directories a package shares with others stay.
list=$SRCDIR/image/remove.list
[ -r "$list" ] || { echo "finalize: $list is missing" >&2; exit 1; }
command -v readelf >/dev/null || { echo "finalize: readelf (binutils) is missing on the build host" >&2; exit 1; }
keep_libs=" "
while read -r entry _; do
    case "$entry" in
        ''|'#'*) ;;
        pkg:*)
            pkg=${entry#pkg:}
            files=$root/var/lib/dpkg/info/$pkg.list
            [ -r "$files" ] || files=$root/var/lib/dpkg/info/$pkg:amd64.list
            [ -r "$files" ] || { echo "finalize: remove.list: package $pkg is not installed" >&2; continue; }
            while IFS= read -r f; do
                # Not directories, nor symlinks to them (/bin -> usr/bin is in many lists).
                if { [ -L "$root$f" ] || [ -e "$root$f" ]; } && [ ! -d "$root$f" ]; then rm -f "$root$f"; fi
            done <"$files" ;;
        keep-lib:*) keep_libs="$keep_libs${entry#keep-lib:} " ;;
        production:/*)
            [ "${PROFILE:-production}" = production ] || continue
            # shellcheck disable=SC2086  # the entry is a glob
            for f in "$root"${entry#production:}; do
                if [ -L "$f" ] || [ -e "$f" ]; then rm -rf "$f"; fi
            done ;;
        /*)
            # shellcheck disable=SC2086  # the entry is a glob
            for f in "$root"$entry; do
                if [ -L "$f" ] || [ -e "$f" ]; then rm -rf "$f"; fi
            done ;;
        *) echo "finalize: remove.list: cannot read line '$entry'" >&2; exit 1 ;;
    esac
done <"$list"
# Package metadata last: the pkg: lines above read it.
rm -rf "$root/var/lib/dpkg" "$root/var/lib/apt" "$root/var/cache/apt"

# 3. Shared libraries of /usr/lib/x86_64-linux-gnu that nothing left needs (DT_NEEDED, followed
#    from every other ELF file, plugins included). keep-lib: names the ones only dlopen()ed.
libdir=$root/usr/lib/x86_64-linux-gnu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
find "$root/usr" -path "$root/usr/lib/modules" -prune -o -type f -size +1k -print | while IFS= read -r f; do
    if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then printf '%s\n' "$f"; fi
done >"$work/elf"
# shellcheck source=elf.sh
. "$SRCDIR/image/scripts/elf.sh"
grep -v "^$libdir/[^/]*$" "$work/elf" >"$work/roots" || true
# shellcheck disable=SC2046  # file names from find under usr/: no spaces
{ elf_needed $(cat "$work/roots"); for l in $keep_libs; do echo "$l"; done; } |
    elf_closure "$libdir $libdir/systemd" >"$work/closure"
cut -d' ' -f1 "$work/closure" | sort -u >"$work/seen"
while read -r soname; do readlink -f "$libdir/$soname" "$libdir/systemd/$soname" 2>/dev/null || true; done \
    <"$work/seen" | sort -u >"$work/keep"
removed=0
for f in "$libdir"/lib*.so*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    # Kept: a needed soname, or any name of a file a needed soname resolves to.
    grep -qxF "${f##*/}" "$work/seen" && continue
    grep -qxF "$(readlink -f "$f")" "$work/keep" && continue
    rm -f "$f"; removed=$((removed + 1))
done
echo "finalize: removed $removed unneeded shared-library files" >&2

# 4. Fail closed: every ELF file left must find every library it needs.
missing=""
while IFS= read -r f; do
    [ -e "$f" ] || continue
    for soname in $(elf_needed "$f"); do
        [ -e "$libdir/$soname" ] || [ -e "$libdir/systemd/$soname" ] || missing="$missing ${f#"$root"}:$soname"
    done
done <"$work/elf"
if [ -n "$missing" ]; then
    echo "finalize: libraries missing after image/remove.list:$missing" >&2
    exit 1
fi
# Unit symlinks (wants/, aliases) whose unit file went with a package.
find "$root/etc/systemd/system" "$root/usr/lib/systemd/system" -type l | while IFS= read -r l; do
    t=$(readlink "$l")
    case "$t" in
        /*) [ -e "$root$t" ] || [ "$t" = /dev/null ] || rm -f "$l" ;;
        *) [ -e "$l" ] || rm -f "$l" ;;
    esac
done
