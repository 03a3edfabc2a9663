#!/usr/bin/env bash
# Builds the podmesh podVM image with mkosi (see mkosi.conf and image/README.md).
#
#   image/build.sh [--profile production|test] [--no-cargo] [--cargo-profile release|debug]
#
# Output in build/image/<profile>/: podmesh.vmlinuz; podmesh-root.img (the OS as EROFS + its
# dm-verity hash tree), podmesh-root.verity (root hash, salt, size) and podmesh-verity.initrd
# (opens it; image/verity/README.md); podmesh.cpio (the same OS as one initramfs, for
# run-qemu --root initramfs); build-info.txt, size.txt; reference-values.json +
# manifest-fragment.json (launch measurements of the verity boot, image/reference-values.sh).
# Binaries come from target/<cargo-profile> (default release; the VM test uses the debug
# build that `cargo test` already made) and are stripped on the way into the image.
# Env: PODMESH_KATA_DIR (default ../shared/kata beside the repository) or
#      PODMESH_KATA_AGENT=/path/to/kata-agent: the real kata-agent, checked against the
#      SHA256SUMS beside it (the test image fails without it, production builds without agent);
#      PODMESH_IMAGE_CACHE (default /var/cache/podmesh/image) keeps the kernel .debs, the apt
#      package cache and mkosi's incremental cache across builds and fresh clones.
#
# Workarounds this build host needs (all applied here):
#  - mkosi 24 from bookworm-backports (bookworm's mkosi 14 cannot build this tree);
#  - only deb.debian.org is reachable: LocalMirror= in mkosi.conf, plus a package-manager
#    tree with the bookworm-security suite on deb.debian.org and the Debian archive keyring
#    (LocalMirror drops signed-by and the security suite);
#  - the 6.12 kernel comes from bookworm-backports as .debs through PackageDirectories=
#    (image/fetch-kernel.sh); `kmod` (modinfo) on the host resolves module dependencies for
#    KernelModulesInclude=;
#  - systemd.firstboot=off on the kernel command line (no prompt on the serial console).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=production
cargo_build=1
cargo_profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?--profile needs production or test}; shift 2 ;;
        --no-cargo) cargo_build=0; shift ;;
        --cargo-profile) cargo_profile=${2:?--cargo-profile needs release or debug}; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "image/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$cargo_profile" in release|debug) ;; *)
    echo "image/build.sh: unknown cargo profile '$cargo_profile' (release or debug)" >&2; exit 2 ;;
esac
case "$profile" in production|test) ;; *)
    echo "image/build.sh: unknown profile '$profile' (production or test)" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "image/build.sh: needs root (mkosi installs packages into a namespace and runs depmod/preset)" >&2
    exit 1
fi
for tool in mkosi modinfo apt-get bwrap cpio mkfs.erofs veritysetup; do
    command -v "$tool" >/dev/null || {
        echo "image/build.sh: '$tool' is missing; run scripts/setup-host.sh" >&2; exit 1; }
done
if ! grep -qE '^mkosi (2[4-9]|[3-9][0-9])' <<<"$(mkosi --version)"; then
    echo "image/build.sh: need mkosi >= 24 (bookworm-backports), found '$(mkosi --version)'" >&2
    exit 1
fi

t0=$(date +%s)
progress() { printf 'image[%s] %3ss %s\n' "$profile" "$(( $(date +%s) - t0 ))" "$*" >&2; }

cache=${PODMESH_IMAGE_CACHE:-/var/cache/podmesh/image}
work=build/image
stage=$work/stage-$profile
out=$work/$profile
# mkosi's incremental cache (the package-installed tree) per profile and per mkosi.conf + profile
# config: its own key ignores settings such as SourceDateEpoch, and a tree cached under other
# settings would differ from a fresh build (README.md "Reference values"). Older keys go.
mkosi_cache=$cache/mkosi-$profile-$(cat mkosi.conf "image/profiles/$profile.conf" | sha256sum | cut -c1-12)
for old in "$cache/mkosi-$profile" "$cache/mkosi-$profile"-*; do
    [ "$old" = "$mkosi_cache" ] || [ ! -e "$old" ] || rm -rf "$old"
done
mkdir -p "$cache/debs" "$cache/packages" "$mkosi_cache" "$work" "$out"

# The real kata-agent (Kata Containers 4.1.0, Apache-2.0): PODMESH_KATA_AGENT=/path/to/kata-agent,
# else kata-agent from PODMESH_KATA_DIR (default ../shared/kata beside the repository). Its
# directory must hold a SHA256SUMS that lists it with the right digest (fail closed: a binary that
# does not match is not installed). The test image needs it; a production image without it has no
# agent (and no agent unit). With it: /usr/local/bin/kata-agent, /etc/agent-config.toml, its unit,
# kata-containers.target, the image's drop-in, and the licence texts the agent's README names
# (Apache-2.0; pathrs under MPL-2.0; libseccomp LGPL-2.1) with a pointer to the source.
kata_dir=${PODMESH_KATA_DIR:-$(cd .. && pwd)/shared/kata}
kata_agent=${PODMESH_KATA_AGENT:-$kata_dir/kata-agent}
stage_kata_agent() {
    if [ ! -e "$kata_agent" ]; then
        if [ "$profile" = test ]; then
            echo "image/build.sh: the test image needs the real kata-agent: $kata_agent is missing" \
                "(check out shared/kata beside the repository, or set PODMESH_KATA_DIR / PODMESH_KATA_AGENT)" >&2
            exit 1
        fi
        progress "kata-agent: NONE ($kata_agent is missing): the production image gets no agent"
        kata_installed=none
        return 0
    fi
    local dir sums want got lic
    dir=$(dirname "$kata_agent")
    sums=$dir/SHA256SUMS
    [ -x "$kata_agent" ] || { echo "image/build.sh: $kata_agent is not executable" >&2; exit 1; }
    [ -r "$sums" ] || { echo "image/build.sh: no $sums to verify $kata_agent against" >&2; exit 1; }
    want=$(awk -v f="$(basename "$kata_agent")" '$2 == f || $2 == "*" f { print $1 }' "$sums")
    got=$(sha256sum "$kata_agent" | cut -d' ' -f1)
    [ -n "$want" ] || { echo "image/build.sh: $sums does not list $(basename "$kata_agent")" >&2; exit 1; }
    [ "$want" = "$got" ] || {
        echo "image/build.sh: $kata_agent has sha256 $got, $sums says $want: not installing it" >&2; exit 1; }
    install -d "$stage/usr/local/bin" "$stage/etc" "$stage/usr/lib/systemd/system/kata-agent.service.d" \
        "$stage/usr/share/licenses/kata-agent"
    install -m 0755 "$kata_agent" "$stage/usr/local/bin/kata-agent"
    install -m 0644 image/kata/agent-config.toml "$stage/etc/agent-config.toml"
    install -m 0644 image/kata/kata-agent.service image/kata/kata-containers.target "$stage/usr/lib/systemd/system/"
    install -m 0644 image/kata/kata-agent.service.d/*.conf "$stage/usr/lib/systemd/system/kata-agent.service.d/"
    lic=$stage/usr/share/licenses/kata-agent
    install -m 0644 "$dir/LICENSE" "$lic/LICENSE.Apache-2.0"
    for f in MPL-2.0 LGPL-2.1; do
        [ -r "/usr/share/common-licenses/$f" ] || {
            echo "image/build.sh: /usr/share/common-licenses/$f is missing (package base-files)" >&2; exit 1; }
        install -m 0644 "/usr/share/common-licenses/$f" "$lic/LICENSE.$f"
    done
    [ -r "$dir/README.md" ] && install -m 0644 "$dir/README.md" "$lic/README.md"
    cat >"$lic/NOTICE" <<NOTICE
/usr/local/bin/kata-agent: kata-agent 4.1.0 from Kata Containers, Apache-2.0 (LICENSE.Apache-2.0).
Source: https://github.com/kata-containers/kata-containers tag 4.1.0,
commit ddcb1ad8d23cbb4323f86c209f132b89592902df; build and provenance in README.md.
It contains pathrs (https://github.com/cyphar/libpathrs), MPL-2.0 OR LGPL-3.0+, used under
MPL-2.0 (LICENSE.MPL-2.0), and links libseccomp.so.2 from Debian's libseccomp2 dynamically,
LGPL-2.1 (LICENSE.LGPL-2.1; source: https://sources.debian.org/src/libseccomp/).
sha256 $got
NOTICE
    kata_installed="$kata_agent (sha256 $got)"
    progress "kata-agent: real binary from $kata_agent, sha256 verified against $sums"
}

# 1. Binaries.
bins=(podmesh)
[ "$profile" = test ] && bins+=(tsm-sim pmvm-kata)
cargo_flag=(--release)
[ "$cargo_profile" = debug ] && cargo_flag=()
if [ "$cargo_build" = 1 ]; then
    progress "cargo build ${cargo_flag[*]} ${bins[*]}"
    pkgs=()
    for b in "${bins[@]}"; do pkgs+=(-p "$b"); done
    cargo build ${cargo_flag[@]+"${cargo_flag[@]}"} --locked "${pkgs[@]}" --bins >&2
fi
for b in "${bins[@]}"; do
    [ -x "target/$cargo_profile/$b" ] || {
        echo "image/build.sh: target/$cargo_profile/$b is missing (cargo build ${cargo_flag[*]} -p $b)" >&2; exit 1; }
done

# 2. Stage what goes into the image on top of image/tree (and image/test-tree).
progress "staging binaries and units into $stage"
rm -rf "$stage"
install -d "$stage/usr/bin" "$stage/usr/lib/systemd/system" "$stage/usr/lib/systemd/system-preset" \
    "$stage/usr/share/dbus-1/system.d"
for b in "${bins[@]}"; do
    install -m 0755 "target/$cargo_profile/$b" "$stage/usr/bin/$b"
    strip --strip-debug "$stage/usr/bin/$b"
done
shopt -s nullglob
for f in units/*.service units/*.socket units/*.target units/*.timer units/*.path units/*.mount; do
    install -m 0644 "$f" "$stage/usr/lib/systemd/system/"
done
for d in units/*.d; do
    install -d "$stage/usr/lib/systemd/system/$(basename "$d")"
    for f in "$d"/*.conf; do install -m 0644 "$f" "$stage/usr/lib/systemd/system/$(basename "$d")/"; done
done
for f in units/*.preset; do install -m 0644 "$f" "$stage/usr/lib/systemd/system-preset/"; done
# D-Bus system bus policy files (<busconfig>) go to the system.d directory.
for f in units/*.conf; do
    grep -q '<busconfig' "$f" && install -m 0644 "$f" "$stage/usr/share/dbus-1/system.d/"
done
shopt -u nullglob
stage_kata_agent

# 3. Package manager tree: bookworm-security on deb.debian.org, and the archive keyring.
pkgmngr=$work/pkgmngr
rm -rf "$pkgmngr"
install -d "$pkgmngr/etc/apt/sources.list.d" "$pkgmngr/etc/apt/trusted.gpg.d"
install -m 0644 /usr/share/keyrings/debian-archive-keyring.gpg "$pkgmngr/etc/apt/trusted.gpg.d/"
cat >"$pkgmngr/etc/apt/sources.list.d/podmesh-security.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
SRC

# 4. The backports kernel as local .debs.
progress "kernel .debs (bookworm-backports) in $cache/debs"
bash image/fetch-kernel.sh "$cache/debs" >/dev/null

# 5. mkosi. Incremental: the package-installed tree is cached (one cache per profile: mkosi's
# cache key ignores the profile), so a rebuild only re-applies
# the trees, presets and module filtering.
progress "mkosi build (first build ~1-2 min; cached ~30 s; log $work/mkosi-$profile.log)"
# A heartbeat with mkosi's latest log line while it works (its output goes to the log).
# The sleeps get no inherited stdio: an orphaned sleep must not hold a caller's pipe open.
: >"$work/mkosi-$profile.log"
(
    while sleep 20 >/dev/null 2>&1 && kill -0 $$ 2>/dev/null; do
        line=$(tail -n1 "$work/mkosi-$profile.log" 2>/dev/null | tr -cd '[:print:]' | cut -c1-90)
        progress "  mkosi: ${line:-working}"
    done
) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
mkosi --profile "$profile" \
    --package-directory "$cache/debs" \
    --package-cache-dir "$cache/packages" \
    --cache-dir "$mkosi_cache" \
    --incremental \
    --extra-tree "$stage:/" \
    --force \
    build >"$work/mkosi-$profile.log" 2>&1 || {
        kill "$ticker" 2>/dev/null || true
        tail -n 40 "$work/mkosi-$profile.log" >&2
        echo "image/build.sh: mkosi failed (full log: $work/mkosi-$profile.log)" >&2
        exit 1
    }

kill "$ticker" 2>/dev/null || true
wait "$ticker" 2>/dev/null || true

kernel=$out/podmesh.vmlinuz
cpio_img=$out/podmesh.cpio
verity_initrd=$out/podmesh-verity.initrd
for f in "$kernel" "$cpio_img" "$verity_initrd"; do
    [ -s "$f" ] || { echo "image/build.sh: mkosi did not produce $f (log: $work/mkosi-$profile.log)" >&2; exit 1; }
done
# The size budget of the OS (image/check-size.sh; writes $out/size.txt): all of it in guest RAM
# with --root initramfs, what is stored and read with the verity disk.
bash image/check-size.sh "$profile" "$cpio_img" "$stage" | sed 's/^/image: /' >&2
# The root disk the podVM boots by default: the same OS, read-only, under dm-verity.
progress "root disk: EROFS + dm-verity (image/verity/build-root.sh)"
bash image/verity/build-root.sh "$cpio_img" "$out"
secs=$(( $(date +%s) - t0 ))
{
    echo "profile=$profile"
    echo "build_seconds=$secs"
    echo "kernel=$kernel $(stat -c %s "$kernel")"
    echo "cpio=$cpio_img $(stat -c %s "$cpio_img")"
    echo "root_disk=$out/podmesh-root.img $(stat -c %s "$out/podmesh-root.img")"
    echo "verity_initrd=$verity_initrd $(stat -c %s "$verity_initrd")"
    sed 's/^/verity_/' "$out/podmesh-root.verity"
    echo "kata_agent=$kata_installed"
    echo "binaries=target/$cargo_profile (${bins[*]})"
} >"$out/build-info.txt"
# 6. Reference values: this image's launch measurements on the project's SNP/TDX firmware,
# computed before it boots (image/reference-values.sh; the firmware build is cached).
progress "firmware (image/build-firmware.sh, cached) and reference values"
bash image/build-firmware.sh
bash image/reference-values.sh --profile "$profile" --coordinator "target/$cargo_profile/podmesh-coordinator"
progress "done: $(du -h "$kernel" | cut -f1) kernel, $(du -h "$out/podmesh-root.img" | cut -f1) root disk, $(du -h "$verity_initrd" | cut -f1) initrd in ${secs}s -> $out"
