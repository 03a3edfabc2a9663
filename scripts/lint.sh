#!/usr/bin/env bash
# The guardrails, the first stage of `make test`: formatting, clippy with every warning an
# error (the workspace lints in Cargo.toml included), and shellcheck on every shell script.
# Any finding fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "lint: cargo fmt --check" >&2
cargo fmt --all --check

echo "lint: cargo clippy (workspace, all targets, -D warnings)" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every tracked shell script: *.sh, and the files in image/ that start with a shell shebang.
mapfile -t scripts < <({ git ls-files '*.sh'; git ls-files image | while read -r f; do
    head -c 64 "$f" 2>/dev/null | head -n1 | grep -qE '^#!.*\b(ba)?sh\b' && echo "$f"; done; } | sort -u)
echo "lint: shellcheck (${#scripts[@]} scripts, settings in .shellcheckrc)" >&2
shellcheck -x "${scripts[@]}"
