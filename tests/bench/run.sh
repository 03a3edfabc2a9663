#!/usr/bin/env bash
# podmesh proxy benchmark: podmesh against stunnel4, haproxy and nginx stream in the same
# run, with the same certificates, TLS 1.3 and mutual authentication, plus two baselines
# (nginx stream without TLS = "null pair", and direct plaintext).
#
#   tests/bench/run.sh            full run (~6 min), writes build/bench/{results.md,results.json,bench.png}
#   tests/bench/run.sh --smoke    ~1 min, every pair briefly; fails if any pair does not pass
#                                 data byte-exact (no performance assertions)
#
# Topology (network namespaces, as in the proxy tests): client pod $NS_C --veth-- server
# pod $NS_S. Apps in the server pod: iperf3 (5201), nginx http "200 ok" (8080), echo (7000).
# A request goes client tool -> client-side proxy -> (m)TLS over the veth -> server-side
# proxy -> app. Needs root. Environment: PODMESH / PMBENCH (binaries), BENCH_OUT (output dir),
# BENCH_PAIRS (a subset of: direct null stunnel haproxy nginx podmesh podmesh_classical), PODMESH_EXTRA_ARGS
# (extra `podmesh proxy` flags for both sides, e.g. --worker-threads 1).
set -euo pipefail

MODE=full
case "${1:-}" in
    "") ;;
    --smoke) MODE=smoke ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${BENCH_OUT:-$ROOT/build/bench}
[ "$MODE" = smoke ] && OUT=${BENCH_OUT:-$ROOT/build/bench-smoke}

log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, nft, TPROXY)"
PY=/usr/bin/python3 # Debian's, with python3-matplotlib (not a pyenv shim that forks)
for tool in ip nft ss iperf3 nginx stunnel4 haproxy jq $PY; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup-host.sh"
done

# --- parameters
if [ "$MODE" = full ]; then
    TPUT_RUNS=3 TPUT_SECS=3 RATE_RPS=2000 RATE_CONNS=16 RATE_SECS=8 CONN_SECS=5 CONN_CONC=16
    HOLD_CONNS=5000 ECHO_BYTES=$((16 << 20)) AEAD_SECS=2
else
    TPUT_RUNS=1 TPUT_SECS=1 RATE_RPS=200 RATE_CONNS=4 RATE_SECS=1 CONN_SECS=1 CONN_CONC=4
    HOLD_CONNS=100 ECHO_BYTES=$((2 << 20)) AEAD_SECS=0.3
fi
read -ra PAIRS <<<"${BENCH_PAIRS:-direct null stunnel haproxy nginx podmesh podmesh_classical}"

# --- binaries: release for the real run, the dev profile for the smoke run (CI has it built)
profile=release
[ "$MODE" = smoke ] && profile=debug
PODMESH=${PODMESH:-$ROOT/target/$profile/podmesh}
PMBENCH=${PMBENCH:-$ROOT/target/$profile/pmbench}
if [ ! -x "$PODMESH" ] || [ ! -x "$PMBENCH" ]; then
    log "building $profile binaries (podmesh, pmbench)"
    flag=()
    [ "$profile" = release ] && flag=(--release)
    (cd "$ROOT" && cargo build "${flag[@]}" -p podmesh -p podmesh-bench) || die "cargo build failed"
fi

# --- state and cleanup (runs on success, failure and Ctrl-C)
ID=$$
NS_C=pmbn-c$ID NS_S=pmbn-s$ID
VETH_C=pmbn${ID}c VETH_S=pmbn${ID}s
CLI_IP=10.77.0.1 SRV_IP=10.77.0.2
WORK=$(mktemp -d /tmp/pmbn.XXXXXX)
CERTS=$WORK/certs
PIDS=()
FAILED=()

stop_pid() { # pid: TERM, then KILL after 5 s
    local pid=$1 i
    [ "$pid" -gt 0 ] 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 5 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid ns
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    for ns in "$NS_C" "$NS_S"; do
        # Anything still running in our own namespaces was started by this run.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -d "$WORK/log" ]; then
        mkdir -p "$OUT" && rm -rf "$OUT/logs" && cp -r "$WORK/log" "$OUT/logs" 2>/dev/null &&
            [ "$rc" -ne 0 ] && log "logs of the failed run: $OUT/logs"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Namespaces of earlier runs that died without cleanup (their owner pid is gone).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^pmbn-[cs][0-9]+$' || true); do
    kill -0 "${ns#pmbn-?}" 2>/dev/null || { log "removing stale namespace $ns"; ip netns del "$ns" || true; }
done

# start_bg NAME NS CMD...: runs CMD in NS in the background, logs to $WORK/log/NAME.log,
# sets LAST_PID (ip netns exec and env exec, so it is the pid of CMD itself).
start_bg() {
    local name=$1 ns=$2
    shift 2
    ip netns exec "$ns" "$@" >"$WORK/log/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_listen() { # ns port pid: until something listens on the port (10 s)
    local ns=$1 port=$2 pid=$3 i
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$ns" ss -Hltn "sport = :$port")" ] && return 0
        if [ "$pid" -gt 0 ] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before listening on port $port in $ns"
            return 1
        fi
        sleep 0.1
    done
    log "nothing listens on port $port in $ns after 10 s"
    return 1
}

wait_log() { # name word pid: until the process's log contains word (20 s)
    local name=$1 word=$2 pid=$3 i
    for i in $(seq 200); do
        grep -q "$word" "$WORK/log/$name.log" && return 0
        kill -0 "$pid" 2>/dev/null || { log "$name exited before $word: $(tail -n 3 "$WORK/log/$name.log" | tr '\n' ' ')"; return 1; }
        sleep 0.1
    done
    log "$name did not log $word within 20 s"
    return 1
}

rss_kib() { # pid [field]: VmRSS (or RssAnon) of the process and its children (nginx workers), KiB
    local pid=$1 field=${2:-VmRSS} p
    [ "$pid" -gt 0 ] 2>/dev/null || { echo 0; return; }
    for p in $(ps -o pid= --pid "$pid" --ppid "$pid"); do
        awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null
    done | awk '{s += $1} END {print s + 0}'
}

# result PAIR KEY JSON: one measurement, appended to the results file.
result() {
    [ -n "$3" ] || { log "$1: no value for $2"; return 1; }
    jq -c --arg pair "$1" --arg key "$2" '{pair: $pair, key: $key, value: .}' <<<"$3" >>"$WORK/results.jsonl"
}

# Foreground only: a backgrounded function is a subshell, and $! would not be the tool.
in_c() { ip netns exec "$NS_C" "$@"; }

# --- topology
mkdir -p "$WORK/log" "$OUT"
ulimit -n "$(ulimit -Hn)"
log "mode $MODE; namespaces $NS_C $NS_S; work dir $WORK"
ip netns add "$NS_C"
ip netns add "$NS_S"
ip link add "$VETH_C" type veth peer name "$VETH_S"
ip link set "$VETH_C" netns "$NS_C"
ip link set "$VETH_S" netns "$NS_S"
for side in "$NS_C:$VETH_C:$CLI_IP" "$NS_S:$VETH_S:$SRV_IP"; do
    IFS=: read -r ns dev addr <<<"$side"
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" addr add 127.0.0.2/8 dev lo 2>/dev/null || true
    # Many short connections per second: room for ephemeral ports and TIME_WAIT reuse, but
    # never the proxy's listener ports (an earlier pair's connections would hold them).
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="10240 65000" net.ipv4.tcp_tw_reuse=1 \
        net.ipv4.ip_local_reserved_ports=15006-15007
done

# --- certificates: one set for every proxy, from the coordinator's PKI code
"$PMBENCH" certs --out "$CERTS" --server-san "server.pmbn,$SRV_IP" --client-san client.pmbn >/dev/null ||
    die "certificate generation failed"

# --- apps in the server pod
mkdir -p "$WORK/app"
cat >"$WORK/app/nginx.conf" <<EOF
user root; worker_processes 1; worker_rlimit_nofile 20000; daemon off;
pid $WORK/app/nginx.pid; error_log $WORK/app/error.log warn;
events { worker_connections 19000; }
http {
  access_log off; keepalive_timeout 600s; keepalive_requests 100000000;
  client_body_temp_path $WORK/app; proxy_temp_path $WORK/app; fastcgi_temp_path $WORK/app;
  uwsgi_temp_path $WORK/app; scgi_temp_path $WORK/app;
  server { listen 8080 backlog=4096 reuseport; location / { return 200 "ok\n"; } }
}
EOF
start_bg app-iperf3 "$NS_S" iperf3 -s -p 5201
APP_IPERF=$LAST_PID
start_bg app-nginx "$NS_S" nginx -p "$WORK/app" -c "$WORK/app/nginx.conf"
APP_HTTP=$LAST_PID
start_bg app-echo "$NS_S" "$PMBENCH" echo-serve --listen 0.0.0.0:7000
APP_ECHO=$LAST_PID
wait_listen "$NS_S" 5201 "$APP_IPERF" && wait_listen "$NS_S" 8080 "$APP_HTTP" &&
    wait_listen "$NS_S" 7000 "$APP_ECHO" || die "an app did not start"

# --- the crypto term of the throughput bound: one core, AES-256-GCM, 16 KiB records
aead=$("$PMBENCH" aead --seconds "$AEAD_SECS") || die "pmbench aead failed"
result all aead "$aead"
ossl=""
if [ "$MODE" = full ]; then # the same figure from OpenSSL (what stunnel, haproxy and nginx use)
    ossl=$(openssl speed -evp aes-256-gcm -bytes 16384 -seconds 2 2>/dev/null |
        awk 'tolower($1) == "aes-256-gcm" {v = $NF; sub(/k$/, "", v); print v * 1000 * 8 / 1e9}') || true
fi
[ -n "$ossl" ] && result all openssl_aes_gbit "$ossl"
log "AES-256-GCM per core: rustls $(jq -r '.gbit | .*100|round/100' <<<"$aead") Gbit/s, openssl ${ossl:-?} Gbit/s"

source "$HERE/pairs.sh"

# --- measurements through the running pair
probe_tls() { # pair key endpoint: what the proxies negotiate, read off the veth
    local pair=$1 key=$2 host port sniff i
    ip netns exec "$NS_C" $PY "$HERE/sniff.py" "$VETH_C" "$SRV_IP" 3 >"$WORK/sniff.json" 2>"$WORK/log/sniff-$pair-$key.log" &
    sniff=$!
    for i in $(seq 50); do grep -q listening "$WORK/log/sniff-$pair-$key.log" && break; sleep 0.1; done
    read -r host port <<<"$3"
    in_c "$PMBENCH" connect --addr "$host:$port" --concurrency 1 --seconds 0.5 >/dev/null || true
    kill -TERM "$sniff" 2>/dev/null || true
    wait "$sniff" || true
    result "$pair" "$key" "$(cat "$WORK/sniff.json" 2>/dev/null)"
}

measure_pair() { # pair
    local pair=$1 host port out best=0 i held_pid line before_s before_c after_s after_c
    read -r host port <<<"$EP_ECHO"
    out=$(in_c "$PMBENCH" echo-check --addr "$host:$port" --bytes "$ECHO_BYTES" --conns 4 2>"$WORK/log/echo-$pair.log") ||
        { log "$pair: data did NOT cross byte-exact: $(head -n 4 "$WORK/log/echo-$pair.log" | tr '\n' ' ')"; return 1; }
    result "$pair" echo "$out"
    # Half-close: FIN right after the data, the echo must still come back in full. podmesh must
    # preserve it (issue 3); for the peers it is reported, not required.
    if out=$(in_c "$PMBENCH" echo-check --half-close --addr "$host:$port" --bytes "$ECHO_BYTES" --conns 4 \
        2>"$WORK/log/echo-half-close-$pair.log"); then
        result "$pair" half_close '{"ok": true}'
    else
        log "$pair: half-close not preserved: $(head -n 4 "$WORK/log/echo-half-close-$pair.log" | tr '\n' ' ')"
        result "$pair" half_close '{"ok": false}'
        [[ $pair = podmesh* ]] && return 1
    fi

    if [ "$pair" != direct ]; then
        probe_tls "$pair" tls "$EP_HTTP"
        [ -n "$EP_HTTP_RESUME" ] && [ "$EP_HTTP_RESUME" != "$EP_HTTP" ] && probe_tls "$pair" tls_resume "$EP_HTTP_RESUME"
    fi

    read -r host port <<<"$EP_IPERF"
    for i in $(seq "$TPUT_RUNS"); do
        out=$(in_c iperf3 -c "$host" -p "$port" -t "$TPUT_SECS" -O 1 -J) ||
            { log "$pair: iperf3 failed: $(jq -r '.error // empty' <<<"$out" 2>/dev/null)"; return 1; }
        out=$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$out")
        best=$(jq -n --argjson a "$best" --argjson b "$out" '[$a, $b] | max')
    done
    result "$pair" gbit "$best"

    read -r host port <<<"$EP_HTTP"
    out=$(in_c "$PMBENCH" rate --addr "$host:$port" --rps "$RATE_RPS" --conns "$RATE_CONNS" --seconds "$RATE_SECS") ||
        { log "$pair: fixed-rate load failed"; return 1; }
    result "$pair" rate "$out"
    out=$(in_c "$PMBENCH" connect --addr "$host:$port" --concurrency "$CONN_CONC" --seconds "$CONN_SECS") ||
        { log "$pair: new-connection load failed"; return 1; }
    result "$pair" connect "$out"
    if [ -n "${EP_HTTP_RESUME:-}" ] && [ "$EP_HTTP_RESUME" != "$EP_HTTP" ]; then
        read -r host port <<<"$EP_HTTP_RESUME"
        out=$(in_c "$PMBENCH" connect --addr "$host:$port" --concurrency "$CONN_CONC" --seconds "$CONN_SECS") ||
            { log "$pair: new-connection load with resumption failed"; return 1; }
        result "$pair" connect_resume "$out"
        read -r host port <<<"$EP_HTTP"
    fi

    [ "$pair" = direct ] && return 0
    sleep 1
    before_s=$(rss_kib "$SRV_PID") before_c=$(rss_kib "$CLI_PID")
    ip netns exec "$NS_C" "$PMBENCH" hold --addr "$host:$port" --count "$HOLD_CONNS" --hold 300 >"$WORK/hold.out" 2>"$WORK/log/hold-$pair.log" &
    held_pid=$!
    for i in $(seq 1200); do
        line=$(head -n 1 "$WORK/hold.out" 2>/dev/null)
        [ -n "$line" ] && break
        kill -0 "$held_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$line" ]; then
        stop_pid "$held_pid"
        log "$pair: could not open $HOLD_CONNS idle connections"
        return 1
    fi
    sleep 2
    after_s=$(rss_kib "$SRV_PID") after_c=$(rss_kib "$CLI_PID")
    stop_pid "$held_pid"
    result "$pair" hold "$(jq -c --argjson bs "$before_s" --argjson bc "$before_c" --argjson xs "$after_s" \
        --argjson xc "$after_c" '. + {before_server_kib: $bs, before_client_kib: $bc, after_server_kib: $xs, after_client_kib: $xc}' <<<"$line")"
}

run_pair() { # pair
    local pair=$1 rc=0
    log "$pair: starting"
    "start_$pair" || { log "$pair: did not start"; return 1; }
    sleep 1
    # RSS includes file-backed pages (binary text, shared libraries); anon is the private part.
    result "$pair" idle "{\"server_kib\": $(rss_kib "$SRV_PID"), \"client_kib\": $(rss_kib "$CLI_PID"),
        \"server_anon_kib\": $(rss_kib "$SRV_PID" RssAnon), \"client_anon_kib\": $(rss_kib "$CLI_PID" RssAnon)}"
    measure_pair "$pair" || rc=1
    stop_pid "$CLI_PID"
    stop_pid "$SRV_PID"
    [[ $pair = podmesh* ]] && stop_podmesh_extra
    log "$pair: done$([ $rc -ne 0 ] && echo ' (FAILED)')"
    return $rc
}

for pair in "${PAIRS[@]}"; do
    run_pair "$pair" || FAILED+=("$pair")
done

# --- report
cp "$WORK/results.jsonl" "$OUT/results.jsonl"
$PY "$HERE/report.py" --mode "$MODE" --in "$OUT/results.jsonl" --out "$OUT" \
    --load "$(uptime | sed 's/.*load average: //')" || die "report generation failed"
if [ "$MODE" = full ]; then
    cat "$OUT/results.md"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    die "failed pairs: ${FAILED[*]} (see $OUT/logs)"
fi
log "ok: $OUT/results.md$([ "$MODE" = full ] && echo " and $OUT/bench.png")"
