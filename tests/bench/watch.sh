#!/usr/bin/env bash
# What N pods long-polling GET /v1/generation cost one coordinator (RSS, CPU while waiting)
# and how fast a manifest update reaches all of them (agent/coordinator/examples/watch_bench.rs).
# Usage: tests/bench/watch.sh [--pods N] [--connect-rate R]   (defaults 10000, 1000/s)
# Env: PROFILE=release|dev (default release). Needs `ulimit -n` above N (it raises the soft limit).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
flag=()
[[ "$profile" == release ]] && flag=(--release)
cargo build --quiet "${flag[@]}" -p coordinator --bin podmesh-coordinator --example watch_bench
dir=target/debug
[[ "$profile" == release ]] && dir=target/release
ulimit -n "$(ulimit -Hn)"
exec "$dir/examples/watch_bench" "$@"
