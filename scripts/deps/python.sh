#!/usr/bin/env bash
# Python packages the tests use as real peers: the official OpenAI SDK.
set -euo pipefail
need=()
python3 -c 'import openai' 2>/dev/null || need+=("openai==3.54.0")
if [ ${#need[@]} -gt 0 ]; then
    echo "deps: pip install ${need[*]}" >&2
    python3 -m pip install --quiet "${need[@]}" >&2
fi
