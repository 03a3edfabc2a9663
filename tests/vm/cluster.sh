# shellcheck shell=bash
# shellcheck disable=SC2034  # sourced: its variables are read by the script that sources it
# The host side of the podVM tests and the demo: a simulated TEE chain, podmesh-coordinator
# serving inside the test's network namespace (the guest reaches it through the tap as
# 10.77.0.1), a manifest that admits a second pod by its SNP HOST_DATA and, once
# cluster_initdata has written the podVM's initdata (mesh settings + the coordinator's root CA),
# the podVM by that document's digest. Source after tests/vm/lib.sh. Sets PMVM_ROOT_CA and
# PMVM_GUEST_CREDS (run-qemu arguments); writes WORK/guest.env (operational knobs only, the
# podmesh.env credential) and WORK/tsm-sim.tgz (guest credential). cluster_stop (call it from
# the caller's EXIT trap) stops what cluster_* started.

# Launch values of the simulated podVM (SNP): HOST_DATA per pod, and the measurement. The
# manifest's measurement is the test image's reference value (image/reference-values.sh, for
# PMVM_SMP vCPUs on build/firmware/snp.fd); cluster_launch_measurement makes tsm-sim report
# what podmesh-coordinator reference-values computes for each boot's own command line.
# PMVM_HOSTDATA_VM is what tsm-sim reports when the podVM is launched without --initdata.
PMVM_REFERENCE_VALUES=build/image/test/reference-values.json
PMVM_HOSTDATA_VM=$(printf 'podmesh-test-podvm' | sha256sum | cut -c1-64)
PMVM_HOSTDATA_POD2=$(printf 'podmesh-test-pod2' | sha256sum | cut -c1-64)

CLUSTER_PIDS=() CLUSTER_MOUNTS=()

# cluster_stop: SIGTERM everything started here (tsm-sim unmounts itself on SIGTERM).
cluster_stop() {
    local p m
    for p in ${CLUSTER_PIDS[@]+"${CLUSTER_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    for p in ${CLUSTER_PIDS[@]+"${CLUSTER_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
    for m in ${CLUSTER_MOUNTS[@]+"${CLUSTER_MOUNTS[@]}"}; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    CLUSTER_PIDS=() CLUSTER_MOUNTS=()
}

# cluster_coordinator_pause / _resume: SIGSTOP / SIGCONT the coordinator (a slow coordinator:
# the podVM's attest waits and retries, so the pod runs behind the deny table for as long as the
# caller needs to look at it).
cluster_coordinator_pause() { kill -STOP "${CLUSTER_COORD_PID:?cluster_start first}"; }
cluster_coordinator_resume() { kill -CONT "${CLUSTER_COORD_PID:-}" 2>/dev/null || true; }

# cluster_start WORK NETNS
cluster_start() {
    local work=$1 ns=$2
    local sim=$work/sim state=$work/coordinator
    PMVM_MEASUREMENT=$(jq -er --arg n "${PMVM_SMP:-1}" '.snp.measurements[$n]' "$PMVM_REFERENCE_VALUES") ||
        pmvm_die "no SNP measurement for ${PMVM_SMP:-1} vCPUs in $PMVM_REFERENCE_VALUES (image/build.sh writes it)"
    mkdir -p "$sim/anchor" "$state"

    # The simulated AMD chain (ARK/ASK/VCEK keys) lives in one state directory: the anchor
    # goes to the coordinator, the whole state to the guest's tsm-sim (credential).
    "$PMVM_BIN/tsm-sim" anchor --state "$sim/state" --out "$sim/anchor" >"$work/tsm-sim-anchor.log" 2>&1 ||
        pmvm_die "tsm-sim anchor failed: $(tail -n3 "$work/tsm-sim-anchor.log")"
    mkdir -p "$sim/guest"
    cp -a "$sim/state" "$sim/guest/state"
    CLUSTER_SIM=$sim
    cluster_pack_sim "$work/tsm-sim.tgz" "$PMVM_MEASUREMENT"

    # Strict SNP reference values, as strict as the simulated evidence allows: the measurement,
    # POLICY, tsm-sim's TCB (bl 10 tee 0 snp 25 ucode 84; launch TCB floor the same) and the
    # one simulated chip the guest's tsm-sim signs as.
    local chip_id
    chip_id=$(od -An -tx1 -v "$sim/state/amd-genoa/chip_id" | tr -d ' \n')
    [ ${#chip_id} -eq 128 ] || pmvm_die "tsm-sim state has no 64-byte amd-genoa/chip_id"
    cat >"$work/manifest.json" <<EOF
{
  "reference_values": {
    "snp": { "products": ["Genoa"], "measurements": ["$PMVM_MEASUREMENT"], "guest_policy": "0x30000",
             "minimum_tcb": { "bootloader": 10, "tee": 0, "snp": 25, "microcode": 84 },
             "chip_ids": ["$chip_id"] }
  },
  "policies": {
    "$PMVM_HOSTDATA_POD2": { "name": "pod2", "sans": ["pod2"] }
  },
  "allow_simulated_tee": true
}
EOF
    # The owner token: cluster_initdata adds the podVM's policy with `manifest set`.
    "$PMVM_BIN/podmesh-coordinator" owner-token --hash-out "$work/owner.sha256" >"$work/owner.token" ||
        pmvm_die "podmesh-coordinator owner-token failed"
    ip netns exec "$ns" "$PMVM_BIN/podmesh-coordinator" serve --listen "0.0.0.0:$PMVM_COORD_PORT" \
        --state "$state" --manifest "$work/manifest.json" --sim-anchor "$sim/anchor" \
        --owner-token-file "$work/owner.sha256" \
        --san "$PMVM_HOST_IP" --san 127.0.0.1 >"$work/coordinator.log" 2>&1 &
    local coord_pid=$!
    CLUSTER_PIDS+=("$coord_pid")
    CLUSTER_COORD_PID=$coord_pid
    local i
    for i in $(seq 1 100); do
        [ -s "$state/root-ca.pem" ] && ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PMVM_COORD_PORT" 2>/dev/null && break
        kill -0 "$coord_pid" 2>/dev/null || pmvm_die "podmesh-coordinator exited: $(tail -n5 "$work/coordinator.log")"
        sleep 0.2
    done
    [ -s "$state/root-ca.pem" ] || pmvm_die "podmesh-coordinator wrote no $state/root-ca.pem in 20 s"
    PMVM_ROOT_CA=$state/root-ca.pem

    # The guest's podmesh.env credential: operational knobs only (the image drops anything else):
    # fast retries under TCG.
    printf '%s\n' "PODMESH_BACKOFF_MAX=5s" >"$work/guest.env"
    PMVM_GUEST_CREDS=(--credential "pmvm.tsm-sim=$work/tsm-sim.tgz")
    pmvm_log "coordinator up (pid $coord_pid), simulated anchor $sim/anchor"
    CLUSTER_WORK=$work CLUSTER_NS=$ns CLUSTER_SIM=$sim
}

# cluster_pack_sim TGZ MEASUREMENT: the guest's tsm-sim credential (simulated chain + launch values).
cluster_pack_sim() {
    printf '%s\n' --host-data "$PMVM_HOSTDATA_VM" --measurement "$2" --policy 0x30000 >"$CLUSTER_SIM/guest/args"
    tar -czf "$1" -C "$CLUSTER_SIM/guest" state args
}

# cluster_launch_measurement TGZ RUN-QEMU-ARGS...: the SNP launch digest of the boot that
# image/run-qemu makes of these arguments (its exact kernel command line, PMVM_SMP vCPUs, the
# project's SNP firmware, the test image), computed by podmesh-coordinator reference-values,
# packed as what tsm-sim reports. Under TCG this exercises the pipeline (build -> reference
# value -> report -> coordinator), not the PSP: tsm-sim signs whatever it is told.
cluster_launch_measurement() {
    local tgz=$1 cmdline initrd m; shift
    cmdline=$(image/run-qemu --profile test --print-cmdline "$@") || pmvm_die "run-qemu --print-cmdline $*"
    initrd=$(image/run-qemu --profile test --print-initrd "$@") || pmvm_die "run-qemu --print-initrd $*"
    m=$("$PMVM_BIN/podmesh-coordinator" reference-values snp --firmware build/firmware/snp.fd \
        --kernel build/image/test/podmesh.vmlinuz --initrd "$initrd" \
        --append "$cmdline" --vcpus "${PMVM_SMP:-1}" | jq -er .measurement) ||
        pmvm_die "podmesh-coordinator reference-values snp failed for '$cmdline'"
    cluster_pack_sim "$tgz" "$m"
    PMVM_BOOT_MEASUREMENT=$m
}

# cluster_initdata FILE INGRESS: the podVM's initdata (CoCo TOML, sha384): podmesh.env with the
# ingress and the coordinator's address, and the coordinator's root CA (attested mode refuses
# trust on first use). Only writes the file; cluster_admit_initdata puts it into the manifest.
cluster_initdata() {
    local file=$1 ingress=$2
    {
        printf 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"podmesh.env" = """\n'
        printf 'CONTRAST_INGRESS_PROXY_CONFIG=%s\nPODMESH_COORDINATOR=%s\n"""\n' "$ingress" "$PMVM_HOST_IP:$PMVM_COORD_PORT"
        printf '"coordinator-root-ca.pem" = """\n%s\n"""\n' "$(cat "$PMVM_ROOT_CA")"
    } >"$file"
}

# cluster_initdata_hostdata FILE: the HOSTDATA (hex) the podVM launches with for this initdata.
cluster_initdata_hostdata() {
    "$PMVM_BIN/podmesh-coordinator" initdata digest "$1" | jq -er .host_data ||
        pmvm_die "podmesh-coordinator initdata digest $1 failed"
}

# cluster_admit_initdata FILE: the manifest admits the podVM (name podvm, SANs podvm and its
# address) by the HOSTDATA of FILE, set on the running coordinator with the owner token.
cluster_admit_initdata() {
    local hostdata manifest=$CLUSTER_WORK/manifest.json
    hostdata=$(cluster_initdata_hostdata "$1")
    jq --arg hd "$hostdata" --arg ip "$PMVM_GUEST_IP" '.policies[$hd] = { name: "podvm", sans: ["podvm", $ip] }' \
        "$manifest" >"$manifest.new" && mv "$manifest.new" "$manifest"
    ip netns exec "$CLUSTER_NS" "$PMVM_BIN/podmesh-coordinator" manifest set \
        --coordinator "https://127.0.0.1:$PMVM_COORD_PORT" --root-ca "$PMVM_ROOT_CA" \
        --token-file "$CLUSTER_WORK/owner.token" "$manifest" >"$CLUSTER_WORK/manifest-set.log" 2>&1 ||
        pmvm_die "manifest set failed: $(tail -n3 "$CLUSTER_WORK/manifest-set.log")"
    pmvm_log "manifest admits the podVM by its initdata digest (HOSTDATA $hostdata)"
}

# cluster_client_cert DIR: a mesh certificate for the second pod (the host side of the tap),
# obtained like any workload: tsm-sim on the host (its own HOST_DATA) + `podmesh attest --once`.
cluster_client_cert() {
    local dir=$1 mnt=$CLUSTER_WORK/pod2-tsm i
    mkdir -p "$dir" "$mnt"
    "$PMVM_BIN/tsm-sim" mount --root "$mnt" --tee snp --state "$CLUSTER_SIM/state" \
        --host-data "$PMVM_HOSTDATA_POD2" --measurement "$PMVM_MEASUREMENT" --policy 0x30000 \
        >"$CLUSTER_WORK/pod2-tsm-sim.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
    CLUSTER_MOUNTS+=("$mnt")
    for i in $(seq 1 50); do [ -d "$mnt/report" ] && break; sleep 0.1; done
    [ -d "$mnt/report" ] || { pmvm_log "tsm-sim mount for pod2 failed: $(tail -n3 "$CLUSTER_WORK/pod2-tsm-sim.log")"; return 1; }
    # pod2 shares the coordinator's namespace: it reaches it on loopback, with or without a guest.
    if ! ip netns exec "$CLUSTER_NS" timeout 120 env -u PODMESH_NETNS "$PMVM_BIN/podmesh" attest --once --no-dbus \
            --coordinator "127.0.0.1:$PMVM_COORD_PORT" --coordinator-root-ca "$PMVM_ROOT_CA" \
            --tsm-root "$mnt" --tls-dir "$dir" --kernel-cmdline /dev/null \
            >"$CLUSTER_WORK/pod2-attest.log" 2>&1; then
        pmvm_log "pod2: podmesh attest --once failed: $(tail -n3 "$CLUSTER_WORK/pod2-attest.log")"
        return 1
    fi
    [ -s "$dir/certChain.pem" ] && [ -s "$dir/key.pem" ] && [ -s "$dir/mesh-ca.pem" ] || {
        pmvm_log "pod2: attest wrote no certificate files into $dir"; return 1; }
    pmvm_log "pod2: mesh certificate from the coordinator in $dir"
}
