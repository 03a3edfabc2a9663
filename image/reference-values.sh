#!/usr/bin/env bash
# Writes the launch measurements of a built podVM image, computed before it ever boots:
#   build/image/<profile>/reference-values.json   SNP launch digest for each vCPU count
#       image/run-qemu offers (--tee snp --smp 1|2|4|8), TDX MRTD and RTMR1/RTMR2, with the
#       inputs they cover (firmware, kernel, initrd: SHA-256; the exact kernel command line)
#   build/image/<profile>/manifest-fragment.json  the "reference_values" object to paste into
#       a coordinator manifest
#
#   image/reference-values.sh --profile P --coordinator BIN
#
# The command line is the one image/run-qemu gives a podVM with a network device (--netns),
# configured through initdata (nothing else on the command line): what the VM test's boots
# and the demo use. A boot with another command line has another measurement: compute it with
# `podmesh-coordinator reference-values snp --append "$(image/run-qemu ... --print-cmdline)"`.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="" coordinator=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?}; shift 2 ;;
        --coordinator) coordinator=${2:?}; shift 2 ;;
        *) echo "reference-values: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$profile" ] && [ -x "$coordinator" ] ||
    { echo "reference-values: usage: --profile P --coordinator target/<profile>/podmesh-coordinator" >&2; exit 2; }
out=build/image/$profile
kernel=$out/podmesh.vmlinuz
# The boot image/run-qemu makes by default: the verity initrd, the root hash on the command line.
initrd=$(image/run-qemu --profile "$profile" --print-initrd)
snp_fw=build/firmware/snp.fd tdx_fw=build/firmware/tdx.fd
for f in "$kernel" "$initrd" "$snp_fw" "$tdx_fw"; do
    [ -s "$f" ] || { echo "reference-values: $f is missing (image/build.sh, image/build-firmware.sh)" >&2; exit 1; }
done
cmdline=$(image/run-qemu --profile "$profile" --netns podvm --print-cmdline)
# The vCPU counts run-qemu accepts for --tee snp (its snp_vcpus).
vcpus=$(sed -n 's/^snp_vcpus="\(.*\)"$/\1/p' image/run-qemu)
[ -n "$vcpus" ] || { echo "reference-values: cannot read snp_vcpus from image/run-qemu" >&2; exit 1; }

snp='{}'
for n in $vcpus; do
    m=$("$coordinator" reference-values snp --firmware "$snp_fw" --kernel "$kernel" --initrd "$initrd" \
        --append "$cmdline" --vcpus "$n" --vcpu-type EPYC-v4 | jq -er .measurement)
    snp=$(jq --arg n "$n" --arg m "$m" '. + {($n): $m}' <<<"$snp")
done
tdx=$("$coordinator" reference-values tdx --firmware "$tdx_fw" --kernel "$kernel" --initrd "$initrd" \
    --append "$cmdline" --memory 2048)
sha() { sha256sum "$1" | cut -d' ' -f1; }
jq -n --arg profile "$profile" --arg cmdline "$cmdline" --argjson snp "$snp" --argjson tdx "$tdx" \
    --arg snp_fw "$(sha "$snp_fw")" --arg tdx_fw "$(sha "$tdx_fw")" --arg kernel "$(sha "$kernel")" \
    --arg initrd "$(sha "$initrd")" --arg root_disk "$(sha "$out/podmesh-root.img")" --arg buildinfo "$(tr '\n' ';' <build/firmware/BUILDINFO 2>/dev/null)" '{
  profile: $profile,
  inputs: { snp_firmware_sha256: $snp_fw, tdx_firmware_sha256: $tdx_fw, kernel_sha256: $kernel,
            initrd_sha256: $initrd, root_disk_sha256: $root_disk, firmware_build: $buildinfo,
            cmdline: $cmdline },
  snp: { vcpu_type: "EPYC-v4", guest_features: "0x1", guest_policy: "0x30000", measurements: $snp },
  tdx: { memory_mib: 2048, mrtd: $tdx.mrtd, rtmr0: null, rtmr0_host_dependent: $tdx.rtmr0_host_dependent,
         rtmr1: $tdx.rtmr1, rtmr2: $tdx.rtmr2 }
}' >"$out/reference-values.json"
# Strict manifest schema (agent/coordinator/src/manifest.rs): what the build cannot know is
# written out as "any" and warned by the coordinator at load and on every certificate: the SNP
# TCB floor and TDX XFAM are the host's (its firmware and CPU), RTMR0 holds the host's ACPI
# tables and memory map. Replace them with the fleet's values before production.
jq '{ reference_values: {
  snp: { measurements: [.snp.measurements[]], guest_policy: .snp.guest_policy, minimum_tcb: "any" },
  tdx: { mrtds: [.tdx.mrtd], rtmrs: ["any", .tdx.rtmr1, .tdx.rtmr2],
         attributes: "0000001000000000", xfam: "any" } } }' \
    "$out/reference-values.json" >"$out/manifest-fragment.json"
echo "reference-values: $out/reference-values.json, $out/manifest-fragment.json (SNP vCPUs: $vcpus)" >&2
