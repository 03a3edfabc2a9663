#!/usr/bin/env bash
# Cross-check: our SNP launch digests (podmesh-coordinator reference-values snp, the `sev`
# crate's measurement code) against VirTEE's sev-snp-measure (Python, PyPI; installed by
# scripts/setup-host.sh into /var/cache/podmesh/venv) on the project's own firmware
# (build/firmware/snp.fd), the test image's kernel and initrd, several command lines and vCPU
# counts, and the image's reference-values.json. Fails when the tool, the firmware or the
# image is missing: an independent check that did not run is not a pass.
# Also checks that the SNP refusal of a firmware without the kernel-hashes section holds, and
# that the image rebuilt from scratch has byte-identical reference values (reproducible).
set -euo pipefail
cd "$(dirname "$0")/../.."

snp_measure=${PODMESH_SEV_SNP_MEASURE:-/var/cache/podmesh/venv/bin/sev-snp-measure}
coord=${PMVM_BIN:-target/debug}/podmesh-coordinator
source tests/vm/lib.sh  # pmvm_flip_byte (after coord: it sets PMVM_BIN's default)
profile="test"
fw=build/firmware/snp.fd kernel=build/image/$profile/podmesh.vmlinuz
# The initrd of the default (verity) boot: the root disk is covered through the command line.
initrd=$(image/run-qemu --profile "$profile" --print-initrd)
fail() { echo "reference-values check: FAIL $*" >&2; exit 1; }
[ -x "$snp_measure" ] || fail "sev-snp-measure not found at $snp_measure (scripts/setup-host.sh installs it)"
for f in "$coord" "$fw" "$kernel" "$initrd" "build/image/$profile/reference-values.json"; do
    [ -s "$f" ] || fail "$f is missing (image/build.sh --profile $profile builds it)"
done

base=$(image/run-qemu --profile "$profile" --netns podvm --print-cmdline)
cmdlines=("$base" "$base podmesh.ingress=plain#8081#true" "" "console=ttyS0 x=\"quoted value\" ü")
checked=0
for cmdline in "${cmdlines[@]}"; do
    for n in 1 2 4 8; do
        ours=$("$coord" reference-values snp --firmware "$fw" --kernel "$kernel" --initrd "$initrd" \
            --append "$cmdline" --vcpus "$n" --vcpu-type EPYC-v4 | jq -er .measurement) ||
            fail "podmesh-coordinator reference-values snp failed (vCPUs $n, cmdline '$cmdline')"
        theirs=$("$snp_measure" --mode snp --vcpus "$n" --vcpu-type EPYC-v4 --ovmf "$fw" --kernel "$kernel" \
            --initrd "$initrd" --append "$cmdline" --output-format hex) ||
            fail "sev-snp-measure failed (vCPUs $n, cmdline '$cmdline')"
        [ "$ours" = "$theirs" ] || fail "vCPUs $n, cmdline '$cmdline': ours $ours, sev-snp-measure $theirs"
        checked=$((checked + 1))
    done
done
# No initrd, another vCPU model.
ours=$("$coord" reference-values snp --firmware "$fw" --kernel "$kernel" --append "$base" --vcpus 2 --vcpu-type EPYC-Milan | jq -er .measurement)
theirs=$("$snp_measure" --mode snp --vcpus 2 --vcpu-type EPYC-Milan --ovmf "$fw" --kernel "$kernel" --append "$base")
[ "$ours" = "$theirs" ] || fail "no initrd, EPYC-Milan: ours $ours, sev-snp-measure $theirs"
checked=$((checked + 1))

# The image's reference-values.json holds exactly these values for its command line.
rv=build/image/$profile/reference-values.json
[ "$(jq -r .inputs.cmdline "$rv")" = "$base" ] || fail "$rv: cmdline differs from run-qemu's"
for n in 1 2 4 8; do
    theirs=$("$snp_measure" --mode snp --vcpus "$n" --vcpu-type EPYC-v4 --ovmf "$fw" --kernel "$kernel" --initrd "$initrd" --append "$base")
    [ "$(jq -r --arg n "$n" '.snp.measurements[$n]' "$rv")" = "$theirs" ] || fail "$rv: SNP $n vCPUs differs from sev-snp-measure"
done

# The measured command line names the root disk: the dm-verity parameters on it verify the disk
# image/build.sh wrote (veritysetup, as the guest's dm-verity will), and one changed byte of the
# disk does not verify.
arg() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $base "; }
disk=build/image/$profile/podmesh-root.img
blocks=$(arg podmesh.verity_data_blocks) salt=$(arg podmesh.verity_salt) hash=$(arg podmesh.verity_root_hash)
[ -n "$blocks" ] && [ -n "$salt" ] && [ -n "$hash" ] || fail "the measured command line has no podmesh.verity_* parameters: $base"
verify() { veritysetup verify --no-superblock --hash-offset=$((blocks * 4096)) --data-blocks="$blocks" --salt="$salt" "$1" "$1" "$hash"; }
verify "$disk" >/dev/null 2>&1 || fail "$disk does not verify against the measured root hash $hash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$disk" "$work/tampered.img"
pmvm_flip_byte "$work/tampered.img" $((blocks * 2048))
if verify "$work/tampered.img" >/dev/null 2>&1; then fail "a root disk with one changed byte verifies"; fi
rm -f "$work/tampered.img"
checked=$((checked + 1))

# Debian's generic OVMF has no SNP_KERNEL_HASHES section: both tools refuse it.
if out=$("$coord" reference-values snp --firmware /usr/share/ovmf/OVMF.fd --kernel "$kernel" --append x 2>&1); then
    fail "generic OVMF accepted: $out"
fi
grep -q SNP_KERNEL_HASHES <<<"$out" || fail "generic OVMF refused without naming SNP_KERNEL_HASHES: $out"

# TDX (no independent implementation to compare with, README): what each register depends on.
tdx() { "$coord" reference-values tdx --firmware build/firmware/tdx.fd --kernel "$kernel" --initrd "$initrd" "$@"; }
t1=$(tdx --append "$base") t2=$(tdx --append "${base/loglevel=4/loglevel=5}") t3=$(tdx --append "$base" --memory 1024)
[ "$(jq -r .mrtd <<<"$t1")" = "$(jq -r .mrtd <<<"$t2")" ] && [ "$(jq -r .mrtd <<<"$t1")" = "$(jq -r .mrtd <<<"$t3")" ] ||
    fail "TDX MRTD depends on more than the firmware"
[ "$(jq -r .rtmr1 <<<"$t1")" = "$(jq -r .rtmr1 <<<"$t2")" ] || fail "TDX RTMR1 depends on the command line"
[ "$(jq -r .rtmr1 <<<"$t1")" != "$(jq -r .rtmr1 <<<"$t3")" ] || fail "TDX RTMR1 ignores the memory size (QEMU's initrd address)"
[ "$(jq -r .rtmr2 <<<"$t1")" != "$(jq -r .rtmr2 <<<"$t2")" ] || fail "TDX RTMR2 ignores a changed command line byte"
[ "$(jq -r .rtmr2 <<<"$t1")" = "$(jq -r .rtmr2 <<<"$t3")" ] || fail "TDX RTMR2 depends on the memory size"
[ "$(jq -r .rtmr1 <<<"$t1")" = "$(jq -r .tdx.rtmr1 "$rv")" ] && [ "$(jq -r .rtmr2 <<<"$t1")" = "$(jq -r .tdx.rtmr2 "$rv")" ] ||
    fail "$rv: TDX values differ from reference-values tdx"
checked=$((checked + 1))

# The manifest fragment is ready to paste: with a policy it is a manifest the coordinator
# loads (strict schema), and the values it leaves open are warned as permissive.
frag=build/image/$profile/manifest-fragment.json
jq '. + {policies: {("ab" * 32): {name: "web", sans: ["web"]}}}' "$frag" >"$work/manifest.json"
"$coord" serve --listen 127.0.0.1:0 --state "$work/state" --manifest "$work/manifest.json" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do grep -q coordinator_state_loaded "$work/serve.log" && break; kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true
grep -q coordinator_state_loaded "$work/serve.log" || fail "$frag: the coordinator refused it: $(tail -n 3 "$work/serve.log")"
for field in snp.minimum_tcb tdx.xfam 'tdx.rtmrs\[0\]'; do
    grep -q "permissive_reference_value.*$field" "$work/serve.log" || fail "$frag: $field not warned as permissive"
done
checked=$((checked + 1))

# Reproducible: the image built again from scratch (a fresh mkosi cache beside the .debs already
# fetched, the same binaries) has the same reference values, byte for byte: kernel, initrd,
# root disk and its root hash, launch digests. (A random machine-id, the build day in
# /etc/shadow, or the cpio's mtimes in the disk's UUID each broke this once.)
cp "$rv" "$work/first.json"
cache=${PODMESH_IMAGE_CACHE:-/var/cache/podmesh/image}
mkdir -p "$work/cache"
ln -s "$(realpath "$cache/debs")" "$work/cache/debs"
ln -s "$(realpath "$cache/packages")" "$work/cache/packages"
PODMESH_IMAGE_CACHE=$work/cache bash image/build.sh --profile "$profile" --no-cargo \
    --cargo-profile "${PMVM_CARGO_PROFILE:-debug}" >"$work/rebuild.log" 2>&1 ||
    fail "the image rebuild failed: $(tail -n 5 "$work/rebuild.log")"
if ! cmp -s "$work/first.json" "$rv"; then
    differ=$(jq -rn --slurpfile a "$work/first.json" --slurpfile b "$rv" '$a[0] as $x | $b[0] as $y |
        [$x | paths(scalars)] | map(select(. as $p | ($x | getpath($p)) != ($y | getpath($p))) | map(tostring) | join(".")) | join(" ")')
    fail "the image built again has other reference values (not reproducible); they differ in: ${differ:-its layout}"
fi
checked=$((checked + 1))

echo "reference-values check: 17 SNP digests equal sev-snp-measure's ($("$snp_measure" --version)), reference-values.json agrees, the root disk verifies against the measured root hash (and a changed byte does not), generic OVMF refused, TDX registers depend on what they should, the image rebuilt from scratch has the same reference values" >&2
echo "$checked passed, 0 failed"
