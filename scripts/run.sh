#!/usr/bin/env bash
# `make run`: the podmesh demo, stage by stage.
#   scripts/run.sh [all|netns|vm]     (default: all)
# netns: two throwaway network-namespace "pods"; the default-deny table in pod A drops a new
#        TCP connection from pod B (IPv4 and IPv6) until it is removed.
# vm:    the podVM demo (tests/vm/demo.sh: demo_vm), when present.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bold headers on a terminal only: a redirected log stays plain text.
if [ -t 2 ]; then SAY_ON=$'\033[1m' SAY_OFF=$'\033[0m'; else SAY_ON="" SAY_OFF=""; fi
say() { printf '\n%s==> %s%s\n' "$SAY_ON" "$*" "$SAY_OFF" >&2; }
die() { echo "make run: $*" >&2; exit 1; }

podmesh_bin() {
    local b
    for b in target/release/podmesh target/debug/podmesh; do
        [ -x "$b" ] && { echo "$b"; return; }
    done
    cargo build --release -p podmesh >&2 && echo target/release/podmesh
}

# Connects from pod $1 to $2 port $3 within 3 s; prints what the server said.
try_connect() {
    ip netns exec "$1" timeout 4 socat -T 3 -u "TCP:$2:$3,connect-timeout=3" - 2>/dev/null
}

netns_cleanup() {
    local p n
    for p in ${DEMO_PIDS:-}; do kill "$p" 2>/dev/null || true; done
    for n in ${DEMO_NETNS:-}; do ip netns del "$n" 2>/dev/null || true; done
    DEMO_PIDS="" DEMO_NETNS=""
}

stage_netns() {
    command -v socat >/dev/null || die "socat missing: run scripts/setup-host.sh"
    local podmesh a="pmdemo-$$-a" b="pmdemo-$$-b" port=8080
    podmesh=$(podmesh_bin)
    # Cleanup runs on every exit path, also Ctrl-C (globals: the trap outlives this function).
    DEMO_NETNS="$a $b" DEMO_PIDS=""
    trap netns_cleanup EXIT
    trap 'exit 130' INT TERM

    say "netns: pods $a (10.98.0.1, fd98::1) and $b (10.98.0.2, fd98::2) joined by a veth pair"
    ip netns add "$a"; ip netns add "$b"
    ip -n "$a" link add eth0 type veth peer name eth0 netns "$b"
    local ns n
    for ns in "$a:1" "$b:2"; do
        n=${ns#*:}; ns=${ns%:*}
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "10.98.0.$n/24" dev eth0
        ip -n "$ns" -6 addr add "fd98::$n/64" dev eth0 nodad
        ip -n "$ns" link set eth0 up
    done
    ip netns exec "$a" socat "TCP6-LISTEN:$port,fork,reuseaddr,ipv6only=0" SYSTEM:'echo hello from pod A' &
    DEMO_PIDS="$DEMO_PIDS $!"
    for _ in $(seq 50); do [ -n "$(ip netns exec "$a" ss -Hltn "sport = :$port")" ] && break; sleep 0.1; done

    say "netns: $podmesh deny install --netns $a"
    "$podmesh" deny install --netns "$a"
    "$podmesh" deny status --netns "$a"
    ip netns exec "$a" nft list table inet podmesh_deny
    local dst out
    for dst in 10.98.0.1 '[fd98::1]'; do
        say "netns: pod B connects to $dst:$port while the table is installed (expect: dropped, timeout)"
        if out=$(try_connect "$b" "$dst" "$port"); then
            die "connection to $dst:$port got through the deny table: $out"
        fi
        echo "dropped: no answer from $dst:$port within 3 s" >&2
        out=$(ip netns exec "$a" socat -T 2 -u "TCP:127.0.0.1:$port" -) || die "loopback inside pod A failed"
        echo "loopback inside pod A still works: $out" >&2
    done

    say "netns: $podmesh deny remove --netns $a"
    "$podmesh" deny remove --netns "$a"
    "$podmesh" deny status --netns "$a" || echo "(exit $? = absent)" >&2
    for dst in 10.98.0.1 '[fd98::1]'; do
        say "netns: pod B connects to $dst:$port after removal (expect: connected)"
        out=$(try_connect "$b" "$dst" "$port") || die "connection to $dst:$port failed after removing the table"
        echo "connected: $out" >&2
    done
    netns_cleanup
    say "netns: ok"
}

stage_vm() {
    say "vm: the podVM demo (tests/vm/demo.sh): image, QEMU boot with the simulated TEE, a request through the mesh"
    if [ -f tests/vm/demo.sh ]; then
        # shellcheck source=/dev/null
        source tests/vm/demo.sh
        if declare -F demo_vm >/dev/null; then demo_vm; return; fi
    fi
    echo "make run: no podVM demo (tests/vm/demo.sh) in this tree, skipping the vm stage" >&2
}

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, nftables): run it as root, e.g. sudo make run"
case "${1:-all}" in
    netns) (stage_netns) ;;
    vm) stage_vm ;;
    all) (stage_netns); stage_vm; say "make run: both demos passed (netns deny table, podVM mesh)" ;;
    *) die "usage: scripts/run.sh [all|netns|vm]" ;;
esac
