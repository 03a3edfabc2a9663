#!/usr/bin/env bash
# CI smoke run of the proxy benchmark (~1 min): every pair (podmesh, stunnel4, haproxy,
# nginx stream with and without TLS, direct) is started in the two-pod topology, carries
# data byte-exact through an echo check and each load tool runs briefly. Fails if any pair
# does not start or does not pass data byte-exact; makes no performance assertion.
# Uses the dev-profile binaries (`cargo build --workspace --bins`); needs root.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" --smoke "$@"
