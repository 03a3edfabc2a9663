# shellcheck shell=sh
# Shared-library closure of ELF files, for the image's finalize script (which libraries the OS
# keeps) and the verity initrd (which libraries dmsetup takes along). POSIX sh, sourced; names
# start with elf_ so they leave the caller's variables alone. Needs readelf (binutils).

# elf_needed FILE...: the sonames they need (DT_NEEDED), one per line, sorted.
elf_needed() {
    readelf -d "$@" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u
}

# elf_closure "DIR ..." < SONAMES: "SONAME PATH" for each soname read and each one they need in
# turn, PATH being the file the first DIR that has it resolves to (empty when none has it).
elf_closure() {
    elf_dirs=$1 elf_todo=$(sort -u) elf_seen=" "
    while [ -n "$elf_todo" ]; do
        elf_next=""
        for elf_so in $elf_todo; do
            case "$elf_seen" in *" $elf_so "*) continue ;; esac
            elf_seen="$elf_seen$elf_so "
            elf_path=""
            for elf_dir in $elf_dirs; do
                if [ -e "$elf_dir/$elf_so" ]; then elf_path=$(readlink -f "$elf_dir/$elf_so"); break; fi
            done
            echo "$elf_so $elf_path"
            if [ -n "$elf_path" ]; then elf_next="$elf_next $(elf_needed "$elf_path")"; fi
        done
        elf_todo=$elf_next
    done
}
