#!/usr/bin/env bash
# The VM boot test: builds the test image once (with the real kata-agent, ../shared/kata),
# boots it under QEMU (TCG) fifteen times and proves the boot contract from the guest's own
# journal (streamed as JSON over virtio-serial). Every boot starts like a shipped podVM: the
# small initrd opens the root disk through dm-verity with the root hash on the measured kernel
# command line (image/verity/README.md). The coordinator's manifest admits the podVM by
# its initdata digest (HOSTDATA) and its SNP measurement is the image's reference value
# (build/image/test/reference-values.json); for each boot tsm-sim reports the launch digest
# computed for that boot's firmware, kernel, initrd and command line (under TCG: the pipeline,
# not the PSP). Every boot runs the pod: kata-agent 4.1.0 started like the cloud-api-adaptor
# podVM starts it, driven from inside the guest by pmvm-kata (CreateSandbox, CreateContainer
# from a busybox rootfs of the image, StartContainer): httpd on port 8080.
#
#   boot 1 "mesh":     configured only through initdata (mesh, coordinator, its root CA) whose
#                      digest is the HOSTDATA tsm-sim reports, delivered as Kata's initdata disk;
#                      coordinator on the host side of a tap device: deny before kata-agent, the
#                      agent extracts initdata before attest starts, initdata verified, certificate
#                      through the TEE, deny removed only after proxy_ready; then from outside the
#                      guest: the container's port 8080 only with a mesh certificate, #true port in
#                      plaintext; systemd-analyze verify clean.
#   boot 2 "lie":      the same initdata, while the host's credentials say 8080#true, another
#                      coordinator and a root CA of the host's: each is ignored
#                      (unattested_setting_ignored), 8080 stays mTLS.
#   boot 3 "mismatch": initdata delivered that the VM was not launched with (HOSTDATA differs):
#                      initdata_mismatch with both digests, no certificate, deny table stays.
#   boot 4 "broken":   attested initdata with an invalid mesh config: deny table stays, port
#                      unreachable, reason logged.
#   boot 5 "no-tee":   the real kernel configfs-tsm without a provider (TCG has none), mesh and
#                      coordinator fingerprint on the kernel command line: attestation fails
#                      with the ENXIO explanation, deny table stays.
#   boot 6 "withheld": launched with the admitted initdata's HOSTDATA, but the host withholds the
#                      document and its credentials carry #true for 8080, the coordinator and its
#                      root CA: all ignored, attest finds no coordinator, deny table stays.
#   boot 7 "pod":      the container behind the mesh, from a second pod: with the coordinator held
#                      (SIGSTOP) the container serves 8080 inside the guest while the port gives
#                      nothing outside; after proxy_ready only mTLS with a mesh certificate reaches
#                      httpd; a process in the container finds no /run/podmesh/tls and no mount
#                      leads there; kill -9 of podmesh-proxy leaves 8080 refusing, never plaintext.
#   boot 8 "cmdline":  one byte of the kernel command line changed (loglevel=5): tsm-sim reports
#                      the launch digest computed for it, the coordinator answers
#                      measurement_mismatch (the manifest holds reference-values.json's), no
#                      certificate, deny table stays.
#   boot 9 "disk":     the admitted launch, but the host changed one byte of the root disk (in
#                      /usr/bin/podmesh's first block): dm-verity stops the guest when the block
#                      is read (kernel panic), podmesh never runs, nothing is issued. Then
#                      "nodisk": no root disk at all; the initrd says so in one line and stops;
#                      "badhash", "nohash", "badsalt", "oddsalt", "zeroblocks": a podmesh.verity_*
#                      value on the command line one digit short, missing, upper-case, not whole
#                      bytes or zero: each refused by name in one line, before any disk is read.
#
# Prints image size, build time and the boot timeline (kernel -> deny installed -> kata-agent
# start -> agent ready -> pod started -> certificate written -> proxy ready). Needs root. Every failed check exits non-zero.
# Env: PMVM_KEEP=1 keeps the work directory; PMVM_SMP (default 1) vCPUs per guest;
#      PMVM_CARGO_PROFILE=debug|release (default debug) which binaries go into the image;
#      PMVM_BOOTS="mesh lie ..." runs only these boots (default all).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/vm/lib.sh

[ "$(id -u)" = 0 ] || pmvm_die "tests/vm/run.sh needs root (mkosi, network namespaces, tap devices, FUSE)"
pmvm_require_tools qemu-system-x86_64 mkosi jq socat openssl ip
pmvm_require_kata

work=$(mktemp -d /tmp/pmvm-test.XXXXXX)
ns=pmvm-t$$
qemu_pid=""
source tests/vm/cluster.sh
cleanup() {
    local rc=$?
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
    cluster_coordinator_resume
    cluster_stop
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if [ "${PMVM_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        echo "tests/vm: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

failures=()
check() {  # check DESCRIPTION COMMAND...: record a failed assertion, keep going within a boot
    local what=$1; shift
    if "$@"; then pmvm_log "ok   $what"; else pmvm_log "FAIL $what"; failures+=("$what"); fi
}

# ---- build ---------------------------------------------------------------------------------
# The debug build: scripts/test.sh has just built the workspace that way, so this costs nothing
# there (a release build is ~13 min on this 2-core host). PMVM_CARGO_PROFILE=release for the real thing.
cargo_profile=${PMVM_CARGO_PROFILE:-debug}
cargo_flag=(); [ "$cargo_profile" = release ] && cargo_flag=(--release)
PMVM_BIN=$PMVM_ROOT/target/$cargo_profile
pmvm_log "building host binaries ($cargo_profile) and the test image"
t_build=$SECONDS
cargo build ${cargo_flag[@]+"${cargo_flag[@]}"} --locked -p podmesh -p tsm-sim -p coordinator -p pmvm-kata --bins >&2
cargo_secs=$((SECONDS - t_build))
bash image/build.sh --profile test --no-cargo --cargo-profile "$cargo_profile"
build_secs=$((SECONDS - t_build - cargo_secs))
pmvm_require_bins podmesh podmesh-coordinator tsm-sim
# verity KEY: a dm-verity parameter of the test image's root disk (root_hash, salt, data_blocks).
verity() { sed -n "s/^$1=//p" build/image/test/podmesh-root.verity; }
img_bytes=$(stat -c %s build/image/test/podmesh.cpio)
kernel_bytes=$(stat -c %s build/image/test/podmesh.vmlinuz)

# ---- host side: namespace + coordinator ----------------------------------------------------
pmvm_netns_up "$ns"
cluster_start "$work" "$ns"   # sets PMVM_ROOT_CA, PMVM_GUEST_CREDS (tests/vm/cluster.sh)

# boot NAME [run-qemu args...]: start the guest in the background, sets qemu_pid, J (journal), C (ctl)
boot() {
    local name=$1; shift
    J=$work/$name.journal.json C=$work/$name.ctl
    rm -f "$C"
    # tsm-sim reports the launch digest computed for this boot's command line (cluster.sh).
    cluster_launch_measurement "$work/tsm-sim.tgz" --netns "$ns" "$@"
    pmvm_log "boot '$name': starting QEMU (TCG; serial log $work/$name.serial.log)"
    boot_t0=$SECONDS
    image/run-qemu --profile test --netns "$ns" --smp "${PMVM_SMP:-1}" \
        --serial-log "$work/$name.serial.log" --journal-out "$J" --ctl-socket "$C" \
        --pidfile "$work/$name.pid" "${PMVM_GUEST_CREDS[@]}" "$@" >"$work/$name.qemu.log" 2>&1 &
    qemu_pid=$!
}
shutdown_guest() {
    [ -n "$qemu_pid" ] || return 0
    kill "$qemu_pid" 2>/dev/null || true
    [ -s "$work/$1.pid" ] && kill "$(cat "$work/$1.pid")" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}
dump_podmesh_journal() {
    pmvm_log "podmesh journal of boot '$1':"
    pmvm_jq "$J" 'select((._SYSTEMD_UNIT // .UNIT // "") | test("podmesh|kata|tsm-sim|pmvm-pod")) |
        "  \(.__MONOTONIC_TIMESTAMP | tonumber / 1e6 | tostring | .[0:7])s \(._SYSTEMD_UNIT // .UNIT): \(.MESSAGE)"' >&2 || true
}
# The podVM's security settings reach it only through initdata (digest = the HOSTDATA tsm-sim
# reports, run-qemu --initdata) or the kernel command line; credentials carry only operational
# knobs (guest.env: PODMESH_BACKOFF_MAX). The manifest admits the podVM by the initdata digest.
ingress="plain#8081#true##tls#8082#false"
cluster_initdata "$work/initdata.toml" "$ingress"
cluster_admit_initdata "$work/initdata.toml"
cluster_initdata "$work/broken.initdata.toml" "plain#8081#true##plain#99999#true"
# The lying host: its credentials open the mTLS port 8080 in plaintext, point at another
# coordinator and hand over a root CA of its own.
{ cat "$work/guest.env"; echo "CONTRAST_INGRESS_PROXY_CONFIG=plain#8081#true##app#8080#true##tls#8082#false"
  echo "PODMESH_COORDINATOR=$PMVM_HOST_IP:1"; } >"$work/lie.env"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=host-ca -days 1 \
    -keyout "$work/lie-ca.key" -out "$work/lie-ca.pem" 2>/dev/null || pmvm_die "openssl: the lying host's CA"
want() { [ -z "${PMVM_BOOTS:-}" ] || [[ " $PMVM_BOOTS " == *" $1 "* ]]; }
in_ns() { ip netns exec "$ns" "$@"; }
lt() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -lt "$2" ]; }
client_tls=$work/client-tls
pod_mark="pmvm-pod httpd"
# pod_http MODE PATH: an HTTP GET of PATH on the pod's port 8080 (the container's httpd) from the
# second pod (the host side of the tap, in our namespace): plain (TCP), nocert (TLS without a
# client certificate) or mtls (with the second pod's mesh certificate). Prints what came back.
pod_http() {
    local req tls=()
    req=$(printf 'GET %s HTTP/1.0\r\nHost: podvm\r\n\r\n' "$2")
    case "$1" in
        plain) in_ns timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8080" <<<"$req" 2>&1 | tr -d '\000' || true; return ;;
        mtls) tls=(-cert "$client_tls/certChain.pem" -key "$client_tls/key.pem" -CAfile "$client_tls/mesh-ca.pem" -verify_return_error) ;;
    esac
    in_ns timeout 10 openssl s_client -quiet -ign_eof -connect "$PMVM_GUEST_IP:8080" ${tls[@]+"${tls[@]}"} <<<"$req" 2>&1 |
        tr -d '\000' || true
}
# mtls_checks BOOT: from outside the guest (the host side of the tap, in our namespace): 8081
# plaintext, 8080 (the container's httpd) only mTLS with a mesh certificate, 8082 TLS without a
# client certificate.
mtls_checks() {
    local b=$1 plain tls_only
    plain=$(in_ns timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8081" </dev/null 2>&1 || true)
    check "$b: #true port 8081 answers in plaintext" grep -q "pmvm-app port 8081" <<<"$plain"
    # shellcheck disable=SC2016  # the script is bash -c's, its $1 is the argument
    check "$b: mTLS port 8080 gives plaintext clients nothing from the container" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http plain /)" "$pod_mark"
    # shellcheck disable=SC2016
    check "$b: mTLS port 8080 gives a TLS client without a certificate nothing" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http nocert /)" "$pod_mark"
    if [ -s "$client_tls/certChain.pem" ] || cluster_client_cert "$client_tls"; then
        check "$b: mTLS with a mesh certificate reaches the container's httpd on 8080" grep -q "$pod_mark" <<<"$(pod_http mtls /)"
    else
        failures+=("$b: client mesh certificate for the host-side pod")
    fi
    tls_only=$(in_ns timeout 10 openssl s_client -quiet -ign_eof -connect "$PMVM_GUEST_IP:8082" </dev/null 2>&1 || true)
    check "$b: #false port 8082 answers over TLS without a client certificate" grep -q "pmvm-app port 8082" <<<"$tls_only"
}
# deny_stays BOOT: the guest still has inet podmesh_deny and port 8081 is unreachable.
deny_stays() {
    local out plain
    if out=$(pmvm_ctl "$C" "$J" deny-state); then
        pmvm_log "ok   $1: deny table still installed"
    else
        failures+=("$1: deny table stays"); pmvm_log "FAIL $1: deny table missing: $out"
    fi
    plain=$(in_ns timeout 10 socat -T5 - "TCP:$PMVM_GUEST_IP:8081" </dev/null 2>&1 || true)
    # shellcheck disable=SC2016
    check "$1: port 8081 unreachable" bash -c '! grep -q "pmvm-app" <<<"$1"' _ "$plain"
    # shellcheck disable=SC2016
    check "$1: the container's port 8080 unreachable" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http plain /)" "$pod_mark"
}
# events BOOT EVENT [UNIT]: the MESSAGEs of that PODMESH_EVENT (from UNIT or SYSLOG_IDENTIFIER).
events() {
    pmvm_jq "$J" "select(.PODMESH_EVENT == \"$2\" and (\"${3:-}\" == \"\" or ._SYSTEMD_UNIT == \"${3:-}\" or .SYSLOG_IDENTIFIER == \"${3:-}\")) | .MESSAGE"
}
# kata_checks BOOT: the real agent and the pod in this boot's journal (kata_start, kata_ready,
# pod_started, attest_first set by the caller).
kata_checks() {
    local b=$1 version initdata_path=/run/confidential-containers/initdata/initdata.toml
    version=$(pmvm_first "$J" 'select(.PODMESH_EVENT == "kata_agent_starting") | .PODMESH_KATA_AGENT_VERSION')
    pmvm_log "     kata-agent --version: $version"
    check "$b: the journal shows the agent's version (4.1.0)" grep -q "4\.1\.0" <<<"$version"
    check "$b: the agent's own announce line carries its version" \
        grep -q '"agent-version":"4.1.0"' <<<"$(pmvm_unit_messages "$J" kata-agent.service)"
    check "$b: the agent extracted initdata from its disk before it opened its socket" \
        test "$(pmvm_first "$J" 'select(.PODMESH_EVENT == "kata_agent_ready") | .PODMESH_INITDATA')" = "$initdata_path"
    check "$b: podmesh-attest started only after the agent was ready" lt "$kata_ready" "$attest_first"
    check "$b: podmesh-attest verified the document the agent extracted" \
        grep -q "$initdata_path matches" <<<"$(events "$b" initdata_verified podmesh-attest.service)"
    check "$b: the pod started through the agent (CreateSandbox, CreateContainer, StartContainer)" \
        grep -q "StartContainer httpd: ok" <<<"$(events "$b" pod_started)"
}
timeline="(boot 'mesh' not run)" ready_wall=n/a guest_mem="(boot 'mesh' not run)"

# ---- boot 1: the mesh, configured only through initdata ------------------------------------------
if want mesh; then
boot mesh --initdata "$work/initdata.toml" --env-file "$work/guest.env"
if ! pmvm_wait "$J" 300 "PODMESH_EVENT=proxy_ready" '.PODMESH_EVENT == "proxy_ready"' "$qemu_pid"; then
    dump_podmesh_journal mesh
    pmvm_die "boot 'mesh': podmesh-proxy never became ready (serial log: $work/mesh.serial.log)"
fi
ready_wall=$((SECONDS - boot_t0))

deny_done=$(pmvm_unit_job_usec "$J" podmesh-deny.service "done")
deny_installed=$(pmvm_event_usec "$J" deny_installed)
kata_start=$(pmvm_event_usec "$J" kata_agent_starting)
kata_table=$(pmvm_first "$J" 'select(.PODMESH_EVENT == "kata_agent_starting") | .PODMESH_DENY_TABLE_PRESENT')
kata_ready=$(pmvm_event_usec "$J" kata_agent_ready)
pod_started=$(pmvm_event_usec "$J" pod_started)
attest_first=$(pmvm_first "$J" 'select(._SYSTEMD_UNIT == "podmesh-attest.service") | .__MONOTONIC_TIMESTAMP')
cert=$(pmvm_event_usec "$J" certificate_written podmesh-attest.service)
ready=$(pmvm_event_usec "$J" proxy_ready podmesh-proxy.service)
rules=$(pmvm_event_usec "$J" tproxy_installed podmesh-proxy.service)
# The proxy removes the deny table once its readiness tokens (rules, listeners, TLS) are all
# gone: a deny_removed event of its own, or its proxy_ready line saying "deny table removed".
removed=$(pmvm_event_usec "$J" deny_removed podmesh-proxy.service)
if [ -z "$removed" ] && grep -q 'deny table removed' <<<"$(pmvm_jq "$J" 'select(.PODMESH_EVENT == "proxy_ready") | .MESSAGE')"; then
    removed=$ready
fi
others_removed=$(pmvm_first "$J" 'select(.PODMESH_EVENT == "deny_removed" and ._SYSTEMD_UNIT != "podmesh-proxy.service") | ._SYSTEMD_UNIT')

check "podmesh-deny.service finished (start job done)" test -n "$deny_done"
check "kata-agent started after podmesh-deny.service finished" lt "$deny_done" "$kata_start"
check "inet podmesh_deny existed when kata-agent started" test "$kata_table" = true
kata_checks mesh
check "podmesh-attest verified the initdata against the report" test -n "$(events mesh initdata_verified podmesh-attest.service)"
check "podmesh-proxy verified the initdata against the report" test -n "$(events mesh initdata_verified podmesh-proxy.service)"
check "nothing unattested was offered or ignored (configured only through initdata)" test -z "$(events mesh unattested_setting_ignored)"
check "podmesh-attest wrote a certificate through the simulated TEE" test -n "$cert"
check "podmesh-proxy signalled proxy_ready" test -n "$ready"
check "podmesh-proxy installed its TPROXY rules before it was ready" lt "$rules" "$ready"
check "podmesh-proxy removed the deny table only after its rules were in place" lt "$rules" "$removed"
check "no other unit removed the deny table (with a mesh configured)" test -z "$others_removed"
if out=$(pmvm_ctl "$C" "$J" deny-state); then
    failures+=("deny table gone after proxy_ready"); pmvm_log "FAIL deny table still present: $out"
else
    pmvm_log "ok   deny table gone after proxy_ready"
fi
if out=$(pmvm_ctl "$C" "$J" logins); then
    pmvm_log "ok   no login prompt (getty) in the guest"
else
    failures+=("getty in the guest"); pmvm_log "FAIL a getty runs in the guest: $out"
fi
if out=$(pmvm_ctl "$C" "$J" verify-units); then
    pmvm_log "ok   systemd-analyze verify clean for our units (in the guest)"
else
    failures+=("systemd-analyze verify"); pmvm_log "FAIL systemd-analyze verify: $out"
fi
mtls_checks mesh
# The root: the image's disk through dm-verity with the measured root hash, under a tmpfs overlay.
verity_msg=$(pmvm_first "$J" 'select(.SYSLOG_IDENTIFIER == "podmesh-init") | .MESSAGE')
pmvm_log "     $verity_msg"
check "mesh: the root is the disk verified with the image's root hash" \
    grep -q "verified by dm-verity (root hash $(verity root_hash))" <<<"$verity_msg"
# Guest memory (podvm-meminfo.service): the OS is read from the disk on demand; only what the
# boot wrote (the overlay's tmpfs) stays in RAM. Budget: a tenth of the OS cpio.
if pmvm_wait "$J" 90 "PODMESH_EVENT=guest_memory" '.PODMESH_EVENT == "guest_memory"' "$qemu_pid"; then
    mem=$(pmvm_first "$J" 'select(.PODMESH_EVENT == "guest_memory") |
        "\(.PODMESH_ROOTFS_USED_KIB) \(.PODMESH_SHMEM_KIB) \(.PODMESH_MEM_AVAILABLE_KIB) \(.PODMESH_MEM_TOTAL_KIB) \(.PODMESH_ROOT_FSTYPE)"')
    read -r rootfs_kib shmem_kib avail_kib total_kib root_fstype <<<"$mem"
    guest_mem="root $root_fstype, $((rootfs_kib / 1024)) MiB written, Shmem $((shmem_kib / 1024)) MiB, MemAvailable $((avail_kib / 1024)) of $((total_kib / 1024)) MiB"
    pmvm_log "     guest memory: $guest_mem"
    check "mesh: the root is an overlay (verity disk below, tmpfs above)" test "$root_fstype" = overlay
    check "mesh: what the boot wrote to the root stays under a tenth of the OS ($((img_bytes / 10485760)) MiB)" \
        test $((rootfs_kib * 1024)) -le $((img_bytes / 10))
else
    failures+=("guest memory: PODMESH_EVENT=guest_memory")
fi

timeline=$(printf '%-22s %8s\n' "kernel start" "0.000" \
    "deny installed" "$(pmvm_ms "${deny_installed:-$deny_done}")" \
    "kata-agent start" "$(pmvm_ms "$kata_start")" \
    "kata-agent ready" "$(pmvm_ms "$kata_ready")" \
    "pod started" "$(pmvm_ms "$pod_started")" \
    "certificate written" "$(pmvm_ms "$cert")" \
    "proxy ready" "$(pmvm_ms "$ready")" \
    "deny table removed" "$(pmvm_ms "$removed")")
[ ${#failures[@]} -eq 0 ] || dump_podmesh_journal mesh
shutdown_guest mesh
fi

# ---- boot 2: the host's credentials lie, initdata says mTLS -----------------------------------------
if want lie; then
nfail=${#failures[@]}
boot lie --initdata "$work/initdata.toml" --env-file "$work/lie.env" --root-ca "$work/lie-ca.pem"
if pmvm_wait "$J" 300 "PODMESH_EVENT=proxy_ready" '.PODMESH_EVENT == "proxy_ready"' "$qemu_pid"; then
    pmvm_log "ok   lie: the mesh came up on the attested configuration"
else
    failures+=("lie: podmesh-proxy ready on the attested configuration")
fi
ignored=$(events lie unattested_setting_ignored podvm-config)
pmvm_log "     ignored: ${ignored//$'\n'/ | }"
check "lie: the ingress credential is ignored (unattested_setting_ignored)" grep -q "^CONTRAST_INGRESS_PROXY_CONFIG from credential podmesh.env" <<<"$ignored"
check "lie: the coordinator credential is ignored" grep -q "^PODMESH_COORDINATOR from credential podmesh.env" <<<"$ignored"
check "lie: the root-CA credential is ignored" grep -q "credential podmesh.coordinator-root-ca" <<<"$ignored"
check "lie: the backoff knob from the credential is imported" \
    grep -q "PODMESH_BACKOFF_MAX" <<<"$(pmvm_jq "$J" 'select(.PODMESH_EVENT == "guest_config_imported") | .MESSAGE')"
check "lie: podmesh-attest got its certificate from the attested coordinator" \
    test -n "$(pmvm_event_usec "$J" certificate_written podmesh-attest.service)"
mtls_checks lie
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal lie
shutdown_guest lie
fi

# ---- boot 3: initdata that is not what the VM was launched with --------------------------------------
# Delivered as Kata's initdata disk without binding it: tsm-sim reports the launch HOSTDATA of its
# args, not the digest. The real agent extracts it like any other; podmesh refuses it.
if want mismatch; then
nfail=${#failures[@]}
boot mismatch --initdata-disk "$work/initdata.toml" --env-file "$work/guest.env"
if pmvm_wait "$J" 240 "PODMESH_EVENT=initdata_mismatch" '.PODMESH_EVENT == "initdata_mismatch"' "$qemu_pid"; then
    msg=$(events mismatch initdata_mismatch | sed -n 1p)
    pmvm_log "     reason: $msg"
    hostdata=$(cluster_initdata_hostdata "$work/initdata.toml")
    check "mismatch: the reason gives the document's digest" grep -q "$hostdata" <<<"$msg"
    check "mismatch: the reason gives the report's HOSTDATA" grep -q "$PMVM_HOSTDATA_VM" <<<"$msg"
else
    failures+=("mismatch: PODMESH_EVENT=initdata_mismatch in the journal")
fi
sleep 5  # both daemons have had their go at the document
check "mismatch: no certificate was written" test -z "$(pmvm_event_usec "$J" certificate_written)"
check "mismatch: the proxy never became ready" test -z "$(pmvm_event_usec "$J" proxy_ready)"
deny_stays mismatch
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal mismatch
shutdown_guest mismatch
fi

# ---- boot 4: broken mesh config (in attested initdata) -------------------------------------------
if want broken; then
nfail=${#failures[@]}
boot broken --initdata "$work/broken.initdata.toml" --env-file "$work/guest.env"
if pmvm_wait "$J" 240 "a podmesh unit to fail on the broken config" \
        '((.UNIT // "") | test("^podmesh-(proxy|attest)\\.service$")) and (.MESSAGE | test("Failed with result"))' "$qemu_pid"; then
    pmvm_log "ok   a podmesh unit failed on the broken config"
else
    failures+=("broken config: a podmesh unit fails")
fi
reason=$(pmvm_first "$J" 'select((._SYSTEMD_UNIT // "") | test("^podmesh-")) | select(.PRIORITY | tonumber <= 3) | .MESSAGE' 3)
check "broken config: the reason (entry and port) is in the journal" grep -qE '99999|port' <<<"$reason"
pmvm_log "     reason: ${reason//$'\n'/ | }"
deny_stays broken
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal broken
shutdown_guest broken
fi

# ---- boot 5: real kernel TSM, no provider; configured on the (measured) kernel command line ---------
# No initdata: the mesh and the coordinator with its root CA fingerprint on the command line.
if want no-tee; then
nfail=${#failures[@]}
fingerprint=$(openssl x509 -in "$PMVM_ROOT_CA" -outform DER | sha256sum | cut -d' ' -f1)
boot no-tee --ingress "$ingress" --coordinator "$PMVM_HOST_IP:$PMVM_COORD_PORT" --env-file "$work/guest.env" \
    --append "podmesh.coordinator_fingerprint=$fingerprint systemd.mask=tsm-sim.service"
if pmvm_wait "$J" 240 "attestation to fail on the provider-less kernel TSM" \
        '(._SYSTEMD_UNIT // "") == "podmesh-attest.service" and ((.PODMESH_EVENT // "") | test("no_tee|attestation_failed"))' "$qemu_pid"; then
    msg=$(pmvm_first "$J" 'select(._SYSTEMD_UNIT == "podmesh-attest.service" and ((.PODMESH_EVENT // "") | test("no_tee|attestation_failed"))) | .MESSAGE')
    pmvm_log "     attest: $msg"
    check "no TEE provider: the message explains ENXIO" grep -qiE 'ENXIO|no such device or address|provider' <<<"$msg"
else
    failures+=("no TEE provider: attestation fails")
fi
deny_stays "no TEE provider"
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal no-tee
shutdown_guest no-tee
fi

# ---- boot 6: the host withholds the document it launched with and lies in credentials --------------
# HOSTDATA is the admitted initdata's digest (the coordinator would issue a certificate), but no
# document arrives; the credentials carry #true for 8080, the real coordinator and its root CA.
# An image that imported credentials would attest unattested and serve 8080 in plaintext.
if want withheld; then
nfail=${#failures[@]}
cluster_initdata_hostdata "$work/initdata.toml" >"$work/initdata.host-data"
{ cat "$work/guest.env"; echo "CONTRAST_INGRESS_PROXY_CONFIG=plain#8081#true##app#8080#true"
  echo "PODMESH_COORDINATOR=$PMVM_HOST_IP:$PMVM_COORD_PORT"; } >"$work/withheld.env"
boot withheld --credential "pmvm.tsm-sim.host-data=$work/initdata.host-data" --env-file "$work/withheld.env" \
    --root-ca "$PMVM_ROOT_CA"
if pmvm_wait "$J" 240 "podmesh-attest to fail (or the proxy to open)" \
        '((.UNIT // "") == "podmesh-attest.service" and (.MESSAGE | test("Failed with result"))) or .PODMESH_EVENT == "proxy_ready"' "$qemu_pid"; then
    msg=$(pmvm_first "$J" 'select(._SYSTEMD_UNIT == "podmesh-attest.service") | select(.PRIORITY | tonumber <= 3) | .MESSAGE')
    pmvm_log "     attest: $msg"
    check "withheld: attest finds no coordinator (the credential's is not taken)" grep -q "no coordinator configured" <<<"$msg"
else
    failures+=("withheld: podmesh-attest fails")
fi
ignored=$(events withheld unattested_setting_ignored podvm-config)
check "withheld: the ingress credential is ignored" grep -q "^CONTRAST_INGRESS_PROXY_CONFIG from credential podmesh.env" <<<"$ignored"
check "withheld: the coordinator credential is ignored" grep -q "^PODMESH_COORDINATOR from credential podmesh.env" <<<"$ignored"
check "withheld: the root-CA credential is ignored" grep -q "credential podmesh.coordinator-root-ca" <<<"$ignored"
check "withheld: no certificate was written" test -z "$(pmvm_event_usec "$J" certificate_written)"
# shellcheck disable=SC2016
check "withheld: port 8080 gives plaintext clients nothing from the container" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http plain /)" "$pod_mark"
deny_stays withheld
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal withheld
shutdown_guest withheld
fi

# ---- boot 7: the real container behind the mesh, seen from a second pod --------------------------
# The coordinator is held (SIGSTOP) from before the boot until the container has been looked at:
# the pod is up, httpd listens on 8080 inside the guest, and the second pod gets nothing from it.
if want pod; then
nfail=${#failures[@]}
[ -s "$client_tls/certChain.pem" ] || cluster_client_cert "$client_tls" || failures+=("pod: client mesh certificate")
cluster_coordinator_pause
boot pod --initdata "$work/initdata.toml" --env-file "$work/guest.env"
if pmvm_wait "$J" 300 "the pod to start" '.PODMESH_EVENT == "pod_started" or .PODMESH_EVENT == "pod_failed"' "$qemu_pid"; then
    pmvm_log "     pmvm-pod: $(events pod pod_started)$(events pod pod_failed)"
fi
check "pod: the container was started through the agent" grep -q "StartContainer httpd: ok" <<<"$(events pod pod_started)"
if out=$(pmvm_ctl "$C" "$J" pod-listening); then
    pmvm_log "ok   pod: the container's httpd listens on 8080 in the guest: $out"
else
    failures+=("pod: httpd listens on 8080 in the guest"); pmvm_log "FAIL pod: nothing listens on 8080: $out"
fi
check "pod: no proxy_ready yet (coordinator held)" test -z "$(pmvm_event_usec "$J" proxy_ready)"
for mode in plain nocert mtls; do
    # shellcheck disable=SC2016
    check "pod: before proxy_ready, $mode to 8080 gets nothing from the container" \
        bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http "$mode" /)" "$pod_mark"
done
cluster_coordinator_resume
if pmvm_wait "$J" 300 "PODMESH_EVENT=proxy_ready" '.PODMESH_EVENT == "proxy_ready"' "$qemu_pid"; then
    check "pod: after proxy_ready, mTLS with a mesh certificate reaches httpd" grep -q "$pod_mark" <<<"$(pod_http mtls /)"
    # shellcheck disable=SC2016
    check "pod: after proxy_ready, plaintext gets nothing from the container" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http plain /)" "$pod_mark"
    # shellcheck disable=SC2016
    check "pod: after proxy_ready, TLS without a certificate gets nothing" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http nocert /)" "$pod_mark"
    # A process inside the container (httpd's CGI, at request time, after the keys exist).
    inside=$(pod_http mtls /cgi-bin/isolation)
    pmvm_log "     inside the container: ${inside//$'\n'/ | }"
    check "pod: a process in the container finds no /run/podmesh/tls" grep -qx "tls: absent" <<<"${inside//$'\r'/}"
    check "pod: it cannot read podmesh's key" grep -qx "key: unreadable" <<<"${inside//$'\r'/}"
    check "pod: its pid 1's root does not lead there" grep -qx "pid1-root: no podmesh" <<<"${inside//$'\r'/}"
    check "pod: it reports its mounts" grep -q "^M " <<<"$inside"
    if tlsfs=$(pmvm_ctl "$C" "$J" tls-fs); then
        read -r tls_dev tls_rel _ <<<"${tlsfs#*: rc=0: }"
        pmvm_log "     guest: /run/podmesh/tls is $tls_rel on file system $tls_dev"
        leads=$(awk -v dev="$tls_dev" -v rel="$tls_rel" '$1 == "M" && $2 == dev && ($3 == "/" || index(rel "/", $3 "/") == 1)' <<<"$inside")
        check "pod: the guest names the tls dir's file system" grep -qE '^[0-9]+:[0-9]+$' <<<"$tls_dev"
        check "pod: no mount of the container leads to /run/podmesh/tls" test -z "$leads"
        [ -z "$leads" ] || pmvm_log "     mounts leading there: ${leads//$'\n'/ | }"
    else
        failures+=("pod: the guest's tls dir"); pmvm_log "FAIL pod: tls-fs: $tlsfs"
    fi
    # kill -9 of the proxy while the container serves: the TPROXY rules stay and reject.
    out=$(pmvm_ctl "$C" "$J" kill-proxy) || true
    pmvm_log "     kill -9 podmesh-proxy: ${out//$'\n'/ | }"
    dead=$(pod_http plain /)
    pmvm_log "     plaintext to 8080 with the proxy dead: ${dead//$'\n'/ | }"
    # shellcheck disable=SC2016
    check "pod: with the proxy killed, plaintext to 8080 gets nothing from the container" bash -c '! grep -q "$2" <<<"$1"' _ "$dead" "$pod_mark"
    check "pod: with the proxy killed, 8080 refuses" grep -qi "refused" <<<"$dead"
    # shellcheck disable=SC2016
    check "pod: with the proxy killed, mTLS gets nothing either" bash -c '! grep -q "$2" <<<"$1"' _ "$(pod_http mtls /)" "$pod_mark"
    out=$(pmvm_ctl "$C" "$J" start-proxy) || true
    if pmvm_wait "$J" 120 "the restarted proxy" '.PODMESH_EVENT == "proxy_ready" and (.__MONOTONIC_TIMESTAMP | tonumber) > '"$(pmvm_event_usec "$J" proxy_ready)" "$qemu_pid"; then
        check "pod: the restarted proxy serves the container over mTLS again" grep -q "$pod_mark" <<<"$(pod_http mtls /)"
    else
        failures+=("pod: the proxy comes back after start")
    fi
else
    failures+=("pod: proxy_ready after the coordinator was released")
fi
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal pod
shutdown_guest pod
fi

# ---- boot 8: one byte of the kernel command line changed --------------------------------------
# The host launches the admitted initdata with loglevel=5 instead of 4: tsm-sim reports the
# launch digest computed for that command line, which is not the image's reference value.
if want cmdline; then
nfail=${#failures[@]}
measured=$(image/run-qemu --profile test --netns "$ns" --print-cmdline)
tampered=${measured/loglevel=4/loglevel=5}
coord_lines=$(($(wc -l <"$work/coordinator.log") + 1))
check "cmdline: exactly one byte differs" test "$(cmp -l <(printf %s "$measured") <(printf %s "$tampered") | wc -l)" = 1
boot cmdline --initdata "$work/initdata.toml" --env-file "$work/guest.env" --kernel-cmdline "$tampered"
check "cmdline: the boot's launch digest is not the reference value" test "$PMVM_BOOT_MEASUREMENT" != "$PMVM_MEASUREMENT"
if pmvm_wait "$J" 240 "podmesh-attest to be refused" \
        '(._SYSTEMD_UNIT // "") == "podmesh-attest.service" and (.MESSAGE | test("measurement_mismatch"))' "$qemu_pid"; then
    pmvm_log "     attest: $(pmvm_first "$J" 'select(._SYSTEMD_UNIT == "podmesh-attest.service" and (.MESSAGE | test("measurement_mismatch"))) | .MESSAGE')"
else
    failures+=("cmdline: podmesh-attest refused with measurement_mismatch")
fi
check "cmdline: the coordinator rejected the report with measurement_mismatch" \
    grep -q "measurement_mismatch" <(tail -n +"$coord_lines" "$work/coordinator.log")
check "cmdline: no certificate was written" test -z "$(pmvm_event_usec "$J" certificate_written)"
deny_stays cmdline
[ ${#failures[@]} -eq "$nfail" ] || dump_podmesh_journal cmdline
shutdown_guest cmdline
fi

# ---- boot 9: the host serves another root disk, or none ----------------------------------------
# The launch (kernel, initrd, command line with the root hash) is the admitted one; the host
# changes one byte of the disk, in the first block of /usr/bin/podmesh: dm-verity stops the
# guest when the block is read, before podmesh runs (panic_on_corruption; no certificate,
# nothing listens). Then no disk at all: the initrd gives up with one line.
qemu_exited() { ! kill -0 "$qemu_pid" 2>/dev/null; }
# await_qemu_exit SECONDS: wait until the guest has stopped itself, at most SECONDS.
await_qemu_exit() { for _ in $(seq "$1"); do qemu_exited && return; sleep 1; done; }
# issued_lines FROM TO: certificates the coordinator logged on lines FROM..TO-1 (TO 0: to the end).
issued_lines() {
    awk -v from="$1" -v to="$2" 'NR >= from && (to == 0 || NR < to) && /certificate_issued/ { n++ } END { print n + 0 }' \
        "$work/coordinator.log"
}
# (the earlier boots' certificates are in the log: the pattern is known to match)
nothing_issued_since() {
    [ "$(issued_lines 1 "$1")" -gt 0 ] || {
        pmvm_log "     no earlier certificate in the coordinator log to prove the pattern: run boot 'mesh' too (PMVM_BOOTS=\"mesh disk\")"
        return 1
    }
    [ "$(issued_lines "$1" 0)" -eq 0 ]
}
if want disk; then
nfail=${#failures[@]}
tampered_disk=$work/tampered-root.img
cp build/image/test/podmesh-root.img "$tampered_disk"
# The binary's first 4 KiB (ELF header, build ID) are one EROFS data block of the disk.
at=$(perl -e 'local $/; open(my $i, "<", $ARGV[0]) or die; binmode $i; read($i, my $page, 4096) == 4096 or die;
              open(my $d, "<", $ARGV[1]) or die; binmode $d; my $img = <$d>; my $at = index($img, $page);
              print $at >= 0 && index($img, $page, $at + 1) < 0 ? $at : -1' build/image/stage-test/usr/bin/podmesh "$tampered_disk")
check "disk: podmesh's first block found once on the disk" test "$at" -ge 0
pmvm_flip_byte "$tampered_disk" $((at + 2048))
coord_lines=$(($(wc -l <"$work/coordinator.log") + 1))
boot disk --initdata "$work/initdata.toml" --env-file "$work/guest.env" --root-disk "$tampered_disk"
check "disk: the launch digest is the admitted one (the host changed only the disk)" test "$PMVM_BOOT_MEASUREMENT" = "$PMVM_MEASUREMENT"
await_qemu_exit 240
check "disk: the guest stopped itself (QEMU exited within 240 s)" qemu_exited
pmvm_log "     serial: $(grep -m1 -E 'verity.*corrupted' "$work/disk.serial.log" || true)"
check "disk: dm-verity reported the changed block" grep -qE 'verity.*data block [0-9]+ is corrupted' "$work/disk.serial.log"
check "disk: the kernel stopped the guest on it" grep -q 'Kernel panic' "$work/disk.serial.log"
check "disk: podmesh never ran (no deny table, no certificate)" \
    test -z "$(pmvm_event_usec "$J" deny_installed)$(pmvm_event_usec "$J" certificate_written)"
check "disk: the coordinator issued nothing" nothing_issued_since "$coord_lines"
shutdown_guest disk
boot nodisk --initdata "$work/initdata.toml" --env-file "$work/guest.env" --root-disk none
await_qemu_exit 120
check "nodisk: the guest stopped itself (QEMU exited within 120 s)" qemu_exited
pmvm_log "     serial: $(grep -m1 'podmesh-init:' "$work/nodisk.serial.log" || true)"
check "nodisk: one line says why" grep -q 'podmesh-init: no root disk: no virtio block device with serial podmesh-root after 10 s; stopping the boot (fail closed)' "$work/nodisk.serial.log"
shutdown_guest nodisk
# The measured command line is the initrd's only input. A malformed podmesh.verity_* value (the
# host would have to launch it, so the measurement changes too) is refused by name in one
# line, before any disk is touched.
good=$(image/run-qemu --profile test --netns "$ns" --print-cmdline)
hash=$(verity root_hash) salt=$(verity salt) blocks=$(verity data_blocks)
bad_cmdline() {  # bad_cmdline NAME FROM TO LINE: boot with FROM replaced by TO, expect LINE
    local name=$1 cmdline=${good/"$2"/"$3"}
    check "$name: the command line differs ($2 -> ${3:-nothing})" test "$cmdline" != "$good"
    boot "$name" --initdata "$work/initdata.toml" --env-file "$work/guest.env" --kernel-cmdline "$cmdline"
    await_qemu_exit 120
    check "$name: the guest stopped itself (QEMU exited within 120 s)" qemu_exited
    check "$name: one line says why ($4)" grep -qF "podmesh-init: $4; stopping the boot (fail closed)" "$work/$name.serial.log"
    shutdown_guest "$name"
}
bad_cmdline badhash "verity_root_hash=$hash" "verity_root_hash=${hash:1}" \
    "podmesh.verity_root_hash has 63 hex digits, not 64 (sha256)"
bad_cmdline nohash "podmesh.verity_root_hash=$hash " "" "no podmesh.verity_root_hash= on the kernel command line"
bad_cmdline badsalt "verity_salt=$salt" "verity_salt=${salt^^}" "podmesh.verity_salt is not lower-case hex"
bad_cmdline oddsalt "verity_salt=$salt" "verity_salt=${salt:1}" "podmesh.verity_salt is not whole bytes (at most 256)"
bad_cmdline zeroblocks "verity_data_blocks=$blocks" "verity_data_blocks=0" \
    "podmesh.verity_data_blocks is missing or not a positive number"
[ ${#failures[@]} -eq "$nfail" ] || { pmvm_log "serial log of boot 'disk':"; tail -n 30 "$work/disk.serial.log" >&2; }
fi

# ---- report ------------------------------------------------------------------------------------
cat >&2 <<EOF

== VM boot test ==
image: kernel $((kernel_bytes / 1048576)) MiB, root disk $(($(stat -c %s build/image/test/podmesh-root.img) / 1048576)) MiB (EROFS + hash tree), verity initrd $(($(stat -c %s build/image/test/podmesh-verity.initrd) / 1024)) KiB, OS cpio $((img_bytes / 1048576)) MiB ($(cat build/image/test/size.txt 2>/dev/null))
guest memory after boot 'mesh': $guest_mem
build: cargo ($cargo_profile) ${cargo_secs}s, image ${build_secs}s (see build/image/test/build-info.txt)
boot 'mesh' (TCG, ${PMVM_SMP:-1} vCPU), guest monotonic seconds:
$timeline
boot to proxy ready, wall clock from QEMU start: ${ready_wall}s
EOF
if [ ${#failures[@]} -ne 0 ]; then
    printf 'FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "tests/vm: all checks passed" >&2
