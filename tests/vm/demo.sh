# shellcheck shell=bash
# The podVM stage of `make run` (scripts/run.sh sources this file and calls demo_vm).
#
#   1. builds the release binaries and the test image (image/build.sh --profile test);
#   2. starts podmesh-coordinator in a network namespace (pmvm-demo*) on the host side of the
#      podVM's tap device (10.77.0.1), trusting the simulated TEE's anchor;
#   3. writes the podVM's initdata (mesh, coordinator address and root CA), admits its digest in
#      the manifest, boots the podVM under QEMU (TCG, no hardware TEE) with tsm-sim as its
#      configfs-tsm reporting that digest as HOSTDATA and the document on Kata's initdata disk,
#      and follows the boot contract in the guest's journal (deny -> the real kata-agent 4.1.0
#      -> the pod: CreateSandbox, CreateContainer, StartContainer of a busybox httpd -> initdata
#      verified -> certificate -> proxy ready), then prints what the agent did;
#   4. a second pod (namespace pmdemo-pod2*, routed to the podVM through the coordinator's
#      namespace) gets its own mesh certificate from the same coordinator and runs
#      `podmesh proxy` with an egress listener: its plaintext HTTP request to 127.0.0.2:8080 goes
#      out as mTLS to the podVM, whose podmesh proxy terminates it and hands it to the
#      container's httpd;
#      for contrast, plaintext straight to the podVM's port 8080 gets nothing, the `#true`
#      port 8081 answers in plaintext;
#   5. prints the guest's podmesh journal entries and the boot timeline.
# Needs root. Cleans up QEMU, the namespaces (with the tap and veth), the coordinator, the
# proxy and the FUSE mount on every exit path, also Ctrl-C. Env: PMVM_KEEP=1 keeps the work
# directory (serial log, journal, coordinator log) also on success.

demo_vm() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    (
        set -euo pipefail
        cd "$root"
        source tests/vm/lib.sh
        PMVM_BIN=$root/target/release
        source tests/vm/cluster.sh
        [ "$(id -u)" = 0 ] || pmvm_die "the podVM demo needs root (mkosi, namespaces, tap, FUSE)"
        pmvm_require_tools qemu-system-x86_64 mkosi jq socat openssl ip
        pmvm_require_kata

        SECONDS=0  # the [vm Ns] progress lines count from the start of this demo
        local t0=$SECONDS work ns=pmvm-demo$$ pod2=pmdemo-pod2-$$ qemu_pid="" proxy_pid=""
        work=$(mktemp -d /tmp/pmvm-demo.XXXXXX)
        # shellcheck disable=SC2317  # reached through the EXIT trap
        _demo_cleanup() {
            local rc=$? p
            set +e
            trap - INT TERM
            [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
            # run-qemu waits for QEMU in the foreground (its traps run only after QEMU exits):
            # stop QEMU itself, then run-qemu removes the tap.
            [ -s "$work/qemu.pid" ] && kill "$(cat "$work/qemu.pid")" 2>/dev/null
            [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
            for p in ${proxy_pid:+"$proxy_pid"} ${qemu_pid:+"$qemu_pid"}; do wait "$p" 2>/dev/null; done
            cluster_stop
            ip netns del "$pod2" 2>/dev/null
            ip netns del "$ns" 2>/dev/null
            if [ "$rc" -ne 0 ] || [ "${PMVM_KEEP:-0}" = 1 ]; then
                echo "podVM demo: logs kept in $work ($(find "$work" -maxdepth 1 \( -name '*.log' -o -name '*.json' \) -printf '%f '))" >&2
            else
                rm -rf "$work"
            fi
            return "$rc"
        }
        trap _demo_cleanup EXIT
        # Ctrl-C: jobs started with & ignore SIGINT in a script, and bash skips the EXIT trap
        # when SIGINT kills it: turn both signals into an exit, which runs the cleanup.
        trap 'echo >&2; pmvm_log "interrupted: cleaning up"; exit 130' INT TERM

        pmvm_log "1/5 release binaries and the podVM test image (first time: several minutes)"
        cargo build --release --locked -p podmesh -p tsm-sim -p coordinator -p pmvm-kata --bins >&2
        pmvm_require_bins podmesh podmesh-coordinator tsm-sim
        local t_img=$SECONDS
        bash image/build.sh --profile test --no-cargo --cargo-profile release
        local img_secs=$((SECONDS - t_img))

        pmvm_log "2/5 coordinator on $PMVM_HOST_IP:$PMVM_COORD_PORT in namespace $ns (simulated TEE anchor opted in)"
        pmvm_netns_up "$ns"
        cluster_start "$work" "$ns"
        # The podVM's configuration is initdata (mesh, coordinator and its root CA); the manifest
        # admits the podVM by its digest, which run-qemu --initdata makes the launch HOSTDATA.
        cluster_initdata "$work/initdata.toml" "plain#8081#true"
        cluster_admit_initdata "$work/initdata.toml"

        local J=$work/journal.json C=$work/ctl.sock
        pmvm_log "3/5 booting the podVM (QEMU TCG, 1 vCPU, tsm-sim as the TEE; about 1-2 min here)"
        pmvm_log "    initdata $work/initdata.toml (Kata's initdata disk): ingress 8080 mTLS (not listed), 8081 plaintext (plain#8081#true)"
        pmvm_log "    the pod: kata-agent 4.1.0 ($PODMESH_KATA_DIR), a busybox httpd container on 8080 created through its ttRPC API"
        pmvm_log "    serial log $work/serial.log"
        image/run-qemu --profile test --netns "$ns" --serial-log "$work/serial.log" \
            --journal-out "$J" --ctl-socket "$C" --pidfile "$work/qemu.pid" \
            --initdata "$work/initdata.toml" --env-file "$work/guest.env" "${PMVM_GUEST_CREDS[@]}" >"$work/qemu.log" 2>&1 &
        qemu_pid=$!
        # Progress: every new PODMESH_EVENT of the guest as it appears, a heartbeat otherwise.
        local start=$SECONDS seen=0 beat=$SECONDS events n
        _demo_events() {
            events=$(pmvm_jq "$J" 'select(.PODMESH_EVENT != null) |
                "\(.__MONOTONIC_TIMESTAMP)\t\(.PODMESH_EVENT)\t\(._SYSTEMD_UNIT // .SYSLOG_IDENTIFIER)"') || events=""
            n=$(grep -c . <<<"$events") || n=0
            [ "$n" -gt "$seen" ] || return 1
            tail -n "+$((seen + 1))" <<<"$events" | head -n $((n - seen)) |
                awk -F'\t' -v s="$SECONDS" '{ printf "[vm %4ss]     guest %7.3fs: %s (%s)\n", s, $1 / 1e6, $2, $3 }' >&2
            seen=$n beat=$SECONDS
        }
        while [ -z "$(pmvm_first "$J" 'select(.PODMESH_EVENT == "proxy_ready") | 1')" ]; do
            kill -0 "$qemu_pid" 2>/dev/null || pmvm_die "QEMU exited (see $work/qemu.log, $work/serial.log)"
            [ $((SECONDS - start)) -lt 300 ] || pmvm_die "the mesh did not come up in 300 s (see $work/serial.log)"
            if ! _demo_events && [ $((SECONDS - beat)) -ge 15 ]; then
                if [ -s "$J" ]; then pmvm_log "    guest: booting ($(wc -l <"$J") journal entries so far)"
                else pmvm_log "    guest: kernel booting (no journal yet)"; fi
                beat=$SECONDS
            fi
            sleep 2
        done
        _demo_events || true
        local ready_wall=$((SECONDS - start))
        pmvm_log "    proxy_ready $ready_wall s after QEMU started"
        local out
        if out=$(pmvm_ctl "$C" "$J" deny-state); then
            pmvm_die "the guest still has inet podmesh_deny after proxy_ready: $out"
        fi
        [ -n "$out" ] || pmvm_die "the guest's command port did not answer"
        out=${out#*: rc=*: }
        pmvm_log "    guest: nft list table inet podmesh_deny -> ${out%% | *} (the deny table is gone, the mesh is up)"

        pmvm_log "    what the runtime asked the kata-agent (pmvm-kata in the guest, over /run/kata-agent.sock):"
        pmvm_unit_messages "$J" pmvm-pod.service | sed 's/^/      /' >&2
        pmvm_log "    and what the agent logged (kata-agent.service, its JSON lines: msg [container]):"
        pmvm_unit_messages "$J" kata-agent.service | jq -R -r 'fromjson? // empty |
            select(.msg | test("announce|[Ii]nitdata|ttRPC server|rpc call|created container|container started|sandbox")) |
            "      \(.msg | .[0:110])\(if .cid then " [\(.cid)]" else "" end)\(if .["agent-version"] then " agent-version \(.["agent-version"])" else "" end)"' >&2

        pmvm_log "4/5 a request through the mesh from a second pod ($pod2, 10.78.0.2)"
        # pod2 is its own namespace, routed through the coordinator's namespace to the podVM.
        ip netns del "$pod2" 2>/dev/null || true
        ip netns add "$pod2"
        ip -n "$pod2" link set lo up
        ip -n "$ns" link add pmdemo0 type veth peer name eth0 netns "$pod2"
        ip -n "$ns" addr add 10.78.0.1/24 dev pmdemo0
        ip -n "$ns" link set pmdemo0 up
        ip -n "$pod2" addr add 10.78.0.2/24 dev eth0
        ip -n "$pod2" link set eth0 up
        ip -n "$pod2" route add default via 10.78.0.1
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
        cluster_client_cert "$work/pod2-tls" || pmvm_die "pod2 got no mesh certificate (see $work/pod2-attest.log)"
        local egress="podvm#127.0.0.2:8080#$PMVM_GUEST_IP:8080#strict"
        pmvm_log "    pod2: podmesh proxy, ingress DISABLED, egress $egress"
        ip netns exec "$pod2" env -i PATH="$PATH" NO_COLOR=1 CONTRAST_INGRESS_PROXY_CONFIG=DISABLED \
            CONTRAST_EGRESS_PROXY_CONFIG="$egress" "$PMVM_BIN/podmesh" proxy --tls-dir "$work/pod2-tls" \
            --cmdline /dev/null --drain-timeout 1s >"$work/pod2-proxy.log" 2>&1 &
        proxy_pid=$!
        for _ in $(seq 1 100); do
            grep -q proxy_ready "$work/pod2-proxy.log" && break
            kill -0 "$proxy_pid" 2>/dev/null || pmvm_die "pod2's podmesh proxy exited: $(tail -n3 "$work/pod2-proxy.log")"
            sleep 0.2
        done
        grep -q proxy_ready "$work/pod2-proxy.log" || pmvm_die "pod2's podmesh proxy not ready in 20 s (see $work/pod2-proxy.log)"

        pmvm_log "    pod2 app -> 127.0.0.2:8080 (plaintext) -> pod2 podmesh (mTLS, checks the podVM's SAN $PMVM_GUEST_IP)"
        pmvm_log "             -> podVM $PMVM_GUEST_IP:8080 -> nft tproxy -> podmesh :15006 (requires pod2's mesh certificate)"
        pmvm_log "             -> the container's busybox httpd (GET /):"
        local answer get
        get=$(printf 'GET / HTTP/1.0\r\nHost: podvm\r\n\r\n')
        answer=$(ip netns exec "$pod2" timeout 20 socat -T15 - TCP:127.0.0.2:8080 <<<"$get" 2>&1 | tr -d '\r') || true
        printf '      %s\n' "${answer:-(no answer)}" >&2
        grep -q "pmvm-pod httpd" <<<"$answer" ||
            pmvm_die "no answer through the mesh (pod2 proxy log: $(tail -n3 "$work/pod2-proxy.log" | tr '\n' ' '))"
        pmvm_log "    the same port without the mesh (pod2 sends the GET to $PMVM_GUEST_IP:8080 in plaintext, expect nothing from httpd):"
        # Raw bytes as hex: what comes back is binary (a TLS alert), not text.
        answer=$(ip netns exec "$pod2" timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8080" <<<"$get" 2>/dev/null |
            od -An -tx1 -N64 | tr -s ' \n' ' ' | sed 's/ *$//') || true
        answer=${answer# }
        # "pmvm-pod" and "HTTP" in hex: httpd's answer must not come back in plaintext.
        if grep -qE "70 6d 76 6d 2d 70 6f 64|48 54 54 50" <<<"$answer"; then pmvm_die "plaintext reached httpd on the mTLS port: $answer"; fi
        case "$answer" in
            "") answer="(closed without an answer: the port is intercepted and speaks only mTLS)" ;;
            "15 03 0"*) answer="a TLS alert record ($answer) and close: the port is intercepted and speaks only mTLS" ;;
            *) answer="bytes: $answer (not the app)" ;;
        esac
        printf '      %s\n' "$answer" >&2
        pmvm_log "    the #true port 8081 in plaintext (pod2 -> $PMVM_GUEST_IP:8081):"
        answer=$(ip netns exec "$pod2" timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8081" </dev/null 2>&1) || true
        printf '      %s\n' "${answer:-(no answer)}" >&2
        pmvm_log "    pod2's podmesh proxy log:"
        sed 's/^/      /' "$work/pod2-proxy.log" >&2

        pmvm_log "5/5 the guest's podmesh journal (guest monotonic seconds, unit: message)"
        pmvm_jq "$J" 'select(((._SYSTEMD_UNIT // .UNIT // .SYSLOG_IDENTIFIER // "") | test("podmesh|tsm-sim|podvm|pmvm-pod")) or .PODMESH_EVENT != null) |
            "\(.__MONOTONIC_TIMESTAMP)\t\(._SYSTEMD_UNIT // .UNIT // .SYSLOG_IDENTIFIER)\t\(.MESSAGE)"' |
            awk -F'\t' '{ printf "  %8.3fs %s: %s\n", $1 / 1e6, $2, $3 }' >&2
        local deny kata kata_ready pod cert ready
        deny=$(pmvm_event_usec "$J" deny_installed) || true
        [ -n "$deny" ] || deny=$(pmvm_unit_job_usec "$J" podmesh-deny.service "done") || true
        kata=$(pmvm_event_usec "$J" kata_agent_starting) || true
        kata_ready=$(pmvm_event_usec "$J" kata_agent_ready) || true
        pod=$(pmvm_event_usec "$J" pod_started) || true
        cert=$(pmvm_event_usec "$J" certificate_written podmesh-attest.service) || true
        ready=$(pmvm_event_usec "$J" proxy_ready podmesh-proxy.service) || true
        cat >&2 <<EOF

== podVM demo: ok ==
boot timeline (guest monotonic): kernel start 0.000 s -> deny installed $(pmvm_ms "$deny") s
  -> kata-agent start $(pmvm_ms "$kata") s -> agent ready $(pmvm_ms "$kata_ready") s -> pod started $(pmvm_ms "$pod") s
  -> certificate written $(pmvm_ms "$cert") s -> proxy ready $(pmvm_ms "$ready") s
QEMU start to proxy ready: ${ready_wall} s wall clock; image build ${img_secs} s;
image: kernel $(du -h build/image/test/podmesh.vmlinuz | cut -f1), root disk $(du -h build/image/test/podmesh-root.img | cut -f1) (EROFS + dm-verity, root hash on the measured command line), initrd $(du -h build/image/test/podmesh-verity.initrd | cut -f1)
a plaintext request from pod2 crossed the mesh as mTLS and reached httpd in the container the
real kata-agent started; plaintext to the same port did not. Whole podVM demo: $((SECONDS - t0)) s.
EOF
    )
}
