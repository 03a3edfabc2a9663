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
    grep -qE '^#!.*\b(ba)?sh\b' <<<"$(head -c 64 "$f" 2>/dev/null | head -n1)" && echo "$f"; done; } | sort -u)
echo "lint: shellcheck (${#scripts[@]} scripts, settings in .shellcheckrc)" >&2
shellcheck -x "${scripts[@]}"

# A pipe into grep -q fails under pipefail whenever grep's early exit kills the writer with
# SIGPIPE: a check that flakes with the size of its input (it failed CI once, in tests/vm).
# grep -q reads a here-string, a file or <(...) instead.
if grep -nE '[|][[:space:]]*grep[[:space:]]+-[a-zA-Z]*q' "${scripts[@]}"; then
    echo "lint: the lines above pipe into grep -q; under pipefail that fails at random (SIGPIPE): use grep -q PATTERN <<<\"\$(command)\"" >&2
    exit 1
fi
