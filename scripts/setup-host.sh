#!/usr/bin/env bash
# Installs every Debian package podmesh's build, tests, image and benchmarks need.
# Idempotent: a second run installs nothing and takes a second.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: must run as root (apt-get, namespaces, nftables)" >&2
    exit 1
fi

# mkosi 24, qemu-system 10 and the 6.12 kernel live in bookworm-backports.
backports=/etc/apt/sources.list.d/podmesh-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >"$backports" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    rm -f /var/lib/apt/podmesh-updated
fi

# The SNP/TDX firmware is built from Debian's edk2 source package (image/build-firmware.sh):
# trixie's (2025.02), since bookworm's 2022.11 has no SNP_KERNEL_HASHES section. Sources only.
edk2_src=/etc/apt/sources.list.d/podmesh-edk2-src.sources
if [ ! -e "$edk2_src" ]; then
    cat >"$edk2_src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    rm -f /var/lib/apt/podmesh-updated
fi

base=(nftables iproute2 kmod fuse3 libfuse3-dev pkg-config openssl curl socat ncat shellcheck
      python3 python3-matplotlib jq systemd dbus)
bench=(stunnel4 haproxy nginx-light libnginx-mod-stream iperf3 wrk nghttp2-client sslscan testssl.sh)
# edk2's x86 build (no cross compilers) and grub-mkimage for AmdSevX64's embedded grub.efi.
firmware=(gcc make nasm acpica-tools uuid-dev python3-venv grub-efi-amd64-bin grub-common)
image_bp=(mkosi qemu-system-x86 qemu-utils)
# erofs-utils, cryptsetup-bin: the root disk (EROFS + dm-verity hash tree, image/verity/).
image=(debian-archive-keyring apt dpkg-dev zstd cpio ovmf bubblewrap uidmap systemd-container squashfs-tools e2fsprogs dosfstools mtools reprepro
       erofs-utils cryptsetup-bin xz-utils)

missing=()
for p in "${base[@]}" "${bench[@]}" "${image[@]}" "${firmware[@]}" "${image_bp[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
# mkosi must be the backports one (24.x); bookworm's 14 cannot build our tree.
if grep -q '^1[0-9]' <<<"$(dpkg-query -W -f='${Version}' mkosi 2>/dev/null)"; then missing+=(mkosi); fi

[ -e /var/lib/apt/podmesh-updated ] || missing+=(apt-lists)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -e /var/lib/apt/podmesh-updated ] || [ -n "$(find /var/lib/apt/podmesh-updated -mmin +1440)" ]; then
        apt-get update -qq
        touch /var/lib/apt/podmesh-updated
    fi
    apt-get install -y -qq --no-install-recommends "${base[@]}" "${bench[@]}" "${image[@]}" "${firmware[@]}" >/dev/null
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${image_bp[@]}" >/dev/null
fi

# sev-snp-measure (VirTEE's Python tool): the independent check of our SNP launch digests
# (tests/tests/reference_values.rs). Debian's pip is externally managed: a venv in the cache.
snp_measure=/var/cache/podmesh/venv/bin/sev-snp-measure
if ! grep -q '0\.0\.13' <<<"$("$snp_measure" --version 2>/dev/null)"; then
    echo "setup-host: installing sev-snp-measure 0.0.13 into /var/cache/podmesh/venv" >&2
    rm -rf /var/cache/podmesh/venv
    mkdir -p /var/cache/podmesh
    /usr/bin/python3 -m venv /var/cache/podmesh/venv
    /var/cache/podmesh/venv/bin/pip install -q --disable-pip-version-check sev-snp-measure==0.0.13
fi

# cargo fuzz runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (see scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup-host: installing cargo-fuzz" >&2
    cargo install --locked -q cargo-fuzz
fi
echo "setup-host: ok (${SECONDS}s)" >&2
