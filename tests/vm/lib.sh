# shellcheck shell=bash
# shellcheck disable=SC2034  # sourced: its variables are read by the script that sources it
# Shared by tests/vm/run.sh and scripts/run.sh: a host-side "cluster" for the podVM.
#   - a network namespace (pmvm-*) whose tap device faces the guest (image/run-qemu --netns);
#   - podmesh-coordinator serving inside it on 10.77.0.1, trusting the simulated TEE anchor;
#   - the guest's journal (JSON lines) and command port (virtio-serial) read with jq / socat.
# Source it; it only defines functions and variables. Every function fails loudly.

PMVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PMVM_HOST_IP=10.77.0.1
PMVM_GUEST_IP=10.77.0.2
PMVM_COORD_PORT=${PMVM_COORD_PORT:-1313}
PMVM_BIN=${PMVM_BIN:-$PMVM_ROOT/target/release}

pmvm_log() { printf '[vm %4ss] %s\n' "$SECONDS" "$*" >&2; }
pmvm_die() { printf '[vm %4ss] FAIL: %s\n' "$SECONDS" "$*" >&2; exit 1; }

# pmvm_require_tools TOOL...: every tool must be on PATH.
pmvm_require_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] || pmvm_die "missing host tools: ${missing[*]} (run scripts/setup-host.sh)"
}

# pmvm_require_kata: the real kata-agent for the test image (Kata Containers 4.1.0, provenance in
# its README): PODMESH_KATA_DIR, else shared/kata beside the repository. Absent = the test fails,
# like the evidence vectors (no stand-in). Exports PODMESH_KATA_DIR for image/build.sh, which
# checks the binary against the SHA256SUMS there.
pmvm_require_kata() {
    PODMESH_KATA_DIR=${PODMESH_KATA_DIR:-$(cd "$PMVM_ROOT/.." && pwd)/shared/kata}
    [ -x "$PODMESH_KATA_DIR/kata-agent" ] && [ -r "$PODMESH_KATA_DIR/SHA256SUMS" ] ||
        pmvm_die "the real kata-agent is not at $PODMESH_KATA_DIR (kata-agent + SHA256SUMS): check out shared/kata beside the repository or set PODMESH_KATA_DIR"
    export PODMESH_KATA_DIR
}

# pmvm_require_bins NAME...: the release binaries the host side runs.
pmvm_require_bins() {
    local b
    for b in "$@"; do
        [ -x "$PMVM_BIN/$b" ] || pmvm_die "$PMVM_BIN/$b is missing (cargo build --release --bins)"
    done
}

# ---- journal (one JSON object per line, as `journalctl -o json` writes it) ------------------

# pmvm_jq JOURNAL FILTER: jq over the journal, tolerant of a partly written last line.
pmvm_jq() {
    local journal=$1; shift
    jq -R -r 'fromjson? // empty | '"$1" "$journal" 2>/dev/null
}

# pmvm_first JOURNAL FILTER [N]: the first N (default 1) outputs of pmvm_jq. sed reads to the
# end: `pmvm_jq ... | head -n1` dies of SIGPIPE under pipefail (a failed assignment, and set -e
# ends the test) once jq's output outgrows one pipe write. (jq 1.6's own limit() cannot stop
# early here: the filters need `?`, and its try swallows limit's break.)
pmvm_first() {
    pmvm_jq "$1" "$2" | sed -n "1,${3:-1}p"
}

# pmvm_event_usec JOURNAL EVENT [UNIT]: monotonic usec of the first PODMESH_EVENT=EVENT
# (from UNIT when given), empty when absent.
pmvm_event_usec() {
    local journal=$1 event=$2 unit=${3:-}
    pmvm_first "$journal" "select(.PODMESH_EVENT == \"$event\" and (\"$unit\" == \"\" or ._SYSTEMD_UNIT == \"$unit\")) | .__MONOTONIC_TIMESTAMP"
}

# pmvm_unit_job_usec JOURNAL UNIT RESULT: monotonic usec of systemd's message that the start
# job of UNIT ended with RESULT (done | failed | dependency ...).
pmvm_unit_job_usec() {
    pmvm_first "$1" "select(.UNIT == \"$2\" and .JOB_TYPE == \"start\" and .JOB_RESULT == \"$3\") | .__MONOTONIC_TIMESTAMP"
}

# pmvm_unit_failed JOURNAL UNIT: whether systemd logged UNIT as failed.
pmvm_unit_failed() {
    [ -n "$(pmvm_first "$1" "select(.UNIT == \"$2\" and (.MESSAGE | test(\"Failed with result|failed\"; \"i\"))) | .MESSAGE")" ]
}

# pmvm_unit_messages JOURNAL UNIT: that unit's own log lines.
pmvm_unit_messages() {
    pmvm_jq "$1" "select(._SYSTEMD_UNIT == \"$2\" or .UNIT == \"$2\") | .MESSAGE | tostring"
}

# pmvm_wait JOURNAL TIMEOUT DESCRIPTION JQ_SELECT [QEMU_PID]: wait until an entry matches.
pmvm_wait() {
    local journal=$1 timeout=$2 what=$3 select=$4 qpid=${5:-} start=$SECONDS
    while [ $((SECONDS - start)) -lt "$timeout" ]; do
        if [ -n "$(pmvm_first "$journal" "select($select) | 1")" ]; then
            return 0
        fi
        if [ -n "$qpid" ] && ! kill -0 "$qpid" 2>/dev/null; then
            pmvm_log "QEMU exited while waiting for $what"
            return 1
        fi
        sleep 2
    done
    pmvm_log "timed out after ${timeout}s waiting for $what"
    return 1
}

# pmvm_ms USEC: microseconds as seconds with millisecond precision.
pmvm_ms() { [ -n "$1" ] && awk -v u="$1" 'BEGIN { printf "%.3f", u / 1e6 }' || printf 'n/a'; }

# ---- command port ----------------------------------------------------------------------------

# pmvm_ctl SOCKET JOURNAL COMMAND: run an allowed command in the guest (image/test-tree pmvm-ctl),
# wait for its journal entry, print its output (MESSAGE) and return its exit status.
# (Usually called in $(...): the sequence number must not depend on shell state.)
pmvm_ctl() {
    local sock=$1 journal=$2 cmd=$3 seq start entry
    seq="$$-$(date +%s%N)"
    [ -S "$sock" ] || pmvm_die "guest command port $sock is missing"
    # Keep the connection open until the answer is in the journal (the guest reads the port
    # only while the host end is connected), then close it: QEMU serves one client at a time.
    # All output redirected: the feeder must not hold the caller's $(...) pipe open.
    local done_flag
    done_flag=$(mktemp -u /tmp/pmvm-ctl.XXXXXX)
    { (printf '%s %s\n' "$cmd" "$seq"; while [ ! -e "$done_flag" ]; do sleep 0.2; done) |
        socat - "UNIX-CONNECT:$sock"; } >/dev/null 2>&1 &
    local feeder=$!
    start=$SECONDS
    while [ $((SECONDS - start)) -lt 60 ]; do
        entry=$(pmvm_first "$journal" "select(.PMVM_SEQ == \"$seq\") | \"\\(.PMVM_RC)\\t\\(.MESSAGE)\"")
        [ -n "$entry" ] && break
        sleep 1
    done
    touch "$done_flag"; wait "$feeder" 2>/dev/null || true; rm -f "$done_flag"
    [ -n "$entry" ] || pmvm_die "guest command '$cmd' got no answer in 60 s (pmvm-ctl.service running?)"
    printf '%s\n' "${entry#*$'\t'}"
    return "${entry%%$'\t'*}"
}

# ---- host side: namespace, coordinator -------------------------------------------------------

# pmvm_netns_up NAME: a fresh namespace with loopback up (run-qemu adds the tap inside).
pmvm_netns_up() {
    ip netns del "$1" 2>/dev/null || true
    ip netns add "$1"
    ip -n "$1" link set lo up
}

# pmvm_flip_byte FILE OFFSET: change one byte of FILE in place (its lowest bit): a host that
# alters the disk it serves.
pmvm_flip_byte() {
    perl -e 'open(my $f, "+<", $ARGV[0]) or die "$ARGV[0]: $!\n"; binmode $f; seek($f, $ARGV[1], 0) or die;
             read($f, my $b, 1) == 1 or die "$ARGV[0]: no byte at $ARGV[1]\n"; seek($f, $ARGV[1], 0);
             print $f chr(ord($b) ^ 1); close($f) or die' "$1" "$2"
}
