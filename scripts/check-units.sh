#!/usr/bin/env bash
# Checks every systemd unit, drop-in and preset in units/ offline (no booted systemd needed):
#   1. `systemd-analyze verify` in a throwaway root (the host's unit directory, our units in
#      /etc/systemd/system, stubs for kata-agent.service and for every Exec*= binary);
#      FAILS on any message that mentions one of our units.
#   2. `systemctl --root preset` with our preset files: every unit they enable must exist,
#      and podmesh-deny.service must end up RequiredBy kata-agent.service.
#   3. D-Bus policy files (units/*.conf) must be well-formed XML.
#   4. The peer-pods drop-in (units/peer-pods/podmesh-.service.d/) verifies the same way with
#      our units, applies to all three podmesh services and sets PODMESH_NETNS.
#   5. Prints `systemd-analyze security --offline=true` exposure for each podmesh-*.service.
# PODMESH_UNITS_DIR=DIR checks another directory (used to test this script on broken units).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${PODMESH_UNITS_DIR:-units}

fail() { echo "check-units: FAIL: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing: run scripts/setup-host.sh (package systemd)"

root=$(mktemp -d /tmp/podmesh-units.XXXXXX)
trap 'rm -rf "$root"' EXIT
etc=$root/etc/systemd/system
mkdir -p "$etc" "$root/usr/lib/systemd/system-preset" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"

shopt -s nullglob
units=()
for f in "$src"/*.service "$src"/*.socket "$src"/*.target "$src"/*.timer "$src"/*.path "$src"/*.mount; do
    cp "$f" "$etc/"
    units+=("$(basename "$f")")
done
[ ${#units[@]} -gt 0 ] || fail "no units in $src/"
dropins=()
for d in "$src"/*.d; do
    cp -r "$d" "$etc/"
    dropins+=("$(basename "$d" .d)")
done
for p in "$src"/*.preset; do cp "$p" "$root/usr/lib/systemd/system-preset/"; done

# Units we reference but do not ship (the image provides them).
stub_unit() {
    [ -e "$etc/$1" ] || [ -e "$root/usr/lib/systemd/system/$1" ] || printf '%s\n' "$2" >"$root/usr/lib/systemd/system/$1"
}
stub_unit kata-agent.service $'[Unit]\nDescription=stub kata-agent\n[Service]\nExecStart=/usr/bin/kata-agent\n[Install]\nWantedBy=kata-containers.target'
stub_unit kata-containers.target $'[Unit]\nDescription=stub kata-containers.target'

# Every absolute Exec*= binary must exist (executable) inside the root.
while read -r bin; do
    [ -x "$root$bin" ] && continue
    mkdir -p "$root$(dirname "$bin")"
    printf '#!/bin/sh\n' >"$root$bin"
    chmod +x "$root$bin"
done < <(cat "$etc"/*.service "$etc"/*.d/*.conf "$root/usr/lib/systemd/system/kata-agent.service" 2>/dev/null \
        | sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' | sort -u)

ours_re=$(printf '%s\n' "${units[@]}" "${dropins[@]}" | sed 's/[.]/[.]/g' | paste -sd'|')
ours_re="($ours_re|$etc)"

echo "check-units: systemd-analyze verify ${units[*]} ${dropins[*]}" >&2
out=$(cd "$root" && systemd-analyze verify --man=no --root="$root" "${units[@]}" "${dropins[@]}" 2>&1) || {
    echo "$out" >&2
    fail "systemd-analyze verify exited non-zero"
}
if bad=$(printf '%s\n' "$out" | grep -E "$ours_re"); then
    echo "$bad" >&2
    fail "systemd-analyze verify reported problems in our units"
fi
[ -z "$out" ] || printf 'check-units: (not ours) %s\n' "$out" >&2

# Presets: every enabled unit exists, and enabling wires podmesh-deny into kata-agent.
for p in "$src"/*.preset; do
    while read -r verb unit rest || [ -n "${verb:-}" ]; do
        case "$verb" in ''|'#'*) continue ;; enable|disable) ;; *) fail "$p: bad line '$verb $unit'" ;; esac
        [ -z "$rest" ] || fail "$p: trailing text after $unit"
        [ -e "$etc/$unit" ] || [ -e "$root/usr/lib/systemd/system/$unit" ] || fail "$p: $verb $unit, but $src/$unit does not exist"
    done <"$p"
done
if ls "$src"/*.preset >/dev/null 2>&1; then
    systemctl --root="$root" preset "${units[@]}" >/dev/null 2>&1 \
        || fail "systemctl --root preset ${units[*]} failed: $(systemctl --root="$root" preset "${units[@]}" 2>&1 | tail -1)"
    if [ -e "$etc/podmesh-deny.service" ]; then
        [ -L "$etc/kata-agent.service.requires/podmesh-deny.service" ] \
            || fail "preset did not make kata-agent.service require podmesh-deny.service"
    fi
fi

# D-Bus policies are XML.
for x in "$src"/*.conf; do
    python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$x" 2>/dev/null \
        || fail "$x is not well-formed XML"
done

# Peer-pods: the prefix drop-in on top of our units, in a second root.
if [ -d "$src/peer-pods" ]; then
    pp=$(mktemp -d /tmp/podmesh-units-pp.XXXXXX)
    trap 'rm -rf "$root" "$pp"' EXIT
    cp -a "$root/." "$pp/"
    pp_dropins=()
    for d in "$src"/peer-pods/*.d; do
        cp -r "$d" "$pp/etc/systemd/system/"
        pp_dropins+=("$(basename "$d")")
    done
    [ ${#pp_dropins[@]} -gt 0 ] || fail "$src/peer-pods/ has no drop-in directory"
    for d in "${pp_dropins[@]}"; do
        for u in podmesh-deny.service podmesh-attest.service podmesh-proxy.service; do
            case "$u" in "${d%.service.d}"*) ;; *) fail "peer-pods drop-in $d does not apply to $u" ;; esac
        done
        grep -qx 'Environment=PODMESH_NETNS=podns' "$src/peer-pods/$d"/*.conf || fail "peer-pods drop-in $d does not set PODMESH_NETNS=podns"
    done
    echo "check-units: systemd-analyze verify with peer-pods drop-ins ${pp_dropins[*]}" >&2
    out=$(cd "$pp" && systemd-analyze verify --man=no --root="$pp" "${units[@]}" 2>&1) || {
        echo "$out" >&2
        fail "systemd-analyze verify with the peer-pods drop-ins exited non-zero"
    }
    pp_re="($ours_re|$(printf '%s\n' "${pp_dropins[@]}" | sed 's/[.]/[.]/g' | paste -sd'|')|50-podns)"
    if bad=$(printf '%s\n' "$out" | grep -E "$pp_re"); then
        echo "$bad" >&2
        fail "systemd-analyze verify reported problems with the peer-pods drop-ins"
    fi
fi

# Hardening report (informational): one exposure line per podmesh service.
for u in "${units[@]}"; do
    case "$u" in podmesh-*.service) ;; *) continue ;; esac
    line=$(cd "$root" && systemd-analyze security --offline=true --root="$root" "$u" 2>&1 | grep -i 'overall exposure' || true)
    echo "check-units: ${line:-$u: no exposure line}" >&2
done
echo "check-units: ok (${#units[@]} units, ${#dropins[@]} drop-in dirs)" >&2
