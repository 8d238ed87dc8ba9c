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
