#!/usr/bin/env bash
# System packages the keys crate's tests need: SoftHSM2 (PKCS#11 token for
# keys/tests/softhsm.rs and the CLI test) and OpenSC (pkcs11-tool, handy for
# inspecting tokens by hand). Idempotent; installs only what is missing.
set -euo pipefail

need=()
for pkg in softhsm2 opensc; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "deps/keys: installing ${need[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
