#!/usr/bin/env bash
# System packages the attest crate needs: tss-esapi links libtss2 (libtss2-dev),
# and the swtpm tests start a software TPM (swtpm, swtpm-tools: swtpm_setup,
# swtpm_localca; tpm2-tools for debugging). Installs only what is missing.
set -euo pipefail

pkgs=(libtss2-dev swtpm swtpm-tools tpm2-tools)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps/attest: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
