# The podVM stage of `make run` (scripts/run.sh sources this file and calls demo_vm).
#
# Builds the test image, starts a coordinator on the host side of a tap device in a network
# namespace, boots the podVM under QEMU with the simulated TEE, waits for the mesh to come up,
# sends a request through the mesh from a second pod (the host side of the tap, holding its
# own mesh certificate from the same coordinator), and prints the guest's podmesh journal.
# Needs root. Long steps print progress.

demo_vm() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    (
        set -euo pipefail
        cd "$root"
        source tests/vm/lib.sh
        source tests/vm/cluster.sh
        [ "$(id -u)" = 0 ] || pmvm_die "the podVM demo needs root (mkosi, namespaces, tap, FUSE)"
        pmvm_require_tools qemu-system-x86_64 mkosi jq socat openssl ip

        local work ns=pmvm-demo$$ qemu_pid=""
        work=$(mktemp -d /tmp/pmvm-demo.XXXXXX)
        trap '
            [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
            cluster_stop; wait 2>/dev/null
            ip netns del "$ns" 2>/dev/null; echo "podVM demo: logs in $work" >&2' EXIT

        pmvm_log "1/5 building host binaries and the podVM image (first time: a few minutes)"
        cargo build --release --locked -p podmesh -p tsm-sim -p coordinator --bins >&2
        bash image/build.sh --profile test --no-cargo
        pmvm_require_bins podmesh podmesh-coordinator tsm-sim

        pmvm_log "2/5 coordinator on $PMVM_HOST_IP:$PMVM_COORD_PORT in namespace $ns (simulated TEE anchor opted in)"
        pmvm_netns_up "$ns"
        cluster_start "$work" "$ns"

        local J=$work/journal.json C=$work/ctl.sock
        pmvm_log "3/5 booting the podVM (QEMU TCG, ~40-90 s; serial log $work/serial.log)"
        image/run-qemu --profile test --netns "$ns" --serial-log "$work/serial.log" \
            --journal-out "$J" --ctl-socket "$C" --pidfile "$work/qemu.pid" \
            --ingress "plain#8081#true" --coordinator "$PMVM_HOST_IP:$PMVM_COORD_PORT" \
            --root-ca "$PMVM_ROOT_CA" --env-file "$work/guest.env" "${PMVM_GUEST_CREDS[@]}" >"$work/qemu.log" 2>&1 &
        qemu_pid=$!
        local start=$SECONDS last=""
        while :; do
            if [ -n "$(pmvm_jq "$J" 'select(.PODMESH_EVENT == "proxy_ready") | 1' | head -n1)" ]; then break; fi
            kill -0 "$qemu_pid" 2>/dev/null || pmvm_die "QEMU exited (see $work/qemu.log, $work/serial.log)"
            [ $((SECONDS - start)) -lt 300 ] || pmvm_die "the mesh did not come up in 300 s (see $work/serial.log)"
            local now
            now=$(pmvm_jq "$J" 'select(.PODMESH_EVENT != null) | .PODMESH_EVENT' | tail -n1)
            if [ -n "$now" ] && [ "$now" != "$last" ]; then pmvm_log "    guest: $now"; last=$now; fi
            sleep 2
        done
        pmvm_log "    guest: proxy_ready after $((SECONDS - start)) s"

        pmvm_log "4/5 a request through the mesh from a second pod (host side of the tap)"
        cluster_client_cert "$work/pod2-tls"
        ip netns exec "$ns" timeout 15 openssl s_client -quiet -ign_eof -connect "$PMVM_GUEST_IP:8080" \
            -cert "$work/pod2-tls/certChain.pem" -key "$work/pod2-tls/key.pem" \
            -CAfile "$work/pod2-tls/mesh-ca.pem" -verify_return_error </dev/null 2>"$work/pod2.err" |
            sed 's/^/    pod2 <- podVM (mTLS, port 8080): /' >&2 || true
        pmvm_log "    without a mesh certificate (plaintext to 8080):"
        ip netns exec "$ns" timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8080" </dev/null 2>&1 |
            sed 's/^/    /' >&2 || echo "    (connection refused or closed: no plaintext path)" >&2
        pmvm_log "    the #true port 8081 in plaintext:"
        ip netns exec "$ns" timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8081" </dev/null 2>&1 | sed 's/^/    /' >&2 || true

        pmvm_log "5/5 the guest's podmesh journal"
        pmvm_jq "$J" 'select((._SYSTEMD_UNIT // .UNIT // "") | test("podmesh|kata|tsm-sim|podvm")) |
            "  \(.__MONOTONIC_TIMESTAMP | tonumber / 1e6 | tostring | .[0:7])s \(._SYSTEMD_UNIT // .UNIT): \(.MESSAGE)"'
    )
}
