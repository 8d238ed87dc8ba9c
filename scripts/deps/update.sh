#!/usr/bin/env bash
# Peers for firmware-update's tests: python-tuf (interop tests) and faketime
# (the tuf-conformance suite's clock jumps).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -x "$here/apt.sh" ]; then
    "$here/apt.sh" faketime
elif ! dpkg -s faketime >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends faketime >&2
fi
if ! python3 - <<'PY' 2>/dev/null
import importlib.metadata as m
assert m.version("tuf") == "7.0.0"
assert m.version("securesystemslib") == "1.4.0"
import cryptography  # securesystemslib[crypto]
PY
then
    echo "deps: pip install tuf==7.0.0 securesystemslib[crypto]==1.4.0" >&2
    python3 -m pip install --quiet "tuf==7.0.0" "securesystemslib[crypto]==1.4.0" >&2
fi
# Cortex-M4F standard library for the no_std verifier core's cross build
# (tests/no_std_core.rs builds for it when present). Best effort: rustup
# downloads it from the Rust distribution server.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf; then
    timeout 180 rustup target add thumbv7em-none-eabihf >&2 \
        || echo "deps: thumbv7em-none-eabihf unavailable; the no_std core is built for the host only" >&2
fi
