#!/usr/bin/env bash
# Time from `podmesh attest` start to certificate written: p50/p99 over N runs.
#
# Each run is a fresh `podmesh attest --once` (new process, new key, nonce, SNP report from
# tsm-sim's simulated signer via FUSE configfs-tsm, certificate request, chain checks, atomic
# write of the tls dir); it exits right after the files are in place. The coordinator listens
# on loopback inside a private network namespace (pmat-bench-PID), as does the daemon.
# The wrapper's own cost (`ip netns exec true`) is measured and printed alongside.
#
# Usage: tests/bench/attest.sh [N]            (default N=50)
# Env:   PROFILE=release|dev (default release), NO_BUILD=1 to use the binaries as they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-50}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "attest.sh: N must be a positive integer" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "attest.sh: needs root (network namespace, FUSE)" >&2; exit 1; }
profile=${PROFILE:-release}
case "$profile" in
    release) bin=target/release; build=(--release) ;;
    dev) bin=target/debug; build=() ;;
    *) echo "attest.sh: PROFILE must be release or dev" >&2; exit 2 ;;
esac
[ "${NO_BUILD:-0}" = 1 ] || cargo build --quiet "${build[@]}" -p podmesh -p coordinator -p tsm-sim --bins
for b in podmesh podmesh-coordinator tsm-sim; do
    [ -x "$bin/$b" ] || { echo "attest.sh: $bin/$b missing" >&2; exit 1; }
done
bin=$(realpath "$bin")

work=$(mktemp -d /tmp/pmat-bench.XXXXXX)
ns=pmat-bench-$$
coord_pid="" sim_pid=""
cleanup() {
    [ -n "$coord_pid" ] && kill "$coord_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    fusermount3 -u "$work/tsm" 2>/dev/null || umount -l "$work/tsm" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
die() { echo "attest.sh: $*" >&2; exit 1; }

ip netns add "$ns"
ip -n "$ns" link set lo up

measurement=$(printf 'podmesh-bench-measurement' | sha384sum | cut -c1-96)
host_data=$(printf 'podmesh-bench-pod' | sha256sum | cut -c1-64)
"$bin/tsm-sim" anchor --state "$work/sim" --out "$work/anchor" >"$work/anchor.log" 2>&1 || die "tsm-sim anchor: $(tail -n3 "$work/anchor.log")"
cat >"$work/manifest.json" <<JSON
{
  "reference_values": { "snp": { "products": ["Genoa"], "measurements": ["$measurement"], "guest_policy": "0x30000",
                                 "minimum_tcb": { "bootloader": 10, "tee": 0, "snp": 25, "microcode": 84 } } },
  "policies": { "$host_data": { "name": "bench", "sans": ["bench"] } },
  "allow_simulated_tee": true
}
JSON
ip netns exec "$ns" "$bin/podmesh-coordinator" serve --listen 127.0.0.1:8443 --state "$work/coord" \
    --manifest "$work/manifest.json" --sim-anchor "$work/anchor" >"$work/coordinator.log" 2>&1 &
coord_pid=$!
mkdir -p "$work/tsm"
"$bin/tsm-sim" mount --root "$work/tsm" --tee snp --state "$work/sim" --host-data "$host_data" \
    --measurement "$measurement" --policy 0x30000 >"$work/tsm-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 200); do
    [ -s "$work/coord/root-ca.pem" ] && [ -d "$work/tsm/report" ] &&
        ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8443' 2>/dev/null && break
    kill -0 "$coord_pid" 2>/dev/null || die "coordinator exited: $(tail -n3 "$work/coordinator.log")"
    kill -0 "$sim_pid" 2>/dev/null || die "tsm-sim exited: $(tail -n3 "$work/tsm-sim.log")"
    sleep 0.1
done
[ -d "$work/tsm/report" ] || die "tsm-sim did not mount"

now_us() { echo $(( $(date +%s%N) / 1000 )); }
run_once() {
    rm -rf "$work/tls"
    local t0 t1
    t0=$(now_us)
    ip netns exec "$ns" "$bin/podmesh" attest --once --no-dbus --kernel-cmdline /dev/null \
        --coordinator 127.0.0.1:8443 --coordinator-root-ca "$work/coord/root-ca.pem" \
        --tsm-root "$work/tsm" --tls-dir "$work/tls" >"$work/attest.log" 2>&1 ||
        die "podmesh attest failed: $(tail -n3 "$work/attest.log")"
    t1=$(now_us)
    [ -s "$work/tls/certChain.pem" ] && [ -s "$work/tls/key.pem" ] || die "no certificate written"
    echo $((t1 - t0))
}
wrapper_us() { local t0; t0=$(now_us); ip netns exec "$ns" true; echo $(( $(now_us) - t0 )); }

run_once >/dev/null   # warm-up: page cache, first TLS session
: >"$work/times"
: >"$work/wrapper"
for _ in $(seq 1 "$n"); do
    run_once >>"$work/times"
    wrapper_us >>"$work/wrapper"
done

# pct FILE P: nearest-rank percentile, in ms with one decimal.
pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int((p*NR+99)/100); if (i<1) i=1; printf "%.1f", a[i]/1000}'; }
echo "podmesh attest: start -> certificate written ($profile build, SNP via tsm-sim, N=$n)"
printf '  p50 %s ms   p99 %s ms   min %s ms   max %s ms\n' "$(pct "$work/times" 50)" "$(pct "$work/times" 99)" "$(pct "$work/times" 0)" "$(pct "$work/times" 100)"
printf '  (of which ip netns exec: p50 %s ms)\n' "$(pct "$work/wrapper" 50)"
