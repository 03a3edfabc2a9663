#!/usr/bin/env bash
# Coordinator issue rate: certificates per second with SNP evidence from tsm-sim's simulated
# signer, over real TLS on loopback (agent/coordinator/examples/issue_bench.rs).
# Usage: tests/bench/coordinator.sh [--count N] [--concurrency C] [--flood]   (defaults 200, 4)
#        tests/bench/coordinator.sh --pods 100,1000,10000 [--concurrency C]    (scale: N simulated pods)
# --flood: an attacker at 127.0.0.2 floods nonces and silent connections while it measures.
# Env: PROFILE=release|dev (default release).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then
    cargo build --quiet --release -p coordinator --example issue_bench
    bin=target/release/examples/issue_bench
else
    cargo build --quiet -p coordinator --example issue_bench
    bin=target/debug/examples/issue_bench
fi
exec "$bin" "$@"
