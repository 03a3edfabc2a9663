#!/usr/bin/env bash
# Downloads the bookworm-backports 6.12 kernel (linux-image-amd64 and the versioned package it
# depends on) into a package directory for mkosi's PackageDirectories=.
#
# Why: bookworm's own kernel is 6.1, which lacks the configfs-tsm report interface and the
# current sev-guest/tdx-guest drivers. mkosi installs from one LocalMirror (bookworm), so the
# backports kernel comes in as local .debs instead of a second suite with pinning.
# Idempotent: a second run with the debs present only checks they are still the candidate.
set -euo pipefail

dest=${1:?usage: fetch-kernel.sh DIR}
mkdir -p "$dest"
cd "$dest"

meta=linux-image-amd64
if ! ver=$(apt-cache show -t bookworm-backports "$meta" 2>/dev/null |
        awk '/^Version:/ {v=$2} /^Version:.*bpo/ {print $2; exit}') || [ -z "$ver" ]; then
    echo "fetch-kernel: no bookworm-backports $meta in the apt lists; run scripts/setup-host.sh (adds the suite, apt-get update)" >&2
    exit 1
fi
dep=$(apt-cache show "$meta=$ver" | awk -F': ' '/^Depends:/ {print $2; exit}' | sed 's/ (.*//')
if [ -z "$dep" ]; then
    echo "fetch-kernel: cannot read the dependency of $meta=$ver from apt-cache" >&2
    exit 1
fi

for pkg in "$meta=$ver" "$dep=$ver"; do
    name=${pkg%%=*}
    # The archive names files with the epoch-less version; check before downloading again.
    if compgen -G "${name}_${ver}_amd64.deb" >/dev/null; then
        continue
    fi
    echo "fetch-kernel: downloading $pkg" >&2
    rm -f "${name}"_*.deb
    apt-get download -q "$pkg" >&2
done
ls -1 "$dest"/*.deb
