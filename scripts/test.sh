#!/usr/bin/env bash
# The whole test suite, stage by stage. Every stage must pass; a stage that cannot
# run here fails rather than pretending (the one exception, absent ../shared/vectors,
# is announced by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "make test: needs root (network namespaces, nftables, FUSE, QEMU)" >&2
    exit 1
fi

# Each stage's wall-clock cost, printed as a table at the end (README "Tests" keeps the figures).
stage_names=() stage_starts=()
stage() {
    stage_names+=("${*%%:*}") stage_starts+=("$SECONDS")
    printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2
}
export CARGO_TERM_COLOR=never RUST_BACKTRACE=1

stage "lint: cargo fmt --check, clippy -D warnings (workspace lints), shellcheck"
bash scripts/lint.sh

stage "units: systemd-analyze verify and security"
bash scripts/check-units.sh

stage "cargo test (unit, integration, namespaces)"
# One build for everything: `cargo test` also builds the binaries the end-to-end tests run,
# with the same features (a separate `cargo build` would compile the dependencies twice).
cargo test --workspace --no-run
# In parallel: each namespaced test has its own network namespaces; the few that change the
# host's state take Test::serial (tests/src/lib.rs).
cargo test --workspace

stage "fuzz targets build and run briefly"
bash scripts/fuzz.sh smoke

stage "VM boot test (mkosi image, QEMU TCG, boot contract from the guest journal)"
bash tests/vm/run.sh

stage "reference values: SNP launch digests against sev-snp-measure (firmware, kernel, initrd of the VM test)"
bash tests/vm/reference-values.sh

stage "benchmark smoke (every proxy pair passes data byte-exact; no timing asserted)"
bash tests/bench/smoke.sh

stage_starts+=("$SECONDS")
printf '\n==> all stages passed in %dm%02ds:\n' $((SECONDS / 60)) $((SECONDS % 60)) >&2
for i in "${!stage_names[@]}"; do
    d=$((stage_starts[i + 1] - stage_starts[i]))
    printf '    %-58s %3dm%02ds\n' "${stage_names[$i]}" $((d / 60)) $((d % 60)) >&2
done
