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

base=(nftables iproute2 kmod fuse3 libfuse3-dev pkg-config openssl curl socat ncat shellcheck
      python3 python3-matplotlib jq systemd dbus)
bench=(stunnel4 haproxy nginx-light libnginx-mod-stream iperf3 wrk nghttp2-client sslscan testssl.sh)
image_bp=(mkosi qemu-system-x86 qemu-utils)
image=(debian-archive-keyring apt dpkg-dev zstd cpio ovmf bubblewrap uidmap systemd-container squashfs-tools e2fsprogs dosfstools mtools reprepro)

missing=()
for p in "${base[@]}" "${bench[@]}" "${image[@]}" "${image_bp[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# mkosi must be the backports one (24.x); bookworm's 14 cannot build our tree.
if dpkg-query -W -f='${Version}' mkosi 2>/dev/null | grep -q '^1[0-9]'; then missing+=(mkosi); fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -e /var/lib/apt/podmesh-updated ] || [ -n "$(find /var/lib/apt/podmesh-updated -mmin +1440)" ]; then
        apt-get update -qq
        touch /var/lib/apt/podmesh-updated
    fi
    apt-get install -y -qq --no-install-recommends "${base[@]}" "${bench[@]}" "${image[@]}" >/dev/null
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${image_bp[@]}" >/dev/null
fi

# cargo fuzz runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (see scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup-host: installing cargo-fuzz" >&2
    cargo install --locked -q cargo-fuzz
fi
echo "setup-host: ok" >&2
