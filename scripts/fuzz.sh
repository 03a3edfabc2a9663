#!/usr/bin/env bash
# Fuzzing with cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks -Zsanitizer).
#   scripts/fuzz.sh smoke               build every target, run each for FUZZ_SMOKE_SECS (20) s
#   scripts/fuzz.sh run TARGET SECONDS  run one target
#   scripts/fuzz.sh list                list targets
# Targets are the [[bin]] entries of fuzz/Cargo.toml (see its header to add one). Seeds in
# fuzz/seeds/TARGET/ are read, new inputs go to fuzz/corpus/TARGET/ (not committed), crashes
# to fuzz/artifacts/TARGET/. fuzz/ is its own workspace with its own target dir.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never

die() { echo "fuzz.sh: $*" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz missing: run scripts/setup-host.sh"

TARGETS=$(cargo fuzz list) || die "cargo fuzz list failed (is fuzz/Cargo.toml valid?)"
targets() { printf '%s\n' "$TARGETS"; }

check_registered() {
    local f name
    for f in fuzz_targets/*.rs; do
        name=$(basename "$f" .rs)
        grep -qx "$name" <<<"$TARGETS" || die "$f has no [[bin]] entry named $name in fuzz/Cargo.toml"
    done
}

run_target() {
    local target=$1 secs=$2
    grep -qx "$target" <<<"$TARGETS" || die "unknown target $target (have: $(targets | paste -sd' '))"
    mkdir -p "corpus/$target" "artifacts/$target"
    local corpora=("corpus/$target")
    [ -d "seeds/$target" ] && corpora+=("seeds/$target")
    echo "fuzz.sh: $target for ${secs}s" >&2
    cargo fuzz run "$target" "${corpora[@]}" -- -max_total_time="$secs" -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>&1 | tail -n 15
    return "${PIPESTATUS[0]}"
}

case "${1:-}" in
    smoke)
        check_registered
        cargo fuzz build
        for t in $(targets); do run_target "$t" "${FUZZ_SMOKE_SECS:-20}"; done
        echo "fuzz.sh: smoke ok ($(targets | wc -l) targets)" >&2
        ;;
    run)
        [ $# -eq 3 ] || die "usage: scripts/fuzz.sh run TARGET SECONDS"
        [[ $3 =~ ^[0-9]+$ ]] || die "SECONDS must be a number, got $3"
        run_target "$2" "$3"
        ;;
    list) targets ;;
    *) die "usage: scripts/fuzz.sh smoke | run TARGET SECONDS | list" ;;
esac
